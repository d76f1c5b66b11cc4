"""Training is deterministic under a seed; BN recalibration repairs a pruned model's statistics."""

from __future__ import annotations

import pytest
import torch

from hilprune.data import load_dataset
from hilprune.models import resolve_model
from hilprune.surgery import Surgeon
from hilprune.train import TrainConfig, evaluate, finetune, recalibrate_bn, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def short_run(data, seed: int, steps: int = 4) -> tuple[dict, float]:
    torch.manual_seed(1234)  # the same initial weights; the run's seed drives order and augmentation
    model = resolve_model("digits-cnn", "digits", use_shipped=False).build(with_weights=False)
    cfg = TrainConfig(steps=steps, batch_size=32, lr=0.05, seed=seed, crop_pad=1, flip=False, warmup_epochs=0.0)
    res = train(model, data, cfg, device="cpu", progress=False)
    assert res.steps == steps
    return model.state_dict(), res.train_loss


def test_training_is_deterministic_under_a_seed(digits) -> None:
    a, loss_a = short_run(digits, seed=0)
    b, loss_b = short_run(digits, seed=0)
    assert loss_a == loss_b
    assert all(torch.equal(a[k], b[k]) for k in a)
    c, _ = short_run(digits, seed=1)
    assert not all(torch.equal(a[k], c[k]) for k in a)  # the seed matters


def test_training_learns(digits) -> None:
    spec = resolve_model("digits-cnn", "digits", use_shipped=False)
    torch.manual_seed(0)
    model = spec.build(with_weights=False)
    before = evaluate(model, digits.val)
    res = train(model, digits, TrainConfig(epochs=1, batch_size=64, lr=0.05, crop_pad=0, flip=False), progress=False)
    assert res.val_accuracy == evaluate(model, digits.val)
    assert res.val_accuracy > max(0.5, before + 0.2)
    assert res.history and res.history[-1]["val_accuracy"] == res.val_accuracy
    assert not model.training


def test_bn_recalibration_repairs_a_pruned_model(digits) -> None:
    spec = resolve_model("digits-cnn", "digits")
    dense = spec.build()
    dense_acc = evaluate(dense, digits.val)
    assert dense_acc > 0.95
    s = Surgeon(dense, spec.input_shape, spec.identity())
    pruned = s.apply(s.policy([0.5] * len(s.groups))).model
    raw_acc = evaluate(pruned, digits.val)
    bn = pruned.features[1]
    mean_before = bn.running_mean.clone()
    out = recalibrate_bn(pruned, digits.train, batches=5, batch_size=128)
    assert out is pruned and not pruned.training
    assert not torch.allclose(bn.running_mean, mean_before)
    assert bn.momentum == 0.1  # restored after the cumulative average
    recal_acc = evaluate(pruned, digits.val)
    assert recal_acc > raw_acc + 0.2  # measured: ~0.2 -> ~0.93 at 50% on every group
    assert recal_acc > 0.8


def test_bn_recalibration_is_deterministic_and_harmless_on_dense(digits) -> None:
    spec = resolve_model("digits-cnn", "digits")
    a, b = spec.build(), spec.build()
    recalibrate_bn(a, digits.train, batches=3, seed=5)
    recalibrate_bn(b, digits.train, batches=3, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert evaluate(a, digits.val) > 0.95
    c = spec.build()
    assert recalibrate_bn(c, digits.train, batches=0) is c  # zero batches: untouched


def test_finetune_recovers_accuracy(digits) -> None:
    spec = resolve_model("digits-cnn", "digits")
    s = Surgeon(spec.build(), spec.input_shape, spec.identity())
    pruned = s.apply(s.policy([0.7] * len(s.groups))).model
    recalibrate_bn(pruned, digits.train, batches=5)
    before = evaluate(pruned, digits.val)
    res = finetune(pruned, digits, steps=20, lr=0.01, progress=False)
    assert res.steps == 20
    assert res.val_accuracy > before
