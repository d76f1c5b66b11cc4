"""AutoPrune baseline (Xiao, Wang, Rajasekaran, NeurIPS 2019): learn channel gates, read a policy off them.

AutoPrune prunes by optimizing auxiliary gate parameters instead of the weights, with a
straight-through indicator so a closed gate can reopen. Here:

- one gate vector per prunable group (one gate per channel of the group's dimension), applied by
  forward hooks at every layer whose *output* channels the group prunes: a BatchNorm when the
  layer has one (a gate before an eval-mode BN would be undone by its shift), else the conv or
  linear itself. A coupled group (a residual add, a depthwise chain) has several such layers; they
  all share the group's gate vector, so a channel is closed everywhere at once, as pruning does;
- the forward pass uses the hard indicator `gate > tau` (the network sees exactly the pruned
  structure), the backward pass is straight-through (identity) to the gate;
- the loss is cross-entropy on the train split plus `lambda * sum_c cost_c * |gate_c|`, where a
  channel's cost is its group's latency share from the device LUT (`evaluator.predict_latency`:
  what pruning the group saves) divided by its channels, normalized so all channels cost 1 in total;
- weights are frozen (`weight_lr=0`, BN statistics frozen too) or trained jointly at a small lr;
- channels whose gate ends at or below tau are removed: ratio per group = closed fraction,
  rounded up to the search grid and clipped to max_ratio. With `fit_budget` (default) a policy the
  LUT predicts over the budget closes further channels, lowest gates first, until it fits.

Gate training uses batches of 32 train images: on one CPU thread a resnet20 forward+backward step
costs 0.06 s at batch 32 and 0.18 s at 64 (resnet56: 0.16 and 0.40 s), so 32 buys more steps per second.

Optuna (TPE, seeded) tunes lambda, tau, the gate learning rate and the number of steps to maximize
validation accuracy within the budget: one in-memory study per latency budget, rebuilt from the
job's recorded trials on resume. Each tuning trial is one evaluation, recorded in the job's
`autoprune` study like every other agent's trial (params = per-group ratios on the grid), with the
hyperparameters as user attrs `autoprune_*`.

The evaluator then prunes each group's channels by its own importance criterion (l1 by default):
the gates decide *how many* channels a group loses, not which ones.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
import torch
import torch.nn.functional as F
from torch import nn

from hilprune.policy import PrunableGroup, build_graph

from .tpe import agent_seed, frozen_constraint_kwargs, sampler_constraint_kwargs, set_trial_constraint, snap_up

if TYPE_CHECKING:
    from envs.interface import Evaluator

    from ..context import SearchContext

log = logging.getLogger(__name__)

ATTR_PREFIX = "autoprune_"


# --------------------------------------------------------------------------------------------
# gates
# --------------------------------------------------------------------------------------------
class _StraightThroughGate(torch.autograd.Function):
    """Forward: 1[gate > tau]; backward: identity (the AutoPrune indicator with a straight-through rule)."""

    @staticmethod
    def forward(ctx: Any, gate: torch.Tensor, tau: float) -> torch.Tensor:  # noqa: D102
        return (gate > tau).to(gate.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: D102
        return grad, None


@dataclass
class _GateSite:
    module_name: str
    group: str
    index: torch.Tensor | None  # root channel of each of the module's output channels (None: identity)


def gate_sites(model: nn.Module, groups: list[PrunableGroup], example: torch.Tensor) -> list[_GateSite]:
    """Where each group's gate goes: the layers whose output channels the group prunes.

    A conv/linear whose output feeds a BatchNorm of the same group is not gated itself (its BN is):
    gating before an eval-mode BN would leave the BN's shift behind.
    """
    saved = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in saved:  # the graph is traced through autograd: frozen weights would hide the layers
            p.requires_grad_(True)
        graph = build_graph(model, example)
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
    names = {m: n for n, m in model.named_modules()}
    modules = dict(model.named_modules())
    sites: list[_GateSite] = []
    for g in groups:
        root = modules[g.name]
        fn = _out_fn(root)
        pg = graph.get_pruning_group(root, fn, list(range(g.channels)))
        outs: dict[str, list[int]] = {}
        for item in pg:
            mod = item.dep.target.module
            if mod not in names or not graph.is_out_channel_pruning_fn(item.dep.handler):
                continue
            if not isinstance(mod, (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)):
                continue
            outs.setdefault(names[mod], [int(i) for i in item.idxs])
        bn_fed = set()
        for name in outs:
            mod = modules[name]
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and mod in graph.module2node:
                for nxt in graph.module2node[mod].outputs:
                    if isinstance(nxt.module, nn.modules.batchnorm._BatchNorm) and names.get(nxt.module) in outs:
                        bn_fed.add(name)
        for name, idxs in outs.items():
            if name in bn_fed:
                continue
            if len(idxs) != g.channels:
                log.warning("autoprune: %s has %d channels in group %s of %d; not gated", name, len(idxs), g.name, g.channels)
                continue
            index = None if idxs == list(range(g.channels)) else torch.as_tensor(np.argsort(idxs))
            sites.append(_GateSite(name, g.name, index))
    return sites


def _out_fn(module: nn.Module) -> Any:
    import torch_pruning as tp

    return tp.prune_linear_out_channels if isinstance(module, nn.Linear) else tp.prune_conv_out_channels


class ChannelGates(nn.Module):
    """One learnable gate vector per group, applied by forward hooks (see `gate_sites`)."""

    def __init__(
        self,
        model: nn.Module,
        groups: list[PrunableGroup],
        example: torch.Tensor,
        init: float = 1.0,
        sites: list[_GateSite] | None = None,
    ) -> None:
        super().__init__()
        self._model = [model]  # not a submodule: the gates' parameters are only the gates
        self.groups = groups
        self.gates = nn.ParameterDict({_key(g.name): nn.Parameter(torch.full((g.channels,), float(init))) for g in groups})
        self.sites = sites if sites is not None else gate_sites(model, groups, example)
        self.tau = 0.5
        self._handles: list[Any] = []

    def attach(self) -> ChannelGates:
        modules = dict(self._model[0].named_modules())
        for site in self.sites:
            self._handles.append(modules[site.module_name].register_forward_hook(self._hook(site)))
        return self

    def detach(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def _hook(self, site: _GateSite) -> Any:
        def hook(_mod: nn.Module, _inp: Any, out: torch.Tensor) -> torch.Tensor:
            mask = _StraightThroughGate.apply(self.gates[_key(site.group)], self.tau)
            if site.index is not None:
                mask = mask[site.index]
            shape = [1, -1] + [1] * (out.dim() - 2)
            return out * mask.view(*shape)

        return hook

    def values(self) -> dict[str, np.ndarray]:
        return {g.name: self.gates[_key(g.name)].detach().cpu().numpy().copy() for g in self.groups}


def _key(name: str) -> str:
    return name.replace(".", "__")  # ParameterDict keys may not contain dots


# --------------------------------------------------------------------------------------------
# latency cost per channel (from the LUT)
# --------------------------------------------------------------------------------------------
def channel_costs(evaluator: Evaluator, groups: list[PrunableGroup]) -> dict[str, float]:
    """Latency cost of one channel of each group, normalized so all channels together cost 1.

    A group's share is what the LUT says pruning it to max_ratio saves (others dense), divided by
    the channels that removes. Non-positive shares (latency is not monotone in channels) get a
    floor of 1% of the mean share, so every channel costs something.
    """
    zero = {g.name: 0.0 for g in groups}
    dense = float(evaluator.predict_latency(zero))
    max_ratio = float(evaluator.max_ratio)
    per_channel: dict[str, float] = {}
    for g in groups:
        cut = zero | {g.name: max_ratio}
        saved = dense - float(evaluator.predict_latency(cut))
        removed = max(1, math.floor(g.channels * max_ratio + 1e-9))
        per_channel[g.name] = saved / removed
    positive = [v for v in per_channel.values() if v > 0]
    floor = 0.01 * (float(np.mean(positive)) if positive else 1.0)
    per_channel = {k: max(v, floor) for k, v in per_channel.items()}
    total = sum(per_channel[g.name] * g.channels for g in groups)
    return {k: v / total for k, v in per_channel.items()}


# --------------------------------------------------------------------------------------------
# one gate-training run
# --------------------------------------------------------------------------------------------
@dataclass
class GateConfig:
    lam: float = 1.0  # weight of the latency-cost L1 term
    tau: float = 0.5  # a channel survives when its gate ends above tau
    lr: float = 0.05  # gate learning rate (Adam)
    steps: int = 60
    batch_size: int = 32
    weight_lr: float = 0.0  # 0: weights frozen; > 0: joint training at this lr (SGD)
    init: float = 1.0
    seed: int = 0


def train_gates(
    model: nn.Module,
    groups: list[PrunableGroup],
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    costs: dict[str, float],
    cfg: GateConfig,
    example: torch.Tensor,
    sites: list[_GateSite] | None = None,
) -> dict[str, np.ndarray]:
    """Train the gates on (train_x, train_y); returns the final gate values per group."""
    gen = torch.Generator().manual_seed(cfg.seed)
    model.eval()  # BN statistics frozen
    for p in model.parameters():
        p.requires_grad_(cfg.weight_lr > 0)
    gates = ChannelGates(model, groups, example, cfg.init, sites=sites)
    gates.tau = cfg.tau
    cost_vec = {g.name: torch.full((g.channels,), costs[g.name]) for g in groups}
    opt = torch.optim.Adam(gates.gates.parameters(), lr=cfg.lr)
    wopt = torch.optim.SGD([p for p in model.parameters()], lr=cfg.weight_lr, momentum=0.9) if cfg.weight_lr > 0 else None
    n = len(train_y)
    gates.attach()
    try:
        for _step in range(cfg.steps):
            idx = torch.randint(0, n, (min(cfg.batch_size, n),), generator=gen)
            logits = model(train_x[idx])
            ce = F.cross_entropy(logits, train_y[idx])
            penalty = sum((cost_vec[g.name] * gates.gates[_key(g.name)].abs()).sum() for g in groups)
            loss = ce + cfg.lam * penalty
            opt.zero_grad(set_to_none=True)
            if wopt is not None:
                wopt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if wopt is not None:
                wopt.step()
    finally:
        gates.detach()
        for p in model.parameters():
            p.requires_grad_(False)
    return gates.values()


def gates_to_ratios(
    values: dict[str, np.ndarray], groups: list[PrunableGroup], tau: float, max_ratio: float, grid_step: float
) -> dict[str, float]:
    """Closed fraction of each group's gates, rounded up to the grid and clipped to max_ratio."""
    out = {}
    for g in groups:
        closed = int((values[g.name] <= tau).sum())
        out[g.name] = snap_up(closed / g.channels, grid_step, max_ratio)
    return out


