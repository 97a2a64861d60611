"""A real Ray cluster on this machine for the cluster tests: a head and a worker node, one CPU
each (``ray.cluster_utils.Cluster``: separate raylets, as on two machines sharing the root)."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

ACTOR_TITLE = b"ray::StageActor"  # the process title Ray gives a job's actor


def start_cluster(workers: int = 1):
    """A head node and ``workers`` worker nodes, one CPU each."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(workers):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    return cluster


def actor_pids() -> list[int]:
    """Process ids of the job actors running now (on any node of this machine)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(ACTOR_TITLE):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def wait_gone(pid: int | None = None, timeout: float = 10.0) -> list[int]:
    """Wait until job actor ``pid`` (any, if None) has exited; the actor pids left."""
    deadline = time.monotonic() + timeout
    while (pids := actor_pids()) and (pid is None or pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return actor_pids()


def kill_actors(timeout: float = 30.0) -> list[int]:
    """kill -9 every job actor (waiting up to ``timeout`` seconds for one to exist)."""
    deadline = time.monotonic() + timeout
    while not (pids := actor_pids()):
        if time.monotonic() > deadline:
            raise AssertionError("no job actor to kill")
        time.sleep(0.1)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids
