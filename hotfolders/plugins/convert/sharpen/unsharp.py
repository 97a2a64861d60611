"""``unsharp``: unsharp mask with a threshold, so flat skin is not turned into noise."""
from __future__ import annotations

import numpy as np

AMOUNT = 1.2
THRESHOLD = 2.0 / 255


def sharpen(image: np.ndarray, radius: float = 1.0) -> np.ndarray:
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), 2.0 * max(0.8, radius))
    detail = image - blurred
    detail[np.abs(detail) < THRESHOLD] = 0.0
    return np.clip(image + AMOUNT * detail, 0.0, 1.0)
