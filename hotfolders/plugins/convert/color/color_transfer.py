"""``color-transfer``: match mean and standard deviation in Lab (Reinhard et al. 2001)."""
from __future__ import annotations

import numpy as np

from . import masked_stats


def adjust(face: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    import cv2

    src = cv2.cvtColor(face.astype(np.float32), cv2.COLOR_RGB2LAB)
    dst = cv2.cvtColor(original.astype(np.float32), cv2.COLOR_RGB2LAB)
    s_mean, s_std = masked_stats(src, mask)
    d_mean, d_std = masked_stats(dst, mask)
    out = (src - s_mean) * (d_std / s_std) + d_mean
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2RGB), 0.0, 1.0)
