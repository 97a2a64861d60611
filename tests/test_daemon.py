"""The real daemon as a subprocess on a temp root: the whole hot-folder workflow.

inbox (slow copy, corrupt file, duplicate) -> review -> approved -> model.toml -> training
(kill -9 mid-way, restart) -> target (kill -9 mid-conversion, restart) -> output; every job
ends done exactly once (the target is converted early, then again once its model stopped); SIGTERM
stops within a few seconds.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemonproc import Daemon

pytestmark = pytest.mark.slow

CONFIG = """settle_seconds = 0.6
rescan_seconds = 5
min_free_gb = 0.0
[extract]
every_n = 2
size = 128
[train]
batch_size = 4
iterations = 60
save_every = 10
precision = "float32"
threads = "shared"
[convert]
label = true
convert_when = "first-save"
"""


def _slow_copy(src: Path, dst: Path, chunks: int = 6, pause: float = 0.3, watch=None) -> None:
    data = src.read_bytes()
    step = len(data) // chunks + 1
    with dst.open("wb") as fh:
        for i in range(0, len(data), step):
            fh.write(data[i:i + step])
            fh.flush()
            time.sleep(pause)
            if watch:
                watch()


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_hot_folder_workflow_survives_kill_and_restart(tmp_path, astronaut_video, grace_video,
                                                       executor, request):
    """The same workflow with jobs in child processes of the daemon, and on a Ray cluster (a
    head and a worker node on this machine, two jobs at once)."""
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "daemon.cli", "init", str(root)], check=True,
                   capture_output=True)
    config = CONFIG.replace('threads = "shared"', 'threads = "auto"')  # timed in workers
    if executor == "ray":
        cluster = request.getfixturevalue("ray_cluster")
        config += f'[cluster]\nexecutor = "ray"\naddress = "{cluster.address}"\njobs = 2\n'
    (root / "facedrop.toml").write_text(config)
    daemon = Daemon(root, web=True)
    daemon.start()
    try:
        # 1. a corrupt video, then a slowly copied good one, then a duplicate of it
        (root / "inbox" / "alice").mkdir()
        (root / "inbox" / "alice" / "broken.mp4").write_bytes(b"\x00\x01garbage" * 500)
        daemon.wait_for("the corrupt file to fail",
                        lambda: (root / "failed" / "extract" / "broken.mp4.error.txt").exists())
        error = (root / "failed" / "extract" / "broken.mp4.error.txt").read_text()
        assert "broken.mp4" in error and "not a readable video" in error and "to do:" in error

        def not_taken_yet() -> None:
            assert not [j for j in daemon.jobs() if "alice.mp4" in j["input"]], \
                "a partially copied file was taken"

        _slow_copy(astronaut_video[0], root / "inbox" / "alice" / "alice.mp4", watch=not_taken_yet)
        (root / "inbox" / "bob").mkdir()
        shutil.copy(grace_video[0], root / "inbox" / "bob" / "bob.mp4")
        daemon.wait_for("bob.mp4 to be queued",
                        lambda: any(j["input"].endswith("bob.mp4") for j in daemon.jobs()))
        shutil.copy(grace_video[0], root / "inbox" / "bob" / "bob-again.mp4")  # same content
        for person, stem in (("alice", "alice"), ("bob", "bob")):
            daemon.wait_for(f"{person}'s faces in review/",
                            lambda p=person, s=stem: (root / "review" / p / s / "review.json").exists())
        assert not (root / "review" / "bob" / "bob-again").exists()
        faces = sorted((root / "review" / "alice" / "alice").glob("*.png"))
        assert len(faces) == 25 and faces[0].name.startswith("0001_")  # sorted for review
        report = json.loads((root / "review" / "alice" / "alice" / "review.json").read_text())
        assert report["folder"] == "alice"  # its final name, not the staging folder's

        # 2. the person deletes two faces and approves; a model is declared
        faces[0].unlink()
        faces[1].unlink()
        for person, stem in (("alice", "alice"), ("bob", "bob")):
            (root / "approved" / person).mkdir()
            (root / "review" / person / stem).rename(root / "approved" / person / stem)
        (root / "models" / "a2b").mkdir()
        (root / "models" / "a2b" / "model.toml").write_text('a = "alice"\nb = "bob"\n')
        (root / "targets" / "a2b").mkdir()
        shutil.copy(astronaut_video[0], root / "targets" / "a2b" / "clip.mp4")

        # 3. kill -9 in the middle of training, then restart
        state = root / "models" / "a2b" / "state.json"
        daemon.wait_for("a first training save", lambda: state.exists()
                        and 10 <= json.loads(state.read_text())["iterations"] < 60)
        daemon.kill9()
        assert [j["status"] for j in daemon.jobs() if j["kind"] == "train"] == ["running"]
        daemon.start()

        # 4. kill -9 in the middle of the conversion (it runs first: it outranks training)
        output = root / "output" / "a2b" / "clip_swapped.mp4"
        daemon.wait_for("the conversion to be under way", lambda: any(
            j["kind"] == "convert" and j["status"] == "running" and (j["done"] or 0) >= 3
            for j in daemon.jobs()), timeout=120)
        daemon.kill9()
        assert not output.exists()  # only a hidden temp name: nothing a user could take
        assert all(p.name.startswith(".") for p in (root / "output" / "a2b").iterdir())
        daemon.start()
        daemon.wait_for("training to finish and the target to convert", lambda: output.exists()
                        and any(j["kind"] == "train" and j["status"] == "done" for j in daemon.jobs()),
                        timeout=300)
        # converted early (convert_when = "first-save"), then again once the model stopped
        daemon.wait_for("the conversion with the finished model", lambda: json.loads(
            output.with_name("clip_swapped.provenance.json").read_text())["model"][
            "iterations"] == 60, timeout=300)
        status = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--root", str(root),
                                 "--json"], capture_output=True, text=True, check=True)
        report = json.loads(status.stdout)
        assert report["models"][0]["iterations"] == 60
        elapsed = daemon.term()
        assert elapsed < 10, f"SIGTERM took {elapsed:.1f} s"
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.kill9()

    jobs = daemon.jobs()
    done = sorted((j["kind"], Path(j["input"]).name) for j in jobs if j["status"] == "done")
    assert done == [("clean", "alice"), ("clean", "bob"), ("convert", "clip.mp4"),
                    ("convert", "clip.mp4"), ("extract", "alice.mp4"), ("extract", "bob.mp4"),
                    ("train", "a2b")]
    assert [(j["kind"], Path(j["input"]).name) for j in jobs if j["status"] == "failed"] == [
        ("extract", "broken.mp4")]
    assert not [j for j in jobs if j["status"] in ("queued", "running", "paused")]
    approved = sorted((root / "approved" / "alice" / "alice").glob("*.png"))
    assert len(approved) == 23 and not approved[0].name.startswith("0")  # names restored
    assert (root / "output" / "a2b" / "clip_swapped.provenance.json").exists()
    assert sorted(p.name for p in (root / "output" / "a2b").iterdir()) == [
        "clip_swapped.mp4", "clip_swapped.provenance.json"]  # no temp file left
    rows = (root / "models" / "a2b" / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 61))  # no lost or doubled steps
    early, final = [j for j in jobs if j["kind"] == "convert"]
    # killed with the daemon and run again; on Ray the conversion outlived the daemon and the
    # restarted one attached to it instead
    assert early["attempts"] == (2 if executor == "local" else 1) and early["output"] == str(root / "output" / "a2b" /
                                                             "clip_swapped.mp4")
    assert early["iterations"] < 60 and (final["iterations"], final["output"]) == (
        60, early["output"])  # the same name: the output moved on with its model
    assert _done_events(root) == {j["id"]: 1 for j in jobs if j["status"] == "done"}
    # what the training chose reaches the service's log, with the job's number (stage logs
    # travel to the daemon through its executor, locally and on Ray alike)
    log_text = (root / ".facedrop" / "facedrop.log").read_text()
    train = next(j for j in jobs if j["kind"] == "train")
    assert f"job {train['id']} (train): training a2b (lightweight, precision" in log_text
    assert f"job {train['id']} (train): threads auto: measured " in log_text
    assert f"job {train['id']} (train): convolutions: " in log_text
    assert f"job {train['id']} (train): saved a2b at iteration 60" in log_text


def _done_events(root: Path) -> dict[int, int]:
    """How many times each job was recorded done (the events table keeps every transition)."""
    conn = sqlite3.connect(f"{(root / '.facedrop' / 'state.db').as_uri()}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT job_id, COUNT(*) FROM events WHERE status = 'done' "
                                 "GROUP BY job_id").fetchall())
    finally:
        conn.close()


def test_kill_during_extraction_then_restart_extracts_exactly_once(tmp_path):
    from media import make_video

    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "daemon.cli", "init", str(root)], check=True,
                   capture_output=True)
    (root / "facedrop.toml").write_text(CONFIG.replace("every_n = 2", "every_n = 1"))
    (root / "inbox" / "alice").mkdir()
    # 200 frames: long enough that the kill lands mid-way however fast the machine is
    make_video(root / "inbox" / "alice" / ".alice.mp4", seconds=8.0)
    (root / "inbox" / "alice" / ".alice.mp4").rename(root / "inbox" / "alice" / "alice.mp4")
    partial = root / "review" / "alice" / ".alice.partial"
    final = root / "review" / "alice" / "alice"
    daemon = Daemon(root, web=True)
    daemon.start()
    try:
        daemon.wait_for("extraction to be under way", lambda: any(
            j["kind"] == "extract" and j["status"] == "running" and (j["done"] or 0) >= 3
            for j in daemon.jobs()), timeout=120)
        daemon.kill9()
        assert partial.is_dir() and not final.exists()  # half-done work only under a temp name
        assert [j["status"] for j in daemon.jobs()] == ["running"]
        daemon.start()
        daemon.wait_for("the restarted extraction", lambda: (final / "review.json").exists(),
                        timeout=120)
        daemon.wait_for("the job to be recorded done",
                        lambda: [j["status"] for j in daemon.jobs()] == ["done"])
        status = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--root", str(root),
                                 "--json"], capture_output=True, text=True, check=True)
        report = json.loads(status.stdout)
        assert report["counts"]["jobs"] == {"done": 1} and report["daemon"]["state"] == "running"
        assert daemon.term() < 10
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.kill9()
    (job,) = daemon.jobs()
    assert job["attempts"] == 2 and job["output"] == str(final)
    assert not partial.exists()
    assert len(list(final.glob("*.png"))) == 200  # every frame once: nothing lost or doubled
    assert sorted(p.name for p in (root / "review" / "alice").iterdir()) == ["alice"]


def test_scheduler_window_edges_and_housekeeping(tmp_path):
    from daemon.config import Config, Train
    from daemon.scheduler import Scheduler, housekeeping
    from daemon.store import Store

    root = tmp_path / "root"
    store = Store(root / ".facedrop" / "state.db")
    night = Config(root=root, train=Train(window="22:00-07:00"))
    edges: list[bool] = []
    sched = Scheduler(night, store, edges.append)
    sched.start()
    try:
        assert sched.jobs() == ["housekeeping", "window-close", "window-open"]
        trigger = {j.id: str(j.trigger) for j in sched.scheduler.get_jobs()}
        assert "hour='22', minute='0'" in trigger["window-open"]
        assert "hour='7', minute='0'" in trigger["window-close"]
        sched._edge(False)
        assert edges == [False]
    finally:
        sched.stop()
    always = Scheduler(Config(root=root), store, edges.append)
    always.start()
    assert always.jobs() == ["housekeeping"]
    always.stop()

    # what a kill -9 leaves: an extraction temp folder and a conversion temp file
    partial = root / "review" / "alice" / ".clip.partial"
    partial.mkdir(parents=True)
    (partial / "0001.png").write_bytes(b"x")
    part = root / "output" / "a2b" / ".clip_swapped.123.part.mp4"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x")
    keep = [root / "review" / "alice" / "clip", root / "output" / "a2b" / "clip_swapped.mp4"]
    keep[0].mkdir()
    keep[1].write_bytes(b"x")
    now = time.time()
    assert housekeeping(root, store, min_age=3600, now=now) == []  # too recent: maybe in use
    job = store.add_job("extract", root / "inbox" / "alice" / "clip.mp4", person="alice")
    store.transition(job, "running")
    assert housekeeping(root, store, min_age=0, now=now + 10) == [part]  # extraction runs
    store.transition(job, "done")
    assert housekeeping(root, store, min_age=0, now=now + 10) == [partial]
    assert not partial.exists() and not part.exists() and all(p.exists() for p in keep)
    store.close()


def test_sd_notify_protocol_of_the_real_daemon(tmp_path, monkeypatch):
    """READY, STATUS, WATCHDOG and STOPPING arrive on $NOTIFY_SOCKET (abstract namespace)."""
    import socket

    from daemon.sdnotify import notify

    name = f"facedrop-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(30)
    root = tmp_path / "root"
    env = dict(os.environ, NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="1000000")
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run", "--root", str(root),
                             "--no-web"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    messages: list[str] = []
    try:
        while not any("WATCHDOG=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert any("READY=1" in m for m in messages)
        assert any(m.startswith("STATUS=") or "\nSTATUS=" in m for m in messages)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        while not any("STOPPING=1" in m for m in messages):
            messages.append(sock.recv(4096).decode())
        assert proc.wait(10) == 0 and time.monotonic() - started < 5
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        sock.close()
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False  # not under systemd: a no-op


def test_duplicates_are_skipped_but_a_failed_input_may_be_retried(tmp_path):
    """Intake on a real store and real files: same content twice -> one job, unless it failed."""
    from daemon.config import Config
    from daemon.service import Service
    from daemon.store import Store
    from daemon.watcher import Candidate

    root = tmp_path / "root"
    service = Service(Config(root=root), serve_web=False)
    service.store = Store(root / ".facedrop" / "state.db")
    inbox = root / "inbox" / "alice"
    inbox.mkdir(parents=True)
    for name in ("a.mp4", "a-copy.mp4"):
        (inbox / name).write_bytes(b"same bytes")
        service.on_ready(Candidate("extract", inbox / name, "alice"))
    service.on_ready(Candidate("extract", inbox / "a.mp4", "alice"))  # a repeated event
    (job,) = service.store.jobs()
    assert Path(job["input"]).name == "a.mp4"
    service.store.transition(job["id"], "failed", "the disk was full")
    (inbox / "a.mp4").unlink()
    (inbox / "again.mp4").write_bytes(b"same bytes")
    service.on_ready(Candidate("extract", inbox / "again.mp4", "alice"))
    assert [Path(j["input"]).name for j in service.store.jobs()] == ["a.mp4", "again.mp4"]
    (inbox / "third.mp4").write_bytes(b"same bytes")  # the retry is queued: a duplicate again
    service.on_ready(Candidate("extract", inbox / "third.mp4", "alice"))
    assert len(service.store.jobs()) == 2
    service.store.close()


def test_disk_almost_full_pauses_new_work_with_a_clear_status(tmp_path):
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "daemon.cli", "init", str(root)], check=True,
                   capture_output=True)
    (root / "facedrop.toml").write_text(CONFIG.replace("min_free_gb = 0.0",
                                                      "min_free_gb = 1000000000.0"))
    (root / "inbox" / "alice").mkdir()
    (root / "inbox" / "alice" / "clip.mp4").write_bytes(b"not started while the disk is full")
    daemon = Daemon(root, web=True)
    daemon.start()
    try:
        daemon.wait_for("the file to be queued", lambda: len(daemon.jobs()) == 1, timeout=60)
        time.sleep(3)  # the worker had time to start it, and must not have
        assert [j["status"] for j in daemon.jobs()] == ["queued"]
        status = subprocess.run([sys.executable, "-m", "daemon.cli", "status", "--root", str(root)],
                                capture_output=True, text=True, check=True)
        assert "disk almost full" in status.stdout and "new work paused" in status.stdout
        second = subprocess.run([sys.executable, "-m", "daemon.cli", "run", "--root", str(root),
                                 "--no-web"], check=False, capture_output=True, text=True,
                                timeout=60)
        assert second.returncode == 1 and "already running" in second.stderr
        assert f"pid {daemon.proc.pid}" in second.stderr
        assert [j["status"] for j in daemon.jobs()] == ["queued"]
        assert daemon.term() < 10
    finally:
        if daemon.proc and daemon.proc.poll() is None:
            daemon.kill9()


def test_same_name_other_content_gets_its_own_folder_and_output(tmp_path):
    """clip.mp4 and clip.mov (other content) must not be mistaken for one source; the same
    content found finished (a restart after a kill -9) is not done twice."""
    from daemon.stages import output_path, review_folder
    from hotfolders import alignments as al
    from hotfolders.provenance import manifest_path

    root = tmp_path
    first, done = review_folder(root, "alice", "clip", "aaa")
    assert (first, done) == (root / "review" / "alice" / "clip", False)
    first.mkdir(parents=True)
    al.save(al.Alignments(source={"name": "clip.mp4", "sha256": "aaa"}),
            first / al.ALIGNMENTS_NAME)
    assert review_folder(root, "alice", "clip", "aaa") == (first, True)
    assert review_folder(root, "alice", "clip", "bbb") == (root / "review" / "alice" / "clip-2",
                                                           False)
    approved = root / "approved" / "alice" / "clip"  # approved meanwhile: still the same source
    approved.parent.mkdir(parents=True)
    first.rename(approved)
    assert review_folder(root, "alice", "clip", "aaa") == (approved, True)
    assert review_folder(root, "alice", "clip", "bbb")[0].name == "clip-2"

    out = output_path(root, "m", Path("clip.mp4"), "aaa")
    assert out == root / "output" / "m" / "clip_swapped.mp4"
    out.parent.mkdir(parents=True)
    out.write_bytes(b"mp4")
    manifest_path(out).write_text(json.dumps({"input": {"name": "clip.mp4", "sha256": "aaa"}}))
    assert output_path(root, "m", Path("clip.mp4"), "aaa") == out  # a rerun replaces it
    assert output_path(root, "m", Path("clip.mov"), "bbb").name == "clip-2_swapped.mp4"
    photo = root / "output" / "m" / "face_swapped.png"  # a photo target's output
    photo.write_bytes(b"png")
    assert output_path(root, "m", Path("face.jpg"), "ccc").name == "face-2_swapped.mp4"


def test_a_hung_loop_withholds_the_watchdog_keep_alive(tmp_path):
    """health() reports a worker or watcher loop that stopped (the wait loop then stops
    sending WATCHDOG=1, so systemd restarts a daemon that would otherwise hang silently)."""
    from daemon.config import Config
    from daemon.service import STUCK_SECONDS, Service

    service = Service(Config(root=tmp_path / "root", min_free_gb=0.0), serve_web=False)
    service.start()
    try:
        assert service.health() == ""
        service.worker.last_tick -= STUCK_SECONDS + 1
        assert "worker" in service.health()
        service.worker.last_tick = time.monotonic()
        service.watcher.stop()
        assert "watcher" in service.health()
    finally:
        service.stop()


def test_training_waits_outside_its_window_and_yields_to_other_work(tmp_path):
    """The worker's own checks (a missed scheduler edge must not let training run at noon)."""
    from daemon.config import Config, Train
    from daemon.jobs import Worker
    from daemon.store import Store

    now = time.localtime()
    minute = now.tm_hour * 60 + now.tm_min
    start, end = (minute + 120) % 1440, (minute + 180) % 1440
    closed = f"{start // 60:02d}:{start % 60:02d}-{end // 60:02d}:{end % 60:02d}"
    store = Store(tmp_path / "state.db")
    train = store.add_job("train", tmp_path / "models" / "m", model="m")
    params = lambda job: {"kind": job["kind"]}
    night = Worker(Config(root=tmp_path, train=Train(window=closed)), store, params)
    assert night._pick() is None  # the only job is training, and the window is closed
    assert night._should_yield(store.job(train))  # a running one would save and pause
    always = Worker(Config(root=tmp_path), store, params)
    picked = always._pick()
    assert picked[0]["id"] == train
    always._start(*picked)
    assert not always._should_yield(store.job(train))
    convert = store.add_job("convert", tmp_path / "targets" / "m" / "t.mp4", model="m")
    assert always._pick() is None  # not while its model trains ...
    assert always._should_yield(store.job(train))  # ... which yields: conversion outranks it
    always._running.pop(train)  # the training saved and paused
    assert always._pick()[0]["id"] == convert
    store.close()


