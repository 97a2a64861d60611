"""The threat model, readable in one place: whoever can write into a hot folder is untrusted.

Hot folders are often shared or synced, so each test here drops what an attacker (or a broken
sync client) could drop into them, through the real daemon (one per module, with its status
page on loopback and a systemd notify socket) or the real CLI, and checks the outcome:

1. names stored in files never become paths (``clean``, ``sort --undo``);
2. symbolic links out of the root are never read, moved, written or deleted through, and are
   listed on the page as ignored; links inside the root keep working;
3. only regular files are opened (a FIFO named like a video, a ``model.toml``, a
   ``review.json`` or a ``loss.csv`` hangs nothing);
4. bombs are refused before they cost memory (a 400-megapixel PNG, deeply nested or oversized
   TOML);
5. the page answers only to its own host names (DNS rebinding);
6. control characters in names never reach the notify socket, the log or the terminal raw;

and a property-based test throws generated names at the watcher and the stages.
"""
from __future__ import annotations

import os
import shutil
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import pytest
from daemonproc import Daemon, cli, files_under, init_root
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hotfolders.faceimage import face_name, list_faces, png_chunk, read_face_meta, replace_meta

pytestmark = pytest.mark.slow

INJECTED = "clip\nWATCHDOG=trigger\nSTATUS=forged\x1b[2J.mp4"


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder outside the root that the daemon user could write: it must never change."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "victim").mkdir()
    (folder / "victim" / "clip.mp4").write_bytes(b"somebody else's video")
    (folder / "secret.txt").write_text("private")
    (folder / "faces").mkdir()
    (folder / "faces" / "face.png").write_bytes(b"not yours")
    (folder / "model").mkdir()
    (folder / "model" / "model.toml").write_text('a = "alice"\nb = "bob"\n')
    return folder


class Notifications:
    """A systemd notify socket (abstract namespace) that keeps every datagram it gets."""

    def __init__(self) -> None:
        self.name = f"facedrop-hostile-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.5)
        self.messages: list[bytes] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped.is_set():
            try:
                self.messages.append(self.sock.recv(65536))
            except OSError:
                continue

    def close(self) -> None:
        self.stopped.set()
        self.thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def hostile(tmp_path_factory, outside):
    """One real daemon with its page and a notify socket, shared by the tests of this module
    (each uses its own person and model names)."""
    root = init_root(tmp_path_factory.mktemp("hostile") / "root")
    notes = Notifications()
    daemon = Daemon(root, web=True, env={"NOTIFY_SOCKET": "@" + notes.name,
                                         "WATCHDOG_USEC": "2000000"}).start()
    daemon.notes = notes
    daemon.outside_before = files_under(outside)
    daemon.wait_for("the daemon to start", lambda: daemon.daemon_row().get("state") == "running")
    yield daemon
    try:
        assert daemon.alive(), "the daemon died:\n" + daemon.log_text()[-3000:]
        assert files_under(outside) == daemon.outside_before, "something outside the root changed"
    finally:
        daemon.stop()
        notes.close()


def _assert_outside_untouched(daemon: Daemon, outside: Path) -> None:
    assert files_under(outside) == daemon.outside_before
    assert daemon.alive()


# --- 1. names stored in files ------------------------------------------------------------

HOSTILE_NAMES = ["../../../outside.png", "../../.facedrop/state.db", "/tmp/facedrop-abs.png",
                 ".hidden.png", "-rf.png\n", "sub/dir.png", "..png", "face.PNG/.."]


def _sorted_copy(faces: Path, dest: Path, hostile_names: list[str]) -> list[Path]:
    """``faces`` copied to ``dest`` as a review would leave them (ranked names), with the
    first faces' stored ``original_name`` replaced by ``hostile_names``."""
    shutil.copytree(faces, dest)
    copied = list_faces(dest)
    for i, path in enumerate(copied):
        meta = read_face_meta(path)
        if i < len(hostile_names):
            meta["original_name"] = hostile_names[i]
            path.write_bytes(replace_meta(path.read_bytes(), meta))
        path.rename(dest / f"{i + 1:04d}_{path.name}")
    return copied


