"""``none`` (default): no sharpening."""
from __future__ import annotations

import numpy as np


def sharpen(image: np.ndarray) -> np.ndarray:
    return image
