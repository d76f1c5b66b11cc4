"""The policy format: JSON round-trip, channel rounding, and one clear PolicyError per mistake."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hilprune.errors import HilpruneError, PolicyError
from hilprune.models import resolve_model
from hilprune.policy import POLICY_FORMAT, Policy, achieved_ratio, channels_after, groups_signature
from hilprune.surgery import Surgeon


@functools.cache
def surgeon(name: str = "digits-cnn") -> Surgeon:
    shape = (1, 8, 8) if name == "digits-cnn" else (3, 16, 16)
    spec = resolve_model(name, None, shape, 10)
    return Surgeon(spec.build(with_weights=False), spec.input_shape, spec.identity())


def template(tmp_path: Path, ratio: float = 0.5, **kw) -> tuple[Path, dict]:
    s = surgeon()
    path = s.policy([ratio] * len(s.groups), **kw).save(tmp_path / "policy.json")
    return path, json.loads(path.read_text())


def apply_file(path: Path, name: str = "digits-cnn"):
    return surgeon(name).apply(Policy.load(path))


def write(path: Path, obj: dict) -> Path:
    path.write_text(json.dumps(obj))
    return path


# --- round trip ---------------------------------------------------------------------------------


def test_json_round_trip(tmp_path: Path) -> None:
    s = surgeon()
    ratios = [0.0, 0.25, 0.5, 0.9]
    policy = s.policy(ratios, round_to=4, max_ratio=0.9)
    policy.metrics["accuracy"] = 0.97
    path = policy.save(tmp_path / "sub" / "p.json")
    loaded = Policy.load(path)
    assert loaded == policy
    assert loaded.to_dict() == policy.to_dict()
    assert loaded.key() == policy.key()
    assert loaded.to_dict()["format"] == POLICY_FORMAT
    assert loaded.requested() == dict(zip([g.name for g in s.groups], ratios))
    assert loaded.model["groups_signature"] == groups_signature(s.groups)
    assert loaded.model["name"] == "digits-cnn"
    assert not list(tmp_path.glob("sub/*.tmp"))  # written atomically


def test_list_and_dict_ratios_agree() -> None:
    s = surgeon()
    as_list = s.policy([0.1, 0.2, 0.3, 0.4])
    as_dict = s.policy({g.name: r for g, r in zip(s.groups, [0.1, 0.2, 0.3, 0.4])})
    assert as_list.key() == as_dict.key()
    with pytest.raises(PolicyError, match="expected 4 ratios"):
        s.policy([0.1, 0.2])


def test_loaded_policy_applies_and_recomputes_achieved(tmp_path: Path) -> None:
    path, obj = template(tmp_path, 0.5)
    for g in obj["groups"]:
        g["requested_ratio"] = 0.25
        g["ratio"] = 0.999  # stale achieved values are recomputed, never trusted
        g["channels_after"] = 1
    result = apply_file(write(path, obj))
    for g in result.policy.groups:
        assert g.channels_after == channels_after(g.channels_before, 0.25)
        assert g.ratio == pytest.approx(achieved_ratio(g.channels_before, g.channels_after))


def test_groups_in_any_order_are_accepted(tmp_path: Path) -> None:
    path, obj = template(tmp_path, 0.5)
    obj["groups"].reverse()
    result = apply_file(write(path, obj))
    assert [g.name for g in result.policy.groups] == [g.name for g in surgeon().groups]


# --- rounding -----------------------------------------------------------------------------------


def test_round_to_examples() -> None:
    assert channels_after(32, 0.3) == 23
    assert channels_after(32, 0.3, 8) == 16  # 23 rounded down to a multiple of 8
    assert channels_after(32, 0.0, 5) == 32  # nothing pruned: no rounding
    assert channels_after(32, 0.9, 8) == 8  # never below round_to
    assert channels_after(6, 0.5, 8) == 6  # fewer channels than round_to: untouched
    assert channels_after(10, 0.9) == 1
    assert channels_after(10, 1.0) == 1  # at least one channel survives
    assert achieved_ratio(32, 16) == 0.5


@settings(max_examples=200, deadline=None, database=None)
@given(channels=st.integers(1, 1024), ratio=st.floats(0, 1), round_to=st.integers(1, 64))
def test_round_to_properties(channels: int, ratio: float, round_to: int) -> None:
    keep = channels_after(channels, ratio, round_to)
    plain = channels_after(channels, ratio)
    assert 1 <= keep <= channels
    assert keep <= max(plain, min(round_to, channels))  # rounding only prunes more (down to round_to)
    assert keep == channels or keep % round_to == 0 or round_to == 1
    if round_to == 1:
        assert plain == max(1, channels - int(channels * ratio + 1e-9))


def test_surgeon_policy_rounds_every_group() -> None:
    s = surgeon()
    policy = s.policy([0.3] * len(s.groups), round_to=8)
    assert policy.round_to == 8
    assert all(g.channels_after % 8 == 0 for g in policy.groups)
    assert all(g.ratio >= g.requested_ratio for g in policy.groups)
    result = s.apply(policy)
    assert result.model.features[0].out_channels == policy.groups[0].channels_after


# --- bad policies: one clear PolicyError each -----------------------------------------------------


def one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg
    assert isinstance(exc.value, HilpruneError)
    return msg


def test_ratio_above_max_ratio(tmp_path: Path) -> None:
    s = surgeon()
    with pytest.raises(PolicyError, match=r"outside \[0, 0.9\]") as exc:
        s.policy([0.95] * len(s.groups))
    one_line(exc)
    path, obj = template(tmp_path)
    obj["groups"][1]["requested_ratio"] = 0.95
    with pytest.raises(PolicyError, match=r"group 'features.3': ratio 0.95 is outside \[0, 0.9\]"):
        apply_file(write(path, obj))
    obj["groups"][1]["requested_ratio"] = 0.6
    obj["max_ratio"] = 0.5
    with pytest.raises(PolicyError, match="outside"):
        apply_file(write(path, obj))


def test_negative_ratio(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="ratio -0.1 is outside"):
        surgeon().policy([0.1, -0.1, 0.1, 0.1])
    path, obj = template(tmp_path)
    obj["groups"][0]["requested_ratio"] = -0.5
    with pytest.raises(PolicyError, match="group 'features.0': ratio -0.5 is outside") as exc:
        apply_file(write(path, obj))
    one_line(exc)


def test_nan_ratio(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="ratio is nan"):
        surgeon().policy([0.1, float("nan"), 0.1, 0.1])
    path, obj = template(tmp_path)
    obj["groups"][2]["requested_ratio"] = float("nan")
    path.write_text(json.dumps(obj))  # json writes NaN, which Python's json reads back
    assert "NaN" in path.read_text()
    with pytest.raises(PolicyError, match="group 'features.7': ratio is nan") as exc:
        apply_file(path)
    one_line(exc)
    obj["groups"][2]["requested_ratio"] = "half"
    with pytest.raises(PolicyError, match="ratio 'half' is not a number"):
        apply_file(write(path, obj))


def test_unknown_group(tmp_path: Path) -> None:
    path, obj = template(tmp_path)
    obj["groups"][0]["name"] = "features.99"
    with pytest.raises(PolicyError, match="unknown group 'features.99'.*policy init") as exc:
        apply_file(write(path, obj))
    one_line(exc)


def test_missing_group(tmp_path: Path) -> None:
    path, obj = template(tmp_path)
    del obj["groups"][3]
    with pytest.raises(PolicyError, match="no ratio for group.*features.10") as exc:
        apply_file(write(path, obj))
    one_line(exc)
    with pytest.raises(PolicyError, match="no ratio for group 'features.0'"):
        surgeon().policy({"features.3": 0.1})


def test_duplicate_group(tmp_path: Path) -> None:
    path, obj = template(tmp_path)
    obj["groups"].append(dict(obj["groups"][0]))
    with pytest.raises(PolicyError, match="appears twice"):
        apply_file(write(path, obj))


def test_channel_count_mismatch(tmp_path: Path) -> None:
    path, obj = template(tmp_path)
    obj["groups"][0]["channels_before"] = 31
    with pytest.raises(PolicyError, match="has 32 channels in this model, the policy says 31"):
        apply_file(write(path, obj))


def test_policy_for_another_model(tmp_path: Path) -> None:
    path, _obj = template(tmp_path)
    with pytest.raises(PolicyError, match="policy is for name='digits-cnn', but the model has name='resnet20'") as exc:
        apply_file(path, "resnet20")
    one_line(exc)
    s = surgeon()
    other_shape = resolve_model("digits-cnn", None, (1, 16, 16), 10)
    other = Surgeon(other_shape.build(with_weights=False), other_shape.input_shape, other_shape.identity())
    with pytest.raises(PolicyError, match="input_shape"):
        other.apply(Policy.load(path))
    assert len(s.groups) == len(other.groups)


def test_groups_signature_mismatch(tmp_path: Path) -> None:
    path, obj = template(tmp_path)
    obj["model"]["groups_signature"] = "0123456789abcdef"
    with pytest.raises(PolicyError, match="groups_signature"):
        apply_file(write(path, obj))


def test_bad_format_string(tmp_path: Path) -> None:
    path, obj = template(tmp_path)
    obj["format"] = "hilprune.policy/v0"
    with pytest.raises(PolicyError, match=r"unknown policy format 'hilprune.policy/v0' \(expected 'hilprune.policy/v1'\)") as exc:
        Policy.load(write(path, obj))
    one_line(exc)
    del obj["format"]
    with pytest.raises(PolicyError, match="unknown policy format None"):
        Policy.load(write(path, obj))


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text("{ this is not json")
    with pytest.raises(PolicyError, match="not valid JSON") as exc:
        Policy.load(path)
    one_line(exc)
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(PolicyError, match="not valid JSON"):
        Policy.load(path)
    path.write_text("[1, 2, 3]")
    with pytest.raises(PolicyError, match="a policy is a JSON object"):
        Policy.load(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="policy file not found: .*nope.json") as exc:
        Policy.load(tmp_path / "nope.json")
    one_line(exc)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("max_ratio", 1.5, "max_ratio 1.5 must be in"),
        ("max_ratio", "high", "max_ratio 'high' is not a number"),
        ("round_to", 0, "round_to 0 must be a positive integer"),
        ("round_to", 2.5, "round_to 2.5 must be a positive integer"),
        ("groups", {"features.0": 0.5}, "'groups' must be a list"),
        ("model", "digits-cnn", "'model' must be an object"),
    ],
)
def test_malformed_fields(tmp_path: Path, field: str, value: object, message: str) -> None:
    path, obj = template(tmp_path)
    obj[field] = value
    with pytest.raises(PolicyError, match=message) as exc:
        Policy.load(write(path, obj))
    one_line(exc)


def test_missing_fields(tmp_path: Path) -> None:
    path, obj = template(tmp_path)
    del obj["groups"][0]["channels_before"]
    with pytest.raises(PolicyError, match="missing field 'channels_before'"):
        Policy.load(write(path, obj))
    path, obj = template(tmp_path)
    del obj["model"]
    with pytest.raises(PolicyError, match="missing field 'model'"):
        Policy.load(write(path, obj))


def test_bad_max_ratio_and_round_to_in_code() -> None:
    s = surgeon()
    with pytest.raises(PolicyError, match="max_ratio"):
        s.policy([0.1] * 4, max_ratio=float("nan"))
    with pytest.raises(PolicyError, match="round_to"):
        s.policy([0.1] * 4, round_to=0)