def test_names_stored_in_faces_never_become_paths(hostile, outside, astronaut_faces):
    root = hostile.root
    staging = root.parent / "staging-eve"
    originals = _sorted_copy(astronaut_faces, staging, HOSTILE_NAMES)
    (root / "approved" / "eve").mkdir(parents=True)
    staging.rename(root / "approved" / "eve" / "astro")
    job = hostile.wait_job("astro")
    assert job["status"] == "done", job
    folder = root / "approved" / "eve" / "astro"
    names = sorted(p.name for p in list_faces(folder))
    expected = sorted(face_name("astronaut", int(read_face_meta(p)["frame"]),
                                int(read_face_meta(p)["face"])) for p in list_faces(folder))
    assert names == expected == sorted(p.name for p in originals)  # extraction names
    assert not Path("/tmp/facedrop-abs.png").exists()
    assert not (root.parent / "outside.png").exists() and not (root / "outside.png").exists()
    assert hostile.jobs(), "state.db must still be readable (it was not overwritten)"
    log = hostile.log_text()
    assert "ignored the name" in log and "'../../.facedrop/state.db'" in log
    _assert_outside_untouched(hostile, outside)


def test_sort_undo_takes_no_names_from_its_record(tmp_path, astronaut_faces):
    import json

    folder = tmp_path / "faces"
    shutil.copytree(astronaut_faces, folder)
    before = sorted(p.name for p in list_faces(folder))
    cli("sort", "--by", "dark", "--no-report", str(folder))
    record_path = folder / ".facedrop-sort.json"
    record = json.loads(record_path.read_text())
    for entry, bad in zip(record["files"], ["../escaped.png", str(tmp_path / "abs.png"),
                                            "../../x.png", ".hidden.png"]):
        entry["old"] = bad
    record_path.write_text(json.dumps(record))
    result = cli("sort", "--undo", str(folder), check=False)
    assert result.returncode == 0, result.stderr
    assert "ignored the name" in result.stderr
    assert sorted(p.name for p in list_faces(folder)) == before  # extraction names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


# --- 2. links out of the root ------------------------------------------------------------

def test_links_out_of_the_root_are_never_followed(hostile, outside, astronaut_video):
    root = hostile.root
    links = {
        root / "inbox" / "mallory": outside / "victim",                 # a person folder
        root / "targets" / "mallory": outside / "victim",               # a model's targets
        root / "approved" / "mallory": outside / "faces",               # a person's sets
        root / "models" / "mallory": outside / "model",                 # a model folder
    }
    (root / "inbox" / "alice").mkdir(exist_ok=True)
    (root / "targets" / "m").mkdir(parents=True, exist_ok=True)
    (root / "approved" / "bob").mkdir(parents=True, exist_ok=True)
    links[root / "inbox" / "alice" / "link.mp4"] = outside / "victim" / "clip.mp4"
    links[root / "targets" / "m" / "link.mp4"] = outside / "victim" / "clip.mp4"
    links[root / "approved" / "bob" / "set"] = outside / "faces"
    for link, target in links.items():
        link.symlink_to(target)
    # extraction output through a review/ link out of the root: refused, nothing written
    (root / "review" / "zoe").symlink_to(outside / "victim")
    (root / "inbox" / "zoe").mkdir()
    # a link that stays inside the root keeps working
    library = root / "library"
    library.mkdir()
    shutil.copy(astronaut_video[0], library / "carol.mp4")
    (root / "inbox" / "carol").mkdir()
    (root / "inbox" / "carol" / "carol.mp4").symlink_to(library / "carol.mp4")
    shutil.copy(astronaut_video[0], root / "inbox" / "zoe" / "zoe.mp4")

    ignored = hostile.wait_for("every outside link to be listed as ignored", lambda: (
        (found := hostile.ignored()) and all(str(p) in found for p in links) and found))
    for link in links:
        assert "outside the facedrop root" in ignored[str(link)], ignored[str(link)]
    assert hostile.wait_job("carol.mp4")["status"] == "done"
    assert len(list_faces(root / "review" / "carol" / "carol")) > 0
    zoe = hostile.wait_job("zoe.mp4")
    assert zoe["status"] == "failed" and "outside the facedrop root" in zoe["error"]
    assert (root / "failed" / "extract" / "zoe.mp4.error.txt").exists()
    assert not any(hostile.job_for(p.name) for p in links if p.name != "set")
    assert hostile.model("mallory") is None
    status, page = hostile.get("/")
    assert status == 200 and b"outside the facedrop root" in page
    assert b"inbox/alice/link.mp4" in page
    _assert_outside_untouched(hostile, outside)
    for link in links:
        assert link.is_symlink()  # left where it was, for a person to look at


# --- 3. only regular files ---------------------------------------------------------------

