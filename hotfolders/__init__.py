"""facedrop's face engine and the stages each hot folder triggers.

Stages (one module each, one entry function each): :mod:`.extract`, :mod:`.sort`,
:mod:`.clean`, :mod:`.coverage`, :mod:`.training`, :mod:`.convert`, :mod:`.draw`. The engine
never imports the daemon or the status page.
"""
from __future__ import annotations


def version() -> str:
    """The installed facedrop version (recorded in alignments and provenance manifests)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("facedrop")
    except PackageNotFoundError:
        return "0+unknown"
