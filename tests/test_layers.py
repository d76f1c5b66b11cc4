"""The floors checked by import-linter (pyproject.toml) cover the whole core package: a new module
of `hilprune` must be placed on a floor, or it could import an upper one unnoticed."""

from __future__ import annotations

import pkgutil
from pathlib import Path

import tomllib

import hilprune

ROOT = Path(__file__).resolve().parents[1]


def test_every_core_module_is_on_a_floor() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for part in layer.split("|") for name in part.split(":")}
    modules = {f"hilprune.{m.name}" for m in pkgutil.iter_modules(hilprune.__path__)}
    assert modules - placed == set(), "add these to a floor in pyproject.toml's [tool.importlinter]"
