"""Trainer plugins: one small module per model layout, looked up by name.

Each module defines ``INPUT_SIZE``, ``OUTPUT_SIZE``, ``DESCRIPTION``, ``LEARNING_RATE`` (Adam's
step for a new model of that layout), ``build_encoder()`` and ``build_decoder(name)``. A model is ONE encoder and TWO decoders built by the same
``build_decoder``, so the decoders share a structure but never weights. Adding a trainer is
adding a module here and its name to :data:`TRAINERS`.
"""
from __future__ import annotations

import importlib
from types import ModuleType

TRAINERS = ("lightweight", "original", "dfaker")
DEFAULT_TRAINER = "lightweight"


def load_trainer(name: str) -> ModuleType:
    """The plugin module for a trainer name (``lightweight``, ``original``, ``dfaker``)."""
    if name not in TRAINERS:
        raise ValueError(f"unknown trainer {name!r}; choose one of {', '.join(TRAINERS)}")
    return importlib.import_module(f"{__name__}.{name}")


def describe() -> dict[str, str]:
    """Trainer name -> one-line description, for help texts."""
    return {name: load_trainer(name).DESCRIPTION for name in TRAINERS}
