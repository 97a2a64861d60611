"""The watcher: only settled files are taken, litter and temp names are ignored."""
from __future__ import annotations

import os
import threading
import time

from daemon.watcher import Candidate, SettleTracker, Watcher, ignored, list_hot_folders


def test_ignored_names():
    for name in (".DS_Store", "._clip.mp4", "clip.mp4.part", "clip.crdownload", "clip.mp4~",
                 ".hidden.mp4", "Thumbs.db", "desktop.ini", "@eaDir", "__MACOSX", "x.tmp"):
        assert ignored(name), name
    assert not ignored("clip.mp4") and not ignored("my video (1).mov")


def test_candidates_by_folder(tmp_path):
    for path in ("inbox/alice/a.mp4", "inbox/alice/.DS_Store", "inbox/alice/b.mp4.part",
                 "targets/m/t.mp4", "targets/m/t.toml", "models/m/model.toml",
                 "models/n/readme.txt"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x")
    (tmp_path / "approved/bob/src").mkdir(parents=True)
    listing = list_hot_folders(tmp_path)
    found = {(c.kind, c.path.relative_to(tmp_path).as_posix(), c.owner)
             for c in listing.candidates}
    assert found == {("extract", "inbox/alice/a.mp4", "alice"),
                     ("convert", "targets/m/t.mp4", "m"), ("train", "models/m/model.toml", "m"),
                     ("clean", "approved/bob/src", "bob")}
    assert not listing.ignored  # t.toml is that target's own settings, not litter


def test_an_entry_gone_since_the_listing_is_not_reported_but_a_dangling_link_is(
        tmp_path, monkeypatch):
    """A training save renamed between the folder's listing and its stat is a race, not a
    problem to report (it was logged as "a link to nothing" at every save); a link whose
    target is missing is reported."""
    from daemon import watcher

    (tmp_path / "models/m/save").mkdir(parents=True)
    (tmp_path / "models/m/model.toml").write_text("x")
    (tmp_path / "inbox/alice").mkdir(parents=True)
    (tmp_path / "inbox/alice/gone.mp4").symlink_to(tmp_path / "inbox/alice/missing.mp4")
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path).endswith("models/m/save"):  # renamed away by the trainer just now
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(watcher.os, "stat", stat)
    listing = list_hot_folders(tmp_path)
    assert {c.path.name for c in listing.candidates} == {"model.toml"}
    assert listing.ignored == {str(tmp_path / "inbox/alice/gone.mp4"): "a link to nothing"}


def test_a_growing_file_is_not_settled(tmp_path):
    path = tmp_path / "f.mp4"
    path.write_bytes(b"a")
    cand = Candidate("extract", path, "alice")
    tracker = SettleTracker(settle_seconds=5)
    assert tracker.update([cand], now=100.0) == ([], True)
    with path.open("ab") as fh:
        fh.write(b"more")
    assert tracker.update([cand], now=104.0) == ([], True)   # changed: clock restarts
    assert tracker.update([cand], now=108.0) == ([], True)   # 4 s unchanged
    assert tracker.update([cand], now=109.1) == ([cand], False)


def test_watcher_hands_on_each_settled_file_once(tmp_path):
    for name in ("inbox", "approved", "models", "targets"):
        (tmp_path / name).mkdir()
    got: list[Candidate] = []
    seen = threading.Event()

    def on_ready(c: Candidate) -> None:
        got.append(c)
        seen.set()

    watcher = Watcher(tmp_path, on_ready, settle_seconds=0.5, rescan_seconds=30)
    watcher.start()
    try:
        (tmp_path / "inbox/alice").mkdir()
        target = tmp_path / "inbox/alice/clip.mp4"
        with target.open("wb") as fh:  # a slow copy: 8 chunks 0.2 s apart
            for _ in range(8):
                fh.write(os.urandom(1000))
                fh.flush()
                time.sleep(0.2)
                assert not got, "a file still being written was taken"
        assert seen.wait(10)
        time.sleep(1.0)
        assert [c.path for c in got] == [target]  # once, not on every rescan
    finally:
        watcher.stop()
