"""The alignments file and face PNG metadata: round trips, atomic writes, damage handling."""
from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from hotfolders import alignments as al
from hotfolders.errors import InputError
from hotfolders.faceimage import encode_face, read_face, read_face_meta, write_face


def _sample() -> al.Alignments:
    rng = np.random.default_rng(0)
    data = al.Alignments(source={"name": "v.mp4", "sha256": "ab" * 32, "fps": 25.0})
    for i in range(3):
        face = al.FaceEntry(box=[1, 2, 30, 40], landmarks=rng.random((68, 2)) * 100,
                            mesh=rng.random((478, 2)) * 100, matrix=rng.random((2, 3)), size=256,
                            masks={"extended": {"size": 8, "matrix": [[1, 0, 0], [0, 1, 0]],
                                                "png": al.encode_mask(np.full((8, 8), 255, np.uint8))}})
        data.add(i * 4, i * 0.16, [face])
    return data


def test_alignments_round_trip(tmp_path):
    path = tmp_path / al.ALIGNMENTS_NAME
    original = _sample()
    al.save(original, path)
    loaded = al.load(path)
    assert sorted(loaded.frames) == [0, 4, 8]
    a, b = original.faces(4)[0], loaded.faces(4)[0]
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=0.006)
    np.testing.assert_allclose(a.mesh, b.mesh, atol=0.06)
    np.testing.assert_allclose(a.matrix, b.matrix, atol=1e-6)
    assert (b.mask("extended")[0] == 255).all()
    with gzip.open(path, "rt") as fh:  # plain JSON inside gzip, never a pickle
        assert json.load(fh)["version"] == al.ALIGNMENTS_VERSION


def test_save_keeps_a_backup_and_leaves_no_temp(tmp_path):
    path = tmp_path / al.ALIGNMENTS_NAME
    first = _sample()
    al.save(first, path)
    assert not al.backup_path(path).exists()
    second = _sample()
    del second.frames[0]
    al.save(second, path)
    assert sorted(al.load(al.backup_path(path)).frames) == [0, 4, 8]
    assert sorted(al.load(path).frames) == [4, 8]
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".bak"]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "not-ours", "future"])
def test_damaged_alignments_are_clear_errors(tmp_path, damage):
    path = tmp_path / al.ALIGNMENTS_NAME
    al.save(_sample(), path)
    raw = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00" * 100)
    elif damage == "not-ours":
        path.write_bytes(gzip.compress(b'{"hello": 1}'))
    else:
        path.write_bytes(gzip.compress(json.dumps({"format": "facedrop-alignments",
                                                   "version": 99}).encode()))
    with pytest.raises(InputError) as err:
        al.load(path)
    assert str(path) in str(err.value)


def test_face_png_metadata_round_trip(tmp_path):
    import cv2

    image = np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    meta = {"source": "v.mp4", "source_sha256": "cd" * 32, "frame": 7, "face": 0,
            "landmarks": [[1.5, 2.5]] * 68, "note": "ünïcode ✓"}
    path = tmp_path / "f.png"
    write_face(path, image, meta)
    pixels, got = read_face(path)
    assert (pixels == image).all()  # lossless, RGB order preserved
    assert got["note"] == "ünïcode ✓" and got["frame"] == 7 and got["version"] == 1
    assert read_face_meta(path) == got
    # any PNG reader still decodes it: the chunk is a valid ancillary chunk
    assert cv2.imread(str(path)) is not None
    assert encode_face(image, meta) == path.read_bytes()


def test_png_without_metadata_is_refused(tmp_path):
    import cv2

    path = tmp_path / "plain.png"
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="no facedrop metadata"):
        read_face_meta(path)
    (tmp_path / "x.png").write_bytes(b"not a png at all")
    with pytest.raises(InputError, match="not a PNG"):
        read_face_meta(tmp_path / "x.png")
