"""The kernel lookup table: misses measured on the device, JSON round trip, fingerprint guard."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from hwprofiler import LUT, DeviceError, KernelSpec, fingerprint_id
from hwprofiler.testing import fast_device

SPECS = [
    KernelSpec(op="conv", cin=8, cout=8, kernel=3, padding=1, h=16, w=16, activation="relu"),
    KernelSpec(op="conv", cin=8, cout=24, kernel=1, h=16, w=16),
    KernelSpec(op="globalavgpool", cin=24, cout=24, h=16, w=16),
    KernelSpec(op="linear", cin=24, cout=10),
]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HWPROFILER_CACHE", str(tmp_path / "cache"))


def test_lut_round_trip(tmp_path):
    dev = fast_device()
    lut = LUT(dev, tmp_path / "lut.json")
    assert lut.fill(SPECS + SPECS[:2], progress=False) == len(SPECS)  # duplicates measured once
    assert lut.measured == len(SPECS) and all(s in lut for s in SPECS)
    values = [lut.get(s) for s in SPECS]
    assert lut.measured == len(SPECS) and all(v > 0 for v in values)

    data = json.loads((tmp_path / "lut.json").read_text())
    assert data["fingerprint_id"] == fingerprint_id(dev) and len(data["entries"]) == len(SPECS)

    copied = tmp_path / "elsewhere" / "copy.json"
    copied.parent.mkdir()
    copied.write_bytes((tmp_path / "lut.json").read_bytes())
    again = LUT.load(copied, dev)
    assert [again.get(s) for s in SPECS] == values and again.measured == 0
    no_device = LUT.load(copied)  # readable without a device, but cannot measure a miss
    assert no_device.get(SPECS[0]) == values[0] and no_device.fingerprint_id == lut.fingerprint_id
    with pytest.raises(DeviceError, match="no device"):
        no_device.get(KernelSpec(op="linear", cin=3, cout=3))


def test_two_writers_keep_each_others_kernels(tmp_path):
    """Two processes (two searches) with the same table open: the second save keeps the first's entries."""
    dev = fast_device()
    a, b = LUT(dev, tmp_path / "lut.json"), LUT(dev, tmp_path / "lut.json")
    a.get(SPECS[0])
    a.save()
    b.get(SPECS[1])  # b read the file before a saved
    b.save()
    merged = LUT.load(tmp_path / "lut.json", dev)
    assert SPECS[0] in merged and SPECS[1] in merged and len(merged) == 2
    assert SPECS[0] not in b  # a plain save leaves the object as it was


def test_adopting_writer_takes_kernels_not_observations(tmp_path):
    """A search saving with adopt_entries gains the kernels another process timed (no need to time
    them again) but not its live observations (its predictor changes only with its own)."""
    dev = fast_device()
    a, b = LUT(dev, tmp_path / "lut.json"), LUT(dev, tmp_path / "lut.json")
    a.get(SPECS[0])
    a.add_observation({"live_ms": 1.0, "n_kernels": 1, "macs": 1})
    a.save()
    b.get(SPECS[1])
    b.save(adopt_entries=True)
    assert SPECS[0] in b and SPECS[1] in b and b.measured == 1
    assert b.observations == [] and len(LUT.load(tmp_path / "lut.json", dev).observations) == 1


def test_lut_refuses_another_fingerprint(tmp_path):
    lut = LUT(fast_device(), tmp_path / "lut.json")
    lut.get(SPECS[-1])
    lut.save()
    other = replace(fast_device(), intra_op_threads=2)
    with pytest.raises(DeviceError, match="another device"):
        LUT.load(tmp_path / "lut.json", other)
    assert len(LUT.load(tmp_path / "lut.json", other, strict=False)) == 1
    (tmp_path / "junk.json").write_text("[]")
    with pytest.raises(DeviceError, match="not a hwprofiler LUT"):
        LUT.load(tmp_path / "junk.json")


def test_default_path_is_per_fingerprint(tmp_path):
    lut = LUT(fast_device())
    assert lut.path == tmp_path / "cache" / "luts" / f"{lut.fingerprint_id}.json"
    lut.get(SPECS[-1])
    lut.save()
    assert SPECS[-1] in LUT(fast_device())  # reopened from the default path
