"""The training batches: what the model sees must line up with what it is asked to rebuild.

A bright spot is painted at a known place of each face and of its mask; after augmentation
the spot must sit at the same place in the target and in the mask (they share one geometry),
near it in the warped input, and mirrored about half the time (the flip).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hotfolders.dataset import ROTATION_DEG, SHIFT, ZOOM, Batches, FaceSet, augment

SIZE = 64
SPOT = (20, 28)  # (x, y) of the painted spot, off the centre so a flip moves it


def spot_faces(n: int = 8) -> FaceSet:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    spot = np.exp(-((xx - SPOT[0]) ** 2 + (yy - SPOT[1]) ** 2) / (2 * 2.0 ** 2))
    grey = (40 + 200 * spot).astype(np.uint8)
    images = np.repeat(np.repeat(grey[None, :, :, None], 3, -1), n, 0)
    maps = np.stack([(255 * spot).astype(np.uint8), np.zeros_like(grey, np.uint8)], -1)
    return FaceSet(images, np.repeat(maps[None], n, 0), [Path(f"{i}.png") for i in range(n)],
                   padding=0.3)


def centroid(channel: np.ndarray) -> np.ndarray:
    """(x, y) of the brightest blob, weighted by brightness above the background."""
    w = np.clip(channel.astype(np.float64) - channel.min() - 0.5 * np.ptp(channel), 0, None)
    yy, xx = np.mgrid[0:channel.shape[0], 0:channel.shape[1]]
    return np.array([(w * xx).sum(), (w * yy).sum()]) / w.sum()


def test_target_and_mask_share_the_geometry_and_the_input_stays_near():
    faces = spot_faces()
    rng = np.random.default_rng(3)
    x, y, m = augment(faces, np.arange(8).repeat(8), rng, SIZE)
    assert x.dtype == y.dtype == m.dtype == np.uint8
    assert x.shape == y.shape == (64, SIZE, SIZE, 3) and m.shape == (64, SIZE, SIZE, 2)
    centre = (SIZE - 1) / 2
    # the farthest a rotation, zoom and shift of the ranges can carry the spot
    radius = np.hypot(SPOT[0] - centre, SPOT[1] - centre)
    reach = radius * (np.radians(ROTATION_DEG) + ZOOM * 1.2) + SHIFT * SIZE * np.sqrt(2) + 1.5
    flipped = 0
    for i in range(len(y)):
        target, mask, warped = centroid(y[i, ..., 0]), centroid(m[i, ..., 0]), centroid(x[i, ..., 0])
        assert np.abs(target - mask).max() < 0.5, i  # one geometry for face and mask
        assert np.abs(warped - target).max() < 4.0, i  # the grid warp moves it a little
        plain = np.hypot(*(target - SPOT))
        mirrored = np.hypot(target[0] - (2 * centre - SPOT[0]), target[1] - SPOT[1])
        assert min(plain, mirrored) < reach, (i, target)
        flipped += mirrored < plain
    assert 16 <= flipped <= 48  # FLIP_CHANCE of 64
    assert m[..., 1].max() == 0  # the second map moved with the first, nothing leaked in


def test_without_the_warp_the_input_is_the_target():
    faces = spot_faces()
    x, y, _ = augment(faces, [0, 1, 2], np.random.default_rng(0), SIZE, warp_input=False)
    assert np.array_equal(x, y)
    small, _, _ = augment(faces, [0, 1, 2], np.random.default_rng(0), 32, warp_input=False)
    assert small.shape == (3, 32, 32, 3)  # the input is made at the trainer's input size


def test_same_seed_same_batch_and_errors_reach_the_consumer():
    faces = spot_faces()
    one = augment(faces, [0, 1], np.random.default_rng(7), SIZE)
    two = augment(faces, [0, 1], np.random.default_rng(7), SIZE)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))
    broken = FaceSet(faces.images, faces.maps[:2], faces.paths, faces.padding)  # maps missing
    batches = Batches(faces, broken, batch_size=4, input_size=SIZE)
    try:
        with pytest.raises(IndexError):
            for _ in range(3):
                next(batches)
    finally:
        batches.close()


def test_colour_jitter_by_lookup_table_is_the_per_pixel_arithmetic():
    """Each face's Lab jitter as a lookup table gives the bytes of the arithmetic on every
    pixel (float32 contrast and shifts, + 0.5, clipped, truncated), on a real face."""
    import cv2
    import skimage

    from hotfolders.dataset import AB_SHIFT, LIGHTNESS, LIGHTNESS_SHIFT, _colour_jitter

    face = cv2.resize(skimage.data.astronaut()[30:230, 140:340], (SIZE, SIZE))
    rng = np.random.default_rng(3)
    images = np.clip(face[None].astype(np.int16) + rng.integers(-60, 60, (8, 1, 1, 3)), 0,
                     255).astype(np.uint8)  # light and dark faces: the tables clip both ends
    for seed in range(5):
        got = _colour_jitter(images, np.random.default_rng(seed))
        ref_rng, n = np.random.default_rng(seed), len(images)
        lab = cv2.cvtColor(images.reshape(n * SIZE, SIZE, 3), cv2.COLOR_RGB2LAB)
        lab = lab.reshape(images.shape).astype(np.float32)
        scale = ref_rng.uniform(1 - LIGHTNESS, 1 + LIGHTNESS, n).astype(np.float32)
        shift = np.zeros((n, 3), np.float32)
        shift[:, 0] = ref_rng.uniform(-LIGHTNESS_SHIFT, LIGHTNESS_SHIFT, n)
        shift[:, 1:] = ref_rng.uniform(-AB_SHIFT, AB_SHIFT, (n, 2))
        lab[..., 0] *= scale[:, None, None]
        lab += shift[:, None, None, :] + 0.5
        np.clip(lab, 0, 255, out=lab)
        want = cv2.cvtColor(lab.astype(np.uint8).reshape(n * SIZE, SIZE, 3), cv2.COLOR_LAB2RGB)
        assert np.array_equal(got, want.reshape(images.shape)), seed
        assert not np.array_equal(got, images)  # it did jitter
