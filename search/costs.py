"""What scoring policies cost a search: seconds of the accuracy proxy per agent and per fidelity.

Read back from the trials (COMPLETE and PRUNED): each records the fidelity its policy reached and
the seconds the evaluator spent on that policy's accuracy, over every rung (surgery, BN
recalibration, distillation, val accuracy; latency not included). A policy an agent recorded
twice (a repeated proposal answered from the cache) is counted once; a policy the evaluator had
already scored for an earlier agent is counted for each agent, as what it would have cost alone.
"""

from __future__ import annotations

from typing import Any

from .store import CostRecord


def proxy_costs(costs: dict[str, list[CostRecord]]) -> dict[str, Any]:
    """Per agent: policies, pruned trials, seconds in all and per policy, and per fidelity reached;
    plus `all`: the seconds per fidelity over every agent."""
    out: dict[str, Any] = {}
    total: dict[str, float] = {}
    for agent, recs in sorted(costs.items()):
        if not recs:
            continue
        by_key: dict[tuple[int, ...], CostRecord] = {}
        for r in recs:
            prev = by_key.get(r.key)
            if prev is None or (r.cost_s or 0.0) > (prev.cost_s or 0.0):
                by_key[r.key] = r
        by_fid: dict[str, dict[str, float]] = {}
        for r in by_key.values():
            cell = by_fid.setdefault(r.fidelity or "-", {"policies": 0, "seconds": 0.0})
            cell["policies"] += 1
            cell["seconds"] += r.cost_s or 0.0
            total[r.fidelity or "-"] = total.get(r.fidelity or "-", 0.0) + (r.cost_s or 0.0)
        seconds = sum(c["seconds"] for c in by_fid.values())
        out[agent] = {
            "trials": len(recs),
            "pruned": sum(1 for r in recs if r.state == "PRUNED"),
            "policies": len(by_key),
            "seconds": seconds,
            "s_per_policy": seconds / len(by_key),
            "by_fidelity": dict(sorted(by_fid.items())),
        }
    out["all"] = {"by_fidelity": dict(sorted(total.items())), "seconds": sum(total.values())}
    return out


def markdown_costs(proxy: str | None, costs: dict[str, Any]) -> list[str]:
    """The report's section on the proxy's cost."""
    agents = [a for a in costs if a != "all"]
    if not agents:
        return []
    fids = list(costs["all"]["by_fidelity"])
    lines = [
        "",
        f"## Accuracy proxy `{proxy or '-'}`: cost per agent",
        "",
        "Seconds spent scoring accuracy (surgery, BN, distillation, val accuracy), by the fidelity each policy reached;"
        " pruned policies stopped at a cheap rung.",
        "",
        "| agent | policies | pruned | s per policy | " + " | ".join(f"{f} (policies, s)" for f in fids) + " |",
        "|---|---|---|---|" + "---|" * len(fids),
    ]
    for agent in agents:
        c = costs[agent]
        cells = []
        for f in fids:
            cell = c["by_fidelity"].get(f)
            cells.append(f"{cell['policies']}, {cell['seconds']:.1f}" if cell else "-")
        lines.append(f"| {agent} | {c['policies']} | {c['pruned']} | {c['s_per_policy']:.2f} | " + " | ".join(cells) + " |")
    return lines


__all__ = ["markdown_costs", "proxy_costs"]
