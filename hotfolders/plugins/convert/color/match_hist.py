"""``match-hist``: map each channel's histogram inside the mask onto the frame's."""
from __future__ import annotations

import numpy as np


def adjust(face: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    inside = mask[..., 0] > 0.5
    if inside.sum() < 16:
        return face
    out = face.copy()
    levels = np.linspace(0.0, 1.0, 256)
    for c in range(3):
        src = np.sort(face[..., c][inside])
        ref = np.sort(original[..., c][inside])
        quantiles = np.linspace(0, 1, len(src))
        src_cdf = np.interp(levels, src, quantiles, left=0.0, right=1.0)
        mapping = np.interp(src_cdf, np.linspace(0, 1, len(ref)), ref)
        out[..., c] = np.interp(face[..., c], levels, mapping)
    return np.clip(out, 0.0, 1.0)
