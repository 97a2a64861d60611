"""Which precision trains fastest on this machine: measured, never guessed from CPU flags.

bfloat16 instructions do not make bfloat16 faster: on a CPU with AVX-512 BF16 but no AMX,
``lightweight`` trained at 81 img/s in bfloat16 against 105 in float32, while AMX makes it
about 1.7x faster. So ``precision = "auto"`` times a few real training steps of the model's
own trainer, batch size and loss in float32 and in the reduced precision of the device
(bfloat16 on a CPU, float16 on a GPU), and takes the faster. The figures are recorded in the
model's state with the machine they were measured on; a resumed model measures again only on
another machine or at another batch size.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import quiet

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "mixed")
MARGIN = 1.05         # reduced precision must be this much faster: below, float32's accuracy wins
ROUNDS = 3            # timed blocks per candidate, interleaved so a change of load hits both,
BLOCK_SECONDS = 0.3   # each at least this long (and one step),
SECONDS = 2.0         # fewer rounds once this much was timed (tracing each step comes on top),
MIN_ROUNDS = 2        # but never fewer than this
_CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile")


@functools.cache
def _cpuinfo() -> str:
    """``/proc/cpuinfo``, read once (empty where there is none)."""
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The flags of ``/proc/cpuinfo`` (empty where there is none)."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return flags


def describe_cpu(flags: set[str] | None = None) -> str:
    """What the CPU offers for bfloat16, in words (for the doctor and the log)."""
    flags = cpu_flags() if flags is None else flags
    if "amx_bf16" in flags:
        return "AMX"
    if "avx512_bf16" in flags:
        return "AVX-512 BF16 without AMX"
    return "no bfloat16 instructions"


def _cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict[str, str]:
    """``{"id", "name"}`` of what training runs on: the CPU (model, usable cores, vector
    flags), the visible GPUs and TensorFlow's version. A figure measured elsewhere does not
    hold here."""
    tf = quiet.import_tensorflow()
    gpus = []
    for device in tf.config.get_visible_devices("GPU"):
        try:
            gpus.append(tf.config.experimental.get_device_details(device).get("device_name",
                                                                               device.name))
        except (RuntimeError, ValueError):
            gpus.append(device.name)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    flags = sorted(cpu_flags() & set(_CPU_FLAGS))
    name = (", ".join(gpus) + " + " if gpus else "") + f"{_cpu_name()} ({cores} cores)"
    key = "|".join([name, ",".join(flags), tf.__version__])
    return {"id": hashlib.sha256(key.encode()).hexdigest()[:16],
            "name": f"{name}, TensorFlow {tf.__version__}"}


def reduced_policy() -> str:
    """The reduced precision of the device training runs on (after devices.select_gpus)."""
    tf = quiet.import_tensorflow()
    return "mixed_float16" if tf.config.get_visible_devices("GPU") else "mixed_bfloat16"


def label(policy: str) -> str:
    """``mixed_bfloat16`` -> ``bfloat16`` (for messages)."""
    return policy.removeprefix("mixed_")


def runner(trainer: str, policy: str, batch_size: int, loss: str):
    """One step of throwaway networks in ``policy`` on a fixed random batch (the values do not
    change the speed), traced and warmed up for a block (see :func:`time_block`)."""
    import tensorflow as tf

    from .model import Networks
    from .training import make_optimizer, make_step

    nets = Networks(trainer, policy)
    nets.tune(batch_size)  # each precision compared at its own fastest
    optimizer = make_optimizer(policy)
    step = make_step(nets, optimizer, loss, policy == "mixed_float16")
    rng = np.random.default_rng(0)
    n, i, o = batch_size, nets.input_size, nets.output_size
    batch = [tf.constant(rng.integers(0, 256, shape, dtype=np.uint8))
             for shape in ((n, i, i, 3), (n, o, o, 3), (n, o, o, 2))] * 2

    def run():
        return step(*batch)

    # traced, then warmed up for a block: oneDNN makes its kernels lazily, and the first steps
    # of `original` after tracing ran at 0.9x its speed
    time_block(run, batch_size)
    return run


def time_block(run, batch_size: int, block_seconds: float = BLOCK_SECONDS) -> float:
    """Images per second (A and B together) of ``run`` (one training step) repeated for at
    least ``block_seconds`` and once."""
    steps, start = 0, time.perf_counter()
    while True:
        out = run()
        steps += 1
        if time.perf_counter() - start >= block_seconds:
            break
    float(out[0])
    return 2 * batch_size * steps / (time.perf_counter() - start)


def best_rates(blocks: dict[Any, Any], rounds: int = ROUNDS,
               seconds: float = SECONDS) -> dict[Any, float]:
    """The best images per second of each candidate, whose ``blocks[key]()`` times one block:
    up to ``rounds`` rounds, each in the other order than the one before so that a change of
    load hits every candidate (load from other processes only ever lowers a block's rate);
    after ``seconds`` of timing no new round starts, two rounds at least (a slow trainer's
    block is a single step)."""
    keys = list(blocks)
    best = dict.fromkeys(keys, 0.0)
    timed_from = time.perf_counter()
    for r in range(rounds):
        if r >= MIN_ROUNDS and time.perf_counter() - timed_from >= seconds:
            break
        for key in keys[::1 if r % 2 == 0 else -1]:
            best[key] = max(best[key], blocks[key]())
    return best


def measure(trainer: str, batch_size: int, loss: str = "mae+dssim",
            policies: tuple[str, ...] | None = None,
            block_seconds: float = BLOCK_SECONDS, rounds: int = ROUNDS,
            seconds: float = SECONDS) -> dict[str, float]:
    """Images per second (A and B together) of ``trainer`` in each of ``policies`` (default:
    float32 and the device's reduced precision), in this process (see :func:`best_rates`)."""
    policies = policies or candidates("auto")
    runners = {p: runner(trainer, p, batch_size, loss) for p in policies}
    return best_rates({p: functools.partial(time_block, run, batch_size, block_seconds)
                       for p, run in runners.items()}, rounds, seconds)


def candidates(precision: str) -> tuple[str, ...]:
    """The policies ``precision`` may train in: both for ``auto``, else the one it sets."""
    if precision == "float32":
        return ("float32",)
    if precision == "mixed":
        return (reduced_policy(),)
    return ("float32", reduced_policy())


def pick(rates: dict[str, float]) -> str:
    """float32 unless a reduced precision is at least :data:`MARGIN` times as fast."""
    fastest = max(rates, key=rates.__getitem__)
    if fastest != "float32" and rates[fastest] >= MARGIN * rates.get("float32", 0.0):
        return fastest
    return "float32"


def speed(images_per_second: float) -> str:
    """``387 img/s``; under 10 img/s with one decimal, where whole numbers turn a gap under
    the 5 % margin into a wide one (``dfaker``'s 3.4 and 3.6 img/s read 3 and 4)."""
    digits = 1 if images_per_second < 10 else 0
    return f"{images_per_second:.{digits}f} img/s"


def describe(choice: dict[str, Any]) -> str:
    """``float32 (float32 105 img/s, bfloat16 81 img/s)``: an ``auto`` choice (a precision's
    or, through :func:`hotfolders.threads.describe`, a thread layout's) and the rates behind it."""
    rates = ", ".join(f"{label(p)} {speed(r)}" for p, r in choice["images_per_second"].items())
    return f"{label(choice['chosen'])} ({rates})"


def record(chosen: str, rates: dict[str, float], trainer: str, batch_size: int,
           here: dict[str, str], started: float) -> dict[str, Any]:
    """What an ``auto`` choice keeps in the model's state: the choice, the images per second
    behind it, and the machine, trainer and batch size it holds for (see :func:`measured_here`)."""
    return {"chosen": chosen, "images_per_second": {k: round(v, 1) for k, v in rates.items()},
            "machine": here["id"], "machine_name": here["name"], "trainer": trainer,
            "batch_size": batch_size, "seconds": round(time.perf_counter() - started, 1),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def measured_here(previous: dict[str, Any] | None, trainer: str, batch_size: int) -> bool:
    """Whether ``previous`` (a model's recorded :func:`record`) was measured on this machine
    for this trainer and batch size."""
    return bool(previous) and previous.get("machine") == machine()["id"] and previous.get(
        "trainer") == trainer and previous.get("batch_size") == batch_size


def reusable(previous: dict[str, Any] | None, trainer: str, batch_size: int) -> bool:
    """Whether ``previous`` was :func:`measured_here`, for a precision this device has."""
    return measured_here(previous, trainer, batch_size) and previous.get("chosen") in (
        "float32", reduced_policy())


def choose(precision: str, trainer: str, batch_size: int, loss: str = "mae+dssim",
           previous: dict[str, Any] | None = None,
           rates: dict[str, float] | None = None) -> tuple[str, dict[str, Any] | None]:
    """The Keras dtype policy for ``precision``, and the measurement behind it.

    ``float32`` and ``mixed`` (the device's reduced precision, even where it is slower) are
    taken as set, with no measurement. ``auto`` reuses ``previous`` when :func:`reusable`,
    and otherwise takes the faster of ``rates`` (images per second of each candidate, as
    :mod:`hotfolders.threads` measured them) or measures (see :func:`measure`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return "float32", None
    if precision == "mixed":
        return reduced_policy(), None
    if reusable(previous, trainer, batch_size):
        return str(previous["chosen"]), previous
    here = machine()
    started = time.perf_counter()
    timed_here = not rates or set(rates) != set(candidates("auto"))
    if timed_here:
        rates = measure(trainer, batch_size, loss)
    choice = record(pick(rates), rates, trainer, batch_size, here, started)
    log.info("precision auto: %s %s on %s%s", "measured" if timed_here else "chose",
             describe(choice), here["name"], f" in {choice['seconds']:.1f} s" if timed_here
             else " (from the thread layouts' figures)")
    return choice["chosen"], choice


__all__ = ["PRECISIONS", "best_rates", "candidates", "choose", "cpu_flags", "describe",
           "describe_cpu", "machine", "measure", "measured_here", "pick", "record",
           "reduced_policy", "reusable",
           "runner", "time_block"]
