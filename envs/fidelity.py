"""Fidelities of the accuracy proxy, and the ladder a search climbs.

A policy's accuracy before real fine-tuning can be estimated at several costs (cheap first):

- ``bn:N``: BN recalibration on N train batches, then val accuracy (EagleEye's adaptive BN);
- ``kd:N``: BN recalibration, then N steps of fine-tuning with distillation from the dense model
  (NetAdapt's short-term fine-tune, with soft targets), BN recalibration again (the running
  statistics lag weights that just moved), then val accuracy.

Measured (bench/proxy_fidelity.py, docs/benchmarks.md): against accuracy after a longer fine-tune
from the BN-recalibrated model, kd:40 ranked 16 same-latency resnet20 policies at Spearman rho
0.87-0.92 (bn:10 0.61-0.71). But `hilprune export` refits the pruned layers by least squares before
its fine-tune, and against that reference (refit with ridge 0.1, 150 distillation steps, ranked
against the mean of its seeds; sections proxy_fidelity_ridge_*) ``ls,kd:40`` ranks at 0.88 on
resnet20@0.35, 0.94 on resnet20@0.5, 0.84 on mobilenetv2@0.4 and 0.73 on resnet56@0.4, where one
reference seed repeats another at only 0.47; kd:40 at 0.57, 0.78, 0.78 and 0.27. So the default proxy
refits first, as the export does; its ladder's cheap rung is then ls+bn:10 (0.70, 0.77, 0.87, 0.53).
With 3 blocks of resnet20 removed (at 0.3; proxy_fidelity_blocks_r20_03) it ranks at 0.85 against
a reference refitted with the ridge the export's probe picks there (0.001); refitting the proxy with
0.001 too ranked at 0.92, inside the same bootstrap interval, so the proxy keeps the surgery's ridge.

A proxy is written as one fidelity (``bn``, ``bn:40``, ``kd:40``) or a comma-separated ladder of
them (``bn:10,kd:20,kd:80``). A ladder always starts with a ``bn`` rung (added when not written:
``kd:40`` means ``bn:<bn_batches>,kd:40``); its top is what a single-fidelity search and the RL
environments use, and what the multi-fidelity agents stop at when a trial is never pruned. ``bn``
without a number means the evaluator's ``bn_batches``; a ``bn:N`` rung sets it (``kd`` rungs start
from the model recalibrated on that many batches).

Fidelities are ordered: every ``bn`` rung below every ``kd`` rung, then by N.

A ladder may also start with ``ls`` or ``ls:N`` (``ls,kd:40``): before any rung, each layer that
lost input channels is refitted by least squares to reproduce the dense layer's outputs on N train
images (`hilprune.surgery.reconstruct`, AMC's and ThiNet's step; default 64). It is not a rung of
its own: every rung then starts from the refitted model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import EnvConfigError

KINDS = ("bn", "kd")  # cheap to dear
DEFAULT_PROXY = "ls,kd:40"  # chosen by bench/proxy_fidelity.py against the export's own start (module docstring)
DEFAULT_BN_BATCHES = 10  # of BN_BATCH_SIZE (25) images: chosen by the same measurement
LEGACY_PROXY = "bn:10"  # what runs made before proxies existed were scored with
# Val images every rung scores on (the first ones of the val split; at most all of it). 5000, all of
# Fashion-MNIST's and CIFAR-10's val split: on 1000, one point of standard error hid the differences
# between same-latency policies (ls,kd:40 ranked resnet20@0.5 at rho 0.65; on 5000, 0.81).
DEFAULT_VAL_SIZE = 5000
LEGACY_VAL_SIZE = 1000  # what runs made before DEFAULT_VAL_SIZE was 5000 scored on

_ITEM = re.compile(r"^(bn|kd)(?::(\d+))?$")
_LS = re.compile(r"^ls(?::(\d+))?$")
DEFAULT_LS_IMAGES = 64  # train images for least-squares reconstruction (``ls`` alone)


@dataclass(frozen=True)
class Fidelity:
    """One rung: `kind` (bn or kd) and `n` (BN batches, or distillation steps)."""

    kind: str
    n: int

    def __str__(self) -> str:
        return f"{self.kind}:{self.n}"

    @property
    def rank(self) -> tuple[int, int]:
        return (KINDS.index(self.kind), self.n)

    def __lt__(self, other: Fidelity) -> bool:
        return self.rank < other.rank

    def __le__(self, other: Fidelity) -> bool:
        return self.rank <= other.rank


def parse_fidelity(text: str | Fidelity, bn_batches: int = DEFAULT_BN_BATCHES) -> Fidelity:
    """``bn`` / ``bn:N`` / ``kd:N`` -> Fidelity (``bn`` alone: `bn_batches`)."""
    if isinstance(text, Fidelity):
        return text
    m = _ITEM.match(str(text).strip().lower())
    if not m:
        raise EnvConfigError(f"unknown proxy fidelity {text!r}: write bn, bn:N (N BN batches) or kd:N (N distillation steps)")
    kind, n = m.group(1), m.group(2)
    if kind == "kd" and n is None:
        raise EnvConfigError(f"proxy {text!r}: say how many distillation steps (kd:40)")
    value = int(n) if n is not None else int(bn_batches)
    if value < 1:
        raise EnvConfigError(f"proxy {text!r}: N must be at least 1")
    return Fidelity(kind, value)


def split_reconstruct(proxy: str) -> tuple[int, str]:
    """(train images for least-squares reconstruction, 0 when `proxy` has no ``ls`` item; the
    proxy without it)."""
    items = [p for p in str(proxy).replace(" ", "").split(",") if p]
    found = [(p, _LS.match(p.lower())) for p in items]
    ls = [m for _, m in found if m]
    if len(ls) > 1:
        raise EnvConfigError(f"proxy {proxy!r}: at most one ls item (least-squares reconstruction)")
    images = (int(ls[0].group(1)) if ls[0].group(1) else DEFAULT_LS_IMAGES) if ls else 0
    if ls and images < 1:
        raise EnvConfigError(f"proxy {proxy!r}: ls:N needs at least 1 image")
    return images, ",".join(p for p, m in found if not m)


def parse_ladder(proxy: str, bn_batches: int = DEFAULT_BN_BATCHES) -> tuple[list[Fidelity], int]:
    """The rungs of `proxy` (cheap to dear) and the BN batches they use (an ``ls`` item is not a
    rung: `split_reconstruct`)."""
    images, rest = split_reconstruct(proxy)
    items = [p for p in rest.split(",") if p]
    if not items and images:
        items = ["bn"]  # ls alone: reconstruction, then BN recalibration
    if not items:
        raise EnvConfigError("empty proxy: write bn, bn:N, kd:N or a comma-separated ladder of them")
    bn_items = [p for p in items if p.lower().startswith("bn")]
    if len(bn_items) > 1:
        raise EnvConfigError(f"proxy {proxy!r}: at most one bn rung (kd rungs start from it)")
    if bn_items:
        bn_batches = parse_fidelity(bn_items[0], bn_batches).n
    rungs = sorted({parse_fidelity(p, bn_batches) for p in items})
    if rungs[0].kind != "bn":
        rungs.insert(0, Fidelity("bn", int(bn_batches)))
    if len({str(r) for r in rungs}) != len(items) + (0 if bn_items else 1):
        raise EnvConfigError(f"proxy {proxy!r} names a rung twice")
    return rungs, int(bn_batches)


def ladder_text(rungs: list[Fidelity]) -> str:
    return ",".join(str(r) for r in rungs)


def canonical_proxy(proxy: str, bn_batches: int = DEFAULT_BN_BATCHES) -> str:
    """The proxy as its full ladder (``kd:40`` -> ``bn:10,kd:40``, ``ls,kd:40`` -> ``ls:64,bn:10,kd:40``):
    what jobs and trials record."""
    images = split_reconstruct(proxy)[0]
    return (f"ls:{images}," if images else "") + ladder_text(parse_ladder(proxy, bn_batches)[0])


__all__ = [
    "DEFAULT_BN_BATCHES",
    "DEFAULT_LS_IMAGES",
    "DEFAULT_PROXY",
    "KINDS",
    "LEGACY_PROXY",
    "Fidelity",
    "canonical_proxy",
    "ladder_text",
    "parse_fidelity",
    "parse_ladder",
    "split_reconstruct",
]
