"""Sorting real extracted faces with planted bad crops: order, undo, safety, bad input."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hotfolders.errors import InputError
from hotfolders.faceimage import face_name, list_faces, read_face, read_face_meta, write_face
from hotfolders.sort import RECORD_NAME, base_name, sort_faces, undo_sort


def plant_bad_crops(folder: Path, other_faces: Path) -> dict[str, str]:
    """Write the crops a person deletes during review into ``folder``; returns kind -> name.

    Each is a face PNG with metadata copied from a real face of the folder (a new frame index
    per crop, as a second detection in the same video would have): a blank crop, a blurred
    face, a darkened face, another person (with that person's own landmarks), a non-face
    photo, and a face that was tiny in the source (upscaled, small source box).
    """
    import skimage

    faces = list_faces(folder)
    image, meta = read_face(faces[10])
    other_image, other_meta = read_face(list_faces(other_faces)[5])
    coffee = cv2.imread(str(Path(skimage.__file__).parent / "data" / "coffee.png"))
    coffee = cv2.cvtColor(coffee, cv2.COLOR_BGR2RGB)[:, 100:500]
    size = image.shape[1], image.shape[0]
    coffee = cv2.resize(coffee, size, interpolation=cv2.INTER_AREA)
    small = cv2.resize(image, (40, 40), interpolation=cv2.INTER_AREA)
    tiny = cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
    crops = {
        "blank": (np.full_like(image, 128), meta),
        "blurred": (cv2.GaussianBlur(image, (0, 0), 3.0), meta),
        "dark": ((image.astype(np.float32) * 0.25).astype(np.uint8), meta),
        "other": (other_image, {**other_meta, "source": meta["source"],
                                "source_sha256": meta["source_sha256"]}),
        "nonface": (coffee, meta),
        "tiny": (tiny, {**meta, "source_box": [v * 0.4 for v in meta["source_box"]]}),
    }
    names = {}
    stem = Path(meta["source"]).stem
    for i, (kind, (pixels, base)) in enumerate(crops.items()):
        frame = 1000 + i
        name = face_name(stem, frame, 0)
        write_face(folder / name, pixels, {**base, "frame": frame, "face": 0,
                                           "original_name": name})
        names[kind] = name
    return names


def snapshot(folder: Path) -> dict[str, str]:
    """Name -> sha256 of every file in the folder (hidden files included)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture()
def planted(tmp_path, astronaut_faces, grace_faces):
    folder = tmp_path / "faces"
    shutil.copytree(astronaut_faces, folder)
    names = plant_bad_crops(folder, grace_faces)
    return folder, names


def _kinds(result, names):
    by_name = {v: k for k, v in names.items()}
    return [by_name.get(base_name(f.name), "real") for f in result.faces]


def test_face_method_puts_non_faces_and_other_person_first(planted):
    folder, names = planted
    result = sort_faces(folder, by="face")
    kinds = _kinds(result, names)
    assert set(kinds[:3]) == {"blank", "other", "nonface"}, kinds[:8]
    # those three are flagged as far from the typical face (a blurred or darkened copy may be
    # too, near the threshold); no real astronaut frame is
    flagged = {k for k, f in zip(kinds, result.faces) if f.flagged}
    assert {"blank", "other", "nonface"} <= flagged <= {"blank", "other", "nonface", "blurred",
                                                        "dark"}
    assert [f.rank for f in result.faces] == list(range(1, 57))
    on_disk = sorted(p.name for p in list_faces(folder))
    assert on_disk == sorted(f.name for f in result.faces)
    assert on_disk[0].startswith("0001_")


@pytest.mark.parametrize("method, first", [
    ("blur", {"blank", "blurred"}),
    ("dark", {"dark"}),
    ("size", {"tiny"}),
    ("hist", {"blank", "dark", "other", "nonface"}),
])
def test_each_method_puts_its_planted_crop_first(planted, method, first):
    folder, names = planted
    kinds = _kinds(sort_faces(folder, by=method), names)
    assert set(kinds[:len(first)]) == first, kinds[:8]


def test_similar_faces_sit_together(tmp_path, astronaut_faces, grace_faces):
    folder = tmp_path / "mixed"
    shutil.copytree(astronaut_faces, folder)
    for path in list_faces(grace_faces):
        shutil.copy2(path, folder / path.name)
    result = sort_faces(folder, by="face")
    people = [f.name.split("_")[1] for f in result.faces]
    assert sorted(set(people)) == ["astronaut", "grace"]
    switches = sum(a != b for a, b in zip(people, people[1:]))
    # a random order of 50 + 50 faces switches person ~50 times; the chain keeps them apart
    assert switches <= 3, people


def test_pose_methods_order_by_turn(planted):
    folder, _names = planted
    for method in ("yaw", "pitch"):
        result = sort_faces(folder, by=method)
        turns = [abs(f.score) for f in result.faces]
        assert turns == sorted(turns, reverse=True)
        undo_sort(folder)


def test_sort_and_undo_leave_identical_bytes(planted):
    folder, _names = planted
    before = snapshot(folder)
    contents = {name: digest for name, digest in before.items()}
    for method in ("face", "blur", "yaw"):  # sorting a sorted folder, then one undo
        result = sort_faces(folder, by=method)
        after = snapshot(folder)
        # the same bytes under new names: nothing but names changed
        assert sorted(v for k, v in after.items() if k != RECORD_NAME) == sorted(contents.values())
        for face in result.faces:
            assert after[face.name] == contents[face.old_name]
    assert undo_sort(folder) == 56
    assert snapshot(folder) == before
    with pytest.raises(InputError, match="nothing to undo"):
        undo_sort(folder)


def test_undo_after_deleting_some_faces(planted):
    folder, names = planted
    before = snapshot(folder)
    result = sort_faces(folder, by="face")
    for face in result.faces[:3]:
        (folder / face.name).unlink()
    undo_sort(folder)
    after = snapshot(folder)
    deleted = {f.old_name for f in result.faces[:3]}
    assert after == {k: v for k, v in before.items() if k not in deleted}


def test_interrupted_sort_is_finished_or_undone(planted, monkeypatch):
    """A crash between the two rename passes loses no file and no name."""
    import hotfolders.sort as sort_module

    folder, _names = planted
    before = snapshot(folder)
    real_replace = sort_module.os.replace
    calls = {"n": 0}

    def crashing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 70:  # after the first pass (56 renames), inside the second
            raise OSError("simulated crash")
        return real_replace(src, dst)

    monkeypatch.setattr(sort_module.os, "replace", crashing_replace)
    with pytest.raises(OSError, match="simulated crash"):
        sort_faces(folder, by="dark")
    monkeypatch.setattr(sort_module.os, "replace", real_replace)
    assert any(p.name.startswith(".facedrop-sorting-") for p in folder.iterdir())
    undo_sort(folder)
    assert snapshot(folder) == before


def test_keep_copies_ranked_faces_and_leaves_source_alone(planted, tmp_path):
    folder, names = planted
    before = snapshot(folder)
    keep = tmp_path / "kept"
    result = sort_faces(folder, by="dark", keep_dir=keep)
    assert snapshot(folder) == before
    copied = snapshot(keep)
    assert result.faces[0].name in copied and base_name(result.faces[0].name) == names["dark"]
    assert copied[result.faces[0].name] == before[names["dark"]]
    undo_sort(keep)
    assert {k: v for k, v in snapshot(keep).items()} == {
        k: v for k, v in before.items() if k.endswith(".png")}
    with pytest.raises(InputError, match="already holds faces"):
        sort_faces(folder, by="dark", keep_dir=keep)


def test_bad_input_changes_nothing(tmp_path, astronaut_faces):
    folder = tmp_path / "faces"
    shutil.copytree(astronaut_faces, folder)
    before = snapshot(folder)
    (folder / "holiday.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(InputError, match="not a face image"):
        sort_faces(folder, by="face")
    (folder / "holiday.jpg").unlink()
    cv2.imwrite(str(folder / "plain.png"), np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="no facedrop metadata"):
        sort_faces(folder, by="blur")
    (folder / "plain.png").unlink()
    assert snapshot(folder) == before
    with pytest.raises(InputError, match="unknown sort method"):
        sort_faces(folder, by="beauty")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no face images"):
        sort_faces(empty)
    with pytest.raises(InputError, match="not a folder"):
        sort_faces(tmp_path / "missing")
    assert snapshot(folder) == before


def facedrop(*args: str) -> subprocess.CompletedProcess:
    """Run the real console script (a fresh process, as a user would)."""
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True,
                          text=True, timeout=120)


def test_sort_command(planted):
    folder, names = planted
    before = snapshot(folder)
    proc = facedrop("sort", str(folder), "--by", "dark")
    assert proc.returncode == 0, proc.stderr
    assert "sorted 56 faces by dark" in proc.stdout and "review:" in proc.stdout
    first = sorted(p.name for p in list_faces(folder))[0]
    assert base_name(first) == names["dark"]
    assert read_face_meta(folder / first)["frame"] == 1002
    assert (folder / "review.json").exists() and (folder / "review.jpg").exists()
    proc = facedrop("sort", str(folder), "--undo")
    assert proc.returncode == 0, proc.stderr
    after = snapshot(folder)
    assert {k: v for k, v in after.items() if not k.startswith("review.")} == before
    (folder / "notes.txt").write_text("hello")
    proc = facedrop("sort", str(folder))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"facedrop sort: error: {folder / 'notes.txt'}: not a face "
                                   "image: only facedrop face PNGs belong in this folder (move "
                                   "other files out first)")
    assert not any(p.name.startswith("0001_") for p in folder.iterdir())
