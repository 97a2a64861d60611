"""``gaussian``: add back the difference to a Gaussian blur (gentle)."""
from __future__ import annotations

import numpy as np

AMOUNT = 1.0


def sharpen(image: np.ndarray, radius: float = 1.0) -> np.ndarray:
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), max(0.8, radius))
    return np.clip(image + AMOUNT * (image - blurred), 0.0, 1.0)
