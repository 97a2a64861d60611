"""Provenance: synthetic-media tags in real mp4/PNG files, the visible label, the manifest."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from hotfolders import provenance as pv
from hotfolders import version


def test_mp4_tags_say_synthetic_and_name_tool_and_model(tmp_path):
    import av

    from hotfolders.video import VideoWriter

    tags = pv.container_tags("alice2bob", 1250, "lightweight")
    path = tmp_path / "x_swapped.mp4"
    with VideoWriter(path, 96, 64, 25, metadata=tags) as writer:
        for i in range(5):
            writer.write(np.full((64, 96, 3), 40 * i, np.uint8))
    with av.open(str(path)) as container:
        meta = dict(container.metadata)
    for key in ("comment", "description"):
        assert meta[key].startswith("SYNTHETIC MEDIA"), meta
        assert f"facedrop {version()}" in meta[key]
        assert "alice2bob" in meta[key] and "1250 iterations" in meta[key]
    assert "synthetic" in meta["title"].lower()


def test_png_text_chunks_round_trip_and_keep_the_image_readable():
    import cv2

    image = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    _, png = cv2.imencode(".png", image)
    tags = pv.container_tags("m", 3)
    data = pv.png_with_text(png.tobytes(), tags)
    assert pv.png_text(data)["comment"] == tags["comment"]
    assert pv.png_text(data)["synthetic"] == "true"
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(decoded, image), "the chunks must not damage the PNG"
    with pytest.raises(ValueError):
        pv.png_with_text(b"GIF89a" + bytes(40), tags)


@pytest.mark.parametrize("size", [(480, 640), (720, 1280), (1080, 1920)])
def test_visible_label_sits_in_the_bottom_right_corner_and_is_legible(size):
    h, w = size
    frame = np.full((h, w, 3), 128, np.uint8)
    before = frame.copy()
    pv.draw_label(frame)
    changed = np.argwhere(np.any(frame != before, axis=2))
    assert len(changed), "label missing"
    (y0, x0), (y1, x1) = changed.min(axis=0), changed.max(axis=0)
    assert y0 > h * 0.85 and x0 > w * 0.7, "label must stay in the bottom-right corner"
    assert (y1 - y0) * (x1 - x0) < 0.02 * h * w, "label must stay small"
    box = frame[y0:y1 + 1, x0:x1 + 1]
    assert (box.max(axis=2) > 230).sum() > 40, "white text expected"
    assert (box.max(axis=2) < 70).sum() > 40, "dark backing box expected"


def test_label_leaves_tiny_frames_alone():
    frame = np.full((24, 32, 3), 99, np.uint8)
    assert np.array_equal(pv.draw_label(frame.copy()), frame)


def test_manifest_records_everything_and_verifies_the_files(tmp_path):
    source = tmp_path / "clip.mov"
    source.write_bytes(b"input video bytes")
    output = tmp_path / pv.sidecar_name(source, ".mp4")
    assert output.name == "clip_swapped.mp4"
    output.write_bytes(b"converted video bytes")
    sha = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
    path = pv.write_manifest(
        pv.manifest_path(output), output, input_path=source, input_sha256=sha(source),
        output_sha256=sha(output),
        model={"name": "a2b", "trainer": "lightweight", "iterations": 500},
        settings={"mask": "extended", "color": "avg-color"}, stats={"frames": 3})
    assert path.name == "clip_swapped.provenance.json"
    data = json.loads(path.read_text())
    assert data["synthetic"] is True and "AI-generated" in data["statement"]
    assert data["generator"] == {"name": "facedrop", "version": version()}
    assert data["input"] == {"name": "clip.mov", "sha256": sha(source)}
    assert data["model"]["iterations"] == 500 and data["settings"]["color"] == "avg-color"
    assert data["created"].endswith("Z")
    assert pv.verify_manifest(path, source) == []
    output.write_bytes(b"converted video bytes, edited afterwards")
    assert any("does not match" in p for p in pv.verify_manifest(path))
    source.write_bytes(b"another input")
    assert any("input" in p for p in pv.verify_manifest(path, source))
    output.unlink()
    assert any("not found" in p for p in pv.verify_manifest(path))
    assert pv.verify_manifest(tmp_path / "nope.json")[0].startswith("manifest unreadable")
    assert not list(tmp_path.glob(".*tmp")), "no temp files left behind"


def test_manifest_rejects_foreign_json(tmp_path):
    other = tmp_path / "x.provenance.json"
    other.write_text(json.dumps({"synthetic": False}))
    assert pv.verify_manifest(Path(other)) == ["not a facedrop provenance manifest"]
