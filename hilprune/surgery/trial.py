"""Trial prunes: does pruning a group give the model that the dense one becomes with those channels zeroed?

That is what correct channel surgery means, and it catches whatever the dependency graph got wrong
(a fixed slice, a reshape, a concat of mismatched offsets, a grouped conv). All groups are tried at
once with random channels, in a few rounds (one channel per unit, a random number, all but one); a
failing set is bisected to the groups that fail. Groups that fail are left unpruned, with the reason.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from ..depgraph import Candidate
from ..depgraph.progress import Progress, progress_of
from .plan import Plan, layer_plan, prune_copy

ROUNDS = ("one", "some", "all-but-one")
TOLERANCE = 1e-4  # relative to the output's magnitude


def validate_groups(
    dense: nn.Module,
    candidates: Sequence[Candidate],
    example: torch.Tensor,
    is_out_fn: Callable[[Callable], bool],
    seed: int = 0,
    progress: Progress | bool | None = None,
) -> dict[str, str]:
    """{root name: reason} for every candidate whose trial prune fails."""
    cands = {c.root: c for c in candidates if c.per_unit >= 2}
    failed: dict[str, str] = {}
    with one_thread(), progress_of(progress) as bar:
        bar.stage("trial prunes", len(ROUNDS) * len(cands))
        for round_no, mode in enumerate(ROUNDS):
            rng = random.Random(seed * 1000 + round_no)
            names = [n for n in cands if n not in failed]
            selection = {n: _pick(cands[n], mode, rng) for n in names}

            def trial(subset: list[str], selection: dict = selection) -> str | None:
                return run_trial(dense, cands, {n: selection[n] for n in subset}, example, is_out_fn)

            failed.update(_bisect(names, trial))
            bar.advance(len(cands))
    return failed


@contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread for a while: tiny forward passes on a busy machine are ~20x slower on more."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _pick(cand: Candidate, mode: str, rng: random.Random) -> list[int]:
    """Random root channels to remove: the same number from each unit."""
    s = cand.per_unit
    k = {"one": 1, "some": rng.randint(1, s - 1), "all-but-one": s - 1}[mode]
    return [r for unit in cand.units for r in rng.sample(unit, k)]


def _bisect(names: list[str], trial: Callable[[list[str]], str | None]) -> dict[str, str]:
    """The groups among `names` whose trial fails (one trial when none does)."""
    if not names:
        return {}
    reason = trial(names)
    if reason is None:
        return {}
    if len(names) == 1:
        return {names[0]: reason}
    half = len(names) // 2
    failed = _bisect(names[:half], trial) | _bisect(names[half:], trial)
    if failed:
        return failed
    # Each half passes alone but not together: keep groups greedily while the union keeps passing.
    kept: list[str] = []
    for n in names:
        r = trial(kept + [n])
        if r is None:
            kept.append(n)
        else:
            failed[n] = r
    return failed


@torch.no_grad()
def run_trial(
    dense: nn.Module,
    cands: dict[str, Candidate],
    selection: dict[str, list[int]],
    example: torch.Tensor,
    is_out_fn: Callable[[Callable], bool],
) -> str | None:
    """None when pruning `selection` matches the dense model with those channels zeroed, else what went wrong."""
    plan = layer_plan(cands, selection)
    try:
        out = prune_copy(dense, plan)(example)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        return f"a trial prune fails ({type(exc).__name__}: {first[:160]})"
    ref = zeroed_output(dense, plan, example, is_out_fn)
    if not isinstance(out, torch.Tensor) or out.shape != ref.shape:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        return f"a trial prune changes the output shape ({tuple(ref.shape)} -> {shape})"
    diff = float((out - ref).abs().max())
    if not diff <= TOLERANCE * max(1.0, float(ref.abs().max())):
        return f"a trial prune does not match zeroing the channels (max diff {diff:.1e}): the graph does not follow how they are used"
    return None


def zeroed_output(dense: nn.Module, plan: Plan, example: torch.Tensor, is_out_fn: Callable[[Callable], bool]) -> torch.Tensor:
    """The dense model's output with every channel the plan removes set to zero where its layer produces it."""
    zero: dict[str, set[int]] = defaultdict(set)
    for (name, handler), idxs in plan.items():
        if is_out_fn(handler):
            zero[name] |= idxs
    modules = dict(dense.named_modules())
    handles = []
    for name, idxs in zero.items():
        index = torch.tensor(sorted(idxs), dtype=torch.long)

        def hook(_mod: nn.Module, _inp: object, out: torch.Tensor, index: torch.Tensor = index) -> torch.Tensor:
            out = out.clone()
            out[:, index] = 0.0
            return out

        handles.append(modules[name].register_forward_hook(hook))
    try:
        return dense.eval()(example)
    finally:
        for h in handles:
            h.remove()
