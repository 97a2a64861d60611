"""Content hashes: how facedrop recognises a file whatever its name.

sha256 names a source in alignments files and face metadata, spots the same video dropped
twice, and ties a provenance manifest to the exact input and output bytes. Kept free of heavy
imports so the daemon can hash a dropped file without loading the face engine.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from .safefs import open_regular

CHUNK = 1 << 20
PROGRESS_EVERY = 256  # chunks (256 MB) between progress calls


def sha256_file(path: str | Path, chunk: int = CHUNK,
                progress: Callable[[], None] | None = None) -> str:
    """Hex sha256 of a regular file's content, read in chunks (videos can be gigabytes);
    ``progress()`` is called every 256 MB, so a caller can show it is not hung."""
    digest = hashlib.sha256()
    with open_regular(path) as fh:
        n = 0
        while block := fh.read(chunk):
            digest.update(block)
            n += 1
            if progress is not None and n % PROGRESS_EVERY == 0:
                progress()
    return digest.hexdigest()


__all__ = ["sha256_file"]
