"""The export's least-squares ridge, chosen by a short seeded distillation probe (search.ridge)."""

from __future__ import annotations

import pytest
import torch

from envs.evaluator import PolicyEvaluator
from hilprune.data import load_dataset
from hilprune.errors import HilpruneError
from hilprune.train import recalibrate_bn
from search.ridge import RIDGES, choose_ridge, parse_ridge

POLICY = [0.5, 0.6, 0.5, 0.7]


@pytest.fixture(scope="module")
def ev() -> PolicyEvaluator:
    return PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=300, proxy="bn:10")


def test_parse_ridge() -> None:
    assert parse_ridge("auto") is None and parse_ridge(None) is None and parse_ridge(" AUTO ") is None
    assert parse_ridge("0.01") == 0.01 and parse_ridge(0.5) == 0.5
    for bad in ("0", "-1", "nope", "nan"):
        with pytest.raises(HilpruneError, match="--ridge must be 'auto' or a number > 0"):
            parse_ridge(bad)


def test_the_probe_keeps_the_best_ridge_and_repeats_exactly(ev: PolicyEvaluator) -> None:
    data = load_dataset("digits")
    policy = ev.policy(POLICY)
    made: list[float] = []

    def refitted(ridge: float) -> torch.nn.Module:
        made.append(ridge)
        model = ev.surgeon.apply(policy, count=False).model
        ev.surgeon.refit(model, policy, data.train.x[:64], seed=0, ridge=ridge)
        recalibrate_bn(model, data.train, batches=4, batch_size=32, seed=0)
        return model

    first = choose_ridge(refitted, ev.surgeon.dense, data, lr=0.01, seed=0, steps=8, val_images=200)
    again = choose_ridge(refitted, ev.surgeon.dense, data, lr=0.01, seed=0, steps=8, val_images=200)
    assert made == list(RIDGES) * 2  # every candidate refitted afresh, in order
    assert first.scores == again.scores and first.ridge == again.ridge  # seeded: the same batches, the same scores
    assert set(first.scores) == set(RIDGES) and all(0.0 <= a <= 1.0 for a in first.scores.values())
    assert first.scores[first.ridge] == max(first.scores.values())
    assert first.val_images == 200 and first.steps == 8 and first.wall_s > 0
    assert first.to_dict()["scores"] == {f"{r:g}": round(a, 4) for r, a in first.scores.items()}

    # candidates that score alike: the preferred ridge wins the tie, else the largest
    alike = choose_ridge(lambda r: refitted(0.1), ev.surgeon.dense, data, lr=0.01, seed=0, steps=4, val_images=200, prefer=0.01)
    assert len(set(alike.scores.values())) == 1 and alike.ridge == 0.01
    assert choose_ridge(lambda r: refitted(0.1), ev.surgeon.dense, data, lr=0.01, seed=0, steps=4, val_images=200).ridge == max(
        RIDGES
    )
