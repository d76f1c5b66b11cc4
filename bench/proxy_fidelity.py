"""Which accuracy proxy ranks same-latency pruning policies the way fine-tuning does.

    python bench/proxy_fidelity.py [--cells resnet20@0.5,resnet20@0.3,resnet56@0.4,mobilenetv2@auto] [--policies 16]
        [--proxies bn:10,bn:40,bn:100,kd:20,kd:40,kd:80] [--ref-steps N | --ref-epochs 1] [--ref-batch 128]
        [--ref-lr 0.01] [--ref-ridge auto|R] [--remove-blocks N] [--test-size N] [--device ort-cpu-1t]
        [--tolerance 0.05] [--round-to 8] [--seed 0]
        [--ref-again | --ref-seeds N] [--reuse NAME | --candidates-from NAME] [--quick] [--results-name proxy_fidelity] [--no-doc] [--markdown-only]

Per cell (model@budget on Fashion-MNIST; `@auto` is the lowest tenth of the dense latency the
model reaches with some room): `--policies` random policies whose LUT latency (the evaluator's
`predict_latency` on `--device`) lies within ±`--tolerance` of the budget. Each is a random
per-group prune profile (relative intensities uniform in [0.2, 1.8]) scaled by bisection onto
the budget, so candidates differ in where they prune, not in how fast they are.

Each candidate is scored by every proxy in `--proxies` through
`PolicyEvaluator.evaluate(fidelity=...)` (val subset `--val-size`, hilprune's default 5000; one torch thread; ``ls+kd:40``
is kd:40 after least-squares reconstruction of the pruned layers on 64 train images, ``ls:N+...`` on
N: `envs.fidelity`; ``ls/R+...`` refits with ridge R instead of the surgery's default), then
fine-tuned by the reference, what `hilprune export` runs: a least-squares refit of the pruned layers
on `--ref-refit` train images (export's default, 64; 0 skips it, as runs before the option did) with
`--ref-ridge` (default the surgery's; ``auto``: the ridge `hilprune export`'s probe picks for that
candidate, as the export now does), BN recalibration, `--ref-steps` steps (or `--ref-epochs` epochs) of
distillation from the dense model with a cosine schedule (`hilprune.train.distill.finetune_kd`), and
its accuracy on `--test-size` images of the test split. Per proxy: Spearman rho against the
reference, a bootstrap 90% interval over the candidates, the regret of its top pick (reference
points lost against the best candidate), and its cost per candidate: the median seconds, on one
core, of scoring it from scratch (surgery, BN, the distillation steps, val accuracy; the dense
teacher's logits are computed once per step for every candidate and not counted).

`--ref-again` fine-tunes each candidate's reference a second time with another seed: the ρ of
that second reference against the first is how far the reference repeats, the ceiling any proxy
can reach against it; each proxy is also ranked against the mean of the two references.
`--ref-seeds N` (N >= 3) runs N reference seeds: each proxy is then also ranked against the mean of
all N, and a row `references, half vs half` ranks the mean of the last N/2 against the mean of the
first N/2 (how far a mean of N/2 repeats: a mean of N repeats better still). With `--reuse`, the
references that file holds are kept and only the missing seeds are fine-tuned.

`--remove-blocks N` removes N residual blocks whole before the candidates are sampled, as `hilprune
search --remove-blocks N` does (the N least harmful): the cells that widths alone cannot reach.

`--candidates-from NAME` scores the candidates of another run (its results file) under this run's
reference (a longer one, say): that run's reference accuracies are then ranked like a proxy (a
row `earlier reference`, the mean of its two references where it ran `--ref-again`): how far a
cheaper reference ranks like this one.

`--quick`: resnet20@0.5 on the simulated device `sim-cpu`, 4 policies, a 20-step reference on 1000
test images, proxies bn:10,kd:10: a smoke run of the pipeline, not a measurement. Results go to
bench/results/<results-name>.json after every candidate (rerunning with the same settings resumes)
and, unless --quick or --no-doc, to the docs/benchmarks.md section <results-name>.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envs.fidelity import DEFAULT_LS_IMAGES, DEFAULT_VAL_SIZE  # noqa: E402  (after the path: the bench runs as a script)

DEFAULT_CELLS = "resnet20@0.5,resnet20@0.3,resnet56@0.4,mobilenetv2@auto"
DEFAULT_PROXIES = "bn:10,bn:40,bn:100,kd:20,kd:40,kd:80"
AGAIN = "reference again"  # the summary's row for the repeated reference (`--ref-again`)
EARLIER = "earlier reference"  # the summary's row for the reference of the run named by `--candidates-from`
HALVES = "references, half vs half"  # the summary's row for the mean of the last N/2 seeds against the first N/2
TARGET_RHO, TARGET_S = 0.8, 10.0  # the target for the default proxy (per resnet20 candidate, one core)
MIN_PARTIAL = 6  # policies a stopped run needs before its section ranks them


# --- candidates -------------------------------------------------------------------------------------
def auto_budget(ev: Any) -> float:
    """The lowest tenth of the dense latency the LUT says the model reaches with 15% to spare."""
    floor = ev.min_latency_ms() / ev.dense_latency_ms
    return min(0.9, math.ceil(floor * 1.15 * 10) / 10)


def sample_candidates(ev: Any, budget_ms: float, n: int, tol: float, seed: int, max_tries: int = 4000) -> list[list[float]]:
    """`n` distinct policies (by kept channels) whose LUT latency is within ±tol of the budget."""
    import numpy as np

    rng = np.random.default_rng(seed)
    G, top = len(ev.groups), float(ev.max_ratio)
    out: list[list[float]] = []
    seen: set[tuple[int, ...]] = set()
    for _ in range(max_tries):
        if len(out) >= n:
            break
        w = rng.uniform(0.2, 1.8, G)

        def ratios(t: float) -> list[float]:
            return [float(min(top, max(0.0, t * x))) for x in w]  # noqa: B023 - used inside this iteration only

        lo, hi = 0.0, top / float(w.min())
        if ev.predict_latency(ratios(hi)) > budget_ms * (1 + tol):
            continue  # this profile cannot reach the budget
        for _ in range(16):  # latency falls (roughly) as t grows
            mid = (lo + hi) / 2
            if ev.predict_latency(ratios(mid)) > budget_ms:
                lo = mid
            else:
                hi = mid
        r = ratios(hi)
        key = ev.kept(r)
        if abs(ev.predict_latency(r) / budget_ms - 1) <= tol and key not in seen:
            seen.add(key)
            out.append(r)
    if len(out) < n:
        raise SystemExit(f"only {len(out)} of {n} candidates within ±{tol:.0%} of {budget_ms:.4g} ms after {max_tries} tries")
    return out


def proxy_list(text: str) -> list[str]:
    """`--proxies` as a list: ``"bn:10, kd:40"`` -> ``["bn:10", "kd:40"]``."""
    return [p.strip() for p in text.split(",") if p.strip()]


# --- one candidate ----------------------------------------------------------------------------------
def split_proxy(proxy: str) -> tuple[int, float | None, str]:
    """A bench proxy ``[ls[:N][/R]+]fidelity`` -> (least-squares images, 0 for none; the refit's
    ridge R, None for the surgery's default; the fidelity). ``ls/0.001+kd:40``: the search's
    proxy refitted with the ridge the export's probe picks where blocks are removed."""
    from envs.fidelity import split_reconstruct
    from hilprune.errors import HilpruneError
    from search.ridge import parse_ridge

    head, plus, tail = proxy.partition("+")
    if not plus:
        return 0, None, proxy
    ls, slash, ridge = head.partition("/")
    if not slash:
        return split_reconstruct(ls)[0], None, tail
    try:
        value = parse_ridge(ridge)  # None for "auto": a proxy names a number
    except HilpruneError:
        value = None
    if value is None:
        raise SystemExit(f"proxy {proxy!r}: the ridge after '/' must be a number > 0, got {ridge!r}")
    return split_reconstruct(ls)[0], value, tail


def score_candidate(ev: Any, ratios: list[float], proxies: list[str]) -> dict[str, Any]:
    """Every proxy's val accuracy and from-scratch cost, dearer ones continuing cheaper ones; the
    proxies with least-squares reconstruction (``ls+kd:40``) on the same evaluator, refitting first."""
    from envs.fidelity import parse_fidelity

    out: dict[str, Any] = {}
    result = None
    plain = ev.reconstruct_images, ev.reconstruct_ridge
    refits = {split_proxy(p)[:2] for p in proxies}  # (images, ridge): one evaluator state each
    try:
        for images, ridge in sorted(refits, key=lambda r: (r[0], r[1] or 0.0)):
            ev.reconstruct_images, ev.reconstruct_ridge = images, ridge
            ev.clear_cache()
            mine = [p for p in proxies if split_proxy(p)[:2] == (images, ridge)]
            for p in sorted(mine, key=lambda p: parse_fidelity(split_proxy(p)[2], ev.bn_batches)):
                fid = str(ev.fidelity(split_proxy(p)[2]))
                result = ev.evaluate(ratios, fidelity=fid, live=False)
                out[p] = {"accuracy": result.accuracy_at(fid), "cost_s": result.rung_cost_s[fid]}
    finally:
        ev.reconstruct_images, ev.reconstruct_ridge = plain
        ev.clear_cache()
    assert result is not None
    return {"proxies": out, "lut_ms": result.lut_latency_ms, "macs": result.macs, "key": list(result.key())}


def prepared(ev: Any, data: Any, ratios: list[float], args: argparse.Namespace, ridge: float | None) -> Any:
    """A candidate as `hilprune export` starts its fine-tune: pruned, refitted by least squares on
    `--ref-refit` train images with `ridge` (None: the surgery's default), BN-recalibrated."""
    from hilprune.train import recalibrate_bn

    policy = ev.policy(ratios)
    model = ev.surgeon.apply(policy, count=False).model
    if args.ref_refit:
        ev.surgeon.refit(model, policy, data.train.x[: args.ref_refit], seed=ev.seed, ridge=ridge)
    recalibrate_bn(model, ev.train, ev.bn_batches, batch_size=ev.bn_batch_size, seed=ev.seed)
    return model


def reference_ridge(ev: Any, data: Any, ratios: list[float], args: argparse.Namespace) -> dict[str, Any]:
    """The ridge the reference refits a candidate with: `--ref-ridge` when given (or the surgery's
    default), else (``auto``) what `hilprune export`'s probe picks for it (`search.ridge.settle_ridge`,
    the export's seed rule: `--seed`); with the probe's scores and seconds."""
    from search.ridge import settle_ridge

    if args.ref_ridge != "auto":
        return {"ridge": float(args.ref_ridge) if args.ref_ridge else ls_ridge()}
    t0 = time.perf_counter()
    ridge, choice = settle_ridge(
        lambda r: prepared(ev, data, ratios, args, r), ev.surgeon.full, data, ridge=None, refits=bool(args.ref_refit),
        finetune_epochs=1.0, lr=args.ref_lr, seed=args.seed,
    )  # fmt: skip
    return {"ridge": ridge, "probe": choice.to_dict() if choice else None, "wall_s": time.perf_counter() - t0}


def reference(
    ev: Any, data: Any, ratios: list[float], args: argparse.Namespace, k: int = 1, ridge: float | None = None
) -> dict[str, Any]:
    """The reference fine-tune of one candidate and its test accuracy; `k` > 1: the same fine-tune
    with the k-th seed, i.e. another order of batches and augmentations: how far the reference
    itself repeats. `ridge`: its least-squares refit's (None: the surgery's default)."""
    from hilprune.train import evaluate
    from hilprune.train.distill import KDConfig, finetune_kd

    t0 = time.perf_counter()
    model = prepared(ev, data, ratios, args, ridge)  # as `hilprune export` starts its fine-tune
    cfg = KDConfig(lr=args.ref_lr, batch_size=args.ref_batch)
    steps = args.ref_steps if args.ref_steps else None
    ft = finetune_kd(
        model, ev.surgeon.full, data, epochs=args.ref_epochs, steps=steps, lr=args.ref_lr, seed=args.seed + 1000 * k,
        device="cpu", progress=False, cfg=cfg, val=False,
    )  # fmt: skip
    test = data.test.subset(args.test_size or None)  # 0: all of it
    return {"test_accuracy": evaluate(model, test, batch_size=500), "steps": ft.steps, "wall_s": time.perf_counter() - t0}


def complete_references(kept: list[dict[str, Any]], n: int, fine_tune: Any) -> list[dict[str, Any]]:
    """The first `n` reference seeds of a candidate: those already run (`kept`, in seed order), then
    `fine_tune(k)` for each missing seed k (1-based), so a rerun with more seeds pays only for them."""
    return kept[:n] + [fine_tune(k) for k in range(len(kept) + 1, n + 1)]


def earlier_reference(row: dict[str, Any]) -> dict[str, Any]:
    """Another run's reference for one candidate (the mean of its seeds where it ran more than one)."""
    refs = references(row)
    return {
        "test_accuracy": sum(r["test_accuracy"] for r in refs) / len(refs),
        "wall_s": sum(r["wall_s"] for r in refs),
        "runs": len(refs),
    }


# --- statistics -------------------------------------------------------------------------------------
def spearman(a: list[float], b: list[float]) -> float:
    from scipy.stats import spearmanr

    rho = spearmanr(a, b).statistic
    return float(rho) if rho == rho else float("nan")


def bootstrap_rho(a: list[float], b: list[float], n: int = 2000, seed: int = 0) -> tuple[float, float]:
    """5th and 95th percentiles of Spearman rho over resampled candidates."""
    import numpy as np
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    x, y = np.asarray(a), np.asarray(b)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(x), len(x))
        rx, ry = rankdata(x[idx]), rankdata(y[idx])
        if rx.std() == 0 or ry.std() == 0:
            continue
        vals.append(float(np.corrcoef(rx, ry)[0, 1]))
    return (float(np.percentile(vals, 5)), float(np.percentile(vals, 95))) if vals else (float("nan"), float("nan"))


