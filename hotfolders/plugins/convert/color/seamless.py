"""``seamless``: Poisson blending (OpenCV seamlessClone) of the face into the original crop.

The gradients of the new face are kept and its colours solved to meet the frame at the mask's
edge, which hides seams at the chin and forehead at some cost to the face's own tone.
"""
from __future__ import annotations

import numpy as np


def adjust(face: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    binary = (mask[..., 0] > 0.5).astype(np.uint8) * 255
    if binary.sum() == 0:
        return face
    size = face.shape[0]
    pad = size // 4  # seamlessClone needs the mask away from the image border
    src = cv2.copyMakeBorder((face * 255).astype(np.uint8), pad, pad, pad, pad, cv2.BORDER_REFLECT)
    dst = cv2.copyMakeBorder((original * 255).astype(np.uint8), pad, pad, pad, pad,
                             cv2.BORDER_REFLECT)
    m = cv2.copyMakeBorder(binary, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    x, y, w, h = cv2.boundingRect(m)
    out = cv2.seamlessClone(src, dst, m, (x + w // 2, y + h // 2), cv2.NORMAL_CLONE)
    return out[pad:pad + size, pad:pad + size].astype(np.float32) / 255.0
