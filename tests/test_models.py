"""The zoo, user models ('file.py:factory', 'package.module:factory'), model resolution and checkpoints."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from hilprune.errors import ModelError
from hilprune.models import (
    DESCRIPTIONS,
    ZOO,
    load_user_model,
    load_weights,
    parse_input_shape,
    resolve_model,
    save_checkpoint,
    shipped_cards,
    shipped_checkpoint,
)
from hilprune.models.checkpoints import load_state

FIXTURES = Path(__file__).parent / "fixtures"
SMALL = {"resnet20": (3, 8, 8), "resnet56": (3, 8, 8), "mobilenetv2": (3, 8, 8), "vgg11": (3, 8, 8), "digits-cnn": (1, 8, 8)}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_zoo_models_build_and_run(name: str) -> None:
    assert name in SMALL and DESCRIPTIONS[name]
    spec = resolve_model(name, None, SMALL[name], 7)
    model = spec.build()
    assert not model.training
    with torch.no_grad():
        out = model(torch.randn(2, *SMALL[name]))
    assert out.shape == (2, 7)


def test_zoo_models_take_dataset_shapes() -> None:
    spec = resolve_model("vgg11", "fashion-mnist")
    assert spec.input_shape == (1, 28, 28) and spec.num_classes == 10 and spec.checkpoint is None
    with torch.no_grad():
        assert spec.build()(torch.randn(1, 1, 28, 28)).shape == (1, 10)


def test_parse_input_shape() -> None:
    assert parse_input_shape("3,32,32") == (3, 32, 32)
    assert parse_input_shape("1x28x28") == (1, 28, 28)
    assert parse_input_shape([3, 8, 8]) == (3, 8, 8)
    assert parse_input_shape(None) is None
    for bad in ("3,32", "a,b,c", "0,8,8", "3,8,8,8"):
        with pytest.raises(ModelError, match="--input-shape"):
            parse_input_shape(bad)


def test_resolve_errors() -> None:
    with pytest.raises(ModelError, match="unknown model 'resnet1000'; zoo models: resnet20"):
        resolve_model("resnet1000", "digits")
    with pytest.raises(ModelError, match="needs --dataset or --input-shape"):
        resolve_model("resnet20")
    with pytest.raises(ModelError, match="--model is required"):
        resolve_model("")
    with pytest.raises(ModelError, match="checkpoint not found"):
        resolve_model("digits-cnn", "digits", checkpoint="/nonexistent/x.pt")


def test_shipped_checkpoint_is_found_and_loads() -> None:
    path = shipped_checkpoint("digits-cnn", "digits")
    assert path is not None and path.is_file()
    spec = resolve_model("digits-cnn", "digits")
    assert spec.checkpoint == str(path)
    assert spec.identity() == {
        "name": "digits-cnn",
        "input_shape": [1, 8, 8],
        "num_classes": 10,
        "dataset": "digits",
        "checkpoint": "digits-cnn__digits.pt",
    }
    state, meta = load_state(path)  # weights_only loading (the file's meta once held a TorchVersion)
    assert meta["model"] == "digits-cnn"
    model = spec.build()
    assert torch.equal(model.state_dict()["classifier.weight"], state["classifier.weight"])
    assert resolve_model("digits-cnn", "digits", use_shipped=False).checkpoint is None
    cards = shipped_cards()
    assert any(c["model"] == "digits-cnn" and c["dataset"] == "digits" and c["val_accuracy"] > 0.9 for c in cards)


def test_checkpoint_round_trip_and_mismatch(tmp_path: Path) -> None:
    spec = resolve_model("digits-cnn", None, (1, 8, 8), 10)
    model = spec.build()
    path = tmp_path / "ck.pt"
    save_checkpoint(path, model, {"torch": torch.__version__, "epochs": 1, "where": tmp_path})
    state, meta = load_state(path)
    assert meta == {"torch": str(torch.__version__), "epochs": 1, "where": str(tmp_path)}
    assert type(meta["torch"]) is str  # plain types only: loadable with weights_only=True
    other = spec.build()
    load_weights(other, path)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    torch.save(model.state_dict(), tmp_path / "bare.pt")  # a bare state_dict works too
    load_weights(spec.build(), tmp_path / "bare.pt")
    wide = resolve_model("digits-cnn", None, (1, 8, 8), 5).build()
    with pytest.raises(ModelError, match="does not fit this model: classifier.weight"):
        load_weights(wide, path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(ModelError, match="is not a PyTorch checkpoint") as exc:
        load_weights(spec.build(), tmp_path / "junk.pt")
    assert "\n" not in str(exc.value)
    torch.save({"a": 1}, tmp_path / "dict.pt")
    with pytest.raises(ModelError, match="neither a hilprune checkpoint nor a state_dict"):
        load_weights(spec.build(), tmp_path / "dict.pt")


def test_user_model_from_file() -> None:
    spec_text = f"{FIXTURES / 'user_model.py'}:build"
    spec = resolve_model(spec_text, "digits", "3,16,16")  # dataset gives classes; no shipped checkpoint for user models
    assert spec.checkpoint is None and spec.input_shape == (3, 16, 16)
    model = spec.build()
    assert type(model).__name__ == "ConcatNet"
    with torch.no_grad():
        assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_user_model_from_module(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    monkeypatch.delitem(sys.modules, "fixtures.user_model", raising=False)
    model = load_user_model("fixtures.user_model:build")
    assert type(model).__name__ == "ConcatNet"


def test_user_model_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelError, match="user model file not found"):
        load_user_model(f"{tmp_path / 'nope.py'}:build")
    with pytest.raises(ModelError, match="has no callable 'nope'"):
        load_user_model(f"{FIXTURES / 'user_model.py'}:nope")
    with pytest.raises(ModelError, match="returned tuple, not a torch.nn.Module"):
        load_user_model(f"{FIXTURES / 'user_model.py'}:not_a_model")
    with pytest.raises(ModelError, match="cannot import module 'no_such_pkg_xyz.models': No module named"):
        load_user_model("no_such_pkg_xyz.models:build")
    with pytest.raises(ModelError, match="must look like"):
        load_user_model(":build")
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ModelError, match="importing .*broken.py failed: RuntimeError: boom"):
        load_user_model(f"{broken}:build")
    failing = tmp_path / "failing.py"
    failing.write_text("def build():\n    raise ValueError('bad width')\n")
    with pytest.raises(ModelError, match="failed: ValueError: bad width"):
        load_user_model(f"{failing}:build")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelError, match="importing module 'broken' failed: RuntimeError: boom"):
        load_user_model("broken:build")


def test_checkpoint_card_json_is_valid() -> None:
    for meta in (Path(__file__).parents[1] / "hilprune" / "models" / "checkpoints").glob("*.json"):
        card = json.loads(meta.read_text())
        assert {"model", "dataset", "val_accuracy", "test_accuracy", "checkpoint"} <= card.keys()
