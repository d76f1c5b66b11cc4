"""Defaults of INT8 export, in a module that imports nothing (the CLI reads them at start-up)."""

# Calibration images from the train split. Chosen on resnet20 / Fashion-MNIST (docs/benchmarks.md,
# "INT8 calibration size"): 100 images gave the same test accuracy as 200 and 400 at half the time.
CALIBRATION_SIZE = 100
TOLERANCE = 0.005  # validation accuracy may fall 0.5 points below fp32's
MIN_SPEEDUP = 1.05  # INT8 risks accuracy: a gain inside the timing noise is not worth it
