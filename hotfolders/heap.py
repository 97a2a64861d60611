"""Keep Python's cyclic garbage collector off the objects a long stage starts with.

After TensorFlow and MediaPipe are imported some 400 000 objects (modules, protobuf
descriptors, graph wrappers) are tracked by the collector, and every full collection walks
all of them; a stage that makes many small objects (landmark lists, JSON) triggers such
collections again and again — writing one alignments file spent 95% of its time there.
:func:`frozen_heap` moves what is alive when a stage starts into the collector's permanent
generation for the length of the stage (``gc.freeze``), and gives it back afterwards.
"""
from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Run the body with today's objects out of the collector's way (nestable)."""
    global _depth
    with _lock:
        if _depth == 0:
            gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()


__all__ = ["frozen_heap"]
