"""Colour adjustment: make the new face's colour match the frame it goes into."""
from __future__ import annotations

import numpy as np


def masked_stats(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``image`` inside ``mask``."""
    weight = mask[..., 0] > 0.5
    if not weight.any():
        weight = np.ones(mask.shape[:2], bool)
    pixels = image[weight]
    return pixels.mean(axis=0), pixels.std(axis=0) + 1e-6
