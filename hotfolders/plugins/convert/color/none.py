"""``none``: leave the model's colours as they are."""
from __future__ import annotations

import numpy as np


def adjust(face: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return face
