"""Pruning alignments after review on real extractions: matching, backup, names, refusals."""
from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from hotfolders import alignments as al
from hotfolders.clean import clean
from hotfolders.errors import InputError
from hotfolders.faceimage import face_key, list_faces, read_face, read_face_meta
from hotfolders.sort import RECORD_NAME, sort_faces
from test_sort import facedrop, snapshot


def keys_in(alignments: al.Alignments) -> set[tuple[str, int, int]]:
    sha = alignments.source["sha256"]
    return {(sha, frame, i) for frame, _ts, faces in alignments for i in range(len(faces))}


def idat(path: Path) -> bytes:
    """The compressed pixel data of a PNG (all IDAT chunks): what 'never a pixel' means."""
    data = path.read_bytes()
    pos, out = 8, b""
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == b"IDAT":
            out += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return out


@pytest.fixture()
def reviewed(tmp_path, astronaut_faces):
    folder = tmp_path / "faces"
    shutil.copytree(astronaut_faces, folder)
    return folder, folder / al.ALIGNMENTS_NAME


def test_clean_removes_exactly_the_deleted_faces(reviewed):
    folder, path = reviewed
    original = path.read_bytes()
    sort_faces(folder, by="blur")
    sorted_names = sorted(p.name for p in list_faces(folder))
    deleted = sorted_names[:5] + sorted_names[20:22]  # the blurriest five and two more
    deleted_keys = {face_key(read_face_meta(folder / n)) for n in deleted}
    pixels = {face_key(read_face_meta(p)): idat(p) for p in list_faces(folder)}
    for name in deleted:
        (folder / name).unlink()

    result = clean(folder, path)

    assert result.changed and len(result.removed) == 7 and result.kept == 43
    assert set(result.removed) == deleted_keys
    pruned = al.load(path)
    remaining = {face_key(read_face_meta(p)) for p in list_faces(folder)}
    assert keys_in(pruned) == remaining and not remaining & deleted_keys
    assert pruned.face_count == 43
    # the backup is the file before cleaning, byte for byte
    assert al.backup_path(path).read_bytes() == original
    # entries kept are the same entries as before (landmarks untouched)
    before = al.load(al.backup_path(path))
    for frame, _ts, faces in pruned:
        np.testing.assert_array_equal(faces[0].landmarks, before.faces(frame)[0].landmarks)
    # extraction names are back, pixels untouched, the sort record is gone
    for p in list_faces(folder):
        meta = read_face_meta(p)
        assert p.name == meta["original_name"]
        assert idat(p) == pixels[face_key(meta)]
    assert not (folder / RECORD_NAME).exists()


def test_clean_is_idempotent_and_does_not_rewrite(reviewed):
    folder, path = reviewed
    (list_faces(folder)[3]).unlink()
    first = clean(folder, path)
    assert first.changed
    state = snapshot(folder)
    stamps = {p.name: os.stat(p).st_mtime_ns for p in folder.iterdir()}
    second = clean(folder, path)
    assert not second.changed and second.removed == [] and second.renamed == 0
    assert snapshot(folder) == state
    assert {p.name: os.stat(p).st_mtime_ns for p in folder.iterdir()} == stamps
    assert "nothing to do" in second.describe()


@pytest.fixture(scope="module")
def two_face_set(tmp_path_factory):
    """A short real video with two people side by side: frames hold faces 0 and 1."""
    from media import load_face, write_video
    from hotfolders.extract import extract

    out = tmp_path_factory.mktemp("two-faces")
    # head-and-shoulders crops of both photos, faces ~90 px, drifting towards each other
    left = cv2.resize(load_face("astronaut")[20:280, 100:350], (220, 228),
                      interpolation=cv2.INTER_AREA)
    right = cv2.resize(load_face("grace")[60:400, 90:440], (220, 214),
                       interpolation=cv2.INTER_AREA)
    frames = []
    for i in range(8):
        canvas = np.full((256, 480, 3), 40, np.uint8)
        canvas[10:238, 8 + i:228 + i] = left
        canvas[20:234, 252 - i:472 - i] = right
        frames.append(canvas)
    video = write_video(out / "pair.mp4", frames, audio_hz=None)
    faces = out / "faces"
    summary = extract(video, faces, size=96)
    assert summary.faces_written == 16
    return faces


