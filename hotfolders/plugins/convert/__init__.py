"""Conversion plugins, one small module per method, looked up by their CLI names.

``color/<name>.py`` defines ``adjust(face, original, mask) -> face`` working on float32 RGB in
[0, 1] at the model's output size (``mask`` is HxWx1); ``sharpen/<name>.py`` defines
``sharpen(image, radius=1.0) -> image`` on float32 RGB (``radius``: frame pixels per model
pixel). A CLI name maps to a module by replacing ``-`` with ``_`` (``avg-color`` ->
``avg_color.py``), as in faceswap; a new method is one new module plus its name here.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable

COLORS = ("avg-color", "color-transfer", "match-hist", "seamless", "none")
SHARPENERS = ("none", "box", "gaussian", "unsharp")
# which face of a frame with several to swap (not a plugin: the converter does the choosing)
FACE_SELECT = ("largest", "center", "person", "all")


def _load(kind: str, name: str, choices: tuple[str, ...], attr: str) -> Callable:
    if name not in choices:
        raise ValueError(f"unknown {kind} {name!r}; choose one of {', '.join(choices)}")
    module = importlib.import_module(f"{__name__}.{kind}.{name.replace('-', '_')}")
    return getattr(module, attr)


def load_color(name: str) -> Callable:
    return _load("color", name, COLORS, "adjust")


def load_sharpen(name: str) -> Callable:
    return _load("sharpen", name, SHARPENERS, "sharpen")
