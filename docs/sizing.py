"""How many GPUs a studio needs: a small discrete-event simulation of facedrop's scheduling
policy on a Ray cluster (docs/cluster.md explains the model and its figures).

The policy simulated is the one daemon/jobs.py implements:
- jobs wait in one queue, ordered by priority (extraction 10, conversion 20, training 30),
  then by arrival; at most ``slots`` jobs run at once (``[cluster] jobs``);
- a job starts only where its resources are free (daemon/kinds.py: extraction 1 CPU,
  conversion 1 CPU and half a GPU, training 1 CPU and a whole GPU); one without room is
  passed over for the next;
- when work other than training waits because every slot is busy or its resources are held,
  the training that started last pauses (it saves first: ``--preempt-minutes`` lost) and goes
  back to the queue with the work it has left.

    python docs/sizing.py --gpus 2 --footage-hours 10 --train-hours 8 --models 2
"""
from __future__ import annotations

import argparse
import heapq
import itertools
import random
from dataclasses import dataclass, field

PRIORITY = {"extract": 10, "convert": 20, "train": 30}
NEEDS = {"extract": (1.0, 0.0), "convert": (1.0, 0.5), "train": (1.0, 1.0)}  # CPUs, GPUs


@dataclass
class Job:
    kind: str
    arrived: float          # hours
    work: float             # hours of running it still needs
    order: int
    first: float = 0.0      # when it first arrived (hours)
    waited: float = 0.0     # hours between arriving (or pausing) and being placed
    started: float = 0.0

    def key(self) -> tuple[int, float, int]:
        return PRIORITY[self.kind], self.arrived, self.order


@dataclass
class Cluster:
    cpus: float
    gpus: float
    slots: int
    preempt_hours: float
    now: float = 0.0
    queue: list[Job] = field(default_factory=list)
    running: dict[int, tuple[Job, float]] = field(default_factory=dict)  # order -> (job, end)
    free_cpu: float = 0.0
    free_gpu: float = 0.0
    gpu_busy: float = 0.0   # GPU-hours used
    done: list[Job] = field(default_factory=list)
    preemptions: int = 0

    def __post_init__(self) -> None:
        self.free_cpu, self.free_gpu = self.cpus, self.gpus

    def fits(self, job: Job) -> bool:
        cpu, gpu = NEEDS[job.kind]
        return cpu <= self.free_cpu + 1e-9 and gpu <= self.free_gpu + 1e-9


def simulate(gpus: int, cpus_per_node: int, slots: int, days: int, footage_hours: float,
             clip_minutes: float, extract_speed: float, models: float, train_hours: float,
             target_hours: float, convert_speed: float, preempt_minutes: float,
             seed: int = 1) -> dict[str, float]:
    """Figures of ``days`` simulated days (arrivals spread at random over each day)."""
    rng = random.Random(seed)
    c = Cluster(cpus=gpus * cpus_per_node, gpus=float(gpus), slots=slots,
                preempt_hours=preempt_minutes / 60)
    order = itertools.count()
    events: list[tuple[float, int, str, Job]] = []   # (time, tie, what, job)

    def arrive(kind: str, at: float, work: float) -> None:
        job = Job(kind, at, work, next(order))
        heapq.heappush(events, (at, job.order, "arrive", job))

    for day in range(days):
        for _ in range(max(1, round(footage_hours * 60 / clip_minutes))):
            arrive("extract", 24 * (day + rng.random()), clip_minutes / 60 / extract_speed)
        for _ in range(_poisson(rng, models)):
            arrive("train", 24 * (day + rng.random()), train_hours)
        for _ in range(max(0, round(target_hours * 60 / clip_minutes))):
            arrive("convert", 24 * (day + rng.random()), clip_minutes / 60 / convert_speed)

    def place() -> None:
        """Start what the slots and free resources allow, in priority order (a job without
        room is passed over); then pause a training where the policy says."""
        started = True
        while started:
            started = False
            for job in sorted(c.queue, key=Job.key):
                if len(c.running) < c.slots and c.fits(job):
                    start(job)
                    started = True
                    break
        waiting = [j for j in c.queue if j.kind != "train"]
        if waiting and (len(c.running) >= c.slots or not all(c.fits(j) for j in waiting)):
            trainings = [j for j, _ in c.running.values() if j.kind == "train"]
            if trainings:
                pause(max(trainings, key=lambda j: j.started))

    def start(job: Job) -> None:
        c.queue.remove(job)
        cpu, gpu = NEEDS[job.kind]
        c.free_cpu -= cpu
        c.free_gpu -= gpu
        job.waited += c.now - job.arrived
        job.started = c.now
        end = c.now + job.work
        c.running[job.order] = (job, end)
        heapq.heappush(events, (end, job.order, "end", job))

    def pause(job: Job) -> None:
        _, end = c.running.pop(job.order)
        c.preemptions += 1
        c.free_cpu += NEEDS[job.kind][0]
        c.free_gpu += NEEDS[job.kind][1]
        c.gpu_busy += c.now - job.started
        job.work = max(0.0, end - c.now) + c.preempt_hours   # saving, then loading again
        job.arrived = c.now   # its next wait counts from here
        c.queue.append(job)
        place()

    horizon = 24 * days
    while events:
        at, _, what, job = heapq.heappop(events)
        c.now = at
        if what == "arrive":
            job.first = at
            c.queue.append(job)
        elif job.order in c.running and c.running[job.order][1] == at:
            del c.running[job.order]
            c.free_cpu += NEEDS[job.kind][0]
            c.free_gpu += NEEDS[job.kind][1]
            if NEEDS[job.kind][1]:
                c.gpu_busy += (at - job.started) * NEEDS[job.kind][1]
            c.done.append(job)
        else:
            continue  # the end of a run that was paused
        place()
    end = max(c.now, horizon)
    out: dict[str, float] = {"gpu_use": c.gpu_busy / (gpus * end) if gpus else 0.0,
                             "preemptions_per_day": c.preemptions / days}
    for kind in PRIORITY:
        jobs = [j for j in c.done if j.kind == kind]
        waits = sorted(j.waited for j in jobs)
        turn = sorted(j.started + j.work - j.first for j in jobs)  # the last run's end
        out[f"{kind}_jobs"] = len(jobs)
        out[f"{kind}_wait_mean_h"] = sum(waits) / len(waits) if waits else 0.0
        out[f"{kind}_wait_p95_h"] = _p95(waits)
        out[f"{kind}_turnaround_p95_h"] = _p95(turn)
    return out


