"""Training data: faces and masks read from PNG metadata, augmented on the CPU.

Every face is read once, cropped to the model's ``coverage`` of the aligned face at the model's
output size, and kept in memory as uint8 with two uint8 maps: the face mask (from the
landmarks in the PNG metadata) and the eye/mouth region that the loss weights up. That is
20 KB per face at 64 px, so thousands of faces fit.

Batches are augmented in a background thread while TensorFlow runs the previous step: colour
jitter in Lab, a random rotation/zoom/shift with a horizontal flip, and a smooth random grid
warp of the *input only* (the target is the same face undistorted, so the model learns to
rebuild a clean face rather than copy pixels). Rotation, flip, shift and grid warp are folded
into one ``remap`` per input, and everything crosses into TensorFlow as uint8, so the pipeline
costs a few milliseconds per step.
"""
from __future__ import annotations

import functools
import logging
import os
import queue
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .align import sub_crop_matrix, transform_points
from .errors import InputError
from .faceimage import list_faces, read_face
from .masks import MASK_TYPES, landmark_mask, region_weights

log = logging.getLogger(__name__)

MIN_FACES = 8  # below this a side cannot train to anything useful

# augmentation ranges (faceswap's defaults)
ROTATION_DEG = 10.0
ZOOM = 0.05
SHIFT = 0.05
FLIP_CHANCE = 0.5
WARP_STRENGTH = 0.03     # grid offsets, as a fraction of the face size
LIGHTNESS = 0.10         # Lab L contrast +-10 % ...
LIGHTNESS_SHIFT = 8.0    # ... and brightness +-8 levels
AB_SHIFT = 4.0           # Lab a/b shift +-4 levels


@dataclass
class FaceSet:
    """One side's faces at the model's output size."""

    images: np.ndarray   # N x S x S x 3 uint8 RGB, the coverage crop
    maps: np.ndarray     # N x S x S x 2 uint8: [..., 0] face mask, [..., 1] eye/mouth region
    paths: list[Path]
    padding: float       # padding of the extracted crops (must match the model's)

    def __len__(self) -> int:
        return len(self.images)

    @property
    def size(self) -> int:
        return int(self.images.shape[1])


def face_files(dirs: Sequence[str | Path]) -> list[Path]:
    """PNG faces of the given folders (a person's folder may hold one sub-folder per source)."""
    files: list[Path] = []
    for folder in map(Path, dirs):
        if not folder.is_dir():
            raise InputError(folder, "face folder not found")
        files += list_faces(folder)
        for sub in sorted(folder.iterdir()):
            if sub.is_dir() and not sub.name.startswith("."):
                files += list_faces(sub)
    return files


