"""Conversion of a real video with a real (briefly) trained model."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hotfolders.errors import InputError


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, astronaut_faces, grace_faces):
    from hotfolders.training import train

    path = tmp_path_factory.mktemp("convert-model") / "a2g"
    train([astronaut_faces], [grace_faces], path, batch_size=4, iterations=12, save_every=12,
          precision="float32", seed=3)
    return path


@pytest.fixture(scope="module")
def converted(model_dir, astronaut_video, astronaut_faces, tmp_path_factory):
    from hotfolders import alignments as al
    from hotfolders.convert import convert

    out = tmp_path_factory.mktemp("converted") / "astronaut_swapped.mp4"
    result = convert(astronaut_video[0], model_dir, out,
                     alignments=astronaut_faces / al.ALIGNMENTS_NAME, label=False)
    return out, result


def _frames(path: Path) -> list[np.ndarray]:
    from hotfolders.video import read_frames

    return [f.image for f in read_frames(path)]


def _audio(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().ravel() for f in c.decode(c.streams.audio[0])])


def test_frames_rate_duration_and_audio_are_kept(converted, astronaut_video):
    from hotfolders.video import probe

    out, result = converted
    src, dst = probe(astronaut_video[0]), probe(out)
    assert result.frames == result.frames_swapped == 50
    assert dst.frames == src.frames == 50 and dst.fps == src.fps
    assert abs(dst.duration - src.duration) < 0.05
    a, b = _audio(astronaut_video[0]), _audio(out)
    assert len(a) == len(b) and np.array_equal(a, b), "audio must be copied untouched"


def test_only_the_masked_face_changes(converted, astronaut_video, astronaut_faces, model_dir):
    import cv2

    from hotfolders import alignments as al
    from hotfolders.convert import FaceSwapper, Settings
    from hotfolders.model import face_crop_matrix, load_swap_model

    out, _ = converted
    src, dst = _frames(astronaut_video[0]), _frames(out)
    model = load_swap_model(model_dir)
    swapper = FaceSwapper(model, Settings())
    entry = al.load(astronaut_faces / al.ALIGNMENTS_NAME).faces(10)[0]
    matrix = face_crop_matrix(entry.landmarks, model)
    small = swapper.mask(entry.landmarks, entry.mesh, matrix)[..., 0]
    back = cv2.invertAffineTransform(np.vstack([matrix[0] * model.output_size / model.input_size,
                                                matrix[1] * model.output_size / model.input_size]))
    h, w = src[10].shape[:2]
    mask = cv2.warpAffine(small, back, (w, h)) > 0.01
    dilated = cv2.dilate(mask.astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    diff = np.abs(src[10].astype(int) - dst[10].astype(int)).mean(axis=2)
    outside, inside = diff[~dilated].mean(), diff[mask].mean()
    assert outside < 3.5, f"pixels outside the mask changed by {outside:.2f} (re-encoding ~2)"
    assert inside > 4 * outside and inside > 8.0, f"face changed by only {inside:.2f}"


def test_manifest_and_metadata_mark_it_synthetic(converted, astronaut_video):
    import av

    out, result = converted
    manifest = json.loads(result.manifest.read_text())
    assert result.manifest.name == "astronaut_swapped.provenance.json"
    assert manifest["synthetic"] is True
    assert manifest["input"]["sha256"] == hashlib.sha256(astronaut_video[0].read_bytes()).hexdigest()
    assert manifest["output"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert manifest["model"]["iterations"] == 12 and manifest["settings"]["color"] == "avg-color"
    with av.open(str(out)) as c:
        assert "SYNTHETIC" in c.metadata.get("comment", "")


def test_visible_label_and_detection_without_alignments(model_dir, tmp_path):
    from hotfolders.convert import convert
    from media import make_video

    video, _ = make_video(tmp_path / "short.mp4", "astronaut", seconds=0.4)
    out = tmp_path / "out" / "short_swapped.mp4"
    result = convert(video, model_dir, out)  # landmarks detected live, label on
    assert result.frames == 10 and result.frames_swapped == 10
    src, dst = _frames(video)[5], _frames(out)[5]
    h, w = src.shape[:2]
    corner = (slice(h - 30, h), slice(w - 140, w))
    assert np.abs(src[corner].astype(int) - dst[corner].astype(int)).mean() > 20


def test_frames_without_faces_pass_through(model_dir, tmp_path):
    from hotfolders.convert import convert
    from media import write_video

    rng = np.random.default_rng(0)
    blank = [np.full((240, 320, 3), v, np.uint8) for v in rng.integers(60, 200, 6)]
    video = write_video(tmp_path / "blank.mp4", blank)
    out = tmp_path / "blank_swapped.mp4"
    result = convert(video, model_dir, out, label=False)
    assert result.frames == 6 and result.frames_swapped == 0
    for a, b in zip(_frames(video), _frames(out)):
        assert np.abs(a.astype(int) - b.astype(int)).mean() < 2.0


@pytest.mark.parametrize("color", ["avg-color", "color-transfer", "match-hist", "seamless"])
def test_colour_modes_move_the_face_towards_the_frame(color):
    from hotfolders.plugins.convert import load_color
    from media import load_face

    import cv2

    photo = cv2.resize(load_face("astronaut")[60:190, 170:300], (64, 64)).astype(np.float32) / 255
    tinted = np.clip(photo * np.array([0.6, 0.8, 1.2], np.float32), 0, 1)  # a bluish "model" face
    mask = np.zeros((64, 64, 1), np.float32)
    mask[12:52, 14:50] = 1.0
    adjusted = load_color(color)(tinted, photo, mask)
    inside = mask[..., 0] > 0.5
    before = np.abs(tinted[inside].mean(0) - photo[inside].mean(0)).sum()
    after = np.abs(adjusted[inside].mean(0) - photo[inside].mean(0)).sum()
    assert after < 0.5 * before, f"{color}: colour distance {before:.3f} -> {after:.3f}"


def test_bad_input_leaves_nothing(model_dir, tmp_path):
    from hotfolders.convert import convert

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 5000)
    out = tmp_path / "o" / "bad_swapped.mp4"
    with pytest.raises(InputError, match="bad.mp4"):
        convert(bad, model_dir, out)
    with pytest.raises(InputError, match="no save yet|not found"):
        convert(Path(__file__).parent / "nope.mp4", tmp_path / "nomodel", out)
    assert not out.exists() and not list(tmp_path.glob("o/.*"))
