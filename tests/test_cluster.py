"""Jobs on a real Ray cluster (a head and a worker node on this machine, one CPU each): the
ray executor runs the same stages, the daemon stays the one writer of state, and a worker
killed mid-job costs a rerun, never a lost or doubled result."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
from daemonproc import FAST, Daemon, init_root
from raycluster import actor_pids, kill_actors, wait_gone

pytestmark = pytest.mark.slow


def ray_config(cluster, jobs: int = 2) -> str:
    return FAST + f'[cluster]\nexecutor = "ray"\naddress = "{cluster.address}"\njobs = {jobs}\n'


def test_the_ray_executor_runs_a_stage_on_a_node_and_reports_back(tmp_path, ray_cluster,
                                                                   astronaut_video):
    from daemon.ray_executor import RayExecutor
    from daemon.stages import ExtractParams

    root = tmp_path / "root"
    video = root / "inbox" / "alice" / "a.mp4"
    video.parent.mkdir(parents=True)
    shutil.copy(astronaut_video[0], video)
    executor = RayExecutor(ray_cluster.address, root)
    executor.connect()
    try:
        assert executor.nodes_blind_to_root() == []  # both nodes read the daemon's probe
        assert executor.needs("extract") == {"num_cpus": 1.0}
        assert executor.needs("train") == {"num_cpus": 1.0}  # no GPU in this cluster: none asked
        run = executor.start("extract", ExtractParams(str(root), str(video), "alice",
                                                      every_n=10, size=96, min_size=32))
        messages = []
        deadline = time.monotonic() + 180
        while run.alive() and time.monotonic() < deadline:
            message = run.receive(0.2)
            if message is not None:
                messages.append(message)
        assert run.where and "(" in run.where  # host name (address)
        assert messages[0] == ("progress", {"message": "starting extract"})
        assert messages[-1][0] == "done", messages[-1]
        assert run.finish(10) == 0
        assert len(list((root / "review" / "alice" / "a").glob("*.png"))) == 5
        assert not wait_gone()  # the job's actor went with its job
    finally:
        executor.close()


def test_jobs_run_on_the_cluster_in_parallel_and_survive_killed_workers(
        tmp_path, ray_cluster, astronaut_video):
    """Two extractions at once (one per node); a worker killed mid-extraction and one killed
    mid-training: each job runs again, and every job is done exactly once, nothing lost or
    doubled (every frame's face once, every training step once)."""
    from media import make_video

    root = init_root(tmp_path / "root", ray_config(ray_cluster).replace(
        "every_n = 10", "every_n = 2").replace("iterations = 20", "iterations = 40"))
    daemon = Daemon(root, web=False)
    daemon.start()
    try:
        for person in ("alice", "bob"):
            (root / "inbox" / person).mkdir()
        # 8 s at every 2nd frame: 100 faces, long enough for the kill to land mid-way
        make_video(root / "inbox" / "alice" / ".long.mp4", seconds=8.0)
        (root / "inbox" / "alice" / ".long.mp4").rename(root / "inbox" / "alice" / "long.mp4")
        # bob's too: with a 2 s video his work ran for under a second between his first
        # progress report and his end, a window a loaded machine's polling could miss
        make_video(root / "inbox" / "bob" / ".bob.mp4", "grace", seconds=6.0, audio_hz=660.0)
        (root / "inbox" / "bob" / ".bob.mp4").rename(root / "inbox" / "bob" / "bob.mp4")
        daemon.wait_for("both extractions to run at once", lambda: sum(
            j["kind"] == "extract" and j["status"] == "running" and (j["done"] or 0) >= 1
            for j in daemon.jobs()) == 2, timeout=180)
        assert all(j["node"] for j in daemon.jobs() if j["status"] == "running")
        daemon.wait_for("alice's extraction to be under way", lambda: (
            j := daemon.job_for("long.mp4")) and j["status"] == "running" and (j["done"] or 0) >= 5)
        killed = kill_actors()
        assert killed
        long_faces = root / "review" / "alice" / "long"
        daemon.wait_for("alice's extraction, run again", lambda: (
            long_faces / "review.json").exists(), timeout=240)
        daemon.wait_job("bob.mp4", timeout=120)

        # approve both; train, and kill the training worker between two saves
        for person, stem in (("alice", "long"), ("bob", "bob")):
            (root / "approved" / person).mkdir()
            (root / "review" / person / stem).rename(root / "approved" / person / stem)
        (root / "models" / "a2b").mkdir()
        (root / "models" / "a2b" / "model.toml").write_text('a = "alice"\nb = "bob"\n')
        state = root / "models" / "a2b" / "state.json"
        daemon.wait_for("a first training save", lambda: state.exists() and 10 <= json.loads(
            state.read_text())["iterations"] < 40, timeout=300)
        kill_actors()
        daemon.wait_for("training to finish after the kill", lambda: any(
            j["kind"] == "train" and j["status"] == "done" for j in daemon.jobs()), timeout=300)
        assert daemon.term() < 15
    finally:
        daemon.stop()

    jobs = daemon.jobs()
    done = sorted((j["kind"], Path(j["input"]).name) for j in jobs if j["status"] == "done")
    assert done == [("clean", "bob"), ("clean", "long"), ("extract", "bob.mp4"),
                    ("extract", "long.mp4"), ("train", "a2b")]
    assert not [j for j in jobs if j["status"] != "done"]
    by_input = {Path(j["input"]).name: j for j in jobs}
    assert by_input["long.mp4"]["attempts"] == 2  # killed once, run again
    assert by_input["a2b"]["attempts"] >= 2
    assert all(j["node"] for j in jobs)  # each job says where it ran
    assert len(list((root / "approved" / "alice" / "long").glob("*.png"))) == 100
    rows = (root / "models" / "a2b" / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 41))  # resumed from its save
    log = daemon.log_text()
    assert "was lost (its worker or node died)" in log
    assert not actor_pids()