def prepare_face(image: np.ndarray, meta: dict[str, Any], path: Path, size: int,
                 coverage: float, mask: str) -> tuple[np.ndarray, np.ndarray, float]:
    """(crop, maps, padding) of one extracted face; InputError when it is not usable.

    Large faces are cropped at their own resolution and then area-filtered down, so a 512 px
    face gives a clean 64 px target instead of an aliased one.
    """
    import cv2

    src = int(meta.get("size", 0) or 0)
    if image.shape[0] != image.shape[1] or image.shape[0] != src:
        raise InputError(path, f"face is {image.shape[1]}x{image.shape[0]} px but its metadata "
                               f"says {src} px (resized or cropped after extraction?); "
                               "re-extract it")
    if src < size:
        raise InputError(path, f"face is {src} px, smaller than the {size} px this trainer "
                               f"outputs; extract with --size {max(256, size * 2)}")
    if "landmarks" not in meta:
        raise InputError(path, "face metadata has no landmarks (not a facedrop face?)")
    matrix = sub_crop_matrix(src, coverage, size)
    native = int(round(src * coverage))
    if native > size * 1.25:
        crop = cv2.warpAffine(image, sub_crop_matrix(src, coverage, native), (native, native),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    else:
        crop = cv2.warpAffine(image, matrix, (size, size), flags=cv2.INTER_CUBIC,
                              borderMode=cv2.BORDER_REFLECT)
    lm = transform_points(np.asarray(meta["landmarks"], np.float64), matrix)
    mesh = meta.get("mesh")
    mesh = transform_points(np.asarray(mesh, np.float64), matrix) if mesh else None
    kind = mask if (mask != "mesh" or mesh is not None) else "extended"
    maps = np.zeros((size, size, 2), np.uint8)
    maps[..., 0] = landmark_mask(kind, lm, size, mesh)
    maps[..., 1] = eye_mouth_region(lm, size)
    return crop, maps, round(float(meta.get("padding", 0.5)), 4)


def eye_mouth_region(landmarks: np.ndarray, size: int) -> np.ndarray:
    """uint8 0/255 map of the eyes and mouth: where :func:`masks.region_weights` weighs up.

    Stored as a map (not float weights) to keep a face at 20 KB; the loss turns it back into
    weights with its own eye/mouth factor.
    """
    return np.where(region_weights(landmarks, size, 2.0) > 1.0, 255, 0).astype(np.uint8)


def load_faces(dirs: Sequence[str | Path], size: int, coverage: float, mask: str,
               side: str, min_faces: int = MIN_FACES) -> FaceSet:
    """Read every face of ``dirs`` and prepare its crop and maps (decoded on two threads)."""
    if mask not in (*MASK_TYPES, "occlusion"):
        raise ValueError(f"unknown mask {mask!r}; choose one of {', '.join(MASK_TYPES)}, "
                         "occlusion")
    if not dirs:
        raise InputError(None, f"no face folders given for side {side}")
    files = face_files(dirs)
    where = ", ".join(str(d) for d in dirs)
    if len(files) < min_faces:
        raise InputError(Path(str(dirs[0])),
                         f"side {side} has {len(files)} faces in {where}; at least {min_faces} "
                         "are needed (a few hundred for a good model)")

    landmarks_mask = "extended" if mask == "occlusion" else mask

    def one(path: Path):
        image, meta = read_face(path)
        crop, maps, padding = prepare_face(image, meta, path, size, coverage, landmarks_mask)
        return crop, maps, padding, _full_crop(image) if mask == "occlusion" else None

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        prepared = list(pool.map(one, files))
    paddings = sorted({p for _, _, p, _ in prepared})
    if len(paddings) > 1:
        raise InputError(Path(str(dirs[0])), f"faces of side {side} were extracted with different "
                                             f"paddings {paddings}; re-extract them alike")
    faces = FaceSet(np.stack([c for c, _, _, _ in prepared]),
                    np.stack([m for _, m, _, _ in prepared]), files, paddings[0])
    if mask == "occlusion":  # the extended mask minus what covers the face (hands, mics)
        from .occlusion import occlude_maps

        occlude_maps(faces, np.stack([f for _, _, _, f in prepared]), dirs, coverage)
    return faces


def _full_crop(image: np.ndarray) -> np.ndarray:
    """The whole aligned face at the occlusion network's size (what it was trained on)."""
    import cv2

    from .occlusion import SIZE

    return cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates of a size x size image, made once per size."""
    xs, ys = np.meshgrid(np.arange(size, dtype=np.float32), np.arange(size, dtype=np.float32))
    xs.flags.writeable = ys.flags.writeable = False
    return xs, ys


def _colour_jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Lab jitter of a whole batch (N x S x S x 3 uint8): L contrast and brightness, a/b shift.

    Each face's jitter is one affine map per Lab channel, so it is applied as a 256-entry
    lookup table per face (``cv2.LUT``) built in float32 as the arithmetic on every pixel was:
    the same bytes, the batch's jitter in 0.84 instead of 1.16 ms (16 faces of 64 px, 2-core
    Xeon)."""
    import cv2

    n, size = images.shape[:2]
    lab = cv2.cvtColor(images.reshape(n * size, size, 3), cv2.COLOR_RGB2LAB)
    lab = lab.reshape(images.shape)
    scale = np.ones((n, 3), np.float32)
    scale[:, 0] = rng.uniform(1 - LIGHTNESS, 1 + LIGHTNESS, n)
    shift = np.zeros((n, 3), np.float32)
    shift[:, 0] = rng.uniform(-LIGHTNESS_SHIFT, LIGHTNESS_SHIFT, n)
    shift[:, 1:] = rng.uniform(-AB_SHIFT, AB_SHIFT, (n, 2))
    levels = np.arange(256, dtype=np.float32)[None, :, None]
    tables = levels * scale[:, None, :] + (shift + 0.5)[:, None, :]  # + 0.5: rounds, not floors
    tables = np.clip(tables, 0, 255).astype(np.uint8)
    for j in range(n):
        cv2.LUT(lab[j], tables[j].reshape(256, 1, 3), dst=lab[j])
    out = cv2.cvtColor(lab.reshape(n * size, size, 3), cv2.COLOR_LAB2RGB)
    return out.reshape(images.shape)


def _random_inverse_affines(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """N x 2 x 3 target -> source matrices: a rotation/zoom/shift about the centre, with a
    horizontal flip half the time (the inverse, so remap() can use it directly)."""
    angle = np.deg2rad(rng.uniform(-ROTATION_DEG, ROTATION_DEG, n))
    zoom = rng.uniform(1 - ZOOM, 1 + ZOOM, n)
    shift = rng.uniform(-SHIFT, SHIFT, (n, 2)) * size
    flip = np.where(rng.random(n) < FLIP_CHANCE, -1.0, 1.0)
    c = (size - 1) / 2.0
    cos, sin = np.cos(angle) / zoom, np.sin(angle) / zoom
    inv = np.empty((n, 2, 3), np.float32)
    # source = F(R^-1 (target - c - shift) + c), F flipping x about the centre when chosen
    inv[:, 0, 0], inv[:, 0, 1] = flip * cos, flip * -sin
    inv[:, 1, 0], inv[:, 1, 1] = sin, cos
    tx, ty = c + shift[:, 0], c + shift[:, 1]
    inv[:, 0, 2] = c - (inv[:, 0, 0] * tx + inv[:, 0, 1] * ty)
    inv[:, 1, 2] = c - (inv[:, 1, 0] * tx + inv[:, 1, 1] * ty)
    return inv


def _grid_offsets(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """N x 2 x S x S smooth random offsets: a 5x5 grid of normal offsets (zero on the border),
    interpolated bicubically to every pixel — the "random warp" of faceswap."""
    import cv2

    grid = rng.normal(0, WARP_STRENGTH * size, (5, 5, 2 * n)).astype(np.float32)
    grid[[0, -1], :, :] = 0
    grid[:, [0, -1], :] = 0
    full = np.empty((size, size, 2 * n), np.float32)
    for start in range(0, 2 * n, 256):  # OpenCV resizes up to 512 channels at once
        part = cv2.resize(grid[..., start:start + 256], (size, size),
                          interpolation=cv2.INTER_CUBIC)
        full[..., start:start + 256] = part.reshape(size, size, -1)
    return full.transpose(2, 0, 1).reshape(n, 2, size, size)


def augment(faces: FaceSet, index: Sequence[int], rng: np.random.Generator, input_size: int,
            warp_input: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One batch as uint8: (distorted inputs, clean targets, maps) — TF casts them itself.

    The random numbers and the input's remap coordinates (float32) are made for the whole
    batch at once; the target and its maps, which the affine alone moves, need no coordinates:
    ``warpAffine`` takes the matrix. Only the three OpenCV calls per face are per face.
    """
    import cv2

    size = faces.size
    index = np.asarray(index)
    n = len(index)
    images = _colour_jitter(faces.images[index], rng)
    inv = _random_inverse_affines(rng, n, size)
    if warp_input:  # input: first the grid offsets, then the same affine, as remap coordinates
        xs, ys = _grid(size)
        off = _grid_offsets(rng, n, size)
        wx, wy = xs + off[:, 0], ys + off[:, 1]
        ix = inv[:, 0, 0, None, None] * wx + inv[:, 0, 1, None, None] * wy + inv[:, 0, 2, None, None]
        iy = inv[:, 1, 0, None, None] * wx + inv[:, 1, 1, None, None] * wy + inv[:, 1, 2, None, None]
    x_out = np.empty((n, input_size, input_size, 3), np.uint8)
    y_out = np.empty((n, size, size, 3), np.uint8)
    m_out = np.empty((n, size, size, 2), np.uint8)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # inv maps target pixels to the source
    for j, i in enumerate(index):
        y_out[j] = cv2.warpAffine(images[j], inv[j], (size, size), flags=flags,
                                  borderMode=cv2.BORDER_REFLECT)
        m_out[j] = cv2.warpAffine(faces.maps[i], inv[j], (size, size), flags=flags,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x = (cv2.remap(images[j], ix[j], iy[j], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
             if warp_input else y_out[j])
        if input_size != size:
            x = cv2.resize(x, (input_size, input_size), interpolation=cv2.INTER_AREA)
        x_out[j] = x
    return x_out, y_out, m_out


class _Sampler:
    """Indices in shuffled passes over the set, so every face is seen once per epoch."""

    def __init__(self, n: int, rng: np.random.Generator) -> None:
        self.n, self.rng, self.order, self.pos = n, rng, np.empty(0, np.int64), 0

    def take(self, count: int) -> np.ndarray:
        out = []
        while count > 0:
            if self.pos >= len(self.order):
                self.order, self.pos = self.rng.permutation(self.n), 0
            chunk = self.order[self.pos:self.pos + count]
            self.pos += len(chunk)
            count -= len(chunk)
            out.append(chunk)
        return np.concatenate(out)


class Batches:
    """Endless ``((xa, ya, ma), (xb, yb, mb))`` uint8 batches, built ``prefetch`` ahead by a
    background thread. An error in the thread is raised in the consumer, never swallowed."""

    def __init__(self, a: FaceSet, b: FaceSet, batch_size: int, input_size: int,
                 seed: int = 0, prefetch: int = 4, warp_input: bool = True) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._args = (a, b, batch_size, input_size, seed, warp_input)
        self._thread = threading.Thread(target=self._work, name="augment", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        a, b, batch_size, input_size, seed, warp_input = self._args
        rng = np.random.default_rng(seed)
        pick_a, pick_b = _Sampler(len(a), rng), _Sampler(len(b), rng)
        try:
            while not self._stop.is_set():
                item = (augment(a, pick_a.take(batch_size), rng, input_size, warp_input),
                        augment(b, pick_b.take(batch_size), rng, input_size, warp_input))
                self._put(item)
        except BaseException as exc:  # handed to the consumer
            self._put(exc)

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Batches:
        return self

    def __next__(self):
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def batches(a: FaceSet, b: FaceSet, batch_size: int, input_size: int, seed: int = 0,
            prefetch: int = 4, warp_input: bool = True) -> Batches:
    """See :class:`Batches`."""
    return Batches(a, b, batch_size, input_size, seed, prefetch, warp_input)


def sample_indices(n: int, count: int = 7) -> list[int]:
    """Evenly spaced fixed samples for the timelapse."""
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, min(n, count))})


__all__ = ["MIN_FACES", "Batches", "FaceSet", "augment", "batches", "face_files", "load_faces",
           "prepare_face", "sample_indices"]
