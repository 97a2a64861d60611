"""What running jobs on Ray costs and buys, measured in one run on this machine.

1. Per-job overhead: the same small extraction (2 s of video, every 5th frame: 10 faces) run
   one after another through the local executor (a spawned child per job) and through the ray
   executor (an actor per job on a one-node cluster started here); the difference per job, in
   seconds, and the ratio.
2. Throughput: N such jobs started at once on a cluster of one worker node, then of two, then
   of one again (one CPU each, as ``ray.cluster_utils`` runs them on one machine); jobs per
   minute and the speed-up of the second worker. On a 2-core machine the second worker can at best double it;
   the jobs' own decode and TensorFlow threads share the same two cores.

    python bench/cluster.py [--jobs 6] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))  # before bench/: bench/daemon.py is not the daemon package
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from hotfolders import quiet  # noqa: E402

quiet.silence(False)
quiet.filter_native_stderr()  # the local executor's children inherit it


def _params(root: Path, video: Path, n: int):
    from daemon.stages import ExtractParams

    person = f"p{n}"
    copy = root / "inbox" / person / f"clip{n}.mp4"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(video, copy)
    return ExtractParams(str(root), str(copy), person, every_n=5, size=96, min_size=32)


def drain(runs: list) -> None:
    """Wait for every run's outcome (any failure stops the benchmark)."""
    pending = list(runs)
    while pending:
        for run in list(pending):
            message = run.receive(0.05)
            if message is not None and message[0] != "progress":
                if message[0] != "done":
                    raise SystemExit(f"a job failed: {message}")
                run.finish(10)
                pending.remove(run)


def one_by_one(executor, root: Path, video: Path, rounds: int, first: int) -> float:
    """Seconds per job, each started after the last finished."""
    start = time.perf_counter()
    for n in range(rounds):
        drain([executor.start("extract", _params(root, video, first + n))])
    return (time.perf_counter() - start) / rounds


def at_once(executor, root: Path, video: Path, jobs: int, first: int) -> float:
    """Seconds for ``jobs`` jobs started together (Ray places each as CPUs free up)."""
    start = time.perf_counter()
    drain([executor.start("extract", _params(root, video, first + n)) for n in range(jobs)])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=6, help="jobs in the throughput runs")
    parser.add_argument("--rounds", type=int, default=3, help="jobs in the overhead runs")
    args = parser.parse_args()

    from media import make_video
    from raycluster import start_cluster

    from daemon.executor import LocalExecutor
    from daemon.ray_executor import RayExecutor

    work = Path(tempfile.mkdtemp(prefix="facedrop-cluster-bench-"))
    try:
        video = make_video(work / "clip.mp4", "astronaut", seconds=2.0)[0]
        root = work / "root"
        local = LocalExecutor()
        one_by_one(local, root, video, 1, 0)  # warm the page cache and the imports' files
        local_s = one_by_one(local, root, video, args.rounds, 100)

        import ray

        cluster = start_cluster(workers=0)  # the head alone: one node, one CPU
        try:
            ray_exec = RayExecutor(cluster.address, root)
            ray_exec.connect()
            one_by_one(ray_exec, root, video, 1, 200)
            ray_s = one_by_one(ray_exec, root, video, args.rounds, 300)
            one = [at_once(ray_exec, root, video, args.jobs, 400)]
            node = cluster.add_node(num_cpus=1)  # a second node: two workers
            cluster.wait_for_nodes()
            two = at_once(ray_exec, root, video, args.jobs, 500)
            cluster.remove_node(node)  # one again: the first one-worker run was not favoured
            cluster.wait_for_nodes()
            one.append(at_once(ray_exec, root, video, args.jobs, 600))
        finally:
            ray.shutdown()
            cluster.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"per job, one after another ({args.rounds} jobs, 10 faces each):")
    print(f"  local executor {local_s:6.2f} s   ray executor {ray_s:6.2f} s   "
          f"overhead {ray_s - local_s:+.2f} s per job ({ray_s / local_s:.2f}x)")
    print(f"throughput, {args.jobs} jobs started at once:")
    mean = sum(one) / len(one)
    print(f"  1 worker  {mean:6.1f} s  {60 * args.jobs / mean:5.1f} jobs/min  (before and after: "
          f"{one[0]:.1f} s, {one[1]:.1f} s)")
    print(f"  2 workers {two:6.1f} s  {60 * args.jobs / two:5.1f} jobs/min  "
          f"({mean / two:.2f}x the one worker)")


if __name__ == "__main__":
    main()
