"""Training on real faces: loss falls, saves are atomic, resume is exact, bad input is refused."""
from __future__ import annotations

import csv
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from hotfolders.errors import InputError


def _losses(model_dir: Path) -> list[tuple[int, float, float]]:
    with (model_dir / "loss.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["iteration", "loss_a", "loss_b"]
    return [(int(r[0]), float(r[1]), float(r[2])) for r in rows[1:]]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _h5_arrays(path: Path) -> list[np.ndarray]:
    import h5py

    out: list[np.ndarray] = []
    with h5py.File(path) as f:
        f.visititems(lambda k, v: out.append(np.asarray(v)) if hasattr(v, "shape") else None)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, astronaut_faces, grace_faces):
    from hotfolders.training import train

    model_dir = tmp_path_factory.mktemp("model") / "astro2grace"
    events: list[dict] = []
    result = train([astronaut_faces], [grace_faces], model_dir, batch_size=4, iterations=40,
                   save_every=20, snapshot_every=20, keep_snapshots=1, seed=1,
                   precision="float32", callback=events.append)
    return model_dir, result, events


def test_loss_goes_down_and_files_appear(trained):
    import cv2

    model_dir, result, events = trained
    assert (result.iterations, result.start_iteration, result.stopped_because) == (40, 0,
                                                                                   "iterations")
    rows = _losses(model_dir)
    assert [r[0] for r in rows] == list(range(1, 41))
    first = np.mean([r[1] + r[2] for r in rows[:5]])
    last = np.mean([r[1] + r[2] for r in rows[-5:]])
    assert last < 0.85 * first, f"loss did not fall: {first:.3f} -> {last:.3f}"
    frames = sorted((model_dir / "timelapse").glob("*.jpg"), key=lambda p: int(p.stem))
    assert [p.name for p in frames] == ["20.jpg", "40.jpg"]
    grid = cv2.imread(str(frames[-1]))
    assert grid is not None and grid.shape[1] > 6 * 64 and grid.shape[0] > 6 * 64
    early, late = cv2.imread(str(frames[0])), grid
    assert np.abs(early.astype(int) - late.astype(int)).mean() > 1  # the model changed
    assert [p.name for p in (model_dir / "snapshots").iterdir()] == ["40"]  # kept 1
    assert (model_dir / "best" / "encoder.weights.h5").exists()
    assert (model_dir / "timelapse" / "samples.npz").exists()
    saves = [e for e in events if e.get("event") == "save"]
    assert [e["iteration"] for e in saves] == [20, 40]
    steps = [e for e in events if "event" not in e]
    assert [e["iteration"] for e in steps] == list(range(1, 41))
    assert all(np.isfinite(e["loss_a"]) and np.isfinite(e["loss_b"]) for e in steps)
    state = json.loads((model_dir / "state.json").read_text())
    assert state["iterations"] == 40 and state["trainer"] == "lightweight"
    assert (state["coverage"], state["padding"], state["mask"], state["loss"]) == (
        0.85, 0.5, "extended", "mae+dssim")
    assert [h[0] for h in state["history"]] == [20, 40]
    assert state["learning_rate"] == 3e-4  # a new model steps at its trainer's own rate


def test_a_model_resumes_at_its_own_learning_rate(trained, astronaut_faces, grace_faces,
                                                  tmp_path):
    """A model made before trainers declared their rate (no ``learning_rate`` in its state)
    resumes at faceswap's 5e-5, not at the new default, and keeps it from then on."""
    from hotfolders.training import LEARNING_RATE, train

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    state = json.loads((model_dir / "state.json").read_text())
    del state["learning_rate"]
    (model_dir / "state.json").write_text(json.dumps(state))
    for iterations in (42, 44):
        train([astronaut_faces], [grace_faces], model_dir, iterations=iterations, batch_size=2,
              save_every=2, precision="float32")
        assert json.loads((model_dir / "state.json").read_text())["learning_rate"] == \
            LEARNING_RATE == 5e-5


