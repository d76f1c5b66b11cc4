"""hilprune: hardware-in-the-loop structured pruning.

Shared core: model zoo (`hilprune.models`), data sets (`hilprune.data`), the layer-wise
policy format (`hilprune.policy`), channel surgery (`hilprune.surgery`), training and
evaluation (`hilprune.train`), ONNX export (`hilprune.export`) and the CLI (`hilprune.cli`).
"""

from importlib.metadata import PackageNotFoundError, version

try:  # one source: pyproject.toml's [project] version, read from the installed metadata
    __version__ = version("hilprune")
except PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
    __version__ = "0+unknown"
