"""The hands-off loop through the real daemon: nobody babysits it.

Two people are dropped and approved; their model (``stop = "plateau"``) trains until it stops
by itself; a target dropped before the model had a save waits, with a preview frame that is
refreshed at every save; it is converted once the model is ready; raising ``max_iterations``
makes the model resume by itself and stop again, and the target is converted again — each
manifest says which iterations its output used.
"""
from __future__ import annotations

import json
import shutil

import pytest
from daemonproc import Daemon, init_root

pytestmark = pytest.mark.slow

# plateau_gain 0.9 stops at the first chance: two windows of 4 saves (8 saves = 32 iterations)
CONFIG = """settle_seconds = 0.3
rescan_seconds = 5
min_free_gb = 0.0
[extract]
every_n = 5
size = 96
[train]
batch_size = 4
save_every = 4
max_iterations = 1000
plateau_gain = 0.9
precision = "float32"
threads = "shared"
"""


def _manifest(root, model: str) -> dict:
    return json.loads((root / "output" / model / "clip_swapped.provenance.json").read_text())


def test_model_stops_by_itself_target_waits_with_preview_and_is_converted_again(
        tmp_path, astronaut_video, grace_video):
    root = init_root(tmp_path / "root", CONFIG)
    daemon = Daemon(root, web=True).start()
    try:
        for person, video in (("alice", astronaut_video[0]), ("bob", grace_video[0])):
            (root / "inbox" / person).mkdir()
            shutil.copy(video, root / "inbox" / person / f"{person}.mp4")
        for person in ("alice", "bob"):
            daemon.wait_for(f"{person}'s faces in review/", lambda p=person: (
                root / "review" / p / p / "review.json").exists())
            (root / "approved" / person).mkdir()
            (root / "review" / person / person).rename(root / "approved" / person / person)
        (root / "models" / "m").mkdir()
        toml = root / "models" / "m" / "model.toml"
        toml.write_text('a = "alice"\nb = "bob"\n')
        (root / "targets" / "m").mkdir()
        shutil.copy(astronaut_video[0], root / "targets" / "m" / "clip.mp4")

        # the target waits for the model, with a preview frame made from the current save
        job = daemon.wait_for("the target to wait for its model", lambda: (
            (j := daemon.job_for("clip.mp4")) and str(j["message"]).startswith(
                "waiting for model m") and j))
        preview = root / "models" / "m" / "previews" / f"{job['id']}.jpg"
        daemon.wait_for("a preview frame", preview.exists, timeout=180)
        status, body = daemon.get("/api/status")
        waiting = [j for j in json.loads(body)["queue"] if j["id"] == job["id"]]
        assert status == 200 and waiting and waiting[0]["message"].startswith(
            "waiting for model m (iteration")
        assert waiting[0]["preview"].endswith(f"models/m/previews/{job['id']}.jpg")
        assert daemon.job_for("clip.mp4")["status"] == "queued"  # no conversion before it stops

        # the model stops by itself on its plateau; then the target is converted
        done = daemon.wait_job("clip.mp4", timeout=300)
        assert done["status"] == "done" and done["iterations"] == 32, daemon.log_text()[-3000:]
        model = daemon.model("m")
        assert model["status"] == "stopped" and model["stopped_at"] == 32
        assert "stopped at iteration 32: the loss improved by" in model["stop_reason"]
        assert _manifest(root, "m")["model"]["iterations"] == 32
        assert not preview.exists()  # the preview goes once its target is converted
        page = json.loads(daemon.get("/api/status")[1])
        assert "stopped at iteration 32" in page["models"][0]["stop_reason"]

        # more training allowed: it resumes by itself, stops at the new cap, converts again
        toml.write_text('a = "alice"\nb = "bob"\n[train]\nmax_iterations = 40\n')
        daemon.wait_for("the second conversion", lambda: (
            (j := daemon.job_for("clip.mp4")) and j["id"] != done["id"]
            and j["status"] == "done" and j), timeout=300)
        assert _manifest(root, "m")["model"]["iterations"] == 40
        assert daemon.model("m")["stop_reason"].startswith(
            "stopped at iteration 40: reached max_iterations")
        trains = [j for j in daemon.jobs() if j["kind"] == "train"]
        converts = [j for j in daemon.jobs() if j["kind"] == "convert"]
        assert [(j["status"], j["iterations"]) for j in trains] == [("done", 32), ("done", 40)]
        assert [(j["status"], j["iterations"]) for j in converts] == [("done", 32), ("done", 40)]
        assert sorted(p.name for p in (root / "output" / "m").iterdir()) == [
            "clip_swapped.mp4", "clip_swapped.provenance.json"]
    finally:
        daemon.stop()
