"""Which failures are the input's fault, and which are the machine's (and pass).

A disk that is full, a quota that is used up or an I/O error says nothing about the dropped
file: such a job keeps its input where it is and runs again after a back-off. Only a real
input error moves the file to ``failed/``.
"""
from __future__ import annotations

import errno

TRANSIENT = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
             errno.EIO: "input/output error", errno.ENOMEM: "out of memory"}
_TEXTS = {"No space left on device": "disk full", "Disk quota exceeded": "disk quota exceeded"}


def transient_reason(exc: BaseException) -> str | None:
    """"disk full", "input/output error"... when ``exc`` (or an exception it was raised
    from) is a transient fault of the machine; None for anything else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = getattr(exc, "errno", None)
        if isinstance(code, int) and code in TRANSIENT:
            return TRANSIENT[code]
        text = str(exc)
        for needle, reason in _TEXTS.items():  # libraries that wrap errno in a message (HDF5)
            if needle in text:
                return reason
        # what it was raised from; an error raised "from None" stands on its own
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return None


def backoff(first: float, attempt: int, cap: float = 3600.0) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): doubling, capped."""
    return min(cap, first * 2 ** max(0, attempt - 1))
