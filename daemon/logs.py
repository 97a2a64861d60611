"""Log lines for a terminal, the journal and ``facedrop.log``: one line per message, always.

Messages name files that anybody who can write into a hot folder named, so a file called
``clip\\nERROR fake line\\n.mp4`` must not forge log lines or send escape sequences to the
operator's terminal: every message is passed through :func:`hotfolders.names.printable`
here, once, so daemon code logs names as they are; a traceback keeps its lines, each
escaped, and a continuation line never starts at the margin.
"""
from __future__ import annotations

import logging
import os
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


class JournalFormatter(SafeFormatter):
    """Lines for systemd's journal: each starts with its syslog priority (``<3>`` for an error),
    which journald reads and strips, so ``journalctl -p warning`` finds our warnings."""

    PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{self.PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


def under_journal() -> bool:
    """Whether stderr is connected to systemd's journal (it sets ``$JOURNAL_STREAM`` to the
    device and inode of the stream it gave us; a redirected stderr no longer matches). Job
    children write through the daemon's stderr filter: they are told by ``$FACEDROP_JOURNAL``."""
    if os.environ.get("FACEDROP_JOURNAL") == "1":
        return True
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(x) for x in value.split(":"))
        st = os.fstat(sys.stderr.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (device, inode)


QUIET = ("watchdog", "apscheduler", "waitress", "PIL", "matplotlib")


def formatter(style: str) -> logging.Formatter:
    """The formatter for stderr: with syslog priorities under the journal."""
    return JournalFormatter(style) if under_journal() else SafeFormatter(style)


def setup(verbose: bool) -> None:
    """stderr logging for every command: plain messages, or with level and logger when
    ``verbose`` (library chatter stays hidden unless verbose)."""
    handler = logging.StreamHandler(sys.stderr)
    style = "%(levelname)s %(name)s: %(message)s" if verbose else "%(message)s"
    if under_journal():
        os.environ["FACEDROP_JOURNAL"] = "1"  # for the job children, whose stderr is a pipe
    handler.setFormatter(formatter(style))
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
