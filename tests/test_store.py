"""The SQLite store: migrations, job transitions with events, restart recovery, readers."""
from __future__ import annotations

import sqlite3

import pytest

from daemon.store import MIGRATIONS, Store, read_only, snapshot


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


def test_interrupted_jobs_are_requeued(tmp_path):
    store = Store(tmp_path / "state.db")
    job = store.add_job("convert", "/r/targets/m/t.mp4", model="m")
    store.transition(job, "running")
    store.close()
    restarted = Store(tmp_path / "state.db")
    assert restarted.requeue_interrupted() == 1
    assert restarted.job(job)["status"] == "queued"


def test_readers_cannot_write(tmp_path):
    store = Store(tmp_path / "state.db")
    store.add_job("extract", "/x.mp4", person="p")
    store.record_loss("m", 250, 0.1, 0.2)
    conn = read_only(tmp_path / "state.db")
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("DELETE FROM jobs")
    state = snapshot(tmp_path / "state.db")
    assert len(state["queue"]) == 1 and state["models"][0]["iterations"] == 250
    assert snapshot(tmp_path / "missing.db")["daemon"] is None