def references(row: dict[str, Any]) -> list[dict[str, Any]]:
    """A candidate's reference fine-tunes in seed order (`reference`, `reference_again`, `reference_more`)."""
    return [row["reference"]] + ([row["reference_again"]] if "reference_again" in row else []) + row.get("reference_more", [])


def ranking(acc: list[float], ref: list[float], cost: float) -> dict[str, Any]:
    """How `acc` ranks the candidates against `ref`: rho, its bootstrap interval, the regret (in
    points of `ref`) of its top pick, its cost and its mean."""
    import statistics

    lo, hi = bootstrap_rho(acc, ref)
    pick = max(range(len(acc)), key=lambda i: (acc[i], -i))
    return {
        "rho": spearman(acc, ref),
        "rho_ci90": [lo, hi],
        "regret_pts": 100 * (max(ref) - ref[pick]),
        "cost_s": cost,
        "mean_accuracy": statistics.fmean(acc),
    }


def summarize(rows: list[dict[str, Any]], proxies: list[str]) -> dict[str, Any]:
    """Per proxy: rho against the reference, its interval, the regret of its pick and its cost.
    Where every row has a second reference (`--ref-again`), also rho against the mean of all the
    references (less noisy; `rho_both`, over `refs_in_mean` of them), and a row `reference again`:
    how well the reference ranks itself, the ceiling any proxy can reach against it. With four or
    more, a row `references, half vs half` (the mean of the last half against the first half)."""
    import statistics

    n_refs = min(len(references(r)) for r in rows)  # the seeds every candidate has
    accs = [[x["test_accuracy"] for x in references(r)[:n_refs]] for r in rows]
    ref = [a[0] for a in accs]
    both = [statistics.fmean(a) for a in accs] if n_refs > 1 else None
    scored: dict[str, tuple[list[float], float]] = {
        p: ([r["proxies"][p]["accuracy"] for r in rows], statistics.median(r["proxies"][p]["cost_s"] for r in rows))
        for p in proxies
    }
    if n_refs > 1:
        scored[AGAIN] = ([a[1] for a in accs], statistics.median(r["reference_again"]["wall_s"] for r in rows))
    if all("earlier_reference" in r for r in rows):
        scored[EARLIER] = (
            [r["earlier_reference"]["test_accuracy"] for r in rows],
            statistics.median(r["earlier_reference"]["wall_s"] for r in rows),
        )
    out: dict[str, Any] = {}
    for p, (acc, cost) in scored.items():
        out[p] = ranking(acc, ref, cost)
        if both and p not in (AGAIN, EARLIER):
            out[p] |= {"rho_both": spearman(acc, both), "refs_in_mean": n_refs}
    if n_refs >= 4:
        half = n_refs // 2
        first = [statistics.fmean(a[:half]) for a in accs]
        last = [statistics.fmean(a[half : 2 * half]) for a in accs]
        cost = statistics.median(sum(x["wall_s"] for x in references(r)[half : 2 * half]) for r in rows)
        out[HALVES] = ranking(last, first, cost) | {"refs_in_mean": half}  # its regret: against the first half's mean
    return out


