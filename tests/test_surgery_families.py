"""Channel surgery on the architecture families of public CIFAR repositories (tests/fixtures/families):
grouped convs (ResNeXt, RegNetX), channel split + shuffle (ShuffleNetV2), dual path (DPN), separable-conv
cells (PNASNet), squeeze-excitation, depthwise-separable (MobileNet) and DenseNet.

Seeded random policies prune each to a smaller model with the same output shape that computes what the
dense model computes with the removed channels zeroed, and whose ONNX export matches torch. Layers that
cannot be pruned safely are left unpruned with a reason, and nothing crashes."""

from __future__ import annotations

import functools
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from hilprune.export import TOLERANCE, export_onnx, to_onnx_bytes
from hilprune.kernel_map import KernelMap
from hilprune.models import ModelSpec, resolve_model
from hilprune.policy import Policy
from hilprune.surgery import IMPORTANCE, Surgeon, load_pruned, macs_and_params, save_pruned
from hilprune.surgery.surgeon import _root_and_fn
from hwprofiler import kernels_from_onnx

FAMILY_DIR = Path(__file__).parent / "fixtures" / "families"
FAMILIES = {
    "resnext": "resnext.py:build",
    "regnet": "regnet.py:build",
    "shufflenetv2": "shufflenetv2.py:build",
    "shufflenetv2-sliced": "shufflenetv2.py:build_sliced",
    "dpn": "dpn.py:build",
    "pnasnet": "pnasnet.py:build",
    "senet": "senet.py:build",
    "mobilenet": "mobilenet.py:build",
    "densenet": "densenet.py:build",
}
SHAPE = (3, 16, 16)


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so channels differ and the checks below mean something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def spec_of(name: str) -> ModelSpec:
    return resolve_model(f"{FAMILY_DIR / FAMILIES[name]}", None, SHAPE, 10)


@functools.cache
def family(name: str) -> tuple[ModelSpec, Surgeon]:
    spec = spec_of(name)
    return spec, Surgeon(randomize(spec.build()), spec.input_shape, spec.identity())


def zeroed_reference(surgeon: Surgeon, policy: Policy, x: torch.Tensor) -> torch.Tensor:
    """The dense model's output with the policy's channels zeroed wherever a layer produces them.

    The channels come from torch-pruning's own group walk (not from the surgeon's cached plan)."""
    zero: dict[str, set[int]] = {}
    for g in policy.groups:
        removed = surgeon.ranking[g.name][: (g.channels_before - g.channels_after) * g.units].tolist()
        if not removed:
            continue
        root, fn = _root_and_fn(surgeon.dense, g.name)
        for item in surgeon.graph.get_pruning_group(root, fn, removed):
            name = surgeon._names.get(item.dep.target.module)
            if name is not None and surgeon.graph.is_out_channel_pruning_fn(item.dep.handler):
                zero.setdefault(name, set()).update(int(i) for i in item.idxs)
    modules = dict(surgeon.dense.named_modules())
    handles = []
    for name, idxs in zero.items():
        index = torch.tensor(sorted(idxs))

        def hook(_m: nn.Module, _i: object, out: torch.Tensor, index: torch.Tensor = index) -> torch.Tensor:
            out = out.clone()
            out[:, index] = 0.0
            return out

        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            return surgeon.dense(x)
    finally:
        for h in handles:
            h.remove()