def test_a_target_waits_for_its_model_and_converts_with_whatever_save_it_has_left(
        tmp_path, model_dir):
    """``convert_when``: a target waits (saying why) until its model stopped by itself, or
    from its first save; the daemon loads what the engine loads (a model whose save/ and
    save.bak/ are gone but whose best/ or a snapshot is there converts instead of waiting
    forever); a target's own ``<stem>.toml`` sets its convert options, and a bad one fails
    that target with the file and the key named."""
    from dataclasses import replace

    from daemon.config import Config
    from daemon.service import Service
    from daemon.store import Store
    from hotfolders.errors import InputError
    from hotfolders.model import BACKUP, SAVE, read_state, rewrite_state

    root = tmp_path / "root"
    shutil.copytree(model_dir, root / "models" / "m")
    target = root / "targets" / "m" / "t.mp4"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"a video")
    config = Config(root=root)
    service = Service(config, serve_web=False)
    service.store = Store(root / ".facedrop" / "state.db")
    job = service.store.job(service.store.add_job("convert", target, model="m"))
    stopped = read_state(root / "models" / "m")  # trained to its cap: it stopped by itself
    assert stopped["stopped"]["reason"] == "iterations"
    state = {**stopped, "stopped": None}
    rewrite_state(root / "models" / "m", state)  # as if it were still training
    assert service.params(job) is None  # training has not stopped: it waits, saying why
    assert service.store.job(job["id"])["message"] == (
        "waiting for model m (iteration 40, converts when it stops)")
    rewrite_state(root / "models" / "m", stopped)
    params = service.params(job)
    assert params.model_dir == str(root / "models" / "m") and params.convert["erode"] == 0
    assert params.convert["blur"] is None and params.convert["label"] is True  # "auto": None

    target.with_suffix(".toml").write_text("erode = 3\ncolor = 'match-hist'\n")
    own = service.params(job).convert
    assert (own["erode"], own["color"], own["mask"]) == (3, "match-hist", "extended")
    target.with_suffix(".toml").write_text("label = false\n")
    with pytest.raises(InputError, match="convert.label may only be set in facedrop.toml"):
        service.params(job)
    target.with_suffix(".toml").unlink()

    rewrite_state(root / "models" / "m", state)  # not stopped again: early results asked for
    service.config = replace(config, convert=replace(config.convert, convert_when="first-save"))
    for name in (SAVE, BACKUP):
        shutil.rmtree(root / "models" / "m" / name, ignore_errors=True)
    assert (root / "models" / "m" / "best").is_dir()
    assert service.params(job) is not None  # best/ is enough, as for `facedrop convert`
    shutil.rmtree(root / "models" / "m" / "best")
    shutil.rmtree(root / "models" / "m" / "snapshots", ignore_errors=True)
    assert service.params(job) is None  # nothing to load: it waits for a save
    assert "no save yet" in service.store.job(job["id"])["message"]
    service.store.close()


