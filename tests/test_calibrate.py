"""Calibrating a new device: at most CALIBRATION_RUNS live runs, on first use only, saved with
the LUT; and the calibrated predictor tracks the device (the simulated one here, the same on
every machine)."""

from __future__ import annotations

from pathlib import Path

import pytest

import hilprune.calibrate as calibrate_module
from hilprune.calibrate import CALIBRATION_RUNS, calibration_policies, own_observations


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """A fresh device cache, and the number of live runs the calibration takes (the real ones, counted)."""
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))
    calls: list[int] = []
    real = calibrate_module.measure_onnx

    def measure(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(calibrate_module, "measure_onnx", measure)
    return calls


def test_a_new_device_is_calibrated_once_with_at_most_the_stated_runs(counted: list[int]) -> None:
    from envs.evaluator import PolicyEvaluator

    first = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=50, proxy="bn")
    runs = len(counted)
    assert 0 < runs <= CALIBRATION_RUNS
    assert own_observations(first.predictor) >= CALIBRATION_RUNS  # with the dense reference's own run
    again = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=50, proxy="bn")
    assert len(counted) == runs  # the second evaluator reuses the saved calibration
    assert again.predictor.coefficients == pytest.approx(first.predictor.coefficients)
    user = str(Path(__file__).parent / "fixtures_envs" / "user_cnn.py") + ":build"
    PolicyEvaluator(user, dataset="digits", device="sim-cpu", val_size=50, proxy="bn")
    assert runs < len(counted) <= runs + CALIBRATION_RUNS  # another model on the device: calibrated once, as few runs


def test_the_calibrated_predictor_tracks_the_device(counted: list[int]) -> None:
    import numpy as np

    from envs.evaluator import PolicyEvaluator

    ev = PolicyEvaluator("digits-cnn", dataset="digits", device="sim-cpu", val_size=50, proxy="bn")
    rng = np.random.default_rng(7)
    for _ in range(4):
        ratios = rng.uniform(0, 0.9, ev.n_groups).tolist()
        r = ev.evaluate(ratios, live=True)
        assert r.lut_latency_ms == pytest.approx(r.live_latency_ms, rel=0.05)


def test_calibration_policies_start_dense_and_repeat() -> None:
    a, b = calibration_policies(5, 30, 0.9, seed=1), calibration_policies(5, 30, 0.9, seed=1)
    assert a == b and len(a) == 30 and a[0] == [0.0] * 5
    assert all(0.0 <= r <= 0.9 for p in a for r in p)
    assert calibration_policies(5, 30, 0.9, seed=2)[10] != a[10]
