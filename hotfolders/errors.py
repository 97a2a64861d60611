"""The one exception type for bad input: it always names the file and the reason."""
from __future__ import annotations

from pathlib import Path


class InputError(Exception):
    """Input that cannot be processed. ``str()`` is a one-line message: ``FILE: reason``.

    Stage commands turn it into exit code 2; the daemon moves the file to ``failed/`` with
    the message in ``<file>.error.txt``.
    """

    def __init__(self, path: str | Path | None, reason: str, hint: str = "") -> None:
        self.path = Path(path) if path is not None else None
        self.reason = reason
        self.hint = hint
        where = f"{self.path}: " if self.path is not None else ""
        super().__init__(f"{where}{reason}")
