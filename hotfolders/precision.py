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


def _runner(trainer: str, policy: str, batch_size: int, loss: str):
    """One step of throwaway networks in ``policy`` on a fixed random batch (the values do not
    change the speed), traced and warmed up."""
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
    float(step(*batch)[0])  # traced and run once: oneDNN's kernels are made and cached
    return lambda: step(*batch)


def measure(trainer: str, batch_size: int, loss: str = "mae+dssim",
            policies: tuple[str, ...] | None = None,
            block_seconds: float = BLOCK_SECONDS, rounds: int = ROUNDS,
            seconds: float = SECONDS) -> dict[str, float]:
    """Images per second (A and B together) of ``trainer`` in each of ``policies`` (default:
    float32 and the device's reduced precision): the best of up to ``rounds`` interleaved
    blocks (load from other processes only ever lowers a block's rate); a slow trainer, whose
    step alone outlasts a block, stops after ``seconds`` of timing, with two rounds at least
    (a step's first runs after tracing can still be slow: oneDNN makes kernels lazily, and a
    single step of ``original`` measured bfloat16 at 0.7x its speed)."""
    policies = policies or ("float32", reduced_policy())
    runners = {p: _runner(trainer, p, batch_size, loss) for p in policies}
    best = dict.fromkeys(policies, 0.0)
    timed_from = time.perf_counter()
    for r in range(rounds):
        if r >= MIN_ROUNDS and time.perf_counter() - timed_from >= seconds:
            break
        for policy in policies[::1 if r % 2 == 0 else -1]:
            run = runners[policy]
            steps, start = 0, time.perf_counter()
            while True:
                out = run()
                steps += 1
                elapsed = time.perf_counter() - start
                if elapsed >= block_seconds:
                    break
            float(out[0])
            elapsed = time.perf_counter() - start
            best[policy] = max(best[policy], 2 * batch_size * steps / elapsed)
    return best


def pick(rates: dict[str, float]) -> str:
    """float32 unless a reduced precision is at least :data:`MARGIN` times as fast."""
    fastest = max(rates, key=rates.__getitem__)
    if fastest != "float32" and rates[fastest] >= MARGIN * rates.get("float32", 0.0):
        return fastest
    return "float32"


def describe(choice: dict[str, Any]) -> str:
    """``float32 (float32 105 img/s, bfloat16 81 img/s)``."""
    rates = ", ".join(f"{label(p)} {r:.0f} img/s" for p, r in choice["images_per_second"].items())
    return f"{label(choice['chosen'])} ({rates})"


def choose(precision: str, trainer: str, batch_size: int, loss: str = "mae+dssim",
           previous: dict[str, Any] | None = None) -> tuple[str, dict[str, Any] | None]:
    """The Keras dtype policy for ``precision``, and the measurement behind it.

    ``float32`` and ``mixed`` (the device's reduced precision, even where it is slower) are
    taken as set, with no measurement. ``auto`` reuses ``previous`` (a model's recorded
    choice) when it was measured on this machine for this trainer and batch size, and
    otherwise measures (see :func:`measure`).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if precision == "float32":
        return "float32", None
    if precision == "mixed":
        return reduced_policy(), None
    here = machine()
    if previous and previous.get("machine") == here["id"] and previous.get(
            "trainer") == trainer and previous.get("batch_size") == batch_size and previous.get(
            "chosen") in ("float32", reduced_policy()):
        return str(previous["chosen"]), previous
    started = time.perf_counter()
    rates = measure(trainer, batch_size, loss)
    choice = {"chosen": pick(rates), "images_per_second": {p: round(r, 1)
                                                           for p, r in rates.items()},
              "machine": here["id"], "machine_name": here["name"], "trainer": trainer,
              "batch_size": batch_size, "seconds": round(time.perf_counter() - started, 1),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log.info("precision auto: measured %s on %s in %.1f s", describe(choice), here["name"],
             choice["seconds"])
    return choice["chosen"], choice


__all__ = ["PRECISIONS", "choose", "cpu_flags", "describe", "describe_cpu", "machine",
           "measure", "pick", "reduced_policy"]
