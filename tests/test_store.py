"""The SQLite store: migrations, job transitions with events, restart recovery, readers."""
from __future__ import annotations

import sqlite3

import pytest

from daemon.store import MIGRATIONS, Store


def test_migrations_are_recorded_and_idempotent(tmp_path):
    store = Store(tmp_path / "state.db")
    assert store.migrate() == len(MIGRATIONS)
    again = Store(tmp_path / "state.db")
    rows = again.db.execute("SELECT version FROM migrations").fetchall()
    assert [r[0] for r in rows] == list(range(1, len(MIGRATIONS) + 1))
    assert again.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_jobs_transitions_and_events(tmp_path):
    store = Store(tmp_path / "state.db")
    train = store.add_job("train", "/r/models/m", model="m")
    extract = store.add_job("extract", "/r/inbox/a/v.mp4", person="a")
    assert [j["id"] for j in store.next_job(set())] == [extract, train]  # priority order
    store.transition(extract, "running")
    store.transition(extract, "done", "13 faces")
    job = store.job(extract)
    assert job["status"] == "done" and job["finished_at"] >= job["started_at"]
    events = [r["status"] for r in store.db["events"].rows_where("job_id = ?", [extract])]
    assert events == ["queued", "running", "done"]


def test_interrupted_jobs_are_requeued_until_the_limit(tmp_path):
    from daemon.config import Config, Limits
    from daemon.jobs import Worker

    root = tmp_path / "root"
    target = root / "targets" / "m" / "t.mp4"
    target.parent.mkdir(parents=True)
    target.write_bytes(b"a video")
    store = Store(tmp_path / "state.db")
    job = store.add_job("convert", target, model="m")
    config = Config(root=root, limits=Limits(max_interruptions=2))
    for expected in ("queued", "failed"):  # two crashes while it ran
        store.transition(job, "running")
        store.close()
        store = Store(tmp_path / "state.db")
        Worker(config, store, lambda j: None).resume_interrupted()
        assert store.job(job)["status"] == expected
    row = store.job(job)
    assert row["interruptions"] == 2 and "interrupted 2 times" in row["error"]
    assert not target.exists() and (root / "failed" / "convert" / "t.mp4").exists()
    assert "interrupted 2 times" in (root / "failed" / "convert" / "t.mp4.error.txt").read_text()


def test_a_version_1_database_migrates_with_its_jobs(tmp_path):
    conn = sqlite3.connect(tmp_path / "state.db", isolation_level=None)
    conn.execute("CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied_at REAL)")
    for sql in MIGRATIONS[0]:
        conn.execute(sql)
    conn.execute("INSERT INTO migrations VALUES (1, 0)")
    conn.execute("INSERT INTO jobs (kind, input, status, created_at) VALUES "
                 "('extract', '/r/inbox/a/v.mp4', 'queued', 0)")
    conn.close()
    store = Store(tmp_path / "state.db")
    (job,) = store.next_job(set())
    assert job["retry_at"] is None and job["interruptions"] == 0 and job["retries"] == 0
    store.set_ignored({"/r/inbox/a/notes.txt": "not a video"})
    from web_status.status import StatusReader

    status = StatusReader(tmp_path, tmp_path / "state.db").build()
    assert status["ignored"][0]["reason"] == "not a video"


def test_a_job_waiting_for_a_retry_is_not_picked_before_its_time(tmp_path):
    store = Store(tmp_path / "state.db")
    job = store.add_job("extract", "/r/inbox/a/v.mp4", person="a")
    store.update(job, retry_at=1000.0)
    assert list(store.next_job(set(), now=999.0)) == []
    assert [j["id"] for j in store.next_job(set(), now=1000.0)] == [job]
    assert store.next_retry() == 1000.0


def test_readers_cannot_write(tmp_path):
    store = Store(tmp_path / "state.db")
    store.add_job("extract", "/x.mp4", person="p")
    store.record_loss("m", 250, 0.1, 0.2)
    from web_status.queries import connect, read
    from web_status.status import StatusReader

    conn = connect(tmp_path / "state.db")
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM jobs")
    state = read(conn)
    assert len(state["queue"]) == 1 and state["models"]["m"]["iterations"] == 250
    assert connect(tmp_path / "missing.db") is None
    assert StatusReader(tmp_path, tmp_path / "missing.db").build()["daemon"]["state"] == "not-run"
