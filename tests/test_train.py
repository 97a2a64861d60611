"""Training on real faces: loss falls, saves are atomic, resume is exact, bad input is refused."""
from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hotfolders.errors import InputError


def _losses(model_dir: Path) -> list[tuple[int, float, float]]:
    with (model_dir / "loss.csv").open() as fh:
        return [(int(r[0]), float(r[1]), float(r[2])) for r in list(csv.reader(fh))[1:]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, astronaut_faces, grace_faces):
    from hotfolders.training import train

    model_dir = tmp_path_factory.mktemp("model") / "astro2grace"
    events = []
    result = train([astronaut_faces], [grace_faces], model_dir, batch_size=4, iterations=40,
                   save_every=20, snapshot_every=20, keep_snapshots=1, seed=1,
                   callback=events.append)
    return model_dir, result, events


def test_loss_goes_down_and_files_appear(trained):
    model_dir, result, events = trained
    assert result.iterations == 40 and result.stopped_because == "iterations"
    rows = _losses(model_dir)
    assert [r[0] for r in rows] == list(range(1, 41))
    first = np.mean([r[1] + r[2] for r in rows[:5]])
    last = np.mean([r[1] + r[2] for r in rows[-5:]])
    assert last < 0.85 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"
    assert sorted(p.name for p in (model_dir / "timelapse").glob("*.jpg")) == [
        "00000020.jpg", "00000040.jpg"]
    assert [p.name for p in (model_dir / "snapshots").iterdir()] == ["00000040"]  # kept 1
    assert (model_dir / "best" / "encoder.weights.h5").exists()
    saves = [e for e in events if e.get("event") == "save"]
    assert [e["iteration"] for e in saves] == [20, 40]
    assert sum(1 for e in events if "event" not in e) == 40
    state = json.loads((model_dir / "state.json").read_text())
    assert state["iterations"] == 40 and state["trainer"] == "lightweight"
    assert state["coverage"] == 0.85 and state["padding"] == 0.5


def test_one_shared_encoder_and_two_separate_decoders(trained):
    import h5py

    model_dir, _, _ = trained
    files = sorted(p.name for p in (model_dir / "save").glob("*.weights.h5"))
    assert files == ["decoder_a.weights.h5", "decoder_b.weights.h5", "encoder.weights.h5"]

    def arrays(name):
        out = []
        with h5py.File(model_dir / "save" / name) as f:
            f.visititems(lambda k, v: out.append(np.asarray(v)) if hasattr(v, "shape") else None)
        return out

    dec_a, dec_b = arrays("decoder_a.weights.h5"), arrays("decoder_b.weights.h5")
    assert [a.shape for a in dec_a] == [b.shape for b in dec_b]  # same structure
    assert any(not np.allclose(a, b) for a, b in zip(dec_a, dec_b))  # separate weights
    assert len(arrays("encoder.weights.h5")) > 0


def test_swap_model_api(trained, astronaut_faces):
    from hotfolders import alignments as al
    from hotfolders.align import warp
    from hotfolders.model import face_crop_matrix, load_swap_model
    from media import render_frames

    model_dir, _, _ = trained
    model = load_swap_model(model_dir)
    assert (model.iterations, model.input_size, model.output_size) == (40, 64, 64)
    frame = render_frames(seconds=0.04)[0][0]
    entry = al.load(astronaut_faces / al.ALIGNMENTS_NAME).faces(0)[0]
    crop = warp(frame, face_crop_matrix(entry.landmarks, model), 64)
    out = model.swap(np.stack([crop, crop]))
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    rebuilt = model.swap(crop[None], "a2a")
    assert not np.allclose(out[0], rebuilt[0])  # the other decoder draws another face


def test_damaged_save_falls_back_to_backup(trained, tmp_path):
    from hotfolders.model import load_swap_model

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    (model_dir / "save" / "encoder.weights.h5").write_bytes(b"garbage")
    model = load_swap_model(model_dir)
    assert model.iterations == 20  # the previous save
    shutil.rmtree(model_dir / "save.bak")
    with pytest.raises(InputError, match="damaged"):
        load_swap_model(model_dir)


def test_settings_are_frozen(trained, astronaut_faces, grace_faces, tmp_path):
    from hotfolders.training import train

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    before = {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")}
    with pytest.raises(InputError, match="created with trainer = 'lightweight'"):
        train([astronaut_faces], [grace_faces], model_dir, trainer="original", iterations=50)
    with pytest.raises(InputError, match="coverage"):
        train([astronaut_faces], [grace_faces], model_dir, coverage=0.7, iterations=50)
    assert {p: p.stat().st_mtime_ns for p in model_dir.rglob("*")} == before


def test_bad_input(astronaut_faces, grace_faces, tmp_path):
    import cv2

    from hotfolders.faceimage import list_faces, read_face, write_face
    from hotfolders.model import load_swap_model
    from hotfolders.training import train

    few = tmp_path / "few"
    few.mkdir()
    for path in list_faces(astronaut_faces)[:3]:
        shutil.copy(path, few)
    with pytest.raises(InputError, match="side A has 3 faces.*at least 8"):
        train([few], [grace_faces], tmp_path / "m1", iterations=1)
    resized = tmp_path / "resized"
    shutil.copytree(grace_faces, resized)
    victim = list_faces(resized)[0]
    image, meta = read_face(victim)
    write_face(victim, cv2.resize(image, (100, 100)), meta)
    with pytest.raises(InputError, match="100x100 px but its metadata says 128"):
        train([astronaut_faces], [resized], tmp_path / "m2", iterations=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        train([astronaut_faces], [grace_faces], broken, iterations=1)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no save yet"):
        load_swap_model(empty)
    assert not (tmp_path / "m2" / "save").exists()


def test_kill_during_training_resumes_exactly(astronaut_faces, grace_faces, tmp_path):
    """kill -9 a real `facedrop train`, restart: same iteration count and optimizer state."""
    from hotfolders.model import Networks, load_checkpoint
    from hotfolders.training import _optimizer

    model_dir = tmp_path / "m"
    cmd = [sys.executable, "-m", "daemon.cli", "train", "--a", str(astronaut_faces), "--b",
           str(grace_faces), "--model-dir", str(model_dir), "--batch-size", "2",
           "--save-every", "3", "--iterations", "100000", "--precision", "float32"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            state = model_dir / "state.json"
            if state.exists() and json.loads(state.read_text())["iterations"] >= 6:
                break
            time.sleep(0.2)
        else:
            pytest.fail("training never saved")
        time.sleep(0.3)  # somewhere between saves, maybe inside one
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    saved = json.loads((model_dir / "state.json").read_text())["iterations"]
    assert saved >= 6 and saved % 3 == 0
    nets = Networks("lightweight")
    opt = _optimizer("float32", 5e-5)
    state = load_checkpoint(model_dir, nets, opt)
    assert state["iterations"] == saved
    assert int(opt.iterations.numpy()) == saved  # Adam's own step count came back too
    moments = [v.numpy().copy() for v in opt.variables[2:6]]
    assert any(np.abs(m).sum() > 0 for m in moments)
    target = saved + 4
    done = subprocess.run(cmd[:-4] + ["--iterations", str(target), "--precision", "float32"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = _losses(model_dir)
    assert [r[0] for r in rows] == list(range(1, target + 1)), "loss history lost or doubled"
    assert json.loads((model_dir / "state.json").read_text())["iterations"] == target
