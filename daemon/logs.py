"""Log lines for a terminal, the journal and ``facedrop.log``: one line per message, always.

Messages name files that anybody who can write into a hot folder named, so a file called
``clip\\nERROR fake line\\n.mp4`` must not forge log lines or send escape sequences to the
operator's terminal: every message is passed through :func:`hotfolders.names.printable`
(tracebacks, which are ours, keep their lines).
"""
from __future__ import annotations

import logging
import sys

from hotfolders.names import printable


class SafeFormatter(logging.Formatter):
    """A :class:`logging.Formatter` whose messages have their control characters escaped."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)

    def formatException(self, ei) -> str:
        """A traceback keeps its lines, but an exception message that holds a hostile name
        cannot start a line of its own: every line is escaped, and continuation lines that
        do not start with a space are indented."""
        lines = super().formatException(ei).split("\n")
        return "\n".join(printable(line) if i == 0 or line.startswith(" ") else
                         "    " + printable(line) for i, line in enumerate(lines))


QUIET = ("watchdog", "apscheduler", "waitress", "PIL", "matplotlib")


def setup(verbose: bool) -> None:
    """stderr logging for every command: plain messages, or with level and logger when
    ``verbose`` (library chatter stays hidden unless verbose)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter("%(levelname)s %(name)s: %(message)s" if verbose
                                       else "%(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:
        for noisy in QUIET:
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # a page load fetches many thumbnails at once; waitress calls that a queue warning
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def add_file(path, verbose: bool) -> logging.Handler:
    """Also log to ``path`` (rotated at 5 MB, three kept), with times."""
    import logging.handlers

    handler = logging.handlers.RotatingFileHandler(path, maxBytes=5_000_000, backupCount=3)
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler
