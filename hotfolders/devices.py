"""Which GPU TensorFlow uses, chosen once per process before its first operation.

The walkthrough's users train on NVIDIA cards. TensorFlow grabs all memory of every GPU it
sees by default, so a second facedrop job (or another program) on the same card fails to
start; with memory growth on, each process takes what it uses. The ``gpu`` setting picks
the cards: ``auto`` (every GPU TensorFlow sees; work runs on the first), ``cpu`` (none), or
indices such as ``"1"`` or ``"0,1"``.
"""
from __future__ import annotations

import logging
import re

from . import quiet

log = logging.getLogger(__name__)

GPU_SETTING = re.compile(r"^(auto|cpu|\d+(,\d+)*)$")


def check_gpu_setting(value: str) -> str:
    """``value`` if it is a valid ``gpu`` setting, else ValueError saying what is."""
    if not isinstance(value, str) or not GPU_SETTING.match(value.strip()):
        raise ValueError(f'gpu must be "auto", "cpu" or GPU indices such as "0" or "0,1", '
                         f"not {value!r}")
    return value.strip()


def select_gpus(choice: str = "auto") -> list[str]:
    """Make only the chosen GPUs visible to TensorFlow, with memory growth on; returns their
    names (empty: the CPU runs everything). ValueError for an index this machine lacks."""
    choice = check_gpu_setting(choice)
    tf = quiet.import_tensorflow()
    gpus = tf.config.list_physical_devices("GPU")
    if choice == "cpu":
        chosen = []
    elif choice == "auto":
        chosen = list(gpus)
    else:
        wanted = [int(i) for i in choice.split(",")]
        missing = [i for i in wanted if i >= len(gpus)]
        if missing:
            raise ValueError(f"gpu = {choice!r}: this machine has {len(gpus)} GPU(s) that "
                             f"TensorFlow can use (indices 0-{len(gpus) - 1})" if gpus else
                             f"gpu = {choice!r}: TensorFlow sees no GPU on this machine "
                             "(is facedrop[gpu] installed and the driver loaded?)")
        chosen = [gpus[i] for i in wanted]
    try:
        tf.config.set_visible_devices(chosen, "GPU")
        for gpu in chosen:
            tf.config.experimental.set_memory_growth(gpu, True)
    except RuntimeError as exc:  # TensorFlow already ran something in this process
        log.debug("GPU selection left as it was: %s", exc)
    names = [gpu.name for gpu in chosen]
    if names:
        log.info("using %s (memory growth on)", ", ".join(names))
    return names


__all__ = ["GPU_SETTING", "check_gpu_setting", "select_gpus"]