def test_a_stopped_model_resumes_only_when_it_may_train_further(tmp_path):
    """A model that stopped by itself stays stopped until its cap, its stop settings or the
    approved faces of its people change; a cap it has reached already keeps it stopped."""
    from daemon.config import Config
    from daemon.service import Service
    from daemon.store import Store
    from hotfolders.atomic import write_json

    root = tmp_path / "root"
    for person in ("alice", "bob"):
        (root / "approved" / person / "s1").mkdir(parents=True)
        (root / "approved" / person / "s1" / "f.png").write_bytes(b"png")
    folder = root / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "model.toml").write_text('a = "alice"\nb = "bob"\n[train]\nmax_iterations = 100\n')
    service = Service(Config(root=root), serve_web=False)
    service.store = store = Store(root / ".facedrop" / "state.db")
    store.upsert_model("m", a="alice", b="bob")

    def trains() -> int:
        """Queue what should be queued, finish it at once; how many training jobs so far."""
        service.maybe_train("m")
        for job in store.jobs("kind = 'train' AND status = 'queued'"):
            store.transition(job["id"], "done")
        return len(store.jobs("kind = 'train'"))

    def stop_at(iteration: int, reason: str = "plateau") -> None:
        write_json(folder / "state.json", {"trainer": "lightweight", "iterations": iteration,
                                           "stopped": {"reason": reason,
                                                       "iteration": iteration}})

    assert trains() == 1  # a new model trains
    stop_at(60)
    assert trains() == 1 and store.model("m")["status"] == "stopped"
    assert store.model("m")["stopped_at"] == 60
    (root / "approved" / "alice" / "s2").mkdir()
    (root / "approved" / "alice" / "s2" / "g.png").write_bytes(b"png")
    assert trains() == 2  # new faces approved: it resumes
    stop_at(80)
    assert trains() == 2
    (folder / "model.toml").write_text('a = "alice"\nb = "bob"\n[train]\nmax_iterations = 80\n')
    assert trains() == 2  # a changed cap it has reached already
    (folder / "model.toml").write_text('a = "alice"\nb = "bob"\n[train]\nmax_iterations = 500\n'
                                       'batch_size = 8\n')
    assert trains() == 3  # raised: it resumes
    stop_at(500, "iterations")
    (folder / "model.toml").write_text('a = "alice"\nb = "bob"\n[train]\nmax_iterations = 500\n'
                                       'batch_size = 4\n')
    assert trains() == 3  # other settings than the stop's do not restart it
    store.close()