# --- the run ----------------------------------------------------------------------------------------
REFERENCE_KEYS = (
    "policies",
    "ref_steps",
    "ref_epochs",
    "ref_batch",
    "ref_lr",
    "test_size",
    "device",
    "tolerance",
    "round_to",
    "seed",
    "ref_refit",
)
# what results files written before a setting existed ran with
OLD_REFERENCE = {"ref_refit": 0, "ls_ridge": 1e-3, "ref_ridge": None, "remove_blocks": 0}


def ls_ridge() -> float:
    """The surgery's default ridge: the ``ls`` proxies' and the reference's refit unless a proxy
    names its own (``ls/R+``) or `--ref-ridge` is given."""
    from hilprune.surgery.reconstruct import DEFAULT_RIDGE

    return float(DEFAULT_RIDGE)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = (*REFERENCE_KEYS, "proxies", "val_size", "bn_after_kd", "reuse", "ref_again")
    out = {k: getattr(args, k) for k in keys}
    out["ls_ridge"] = ls_ridge()  # the code's, not an option: a results file refitted with another does not resume
    if args.ref_seeds > 2:  # absent otherwise, so earlier results files still resume
        out["ref_seeds"] = args.ref_seeds
    if args.candidates_from:  # absent otherwise, so earlier results files still resume
        out["candidates_from"] = args.candidates_from
    if args.ref_ridge is not None:  # likewise
        out["ref_ridge"] = args.ref_ridge
    if args.remove_blocks:  # likewise
        out["remove_blocks"] = args.remove_blocks
    return out