def test_one_shared_encoder_and_two_separate_decoders(trained):
    from hotfolders.model import Networks

    model_dir, _, _ = trained
    files = sorted(p.name for p in (model_dir / "save").glob("*.weights.h5"))
    assert files == ["decoder_a.weights.h5", "decoder_b.weights.h5", "encoder.weights.h5"]
    enc = _h5_arrays(model_dir / "save" / "encoder.weights.h5")
    dec_a = _h5_arrays(model_dir / "save" / "decoder_a.weights.h5")
    dec_b = _h5_arrays(model_dir / "save" / "decoder_b.weights.h5")
    nets = Networks("lightweight")
    # the saved model holds exactly one copy of the encoder: nothing else carries its weights
    assert len(enc) == len(nets.encoder.trainable_variables)
    assert len(enc) + len(dec_a) + len(dec_b) == len(nets.trainable_variables)
    assert [a.shape for a in dec_a] == [b.shape for b in dec_b]  # same structure
    assert all(not np.allclose(a, b) for a, b in zip(dec_a, dec_b) if a.ndim > 1)  # own weights
    enc_shapes = {a.shape for a in enc if a.ndim > 1}
    assert not enc_shapes & {a.shape for a in dec_a if a.ndim > 1}


def test_a_step_encodes_a_and_b_as_one_batch_with_the_same_result_as_apart():
    """The step runs A and B through the shared encoder together (faster); losses and the
    update equal those of a step that encodes each side on its own."""
    import keras

    from hotfolders import quiet
    from hotfolders.model import Networks
    from hotfolders.training import make_loss, make_optimizer, make_step

    tf = quiet.import_tensorflow()
    keras.utils.set_random_seed(3)
    rng = np.random.default_rng(3)
    batch = [tf.constant(rng.integers(0, 256, (3, 64, 64, c), dtype=np.uint8))
             for c in (3, 3, 2, 3, 3, 2)]
    together, apart = Networks("lightweight", "float32"), Networks("lightweight", "float32")
    for mine, theirs in zip(apart.trainable_variables, together.trainable_variables):
        mine.assign(theirs)
    losses = [float(v) for v in make_step(together, make_optimizer("float32"), "mae+dssim")(
        *batch)]

    loss, optimizer = make_loss("mae+dssim"), make_optimizer("float32")

    @tf.function
    def step_apart(xa, ya, ma, xb, yb, mb):
        with tf.GradientTape() as tape:
            la = loss(ya, apart.decoder_a(apart.encoder(tf.cast(xa, tf.float32) / 255.0)), ma)
            lb = loss(yb, apart.decoder_b(apart.encoder(tf.cast(xb, tf.float32) / 255.0)), mb)
            total = la + lb
        grads = tape.gradient(total, apart.trainable_variables)
        optimizer.apply_gradients(zip(grads, apart.trainable_variables))
        return la, lb

    np.testing.assert_allclose(losses, [float(v) for v in step_apart(*batch)], rtol=1e-5)
    for mine, theirs in zip(together.trainable_variables, apart.trainable_variables):
        np.testing.assert_allclose(mine.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("size,window", [(64, 7), (128, 11)])
def test_the_losss_ssim_is_tensorflows_with_the_same_gradient(size, window):
    from hotfolders import quiet
    from hotfolders.training import ssim

    tf = quiet.import_tensorflow()
    rng = np.random.default_rng(size)
    target = tf.constant(rng.random((2, size, size, 3)), tf.float32)
    noisy = tf.clip_by_value(target + rng.normal(0, 0.1, target.shape), 0.0, 1.0)
    noisy = tf.constant(noisy.numpy(), tf.float32)
    results = []
    for form in (lambda x, y: ssim(x, y, window),
                 lambda x, y: tf.image.ssim(x, y, max_val=1.0, filter_size=window)):
        with tf.GradientTape() as tape:
            tape.watch(noisy)
            value = form(target, noisy)
            total = tf.reduce_sum(value)
        results.append((value.numpy(), tape.gradient(total, noisy).numpy()))
    (mine, my_gradient), (theirs, their_gradient) = results
    assert mine.shape == (2,) and 0.2 < mine.min() < mine.max() < 0.99
    np.testing.assert_allclose(mine, theirs, atol=1e-6)
    np.testing.assert_allclose(my_gradient, their_gradient, atol=1e-8, rtol=1e-4)


def test_swap_model_api(trained, astronaut_faces):
    from media import render_frames

    from hotfolders import alignments as al
    from hotfolders.align import warp
    from hotfolders.model import face_crop_matrix, load_swap_model

    model_dir, _, _ = trained
    model = load_swap_model(model_dir)
    assert (model.name, model.trainer, model.iterations) == ("astro2grace", "lightweight", 40)
    assert (model.input_size, model.output_size, model.coverage, model.padding) == (
        64, 64, 0.85, 0.5)
    frame = render_frames(seconds=0.04)[0][0]
    entry = al.load(astronaut_faces / al.ALIGNMENTS_NAME).faces(0)[0]
    crop = warp(frame, face_crop_matrix(entry.landmarks, model), 64)
    out = model.swap(np.stack([crop, crop]))
    assert out.shape == (2, 64, 64, 3) and out.dtype == np.float32
    assert 0.0 <= out.min() and out.max() <= 1.0
    rebuilt = model.swap(crop[None], "a2a")
    assert np.abs(out[0] - rebuilt[0]).mean() > 0.005  # the other decoder draws another face
    # 19 faces: one compiled batch of 16 plus one padded to 4; results match one-by-one runs
    many = np.stack([np.roll(crop, k, axis=1) for k in range(19)])
    batched = model.swap(many, "b2a")
    assert batched.shape == (19, 64, 64, 3)
    for k in (0, 17, 18):
        np.testing.assert_allclose(batched[k], model.swap(many[k:k + 1], "b2a")[0], atol=2e-5)
    with pytest.raises(ValueError, match="direction"):
        model.swap(many, "x2y")


def test_damaged_save_falls_back_to_backup_and_training_continues(trained, astronaut_faces,
                                                                  grace_faces, tmp_path):
    from hotfolders.model import load_swap_model
    from hotfolders.training import train

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    (model_dir / "save" / "encoder.weights.h5").unlink()  # replace, not write in place
    (model_dir / "save" / "encoder.weights.h5").write_bytes(b"\x89HDF garbage")
    model = load_swap_model(model_dir)
    assert model.iterations == 20  # the previous save
    result = train([astronaut_faces], [grace_faces], model_dir, iterations=24, batch_size=2,
                   save_every=2, precision="float32")
    assert (result.start_iteration, result.iterations, result.loaded_from) == (20, 24, "save.bak")
    assert (model_dir / "save.damaged" / "encoder.weights.h5").read_bytes() == b"\x89HDF garbage"
    assert [r[0] for r in _losses(model_dir)] == list(range(1, 25))  # 21..40 replaced, not doubled
    assert load_swap_model(model_dir).iterations == 24
    for name in ("save", "save.bak", "best"):
        shutil.rmtree(model_dir / name)
    shutil.rmtree(model_dir / "snapshots")
    with pytest.raises(InputError, match="no save"):
        train([astronaut_faces], [grace_faces], model_dir, iterations=30)


def test_every_save_damaged_is_an_input_error(trained, tmp_path):
    from hotfolders.model import load_swap_model

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    for path in model_dir.glob("**/encoder.weights.h5"):
        path.unlink()
        path.write_bytes(b"garbage")
    with pytest.raises(InputError, match="every save of this model is damaged"):
        load_swap_model(model_dir)


def test_nan_loss_stops_and_keeps_the_last_good_save(trained, astronaut_faces, grace_faces,
                                                     tmp_path):
    from hotfolders.model import load_swap_model
    from hotfolders.training import TrainingDiverged, train

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    before = {k: v for k, v in _tree(model_dir).items() if k.startswith(("save", "best"))}
    with pytest.raises(TrainingDiverged, match="loss became nan.*last good save \\(iteration 40"):
        train([astronaut_faces], [grace_faces], model_dir, iterations=60, batch_size=2,
              save_every=2, precision="float32", learning_rate=1e30)
    after = {k: v for k, v in _tree(model_dir).items() if k.startswith(("save", "best"))}
    assert after == before
    assert load_swap_model(model_dir).iterations == 40


def test_a_loss_that_blows_up_resumes_from_the_last_save_at_half_the_rate(
        trained, astronaut_faces, grace_faces, tmp_path, monkeypatch):
    """Hands-off: a NaN (here injected into two steps) costs the steps since the last save,
    not the job. Training reloads that save, halves the learning rate (recorded), and goes
    on to the end with every iteration in loss.csv exactly once."""
    from hotfolders import training
    from hotfolders.model import load_swap_model, read_state

    real_make_step = training.make_step
    calls = {"n": 0}

    def make_step(*args, **kwargs):
        step = real_make_step(*args, **kwargs)

        def flaky(*batch):
            calls["n"] += 1
            la, lb = step(*batch)
            return (float("nan"), lb) if calls["n"] in (5, 11) else (la, lb)

        return flaky

    monkeypatch.setattr(training, "make_step", make_step)
    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    rate = read_state(model_dir)["learning_rate"]
    result = training.train([astronaut_faces], [grace_faces], model_dir, iterations=50,
                            batch_size=2, save_every=4, precision="float32")
    # calls 1-4 are steps 41-44 (saved at 44); call 5 (step 45) blows up: back to 44; calls
    # 6-10 are steps 45-49 (saved at 48); call 11 (step 50) blows up: back to 48; 12-13: 49-50
    state = read_state(model_dir)
    assert result.iterations == state["iterations"] == 50
    assert state["learning_rate"] == pytest.approx(rate / 4)
    assert [d["iteration"] for d in state["diverged"]] == [44, 48]
    resumed = [w for w in result.warnings if "half the learning rate" in w]
    assert len(resumed) == 2 and "iteration 45; resumed from the save at iteration 44" in resumed[0]
    rows = (model_dir / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 51))
    assert all("nan" not in r for r in rows)
    assert load_swap_model(model_dir).iterations == 50


