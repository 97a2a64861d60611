"""systemd's notify protocol without a library: one datagram to ``$NOTIFY_SOCKET``.

The datagram is newline-separated ``KEY=value`` assignments, and a ``STATUS=`` line often
names a dropped file: each state has its control characters escaped, so a file called
``clip\nWATCHDOG=trigger\n.mp4`` stays one harmless status line.
"""
from __future__ import annotations

import os
import socket

from hotfolders.names import printable


def notify(*states: str) -> bool:
    """Send ``READY=1``, ``STATUS=...``, ``STOPPING=1``, ``WATCHDOG=1``...; False if not under systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # abstract namespace
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(printable(state) for state in states).encode())
        return True
    except OSError:
        return False


def watchdog_interval() -> float | None:
    """Half of ``$WATCHDOG_USEC`` in seconds, when systemd asks for keep-alives."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
