"""Conversion plugins on real face pixels: colour adjustment and sharpening, no model needed."""
from __future__ import annotations

import numpy as np
import pytest

from hotfolders.plugins.convert import COLORS, SHARPENERS, load_color, load_sharpen

SIZE = 64


@pytest.fixture(scope="module")
def face() -> np.ndarray:
    """The astronaut's face, 64 px, float RGB: what a conversion's "original" crop looks like."""
    import cv2
    from media import load_face

    return cv2.resize(load_face("astronaut")[60:190, 170:300], (SIZE, SIZE),
                      interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def mask() -> np.ndarray:
    """A soft oval in the middle, like a feathered face mask."""
    import cv2

    m = np.zeros((SIZE, SIZE), np.uint8)
    cv2.ellipse(m, (32, 34), (18, 23), 0, 0, 360, 255, -1)
    return (cv2.GaussianBlur(m, (0, 0), 2.0).astype(np.float32) / 255.0)[..., None]


def _distance(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    inside = mask[..., 0] > 0.5
    return float(np.abs(a[inside].mean(0) - b[inside].mean(0)).sum())


@pytest.mark.parametrize("color", [c for c in COLORS if c != "none"])
@pytest.mark.parametrize("tint", [(0.6, 0.8, 1.25), (1.3, 1.0, 0.7)], ids=["blue", "warm"])
def test_colour_modes_move_the_face_towards_the_frame(color, tint, face, mask):
    """A "model face" with the wrong tint ends up much closer to the frame's colour."""
    swapped = np.clip(face * np.array(tint, np.float32), 0, 1)
    adjusted = load_color(color)(swapped, face, mask)
    assert adjusted.shape == swapped.shape and adjusted.dtype == np.float32
    assert 0.0 <= adjusted.min() and adjusted.max() <= 1.0
    before, after = _distance(swapped, face, mask), _distance(adjusted, face, mask)
    assert after < 0.5 * before, f"{color}: colour distance {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("color", [c for c in COLORS if c != "none"])
def test_a_different_face_takes_the_frames_tone(color, face, mask):
    """Grace's face (another person, another light) moves towards the astronaut's skin tone."""
    import cv2
    from media import load_face

    grace = load_face("grace")
    other = cv2.resize(grace[60:300, 130:370], (SIZE, SIZE),
                       interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    adjusted = load_color(color)(other, face, mask)
    assert _distance(adjusted, face, mask) < 0.6 * _distance(other, face, mask)


def test_none_keeps_the_models_colours(face, mask):
    swapped = np.clip(face * 0.5, 0, 1)
    assert np.array_equal(load_color("none")(swapped, face, mask), swapped)


def test_statistics_ignore_what_is_outside_the_mask(face, mask):
    """A bright background outside the mask must not change the adjustment."""
    swapped = np.clip(face * 0.7, 0, 1)
    outside = mask[..., 0] < 0.01
    bright = face.copy()
    bright[outside] = 1.0
    for color in ("avg-color", "color-transfer", "match-hist"):
        a = load_color(color)(swapped, face, mask)
        b = load_color(color)(swapped, bright, mask)
        inside = mask[..., 0] > 0.5
        assert np.abs(a[inside] - b[inside]).max() < 1e-4, color


def test_seamless_keeps_gradients_and_survives_an_empty_mask(face):
    """Poisson cloning keeps the new face's detail; with no mask it changes nothing."""
    empty = np.zeros((SIZE, SIZE, 1), np.float32)
    swapped = np.clip(face[::-1] * 0.8, 0, 1)  # a different "face": the photo upside down
    assert np.array_equal(load_color("seamless")(swapped, face, empty), swapped)
    m = np.zeros((SIZE, SIZE, 1), np.float32)
    m[16:48, 16:48] = 1.0
    out = load_color("seamless")(swapped, face, m)
    core = (slice(22, 42), slice(22, 42))
    grad_out = np.diff(out[core].mean(2), axis=1)
    grad_new = np.diff(swapped[core].mean(2), axis=1)
    grad_old = np.diff(face[core].mean(2), axis=1)
    assert np.corrcoef(grad_out.ravel(), grad_new.ravel())[0, 1] > 0.8
    assert np.corrcoef(grad_out.ravel(), grad_old.ravel())[0, 1] < 0.5


def _detail(image: np.ndarray) -> float:
    import cv2

    return float(np.abs(cv2.Laplacian(image.mean(axis=2), cv2.CV_32F)).mean())


@pytest.mark.parametrize("name", [s for s in SHARPENERS if s != "none"])
def test_sharpeners_add_detail_and_leave_flat_areas_alone(name, face):
    import cv2

    soft = cv2.GaussianBlur(face, (0, 0), 1.2)  # decoders produce soft faces
    sharp = load_sharpen(name)(soft)
    assert sharp.shape == soft.shape and 0.0 <= sharp.min() and sharp.max() <= 1.0
    assert _detail(sharp) > 1.15 * _detail(soft)
    # a face pasted 3x larger is sharpened at its own scale: a wider kernel, more effect there
    big = cv2.resize(soft, (3 * SIZE, 3 * SIZE), interpolation=cv2.INTER_CUBIC)
    wide = load_sharpen(name)(big, 3.0)
    narrow = load_sharpen(name)(big, 1.0)
    assert np.abs(wide - big).mean() > np.abs(narrow - big).mean()
    flat = np.full((SIZE, SIZE, 3), 0.4, np.float32)
    assert np.abs(load_sharpen(name)(flat) - flat).max() < 1e-5


def test_none_sharpener_is_the_identity(face):
    assert np.array_equal(load_sharpen("none")(face), face)


def test_cli_names_map_to_modules_and_unknown_names_fail():
    """``avg-color`` -> ``color/avg_color.py``, faceswap's convention; typos fail early."""
    import importlib

    for name in COLORS:
        module = importlib.import_module(f"hotfolders.plugins.convert.color.{name.replace('-', '_')}")
        assert load_color(name) is module.adjust and module.__doc__
    for name in SHARPENERS:
        module = importlib.import_module(f"hotfolders.plugins.convert.sharpen.{name}")
        assert load_sharpen(name) is module.sharpen and module.__doc__
    with pytest.raises(ValueError, match="avg-color"):
        load_color("avg_colour")
    with pytest.raises(ValueError, match="unsharp"):
        load_sharpen("laplace")
