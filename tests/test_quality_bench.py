"""The instrument of bench/quality.py, checked on frames whose truth is known: it must tell
the two people apart, see no landmark error where there is none, and find the noise it is
meant to find. (The benchmark itself trains for an hour: see bench/quality.py.)"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest


def _bench_module():
    """bench/quality.py by its path: bench/ on sys.path would shadow the daemon package with
    bench/daemon.py (in this process and in every child it spawns)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location("facedrop_bench_quality", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


quality = _bench_module()


@pytest.fixture(scope="module")
def judge():
    return quality.Judge()


def test_identity_landmarks_and_noise_on_known_frames(judge):
    from hotfolders.samples import Motion, load_face, render_frames

    photo_a, photo_b = judge.face(load_face("astronaut")), judge.face(load_face("grace"))
    assert photo_a is not None and photo_b is not None
    assert photo_a[0].shape == (68, 2) and photo_a[1].shape == (128,)
    assert np.linalg.norm(photo_a[1] - photo_b[1]) > 0.6  # dlib's "different people"

    held_out = Motion(**quality.HELD_OUT)
    frames_a, to_a = render_frames("astronaut", 0.8, motion=held_out)
    frames_b, to_b = render_frames("grace", 0.8, motion=held_out)
    at_a = quality.centres(photo_a[0], to_a)
    ref_a, ref_b = photo_a[1], photo_b[1]

    itself = quality.score(judge, frames_a, frames_a, at_a, ref_a, ref_b)
    assert itself.frames == len(frames_a[::quality.SAMPLE_EVERY])
    assert itself.nearer_b == 0.0 and itself.margin < -0.3  # A is A
    assert itself.landmarks == itself.pose == 0.0 and itself.noise == pytest.approx(1.0)
    real_b = quality.score(judge, frames_b, frames_b, quality.centres(photo_b[0], to_b),
                           ref_a, ref_b)
    assert real_b.nearer_b == 1.0 and real_b.margin > 0.3  # B is B

    # the face moved by 4 px: the error is 4 px over the inter-ocular distance
    shifted = [np.roll(f, 4, axis=1) for f in frames_a]
    moved = quality.score(judge, shifted, frames_a, at_a, ref_a, ref_b)
    expected = np.mean([4 / quality.interocular(judge.face(frames_a[i], at_a[i])[0])
                        for i in range(0, len(frames_a), quality.SAMPLE_EVERY)])
    assert moved.landmarks == pytest.approx(expected, rel=0.35)
    assert moved.pose == pytest.approx(expected, rel=0.35)

    # speckle noise raises the high-frequency energy, a blur lowers it
    rng = np.random.default_rng(0)
    speckled = [np.clip(f + rng.normal(0, 12, f.shape), 0, 255).astype(np.uint8)
                for f in frames_a]
    import cv2

    blurred = [cv2.GaussianBlur(f, (0, 0), 2.0) for f in frames_a]
    assert quality.score(judge, speckled, frames_a, at_a, ref_a, ref_b).noise > 1.5
    assert quality.score(judge, blurred, frames_a, at_a, ref_a, ref_b).noise < 0.5


def test_perfect_stand_ins_through_a_real_conversion(judge, tmp_path):
    """The two references the benchmark prints beside a trained model: A's own face through
    the model's resolution stays A with a small landmark error; B's real face pasted in the
    target's alignment is B, its landmarks where B's are rather than where A's were."""
    from hotfolders.convert import convert
    from hotfolders.samples import Motion, load_face, make_video

    photo_a, photo_b = judge.face(load_face("astronaut")), judge.face(load_face("grace"))
    target, to_target = make_video(tmp_path / "target.mp4", "astronaut", seconds=0.8,
                                   motion=Motion(**quality.HELD_OUT))
    frames = quality.read(target)
    at = quality.centres(photo_a[0], to_target)
    perfect_a = quality.PerfectSwap("lightweight")
    perfect_b = perfect_a.with_face_of(load_face("grace"))
    assert perfect_b.face.shape == (64, 64, 3) and perfect_a.face is None
    scores = {}
    for name, stand_in in (("a", perfect_a), ("b", perfect_b)):
        result = convert(target, tmp_path, tmp_path / f"{name}.mp4", model=stand_in)
        assert result.frames_swapped == result.frames == len(frames)
        scores[name] = quality.score(judge, quality.read(tmp_path / f"{name}.mp4"), frames, at,
                                     photo_a[1], photo_b[1])
    a, b = scores["a"], scores["b"]
    assert a.frames == b.frames == len(frames[::quality.SAMPLE_EVERY])
    assert a.nearer_b == 0.0 and a.landmarks < 0.03  # a 64 px face: soft, in place
    assert b.nearer_b == 1.0 and b.margin > 0.2
    assert b.landmarks > 2 * a.landmarks  # B's face shape is not A's