def test_settings_are_frozen(trained, astronaut_faces, grace_faces, tmp_path):
    from hotfolders.training import train

    model_dir = tmp_path / "m"
    shutil.copytree(trained[0], model_dir)
    before = _tree(model_dir)
    with pytest.raises(InputError, match="created with trainer = 'lightweight'.*'original'"):
        train([astronaut_faces], [grace_faces], model_dir, trainer="original", iterations=50)
    with pytest.raises(InputError, match="coverage = 0.85.*0.7"):
        train([astronaut_faces], [grace_faces], model_dir, coverage=0.7, iterations=50)
    with pytest.raises(InputError, match="mask = 'extended'"):
        train([astronaut_faces], [grace_faces], model_dir, mask="components", iterations=50)
    assert _tree(model_dir) == before


def test_stop_event_saves_and_stops_at_the_next_step(astronaut_faces, grace_faces, tmp_path):
    from hotfolders.training import train

    stop = threading.Event()
    seen: list[int] = []

    def callback(event: dict) -> None:
        if "event" not in event:
            seen.append(event["iteration"])
            if event["iteration"] == 3:
                stop.set()

    result = train([astronaut_faces], [grace_faces], tmp_path / "m", batch_size=2,
                   save_every=100, precision="float32", callback=callback, stop_event=stop)
    assert (result.iterations, result.stopped_because) == (3, "stop request")
    assert seen == [1, 2, 3]
    assert json.loads((tmp_path / "m" / "state.json").read_text())["iterations"] == 3
    assert (tmp_path / "m" / "timelapse" / "3.jpg").exists()


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
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    for path in list_faces(grace_faces)[:10]:
        image, meta = read_face(path)
        write_face(tiny / path.name, cv2.resize(image, (48, 48)), {**meta, "size": 48})
    with pytest.raises(InputError, match="48 px, smaller than the 64 px"):
        train([astronaut_faces], [tiny], tmp_path / "m3", iterations=1)
    with pytest.raises(InputError, match="face folder not found"):
        train([astronaut_faces], [tmp_path / "nope"], tmp_path / "m4", iterations=1)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_text("{not json")
    with pytest.raises(InputError, match="unreadable"):
        train([astronaut_faces], [grace_faces], broken, iterations=1)
    assert (broken / "state.json").read_text() == "{not json"
    with pytest.raises(InputError, match="unreadable"):
        load_swap_model(broken)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="no save yet"):
        load_swap_model(empty)
    with pytest.raises(InputError, match="not found"):
        load_swap_model(tmp_path / "missing")
    assert not any((tmp_path / m).exists() for m in ("m1", "m2", "m3", "m4"))
    assert sorted(p.name for p in empty.iterdir()) == []


