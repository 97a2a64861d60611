"""The review report on real faces with planted bad crops: reasons, JSON, contact sheet."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from hotfolders.align import MEAN_FACE_3D_68, umeyama, transform_points
from hotfolders.errors import InputError
from hotfolders.faceimage import face_name, list_faces, read_face, write_face
from hotfolders.review import REPORT_IMAGE, REPORT_JSON, SHEET_COLUMNS, SHEET_TILE, review_report
from test_sort import plant_bad_crops, snapshot


def plant_turned_face(folder, yaw: float) -> str:
    """A real face whose landmarks are those of the 3-D mean face turned by ``yaw`` degrees,
    placed where the real landmarks were: what the landmarker reports for a turned head."""
    path = list_faces(folder)[20]
    image, meta = read_face(path)
    a = np.radians(yaw)
    turn = np.array([[np.cos(a), 0, -np.sin(a)], [0, 1, 0], [np.sin(a), 0, np.cos(a)]])
    projected = (MEAN_FACE_3D_68 @ turn.T)[:, :2]
    real = np.asarray(meta["landmarks"], np.float64)
    placed = transform_points(projected, umeyama(projected[17:], real[17:]))
    name = face_name("astronaut", 2000, 0)
    write_face(folder / name, image, {**meta, "frame": 2000, "landmarks": placed.tolist(),
                                      "original_name": name})
    return name


@pytest.fixture()
def planted(tmp_path, astronaut_faces, grace_faces):
    folder = tmp_path / "faces"
    shutil.copytree(astronaut_faces, folder)
    names = plant_bad_crops(folder, grace_faces)
    names["turned"] = plant_turned_face(folder, 55.0)
    return folder, names


def test_report_flags_each_planted_crop_with_its_reason(planted):
    folder, names = planted
    before = snapshot(folder)
    report = review_report(folder)
    reasons = {item["name"]: set(item["reasons"]) for item in report["items"]}
    assert "blurred" in reasons[names["blurred"]]
    assert "dark" in reasons[names["dark"]]
    assert "tiny" in reasons[names["tiny"]]
    assert "extreme-pose" in reasons[names["turned"]]
    for kind in ("other", "nonface", "blank"):
        assert "other-person" in reasons[names[kind]], (kind, reasons[names[kind]])
    assert "blurred" in reasons[names["blank"]]
    planted_names = set(names.values())
    wrongly = {n: r for n, r in reasons.items() if r and n not in planted_names}
    assert not wrongly, f"real astronaut frames flagged: {wrongly}"
    assert report["faces"] == 57 and report["flagged"] == 7
    # flagged first, each with a human-readable note per reason
    assert all(item["reasons"] for item in report["items"][:7])
    assert all(len(item["notes"]) == len(item["reasons"]) for item in report["items"])
    # only the two report files were added; no face changed
    after = snapshot(folder)
    assert set(after) - set(before) == {REPORT_JSON, REPORT_IMAGE}
    assert {k: after[k] for k in before} == before


def test_report_files(planted, tmp_path):
    folder, names = planted
    out = tmp_path / "report"
    report = review_report(folder, out_dir=out)
    on_disk = json.loads((out / REPORT_JSON).read_text())
    assert on_disk == json.loads(json.dumps(report))
    # the report names its set and its files relative to itself: moving the folder keeps it right
    assert (on_disk["folder"], on_disk["json"], on_disk["image"]) == (folder.name, REPORT_JSON,
                                                                      REPORT_IMAGE)
    assert review_report(folder, out_dir=out, name="alice-clip")["folder"] == "alice-clip"
    assert not (folder / REPORT_JSON).exists()
    sheet = cv2.imread(str(out / REPORT_IMAGE))
    assert sheet is not None
    assert sheet.shape[1] == SHEET_COLUMNS * (SHEET_TILE + 4) + 4
    # 7 flagged tiles (one row, red frames), then a row break, then 16 typical faces
    assert sheet.shape[0] > 3 * SHEET_TILE
    first_frame = sheet[44 + 1, 4 + SHEET_TILE // 2].astype(int)  # top edge of tile 1
    assert first_frame[2] > 180 and first_frame[0] < 90, first_frame  # red (BGR)


def test_clean_set_flags_nothing(astronaut_faces, grace_faces, tmp_path):
    for faces in (astronaut_faces, grace_faces):
        report = review_report(faces, out_dir=tmp_path / faces.name)
        assert report["flagged"] == 0, [i for i in report["items"] if i["reasons"]]
        assert report["faces"] == 50


def test_bad_input(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no face images"):
        review_report(empty)
    assert list(empty.iterdir()) == []
