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


@pytest.fixture(autouse=True)
def _unconfined():
    """A daemon started in-process confines the process to its root; the next test starts
    free again (as a new process would)."""
    from hotfolders import safefs

    yield
    safefs.confine(None)


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


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, astronaut_faces, grace_faces) -> Path:
    """A real ``lightweight`` model: A = astronaut, B = Grace Hopper, 40 iterations (enough
    for each decoder to know its own person from the other)."""
    from hotfolders.training import train

    path = tmp_path_factory.mktemp("convert-model") / "astronaut2grace"
    train([astronaut_faces], [grace_faces], path, trainer="lightweight", batch_size=4,
          iterations=40, save_every=40, seed=1)
    return path


@pytest.fixture(scope="session")
def swap_model(model_dir):
    from hotfolders.model import load_swap_model

    return load_swap_model(model_dir)


@pytest.fixture(scope="session")
def ray_cluster():
    """A real Ray cluster on this machine (a head and a worker node), for the cluster tests."""
    from raycluster import start_cluster

    cluster = start_cluster()
    yield cluster
    cluster.shutdown()