def fit_to_budget(
    values: dict[str, np.ndarray],
    groups: list[PrunableGroup],
    ratios: dict[str, float],
    predict: Any,
    budget_ms: float,
    max_ratio: float,
    grid_step: float,
) -> tuple[dict[str, float], bool]:
    """Close more channels, lowest gates first, until the LUT predicts the budget is met.

    Bisection over how many extra channels to close (latency is close to monotone in it).
    Returns (ratios, whether anything had to change).
    """
    if predict(ratios) <= budget_ms:
        return ratios, False
    order = []  # (gate value, group, channel) of open channels, lowest first
    for g in groups:
        closed = math.floor(g.channels * ratios[g.name] + 1e-9)
        vals = np.sort(values[g.name])[closed:]
        order.extend((float(v), g.name) for v in vals)
    order.sort()
    base = {g.name: math.floor(g.channels * ratios[g.name] + 1e-9) for g in groups}
    channels = {g.name: g.channels for g in groups}

    def with_extra(k: int) -> dict[str, float]:
        closed = dict(base)
        for _v, name in order[:k]:
            closed[name] += 1
        return {name: snap_up(c / channels[name], grid_step, max_ratio) for name, c in closed.items()}

    lo, hi = 0, len(order)
    if predict(with_extra(hi)) > budget_ms:
        return with_extra(hi), True  # the budget is out of reach even at max_ratio everywhere
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if predict(with_extra(mid)) <= budget_ms:
            hi = mid
        else:
            lo = mid
    return with_extra(hi), True


