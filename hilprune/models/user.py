"""User models given as `path/to/file.py:factory` or `package.module:factory`."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from torch import nn

from ..errors import ModelError


def is_user_model_spec(spec: str) -> bool:
    return ":" in spec


def load_user_model(spec: str) -> nn.Module:
    """Import the module named before ':' and call the factory after it with no arguments."""
    target, _, factory_name = spec.rpartition(":")
    if not target or not factory_name:
        raise ModelError(f"user model {spec!r} must look like 'path/to/file.py:factory' or 'package.module:factory'")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise ModelError(f"user model file not found: {path}")
        mod_name = f"hilprune_user_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ModelError(f"cannot import {path} as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:  # the user's code failed: say where, not a traceback
            raise ModelError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise ModelError(f"cannot import module {target!r}: {exc}") from exc
        except Exception as exc:  # the user's module failed while importing: say where, not a traceback
            raise ModelError(f"importing module {target!r} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if factory is None or not callable(factory):
        raise ModelError(f"{target} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as exc:
        raise ModelError(f"{spec}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(f"{spec}() returned {type(model).__name__}, not a torch.nn.Module")
    return model
