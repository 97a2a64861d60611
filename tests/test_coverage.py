"""Pose coverage on real faces: a head-turn range planted only in A must be reported."""
from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest

from hotfolders.align import MEAN_FACE_3D_68, pose_angles
from hotfolders.coverage import coverage
from hotfolders.errors import InputError
from test_sort import facedrop, snapshot

TURN_FRAMES = 25
# degrees the head model turns at the middle of the clip; beyond ~45 the painted face
# reaches the ellipsoid's rim and MediaPipe's tracking stops following the turn
TURN_MAX = 40.0


def turned_head(photo: np.ndarray, centre, radii, yaw: float, background: int = 40) -> np.ndarray:
    """The photo painted on an ellipsoid (a crude head model) turned by ``yaw`` degrees.

    Orthographic ray casting: each output pixel's ray is turned back into the model frame,
    meets the ellipsoid's front, and takes the photo pixel painted there. Unlike a flat
    perspective warp, the nose (in front) moves further than the cheeks, as on a real head.
    """
    h, w = photo.shape[:2]
    cx, cy = centre
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    a = np.radians(yaw)
    # model -> camera: nose (z < 0, towards the camera) moves to +x for yaw > 0
    turn = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    origin = np.stack([xs - cx, ys - cy, np.zeros_like(xs)], -1) @ turn  # camera -> model
    ray = np.array([0.0, 0.0, 1.0]) @ turn
    inv = 1.0 / np.asarray(radii, dtype=np.float64) ** 2
    qa = (ray * ray * inv).sum()
    qb = 2 * (origin * ray * inv).sum(-1)
    qc = (origin * origin * inv).sum(-1) - 1
    disc = qb * qb - 4 * qa * qc
    t = (-qb - np.sqrt(np.maximum(disc, 0))) / (2 * qa)  # the near side (smaller z)
    hit = origin + t[..., None] * ray
    out = cv2.remap(photo, (hit[..., 0] + cx).astype(np.float32),
                    (hit[..., 1] + cy).astype(np.float32), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=(background,) * 3)
    out[disc < 0] = background
    return out


@pytest.fixture(scope="module")
def turning_faces(tmp_path_factory):
    """The astronaut turning her head to the image's right and back (0 -> 40 -> 0 degrees),
    extracted with the real pipeline; returns (faces folder, nominal yaw per frame).

    The ellipsoid is shallower than a head (the nose does not stand out of it), so the
    landmarks show a smaller turn than the nominal one: about 18 degrees at the peak.
    """
    from media import load_face, write_video
    from hotfolders.extract import extract
    from hotfolders.landmarks import FaceLandmarker

    out = tmp_path_factory.mktemp("turning")
    photo = load_face("astronaut")
    with FaceLandmarker(video=False) as landmarker:
        (det,) = landmarker.detect(photo)
    x, y, w, h = det.box
    centre, radii = (x + w / 2, y + h / 2), (0.75 * w, 1.1 * h, 1.0 * w)
    yaws = TURN_MAX * np.sin(np.linspace(0, np.pi, TURN_FRAMES))
    frames = [turned_head(photo, centre, radii, float(a)) for a in yaws]
    video = write_video(out / "turning.mp4", frames, audio_hz=None)
    extract(video, out / "faces", size=128)
    return out / "faces", yaws


def test_pose_angles_recovers_a_known_rotation():
    for yaw, pitch in [(0, 0), (30, 0), (-25, 10), (15, -20)]:
        a, b = np.radians(yaw), np.radians(pitch)
        turn = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
        tilt = np.array([[1, 0, 0], [0, np.cos(b), np.sin(b)], [0, -np.sin(b), np.cos(b)]])
        points = MEAN_FACE_3D_68 @ (tilt @ turn).T
        roll = cv2.getRotationMatrix2D((0, 0), 25, 180.0)  # any scale, roll, shift
        landmarks = points[:, :2] @ roll[:, :2].T + (300, 200)
        est_yaw, est_pitch, _ = pose_angles(landmarks)
        assert abs(est_yaw - yaw) < 3, (yaw, pitch, est_yaw)
        assert abs(est_pitch - pitch) < 3, (yaw, pitch, est_pitch)


def test_yaw_follows_the_rendered_head_turn(turning_faces):
    from hotfolders.embedding import pose
    from hotfolders.faceimage import list_faces, read_face_meta

    folder, yaws = turning_faces
    metas = [read_face_meta(p) for p in list_faces(folder)]
    assert len(metas) == TURN_FRAMES
    estimated = np.array([pose(m)[0] for m in sorted(metas, key=lambda m: m["frame"])])
    assert np.corrcoef(estimated, yaws)[0, 1] > 0.9
    assert estimated.max() > 12 and np.abs(estimated[[0, -1]]).max() < 5


