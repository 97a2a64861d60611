"""The real daemon as a subprocess on a temp root: the whole hot-folder workflow.

inbox (slow copy, corrupt file, duplicate) -> review -> approved -> model.toml -> training
(kill -9 mid-way, restart) -> target -> output; every job ends done exactly once; SIGTERM
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
[convert]
label = true
"""


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.log = root.parent / "daemon.log"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run", "--root", str(self.root), "--port", "0"],
            stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)  # the daemon and its stage child
        self.proc.wait(10)

    def term(self) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(60)
        return time.monotonic() - started

    def jobs(self) -> list[dict]:
        db = self.root / ".facedrop" / "state.db"
        if not db.exists():
            return []
        conn = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in conn.execute("SELECT * FROM jobs ORDER BY id")]
        except sqlite3.OperationalError:
            return []
        finally:
            conn.close()

    def wait_for(self, what: str, check, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"daemon exited while waiting for {what}:\n{self.log.read_text()[-3000:]}")
            if check():
                return
            time.sleep(0.25)
        pytest.fail(f"timed out waiting for {what}; jobs: {self.jobs()}\n{self.log.read_text()[-3000:]}")


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


def test_hot_folder_workflow_survives_kill_and_restart(tmp_path, astronaut_video, grace_video):
    root = tmp_path / "root"
    subprocess.run([sys.executable, "-m", "daemon.cli", "init", str(root)], check=True,
                   capture_output=True)
    (root / "facedrop.toml").write_text(CONFIG)
    daemon = Daemon(root)
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
        output = root / "output" / "a2b" / "clip_swapped.mp4"
        daemon.wait_for("training to finish and the target to convert", lambda: output.exists()
                        and any(j["kind"] == "train" and j["status"] == "done" for j in daemon.jobs()),
                        timeout=300)
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
                    ("extract", "alice.mp4"), ("extract", "bob.mp4"), ("train", "a2b")]
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
