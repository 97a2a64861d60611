"""Bad input to extraction: a one-line error naming the file, exit code 2, nothing half-written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hotfolders import alignments as al
from hotfolders.errors import InputError
from hotfolders.extract import extract


def _faststart_video(path: Path) -> Path:
    """A video whose index comes first, so truncating it leaves a readable prefix."""
    import av

    from media import render_frames

    frames, _ = render_frames(seconds=1.0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def _make_bad(kind: str, tmp: Path, good: Path) -> Path:
    raw = good.read_bytes()
    path = tmp / f"{kind}.mp4"
    if kind == "missing":
        return path
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("this is not a video\n")
    elif kind == "truncated-index":  # moov atom at the end is cut off
        path.write_bytes(raw[: len(raw) * 3 // 4])
    elif kind == "truncated-data":
        fast = _faststart_video(tmp / "fast.mp4").read_bytes()
        path.write_bytes(fast[: len(fast) // 2])
    elif kind == "corrupt-middle":
        data = bytearray(raw)
        data[len(data) // 2: len(data) // 2 + 20000] = bytes(20000)
        path.write_bytes(bytes(data))
    elif kind == "no-faces":
        from media import write_video

        gradient = np.tile(np.linspace(0, 255, 320, dtype=np.uint8)[None, :, None], (240, 1, 3))
        write_video(path, [gradient] * 10, audio_hz=None)
    return path


CASES = {
    "missing": "file not found",
    "empty": "file is empty",
    "text": "not a readable video",
    "truncated-index": "not a readable video",
    "truncated-data": "truncated",
    "corrupt-middle": "unreadable frame",
    "no-faces": "no usable face",
}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_bad_input_is_a_clear_error_and_leaves_nothing(kind, astronaut_video, tmp_path):
    bad = _make_bad(kind, tmp_path, astronaut_video[0])
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        extract(bad, out, size=64)
    message = str(err.value)
    assert str(bad) in message and CASES[kind] in message
    assert "\n" not in message
    assert not out.exists() or not any(out.iterdir()), "a failed extraction left files behind"


def test_failed_run_never_replaces_a_good_alignments_file(astronaut_video, tmp_path):
    out = tmp_path / "out"
    extract(astronaut_video[0], out, every_n=10, size=64)
    good = (out / al.ALIGNMENTS_NAME).read_bytes()
    faces_before = sorted(p.name for p in out.iterdir())
    bad = _make_bad("corrupt-middle", tmp_path, astronaut_video[0])
    with pytest.raises(InputError):
        extract(bad, out, every_n=1, size=64)
    assert (out / al.ALIGNMENTS_NAME).read_bytes() == good
    assert sorted(p.name for p in out.iterdir()) == faces_before


def test_cli_exit_code_and_one_line_message(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")
    proc = subprocess.run([sys.executable, "-m", "daemon.cli", "extract", str(bad), "-o",
                           str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines == [f"facedrop extract: error: {bad}: not a readable video "
                     "(Invalid data found when processing input)"]
