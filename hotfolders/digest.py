"""Content hashes: how facedrop recognises a file whatever its name.

sha256 names a source in alignments files and face metadata, spots the same video dropped
twice, and ties a provenance manifest to the exact input and output bytes. Kept free of heavy
imports so the daemon can hash a dropped file without loading the face engine.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    """Hex sha256 of a file's content, read in chunks (videos can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


__all__ = ["sha256_file"]