def test_deleting_the_first_face_of_a_frame_renumbers_the_second(two_face_set, tmp_path):
    folder = tmp_path / "pair"
    shutil.copytree(two_face_set, folder)
    path = folder / al.ALIGNMENTS_NAME
    sort_faces(folder, by="hist")
    by_key = {face_key(read_face_meta(p)): p for p in list_faces(folder)}
    sha = next(iter(by_key))[0]
    # the person deletes face 0 of frames 0-3 (whoever MediaPipe listed first)
    for frame in range(4):
        by_key[(sha, frame, 0)].unlink()
    survivors = {frame: by_key[(sha, frame, 1)] for frame in range(4)}
    pixels = {frame: idat(p) for frame, p in survivors.items()}
    landmarks = {frame: al.load(path).faces(frame)[1].landmarks for frame in range(4)}

    result = clean(folder, path)

    assert len(result.removed) == 4 and result.reindexed == 4 and result.kept == 12
    pruned = al.load(path)
    for frame in range(4):
        (entry,) = pruned.faces(frame)
        np.testing.assert_array_equal(entry.landmarks, landmarks[frame])
        renamed = folder / f"pair_{frame:06d}_0.png"
        meta = read_face_meta(renamed)
        assert meta["face"] == 0 and meta["original_name"] == renamed.name
        assert idat(renamed) == pixels[frame]  # the pixels are the very same bytes
        assert read_face(renamed)[0].shape == (96, 96, 3)
    for frame in range(4, 8):
        assert len(pruned.faces(frame)) == 2
    assert keys_in(pruned) == {face_key(read_face_meta(p)) for p in list_faces(folder)}
    again = clean(folder, path)
    assert not again.changed


def test_crash_between_steps_is_repaired_by_the_next_run(two_face_set, tmp_path, monkeypatch):
    """Metadata renumbered but the alignments not yet saved: the landmark match still pairs
    each face with its own entry, so the next run finishes the job instead of mixing faces."""
    import hotfolders.clean as clean_module

    folder = tmp_path / "pair"
    shutil.copytree(two_face_set, folder)
    path = folder / al.ALIGNMENTS_NAME
    original = path.read_bytes()
    by_key = {face_key(read_face_meta(p)): p for p in list_faces(folder)}
    sha = next(iter(by_key))[0]
    survivor_landmarks = al.load(path).faces(2)[1].landmarks
    by_key[(sha, 2, 0)].unlink()

    def crash(*_args, **_kwargs):
        raise OSError("simulated power cut")

    monkeypatch.setattr(clean_module.al, "save", crash)
    with pytest.raises(OSError):
        clean(folder, path)
    monkeypatch.undo()
    assert path.read_bytes() == original
    assert read_face_meta(folder / "pair_000002_1.png")["face"] == 0  # already renumbered

    result = clean(folder, path)
    assert result.removed == [(sha, 2, 0)]
    (entry,) = al.load(path).faces(2)
    np.testing.assert_array_equal(entry.landmarks, survivor_landmarks)
    assert (folder / "pair_000002_0.png").exists() and not (folder / "pair_000002_1.png").exists()
    assert not clean(folder, path).changed


def test_refuses_faces_of_another_source(reviewed, grace_faces):
    folder, path = reviewed
    (list_faces(folder)[0]).unlink()
    stranger = list_faces(grace_faces)[0]
    shutil.copy2(stranger, folder / stranger.name)
    before = snapshot(folder)
    with pytest.raises(InputError, match="comes from 'grace.mp4'.*refusing"):
        clean(folder, path)
    assert snapshot(folder) == before


def test_refuses_faces_missing_from_the_alignments(reviewed, grace_faces):
    from test_sort import plant_bad_crops

    folder, path = reviewed
    plant_bad_crops(folder, grace_faces)  # same source sha, frames the file never had
    before = snapshot(folder)
    with pytest.raises(InputError, match="no face of frame 1000.*another extraction"):
        clean(folder, path)
    assert snapshot(folder) == before


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not-facedrop", "missing"])
def test_corrupt_alignments_change_nothing(reviewed, damage):
    folder, path = reviewed
    (list_faces(folder)[0]).unlink()
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "garbage":
        path.write_bytes(os.urandom(2048))
    elif damage == "not-facedrop":
        path.write_bytes(gzip.compress(b'{"hello": "world"}'))
    else:
        path.unlink()
    before = snapshot(folder)
    with pytest.raises(InputError):
        clean(folder, path)
    assert snapshot(folder) == before


def test_empty_folder_and_stray_files(reviewed, tmp_path):
    folder, path = reviewed
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no face images left"):
        clean(empty, path)
    (folder / "cover.jpg").write_bytes(b"\xff\xd8\xff")
    before = snapshot(folder)
    with pytest.raises(InputError, match="not a face image"):
        clean(folder, path)
    assert snapshot(folder) == before


def test_clean_command(reviewed):
    folder, path = reviewed
    sort_faces(folder, by="dark")
    for p in list_faces(folder)[:2]:
        p.unlink()
    proc = facedrop("clean", str(folder), "--alignments", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "kept 48 faces, removed 2" in proc.stdout and "backup" in proc.stdout
    proc = facedrop("clean", str(folder))  # the default alignments file sits in DIR
    assert proc.returncode == 0 and "nothing to do" in proc.stdout
    path.write_bytes(b"junk")
    proc = facedrop("clean", str(folder), "--alignments", str(path))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"facedrop clean: error: {path}: alignments file is corrupt")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == hashlib.sha256(b"junk").hexdigest()
