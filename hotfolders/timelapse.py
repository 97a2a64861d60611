"""Timelapse previews: fixed sample faces rendered through the model at every save.

The samples are chosen once, when a model is created, and stored in the model folder
(``timelapse/samples.npz``), so every ``timelapse/<iterations>.jpg`` shows the same faces and
stepping through the images shows the swap sharpening. Each image has one column per side
(A on the left, B on the right) and one row per sample: original, rebuilt by its own decoder,
swapped through the other person's decoder.
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from . import atomic

MIN_CELL = 96  # small models are shown enlarged so the preview is readable


def save_samples(path: Path, a: np.ndarray, b: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez_compressed(buf, a=np.asarray(a, np.uint8), b=np.asarray(b, np.uint8))
    atomic.write_bytes(path, buf.getvalue())


def load_samples(path: Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """The stored samples, or None when missing, unreadable or of another face size."""
    try:
        with np.load(path, allow_pickle=False) as data:
            a, b = data["a"], data["b"]
    except (OSError, KeyError, ValueError):
        return None
    if size is not None and (a.shape[1:] != (size, size, 3) or b.shape[1:] != (size, size, 3)):
        return None
    return a, b


def _through(nets, faces: np.ndarray, decoder) -> np.ndarray:
    import cv2

    size_in = nets.input_size
    x = np.stack([cv2.resize(f, (size_in, size_in), interpolation=cv2.INTER_AREA)
                  if f.shape[0] != size_in else f for f in faces]).astype(np.float32) / 255.0
    y = decoder(nets.encoder(x, training=False), training=False)
    return (np.clip(np.asarray(y, np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def render(nets, samples_a: np.ndarray, samples_b: np.ndarray, iterations: int) -> np.ndarray:
    """The preview grid (RGB uint8) for the current weights of ``nets``."""
    import cv2

    out = samples_a.shape[1]
    cell = max(out, MIN_CELL)
    gap = max(2, cell // 24)

    def fit(face: np.ndarray) -> np.ndarray:
        return cv2.resize(face, (cell, cell), interpolation=cv2.INTER_CUBIC) if cell != out else face

    def side(faces, own, other) -> list[np.ndarray]:
        rebuilt, swapped = _through(nets, faces, own), _through(nets, faces, other)
        return [np.hstack([fit(f), fit(r), fit(s)]) for f, r, s in zip(faces, rebuilt, swapped)]

    rows_a = side(samples_a, nets.decoder_a, nets.decoder_b)
    rows_b = side(samples_b, nets.decoder_b, nets.decoder_a)
    n = max(len(rows_a), len(rows_b))
    blank = np.full((cell, 3 * cell, 3), 24, np.uint8)
    rows_a += [blank] * (n - len(rows_a))
    rows_b += [blank] * (n - len(rows_b))
    sep = np.full((cell, gap * 3, 3), 24, np.uint8)
    grid = np.vstack([np.hstack([ra, sep, rb]) for ra, rb in zip(rows_a, rows_b)])
    header = max(34, cell // 3)
    canvas = np.full((grid.shape[0] + header, grid.shape[1], 3), 24, np.uint8)
    canvas[header:] = grid
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.42
    cv2.putText(canvas, f"{iterations} iterations", (4, 14), font, scale, (240, 240, 240), 1,
                cv2.LINE_AA)
    for i, label in enumerate(("A", "A rebuilt", "A -> B", "B", "B rebuilt", "B -> A")):
        x = (i % 3) * cell + (i // 3) * (3 * cell + 3 * gap) + 4
        cv2.putText(canvas, label, (x, header - 6), font, scale, (200, 200, 200), 1, cv2.LINE_AA)
    return canvas


def write(path: Path, image: np.ndarray) -> None:
    """Write the JPEG atomically (the status page may be reading the folder)."""
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                           [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        raise OSError(f"could not encode {path}")
    atomic.write_bytes(path, buf.tobytes(), durable=False)
