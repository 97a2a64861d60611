"""Opening files that anybody with write access to a hot folder may have put there.

Hot folders are often shared or synced, so whoever can write into one is untrusted: a
``x.png`` may be a FIFO (opening it blocks forever), a link to ``~/.ssh``, a 400-megapixel
image packed into 389 KB, or a 10 000-deep TOML array. Every read of such a file goes through
this module, which

- opens with ``O_NONBLOCK`` and checks ``S_ISREG`` on the descriptor (never on the name, which
  can be swapped between a check and the open), so FIFOs, devices and sockets are refused;
- when a process is *confined* to a root (the daemon and its job children are, see
  :func:`confine`), checks where the open descriptor really lies, so a symbolic link out of
  the root is never read through, however it got there;
- reads at most a size cap (and says so when a file is larger);
- reads an image's size from its header and refuses more than :data:`MAX_PIXELS` before a
  decoder allocates the pixels.

Stdlib only at import time: the status page and the daemon use it without the face engine.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import struct
import tomllib
from pathlib import Path
from typing import Any, BinaryIO

from .errors import InputError

MAX_PIXELS = 50_000_000        # a 8K frame is 33 Mpx; anything above is refused from the header
TOML_LIMIT = 64 << 10          # model.toml, facedrop.toml
JSON_LIMIT = 4 << 20           # review.json, manifests, state.json, sort records
IMAGE_LIMIT = 256 << 20        # a photo or face file
HEAD_BYTES = 1 << 16           # enough to find an image's size in its header

_confined_to: Path | None = None
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a device",
          stat.S_IFBLK: "a device", stat.S_IFDIR: "a folder", stat.S_IFLNK: "a link"}


def confine(root: str | Path | None) -> None:
    """From now on this process opens, lists and writes hot-folder files only inside ``root``
    (``None`` lifts it: stage commands run by a person may read what that person names)."""
    global _confined_to
    _confined_to = Path(os.path.realpath(root)) if root is not None else None


def confinement() -> Path | None:
    return _confined_to


def is_inside(path: str | Path, root: str | Path | None = None) -> bool:
    """Whether ``path``, with every link resolved, lies inside ``root`` (default: the
    confinement root; True when there is none)."""
    base = Path(os.path.realpath(root)) if root is not None else _confined_to
    if base is None:
        return True
    real = Path(os.path.realpath(path))
    return real == base or real.is_relative_to(base)


def check_inside(path: str | Path, root: str | Path | None = None) -> Path:
    """``path`` itself, or an :class:`InputError` when it leads out of the root."""
    if not is_inside(path, root):
        raise InputError(path, "leads outside the facedrop root (a symbolic link?); "
                               "it is not followed")
    return Path(path)


def ensure_dir(path: str | Path, root: str | Path | None = None) -> Path:
    """Create the folder ``path`` (and its parents) below ``root`` (default: the confinement
    root) without ever creating or writing through a link that leads out of it: a person
    folder in ``review/`` that an untrusted user replaced by a link to ``~/.ssh`` is refused
    here, before anything is written. Returns ``path``."""
    path = Path(path)
    base = Path(root) if root is not None else _confined_to
    if base is None:
        path.mkdir(parents=True, exist_ok=True)
        return path
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        raise InputError(path, "is not inside the facedrop root") from None
    current = base
    for part in parts:
        current = current / part
        try:
            os.mkdir(current)
            continue
        except FileExistsError:
            pass
        if not is_inside(current, base):
            raise InputError(current, "leads outside the facedrop root (a symbolic link?); "
                                      "nothing is written through it")
        if not current.is_dir():
            raise InputError(current, "is in the way: a folder is needed here")
    return path


def kind_of(mode: int) -> str:
    """What a file of ``mode`` is, for a message: "a FIFO", "a socket", "a device"..."""
    return _KINDS.get(stat.S_IFMT(mode), "a special file")


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def open_regular(path: str | Path, limit: int | None = None) -> BinaryIO:
    """A binary file object for the regular file at ``path``; :class:`InputError` for a
    missing file, anything that is not a regular file, a file over ``limit`` bytes, or (when
    confined) a file that lies outside the root."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except IsADirectoryError:
        raise InputError(path, "is a folder, not a file") from None
    except OSError as exc:
        if exc.errno in (errno.ENXIO, errno.ELOOP):  # a socket, or a link loop
            raise InputError(path, "not a regular file; not opened") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise InputError(path, f"is {kind_of(st.st_mode)}, not a regular file; not opened")
        if _confined_to is not None:
            real = _fd_target(fd, path)
            if not (real == _confined_to or real.is_relative_to(_confined_to)):
                raise InputError(path, "leads outside the facedrop root (a symbolic link?); "
                                       "it is not followed")
        if limit is not None and st.st_size > limit:
            raise InputError(path, f"is {_human(st.st_size)}, more than the {_human(limit)} "
                                   "such a file may have")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _fd_target(fd: int, path: Path) -> Path:
    """Where an open descriptor really lies (``/proc/self/fd``; the resolved name elsewhere)."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(os.path.realpath(path))


def read_bytes(path: str | Path, limit: int) -> bytes:
    """The content of a regular file of at most ``limit`` bytes (a file that grows past the
    cap while it is read is refused too)."""
    with open_regular(path, limit) as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise InputError(path, f"is more than the {_human(limit)} such a file may have")
    return data


def read_head(path: str | Path, size: int = HEAD_BYTES) -> bytes:
    """The first ``size`` bytes of a regular file (however large it is)."""
    with open_regular(path) as fh:
        return fh.read(size)


def read_text(path: str | Path, limit: int) -> str:
    data = read_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(path, f"is not UTF-8 text (byte {exc.start})") from None


def load_toml(path: str | Path, limit: int = TOML_LIMIT) -> dict[str, Any]:
    """A TOML file of at most ``limit`` bytes; every problem is an :class:`InputError`."""
    text = read_text(path, limit)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InputError(path, f"is not valid TOML ({exc})") from None
    except RecursionError:
        raise InputError(path, "is not usable TOML (nested too deeply)") from None


def load_json(path: str | Path, limit: int = JSON_LIMIT) -> Any:
    """A JSON file of at most ``limit`` bytes; every problem is an :class:`InputError`."""
    data = read_bytes(path, limit)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(path, f"is not valid JSON ({exc})") from None
    except RecursionError:
        raise InputError(path, "is not usable JSON (nested too deeply)") from None


def media_path(fh: BinaryIO) -> str:
    """A name for an already opened file that libraries taking a file name (PyAV) can open:
    they get the very file that was checked, even if the name was swapped since."""
    name = f"/proc/self/fd/{fh.fileno()}"
    return name if os.path.exists(name) else str(getattr(fh, "name", name))


# --- image headers ------------------------------------------------------------------------

def image_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, GIF, BMP, WebP or TIFF; None when the
    header is not one of those (the decoder will then refuse the data itself)."""
    try:
        if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
            return struct.unpack(">II", head[16:24])
        if head[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", head[6:10])
        if head[:2] == b"BM":
            w, h = struct.unpack("<ii", head[18:26])
            return abs(w), abs(h)
        if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
            return _webp_size(head)
        if head[:4] in (b"II*\x00", b"MM\x00*"):
            return _tiff_size(head)
        if head[:2] == b"\xff\xd8":
            return _jpeg_size(head)
    except struct.error:
        return None
    return None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if kind == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if kind == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _jpeg_size(head: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 9 < len(head):
        if head[pos] != 0xFF:
            pos += 1
            continue
        marker = head[pos + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            pos += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", head[pos + 2:pos + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", head[pos + 5:pos + 9])
            return w, h
        pos += 2 + length
    return None


def _tiff_size(head: bytes) -> tuple[int, int] | None:
    order = "<" if head[:2] == b"II" else ">"
    (offset,) = struct.unpack(order + "I", head[4:8])
    (count,) = struct.unpack(order + "H", head[offset:offset + 2])
    size: dict[int, int] = {}
    for i in range(count):
        entry = head[offset + 2 + 12 * i:offset + 14 + 12 * i]
        tag, kind = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):
            value = struct.unpack(order + ("H" if kind == 3 else "I"),
                                  entry[8:10] if kind == 3 else entry[8:12])[0]
            size[tag] = value
    return (size[256], size[257]) if len(size) == 2 else None


def check_pixels(path: str | Path, width: int, height: int, limit: int = MAX_PIXELS) -> None:
    """:class:`InputError` when a picture of ``width`` x ``height`` is over the pixel limit."""
    if width * height > limit:
        raise InputError(path, f"picture is {width}x{height} ({width * height / 1e6:.0f} "
                               f"megapixels), more than the {limit / 1e6:.0f} megapixels "
                               "facedrop decodes; not opened")


def check_image_header(path: str | Path, data: bytes, limit: int = MAX_PIXELS) -> None:
    """Refuse an encoded image whose header declares more than ``limit`` pixels."""
    size = image_size(data)
    if size is not None:
        check_pixels(path, size[0], size[1], limit)


__all__ = ["IMAGE_LIMIT", "JSON_LIMIT", "MAX_PIXELS", "TOML_LIMIT", "check_image_header",
           "check_inside", "check_pixels", "kind_of", "confine", "confinement", "ensure_dir", "image_size",
           "is_inside",
           "load_json", "load_toml", "media_path", "open_regular", "read_bytes", "read_head",
           "read_text"]