def test_the_worker_runs_jobs_through_its_executor(tmp_path, astronaut_video):
    """The seam a cluster executor plugs into (daemon/executor.py): the worker starts each
    job's stage through its executor and learns everything from the messages it carries; a
    wrapped local executor sees the job start and every message, and the store the outcome."""
    import shutil

    from daemon.config import Config
    from daemon.executor import LocalExecutor
    from daemon.jobs import Worker
    from daemon.stages import ExtractParams
    from daemon.store import Store

    class Recording(LocalExecutor):
        def __init__(self) -> None:
            super().__init__()
            self.started, self.messages = [], []

        def start(self, kind, params, key=None):
            run = super().start(kind, params, key)
            self.started.append((kind, params))
            receive, messages = run.receive, self.messages

            def recorded(timeout):
                message = receive(timeout)
                if message is not None:
                    messages.append(message[0])
                return message

            run.receive = recorded
            return run

    root = tmp_path / "root"
    video = root / "inbox" / "alice" / "a.mp4"
    video.parent.mkdir(parents=True)
    shutil.copy(astronaut_video[0], video)
    store = Store(tmp_path / "state.db")
    job = store.add_job("extract", video, person="alice")
    params = ExtractParams(str(root), str(video), "alice", every_n=10, size=96, min_size=32)
    executor = Recording()
    worker = Worker(Config(root=root), store, lambda j: params if j["status"] == "queued"
                    else None, executor=executor)
    worker._start(store.job(job), params)
    assert store.job(job)["status"] == "running"
    worker._run(store.job(job), params)
    assert executor.started == [("extract", params)]
    assert executor.messages[0] == "progress" and executor.messages[-1] == "done"
    done = store.job(job)
    assert done["status"] == "done" and done["finished_at"] is not None
    assert done["node"] == "local"
    assert list((root / "review" / "alice").rglob("*.png"))
    store.close()