def check_policy(spec: ModelSpec, surgeon: Surgeon, policy: Policy) -> tuple[int, int]:
    """Apply `policy` and check the pruned model every way; returns (MACs before, after)."""
    result = surgeon.apply(policy)
    model = result.model
    x = torch.randn(2, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense_out = surgeon.dense(x)
        out = model(x)
    assert out.shape == dense_out.shape == (2, spec.num_classes)

    modules = dict(model.named_modules())
    for g in result.policy.groups:
        root = modules[g.name]
        have = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        assert have == g.channels_after * g.units, g.name
        assert 1 <= g.channels_after <= g.channels_before
    for name, m in modules.items():  # grouped convs keep their group count
        if isinstance(m, nn.Conv2d):
            dense_conv = dict(surgeon.dense.named_modules())[name]
            if dense_conv.groups != dense_conv.in_channels:
                assert m.groups == dense_conv.groups, name

    pruned_any = any(g.channels_after < g.channels_before for g in result.policy.groups)
    assert (result.macs_after, result.params_after) == macs_and_params(model, surgeon.example)
    if pruned_any:
        assert result.macs_after < result.macs_before and result.params_after < result.params_before
    else:
        assert (result.macs_after, result.params_after) == (result.macs_before, result.params_before)

    torch.testing.assert_close(out, zeroed_reference(surgeon, result.policy, x), atol=1e-4, rtol=1e-4)
    exp = export_onnx(model, spec.input_shape)
    assert exp.max_abs_diff is not None and exp.max_abs_diff <= TOLERANCE
    return result.macs_before, result.macs_after


@pytest.mark.parametrize("name", list(FAMILIES))
def test_random_policies(name: str) -> None:
    spec, surgeon = family(name)
    assert surgeon.groups, "every family keeps something to prune"
    rng = random.Random(name)
    macs_before, macs_after = check_policy(spec, surgeon, surgeon.policy([0.4] * len(surgeon.groups)))
    assert macs_after < macs_before
    for round_to in (1, 2):
        ratios = [rng.choice([0.0, rng.uniform(0.0, 0.9)]) for _ in surgeon.groups]
        check_policy(spec, surgeon, surgeon.policy(ratios, round_to=round_to))
    check_policy(spec, surgeon, surgeon.policy([0.9] * len(surgeon.groups), max_ratio=1.0))


def reasons(surgeon: Surgeon) -> list[str]:
    return [e.reason for e in surgeon.excluded]


@pytest.mark.parametrize("name", ["resnext", "regnet"])
def test_grouped_convs_are_pruned_per_conv_group(name: str) -> None:
    spec, surgeon = family(name)
    assert surgeon.excluded == []
    grouped = [g for g in surgeon.groups if g.units > 1]
    assert grouped and all(g.kind == "grouped" for g in grouped)
    modules = dict(surgeon.dense.named_modules())
    convs = {n: m for n, m in modules.items() if isinstance(m, nn.Conv2d) and m.groups > 1}
    for g in grouped:
        assert any(m in convs and convs[m].groups == g.units for m in g.members)  # one unit per conv group
    policy = surgeon.policy({g.name: 0.5 for g in surgeon.groups})
    pruned = dict(surgeon.apply(policy).model.named_modules())
    for n, conv in convs.items():
        assert pruned[n].groups == conv.groups
        assert pruned[n].in_channels < conv.in_channels and pruned[n].out_channels < conv.out_channels
    # The ranking removes the same number of channels from every unit.
    g = grouped[0]
    unit_of = {r: u for u, unit in enumerate(surgeon._candidates[g.name].units) for r in unit}
    removed = surgeon.ranking[g.name][: 2 * g.units].tolist()
    assert sorted(unit_of[r] for r in removed) == sorted(list(range(g.units)) * 2)


def test_shufflenet_prunes_branches_and_says_why_the_rest_stays() -> None:
    for name in ("shufflenetv2", "shufflenetv2-sliced"):
        _spec, surgeon = family(name)
        assert any("channel shuffle" in r for r in reasons(surgeon))
        assert all(r for r in reasons(surgeon))
        # Each basic block's branch (1x1 -> depthwise 3x3 -> 1x1) is its own prunable group.
        assert any(g.kind == "depthwise" and g.name.endswith(".conv2") for g in surgeon.groups)
        excluded = {e.name for e in surgeon.excluded}
        assert not excluded & {g.name for g in surgeon.groups}


def test_dpn_leaves_the_sliced_path_and_prunes_the_grouped_convs() -> None:
    _spec, surgeon = family("dpn")
    assert surgeon.excluded and all("sliced in forward (x[:, " in r for r in reasons(surgeon))
    assert any(g.units > 1 for g in surgeon.groups)


def test_pnasnet_channel_multiplier_input_stays() -> None:
    _spec, surgeon = family("pnasnet")
    assert any("one input channel per conv group" in r for r in reasons(surgeon))
    assert any(g.units > 1 for g in surgeon.groups)  # the multiplier convs' outputs shrink per conv group
    assert any(g.kind == "depthwise" for g in surgeon.groups)


@pytest.mark.parametrize("name", ["senet", "mobilenet", "densenet"])
def test_fully_prunable_families(name: str) -> None:
    _spec, surgeon = family(name)
    assert surgeon.excluded == []
    kinds = {g.kind for g in surgeon.groups}
    if name == "mobilenet":
        assert "depthwise" in kinds
    if name == "senet":
        assert "linear" in kinds  # the Linear squeeze-excitation's bottleneck
        assert any(g.name.endswith("fc1") for g in surgeon.groups)  # the 1x1-conv squeeze-excitation's


def test_policy_records_excluded_layers(tmp_path: Path) -> None:
    _spec, surgeon = family("shufflenetv2")
    policy = surgeon.policy([0.3] * len(surgeon.groups))
    assert policy.excluded == surgeon.excluded
    loaded = Policy.load(policy.save(tmp_path / "p.json"))
    assert loaded == policy and loaded.excluded == surgeon.excluded
    _spec, resnext = family("resnext")
    loaded = Policy.load(resnext.policy([0.3] * len(resnext.groups)).save(tmp_path / "r.json"))
    assert [g.units for g in loaded.groups] == [g.units for g in resnext.groups]
    resnext.apply(loaded)


@pytest.mark.parametrize("importance", sorted(IMPORTANCE))
def test_every_importance_on_grouped_convs(importance: str) -> None:
    spec = spec_of("resnext")
    gen = torch.Generator().manual_seed(3)
    calib = (torch.randn(8, *SHAPE, generator=gen), torch.randint(0, 10, (8,), generator=gen)) if importance == "taylor" else None
    surgeon = Surgeon(randomize(spec.build()), spec.input_shape, spec.identity(), importance, calib)
    for g in surgeon.groups:  # a ranking is a permutation of the root's channels
        assert sorted(surgeon.ranking[g.name].tolist()) == list(range(g.channels * g.units))
    check_policy(spec, surgeon, surgeon.policy([0.5] * len(surgeon.groups)))


@pytest.mark.parametrize("name", ["resnext", "pnasnet", "regnet", "shufflenetv2", "densenet"])
def test_kernel_map_follows_units(name: str) -> None:
    """The LUT path's kernel lists for grouped units, and for graphs with kernels of their own: ShuffleNetV2's
    Transpose and DenseNet's pre-activation BatchNormalization (no conv before it to fold into)."""
    spec, surgeon = family(name)
    kmap = KernelMap(surgeon)
    rng = random.Random(0)
    for _ in range(2):
        ratios = [rng.choice([0.0, 0.3, 0.6]) for _ in surgeon.groups]
        pruned = surgeon.apply(surgeon.policy(ratios), count=False).model
        assert kmap.kernels_for(ratios) == kernels_from_onnx(to_onnx_bytes(pruned, spec.input_shape))


def test_save_and_load_pruned_grouped(tmp_path: Path) -> None:
    spec, surgeon = family("regnet")
    result = surgeon.apply(surgeon.policy([0.5] * len(surgeon.groups)))
    model, policy = load_pruned(spec, save_pruned(tmp_path / "pruned.pt", result.model, result.policy))
    assert policy.key() == result.policy.key()
    x = torch.randn(3, *spec.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model(x))


# --- bounded analysis ---------------------------------------------------------------------------


def test_shuffle_analysis_finishes_in_bounded_time() -> None:
    """The published-size ShuffleNetV2 with a sliced split: torch-pruning's group search alone ran past 150 s."""
    from fixtures.families.shufflenetv2 import ShuffleNetV2

    model = ShuffleNetV2((116, 232, 464, 1024), (3, 7, 3), use_chunk=False).eval()
    surgeon = Surgeon(model, SHAPE, {"name": "shufflenetv2-full"})
    assert surgeon.analysis_s < 60
    assert len(surgeon.groups) >= 13  # every basic block's branch, at least
    assert any("channel shuffle" in r for r in reasons(surgeon))


def test_group_search_gives_up_on_a_layer_past_its_budget() -> None:
    """On torch-pruning's own graph (no shuffle cut out) every search is stopped at its deadline, and the
    layers are reported as timed out instead of hanging."""
    from hilprune.depgraph import search_groups
    from hilprune.policy import output_layer

    model = spec_of("shufflenetv2-sliced").build()
    x = torch.randn(1, *SHAPE)
    with torch.enable_grad():
        graph = tp.DependencyGraph().build_dependency(model, example_inputs=(x,), verbose=False)
    graph.opaque = {}
    found = search_groups(graph, [output_layer(model, x)], group_s=0.0)
    assert found.groups == [] and found.failed
    assert all("analysis timed out" in reason for _m, reason in found.failed)


def test_spent_search_budget_leaves_everything_unpruned() -> None:
    spec = spec_of("shufflenetv2")
    surgeon = Surgeon(spec.build(), spec.input_shape, spec.identity(), search_budget_s=0.0)
    assert surgeon.groups == [] and surgeon.excluded
    assert all("analysis timed out" in r for r in reasons(surgeon))
    model = surgeon.apply(surgeon.policy([])).model
    x = torch.randn(1, *SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(model(x), surgeon.dense(x))


# --- models the dependency graph cannot follow everywhere: left unpruned there, never a crash ----------


def cbr(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class FixedFlatten(nn.Module):
    """LeNet style: the classifier's input size is a literal."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.fc = cbr(3, 8), cbr(8, 16, stride=2), nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c2(self.c1(x)).view(-1, 16 * 8 * 8))


class SpatialAttention(nn.Module):
    """CBAM style: a one-channel map from channel mean and max, broadcast over the channels."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.att, self.c2, self.fc = cbr(3, 16), nn.Conv2d(2, 1, 7, 1, 3), cbr(16, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c1(x)
        x = x * torch.sigmoid(self.att(torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)))
        return self.fc(self.c2(x).mean((2, 3)))


class BareScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.scale, self.c2, self.fc = cbr(3, 16), nn.Parameter(torch.ones(1, 16, 1, 1)), cbr(16, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.c2(self.c1(x) * self.scale).mean((2, 3)))


class NHWCNorm(nn.Module):
    """ConvNeXt style: LayerNorm over channels between permutes."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.ln, self.c2, self.fc = nn.Conv2d(3, 16, 3, 1, 1), nn.LayerNorm(16), cbr(16, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln(self.c1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fc(self.c2(x).mean((2, 3)))


class InputConcat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2, self.fc = cbr(3, 13), cbr(16, 16), nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.c2(torch.cat([x, self.c1(x)], 1))).mean((2, 3)))


@pytest.mark.parametrize(
    "model_cls,excluded,reason",
    [
        (FixedFlatten, "c2.0", "a trial prune fails"),
        (SpatialAttention, "c1.0", "changes the channel count"),
        (BareScale, "c1.0", "bare nn.Parameter"),
        (NHWCNorm, "c1", "moves the channel dimension"),
        (InputConcat, "c1.0", "comes from no layer"),
    ],
)
def test_untraceable_layers_are_left_unpruned_with_a_reason(model_cls: type, excluded: str, reason: str) -> None:
    torch.manual_seed(0)
    shape = (3, 16, 16)
    surgeon = Surgeon(randomize(model_cls()), shape, {"name": model_cls.__name__})
    by_name = {e.name: e.reason for e in surgeon.excluded}
    assert excluded in by_name and reason in by_name[excluded], by_name
    assert surgeon.groups, "the rest of the model stays prunable"
    spec = ModelSpec(model_cls.__name__, shape, 10)
    check_policy(spec, surgeon, surgeon.policy([0.5] * len(surgeon.groups)))
