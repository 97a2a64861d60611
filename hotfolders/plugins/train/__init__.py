"""Trainer plugins: one small module per model layout, looked up by name.

Each module defines ``INPUT_SIZE``, ``OUTPUT_SIZE``, ``DESCRIPTION``, ``build_encoder()`` and
``build_decoder(name)``. The trainer builds ONE encoder and TWO decoders from the same builder,
so the decoders share a structure but never weights.
"""
from __future__ import annotations

import importlib
from types import ModuleType

TRAINERS = ("lightweight", "original", "dfaker")


def load_trainer(name: str) -> ModuleType:
    """The plugin module for a trainer name (``lightweight``, ``original``, ``dfaker``)."""
    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r}; choose one of {', '.join(TRAINERS)}")
    return importlib.import_module(f"{__name__}.{name}")
