"""The self-supervised occlusion mask: synthetic occluders, training, applying, the command.

How good the mask gets is measured by bench/occlusion.py (minutes of training); here the
parts are checked on real faces with a few steps.
"""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def crops(astronaut_faces):
    from hotfolders.occlusion import face_crops

    return face_crops([astronaut_faces])


def test_the_target_is_the_landmark_mask_minus_the_pasted_occluders(crops):
    from hotfolders.occlusion import occluded_batch

    faces, masks = crops
    assert faces.shape[1:] == (96, 96, 3) and masks.shape == faces.shape[:3]
    rng = np.random.default_rng(1)
    xs, ys = occluded_batch(faces, masks, rng, 64)
    assert xs.shape == (64, 96, 96, 3) and ys.shape == (64, 96, 96, 1)
    visible = ys[..., 0].reshape(64, -1).sum(axis=1)
    full = (masks > 127).reshape(len(masks), -1).sum(axis=1)
    # some samples keep the whole face, most lose part of it to an occluder
    assert (visible > 0.9 * full.mean()).sum() >= 5
    assert (visible < 0.85 * full.mean()).sum() >= 20
    # occluded pixels changed the image: where the target lost face, the pixels differ from
    # any unoccluded version (checked on one sample by pasting by hand)
    from hotfolders.occlusion import paste

    shape = np.zeros((96, 96), np.uint8)
    shape[50:80, 10:90] = 255
    pasted, covered = paste(faces[0], np.full((96, 96, 3), 255, np.uint8), shape, rng)
    assert covered[60:70, 20:80].min() > 0.9 and covered[:30].max() < 0.01
    assert (pasted[60:70, 20:80] > 240).all()


def test_train_apply_and_the_command(tmp_path, astronaut_faces):
    import cv2

    from daemon.cli import main
    from hotfolders.occlusion import OcclusionNet, train_occlusion

    result = train_occlusion([astronaut_faces], tmp_path / "w" / "occlusion.weights.h5", steps=4,
                             batch_size=4)
    assert result.weights.is_file() and result.steps == 4 and np.isfinite(result.loss)
    net = OcclusionNet(result.weights)
    prob = net.visible(np.zeros((2, 128, 128, 3), np.uint8))
    assert prob.shape == (2, 128, 128) and 0.0 <= prob.min() and prob.max() <= 1.0

    assert main(["mask", "apply", str(astronaut_faces), "--weights", str(result.weights),
                 "-o", str(tmp_path / "visible")]) == 0
    pngs = sorted((tmp_path / "visible").glob("*_visible.png"))
    assert len(pngs) == len(list(astronaut_faces.glob("*.png")))
    assert cv2.imread(str(pngs[0]), cv2.IMREAD_GRAYSCALE).shape == (128, 128)  # their size
    assert main(["mask", "train", str(astronaut_faces), "-o", str(tmp_path / "cli.weights.h5"),
                 "--steps", "2"]) == 0
    assert (tmp_path / "cli.weights.h5").is_file()


def test_conversion_with_the_occlusion_mask(tmp_path, astronaut_faces, model_dir, swap_model,
                                            astronaut_video):
    """``--mask occlusion``: the blend mask is the extended mask where the person's network
    sees their face (never more); a conversion with it runs and says so in its manifest."""
    import json

    from hotfolders import alignments as al
    from hotfolders.convert import FaceSwapper, Settings, convert
    from hotfolders.model import face_crop_matrix
    from hotfolders.occlusion import train_occlusion
    from hotfolders.video import read_frames

    weights = train_occlusion([astronaut_faces], tmp_path / "occlusion.weights.h5", steps=6,
                              batch_size=4).weights
    frame = next(iter(read_frames(astronaut_video[0]))).image
    entry = al.load(astronaut_faces / al.ALIGNMENTS_NAME).faces(0)[0]
    matrix = face_crop_matrix(entry.landmarks, swap_model)
    plain = FaceSwapper(swap_model, Settings(mask="extended", blur=0)).mask(
        entry.landmarks, entry.mesh, matrix, frame)
    occluded = FaceSwapper(swap_model, Settings(mask="occlusion", blur=0,
                                                occlusion=str(weights))).mask(
        entry.landmarks, entry.mesh, matrix, frame)
    assert occluded.shape == plain.shape and (occluded <= plain).all()
    with pytest.raises(ValueError, match="needs the input person's occlusion weights"):
        Settings(mask="occlusion").check()

    out = tmp_path / "clip_swapped.mp4"
    convert(astronaut_video[0], model_dir, out, mask="occlusion", occlusion=weights,
            model=swap_model)
    manifest = json.loads(out.with_name("clip_swapped.provenance.json").read_text())
    assert manifest["settings"]["mask"] == "occlusion"
    assert manifest["settings"]["occlusion"] == str(weights)


