"""Search agents by name. Factories import their module only when called, so a missing optional
agent (or its dependencies) fails only the job that asks for it, with a message that says why."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from hilprune.errors import HilpruneError

from .base import SearchAgent

# name -> "module:attribute"
AGENT_PATHS: dict[str, str] = {
    "uniform": "search.agents.uniform:UniformAgent",
    "random": "search.agents.random_search:RandomAgent",
    "tpe": "search.agents.tpe:TPEAgent",
    "nsga2": "search.agents.nsga2:NSGA2Agent",
    "autoprune": "search.agents.autoprune:AutoPruneAgent",
    "ppo": "agent.ppo:PPOAgent",
    "sac": "agent.ppo:SACAgent",
}

DESCRIPTIONS: dict[str, str] = {
    "uniform": "one ratio for every group, bisected to each budget (the baseline), plus a uniform sweep",
    "random": "random policies, clipped group by group to a budget like the RL environment",
    "tpe": "Optuna TPE (multi-objective, seeded)",
    "nsga2": "Optuna NSGA-II",
    "autoprune": "AutoPrune: learned channel gates, hyper-parameters tuned by Optuna",
    "ppo": "PPO try-and-learn (stable-baselines3), one episode per policy",
    "sac": "SAC on the same environment (stable-baselines3)",
}


def load_factory(name: str) -> Callable[..., SearchAgent]:
    """The class (or factory) for agent `name`, imported now."""
    if name not in AGENT_PATHS:
        raise HilpruneError(f"unknown agent {name!r}; known: {', '.join(AGENT_PATHS)}")
    module_name, attr = AGENT_PATHS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or str(exc)
        if module_name == missing or module_name.startswith(missing + "."):
            raise HilpruneError(
                f"agent {name!r} is not available: module {module_name} is not installed or not written yet"
            ) from None
        raise HilpruneError(f"agent {name!r} is not available: {module_name} needs {missing!r}, which is not installed") from None
    except ImportError as exc:
        raise HilpruneError(f"agent {name!r} is not available: importing {module_name} failed ({exc})") from None
    if not hasattr(module, attr):
        raise HilpruneError(f"agent {name!r} is not available: {module_name} has no {attr}")
    factory: Callable[..., SearchAgent] = getattr(module, attr)
    return factory


def _lazy(name: str) -> Callable[..., SearchAgent]:
    def factory(**options: Any) -> SearchAgent:
        cls = load_factory(name)
        try:
            agent = cls(**options)
        except TypeError as exc:
            raise HilpruneError(f"agent {name!r}: bad options {sorted(options)} ({exc})") from None
        agent.name = name  # studies are named by the job's agent name
        return agent

    factory.__name__ = f"make_{name}"
    factory.__doc__ = f"{DESCRIPTIONS.get(name, name)} ({AGENT_PATHS[name]}, imported on call)"
    return factory


REGISTRY: dict[str, Callable[..., SearchAgent]] = {name: _lazy(name) for name in AGENT_PATHS}


def make_agent(name: str, **options: Any) -> SearchAgent:
    if name not in REGISTRY:
        raise HilpruneError(f"unknown agent {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name](**options)


def available(name: str) -> bool:
    try:
        load_factory(name)
        return True
    except HilpruneError:
        return False


__all__ = ["AGENT_PATHS", "DESCRIPTIONS", "REGISTRY", "SearchAgent", "available", "load_factory", "make_agent"]
