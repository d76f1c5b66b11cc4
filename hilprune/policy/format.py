"""The layer-wise sparsity policy and its versioned JSON format (`hilprune.policy/v1`).

A policy holds one prune ratio per prunable group, the model it was made for, the
importance criterion and the channel rounding. Requested and achieved ratios are both kept:
rounding to whole (or aligned) channels makes them differ. `excluded` lists the layers the
model's analysis left unpruned, with the reason (optional in the JSON; written when non-empty).
A group with `units` > 1 counts the channels of one unit (one conv group); written when not 1.


A group may also carry a `precision` ("fp32" or "int8") for its root layer (the conv or linear
whose output channels define the group). It is written only when it is not fp32, so policies
without it (every policy before it existed) read as all-fp32 and are written back unchanged.

`removed_blocks` names the residual blocks removed whole before the channels were pruned
(`hilprune.surgery.blocks`); the groups are then those of the model without them. Written only
when non-empty, so a policy that removes no block reads and writes as before.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from .groups import ExcludedLayer, PrunableGroup, groups_signature
from .rounding import achieved_ratio, channels_after

POLICY_FORMAT = "hilprune.policy/v1"
DEFAULT_MAX_RATIO = 0.9
PRECISIONS = ("fp32", "int8")


@dataclass
class GroupRatio:
    name: str
    requested_ratio: float
    ratio: float  # achieved, after rounding to channels
    channels_before: int
    channels_after: int
    kind: str = "conv"
    members: list[str] = field(default_factory=list)
    units: int = 1  # the dimension has channels * units channels; each unit loses the same channels
    precision: str = "fp32"  # of the group's root layer: fp32 or int8

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.units == 1:
            del d["units"]
        if self.precision == "fp32":  # absent means fp32: older readers and files stay as they were
            del d["precision"]
        return d


@dataclass
class Policy:
    model: dict[str, Any]  # ModelSpec.identity() plus "groups_signature"
    groups: list[GroupRatio]
    importance: str = "l1"
    round_to: int = 1
    max_ratio: float = DEFAULT_MAX_RATIO
    metrics: dict[str, Any] = field(default_factory=dict)  # filled by whoever evaluated it
    excluded: list[ExcludedLayer] = field(default_factory=list)  # layers left unpruned, with the reason
    removed_blocks: list[str] = field(default_factory=list)  # residual blocks removed whole, before the widths

    # --- construction -------------------------------------------------------------
    @classmethod
    def from_ratios(
        cls,
        groups: list[PrunableGroup],
        ratios: Mapping[str, float] | list[float],
        model_identity: dict[str, Any],
        importance: str = "l1",
        round_to: int = 1,
        max_ratio: float = DEFAULT_MAX_RATIO,
        excluded: list[ExcludedLayer] | None = None,
        removed_blocks: list[str] | None = None,
    ) -> Policy:
        """Build a policy from per-group ratios (a dict by group name or a list in group order);
        `groups` are those of the model without `removed_blocks`."""
        max_ratio = _check_max_ratio(max_ratio)
        round_to = _check_round_to(round_to)
        if not isinstance(ratios, Mapping):
            ratios = list(ratios)
            if len(ratios) != len(groups):
                raise PolicyError(f"expected {len(groups)} ratios (one per group), got {len(ratios)}")
            ratios = {g.name: r for g, r in zip(groups, ratios)}
        items = []
        for g in groups:
            if g.name not in ratios:
                raise PolicyError(f"policy has no ratio for group {g.name!r}")
            r = _check_ratio(g.name, ratios[g.name], max_ratio)
            kept = channels_after(g.channels, r, round_to)
            items.append(
                GroupRatio(g.name, r, achieved_ratio(g.channels, kept), g.channels, kept, g.kind, list(g.members), g.units)
            )
        identity = dict(model_identity) | {"groups_signature": groups_signature(groups)}
        blocks = _check_blocks(removed_blocks or [])
        return cls(identity, items, importance, round_to, max_ratio, excluded=list(excluded or []), removed_blocks=blocks)

    @classmethod
    def uniform(cls, groups: list[PrunableGroup], ratio: float, model_identity: dict[str, Any], **kw: Any) -> Policy:
        return cls.from_ratios(groups, {g.name: ratio for g in groups}, model_identity, **kw)

    # --- views ----------------------------------------------------------------------
    def requested(self) -> dict[str, float]:
        return {g.name: g.requested_ratio for g in self.groups}

    def kept_channels(self) -> dict[str, int]:
        return {g.name: g.channels_after for g in self.groups}

    def key(self) -> tuple[int, ...]:
        """Identity after rounding: two policies with the same key prune the same channels."""
        return tuple(g.channels_after for g in self.groups)

    def precisions(self) -> dict[str, str]:
        """Each group's precision (fp32 unless marked)."""
        return {g.name: g.precision for g in self.groups}

    def int8_groups(self) -> list[str]:
        """Groups marked int8 (empty: the policy says nothing about precision)."""
        return [g.name for g in self.groups if g.precision == "int8"]

    def graph_precision(self) -> str:
        """The graph's precision in one word: int8 (every group int8), mixed (some) or fp32 (none)."""
        n = len(self.int8_groups())
        return "int8" if n == len(self.groups) else ("mixed" if n else "fp32")

    def set_precision(self, precision: str | Mapping[str, str]) -> Policy:
        """Mark every group (a precision name) or the named groups (a mapping) fp32 or int8; returns self."""
        known = {g.name for g in self.groups}
        marks = {g.name: precision for g in self.groups} if isinstance(precision, str) else dict(precision)
        unknown = sorted(set(marks) - known)
        if unknown:
            raise PolicyError(f"no group(s) {', '.join(unknown)} in this policy")
        for g in self.groups:
            if g.name in marks:
                g.precision = _check_precision(g.name, marks[g.name])
        return self

    # --- JSON -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = {
            "format": POLICY_FORMAT,
            "model": self.model,
            "importance": self.importance,
            "round_to": self.round_to,
            "max_ratio": self.max_ratio,
            "groups": [g.to_dict() for g in self.groups],
            "metrics": self.metrics,
        }
        if self.removed_blocks:
            d["removed_blocks"] = list(self.removed_blocks)
        if self.excluded:
            d["excluded"] = [{"name": e.name, "reason": e.reason, "members": list(e.members)} for e in self.excluded]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def from_dict(cls, obj: Any, source: str = "policy") -> Policy:
        if not isinstance(obj, dict):
            raise PolicyError(f"{source}: a policy is a JSON object")
        fmt = obj.get("format")
        if fmt != POLICY_FORMAT:
            raise PolicyError(f"{source}: unknown policy format {fmt!r} (expected {POLICY_FORMAT!r})")
        try:
            max_ratio = _check_max_ratio(obj.get("max_ratio", DEFAULT_MAX_RATIO), source)
            round_to = _check_round_to(obj.get("round_to", 1), source)
            if not isinstance(obj["groups"], list) or not all(isinstance(g, dict) for g in obj["groups"]):
                raise PolicyError(f"{source}: 'groups' must be a list of objects (one per prunable group)")
            if not isinstance(obj["model"], dict):
                raise PolicyError(f"{source}: 'model' must be an object (the model's identity)")
            groups = []
            for g in obj["groups"]:
                groups.append(
                    GroupRatio(
                        name=str(g["name"]),
                        requested_ratio=_as_float(g.get("requested_ratio", g.get("ratio")), g["name"]),
                        ratio=_as_float(g.get("ratio", g.get("requested_ratio")), g["name"]),
                        channels_before=int(g["channels_before"]),
                        channels_after=int(g.get("channels_after", 0)),
                        kind=str(g.get("kind", "conv")),
                        members=list(g.get("members", [])),
                        units=int(g.get("units", 1)),
                        precision=_check_precision(g["name"], g.get("precision", "fp32")),
                    )
                )
            excluded = obj.get("excluded", [])
            if not isinstance(excluded, list) or not all(isinstance(e, dict) for e in excluded):
                raise PolicyError(f"{source}: 'excluded' must be a list of objects (layers left unpruned)")
            return cls(
                model=dict(obj["model"]),
                groups=groups,
                importance=str(obj.get("importance", "l1")),
                round_to=round_to,
                max_ratio=max_ratio,
                metrics=dict(obj.get("metrics", {})),
                excluded=[
                    ExcludedLayer(str(e["name"]), str(e.get("reason", "")), tuple(str(m) for m in e.get("members", [])))
                    for e in excluded
                ],
                removed_blocks=_check_blocks(obj.get("removed_blocks", []), source),
            )
        except KeyError as exc:
            raise PolicyError(f"{source}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError, OverflowError) as exc:
            raise PolicyError(f"{source}: {exc}") from None

    @classmethod
    def load(cls, path: str | Path) -> Policy:
        path = Path(path)
        if not path.is_file():
            raise PolicyError(f"policy file not found: {path}")
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise PolicyError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        except UnicodeDecodeError:
            raise PolicyError(f"{path}: not valid JSON (not UTF-8 text)") from None
        return cls.from_dict(obj, source=str(path))


def _check_blocks(value: Any, source: str = "policy") -> list[str]:
    if not isinstance(value, list) or not all(isinstance(b, str) and b for b in value):
        raise PolicyError(f"{source}: 'removed_blocks' must be a list of block names (e.g. [\"layer3.7\"])")
    if len(set(value)) != len(value):
        raise PolicyError(f"{source}: 'removed_blocks' names a block twice")
    return list(value)


def _check_precision(name: str, value: Any) -> str:
    if value not in PRECISIONS:
        raise PolicyError(f"group {name!r}: precision {value!r} must be one of {', '.join(PRECISIONS)}")
    return str(value)


def _as_float(value: Any, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"group {name!r}: ratio {value!r} is not a number") from None


def _check_max_ratio(value: Any, source: str = "policy") -> float:
    try:
        m = float(value)
    except (TypeError, ValueError):
        raise PolicyError(f"{source}: max_ratio {value!r} is not a number") from None
    if not 0.0 <= m <= 1.0:  # also refuses NaN
        raise PolicyError(f"{source}: max_ratio {value!r} must be in [0, 1]")
    return m


def _check_round_to(value: Any, source: str = "policy") -> int:
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
        and float(value) == int(float(value))
        and int(float(value)) >= 1
    )
    if not ok:
        raise PolicyError(f"{source}: round_to {value!r} must be a positive integer")
    return int(float(value))


def _check_ratio(name: str, value: Any, max_ratio: float) -> float:
    r = _as_float(value, name)
    if math.isnan(r) or math.isinf(r):
        raise PolicyError(f"group {name!r}: ratio is {r}, must be a number in [0, {max_ratio}]")
    if r < 0 or r > max_ratio + 1e-9:
        raise PolicyError(f"group {name!r}: ratio {r} is outside [0, {max_ratio}] (max_ratio)")
    return r
