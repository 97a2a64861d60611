"""Progress bars for the stage commands (tqdm on a terminal, quiet otherwise)."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator


@contextmanager
def progress_bar(desc: str, unit: str = "frame", total: int | None = None,
                 enabled: bool | None = None) -> Iterator[Callable[[int, int], None]]:
    """Yield a ``callback(done, total)`` that drives a tqdm bar on stderr."""
    from tqdm import tqdm

    enabled = sys.stderr.isatty() if enabled is None else enabled
    bar = tqdm(total=total or None, desc=desc, unit=unit, disable=not enabled, leave=False,
               dynamic_ncols=True, file=sys.stderr)

    def update(done: int, expected: int = 0) -> None:
        if expected and bar.total != expected:
            bar.total = expected
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()