def run_cell(cell: str, args: argparse.Namespace, res: dict[str, Any], save: Any) -> None:
    import torch

    from envs.evaluator import PolicyEvaluator
    from hilprune.data import load_dataset

    torch.set_num_threads(1)
    model, _, budget_text = cell.partition("@")
    proxies = proxy_list(args.proxies)
    t0 = time.perf_counter()
    ev = PolicyEvaluator(
        model, dataset="fashion-mnist", device=args.device, round_to=args.round_to, val_size=args.val_size, seed=args.seed,
        proxy="bn:10", bn_after_kd=args.bn_after_kd, remove_blocks=args.remove_blocks,
    )  # fmt: skip
    data = load_dataset("fashion-mnist")
    budget = auto_budget(ev) if budget_text == "auto" else float(budget_text)
    b = ev.check_budget(budget)
    entry = res["cells"].setdefault(cell, {"rows": []})
    other = args.reused["cells"][cell] if args.reused else None
    reused = {r["index"]: r for r in other["rows"]} if other else {}
    if "candidates" not in entry:
        entry["candidates"] = (
            other["candidates"] if other else sample_candidates(ev, b.ms, args.policies, args.tolerance, args.seed)
        )
    entry.update(
        model=model,
        budget=budget,
        budget_ms=b.ms,
        dense_latency_ms=ev.dense_latency_ms,
        dense_accuracy=ev.dense_accuracy,
        dense_macs=ev.dense_macs,
        removed_blocks=list(ev.removed_blocks),
        setup_s=time.perf_counter() - t0,
    )
    done = {r["index"] for r in entry["rows"]}
    for i, ratios in enumerate(entry["candidates"]):
        if i in done:
            continue
        t = time.perf_counter()
        row = {"index": i, "ratios": ratios} | score_candidate(ev, ratios, proxies)
        kept = references(reused[i]) if args.reuse else []  # the seeds that file ran, in order
        if args.reuse and "reference_ridge" in reused[i]:  # every seed of a candidate refits with one ridge
            row["reference_ridge"] = reused[i]["reference_ridge"]
        elif len(kept) < args.ref_seeds and args.ref_refit:
            row["reference_ridge"] = reference_ridge(ev, data, ratios, args)
        ridge = row.get("reference_ridge", {}).get("ridge")
        refs = complete_references(kept, args.ref_seeds, lambda k: reference(ev, data, ratios, args, k, ridge))  # noqa: B023
        row["reference"] = refs[0]
        if args.candidates_from and i in reused:  # a partial run's candidates: only those it fine-tuned
            row["earlier_reference"] = earlier_reference(reused[i])
        if len(refs) > 1:
            row["reference_again"] = refs[1]
        if len(refs) > 2:
            row["reference_more"] = refs[2:]
        row["wall_s"] = time.perf_counter() - t
        entry["rows"].append(row)
        accs = " ".join(f"{p} {100 * row['proxies'][p]['accuracy']:.1f}" for p in proxies)
        if ridge is not None:
            accs += f" | ref ridge {ridge:g}"
        if len(refs) > 1:
            accs += " | again " + " ".join(f"{100 * x['test_accuracy']:.2f}" for x in refs[1:])
        print(
            f"{cell} #{i}: MACs {row['macs'] / ev.dense_macs:.1%}, LUT {row['lut_ms']:.4g} ms | {accs} | "
            f"reference {100 * row['reference']['test_accuracy']:.2f} ({row['wall_s']:.0f} s)",
            flush=True,
        )
        save()
    entry["rows"].sort(key=lambda r: r["index"])
    entry["summary"] = summarize(entry["rows"], proxies)
    save()


