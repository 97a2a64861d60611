"""How TensorFlow spreads a training step over the CPU's cores: measured, like the precision.

TensorFlow's default (``shared``) splits every operation over all cores and runs up to as many
operations at once. A training step is a few large convolutions among many small operations
(element-wise work, 8x8 convolutions, Adam's updates); splitting a small one costs more than
it gains, and the step has independent branches (the two decoders, each layer's two
gradients) that can keep the cores busy instead. With ``per-op`` each operation runs on one
core, as many at once as there are cores. On a 2-core AMX Xeon ``lightweight`` in bfloat16
trained 1.1x faster that way (1.2x with the data pipeline beside it), float32 the same, and
``original``, whose convolutions are large, 0.94-0.98x. So ``threads = "auto"`` measures.

TensorFlow fixes its thread pools when it first runs an operation, so one process cannot try
both: each layout is timed in a worker process of its own (``python -m hotfolders.threads``),
blocks interleaved by this process, before training sets up TensorFlow with the faster. The
choice is recorded in the model's state with the machine it was measured on, like the
precision's (:mod:`hotfolders.precision`).
"""
from __future__ import annotations

import json
import logging
import os
import selectors
import subprocess
import sys
import time
from typing import Any

from . import precision, quiet

log = logging.getLogger(__name__)

LAYOUTS = ("shared", "per-op")
THREADS = ("auto", *LAYOUTS)
MARGIN = 1.05            # per-op must be this much faster: below, TensorFlow's default stays
SETUP_SECONDS = 600.0    # a worker's start (TensorFlow, the networks, tracing) may take this
BLOCK_TIMEOUT = 120.0    # and one timed block this, or the measurement is given up


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def pools(layout: str) -> tuple[int, int]:
    """``(inter_op, intra_op)`` threads of ``layout`` (0: TensorFlow's default, the cores)."""
    if layout not in LAYOUTS:
        raise ValueError(f"threads must be one of {', '.join(THREADS)}, not {layout!r}")
    return (0, 0) if layout == "shared" else (cores(), 1)


def can_apply() -> bool:
    """Whether TensorFlow's thread pools can still be set in this process (it has run no
    operation yet). Setting a pool to its present value is always allowed, so this sets
    another and puts it back."""
    tf = quiet.import_tensorflow()
    threading = tf.config.threading
    present = threading.get_inter_op_parallelism_threads()
    try:
        threading.set_inter_op_parallelism_threads(present + 1)
    except RuntimeError:
        return False
    threading.set_inter_op_parallelism_threads(present)
    return True


def apply(layout: str) -> bool:
    """Set TensorFlow's thread pools to ``layout``; False (logged) where TensorFlow already
    runs in this process and keeps its pools."""
    inter, intra = pools(layout)
    tf = quiet.import_tensorflow()
    try:
        tf.config.threading.set_inter_op_parallelism_threads(inter)
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    except RuntimeError:
        log.debug("threads %s not applied: TensorFlow already runs in this process", layout)
        return False
    return True


class _Worker:
    """A process timing training steps in one layout: it answers a policy's name with the
    images per second of one block (a JSON line each way)."""

    def __init__(self, layout: str, trainer: str, batch_size: int, loss: str,
                 policies: tuple[str, ...]) -> None:
        spec = {"layout": layout, "trainer": trainer, "batch_size": batch_size, "loss": loss,
                "policies": list(policies)}
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # measured where it trains: the CPU
        self.layout = layout
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hotfolders.threads", json.dumps(spec)], env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=None if quiet.is_verbose() else subprocess.DEVNULL, text=True)

    def read(self, timeout: float) -> dict[str, Any]:
        with selectors.DefaultSelector() as sel:
            sel.register(self.process.stdout, selectors.EVENT_READ)
            if not sel.select(timeout):
                raise RuntimeError(f"the {self.layout} worker gave no answer in {timeout:.0f} s")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {self.layout} worker ended (exit code "
                               f"{self.process.wait()})")
        return json.loads(line)

    def block(self, policy: str) -> float:
        self.process.stdin.write(policy + "\n")
        self.process.stdin.flush()
        return float(self.read(BLOCK_TIMEOUT)["images_per_second"])

    def close(self) -> None:
        try:
            self.process.stdin.close()
            self.process.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.process.kill()
            self.process.wait()


def measure(trainer: str, batch_size: int, loss: str, policies: tuple[str, ...],
            layouts: tuple[str, ...] = LAYOUTS) -> dict[str, dict[str, float]]:
    """``{layout: {policy: images per second}}`` of ``trainer``, each layout in a worker
    process, the blocks interleaved as :func:`hotfolders.precision.best_rates` does.
    RuntimeError where a worker fails, hangs or did not get its layout's pools."""
    workers = [_Worker(layout, trainer, batch_size, loss, policies) for layout in layouts]
    try:
        for worker in workers:  # they set up side by side; the timing is one at a time
            got = worker.read(SETUP_SECONDS)
            wanted = dict(zip(("inter_op", "intra_op"), pools(worker.layout)))
            if got != wanted:
                raise RuntimeError(f"the {worker.layout} worker runs with {got}, not {wanted}")
        blocks = {(w.layout, p): (lambda w=w, p=p: w.block(p)) for w in workers
                  for p in policies}
        best = precision.best_rates(blocks)
    finally:
        for worker in workers:
            worker.close()
    return {layout: {p: best[(layout, p)] for p in policies} for layout in layouts}


