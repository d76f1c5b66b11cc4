"""hilprune: hardware-in-the-loop structured pruning.

Shared core: model zoo (`hilprune.models`), data sets (`hilprune.data`), the layer-wise
policy format (`hilprune.policy`), channel surgery (`hilprune.surgery`), training and
evaluation (`hilprune.train`), ONNX export (`hilprune.export`) and the CLI (`hilprune.cli`).
"""
__version__ = "0.1.0"
