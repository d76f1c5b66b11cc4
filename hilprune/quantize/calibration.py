"""Calibration images for static quantization: the first N images of the TRAIN split, nothing else.

The reader takes the whole data set bundle and reads `bundle.train` itself, so no caller can hand
it validation or test images by mistake: those decide whether an INT8 model is kept (val) and what
is reported (test), and must stay unseen by the quantizer.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..data import DatasetBundle
from ..errors import HilpruneError
from .defaults import CALIBRATION_SIZE

DEFAULT_CALIBRATION_SIZE = CALIBRATION_SIZE


class TrainCalibration:
    """Feeds `size` train images to onnxruntime's calibrator, `batch` at a time (the graph's batch).

    A short last batch is dropped: the exported graphs have a fixed batch size.
    """

    def __init__(self, bundle: DatasetBundle, size: int = DEFAULT_CALIBRATION_SIZE, batch: int = 1, input_name: str = "input"):
        if size < 1:
            raise HilpruneError(f"--calibration-size must be at least 1, got {size}")
        split = bundle.train.subset(size)
        if len(split) < batch:
            raise HilpruneError(f"the train split has {len(split)} images, fewer than one batch of {batch}")
        self.x = split.x.numpy().astype(np.float32, copy=False)
        self.batch, self.input_name = batch, input_name
        self.size = len(split) - len(split) % batch
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= self.size:
            return None
        part = self.x[self._pos : self._pos + self.batch]
        self._pos += self.batch
        return {self.input_name: np.ascontiguousarray(part)}

    def rewind(self) -> None:
        self._pos = 0

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        while (item := self.get_next()) is not None:
            yield item