def markdown(res: dict[str, Any]) -> str:
    from bench.common import header

    s = res["settings"]
    ref = f"{s['ref_steps']} steps" if s["ref_steps"] else f"{s['ref_epochs']:g} epoch(s)"
    ridge = s.get("ls_ridge", OLD_REFERENCE["ls_ridge"])
    ref_ridge = s.get("ref_ridge")
    ref_ridge_text = (
        "the ridge `hilprune export`'s probe picks for that candidate (`search.ridge`: 40 distillation steps from each of "
        "0.001, 0.01 and 0.1, the best on 2000 val images)"
        if ref_ridge == "auto"
        else f"ridge {ref_ridge if ref_ridge is not None else ridge:g}"
    )
    lines = [
        f"## Proxy fidelity: which accuracy proxy ranks same-latency policies like fine-tuning ({res['device_title']}"
        f"{'' if s.get('bn_after_kd', True) else '; kd rungs without BN recalibration after distilling'}"
        f"{'; the reference refits by least squares first, as the export does' if s.get('ref_refit') else ''})\n",
        header(res["machine"]),
        f"Per cell, {s['policies']} random policies whose LUT latency on `{s['device']}` is within ±{s['tolerance']:.0%} of the "
        f"budget (a random per-group prune profile scaled onto the budget; round_to {s['round_to']}). Proxies: val accuracy on "
        f"{s['val_size']} val images after `bn:N` (BN recalibration on N batches of 25 train images) or `kd:N` (then N steps "
        "of distillation from the dense model, batch 64, lr 0.01 constant, T 4, alpha 0.9, "
        f"{'then BN recalibrated again' if s.get('bn_after_kd', True) else 'no BN recalibration after distilling'})"
        + (
            "; `ls+` first refits every layer that lost input channels by least squares, in forward order, to reproduce "
            f"the dense layer's outputs on 64 train images (`ls:N+`: N images; ridge {ridge:g}, `ls/R+`: ridge R). "
            if any("+" in p for p in s["proxies"].split(","))
            else ". "
        )
        + "Reference: "
        + (
            f"least-squares refit of the pruned layers on {s['ref_refit']} train images (what `hilprune export` does "
            f"first; {ref_ridge_text}), BN recalibration, "
            if s.get("ref_refit")
            else "BN recalibration, "
        )
        + f"then {ref} of distillation (batch {s['ref_batch']}, lr {s['ref_lr']} cosine), accuracy on "
        f"{s['test_size'] or 'all'} test images. ρ: Spearman against the reference, [5th, 95th] percentile of a bootstrap "
        "over the policies; regret: reference points the proxy's top pick loses to the best policy; cost: median seconds per "
        "candidate from scratch on one core (the teacher's logits, computed once per step for all candidates, not counted), "
        f"wall clock with the 1-minute load average at {res.get('load_at_start', float('nan')):.1f} on "
        f"{res['machine']['cores']} cores when the run started.\n",
    ]
    if s.get("ref_again"):
        lines.append(
            "`reference again`: the same reference fine-tune with another seed (another order of batches and augmentations), "
            "ranked against the first: how far the reference repeats, so the highest ρ any proxy can reach against it (its "
            "cost column is its seconds per policy). "
            + (
                f"ρ (mean of refs): each proxy against the mean of the {s['ref_seeds']} reference seeds; `{HALVES}`: the mean of "
                f"the last {s['ref_seeds'] // 2} seeds ranked against the mean of the first {s['ref_seeds'] // 2} (its regret is "
                "against the first half, its cost the seconds of its half).\n"
                if s.get("ref_seeds", 2) > 2
                else "ρ (both refs): each proxy against the mean of the two references.\n"
            )
        )
    if s.get("candidates_from"):
        lines.append(
            f"Candidates from `bench/results/{s['candidates_from']}.json`; `earlier reference`: that run's reference accuracy "
            "(the mean of its two where it ran two), ranked against this run's reference like a proxy (its cost column: "
            "seconds per policy).\n"
        )
    if s.get("reuse"):
        lines.append(
            f"Candidates and reference accuracies reused from `bench/results/{s['reuse']}.json`: only the proxies"
            + (" and the reference seeds that file lacks" if s.get("ref_again") else "")
            + " were run in this run.\n"
        )
    for entry in res["cells"].values():
        rows = entry["rows"]
        partial = "summary" not in entry  # a run stopped early: its finished policies, said as such
        if partial and len(rows) < MIN_PARTIAL:
            continue
        summary = summarize(rows, proxy_list(s["proxies"])) if partial else entry["summary"]
        refs = [100 * r["reference"]["test_accuracy"] for r in rows]
        macs = [r["macs"] / entry["dense_macs"] for r in rows]
        ref_s = sorted(r["reference"]["wall_s"] for r in rows)[len(rows) // 2]
        both = any("rho_both" in v for v in summary.values())
        blocks = entry.get("removed_blocks") or []
        chosen = [r["reference_ridge"]["ridge"] for r in rows if "probe" in r.get("reference_ridge", {})]
        about = (
            f"Blocks removed whole first (the least harmful, as `hilprune search --remove-blocks` picks them): {', '.join(blocks)}. "
            if blocks
            else ""
        )
        if chosen:
            picked = ", ".join(f"{r:g} for {chosen.count(r)}" for r in sorted(set(chosen)))
            about += f"The probe's ridge for the reference: {picked} of {len(chosen)} policies."
        lines += [
            f"### {entry['model']} @ {entry['budget']:g}{f', {len(blocks)} blocks removed' if blocks else ''} "
            f"({entry['budget_ms']:.4g} ms; dense {entry['dense_latency_ms']:.4g} ms, val {100 * entry['dense_accuracy']:.1f}%)\n",
            *([about.strip() + "\n"] if about else []),
            (f"**Partial: the run stopped after {len(rows)} of its {len(entry['candidates'])} policies.** " if partial else "")
            + f"{len(rows)} policies, MACs {min(macs):.1%}–{max(macs):.1%} of dense; reference test accuracy "
            f"{min(refs):.2f}–{max(refs):.2f}% (mean {sum(refs) / len(refs):.2f}), {ref_s:.0f} s per policy.\n",
            "| proxy | Spearman ρ | 90% interval | regret of its pick (points) | mean val acc % | s per candidate |"
            + ((" ρ (mean of refs) |" if s.get("ref_seeds", 2) > 2 else " ρ (both refs) |") if both else ""),
            "|---|---|---|---|---|---|" + ("---|" if both else ""),
        ]
        for p, v in summary.items():
            lines.append(
                f"| `{p}` | **{v['rho']:.2f}** | [{v['rho_ci90'][0]:.2f}, {v['rho_ci90'][1]:.2f}] | {v['regret_pts']:.2f} | "
                f"{100 * v['mean_accuracy']:.1f} | {v['cost_s']:.2f} |"
                + ((f" {v['rho_both']:.2f} |" if "rho_both" in v else " – |") if both else "")
            )
        lines.append("")
    if res.get("note"):
        lines.append(res["note"] + "\n")
    return "\n".join(lines)


def main() -> None:
    from bench.common import RESULTS, machine, preset, rewrite_section, write_json, write_section

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default=DEFAULT_CELLS, help="model@budget, comma-separated (@auto: a budget the model reaches)")
    ap.add_argument("--policies", type=int, default=16)
    ap.add_argument("--proxies", default=DEFAULT_PROXIES)
    ap.add_argument("--ref-steps", type=int, default=0, help="reference distillation steps (0: --ref-epochs)")
    ap.add_argument("--ref-epochs", type=float, default=1.0)
    ap.add_argument("--ref-batch", type=int, default=128)
    ap.add_argument("--ref-lr", type=float, default=0.01)
    ap.add_argument(
        "--ref-refit",
        type=int,
        default=DEFAULT_LS_IMAGES,
        help="train images on which the reference refits the pruned layers by least squares before BN recalibration, "
        f"as `hilprune export` does by default ({DEFAULT_LS_IMAGES}); 0: no refit (the reference of runs before it existed)",
    )
    ap.add_argument(
        "--ref-ridge",
        default=None,
        help="the ridge of the reference's least-squares refit: a number, or auto (per candidate, what `hilprune "
        "export`'s probe picks: search.ridge); default: the surgery's (0.1)",
    )
    ap.add_argument(
        "--remove-blocks",
        type=int,
        default=0,
        help="residual blocks removed whole before the candidates are sampled, as `hilprune search --remove-blocks N` "
        "removes them (the N least harmful)",
    )
    ap.add_argument("--test-size", type=int, default=0, help="test images for the reference (0: all)")
    ap.add_argument("--val-size", type=int, default=DEFAULT_VAL_SIZE, help="val images each proxy scores on (hilprune's default)")
    ap.add_argument("--device", default="ort-cpu-1t")
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--round-to", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a smoke run: see the module docstring")
    ap.add_argument("--results-name", default="proxy_fidelity")
    ap.add_argument(
        "--bn-after-kd", action=argparse.BooleanOptionalAction, default=True, help="kd rungs recalibrate BN after distilling"
    )
    ap.add_argument(
        "--reuse",
        default=None,
        help="results name whose candidates and reference accuracies to reuse: only the proxies are scored",
    )
    ap.add_argument(
        "--candidates-from",
        default=None,
        help="results name whose candidates to score under this run's reference; its reference accuracies are ranked "
        "like a proxy (the row 'earlier reference')",
    )
    ap.add_argument(
        "--ref-again",
        action="store_true",
        help="fine-tune every candidate's reference a second time with another seed: how far the reference repeats "
        "(the ceiling of any proxy's rho), and each proxy's rho against the mean of the two (--ref-seeds 2)",
    )
    ap.add_argument(
        "--ref-seeds",
        type=int,
        default=1,
        help="reference fine-tunes per candidate, each with its own seed: each proxy's rho against their mean, and the "
        "mean of the last half against the first (with --reuse, the seeds that file holds are kept)",
    )
    ap.add_argument("--note", default="", help="a paragraph for the docs section (what was and was not run)")
    ap.add_argument("--no-doc", action="store_true")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the docs section from the results file")
    args = ap.parse_args()
    if args.ref_seeds < 1:
        ap.error("--ref-seeds: at least 1")
    args.ref_seeds = max(args.ref_seeds, 2 if args.ref_again else 1)
    if args.remove_blocks < 0:
        ap.error("--remove-blocks: a count >= 0")
    if args.ref_ridge is not None and args.ref_ridge != "auto":
        from hilprune.errors import HilpruneError
        from search.ridge import parse_ridge

        try:
            args.ref_ridge = parse_ridge(args.ref_ridge)
        except HilpruneError as exc:  # one line
            ap.error(str(exc).replace("--ridge", "--ref-ridge"))
    args.ref_again = args.ref_seeds > 1
    if args.quick:
        preset(
            ap, args, cells="resnet20@0.5", policies=4, proxies="bn:10,kd:10", ref_steps=20, ref_batch=64, test_size=1000,
            device="sim-cpu", results_name="proxy_fidelity_quick",
        )  # fmt: skip
    if args.markdown_only:
        rewrite_section(args.results_name, markdown, note=args.note)
        return
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    args.reused = None
    if args.reuse and args.candidates_from:
        ap.error("--reuse and --candidates-from exclude each other (the first keeps the other run's reference)")
    if args.reuse or args.candidates_from:  # the other run's candidates (and, with --reuse, its reference settings)
        args.reused = json.loads((RESULTS / f"{args.reuse or args.candidates_from}.json").read_text())
        keep = (
            (*REFERENCE_KEYS, "ref_ridge", "remove_blocks")
            if args.reuse
            else ("policies", "device", "tolerance", "round_to", "remove_blocks")
        )
        theirs = args.reused["settings"].get("ls_ridge", OLD_REFERENCE["ls_ridge"])
        if args.reuse and theirs != ls_ridge() and args.reused["settings"].get("ref_refit"):
            ap.error(
                f"{args.reuse}'s references refitted with ridge {theirs:g}, this code refits with {ls_ridge():g}: "
                "use --candidates-from to fine-tune them again"
            )
        for k in keep:
            setattr(args, k, args.reused["settings"].get(k, OLD_REFERENCE.get(k)))
        args.cells = ",".join(c for c in args.cells.split(",") if c.strip() in args.reused["cells"]) or ",".join(
            args.reused["cells"]
        )
    path = RESULTS / f"{args.results_name}.json"
    res: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if res.get("settings") != settings(args):
        res = {"settings": settings(args), "cells": {}}
    res |= {"machine": machine(), "device_title": f"`{args.device}`, Fashion-MNIST", "load_at_start": os.getloadavg()[0]}
    if args.note:
        res["note"] = args.note

    def save() -> None:
        write_json(args.results_name, res)

    t0 = time.perf_counter()
    for cell in [c.strip() for c in args.cells.split(",") if c.strip()]:
        run_cell(cell, args, res, save)
        for p, v in res["cells"][cell]["summary"].items():
            print(
                f"{cell} {p}: rho {v['rho']:.2f} [{v['rho_ci90'][0]:.2f}, {v['rho_ci90'][1]:.2f}], regret {v['regret_pts']:.2f} pts, {v['cost_s']:.2f} s"
            )
    res["wall_s"] = time.perf_counter() - t0
    save()
    print(f"wrote {path} ({res['wall_s'] / 60:.1f} min)")
    if not (args.quick or args.no_doc):
        write_section(args.results_name, markdown(res))
        print(f"wrote docs/benchmarks.md ({args.results_name} section)")


if __name__ == "__main__":
    main()
