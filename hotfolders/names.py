"""Names that come from untrusted places: hot-folder file names, and names stored in files.

Three rules, one function each:

- :func:`plain_png_name` — a name *read from a file* (a face's ``original_name``, a sort
  record's old name) becomes a file name only if it is a plain, non-hidden ``*.png`` base
  name; anything else (``../../.facedrop/state.db``, ``/home/u/.ssh/authorized_keys``) is
  refused, and the caller falls back to the name it derives itself.
- :func:`fit` — names facedrop *derives* from a source's name (face files, the review folder,
  staging and temp names, ``.error.txt`` reports, outputs) are cut to a byte budget, so an
  80-character Chinese file name (240 bytes in UTF-8) still leaves room for the suffixes
  under the 255-byte limit of Linux file systems. A cut name ends in ``~`` and 8 hex digits
  of the full name's hash, so two long names that share a beginning stay apart; the full
  name stays in the metadata.
- :func:`printable` — a file name may hold newlines and escape sequences; before it reaches
  a log line, a terminal or the systemd notify socket, control characters are escaped
  (``clip\\nWATCHDOG=trigger\\n.mp4`` must not become three notify commands).
"""
from __future__ import annotations

import hashlib
import os
import unicodedata

NAME_MAX = 255          # bytes in one file name (ext4, xfs, btrfs, tmpfs)
STEM_BUDGET = 150       # bytes of a source's stem in derived names; the rest is for suffixes


def name_bytes(name: str) -> int:
    """Length of ``name`` as the file system stores it."""
    return len(os.fsencode(name))


def fit(stem: str, budget: int = STEM_BUDGET) -> str:
    """``stem`` itself if it fits in ``budget`` bytes, else its longest prefix that leaves room
    for ``~`` and 8 hex digits of its sha256 (cut at a character boundary)."""
    raw = os.fsencode(stem)
    if len(raw) <= budget:
        return stem
    digest = hashlib.sha256(raw).hexdigest()[:8]
    cut = budget - 9
    while cut > 0 and (raw[cut] & 0xC0) == 0x80:  # never split a UTF-8 sequence
        cut -= 1
    return f"{os.fsdecode(raw[:cut])}~{digest}"


def fit_name(name: str, budget: int = STEM_BUDGET + 20) -> str:
    """A whole file name cut to ``budget`` bytes with its suffix kept (``clip.mp4``)."""
    stem, dot, suffix = name.rpartition(".")
    if not dot or not stem or name_bytes(suffix) > 16:
        return fit(name, budget)
    return f"{fit(stem, budget - name_bytes(suffix) - 1)}.{suffix}"


def plain_name(name: object) -> str | None:
    """``name`` if it can only ever mean one entry inside a folder — no ``/``, no NUL, not
    ``.``/``..``, not hidden, not empty, at most :data:`NAME_MAX` bytes — else None."""
    if (not isinstance(name, str) or not name or name.startswith(".") or "/" in name
            or "\x00" in name or name_bytes(name) > NAME_MAX):
        return None
    return name


def plain_png_name(name: object) -> str | None:
    """``name`` if it is a plain, non-hidden ``*.png`` base name, else None."""
    if not isinstance(name, str) or not name.lower().endswith(".png") or len(name) <= 4:
        return None
    if (name.startswith((".", "-")) or "/" in name or "\\" in name or "\x00" in name
            or printable(name) != name or name_bytes(name) > NAME_MAX):
        return None
    return name


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: object) -> str:
    """``str(text)`` with control, format (bidi overrides), line-separator and undecodable
    characters escaped (``\\n`` -> ``\\x0a``): safe for one log line, a terminal or a notify
    datagram."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or unicodedata.category(ch) == "Zs" else _escape(ch)
                   for ch in text)


__all__ = ["NAME_MAX", "STEM_BUDGET", "fit", "fit_name", "name_bytes", "plain_name",
           "plain_png_name", "printable"]