# --------------------------------------------------------------------------------------------
# the agent
# --------------------------------------------------------------------------------------------
class AutoPruneAgent:
    """AutoPrune gates, their hyperparameters tuned by seeded TPE; one evaluation per tuning trial."""

    name = "autoprune"
    supports_workers = True  # each worker keeps its own inner studies, fed every worker's trials

    def __init__(
        self,
        lam_range: tuple[float, float] = (1e-3, 1.0),
        tau_range: tuple[float, float] = (0.05, 0.95),
        lr_range: tuple[float, float] = (1e-3, 2e-1),
        steps_range: tuple[int, int] = (20, 100),
        batch_size: int = 32,
        weight_lr: float = 0.0,
        fit_budget: bool = True,
        n_startup_trials: int = 5,
        train_samples: int | None = 4096,
    ) -> None:
        self.lam_range = lam_range
        self.tau_range = tau_range
        self.lr_range = lr_range
        self.steps_range = steps_range
        self.batch_size = batch_size
        self.weight_lr = weight_lr
        self.fit_budget = fit_budget
        self.n_startup_trials = n_startup_trials
        self.train_samples = train_samples

    # -- hyperparameter search space ---------------------------------------------------------
    def _space(self) -> dict[str, optuna.distributions.BaseDistribution]:
        D = optuna.distributions
        return {
            "lam": D.FloatDistribution(*self.lam_range, log=True),
            "tau": D.FloatDistribution(*self.tau_range),
            "lr": D.FloatDistribution(*self.lr_range, log=True),
            "steps": D.IntDistribution(self.steps_range[0], self.steps_range[1], step=10),
        }

    def _inner_study(self, seed: int) -> optuna.Study:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=self.n_startup_trials, multivariate=True, **sampler_constraint_kwargs()
            )
        return optuna.create_study(direction="maximize", sampler=sampler)

    def _replay(self, inner: list[optuna.Study], budgets: list[float], study: optuna.Study, seen: set[int]) -> None:
        """Feed recorded trials (this or another worker's) to the per-budget inner studies."""
        space = self._space()
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
            if t.number in seen:
                continue
            seen.add(t.number)
            attrs = t.user_attrs
            if f"{ATTR_PREFIX}budget_ms" not in attrs or not t.values or any(f"{ATTR_PREFIX}{k}" not in attrs for k in space):
                continue
            match = [
                i for i, bud in enumerate(budgets) if math.isclose(bud, float(attrs[f"{ATTR_PREFIX}budget_ms"]), rel_tol=1e-6)
            ]
            if not match:  # a budget this run no longer has
                continue
            b = match[0]
            params = {k: attrs[f"{ATTR_PREFIX}{k}"] for k in space}
            acc, lat = t.values[0], t.values[1]
            try:
                inner[b].add_trial(
                    optuna.trial.create_trial(
                        params=params, distributions=space, value=acc, **frozen_constraint_kwargs("latency", lat - budgets[b])
                    )
                )
            except ValueError:  # recorded under another search space (options changed): not usable
                continue

    # -- run ---------------------------------------------------------------------------------
    def run(self, ctx: SearchContext, n_evals: int) -> None:
        torch.set_num_threads(1)
        ev = ctx.evaluator
        groups: list[PrunableGroup] = list(ev.groups)
        job_budgets = sorted(ctx.budgets, key=lambda b: b.ms) or [ev.resolve_budget(1.0)]
        budgets = [b.ms for b in job_budgets]
        max_ratio, step = float(ctx.max_ratio), float(ctx.grid_step)
        seed = agent_seed(ctx.seed, self.name) % (2**31)
        study = ctx.study(self.name)
        inner = [self._inner_study(seed + 7919 * i) for i in range(len(budgets))]
        seen: set[int] = set()
        model = ev.spec.build().eval()
        example = torch.zeros(1, *ev.spec.input_shape)
        train_x, train_y = _train_split(ev, self.train_samples)
        costs = channel_costs(ev, groups)
        sites = gate_sites(model, groups, example)
        space = self._space()
        for _ in range(int(n_evals)):
            self._replay(inner, budgets, study, seen)
            done = ctx.finished(self.name)
            b = done % len(budgets)
            itrial = inner[b].ask(space)
            cfg = GateConfig(
                lam=itrial.params["lam"],
                tau=itrial.params["tau"],
                lr=itrial.params["lr"],
                steps=int(itrial.params["steps"]),
                batch_size=self.batch_size,
                weight_lr=self.weight_lr,
                seed=seed * 100003 + done,
            )
            net = model if cfg.weight_lr == 0 else ev.spec.build().eval()
            values = train_gates(net, groups, train_x, train_y, costs, cfg, example, sites)
            ratios = gates_to_ratios(values, groups, cfg.tau, max_ratio, step)
            fitted = False
            if self.fit_budget:
                ratios, fitted = fit_to_budget(values, groups, ratios, ev.predict_latency, budgets[b], max_ratio, step)
            try:
                result = ev.evaluate(ctx.ratios_dict(ratios))
            except BaseException:
                inner[b].tell(itrial, state=optuna.trial.TrialState.FAIL)
                raise
            attrs = {f"{ATTR_PREFIX}{k}": v for k, v in itrial.params.items()} | {
                f"{ATTR_PREFIX}budget_index": b,
                f"{ATTR_PREFIX}budget_ms": budgets[b],
                f"{ATTR_PREFIX}fitted": fitted,
                f"{ATTR_PREFIX}open_gates": {g.name: int((values[g.name] > cfg.tau).sum()) for g in groups},
            }
            number = ctx.record(self.name, result, budget=job_budgets[b], extra_attrs=attrs)
            seen.add(int(number))
            set_trial_constraint(itrial, "latency", float(result.latency_ms) - budgets[b])
            inner[b].tell(itrial, float(result.accuracy))


def _train_split(ev: Evaluator, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The train split the gates learn on (the evaluator's; never val or test)."""
    split = ev.train
    if split is None:
        from hilprune.errors import HilpruneError

        raise HilpruneError("autoprune needs a dataset: its gates are trained on the train split")
    split = split.subset(n) if n else split
    return split.x, split.y


__all__ = [
    "AutoPruneAgent",
    "ChannelGates",
    "GateConfig",
    "channel_costs",
    "fit_to_budget",
    "gate_sites",
    "gates_to_ratios",
    "train_gates",
]
