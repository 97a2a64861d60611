"""Training data: faces and masks read from PNG metadata, augmented on the CPU.

Every face is loaded once, cropped to the model's ``coverage`` of the aligned face at the
output size, and kept in memory with its mask and loss weights (a few KB per face at 64 px).
Batches are then augmented in a background thread — random rotation/zoom/shift, flips, colour
jitter in Lab, and a random grid warp of the *input* only, so the model learns to rebuild the
clean face from a distorted one — while TensorFlow runs the previous step.
"""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from .align import sub_crop_matrix, transform_points, warp
from .errors import InputError
from .faceimage import list_faces, read_face
from .masks import landmark_mask, region_weights

log = logging.getLogger(__name__)

MIN_FACES = 8  # below this a side cannot train to anything useful


@dataclass
class FaceSet:
    """One side's faces at the model's output size."""

    images: np.ndarray   # N x S x S x 3 uint8
    masks: np.ndarray    # N x S x S float32 in [0, 1]
    weights: np.ndarray  # N x S x S float32 (mask x eye/mouth emphasis)
    paths: list[Path]
    padding: float

    def __len__(self) -> int:
        return len(self.images)


def face_files(dirs: Sequence[str | Path]) -> list[Path]:
    """PNG faces of the given folders (a person's folder may hold one sub-folder per source)."""
    files: list[Path] = []
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise InputError(folder, "face folder not found")
        subdirs = [d for d in sorted(folder.iterdir()) if d.is_dir() and not d.name.startswith(".")]
        files += list_faces(folder)
        for sub in subdirs:
            files += list_faces(sub)
    return files


def load_faces(dirs: Sequence[str | Path], size: int, coverage: float, mask: str,
               side: str) -> FaceSet:
    """Read every face of ``dirs`` and prepare its crop, mask and loss weights."""
    files = face_files(dirs)
    if len(files) < MIN_FACES:
        where = ", ".join(str(d) for d in dirs)
        raise InputError(Path(str(dirs[0])) if dirs else None,
                         f"side {side} has {len(files)} faces in {where}; at least {MIN_FACES} "
                         "are needed (a few hundred for a good model)")
    images, masks, weights, paddings = [], [], [], set()
    for path in files:
        image, meta = read_face(path)
        src = int(meta.get("size", image.shape[0]))
        if image.shape[0] != image.shape[1] or image.shape[0] != src:
            raise InputError(path, f"face is {image.shape[1]}x{image.shape[0]} px but its "
                                   f"metadata says {src} px (resized after extraction?)")
        if src < size:
            log.debug("%s is smaller (%d px) than the model output (%d px)", path, src, size)
        matrix = sub_crop_matrix(src, coverage, size)
        lm = transform_points(np.asarray(meta["landmarks"], np.float64), matrix)
        mesh = meta.get("mesh")
        mesh = transform_points(np.asarray(mesh, np.float64), matrix) if mesh else None
        images.append(warp(image, matrix, size))
        m = landmark_mask(mask, lm, size, mesh).astype(np.float32) / 255.0
        masks.append(m)
        weights.append(m * region_weights(lm, size))
        paddings.add(round(float(meta.get("padding", 0.5)), 4))
    if len(paddings) > 1:
        raise InputError(Path(str(dirs[0])), f"faces of side {side} were extracted with different "
                                             f"paddings {sorted(paddings)}; re-extract them")
    return FaceSet(np.stack(images), np.stack(masks), np.stack(weights), files, paddings.pop())


def _random_affine(rng: np.random.Generator, size: int) -> np.ndarray:
    import cv2

    angle = rng.uniform(-10, 10)
    scale = rng.uniform(0.95, 1.05)
    shift = rng.uniform(-0.05, 0.05, 2) * size
    m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, scale)
    m[:, 2] += shift
    return m


def _random_warp(image: np.ndarray, rng: np.random.Generator, strength: float = 0.04) -> np.ndarray:
    """Smooth grid distortion (a 5x5 grid of random offsets, interpolated to every pixel)."""
    import cv2

    size = image.shape[0]
    grid = rng.normal(0, strength * size, (2, 5, 5)).astype(np.float32)
    grid[:, [0, -1], :] = 0
    grid[:, :, [0, -1]] = 0
    dx = cv2.resize(grid[0], (size, size), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(grid[1], (size, size), interpolation=cv2.INTER_CUBIC)
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    return cv2.remap(image, xs + dx, ys + dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _colour_jitter(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    import cv2

    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32)
    lab[..., 0] = lab[..., 0] * rng.uniform(0.9, 1.1) + rng.uniform(-8, 8)
    lab[..., 1:] += rng.uniform(-4, 4, 2)
    return cv2.cvtColor(np.clip(lab, 0, 255).astype(np.uint8), cv2.COLOR_LAB2RGB)


def augment(faces: FaceSet, index: np.ndarray, rng: np.random.Generator, input_size: int,
            warp_input: bool = True):
    """One batch: (distorted inputs, clean targets, masks, loss weights), float32 in [0, 1]."""
    import cv2

    size = faces.images.shape[1]
    xs, ys, ms, ws = [], [], [], []
    for i in index:
        m = _random_affine(rng, size)
        img = cv2.warpAffine(faces.images[i], m, (size, size), borderMode=cv2.BORDER_REFLECT)
        mask = cv2.warpAffine(faces.masks[i], m, (size, size))
        weight = cv2.warpAffine(faces.weights[i], m, (size, size))
        if rng.random() < 0.5:
            img, mask, weight = img[:, ::-1], mask[:, ::-1], weight[:, ::-1]
        img = _colour_jitter(np.ascontiguousarray(img), rng)
        x = _random_warp(img, rng) if warp_input else img
        if input_size != size:
            x = cv2.resize(x, (input_size, input_size), interpolation=cv2.INTER_AREA)
        xs.append(x)
        ys.append(img)
        ms.append(mask)
        ws.append(weight)
    f = np.float32(1 / 255)
    return (np.stack(xs).astype(np.float32) * f, np.stack(ys).astype(np.float32) * f,
            np.stack(ms)[..., None].astype(np.float32), np.stack(ws)[..., None].astype(np.float32))


def batches(a: FaceSet, b: FaceSet, batch_size: int, input_size: int, seed: int = 0,
            prefetch: int = 4) -> Iterator[tuple]:
    """Endless (batch_a, batch_b) pairs, built by a background thread ``prefetch`` ahead."""
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    stop = threading.Event()

    def work() -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            ia = rng.choice(len(a), batch_size, replace=len(a) < batch_size)
            ib = rng.choice(len(b), batch_size, replace=len(b) < batch_size)
            item = (augment(a, ia, rng, input_size), augment(b, ib, rng, input_size))
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    thread = threading.Thread(target=work, name="augment", daemon=True)
    thread.start()
    try:
        while True:
            yield q.get()
    finally:
        stop.set()


def sample_indices(n: int, count: int = 7) -> list[int]:
    """Evenly spaced fixed samples for the timelapse."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, count))})


__all__ = ["FaceSet", "load_faces", "augment", "batches", "face_files", "MIN_FACES",
           "sample_indices"]