def test_a_job_waiting_for_a_gpu_pauses_only_the_training_that_started_last(tmp_path):
    """The policy over several slots, with an executor whose cluster has no GPU free: the
    worker passes over a conversion it cannot place for an extraction it can, never runs two
    jobs of one model at once, and asks one training (the newest) to make room."""
    from dataclasses import replace

    from daemon.config import Config
    from daemon.executor import LocalExecutor
    from daemon.jobs import Worker
    from daemon.store import Store

    class NoGpuFree(LocalExecutor):
        def has_room(self, kind):
            return kind not in ("convert", "train")

    config = Config(root=tmp_path)
    config = replace(config, cluster=replace(config.cluster, jobs=4))
    store = Store(tmp_path / "state.db")
    worker = Worker(config, store, lambda job: {}, executor=NoGpuFree())
    older = store.add_job("train", tmp_path / "models" / "m1", model="m1")
    newer = store.add_job("train", tmp_path / "models" / "m2", model="m2")
    for job_id in (older, newer):
        worker._start(store.job(job_id), {})
    convert = store.add_job("convert", tmp_path / "targets" / "m3" / "t.mp4", model="m3")
    extract = store.add_job("extract", tmp_path / "inbox" / "alice" / "a.mp4", person="alice")
    assert worker._pick()[0]["id"] == extract  # the conversion has no room: passed over
    assert worker._should_yield(store.job(newer)) is True
    assert worker._should_yield(store.job(older)) is False
    # work on a training's own model waits for it, and that training yields to it
    own = store.add_job("convert", tmp_path / "targets" / "m1" / "t.mp4", model="m1")
    worker._running.pop(newer)
    assert worker._blockers(store.job(own)) == {older}
    assert worker._should_yield(store.job(older)) is True
    store.db["jobs"].update(convert, {"status": "done"})
    store.db["jobs"].update(own, {"status": "done"})
    assert worker._should_yield(store.job(older)) is False  # an extraction has room: no pause
    store.close()


def test_a_restarted_daemon_attaches_to_the_jobs_its_predecessor_left_running(
        tmp_path, ray_cluster):
    """kill -9 of the daemon (the control plane) mid-extraction: the stage carries on in its
    actor on the cluster, and the restarted daemon attaches to it instead of running it
    again; the job ends done once, in its first attempt, every face written once."""
    from media import make_video

    root = init_root(tmp_path / "root", ray_config(ray_cluster, jobs=1).replace(
        "every_n = 10", "every_n = 2"))
    (root / "inbox" / "alice").mkdir()
    make_video(root / "inbox" / "alice" / ".long.mp4", seconds=8.0)
    (root / "inbox" / "alice" / ".long.mp4").rename(root / "inbox" / "alice" / "long.mp4")
    daemon = Daemon(root, web=False)
    daemon.start()
    try:
        daemon.wait_for("the extraction to be under way", lambda: (
            j := daemon.job_for("long.mp4")) and j["status"] == "running" and (j["done"] or 0) >= 5,
            timeout=180)
        daemon.kill9()
        (worker_pid,) = actor_pids()  # the stage outlived its daemon
        daemon.start()
        daemon.wait_for("the job to be done", lambda: daemon.job_for("long.mp4")["status"] == "done",
                        timeout=240)
        assert worker_pid not in wait_gone(worker_pid)  # the attached actor ended with its job
    finally:
        daemon.stop()
    (job,) = daemon.jobs()
    assert job["attempts"] == 1 and job["interruptions"] == 0  # attached, not run again
    assert "attached to it" in daemon.log_text()
    assert len(list((root / "review" / "alice" / "long").glob("*.png"))) == 100
