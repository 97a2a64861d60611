"""Colour adjustment: make the new face's colour match the frame it goes into.

Each method is one module defining ``adjust(face, original, mask) -> face``: float32 RGB in
[0, 1] at the model's output size, ``mask`` HxWx1 in [0, 1]; statistics are taken inside the
mask only, so background and hair do not pull the face's colour.
"""
from __future__ import annotations

import numpy as np


def inside(mask: np.ndarray) -> np.ndarray:
    """uint8 0/1 map of the pixels that count (mask above one half; all if none do)."""
    m = (mask[..., 0] > 0.5).astype(np.uint8)
    return m if m.any() else np.ones_like(m)


def masked_stats(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``image`` inside ``mask``."""
    import cv2

    mean, std = cv2.meanStdDev(np.ascontiguousarray(image, dtype=np.float32), mask=inside(mask))
    return mean.ravel().astype(np.float32), std.ravel().astype(np.float32) + 1e-6