def test_fifos_are_never_opened(hostile, outside):
    root = hostile.root
    fifos = [root / "inbox" / "fred" / "x.png", root / "inbox" / "fred" / "clip.mp4",
             root / "models" / "fifo" / "model.toml", root / "targets" / "m" / "t.mp4"]
    page_fifos = [root / "review" / "fred" / "set" / "review.json",
                  root / "review" / "fred" / "set" / "0001_face.png",
                  root / "models" / "fifo" / "loss.csv", root / "models" / "fifo" / "state.json",
                  root / "failed" / "extract" / "x.mp4.error.txt"]
    for fifo in fifos + page_fifos:
        fifo.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(fifo)
    ignored = hostile.wait_for("the FIFOs to be listed as ignored", lambda: (
        (found := hostile.ignored()) and all(str(p) in found for p in fifos) and found))
    assert all("FIFO" in ignored[str(p)] for p in fifos)
    started = time.monotonic()
    for path in ("/", "/api/status", "/models/fifo/loss.svg",
                 "/thumb/review/fred/set/0001_face.png?s=96", "/file/models/fifo/loss.csv"):
        status, _ = hostile.get(path, timeout=20)
        assert status in (200, 404), (path, status)
    assert time.monotonic() - started < 20
    assert hostile.get("/")[0] == 200
    status = cli("status", "--root", str(root), timeout=60)
    assert "FIFO" in status.stdout
    _assert_outside_untouched(hostile, outside)


# --- 4. bombs ----------------------------------------------------------------------------