def reusable(previous: dict[str, Any] | None, trainer: str, batch_size: int,
             policies: tuple[str, ...]) -> bool:
    """Whether ``previous`` (a model's recorded choice) was measured on this machine for this
    trainer and batch size, with these precisions among those timed (a resumed model keeps
    the precision it chose, one of those it timed)."""
    return precision.measured_here(previous, trainer, batch_size) and set(policies) <= set(
        previous.get("policies") or ()) and previous.get("chosen") in LAYOUTS


def choose(threads: str, trainer: str, batch_size: int, loss: str, policies: tuple[str, ...],
           previous: dict[str, Any] | None = None
           ) -> tuple[str | None, dict[str, Any] | None, dict[str, float] | None]:
    """The layout to train in, the measurement behind it, and the images per second of each
    of ``policies`` in that layout (for :func:`hotfolders.precision.choose`; None where not
    measured now).

    ``shared`` and ``per-op`` are taken as set. ``auto`` keeps TensorFlow's default where the
    choice cannot matter or cannot be made (a GPU trains, one core, TensorFlow already runs
    in this process: the layout is then None), reuses ``previous`` when :func:`reusable`,
    and otherwise measures. A worker that fails or hangs costs the measurement, not the
    training: TensorFlow's default stays, with a warning.
    """
    if threads not in THREADS:
        raise ValueError(f"threads must be one of {', '.join(THREADS)}, not {threads!r}")
    if threads != "auto":
        return threads, None, None
    tf = quiet.import_tensorflow()
    if tf.config.get_visible_devices("GPU") or cores() < 2 or not can_apply():
        return None, None, None
    if reusable(previous, trainer, batch_size, policies):
        return str(previous["chosen"]), previous, None
    try:
        return decide(trainer, batch_size, loss, policies)
    except (OSError, RuntimeError, ValueError) as exc:
        log.warning("threads auto: could not time the thread layouts (%s); training with "
                    "TensorFlow's default", exc)
        return None, None, None


def decide(trainer: str, batch_size: int, loss: str, policies: tuple[str, ...]
           ) -> tuple[str, dict[str, Any], dict[str, float]]:
    """Time both layouts (:func:`measure`) and take ``per-op`` where it is :data:`MARGIN`
    times as fast as ``shared`` in the precision each would pick; returns what
    :func:`choose` does. RuntimeError where a worker fails."""
    here = precision.machine()
    started = time.perf_counter()
    rates = measure(trainer, batch_size, loss, policies)
    speed = {layout: by_policy[precision.pick(by_policy)] for layout, by_policy in rates.items()}
    chosen = "per-op" if speed["per-op"] >= MARGIN * speed["shared"] else "shared"
    choice = {**precision.record(chosen, speed, trainer, batch_size, here, started),
              "policies": list(policies)}
    log.info("threads auto: measured %s on %s in %.1f s", describe(choice), here["name"],
             choice["seconds"])
    return chosen, choice, rates[chosen]


def describe(choice: dict[str, Any]) -> str:
    """``per-op (shared 384 img/s, per-op 425 img/s)``, written as the precision's choice is
    (a layout's name is its own label)."""
    return precision.describe(choice)


def summary(layout: str | None, choice: dict[str, Any] | None) -> str:
    """The layout a training runs in, in words (for the log and the command's summary)."""
    if layout is None:
        return "as TensorFlow sets them"
    if choice and choice.get("chosen") == layout:
        return f"auto: {describe(choice)}"
    return f"{layout} as set"


def _worker_main(spec: dict[str, Any]) -> None:
    """``python -m hotfolders.threads SPEC``: set the layout, build one runner per policy,
    print the pools TensorFlow got, then time a block for each policy named on stdin; ends
    when stdin closes (its parent is done, or gone). Answers go to the process's own stdout;
    anything native code prints there is sent to stderr instead, out of the answers' way."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    quiet.silence(quiet.is_verbose())
    layout, batch_size = spec["layout"], int(spec["batch_size"])
    with quiet.native_stderr_hidden():
        tf = quiet.import_tensorflow()
    if not apply(layout):
        raise SystemExit(f"could not set threads {layout}")
    runners = {p: precision.runner(spec["trainer"], p, batch_size, spec["loss"])
               for p in spec["policies"]}
    threading = tf.config.threading
    print(json.dumps({"inter_op": threading.get_inter_op_parallelism_threads(),
                      "intra_op": threading.get_intra_op_parallelism_threads()}), file=answers)
    for line in sys.stdin:
        rate = precision.time_block(runners[line.strip()], batch_size)
        print(json.dumps({"images_per_second": rate}), file=answers)


__all__ = ["LAYOUTS", "THREADS", "apply", "can_apply", "choose", "cores", "decide", "describe",
           "measure", "pools", "summary"]


if __name__ == "__main__":
    _worker_main(json.loads(sys.argv[1]))
