"""Shared fixtures: real-face test media (see tests/media.py) and quiet native libraries."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("FACEDROP_VERBOSE", "0")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

from hotfolders import quiet  # noqa: E402

quiet.silence(False)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def astronaut_video(media_dir):
    """2 s, 25 fps, 640x480, astronaut with known motion and a 440 Hz tone."""
    from media import make_video

    return make_video(media_dir / "astronaut.mp4", "astronaut", seconds=2.0)


@pytest.fixture(scope="session")
def grace_video(media_dir):
    from media import make_video

    return make_video(media_dir / "grace.mp4", "grace", seconds=2.0, audio_hz=660.0)


@pytest.fixture(scope="session")
def astronaut_faces(media_dir, astronaut_video):
    """Faces of the astronaut video at 128 px, every frame, with their alignments file."""
    from hotfolders.extract import extract

    out = media_dir / "faces-astronaut"
    extract(astronaut_video[0], out, every_n=1, size=128)
    return out


@pytest.fixture(scope="session")
def grace_faces(media_dir, grace_video):
    from hotfolders.extract import extract

    out = media_dir / "faces-grace"
    extract(grace_video[0], out, every_n=1, size=128)
    return out
