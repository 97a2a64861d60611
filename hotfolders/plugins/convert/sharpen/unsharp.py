"""``unsharp``: unsharp mask with a threshold, so flat skin is not turned into noise."""
from __future__ import annotations

import numpy as np


def sharpen(image: np.ndarray) -> np.ndarray:
    import cv2

    blurred = cv2.GaussianBlur(image, (0, 0), 2.0)
    detail = image - blurred
    detail[np.abs(detail) < 2.0 / 255] = 0.0
    return np.clip(image + 1.2 * detail, 0.0, 1.0)
