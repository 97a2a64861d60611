"""Small JPEG thumbnails of face images for the page.

A face PNG is 512 px with a few kilobytes of metadata; a page shows dozens of them at 64 px.
Shrinking them server-side (once, cached by path, mtime and size) keeps the page light.
"""
from __future__ import annotations

import threading
from pathlib import Path

from hotfolders import safefs
from hotfolders.errors import InputError


class ThumbCache:
    """Small JPEG thumbnails keyed by (path, mtime, size); a bounded dict, oldest out first."""

    def __init__(self, limit: int = 512) -> None:
        self._lock = threading.Lock()
        self._items: dict[tuple, bytes] = {}
        self._limit = limit

    def get(self, path: Path, size: int) -> bytes | None:
        try:
            st = path.stat()
        except OSError:
            return None
        key = (str(path), st.st_mtime_ns, st.st_size, size)
        with self._lock:
            hit = self._items.get(key)
        if hit is not None:
            return hit
        data = make_thumb(path, size)
        if data is None:
            return None
        with self._lock:
            if len(self._items) >= self._limit:
                self._items.pop(next(iter(self._items)))
            self._items[key] = data
        return data


def make_thumb(path: Path, size: int) -> bytes | None:
    """Decode an image and shrink it to fit ``size`` px (never enlarged); None if unreadable,
    not a regular file, or larger than the pixel limit (read from the header first: a 389 KB
    PNG of 20000x20000 pixels would otherwise cost 1.2 GB to decode)."""
    import cv2  # after hotfolders: its pixel ceiling applies to OpenCV too
    import numpy as np

    try:
        data = safefs.read_bytes(path, safefs.IMAGE_LIMIT)
        safefs.check_image_header(path, data)
    except (InputError, OSError):
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    h, w = image.shape[:2]
    scale = min(1.0, size / max(h, w))
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return buf.tobytes() if ok else None