def test_the_daemon_trains_a_persons_mask_when_their_conversions_use_it(tmp_path,
                                                                         astronaut_faces,
                                                                         model_dir):
    """With ``[convert] mask = "occlusion"`` a cleaned set queues its person's occlusion
    training (a job of its own, before conversions); a target waits for the weights, which
    the mask stage writes beside the approved sets, and then converts with them."""
    import shutil
    from dataclasses import replace

    from daemon.config import Config
    from daemon.kinds import PRIORITY
    from daemon.service import Service
    from daemon.stages import Control, mask_stage
    from daemon.store import Store

    root = tmp_path / "root"
    shutil.copytree(astronaut_faces, root / "approved" / "alice" / "s1")
    shutil.copytree(model_dir, root / "models" / "m")
    (root / "models" / "m" / "model.toml").write_text(
        'a = "alice"\nb = "bob"\n[convert]\nmask = "occlusion"\nconvert_when = "first-save"\n')
    service = Service(Config(root=root), serve_web=False)
    service.store = store = Store(root / ".facedrop" / "state.db")
    store.upsert_model("m", a="alice", b="bob")
    clean = store.add_job("clean", root / "approved" / "alice" / "s1", person="alice")
    store.transition(clean, "done")
    service.finished(store.job(clean), "clean")
    (mask,) = store.jobs("kind = 'mask'")
    assert mask["person"] == "alice" and mask["priority"] < PRIORITY["convert"]

    target = root / "targets" / "m" / "t.mp4"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"a video")
    job = store.job(store.add_job("convert", target, model="m"))
    assert service.params(job) is None
    assert store.job(job["id"])["message"] == "waiting for the occlusion mask of alice"
    assert len(store.jobs("kind = 'mask'")) == 1  # asked again, queued once

    params = replace(service.params(store.job(mask["id"])), steps=3)
    result = mask_stage(params, lambda info: None, Control())
    weights = root / "approved" / "alice" / "occlusion.weights.h5"
    assert result["output"] == str(weights) and weights.is_file()
    assert service.params(job).convert["occlusion"] == str(weights)
    store.close()


def test_training_with_the_occlusion_mask(tmp_path, astronaut_faces, grace_faces):
    """``mask = "occlusion"`` for training: each side's loss mask is the extended mask minus
    what that person's network says covers the face (never more than the extended mask); a
    side without a network is refused with the reason."""
    import shutil

    from hotfolders.dataset import load_faces
    from hotfolders.errors import InputError
    from hotfolders.occlusion import WEIGHTS_NAME, train_occlusion
    from hotfolders.training import train

    sides = {}
    for person, faces in (("alice", astronaut_faces), ("bob", grace_faces)):
        shutil.copytree(faces, tmp_path / "approved" / person / "s1")
        sides[person] = [tmp_path / "approved" / person / "s1"]
    with pytest.raises(InputError, match="no occlusion mask"):
        load_faces(sides["alice"], 64, 0.85, "occlusion", "A")
    for person in sides:
        train_occlusion(sides[person], tmp_path / "approved" / person / WEIGHTS_NAME, steps=3,
                        batch_size=4)
    plain = load_faces(sides["alice"], 64, 0.85, "extended", "A")
    cut = load_faces(sides["alice"], 64, 0.85, "occlusion", "A")
    assert (cut.maps[..., 0] <= plain.maps[..., 0]).all()
    assert (cut.maps[..., 1] == plain.maps[..., 1]).all()
    result = train(sides["alice"], sides["bob"], tmp_path / "m", mask="occlusion", iterations=2,
                   batch_size=2, save_every=2, precision="float32")
    assert result.iterations == 2