def test_cli_bad_input_is_one_line_and_exit_2(astronaut_faces, tmp_path):
    few = tmp_path / "few"
    few.mkdir()
    done = subprocess.run([sys.executable, "-m", "daemon.cli", "train", "--a", str(astronaut_faces),
                           "--b", str(few), "--model-dir", str(tmp_path / "m")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"facedrop train: error: {few}: side B has 0 faces in {few}; at least 8 are needed "
        "(a few hundred for a good model)"]
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_kill_during_training_resumes_exactly(astronaut_faces, grace_faces, tmp_path):
    """kill -9 a real `facedrop train`, restart: same iteration count and optimizer state."""
    from hotfolders.model import Networks, load_checkpoint
    from hotfolders.training import make_optimizer

    model_dir = tmp_path / "m"
    cmd = [sys.executable, "-m", "daemon.cli", "train", "--a", str(astronaut_faces), "--b",
           str(grace_faces), "--model-dir", str(model_dir), "--batch-size", "2",
           "--save-every", "3", "--precision", "float32", "--threads", "shared"]
    proc = subprocess.Popen(cmd + ["--iterations", "100000"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            state = model_dir / "state.json"
            if state.exists() and json.loads(state.read_text())["iterations"] >= 6:
                break
            time.sleep(0.05)
        else:
            pytest.fail("training never saved")
        time.sleep(0.25)  # somewhere between saves, maybe inside one
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    nets = Networks("lightweight")
    rate = json.loads((model_dir / "state.json").read_text())["learning_rate"]
    opt = make_optimizer("float32", rate)  # the rate is the run's: set, not restored
    state, folder = load_checkpoint(model_dir, nets, opt)
    saved = state["iterations"]
    assert saved >= 6 and saved % 3 == 0
    assert int(opt.iterations.numpy()) == saved  # Adam's own step count came back too
    with np.load(folder / "optimizer.npz", allow_pickle=False) as data:
        stored = [data[k] for k in sorted(data.files) if k.startswith("v")]
    restored = [v.numpy() for v in opt.variables]
    assert len(stored) == len(restored)
    assert all(np.array_equal(s, r) for s, r in zip(stored, restored))
    assert any(np.abs(v).sum() > 0 for v in restored[2:])  # real moments, not zeros
    rows = _losses(model_dir)
    assert rows[-1][0] >= saved  # the log may run past the save; those rows are replaced
    target = saved + 4
    done = subprocess.run(cmd + ["--iterations", str(target)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{target} iterations (this run 4)" in done.stdout
    assert [r[0] for r in _losses(model_dir)] == list(range(1, target + 1)), \
        "loss history lost or doubled"
    assert json.loads((model_dir / "state.json").read_text())["iterations"] == target
    opt2 = make_optimizer("float32", rate)
    load_checkpoint(model_dir, Networks("lightweight"), opt2)
    assert int(opt2.iterations.numpy()) == target
    assert not list(model_dir.glob(".*.tmp"))


def test_plateau_stop_is_recorded_and_a_new_stretch_is_measured_on_its_own(
        tmp_path, astronaut_faces, grace_faces, astronaut_video):
    """stop = "plateau" stops once the loss gained less than plateau_gain over the last window
    (here a loose 90 %, so it stops at the first chance: two windows of 4 saves); state.json
    says where and why; training again measures its new stretch from there; each save renders
    the waiting target's preview frame (the target beside it swapped)."""
    import cv2

    from hotfolders.model import describe_stop, read_state
    from hotfolders.training import train

    model_dir = tmp_path / "m"
    picture = model_dir / "previews" / "7.jpg"
    common = dict(batch_size=2, save_every=2, snapshot_every=0, precision="float32", seed=3,
                  stop="plateau", plateau_gain=0.9,
                  previews=lambda: [(astronaut_video[0], picture)])
    first = train([astronaut_faces], [grace_faces], model_dir, iterations=200, **common)
    assert (first.stopped_because, first.iterations) == ("plateau", 16)  # 8 saves
    stop = read_state(model_dir)["stopped"]
    assert stop["reason"] == "plateau" and stop["iteration"] == 16 and stop["gain"] < 0.9
    assert "stopped at iteration 16: the loss improved by" in describe_stop(stop)
    image = cv2.imread(str(picture))
    assert image is not None and image.shape[0] == 270 and image.shape[1] > 2 * 270
    left, right = image[:, :image.shape[1] // 2 - 3], image[:, image.shape[1] // 2 + 3:]
    assert float(np.abs(left.astype(int) - right.astype(int)).mean()) > 1.0  # swapped half

    again = train([astronaut_faces], [grace_faces], model_dir, iterations=200, **common)
    assert (again.start_iteration, again.stopped_because, again.iterations) == (16, "plateau", 32)
    state = read_state(model_dir)
    assert state["stretch_from"] == 16 and state["stopped"]["iteration"] == 32

    capped = train([astronaut_faces], [grace_faces], model_dir, iterations=36, **common)
    assert (capped.stopped_because, capped.iterations) == ("iterations", 36)
    assert read_state(model_dir)["stopped"] == {**read_state(model_dir)["stopped"],
                                                "reason": "iterations", "max_iterations": 36}


def test_until_plateau_warps_until_the_loss_plateaus_then_trains_on_without_the_warp(
        tmp_path, astronaut_faces, grace_faces, monkeypatch):
    """warp = "until-plateau": the first plateau (a loose 90 %, so at the first chance: 16)
    turns the random warp off and starts a new stretch, recorded in the state; a restart in
    that stretch stays without the warp; the second plateau stops the model; its next
    stretch (a higher cap) warps again, until 3/4 of the cap when that comes first."""
    from hotfolders import training
    from hotfolders.model import read_state

    made: list[tuple[int, bool]] = []
    real_batches = training.batches

    def batches(*args, **kwargs):
        made.append((kwargs["seed"], kwargs["warp_input"]))
        return real_batches(*args, **kwargs)

    monkeypatch.setattr(training, "batches", batches)
    model_dir = tmp_path / "m"
    stop = threading.Event()
    common = dict(batch_size=2, save_every=2, snapshot_every=0, precision="float32", seed=None,
                  stop="plateau", plateau_gain=0.9, warp="until-plateau")

    def stop_at_20(event: dict) -> None:
        if event.get("iteration") == 20:
            stop.set()

    first = training.train([astronaut_faces], [grace_faces], model_dir, iterations=200,
                           stop_event=stop, callback=stop_at_20, **common)
    assert (first.stopped_because, first.iterations) == ("stop request", 20)
    state = read_state(model_dir)
    assert (state["warp_off_from"], state["stretch_from"]) == (16, 16) and not state.get("stopped")
    assert made == [(0, True), (16, False)]  # the switch, at the save that saw the plateau
    made.clear()  # set to "always" since: it warps, and the page shows no stale record
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    training.train([astronaut_faces], [grace_faces], other, iterations=22,
                   **{**common, "warp": "always"})
    assert made == [(20, True)] and "warp_off_from" not in read_state(other)

    made.clear()
    second = training.train([astronaut_faces], [grace_faces], model_dir, iterations=200, **common)
    assert (second.start_iteration, second.stopped_because, second.iterations) == (
        20, "plateau", 32)  # 16 + two windows of 4 saves, measured from 16
    assert made == [(20, False)]
    state = read_state(model_dir)
    assert state["warp_off_from"] == 16 and state["stopped"]["iteration"] == 32

    made.clear()
    third = training.train([astronaut_faces], [grace_faces], model_dir, iterations=34, **common)
    assert (third.stopped_because, third.iterations) == ("iterations", 34)
    assert made == [(32, True)] and "warp_off_from" not in read_state(model_dir)
    made.clear()  # 3/4 of the way to the cap (33 of 44) comes before the plateau here
    fourth = training.train([astronaut_faces], [grace_faces], model_dir, iterations=44, **common)
    assert (fourth.stopped_because, fourth.iterations) == ("iterations", 44)
    assert made == [(34, True), (36, False)] and read_state(model_dir)["warp_off_from"] == 36
    with pytest.raises(ValueError, match="warp must be one of always, until-plateau, never"):
        training.train([astronaut_faces], [grace_faces], model_dir, iterations=40,
                       **{**common, "warp": "sometimes"})


def test_auto_precision_is_measured_recorded_and_measured_again_on_another_machine(
        astronaut_faces, grace_faces, tmp_path, monkeypatch):
    """``precision = "auto"`` times real steps in float32 and bfloat16 and trains in the
    faster; the figures are kept in the state. A resume on the same machine and batch size
    does not measure again; on another machine it does, and the model carries on in what
    was measured there (weights and Adam's moments cross precisions)."""
    from hotfolders import precision
    from hotfolders.model import read_state
    from hotfolders.training import train

    model = tmp_path / "m"
    common = dict(batch_size=2, save_every=2, precision="auto")
    first = train([astronaut_faces], [grace_faces], model, iterations=2, **common)
    choice = read_state(model)["precision_choice"]
    rates = choice["images_per_second"]
    assert set(rates) == {"float32", "mixed_bfloat16"} and min(rates.values()) > 0
    assert choice["chosen"] == precision.pick(rates) == first.precision
    assert read_state(model)["precision"] == first.precision
    assert choice["machine"] == precision.machine()["id"] and choice["batch_size"] == 2

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again on the same machine")

    monkeypatch.setattr(precision, "measure", no_measuring)
    again = train([astronaut_faces], [grace_faces], model, iterations=4, **common)
    assert again.precision == first.precision and read_state(model)["precision_choice"] == choice

    state = json.loads((model / "state.json").read_text())  # as if made on another machine
    state["precision_choice"]["machine"] = "elsewhere"
    (model / "state.json").write_text(json.dumps(state))
    measured = []
    monkeypatch.setattr(precision, "measure", lambda *a, **k: measured.append(a) or {
        "float32": 50.0, "mixed_bfloat16": 90.0})  # a machine where bfloat16 pays
    moved = train([astronaut_faces], [grace_faces], model, iterations=6, **common)
    assert measured == [("lightweight", 2, "mae+dssim")]
    assert moved.precision == "mixed_bfloat16" and moved.iterations == 6
    assert np.isfinite(moved.loss_a) and np.isfinite(moved.loss_b)
    assert read_state(model)["precision_choice"]["machine"] == precision.machine()["id"]
