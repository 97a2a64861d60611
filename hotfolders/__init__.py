"""facedrop's face engine and the stages each hot folder triggers.

Stages (one module each, one entry function each): :mod:`.extract`, :mod:`.sort`,
:mod:`.clean`, :mod:`.coverage`, :mod:`.training`, :mod:`.convert`, :mod:`.draw`. The engine
never imports the daemon or the status page.
"""
from __future__ import annotations

import os

# OpenCV's own ceiling on decoded pixels (read once, when cv2 loads): a backstop behind the
# header check in :mod:`.safefs`, for formats whose size that check cannot read
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", "50000000")


def version() -> str:
    """The installed facedrop version (recorded in alignments and provenance manifests)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as _version

    try:
        return _version("facedrop")
    except PackageNotFoundError:
        return "0+unknown"
