"""Accuracy and output agreement of ONNX graphs, run by onnxruntime exactly as they are shipped.

The exported graphs have a fixed batch size (1 by default), so images are fed in batches of that
size; the last batch is padded with zeros and the padding's outputs dropped. One intra-op thread:
evaluation shares the machine with searches and measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import Split


def logits(onnx_bytes: bytes, split: Split, threads: int = 1) -> np.ndarray:
    """The graph's outputs (N x classes) for every image of `split`."""
    from ..export import ort_session

    session = ort_session(onnx_bytes, threads=threads)
    inp = session.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else 64
    x = split.x.numpy().astype(np.float32, copy=False)
    out = []
    for start in range(0, len(x), batch):
        part = x[start : start + batch]
        n = len(part)
        if n < batch:
            part = np.concatenate([part, np.zeros((batch - n, *part.shape[1:]), dtype=np.float32)])
        out.append(session.run(None, {inp.name: np.ascontiguousarray(part)})[0][:n])
    return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)


def accuracy(out: np.ndarray, split: Split) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((out.argmax(1) == split.y.numpy()).mean()) if len(out) else 0.0


@dataclass(frozen=True)
class Agreement:
    """How closely the INT8 graph follows the fp32 one on the same images."""

    top1: float  # share of images where both predict the same class
    max_abs_logit_diff: float
    images: int

    def to_dict(self) -> dict[str, float | int]:
        return {"top1": self.top1, "max_abs_logit_diff": self.max_abs_logit_diff, "images": self.images}


def agreement(reference: np.ndarray, other: np.ndarray) -> Agreement:
    return Agreement(
        top1=float((reference.argmax(1) == other.argmax(1)).mean()) if len(reference) else 1.0,
        max_abs_logit_diff=float(np.abs(reference - other).max()) if len(reference) else 0.0,
        images=len(reference),
    )