def _p95(values: list[float]) -> float:
    return values[min(len(values) - 1, int(0.95 * len(values)))] if values else 0.0


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw (Knuth's method: means here are small)."""
    import math

    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, nargs="+", default=[1, 2, 4],
                        help="GPUs in the cluster, one per node (several: one row each)")
    parser.add_argument("--cpus-per-node", type=int, default=8)
    parser.add_argument("--slots", type=int, default=0,
                        help="[cluster] jobs (default: CPUs of the cluster)")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--footage-hours", type=float, default=10.0,
                        help="hours of video dropped into inbox/ a day")
    parser.add_argument("--clip-minutes", type=float, default=10.0, help="length of one video")
    parser.add_argument("--extract-speed", type=float, default=3.0,
                        help="hours of video one CPU extracts in an hour (every 4th frame)")
    parser.add_argument("--models", type=float, default=2.0, help="new models a day")
    parser.add_argument("--train-hours", type=float, default=8.0,
                        help="GPU-hours of training per model")
    parser.add_argument("--target-hours", type=float, default=2.0,
                        help="hours of target video converted a day")
    parser.add_argument("--convert-speed", type=float, default=1.0,
                        help="hours of video one conversion (half a GPU) swaps in an hour")
    parser.add_argument("--preempt-minutes", type=float, default=1.0,
                        help="what pausing a training costs (save, then load again)")
    args = parser.parse_args()
    print(f"{args.footage_hours:g} h of footage, {args.models:g} models of "
          f"{args.train_hours:g} GPU-h and {args.target_hours:g} h of targets a day; "
          f"{args.days} days simulated")
    print(" GPUs | GPU use | extract wait mean/p95 | convert wait mean/p95 | "
          "training done in (p95) | pauses/day")
    for gpus in args.gpus:
        r = simulate(gpus, args.cpus_per_node, args.slots or gpus * args.cpus_per_node,
                     args.days, args.footage_hours, args.clip_minutes, args.extract_speed,
                     args.models, args.train_hours, args.target_hours, args.convert_speed,
                     args.preempt_minutes)
        print(f" {gpus:4d} | {r['gpu_use']:6.0%} | {_h(r['extract_wait_mean_h'])} / "
              f"{_h(r['extract_wait_p95_h'])} | {_h(r['convert_wait_mean_h'])} / "
              f"{_h(r['convert_wait_p95_h'])} | {_h(r['train_turnaround_p95_h'])} | "
              f"{r['preemptions_per_day']:.1f}")


def _h(hours: float) -> str:
    return f"{hours * 60:5.0f} min" if hours < 2 else f"{hours:5.1f} h"


if __name__ == "__main__":
    main()
