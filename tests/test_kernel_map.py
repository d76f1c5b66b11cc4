"""KernelMap: the kernels predicted for a policy equal those of the real pruned export."""

from __future__ import annotations

import random

import pytest

from hilprune.export import to_onnx_bytes
from hilprune.kernel_map import KernelMap, ratio_grid
from hilprune.models import resolve_model
from hilprune.surgery import Surgeon
from hwprofiler import kernels_from_onnx


@pytest.mark.parametrize("name,shape", [("resnet20", (1, 16, 16)), ("mobilenetv2", (3, 16, 16)), ("digits-cnn", (1, 8, 8))])
def test_kernels_match_real_surgery(name: str, shape: tuple[int, int, int]) -> None:
    spec = resolve_model(name, input_shape=shape)
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon)
    assert len(kmap.dense) > len(surgeon.groups)
    rng = random.Random(0)
    for _ in range(3):
        ratios = [rng.choice([0.0, 0.3, 0.55, 0.8]) for _ in surgeon.groups]
        for round_to in (1, 4):
            pruned = surgeon.apply(surgeon.policy(ratios, round_to=round_to), count=False).model
            real = kernels_from_onnx(to_onnx_bytes(pruned, spec.input_shape))
            assert kmap.kernels_for(ratios, round_to) == real


def test_reachable_covers_grid_policies() -> None:
    spec = resolve_model("digits-cnn", dataset="digits")
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon)
    grid = ratio_grid(0.8, 0.2)
    assert grid == [0.0, 0.2, 0.4, 0.6, 0.8]
    reachable = {k.key() for k in kmap.reachable(grid)}
    rng = random.Random(1)
    for _ in range(10):
        ratios = [rng.choice(grid) for _ in surgeon.groups]
        assert {k.key() for k in kmap.kernels_for(ratios)} <= reachable


def test_concat_and_depthwise_user_model(fixtures_dir) -> None:
    """After a concat a kernel's input channels are the sum of two groups' channels."""
    spec = resolve_model(f"{fixtures_dir / 'user_model.py'}:build", input_shape=(3, 16, 16))
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity())
    kmap = KernelMap(surgeon)
    assert any(k.op == "concat" for k in kmap.dense)
    assert any(len(t.cin) >= 2 for t in kmap.ties), "some kernel should follow two groups (the concat)"
    rng = random.Random(3)
    for _ in range(4):
        ratios = [rng.choice([0.0, 0.25, 0.5, 0.75]) for _ in surgeon.groups]
        pruned = surgeon.apply(surgeon.policy(ratios), count=False).model
        assert kmap.kernels_for(ratios) == kernels_from_onnx(to_onnx_bytes(pruned, spec.input_shape))
