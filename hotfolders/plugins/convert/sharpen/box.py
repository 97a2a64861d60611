"""``box``: add back the difference to a box blur (strong, a little harsh)."""
from __future__ import annotations

import numpy as np

AMOUNT = 1.0


def sharpen(image: np.ndarray, radius: float = 1.0) -> np.ndarray:
    import cv2

    k = 2 * max(1, round(radius)) + 1
    blurred = cv2.blur(image, (k, k))
    return np.clip(image + AMOUNT * (image - blurred), 0.0, 1.0)