def test_training_with_the_occlusion_mask_waits_for_both_networks(tmp_path):
    from daemon.config import Config
    from daemon.service import Service
    from daemon.store import Store

    root = tmp_path / "root"
    for person in ("alice", "bob"):
        (root / "approved" / person / "s1").mkdir(parents=True)
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "model.toml").write_text(
        'a = "alice"\nb = "bob"\n[train]\nmask = "occlusion"\n')
    service = Service(Config(root=root), serve_web=False)
    service.store = store = Store(root / ".facedrop" / "state.db")
    job = store.job(store.add_job("train", root / "models" / "m", model="m"))
    assert service.params(job) is None
    assert store.job(job["id"])["message"] == "waiting for the occlusion mask of alice and bob"
    assert sorted(j["person"] for j in store.jobs("kind = 'mask'")) == ["alice", "bob"]
    (root / "approved" / "alice" / "occlusion.weights.h5").write_bytes(b"w")
    (root / "approved" / "bob" / "occlusion.weights.h5").write_bytes(b"w")
    assert service.params(job).train["mask"] == "occlusion"
    store.close()


@pytest.mark.slow
def test_the_daemon_end_to_end_with_the_occlusion_mask(tmp_path, astronaut_video, model_dir):
    """The real daemon: a target whose model converts with ``mask = "occlusion"`` waits until
    its person is dropped, approved and cleaned; the mask job then trains that person's network
    (``[train] mask_steps``), and the target is converted with it."""
    import json
    import shutil

    from daemonproc import FAST, Daemon, init_root

    root = init_root(tmp_path / "root", FAST.replace(
        "[train]\n", "[train]\nmask_steps = 20\n") + '[convert]\nmask = "occlusion"\n'
        'convert_when = "first-save"\n')
    shutil.copytree(model_dir, root / "models" / "m")
    (root / "models" / "m" / "model.toml").write_text('a = "alice"\nb = "bob"\n')
    daemon = Daemon(root).start()
    try:
        (root / "targets" / "m").mkdir()
        shutil.copy(astronaut_video[0], root / "targets" / "m" / "clip.mp4")
        daemon.wait_for("the target to wait for the mask", lambda: (
            (j := daemon.job_for("clip.mp4"))
            and j["message"] == "waiting for the occlusion mask of alice"))
        (root / "inbox" / "alice").mkdir()
        shutil.copy(astronaut_video[0], root / "inbox" / "alice" / "alice.mp4")
        daemon.wait_for("alice's faces in review/", lambda: (
            root / "review" / "alice" / "alice" / "review.json").exists())
        (root / "approved" / "alice").mkdir()
        (root / "review" / "alice" / "alice").rename(root / "approved" / "alice" / "alice")

        done = daemon.wait_job("clip.mp4", timeout=240)
        assert done["status"] == "done", daemon.log_text()[-3000:]
        masks = [j for j in daemon.jobs() if j["kind"] == "mask"]
        assert [(j["person"], j["status"]) for j in masks] == [("alice", "done")]
        assert masks[0]["finished_at"] <= done["started_at"]
        weights = root / "approved" / "alice" / "occlusion.weights.h5"
        manifest = json.loads(
            (root / "output" / "m" / "clip_swapped.provenance.json").read_text())
        assert manifest["settings"]["mask"] == "occlusion"
        assert manifest["settings"]["occlusion"] == str(weights) and weights.is_file()
        assert not any(j["kind"] == "train" for j in daemon.jobs())  # bob is not approved
    finally:
        daemon.stop()