def test_a_stage_hands_facedrops_own_log_records_to_the_daemon(tmp_path, monkeypatch):
    """facedrop's own records (INFO and up) go to the daemon as messages, in order with the
    stage's progress and outcome, and not to the process's stderr as well; other libraries'
    records are not sent; the loggers are as before once the stage is over (a Ray worker
    process runs more than one)."""
    import logging

    from daemon import stages
    from daemon.stages import Control, ExtractParams, run_stage

    def stage(params, progress, control):
        logging.getLogger("hotfolders.training").info("precision %s", "bfloat16")
        logging.getLogger("hotfolders.training").debug("not at INFO")
        logging.getLogger("tensorflow").warning("someone else's")
        progress({"event": "save", "iteration": 1})  # an event: sent at once
        return {"message": "ok"}

    monkeypatch.setattr(stages, "STAGES", {"extract": stage})
    monkeypatch.setenv("FACEDROP_VERBOSE", "0")
    own = logging.getLogger("hotfolders")
    before = (list(own.handlers), own.level, own.propagate)
    sent: list[tuple] = []
    params = ExtractParams(str(tmp_path), str(tmp_path / "a.mp4"), "alice", every_n=1, size=96,
                           min_size=32)
    run_stage("extract", params, sent.append, Control())
    assert [m[0] for m in sent] == ["progress", "log", "progress", "done"]
    assert sent[1] == ("log", logging.INFO, "hotfolders.training", "precision bfloat16")
    assert (list(own.handlers), own.level, own.propagate) == before


