"""Faults must never stall the service or lose work: each test causes one for real.

7. the worker survives a locked database and a follow-up hook that raises; a bad value in
   one ``model.toml`` marks that model and nothing else;
8. a child that stops reporting is killed after its deadline; a job cut off three times fails
   with its input in ``failed/``;
9. a full disk (a real tmpfs) keeps the input and retries; training pauses instead;
10. moving a file back from ``failed/`` queues it again, ``touch`` requeues nothing;
11. a kill between the renames of a conversion or a ``best/`` copy loses nothing;
12. 80-character Chinese names work end to end;
13. the watcher does not re-stat settled folders while a file settles, and hashes outside
    the service lock; non-media in ``inbox/`` is ignored, not failed;
14. the native-stderr pump survives a closed stderr;
15. the systemd unit caps memory and tasks.
"""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from daemonproc import FAST, Daemon, cli, init_root

from hotfolders.faceimage import list_faces, read_face_meta

CJK = "中文名字的视频文件" * 9  # 81 characters, 243 bytes in UTF-8


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """One real daemon for the quick fault tests, with a short stall deadline (12 s: above the
    longest silent start-up of a stage child on a busy 2-core machine)."""
    root = init_root(tmp_path_factory.mktemp("faults") / "root",
                     FAST + "stall_seconds = 12\n")
    proc = Daemon(root).start()
    proc.wait_for("the daemon to start", lambda: proc.daemon_row().get("state") == "running")
    yield proc
    try:
        assert proc.alive(), proc.log_text()[-3000:]
    finally:
        proc.stop()


def _running_child(daemon: Daemon, name: str) -> int:
    """The pid of the stage child running the job for ``name``, as soon as there is one (a
    short extraction can finish within a moment of its first progress report)."""
    def found():
        job = daemon.job_for(name)
        kids = daemon.children()
        return job and job["status"] == "running" and kids and kids[0]
    return daemon.wait_for(f"a child running {name}", found, timeout=60)


# --- 7. the worker never dies ------------------------------------------------------------