def _png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A small PNG whose header declares ``width`` x ``height`` RGB pixels."""
    row = b"\x00" + b"\x00" * (width * 3)
    idat = zlib.compress(row * 8, 9)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                    8, 2, 0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_bombs_are_refused_before_they_cost_memory(hostile, outside):
    root = hostile.root
    bomb = _png_bomb()
    (root / "inbox" / "gina").mkdir()
    (root / "inbox" / "gina" / "bomb.png").write_bytes(bomb)
    job = hostile.wait_job("bomb.png")
    assert job["status"] == "failed" and "megapixels" in job["error"], job
    report = (root / "failed" / "extract" / "bomb.png.error.txt").read_text()
    assert "400 megapixels" in report and "bomb.png" in report

    review = root / "review" / "gina" / "set"
    review.mkdir(parents=True)
    (review / "0001_bomb.png").write_bytes(bomb)
    peak = _peak_rss_mb(hostile.proc.pid)
    status, _ = hostile.get("/thumb/review/gina/set/0001_bomb.png?s=96")
    assert status == 404
    assert hostile.get("/")[0] == 200
    assert _peak_rss_mb(hostile.proc.pid) - peak < 300  # decoding it would cost 1.2 GB

    models = root / "models"
    (models / "deep").mkdir()
    (models / "deep" / "model.toml").write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    (models / "huge").mkdir()
    (models / "huge" / "model.toml").write_text('a = "alice"\nb = "bob"\n' + "# pad\n" * 20000)
    (models / "notutf8").mkdir()
    (models / "notutf8" / "model.toml").write_bytes(b'a = "\xff\xfe"\n')
    deep = hostile.wait_for("the deep model.toml's error", lambda: (
        (m := hostile.model("deep")) and m["status"].startswith("error") and m))
    assert "nested too deeply" in deep["status"]
    huge = hostile.wait_for("the huge model.toml's error", lambda: (
        (m := hostile.model("huge")) and m["status"].startswith("error") and m))
    assert "64.0 KB" in huge["status"]
    bad = hostile.wait_for("the non-UTF-8 model.toml's error", lambda: (
        (m := hostile.model("notutf8")) and m["status"].startswith("error") and m))
    assert "UTF-8" in bad["status"]
    for path in ("/", "/api/status", "/models/deep/loss.svg"):
        assert hostile.get(path)[0] in (200, 404), path
    assert hostile.get("/")[0] == 200
    _assert_outside_untouched(hostile, outside)


# --- 5. DNS rebinding --------------------------------------------------------------------

def test_the_page_answers_only_to_its_own_host_names(hostile):
    port = hostile.url().rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert hostile.get("/healthz", host=host)[0] == 200, host
    for host in ("evil.example", f"evil.example:{port}", f"127.0.0.1.evil.example:{port}",
                 "", "[::1", f"localhost.evil:{port}"):
        status, body = hostile.get("/api/status", host=host)
        assert status == 421 and b"allowed_hosts" in body, host
    assert hostile.get("/file/output/x.mp4", host="evil.example")[0] == 421


# --- 6. control characters ---------------------------------------------------------------

def test_control_characters_never_reach_notify_log_or_terminal(hostile, astronaut_video):
    root = hostile.root
    (root / "inbox" / "hank").mkdir()
    shutil.copy(astronaut_video[0], root / "inbox" / "hank" / INJECTED)
    job = hostile.wait_job(INJECTED)
    assert job["status"] == "done", job
    hostile.wait_for("a heartbeat after the job", lambda: any(
        b"WATCHDOG=1" in m for m in hostile.notes.messages[-3:]), timeout=30)
    lines = [line for m in hostile.notes.messages for line in m.split(b"\n")]
    assert b"WATCHDOG=trigger" not in lines and b"STATUS=forged\x1b[2J.mp4" not in lines
    assert any(b"clip\\x0aWATCHDOG=trigger" in line for line in lines)  # shown, escaped
    for text in (hostile.log_text(), (root / ".facedrop" / "facedrop.log").read_text()):
        assert "\x1b" not in text
        assert not any(line.startswith(("WATCHDOG=trigger", "STATUS=forged"))
                       for line in text.splitlines())
    status = cli("status", "--root", str(root))
    assert "\x1b" not in status.stdout and "\nWATCHDOG=trigger" not in status.stdout


def test_notify_escapes_each_state():
    from daemon.sdnotify import notify

    notes = Notifications()
    try:
        os.environ["NOTIFY_SOCKET"] = "@" + notes.name
        assert notify(f"STATUS=extract {INJECTED}")
    finally:
        del os.environ["NOTIFY_SOCKET"]
    deadline = time.monotonic() + 5
    while not notes.messages and time.monotonic() < deadline:
        time.sleep(0.05)
    notes.close()
    (message,) = notes.messages
    assert message.count(b"\n") == 0 and message.startswith(b"STATUS=extract clip\\x0a")


# --- generated names ---------------------------------------------------------------------

SPECIAL = ["-rf", "--help", "..a", "a..", "clip\nWATCHDOG=1", "\u202eevil", "中" * 80,
           "x" * 200, " leading space", "tab\tname", "bell\x07", "ünïcödé", "😀" * 30]


def _name(max_bytes: int):
    """Names a file system accepts: no ``/`` or NUL, not ``.``/``..``, at most ``max_bytes``."""
    generated = st.text(st.characters(blacklist_categories=("Cs",),
                                      blacklist_characters="/\x00"), min_size=1, max_size=60)
    return (st.one_of(generated, st.sampled_from(SPECIAL))
            .filter(lambda n: n not in (".", "..") and len(os.fsencode(n)) <= max_bytes))


@settings(max_examples=6, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(drops=st.lists(st.tuples(_name(200), _name(200), st.sampled_from([".mp4", ".txt", ""])),
                      min_size=1, max_size=6, unique_by=lambda d: (d[0], d[1] + d[2])))
def test_generated_names_never_escape_or_stall(hostile, outside, drops):
    from daemon.watcher import ignored as litter

    root = hostile.root
    expected = []
    for i, (person, stem, suffix) in enumerate(drops):
        folder = root / "inbox" / person
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / (stem + suffix)
        if path.exists():
            continue
        path.write_bytes(f"not a video {time.monotonic_ns()} {i}".encode())
        hidden = litter(person) or person.startswith(".") or litter(path.name)
        expected.append((path, hidden))

    def settled() -> bool:
        ignored = hostile.ignored()
        for path, hidden in expected:
            if hidden:
                continue
            if str(path) in ignored:
                continue
            job = next((j for j in hostile.jobs() if j["input"] == str(path)), None)
            if job is None or job["status"] != "failed":
                return False
            moved = Path(job["output"])
            if not moved.exists() or not Path(f"{moved}.error.txt").exists():
                return False
        return True

    hostile.wait_for("every generated drop to fail or be ignored", settled, timeout=120)
    time.sleep(1.0)  # hidden and temporary names: given the time to be (wrongly) taken
    for path, hidden in expected:
        if hidden:
            assert path.exists() and not any(j["input"] == str(path) for j in hostile.jobs())
    for path, _ in expected:
        if path.parent.exists() and not path.exists():
            continue
        path.unlink(missing_ok=True)
    for path, _ in expected:
        shutil.rmtree(path.parent, ignore_errors=True)
    assert hostile.alive()
    assert hostile.get("/")[0] == 200
    _assert_outside_untouched(hostile, outside)
    assert sorted(p.name for p in root.parent.iterdir()) == ["root", "root-daemon.log"]
