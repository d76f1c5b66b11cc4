"""Defaults of INT8 export, in a module that imports nothing (the CLI reads them at start-up)."""

# Calibration images from the train split. Measured on resnet20 and mobilenetv2 / Fashion-MNIST
# (docs/benchmarks.md, "INT8 calibration size"): 50 to 400 images gave the same test accuracy within
# 0.1 points, while calibration time grows with the count; 100 keeps a margin over 50 for models
# whose activation ranges have longer tails, at a fraction of a second to a few seconds.
CALIBRATION_SIZE = 100
TOLERANCE = 0.005  # validation accuracy may fall 0.5 points below fp32's
MIN_SPEEDUP = 1.05  # INT8 risks accuracy: a gain inside the timing noise is not worth it
# Schemes timed within this fraction of the fastest are ties, resolved by candidate order (QDQ U8S8
# first): on a shared CPU two schemes that run the same kernels (QDQ and QOperator U8S8) differ by
# timing noise only (docs/benchmarks.md, "INT8 schemes on the dense zoo models").
TIE = 0.03
