"""Whole residual blocks: found by tracing, removed physically (their layers leave the model and
its ONNX graph), carried by the policy, and searched around by the evaluator with budgets still
in the frame of the model as given."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from torch import nn

from hilprune.errors import PolicyError, SurgeryError
from hilprune.export import to_onnx_bytes
from hilprune.models import ModelSpec, resolve_model
from hilprune.policy import Policy
from hilprune.surgery import Surgeon, load_pruned, rank_blocks, residual_blocks, save_pruned, without_blocks
from hilprune.surgery.blocks import is_residual

SHAPE = (3, 16, 16)


def _model(name: str) -> tuple[nn.Module, ModelSpec]:
    spec = resolve_model(name, input_shape=",".join(map(str, SHAPE)), num_classes=10)
    torch.manual_seed(0)
    return spec.build(with_weights=False).eval(), spec


def _convs(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) for m in model.modules())


def _onnx_convs(model: nn.Module) -> int:
    return sum(n.op_type == "Conv" for n in onnx.load_from_string(to_onnx_bytes(model, SHAPE)).graph.node)


class Plus(nn.Module):  # x + f(x): a block
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.f(x) + x)


class Plain(nn.Module):  # f(x) with the same shape: not a block (removing it is not a residual's identity)
    def __init__(self) -> None:
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x)


class Twice(nn.Module):  # f(x) + g(x): both sides are branches, no identity shortcut
    def __init__(self) -> None:
        super().__init__()
        self.f, self.g = nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.f(x) + self.g(x)


def test_only_identity_shortcut_residuals_are_blocks():
    assert is_residual(Plus()) and not is_residual(Plain()) and not is_residual(Twice())
    net = nn.Sequential(nn.Conv2d(3, 4, 1), Plus(), Plain(), Twice(), Plus())
    assert residual_blocks(net, torch.randn(1, 3, 8, 8)) == ["1", "4"]


def test_zoo_blocks_are_the_ones_with_an_identity_shortcut():
    r20, _ = _model("resnet20")
    # the first block of stages 2 and 3 downsamples through a projection: not removable
    assert residual_blocks(r20, torch.randn(1, *SHAPE)) == [
        "layer1.0", "layer1.1", "layer1.2", "layer2.1", "layer2.2", "layer3.1", "layer3.2"
    ]  # fmt: skip
    mbv2, _ = _model("mobilenetv2")
    found = residual_blocks(mbv2, torch.randn(1, *SHAPE))
    modules = dict(mbv2.named_modules())
    assert found and all(modules[b].use_res for b in found)
    assert len(found) == sum(getattr(m, "use_res", False) for m in mbv2.modules())
    vgg, _ = _model("vgg11")
    assert residual_blocks(vgg, torch.randn(1, *SHAPE)) == []  # no shortcut anywhere


def test_removing_a_block_removes_its_layers_from_the_model_and_its_graph():
    r20, _ = _model("resnet20")
    smaller = without_blocks(r20, ["layer1.1", "layer3.2"])
    assert _convs(smaller) == _convs(r20) - 4 and _onnx_convs(smaller) == _onnx_convs(r20) - 4
    x = torch.randn(2, *SHAPE)
    assert smaller(x).shape == r20(x).shape
    assert _convs(r20) == 21  # the original is left as it was (stem, 9 blocks x 2, 2 projections)
    with pytest.raises(SurgeryError, match="no block 'layer9.9'"):
        without_blocks(r20, ["layer9.9"])


def test_blocks_are_ranked_by_the_score_without_them():
    r20, _ = _model("resnet20")
    blocks = residual_blocks(r20, torch.randn(1, *SHAPE))
    cost = {"layer1.0": 0.5, "layer2.1": 0.9, "layer3.2": 0.9}  # the score of the model without the block

    def score(model: nn.Module) -> float:
        gone = [b for b in blocks if isinstance(dict(model.named_modules())[b], nn.Identity)]
        assert len(gone) == 1  # one block removed at a time, from a copy
        return cost.get(gone[0], 0.1)

    ranked = rank_blocks(r20, blocks, score)
    assert [b for b, _ in ranked[:3]] == ["layer2.1", "layer3.2", "layer1.0"]  # ties in forward order
    modules = dict(r20.named_modules())
    assert not any(isinstance(modules[b], nn.Identity) for b in blocks)  # each was removed from a copy


def test_a_surgeon_without_blocks_prunes_the_rest_and_its_policy_says_which(tmp_path: Path):
    r20, spec = _model("resnet20")
    full = Surgeon(r20, SHAPE, spec.identity())
    surgeon = Surgeon(r20, SHAPE, spec.identity(), removed_blocks=["layer1.1", "layer3.2"])
    names = {g.name for g in surgeon.groups}
    assert "layer1.1.conv1" not in names and "layer3.2.conv1" not in names
    assert names < {g.name for g in full.groups}
    assert surgeon.full is not surgeon.dense and _convs(surgeon.full) == 21
    policy = surgeon.policy([0.5] * len(surgeon.groups), round_to=4)
    assert policy.removed_blocks == ["layer1.1", "layer3.2"]
    result = surgeon.apply(policy)
    assert result.macs_before == full.macs_before  # MACs before: the model as given
    assert result.macs_after < full.apply(full.policy([0.5] * len(full.groups), round_to=4)).macs_after
    assert _onnx_convs(result.model) == _onnx_convs(r20) - 4
    # the policy file carries the blocks, and a saved model comes back with them removed
    again = Policy.from_dict(json.loads(policy.to_json()))
    assert again.removed_blocks == ["layer1.1", "layer3.2"]
    path = save_pruned(tmp_path / "pruned.pt", result.model, result.policy)
    model, loaded = load_pruned(spec, path)
    x = torch.randn(2, *SHAPE)
    assert loaded.removed_blocks == policy.removed_blocks
    assert torch.allclose(model(x), result.model.eval()(x), atol=1e-5)
    # a policy made for other blocks is refused in one line, and so is a block that is not removable
    with pytest.raises(SurgeryError, match="removes blocks none, but the model was analysed removing layer1.1, layer3.2"):
        surgeon.apply(full.policy([0.5] * len(full.groups)))
    with pytest.raises(SurgeryError, match="layer2.0: not a removable residual block of resnet20 \\(removable: layer1.0"):
        Surgeon(r20, SHAPE, spec.identity(), removed_blocks=["layer2.0"])


def test_the_policy_format_writes_removed_blocks_only_when_there_are_some():
    r20, spec = _model("resnet20")
    surgeon = Surgeon(r20, SHAPE, spec.identity())
    plain = surgeon.policy([0.25] * len(surgeon.groups)).to_dict()
    assert "removed_blocks" not in plain and Policy.from_dict(plain).removed_blocks == []
    for bad in ("layer1.1", ["layer1.1", "layer1.1"], [3]):
        with pytest.raises(PolicyError, match="removed_blocks"):
            Policy.from_dict(plain | {"removed_blocks": bad})


def test_the_evaluator_removes_the_least_harmful_blocks_and_keeps_the_frame_of_the_model_as_given():
    from envs.evaluator import PolicyEvaluator

    common = dict(dataset="digits", device="sim-cpu", proxy="bn:2", val_size=120, lock=False)
    ev = PolicyEvaluator("resnet20", remove_blocks=2, **common)
    plain = PolicyEvaluator("resnet20", **common)
    ranking = ev.block_ranking
    assert len(ranking) == 7 and [a for _, a in ranking] == sorted((a for _, a in ranking), reverse=True)
    assert ev.removed_blocks == [b for b, _ in ranking[:2]] and ev.describe()["removed_blocks"] == ev.removed_blocks
    assert len(ev.groups) == len(plain.groups) - 2
    # budgets, speedups and the dense accuracy are those of the model as given (sim-cpu is deterministic)
    assert ev.dense_latency_ms == pytest.approx(plain.dense_latency_ms)
    assert ev.dense_accuracy == pytest.approx(plain.dense_accuracy) and ev.dense_macs == plain.dense_macs
    unpruned = ev.evaluate([0.0] * len(ev.groups), live=True)
    assert unpruned.policy.removed_blocks == ev.removed_blocks
    assert unpruned.live_latency_ms < ev.dense_latency_ms and unpruned.macs < ev.dense_macs
    assert unpruned.lut_latency_ms < ev.dense_lut_latency_ms
    # a budget widths cannot reach says that blocks could still go
    from hilprune.budget import BudgetError

    with pytest.raises(BudgetError, match="or remove some of its 7 residual blocks whole \\(--remove-blocks N\\)"):
        plain.check_budget(0.01)
    with pytest.raises(BudgetError, match="some of its 5 residual blocks"):
        ev.check_budget(0.01)
    with pytest.raises(Exception, match="has 7 removable residual blocks; cannot remove 8"):
        PolicyEvaluator("resnet20", remove_blocks=8, **common)


def test_a_job_takes_a_count_or_names_and_a_run_directory_keeps_them(tmp_path: Path):
    from hilprune.errors import HilpruneError
    from search.job import check_compatible, remove_blocks_arg, resolve_job

    base = dict(model="resnet20", dataset="digits", out=str(tmp_path / "run"))
    assert resolve_job(None, **base).remove_blocks is None
    assert resolve_job(None, **base, remove_blocks="0").remove_blocks is None
    six = resolve_job(None, **base, remove_blocks=" 6 ")
    assert six.remove_blocks == "6" and remove_blocks_arg(six) == 6
    named = resolve_job(None, **base, remove_blocks="layer3.2, layer1.1")
    assert named.remove_blocks == "layer3.2,layer1.1" and remove_blocks_arg(named) == ["layer3.2", "layer1.1"]
    for bad in ("-1", "layer1.1,3"):
        with pytest.raises(HilpruneError, match="--remove-blocks must be a count >= 0 or block names"):
            resolve_job(None, **base, remove_blocks=bad)
    with pytest.raises(HilpruneError, match="remove_blocks: '6' -> None"):  # trials would change meaning
        check_compatible(resolve_job(None, **base), six)


def test_the_cli_lists_blocks_writes_a_policy_without_some_and_prunes_by_it(tmp_path: Path, capsys):
    from typer.testing import CliRunner

    from hilprune.cli.main import app, main

    model = ["--model", "resnet20", "--input-shape", "3,16,16", "--num-classes", "10"]

    def ok(args: list[str]) -> str:
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.stdout

    listed = json.loads(
        ok(["policy", "init", *model, "--ratio", "0", "--out", str(tmp_path / "x.json"), "--remove-blocks", "list", "--json"])
    )
    assert listed["removable_blocks"][:3] == ["layer1.0", "layer1.1", "layer1.2"] and not (tmp_path / "x.json").exists()
    policy = tmp_path / "policy.json"
    ok(["policy", "init", *model, "--ratio", "0.25", "--out", str(policy), "--remove-blocks", "layer1.1,layer3.2"])
    assert Policy.load(policy).removed_blocks == ["layer1.1", "layer3.2"]
    shown = ok(["policy", "show", str(policy)])
    assert "removed blocks (2, whole): layer1.1, layer3.2" in shown
    out = tmp_path / "out"
    ok(["prune", *model, "--policy", str(policy), "--out", str(out), "--json"])
    r20, _ = _model("resnet20")
    graph = onnx.load(str(out / "model.onnx"))
    assert sum(n.op_type == "Conv" for n in graph.graph.node) == _onnx_convs(r20) - 4
    # a block that is not removable: one line, no traceback
    code = main(["policy", "init", *model, "--ratio", "0", "--out", str(tmp_path / "y.json"), "--remove-blocks", "layer2.0"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: layer2.0: not a removable residual block") and "\n" not in err
