"""Defaults of INT8 export, in a module that imports nothing (the CLI reads them at start-up)."""

# Calibration images from the train split. Measured on resnet20 and mobilenetv2 / Fashion-MNIST
# (docs/benchmarks.md, "INT8 calibration size"): 50 to 400 images gave the same test accuracy within
# 0.1 points, while calibration time grows with the count; 100 keeps a margin over 50 for models
# whose activation ranges have longer tails, at a fraction of a second to a few seconds.
CALIBRATION_SIZE = 100
TOLERANCE = 0.005  # validation accuracy may fall 0.5 points below fp32's
MIN_SPEEDUP = 1.05  # INT8 risks accuracy: a gain inside the timing noise is not worth it
# Schemes whose ratio to fp32 is within RUNOFF of the fastest one's are timed against each other
# directly (paired A B B A, INT8 against INT8); one must beat the other by more than TIE to be kept
# over an earlier candidate (QDQ U8S8 first). Comparing them only through their separate fp32 pairs
# was not enough on the shared 2-core EPYC VM (docs/benchmarks.md, "INT8 schemes on the dense zoo
# models"): QDQ and QOperator U8S8 ran resnet56 in 0.737 and 0.740 ms, but the fp32 windows of the
# QOperator pair ran at 2.08 ms against 1.78-1.82 ms in the other pairs (fp32 streams 4x the weight
# bytes and suffers more from other tenants), so QOperator looked 14% faster.
RUNOFF = 0.25
TIE = 0.03
