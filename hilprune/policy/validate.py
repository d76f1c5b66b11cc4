"""Checks that a policy fits the model it is about to be applied to; each failure is one clear PolicyError."""

from __future__ import annotations

from typing import Any

from ..errors import PolicyError
from .format import Policy, _check_ratio
from .groups import PrunableGroup, groups_signature
from .rounding import achieved_ratio, channels_after


def validate_policy(policy: Policy, groups: list[PrunableGroup], model_identity: dict[str, Any]) -> Policy:
    """Raise PolicyError naming the problem, else return the policy with achieved ratios recomputed."""
    want = policy.model
    for key in ("name", "input_shape", "num_classes"):
        if key in want and want[key] != model_identity.get(key):
            raise PolicyError(f"policy is for {key}={want[key]!r}, but the model has {key}={model_identity.get(key)!r}")
    by_name = {g.name: g for g in groups}
    seen = set()
    for item in policy.groups:
        if item.name not in by_name:
            raise PolicyError(
                f"unknown group {item.name!r} (this model's groups: {', '.join(list(by_name)[:8])}"
                f"{', ...' if len(by_name) > 8 else ''}; 'hilprune policy init' writes a valid template)"
            )
        if item.name in seen:
            raise PolicyError(f"group {item.name!r} appears twice")
        seen.add(item.name)
        g = by_name[item.name]
        if item.channels_before != g.channels:
            raise PolicyError(
                f"group {item.name!r} has {g.channels} channels in this model, the policy says {item.channels_before}"
            )
        if item.units != g.units:
            raise PolicyError(
                f"group {item.name!r} has {g.units} units (conv groups) in this model, the policy says {item.units}"
            )
        _check_ratio(item.name, item.requested_ratio, policy.max_ratio)
    missing = [g.name for g in groups if g.name not in seen]
    if missing:
        raise PolicyError(f"policy has no ratio for group(s) {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    sig = want.get("groups_signature")
    if sig and sig != groups_signature(groups):
        raise PolicyError("policy was made for a model with other layer groups (groups_signature differs)")
    order = {g.name: i for i, g in enumerate(groups)}
    policy.groups.sort(key=lambda it: order[it.name])
    for item in policy.groups:
        item.channels_after = channels_after(item.channels_before, item.requested_ratio, policy.round_to)
        item.ratio = achieved_ratio(item.channels_before, item.channels_after)
    return policy
