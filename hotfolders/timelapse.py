"""Timelapse previews: fixed sample faces rendered through the model at every save.

The samples are chosen once when a model is created and stored in the model folder
(``timelapse/samples.npz``), so every preview shows the same faces and the images can be
stepped through to watch the swap sharpen.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def save_samples(path: Path, a: np.ndarray, b: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, a=a, b=b)
    tmp.replace(path)


def load_samples(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return data["a"], data["b"]


def render(nets, samples_a: np.ndarray, samples_b: np.ndarray, iterations: int) -> np.ndarray:
    """A grid (RGB uint8): per side three rows — original, rebuilt by its own decoder, swapped."""
    import cv2

    out = samples_a.shape[1]
    size_in = nets.input_size

    def run(faces: np.ndarray, decoder) -> np.ndarray:
        x = np.stack([cv2.resize(f, (size_in, size_in), interpolation=cv2.INTER_AREA)
                      for f in faces]).astype(np.float32) / 255.0
        y = decoder(nets.encoder(x, training=False), training=False)
        return (np.clip(np.asarray(y, np.float32), 0, 1) * 255).astype(np.uint8)

    rows = []
    for faces, own, other in ((samples_a, nets.decoder_a, nets.decoder_b),
                              (samples_b, nets.decoder_b, nets.decoder_a)):
        rows += [np.hstack(list(faces)), np.hstack(list(run(faces, own))),
                 np.hstack(list(run(faces, other)))]
    grid = np.vstack(rows)
    label_h = max(18, out // 5)
    canvas = np.full((grid.shape[0] + label_h, grid.shape[1], 3), 24, np.uint8)
    canvas[label_h:] = grid
    cv2.putText(canvas, f"{iterations} iterations   rows: A, A rebuilt, A->B, B, B rebuilt, B->A",
                (4, label_h - 5), cv2.FONT_HERSHEY_SIMPLEX, label_h / 40, (230, 230, 230), 1,
                cv2.LINE_AA)
    return canvas


def write(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.jpg")
    cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    tmp.replace(path)
