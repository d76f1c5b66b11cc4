"""ONNX export: a fixed-shape graph that onnxruntime runs with torch parity, checked at export time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

import hilprune.export.onnx_export as ox
from hilprune.errors import HilpruneError
from hilprune.export import OPSET, TOLERANCE, export_onnx, ort_session, to_onnx_bytes, verify_onnx
from hilprune.models import resolve_model
from hilprune.surgery import Surgeon


def digits_model():
    spec = resolve_model("digits-cnn", "digits")
    return spec, spec.build()


def test_export_writes_a_valid_verified_graph(tmp_path: Path) -> None:
    spec, model = digits_model()
    res = export_onnx(model, spec.input_shape, tmp_path / "a" / "m.onnx")
    assert res.path == tmp_path / "a" / "m.onnx" and res.path.read_bytes() == res.onnx_bytes
    assert res.max_abs_diff is not None and res.max_abs_diff <= TOLERANCE
    proto = onnx.load_from_string(res.onnx_bytes)
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version == OPSET
    assert [i.name for i in proto.graph.input] == ["input"] and [o.name for o in proto.graph.output] == ["logits"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, *spec.input_shape]
    # node names keep the module path (latency maps back to layers)
    assert any("features.0" in n.name for n in proto.graph.node)


def test_ort_matches_torch_on_other_inputs() -> None:
    spec, model = digits_model()
    sess = ort_session(to_onnx_bytes(model, spec.input_shape, batch=4))
    x = torch.randn(4, *spec.input_shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        ref = model(x).numpy()
    out = sess.run(None, {"input": x.numpy()})[0]
    assert out.shape == (4, 10)
    np.testing.assert_allclose(out, ref, atol=TOLERANCE)


def test_pruned_export_is_smaller() -> None:
    spec, model = digits_model()
    s = Surgeon(model, spec.input_shape, spec.identity())
    pruned = s.apply(s.policy([0.5] * len(s.groups))).model
    dense_res, pruned_res = export_onnx(model, spec.input_shape), export_onnx(pruned, spec.input_shape)
    assert len(pruned_res.onnx_bytes) < 0.6 * len(dense_res.onnx_bytes)
    assert pruned_res.max_abs_diff <= TOLERANCE


def test_mismatch_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, model = digits_model()
    monkeypatch.setattr(ox, "verify_onnx", lambda *a, **k: 0.5)
    with pytest.raises(HilpruneError, match="ONNX export does not match torch: max abs difference 5.00e-01"):
        export_onnx(model, spec.input_shape, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()  # nothing unverified is written
    res = export_onnx(model, spec.input_shape, verify=False)
    assert res.max_abs_diff is None and res.path is None


def test_verify_detects_a_different_model() -> None:
    spec, model = digits_model()
    data = to_onnx_bytes(model, spec.input_shape)
    other = resolve_model("digits-cnn", None, (1, 8, 8), 10).build()
    assert verify_onnx(model, data, spec.input_shape) <= TOLERANCE
    assert verify_onnx(other, data, spec.input_shape) > TOLERANCE


def test_export_leaves_model_in_eval_mode_on_user_model() -> None:
    spec = resolve_model(f"{Path(__file__).parent / 'fixtures' / 'user_model.py'}:build", None, "3,16,16", 10)
    model = spec.build().train()
    res = export_onnx(model, spec.input_shape)
    assert not model.training and res.max_abs_diff <= TOLERANCE