def test_finds_the_pose_range_planted_only_in_a(turning_faces, astronaut_faces, grace_faces,
                                                tmp_path):
    turning, _ = turning_faces
    image = tmp_path / "coverage.png"
    report = coverage([astronaut_faces, turning], grace_faces, out_image=image)
    assert report.a_count == 75 and report.b_count == 50
    poses = report.missing_poses
    assert poses, report.describe()
    # everything B lacks lies on the side A turned to; the frontal frames are covered
    assert all(r.yaw[0] >= 5 for r in poses), report.describe()
    uncovered = sum(r.a_count for r in poses)
    assert 5 <= uncovered <= TURN_FRAMES
    assert 50 / 75 <= report.fraction_covered < 1.0
    assert "B lacks these poses" in report.describe()
    heat = cv2.imread(str(image))
    assert heat is not None and heat.shape[1] > heat.shape[0]
    red = (heat[..., 2] > 200) & (heat[..., 1] < 40) & (heat[..., 0] < 40)
    assert red.sum() > 100  # missing cells are outlined in red


def test_same_poses_are_covered(turning_faces, astronaut_faces, grace_faces):
    turning, _ = turning_faces
    report = coverage(astronaut_faces, grace_faces)
    assert report.missing_poses == [] and report.fraction_covered == 1.0
    # B holding the turned faces as well covers A's turn
    report = coverage(turning, [astronaut_faces, turning])
    assert report.missing_poses == [] and report.fraction_covered == 1.0


def test_expressions_b_lacks(astronaut_faces, grace_faces):
    # the astronaut smiles with parted lips in every frame; Grace Hopper's mouth is closed
    report = coverage(astronaut_faces, grace_faces)
    mouth = [r for r in report.missing_regions if r.kind == "mouth"]
    assert [r.level for r in mouth] == ["open"] and mouth[0].a_count == 50
    assert "B has no faces with mouth open" in report.describe()
    reverse = coverage(grace_faces, astronaut_faces)
    assert [r.level for r in reverse.missing_regions if r.kind == "mouth"] == ["closed"]


def test_training_warns_once_per_new_report_not_at_every_resume(astronaut_faces, grace_faces,
                                                                tmp_path, caplog):
    from hotfolders.training import _coverage_check

    def check() -> tuple[str | None, list[logging.LogRecord]]:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="hotfolders"):
            note = _coverage_check([astronaut_faces], [grace_faces], tmp_path)
        return note, [r for r in caplog.records if "cover" in r.getMessage()
                      or "mouth" in r.getMessage()]

    note, first = check()
    assert "B has no faces with mouth open" in note
    assert len(first) > 1 and {r.levelno for r in first} == {logging.WARNING}
    assert any("mouth open" in r.getMessage() for r in first)
    assert json.loads((tmp_path / "coverage.json").read_text())["missing_regions"]
    note_again, again = check()  # a resume with the same faces
    assert note_again == note  # the result still carries it
    assert [r.levelno for r in again] == [logging.INFO]
    assert "still do not cover" in again[0].getMessage()
    (tmp_path / "coverage.json").write_text("{}")  # faces changed since: the full warning again
    assert {r.levelno for r in check()[1]} == {logging.WARNING}


def test_a_persons_folder_with_one_folder_per_source(turning_faces, astronaut_faces,
                                                     grace_faces, tmp_path):
    import shutil

    turning, _ = turning_faces
    person = tmp_path / "approved" / "eileen"
    shutil.copytree(astronaut_faces, person / "astronaut")
    shutil.copytree(turning, person / "turning")
    report = coverage(person, grace_faces)
    assert report.a_count == 75 and report.missing_poses


def test_bad_input_changes_nothing(tmp_path, astronaut_faces):
    empty = tmp_path / "empty"
    empty.mkdir()
    before = snapshot(astronaut_faces)
    with pytest.raises(InputError, match="no face images"):
        coverage(astronaut_faces, empty)
    with pytest.raises(InputError, match="PNG"):
        coverage(astronaut_faces, astronaut_faces, out_image=tmp_path / "map.jpg")
    assert not (tmp_path / "map.jpg").exists()
    assert snapshot(astronaut_faces) == before


def test_coverage_command(turning_faces, grace_faces, tmp_path):
    turning, _ = turning_faces
    image = tmp_path / "map.png"
    proc = facedrop("coverage", str(turning), str(grace_faces), "--image", str(image), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["a_count"] == TURN_FRAMES and data["fraction_covered"] < 1.0
    assert any(r["kind"] == "pose" for r in data["missing_regions"])
    assert image.exists()
    proc = facedrop("coverage", str(turning), str(grace_faces))
    assert proc.returncode == 0 and "pose coverage:" in proc.stdout
    proc = facedrop("coverage", str(turning), str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "not a folder" in proc.stderr
