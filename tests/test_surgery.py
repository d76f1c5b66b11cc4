"""Channel surgery on every zoo model and on a user model: random valid policies (hypothesis)
give a smaller model that runs, keeps its output shape, removes exactly the ranked channels,
and exports to ONNX with torch parity."""

from __future__ import annotations

import copy
import functools
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from hilprune.export import TOLERANCE, export_onnx
from hilprune.models import ModelSpec, resolve_model
from hilprune.policy import Policy
from hilprune.surgery import IMPORTANCE, Surgeon, load_pruned, macs_and_params, save_pruned
from hilprune.surgery.surgeon import _root_and_fn

FIXTURES = Path(__file__).parent / "fixtures"
USER_FILE_SPEC = f"{FIXTURES / 'user_model.py'}:build"
USER_MODULE_SPEC = "fixtures.user_model:build"

# Small inputs keep the big zoo models fast; the shapes still exercise every stride/pool.
ZOO_SHAPES = {
    "resnet20": (3, 16, 16),
    "resnet56": (3, 8, 8),
    "mobilenetv2": (3, 8, 8),
    "vgg11": (3, 8, 8),
    "digits-cnn": (1, 8, 8),
}

PROPERTY = settings(
    max_examples=3,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine terms, so channels differ and parity checks mean something."""
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


@functools.cache
def zoo_surgeon(name: str) -> tuple[ModelSpec, Surgeon]:
    spec = resolve_model(name, None, ZOO_SHAPES[name], 10)
    torch.manual_seed(0)
    return spec, Surgeon(randomize_bn(spec.build()), spec.input_shape, spec.identity())


def user_surgeon(spec_text: str, importance: str = "l1", calibration=None) -> tuple[ModelSpec, Surgeon]:
    spec = resolve_model(spec_text, None, "3,16,16", 10)
    return spec, Surgeon(randomize_bn(spec.build()), spec.input_shape, spec.identity(), importance, calibration)


def ratios_strategy(n: int):
    return st.lists(st.one_of(st.just(0.0), st.floats(0.0, 0.9, allow_nan=False)), min_size=n, max_size=n)


def zero_pruned_channels(surgeon: Surgeon, policy: Policy) -> nn.Module:
    """The dense model with the channels the policy removes silenced (their BN scale and shift set to 0).

    Every conv of these models feeds a BN, so a silenced channel contributes exactly nothing downstream:
    the silenced dense model must compute what the pruned one computes."""
    model = copy.deepcopy(surgeon.dense)
    modules = dict(model.named_modules())
    for g in policy.groups:
        n_prune = g.channels_before - g.channels_after
        if n_prune <= 0:
            continue
        silenced = 0
        root, fn = _root_and_fn(surgeon.dense, g.name)
        group = surgeon.graph.get_pruning_group(root, fn, surgeon.ranking[g.name][:n_prune].tolist())
        for item in group:
            mod = item.dep.target.module
            name = surgeon._names.get(mod)
            if isinstance(mod, nn.BatchNorm2d) and name is not None:
                with torch.no_grad():
                    modules[name].weight[list(item.idxs)] = 0.0
                    modules[name].bias[list(item.idxs)] = 0.0
                silenced += 1
        assert silenced, f"group {g.name} has no BN to silence"
    return model.eval()


def check_pruned(spec: ModelSpec, surgeon: Surgeon, policy: Policy, export: bool = True) -> None:
    result = surgeon.apply(policy)
    model = result.model
    x = torch.randn(2, *spec.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        dense_out = surgeon.dense(x)
        out = model(x)
    assert out.shape == dense_out.shape == (2, spec.num_classes)
    assert torch.isfinite(out).all()

    # The policy's channel counts are what the model now has.
    modules = dict(model.named_modules())
    for g in result.policy.groups:
        root = modules[g.name]
        have = root.out_channels if isinstance(root, nn.Conv2d) else root.out_features
        assert have == g.channels_after, g.name
        assert 1 <= g.channels_after <= g.channels_before

    pruned_any = any(g.channels_after < g.channels_before for g in result.policy.groups)
    assert (result.macs_before, result.params_before) == macs_and_params(surgeon.dense, surgeon.example)
    assert (result.macs_after, result.params_after) == macs_and_params(model, surgeon.example)
    if pruned_any:
        assert result.macs_after < result.macs_before
        assert result.params_after < result.params_before
    else:
        assert (result.macs_after, result.params_after) == (result.macs_before, result.params_before)
        torch.testing.assert_close(out, dense_out)

    # Exactly the lowest-ranked channels were removed, and wired correctly (concat offsets, residual adds).
    with torch.no_grad():
        silenced_out = zero_pruned_channels(surgeon, result.policy)(x)
    torch.testing.assert_close(out, silenced_out, atol=1e-4, rtol=1e-4)

    if export:
        exp = export_onnx(model, spec.input_shape)
        assert exp.max_abs_diff is not None and exp.max_abs_diff <= TOLERANCE


@pytest.mark.parametrize("name", list(ZOO_SHAPES))
@PROPERTY
@given(data=st.data())
def test_zoo_random_policy(name: str, data: st.DataObject) -> None:
    spec, surgeon = zoo_surgeon(name)
    ratios = data.draw(ratios_strategy(len(surgeon.groups)), label="ratios")
    round_to = data.draw(st.sampled_from([1, 2, 8]), label="round_to")
    check_pruned(spec, surgeon, surgeon.policy(ratios, round_to=round_to))


def test_zoo_groups_cover_residual_and_depthwise() -> None:
    _spec, r20 = zoo_surgeon("resnet20")
    # ResNet-20: 9 blocks' conv1 plus one coupled group per stage (stem/shortcut/conv2 outputs joined by adds).
    assert len(r20.groups) == 12
    assert any(len(g.members) > 8 for g in r20.groups)  # a residual-coupled group spans many layers
    _spec, mb = zoo_surgeon("mobilenetv2")
    assert any(g.kind == "depthwise" for g in mb.groups)
    for _name in ZOO_SHAPES:
        _spec, s = zoo_surgeon(_name)
        assert [g.index for g in s.groups] == list(range(len(s.groups)))
        assert all(g.kind != "linear" for g in s.groups)  # the classifier is never pruned


def test_apply_leaves_dense_model_untouched() -> None:
    spec, surgeon = zoo_surgeon("digits-cnn")
    before = {k: v.clone() for k, v in surgeon.dense.state_dict().items()}
    surgeon.apply(surgeon.policy([0.5] * len(surgeon.groups)))
    after = surgeon.dense.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_extreme_ratios_keep_at_least_one_channel() -> None:
    spec, surgeon = zoo_surgeon("resnet20")
    policy = surgeon.policy([0.9] * len(surgeon.groups), max_ratio=1.0)
    check_pruned(spec, surgeon, policy, export=False)
    full = surgeon.policy([1.0] * len(surgeon.groups), max_ratio=1.0)
    assert all(g.channels_after == 1 for g in full.groups)
    check_pruned(spec, surgeon, full)


# --- importance criteria --------------------------------------------------------------------


def digits_trained() -> tuple[ModelSpec, nn.Module]:
    spec = resolve_model("digits-cnn", "digits")
    assert spec.checkpoint is not None, "the shipped digits-cnn checkpoint is missing"
    return spec, spec.build()


def calibration_batch(shape: tuple[int, int, int], n: int = 16, classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, *shape, generator=gen), torch.randint(0, classes, (n,), generator=gen)


@pytest.mark.parametrize("importance", sorted(IMPORTANCE))
def test_every_importance_prunes_resnet20(importance: str) -> None:
    spec = resolve_model("resnet20", None, (3, 16, 16), 10)
    torch.manual_seed(0)
    calib = calibration_batch(spec.input_shape) if importance == "taylor" else None
    surgeon = Surgeon(randomize_bn(spec.build()), spec.input_shape, spec.identity(), importance, calib)
    for g in surgeon.groups:  # a ranking is a permutation of the group's channels
        assert sorted(surgeon.ranking[g.name].tolist()) == list(range(g.channels))
    policy = surgeon.policy([0.5] * len(surgeon.groups))
    assert policy.importance == importance
    check_pruned(spec, surgeon, policy)


@pytest.mark.parametrize("importance", ["l1", "l2", "bn-scale", "taylor"])
def test_importance_ranks_a_dead_channel_first(importance: str) -> None:
    """A channel zeroed in every layer of its group is the least important under each criterion, so
    pruning one channel removes it and leaves the model's function unchanged."""
    spec, model = digits_trained()
    dead = 5
    with torch.no_grad():
        model.features[0].weight[dead] = 0.0
        model.features[1].weight[dead] = 0.0
        model.features[1].bias[dead] = 0.0
        model.features[3].weight[:, dead] = 0.0
    calib = None
    if importance == "taylor":
        from hilprune.data import load_dataset

        split = load_dataset("digits").train.subset(64)
        calib = (split.x, split.y)
    surgeon = Surgeon(model, spec.input_shape, spec.identity(), importance, calib)
    assert int(surgeon.ranking["features.0"][0]) == dead
    ratios = {g.name: 0.0 for g in surgeon.groups} | {"features.0": 1 / 32}
    result = surgeon.apply(surgeon.policy(ratios))
    assert result.model.features[0].out_channels == 31
    x = torch.randn(4, *spec.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(result.model(x), model(x), atol=1e-5, rtol=1e-5)


def test_taylor_without_calibration_is_refused() -> None:
    spec = resolve_model("digits-cnn", None, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="calibration"):
        Surgeon(spec.build(), spec.input_shape, spec.identity(), "taylor")


def test_unknown_importance_is_a_user_error() -> None:
    from hilprune.errors import HilpruneError

    spec = resolve_model("digits-cnn", None, (1, 8, 8), 10)
    with pytest.raises(HilpruneError, match="unknown importance 'l3'"):
        Surgeon(spec.build(), spec.input_shape, spec.identity(), "l3")


# --- a user model with a concat branch and depthwise convs ----------------------------------


def test_user_model_groups() -> None:
    _spec, surgeon = user_surgeon(USER_FILE_SPEC)
    names = [g.name for g in surgeon.groups]
    assert "branch_a.0" in names  # one branch of the concat is its own group
    assert any(g.kind == "depthwise" for g in surgeon.groups)
    concat_consumer = [g for g in surgeon.groups if "mix.0" in g.members]
    assert len(concat_consumer) >= 2  # both concat branches feed mix.0's input channels


@PROPERTY
@given(data=st.data())
def test_user_model_from_file_random_policy(data: st.DataObject) -> None:
    spec, surgeon = user_surgeon(USER_FILE_SPEC)
    ratios = data.draw(ratios_strategy(len(surgeon.groups)), label="ratios")
    check_pruned(spec, surgeon, surgeon.policy(ratios))


def test_user_model_from_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.delitem(sys.modules, "fixtures.user_model", raising=False)
    spec, surgeon = user_surgeon(USER_MODULE_SPEC)
    assert spec.identity()["name"] == USER_MODULE_SPEC
    policy = surgeon.policy([0.5] * len(surgeon.groups))
    check_pruned(spec, surgeon, policy)
    mix = dict(surgeon.apply(policy).model.named_modules())["mix.0"]
    assert mix.in_channels == 4 + 6  # concat of the two halved branches (8 -> 4, 12 -> 6)


def test_user_model_every_importance() -> None:
    for importance in sorted(IMPORTANCE):
        calib = calibration_batch((3, 16, 16)) if importance == "taylor" else None
        spec, surgeon = user_surgeon(USER_FILE_SPEC, importance, calib)
        check_pruned(spec, surgeon, surgeon.policy([0.4] * len(surgeon.groups)), export=False)


# --- persistence ----------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["digits-cnn", "user"])
def test_save_and_load_pruned(which: str, tmp_path: Path) -> None:
    if which == "user":
        spec, surgeon = user_surgeon(USER_FILE_SPEC, "fpgm")
    else:
        spec, surgeon = zoo_surgeon("digits-cnn")
    result = surgeon.apply(surgeon.policy([0.6] * len(surgeon.groups), round_to=2))
    path = save_pruned(tmp_path / "pruned.pt", result.model, result.policy)
    model, policy = load_pruned(spec, path)
    assert policy.key() == result.policy.key()
    x = torch.randn(3, *spec.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(model(x), result.model(x))


def test_load_pruned_errors(tmp_path: Path) -> None:
    from hilprune.errors import ModelError

    spec, _surgeon = zoo_surgeon("digits-cnn")
    with pytest.raises(ModelError, match="not found"):
        load_pruned(spec, tmp_path / "nope.pt")
    torch.save({"state_dict": {}}, tmp_path / "other.pt")
    with pytest.raises(ModelError, match="not a hilprune pruned-weights file"):
        load_pruned(spec, tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(ModelError, match="cannot read"):
        load_pruned(spec, tmp_path / "garbage.pt")