def test_a_locked_database_and_a_raising_hook_change_no_outcome(tmp_path, monkeypatch,
                                                                 astronaut_video):
    """A real Service (in this process, so the database's busy wait can be shortened): another
    process holds the write lock while a job finishes; the outcome waits, then lands once."""
    from daemon import store as store_module
    from daemon.config import load
    from daemon.service import Service

    monkeypatch.setattr(store_module, "BUSY_SECONDS", 0.5)
    root = init_root(tmp_path / "root")
    service = Service(load(root), serve_web=False)
    service.start()
    hooks = []

    def broken_hook(job, kind):
        hooks.append(job["status"])
        raise RuntimeError("a follow-up that fails")

    service.worker.on_finished = broken_hook
    locker = None
    try:
        (root / "inbox" / "alice").mkdir()
        shutil.copy(astronaut_video[0], root / "inbox" / "alice" / "a.mp4")
        deadline = time.time() + 60
        while not service.store.jobs("status = 'running'"):
            assert time.time() < deadline, "the job did not start"
            time.sleep(0.1)
        locker = sqlite3.connect(service.config.db_path, isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        deadline = time.time() + 60
        while "cannot write the state database" not in service.worker.problem:
            assert time.time() < deadline, "the outcome never met the lock"
            time.sleep(0.1)
        assert (root / "review" / "alice" / "a" / "review.json").exists()  # the work is done
        assert service.worker.alive()
        locker.execute("COMMIT")
        locker.close()
        locker = None
        deadline = time.time() + 30
        while service.store.jobs("status = 'done'") == []:
            assert time.time() < deadline, "the outcome was not recorded after the lock"
            time.sleep(0.1)
        time.sleep(0.5)
        assert hooks == ["done"] and service.worker.alive() and service.worker.problem == ""
        (job,) = service.store.jobs()
        assert job["status"] == "done" and job["attempts"] == 1
        done = service.store.db.execute("SELECT COUNT(*) FROM events WHERE status = 'done'")
        assert done.fetchone()[0] == 1
    finally:
        if locker is not None:
            locker.close()
        service.stop()


def test_a_bad_model_toml_marks_that_model_only(daemon):
    models = daemon.root / "models"
    for name, text in (("lots", 'a = "alice"\nb = "bob"\niterations = "lots"\n'),
                       ("good", 'a = "alice"\nb = "bob"\n')):
        (models / name).mkdir()
        (models / name / "model.toml").write_text(text)
    lots = daemon.wait_for("the bad model's error", lambda: (
        (m := daemon.model("lots")) and m["status"].startswith("error") and m))
    assert "max_iterations must be a whole number" in lots["status"] and "'lots'" in lots["status"]
    good = daemon.wait_for("the good model", lambda: daemon.model("good"))
    assert good["status"] == "waiting for approved faces"
    assert daemon.daemon_row()["state"] == "running"


# --- 8. deadlines and attempts -----------------------------------------------------------

def test_a_child_that_stops_reporting_is_killed_and_failed(daemon, astronaut_video):
    (daemon.root / "inbox" / "stuck").mkdir()
    shutil.copy(astronaut_video[0], daemon.root / "inbox" / "stuck" / "stuck.mp4")
    pid = _running_child(daemon, "stuck.mp4")
    os.kill(pid, signal.SIGSTOP)  # hung: alive, silent
    job = daemon.wait_job("stuck.mp4", timeout=60)
    assert job["status"] == "failed" and "stopped reporting progress for 12 s" in job["error"]
    report = daemon.root / "failed" / "extract" / "stuck.mp4.error.txt"
    assert report.exists() and "stopped reporting progress" in report.read_text()
    deadline = time.time() + 10
    while Path(f"/proc/{pid}").exists() and time.time() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists()  # killed, and reaped


def test_a_job_cut_off_three_times_fails_with_its_input(daemon, astronaut_video):
    (daemon.root / "inbox" / "oom").mkdir()
    shutil.copy(astronaut_video[0], daemon.root / "inbox" / "oom" / "oom.mp4")
    for attempt in range(3):
        pid = _running_child(daemon, "oom.mp4")
        os.kill(pid, signal.SIGKILL)  # what the OOM killer does
        if attempt < 2:
            daemon.wait_for("the retry to be scheduled", lambda: (
                (j := daemon.job_for("oom.mp4"))["status"] == "queued"
                and j["interruptions"] == attempt + 1))
    job = daemon.wait_job("oom.mp4", ("failed",), timeout=60)
    assert "killed by signal 9, 3 times" in job["error"]
    assert job["interruptions"] == 3 and job["attempts"] == 3
    assert not (daemon.root / "inbox" / "oom" / "oom.mp4").exists()
    assert "3 times" in (daemon.root / "failed" / "extract" / "oom.mp4.error.txt").read_text()


# --- 9. transient faults -----------------------------------------------------------------

@pytest.fixture
def tmpfs():
    """Mount small tmpfs file systems (a real ENOSPC); skipped where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(where: Path, size: str) -> None:
        where.mkdir(parents=True, exist_ok=True)
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                 str(where)], capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs to fill a disk here: {result.stderr.strip()}")
        mounted.append(where)

    def resize(where: Path, size: str) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size}", str(where)], check=True)

    mount.resize = resize
    yield mount
    for where in reversed(mounted):
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_keeps_the_input_and_retries(tmp_path, tmpfs, astronaut_video,
                                                 astronaut_faces, grace_faces):
    root = init_root(tmp_path / "root")
    tmpfs(root / "review", "64k")
    tmpfs(root / "models" / "full", "8k")
    daemon = Daemon(root).start()
    try:
        (root / "inbox" / "alice").mkdir()
        shutil.copy(astronaut_video[0], root / "inbox" / "alice" / "alice.mp4")
        job = daemon.wait_for("the extraction to wait for disk space", lambda: (
            (j := daemon.job_for("alice.mp4")) and (j["message"] or "").startswith("waiting")
            and j))
        assert job["status"] == "queued" and "waiting: disk full" in job["message"]
        assert (root / "inbox" / "alice" / "alice.mp4").exists()
        assert not (root / "failed").exists() or not any((root / "failed").rglob("*.mp4"))
        status = cli("status", "--root", str(root))
        assert "waiting: disk full" in status.stdout
        tmpfs.resize(root / "review", "64m")
        assert daemon.wait_job("alice.mp4", timeout=120)["status"] == "done"
        assert len(list_faces(root / "review" / "alice" / "alice")) > 0

        # training: the save hits the full disk and pauses; with room it resumes and finishes
        for person, faces in (("alice", astronaut_faces), ("bob", grace_faces)):
            shutil.copytree(faces, root / "approved" / person / person)
        (root / "models" / "full" / "model.toml").write_text('a = "alice"\nb = "bob"\n')
        model = daemon.wait_for("training to pause on the full disk", lambda: (
            (m := daemon.model("full")) and m["status"] == "paused: disk full" and m),
            timeout=240)
        train = [j for j in daemon.jobs() if j["kind"] == "train"][-1]
        assert train["status"] == "paused" and "disk full" in train["message"]
        tmpfs.resize(root / "models" / "full", "1g")  # a save is about 65 MB
        daemon.wait_for("training to finish", lambda: (
            (m := daemon.model("full")) and m["status"] == "stopped" and m), timeout=240)
        assert model["iterations"] in (None, 0) or model["iterations"] < 20
        assert daemon.model("full")["iterations"] == 20
        assert daemon.term() < 10
    finally:
        daemon.stop()


# --- 10. retry -----------------------------------------------------------------------------

def test_moving_a_file_back_from_failed_queues_it_again(daemon, astronaut_video):
    root = daemon.root
    (root / "inbox" / "rita").mkdir()
    (root / "inbox" / "rita" / "broken.mp4").write_bytes(b"\x00garbage" * 100)
    first = daemon.wait_job("broken.mp4")
    assert first["status"] == "failed"
    (root / "failed" / "extract" / "broken.mp4").rename(root / "inbox" / "rita" / "broken.mp4")
    daemon.wait_for("a second job", lambda: len([j for j in daemon.jobs()
                                                 if j["input"] == first["input"]]) == 2)
    assert daemon.wait_job("broken.mp4")["id"] != first["id"]

    shutil.copy(astronaut_video[0], root / "inbox" / "rita" / "good.mp4")
    assert daemon.wait_job("good.mp4")["status"] == "done"
    os.utime(root / "inbox" / "rita" / "good.mp4")  # touched: same content
    time.sleep(2.5)
    assert len([j for j in daemon.jobs() if j["input"].endswith("good.mp4")]) == 1


# --- 11. crash windows ---------------------------------------------------------------------

class Killed(BaseException):
    """Stands for a kill -9 at one exact point (nothing after it runs)."""


def test_a_kill_between_the_conversion_renames_leaves_no_orphan(tmp_path, monkeypatch,
                                                               model_dir, astronaut_video):
    import hotfolders.convert as convert_module
    from daemon.stages import output_path
    from hotfolders.provenance import manifest_path

    real_replace = os.replace
    calls = []
    out = output_path(tmp_path, "m", astronaut_video[0], "sha")

    def replace_then_die(src, dst):  # os.replace is global: watch only the final renames
        if Path(dst) in (out, manifest_path(out)):
            calls.append(Path(dst))
            if len(calls) == 2:
                raise Killed()
        real_replace(src, dst)

    out.parent.mkdir(parents=True)
    monkeypatch.setattr(convert_module.os, "replace", replace_then_die)
    with pytest.raises(Killed):
        convert_module.convert(astronaut_video[0], model_dir, out, label=False)
    monkeypatch.setattr(convert_module.os, "replace", real_replace)
    assert calls[0] == manifest_path(out) and calls[1] == out
    assert manifest_path(out).exists() and not out.exists()  # never a video without manifest
    again = output_path(tmp_path, "m", astronaut_video[0], "sha")
    assert again == out  # the rerun takes the same name: no -2 duplicate
    convert_module.convert(astronaut_video[0], model_dir, again, label=False)
    assert out.exists() and manifest_path(out).exists()
    assert sorted(p.name for p in out.parent.iterdir() if not p.name.startswith(".")) == [
        out.name, manifest_path(out).name]


def test_a_kill_between_the_renames_of_best_loses_nothing(tmp_path, monkeypatch, model_dir):
    from hotfolders import model as model_module

    folder = tmp_path / "m"
    shutil.copytree(model_dir, folder)
    for dest in (folder / model_module.BEST, folder / "snapshots" / "40"):
        model_module.copy_save(folder, dest)  # an existing copy to replace
        before = sorted(p.name for p in dest.iterdir())
        real_replace = os.replace

        def park_then_die(src, dst, calls=[]):
            calls.append(dst)
            real_replace(src, dst)
            if len(calls) == 1:
                raise Killed()

        monkeypatch.setattr(model_module.os, "replace", park_then_die)
        with pytest.raises(Killed):
            model_module.copy_save(folder, dest)
        monkeypatch.setattr(model_module.os, "replace", real_replace)
        assert not dest.exists()  # only the parked copy is left
        model_module.clean_temporary(folder)  # what the next load or training start does
        assert sorted(p.name for p in dest.iterdir()) == before


# --- 12. long names ----------------------------------------------------------------------

def test_80_character_chinese_names_work_end_to_end(daemon, astronaut_video):
    root = daemon.root
    person = CJK[:40]
    (root / "inbox" / person).mkdir()
    good, bad = f"{CJK}.mp4", f"{CJK}坏.mp4"
    shutil.copy(astronaut_video[0], root / "inbox" / person / good)
    (root / "inbox" / person / bad).write_bytes(b"\x00not a video" * 50)
    assert daemon.wait_job(good)["status"] == "done"
    (folder,) = (root / "review" / person).iterdir()
    assert len(os.fsencode(folder.name)) <= 150 and folder.name.startswith(CJK[:20])
    faces = list_faces(folder)
    assert faces and all(len(os.fsencode(f.name)) <= 255 for f in faces)
    assert read_face_meta(faces[0])["source"] == good  # the full name stays in the metadata
    job = daemon.wait_job(bad)
    assert job["status"] == "failed"
    moved = Path(job["output"])
    assert moved.exists() and moved.parent == root / "failed" / "extract"
    report = Path(f"{moved}.error.txt").read_text()
    assert bad in report and "not a readable video" in report


# --- 13. watcher cost --------------------------------------------------------------------

def test_settling_rescans_only_what_changed(tmp_path, monkeypatch):
    from daemon import watcher as watcher_module

    root = tmp_path
    big = root / "approved" / "big" / "set"
    big.mkdir(parents=True)
    for i in range(2000):
        (big / f"{i:05d}.png").write_bytes(b"x")
    (root / "inbox" / "alice").mkdir(parents=True)
    signed: list[Path] = []
    real = watcher_module._signature
    monkeypatch.setattr(watcher_module, "_signature", lambda p: signed.append(p) or real(p))
    taken = []
    watch = watcher_module.Watcher(root, taken.append, settle_seconds=0.3)
    watch.scan_once(full=True)
    time.sleep(0.4)
    watch.scan_once(full=True)
    assert [c.path for c in taken] == [big]  # settled and handed on
    growing = root / "inbox" / "alice" / "clip.mp4"
    signed.clear()
    for i in range(8):  # a file being copied: an event, and a rescan, each time
        with growing.open("ab") as fh:
            fh.write(b"more")
        watch.touched(os.fsencode(growing))
        watch.scan_once(full=False)
    assert big not in signed and signed.count(growing) == 8
    time.sleep(0.4)
    watch.scan_once(full=False)
    assert [c.path for c in taken] == [big, growing]
    watch.scan_once(full=True)  # the periodic safety net still looks at everything
    assert big in signed


def test_hashing_a_dropped_file_does_not_hold_the_service_lock(tmp_path, monkeypatch):
    from daemon import service as service_module
    from daemon.config import Config
    from daemon.store import Store
    from daemon.watcher import Candidate

    root = tmp_path / "root"
    service = service_module.Service(Config(root=root), serve_web=False)
    service.store = Store(root / ".facedrop" / "state.db")
    (root / "inbox" / "alice").mkdir(parents=True)
    (root / "inbox" / "alice" / "big.mp4").write_bytes(b"x" * 1000)
    free_while_hashing = []
    real = service_module.sha256_file

    def hashing(path, progress=None):
        def try_lock() -> None:  # another thread (the worker, the page) wants the lock
            got = service.lock.acquire(timeout=1)
            if got:
                service.lock.release()
            free_while_hashing.append(got)

        other = threading.Thread(target=try_lock)
        other.start()
        other.join()
        return real(path)

    monkeypatch.setattr(service_module, "sha256_file", hashing)
    service.on_ready(Candidate("extract", root / "inbox" / "alice" / "big.mp4", "alice"))
    assert free_while_hashing == [True] and len(service.store.jobs()) == 1
    service.store.close()


def test_non_media_in_the_inbox_is_ignored_not_failed(daemon):
    root = daemon.root
    (root / "inbox" / "nina").mkdir()
    (root / "inbox" / "nina" / "notes.txt").write_text("shot on Tuesday")
    (root / "inbox" / "loose.mp4").write_bytes(b"x")  # not in a person folder
    ignored = daemon.wait_for("notes.txt to be listed", lambda: (
        (found := daemon.ignored()) and str(root / "inbox" / "nina" / "notes.txt") in found
        and found))
    assert "not a video" in ignored[str(root / "inbox" / "nina" / "notes.txt")]
    assert "sub-folder named for the person" in ignored[str(root / "inbox" / "loose.mp4")]
    time.sleep(1.0)
    assert (root / "inbox" / "nina" / "notes.txt").exists()
    assert daemon.job_for("notes.txt") is None and daemon.job_for("loose.mp4") is None


# --- 14, 15 ------------------------------------------------------------------------------

def test_the_stderr_pump_survives_a_closed_stderr():
    """A child filters native stderr, then its reader goes away: later writes to fd 2 and log
    lines must not block (the pipe keeps being drained)."""
    code = (
        "import logging, os, sys, time\n"
        "from hotfolders import quiet\n"
        "quiet.filter_native_stderr()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"                 # the parent closes our stderr meanwhile
        "for i in range(2000):\n"
        "    os.write(2, b'native line %d padding padding padding padding padding\\n' % i)\n"
        "    logging.getLogger('x').error('log line %d', i)\n"
        "print('finished', flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.stderr.close()  # the terminal or journal went away
        proc.stderr = None
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, _ = proc.communicate(timeout=60)  # a blocked fd 2 would hang here
        assert out.strip() == "finished"
        # 120: Python could not flush its own stderr at exit (it is gone), not a hang
        assert proc.returncode in (0, 120)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_unit_caps_memory_and_tasks():
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "facedrop.service").read_text()
    settings = dict(line.split("=", 1) for line in unit.splitlines()
                    if "=" in line and not line.startswith("#"))
    assert settings["MemoryHigh"] and settings["MemoryMax"] and int(settings["TasksMax"]) > 0
    assert settings["OOMPolicy"] == "continue"
