"""``avg-color`` (default): shift each channel so the face's mean inside the mask matches."""
from __future__ import annotations

import numpy as np

from . import masked_stats


def adjust(face: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    target, _ = masked_stats(original, mask)
    current, _ = masked_stats(face, mask)
    return np.clip(face + (target - current), 0.0, 1.0)