def test_a_stage_that_reports_without_pause_still_hears_the_stop_request(tmp_path):
    """A training that sends a message on every look (progress, log lines) must not starve
    the worker's own checks: on shutdown the stop request goes out and the job is queued
    again, instead of training on to its last iteration while the daemon waits."""
    from daemon.config import Config
    from daemon.jobs import Worker
    from daemon.store import Store

    class Chatty:
        where = "local"

        def __init__(self) -> None:
            self.stop_heard = False
            self.sent = 0

        def receive(self, timeout):
            self.sent += 1
            if self.stop_heard:
                return ("done", {"message": "stopped", "iterations": self.sent,
                                 "stopped_because": "stop request"})
            if self.sent > 5000:
                return ("done", {"message": "ran to the end", "iterations": self.sent,
                                 "stopped_because": "iterations"})
            return ("log", 20, "hotfolders.training", f"step {self.sent}") if self.sent % 2 \
                else ("progress", {"done": self.sent, "total": 5000})

        def send(self, message):
            self.stop_heard = self.stop_heard or message == "stop"

        def alive(self):
            return True

        def finish(self, timeout):
            return 0

    store = Store(tmp_path / "state.db")
    (tmp_path / "models" / "m").mkdir(parents=True)
    job = store.add_job("train", tmp_path / "models" / "m", person="m")
    worker = Worker(Config(root=tmp_path), store, lambda j: None)
    worker._start(store.job(job), None)
    run = Chatty()
    worker.stopping.set()
    worker._run(store.job(job), None, run=run)  # a run already started (as after a restart)
    assert run.stop_heard and run.sent < 100
    assert store.job(job)["status"] == "queued"
    store.close()
