"""The model folder: networks, atomic saves with a backup, snapshots, and swapping faces.

Layout of ``models/<name>/``::

    state.json              settings frozen at creation, iterations, best loss (readers' copy)
    save/                   the latest save: state.json, encoder / decoder_a / decoder_b
                            .weights.h5, optimizer.npz
    save.bak/               the save before it (used when ``save`` is missing or damaged)
    best/                   the save with the lowest loss so far
    snapshots/<iterations>/ periodic copies, the last few kept
    timelapse/<iterations>.jpg, timelapse/samples.npz
    loss.csv                iteration, loss_a, loss_b

A save is written into a temporary folder, fsynced, and swapped in with renames, so a kill at
any moment leaves either the new save or the previous one intact. Nothing is pickled: weights
are HDF5 (Keras), optimizer state is a plain ``.npz`` loaded with ``allow_pickle=False``.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import quiet
from .align import compose, crop_matrix, sub_crop_matrix
from .errors import InputError

log = logging.getLogger(__name__)

STATE_VERSION = 1
FROZEN = ("trainer", "input_size", "output_size", "coverage", "padding", "mask")
SAVE, BACKUP, BEST = "save", "save.bak", "best"
PARTS = ("encoder", "decoder_a", "decoder_b")


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.iterdir(), folder]:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_state(model_dir: Path) -> dict[str, Any] | None:
    """The readers' copy of the state, or None for a model never saved."""
    path = Path(model_dir) / "state.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise InputError(path, f"model state is unreadable ({exc})") from None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Networks:
    """One shared encoder and two decoders of the same structure, separate weights."""

    def __init__(self, trainer: str, policy: str = "float32") -> None:
        quiet.import_tensorflow()
        import keras

        from .plugins.train import load_trainer

        plugin = load_trainer(trainer)
        self.trainer = trainer
        self.input_size = plugin.INPUT_SIZE
        self.output_size = plugin.OUTPUT_SIZE
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(policy)
        try:
            self.encoder = plugin.build_encoder()
            self.decoder_a = plugin.build_decoder("decoder_a")
            self.decoder_b = plugin.build_decoder("decoder_b")
        finally:
            keras.config.set_dtype_policy(previous)

    def part(self, name: str):
        return getattr(self, name)

    @property
    def trainable_variables(self) -> list:
        return (self.encoder.trainable_variables + self.decoder_a.trainable_variables
                + self.decoder_b.trainable_variables)

    def save_weights(self, folder: Path) -> None:
        for name in PARTS:
            self.part(name).save_weights(str(folder / f"{name}.weights.h5"))

    def load_weights(self, folder: Path) -> None:
        for name in PARTS:
            self.part(name).load_weights(str(folder / f"{name}.weights.h5"))


def save_optimizer(optimizer, path: Path) -> None:
    arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(optimizer.variables)}
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_optimizer(optimizer, variables: list, path: Path) -> None:
    """Restore optimizer state (moments, iteration count) saved by :func:`save_optimizer`."""
    optimizer.build(variables)
    with np.load(path, allow_pickle=False) as data:
        keys = sorted(data.files)
        if len(keys) != len(optimizer.variables):
            raise ValueError(f"optimizer state has {len(keys)} arrays, model needs "
                             f"{len(optimizer.variables)}")
        for var, key in zip(optimizer.variables, keys):
            var.assign(data[key])


def save_checkpoint(model_dir: Path, nets: Networks, optimizer, state: dict[str, Any]) -> None:
    """Atomically replace ``save/`` (keeping the previous one as ``save.bak/``)."""
    model_dir = Path(model_dir)
    tmp = model_dir / f".save-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    nets.save_weights(tmp)
    save_optimizer(optimizer, tmp / "optimizer.npz")
    write_json_atomic(tmp / "state.json", state)
    _fsync_tree(tmp)
    save, backup = model_dir / SAVE, model_dir / BACKUP
    if save.exists():
        shutil.rmtree(backup, ignore_errors=True)
        os.replace(save, backup)
    os.replace(tmp, save)
    write_json_atomic(model_dir / "state.json", state)


def copy_save(model_dir: Path, dest: Path) -> None:
    """Copy the current save to ``dest`` (snapshots, best) via a temp name."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(Path(model_dir) / SAVE, tmp)
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(tmp, dest)


def load_checkpoint(model_dir: Path, nets: Networks, optimizer=None) -> dict[str, Any]:
    """Load ``save/``, falling back to ``save.bak/`` if it is missing or damaged."""
    model_dir = Path(model_dir)
    errors = []
    for name in (SAVE, BACKUP):
        folder = model_dir / name
        if not folder.exists():
            continue
        try:
            state = json.loads((folder / "state.json").read_text())
            nets.load_weights(folder)
            if optimizer is not None:
                load_optimizer(optimizer, nets.trainable_variables, folder / "optimizer.npz")
        except Exception as exc:  # any damage: try the backup
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
            log.warning("model save %s is damaged (%s); trying the backup", folder, exc)
            continue
        if name == BACKUP:
            log.warning("resumed %s from its backup save (iteration %s)", model_dir,
                        state.get("iterations"))
        return state
    if errors:
        raise InputError(model_dir, "every save of this model is damaged: " + "; ".join(errors))
    raise InputError(model_dir, "model has no save yet (train it first)")


@dataclass
class SwapModel:
    """A trained model ready to swap faces (the conversion stage's view of a model)."""

    name: str
    trainer: str
    iterations: int
    input_size: int
    output_size: int
    coverage: float
    padding: float
    nets: Networks

    def __post_init__(self) -> None:
        import tensorflow as tf

        spec = tf.TensorSpec((None, self.input_size, self.input_size, 3), tf.uint8)

        def run(decoder):
            @tf.function(input_signature=[spec], reduce_retracing=True)
            def fn(faces):
                x = tf.cast(faces, tf.float32) / 255.0
                return tf.cast(decoder(self.nets.encoder(x, training=False), training=False),
                               tf.float32)
            return fn

        self._fns = {"a2b": run(self.nets.decoder_b), "b2a": run(self.nets.decoder_a),
                     "a2a": run(self.nets.decoder_a), "b2b": run(self.nets.decoder_b)}

    def swap(self, faces: np.ndarray, direction: str = "a2b") -> np.ndarray:
        """Faces (N x input x input x 3 uint8 RGB, cropped to ``coverage``) through the
        shared encoder and the other side's decoder: N x output x output x 3 float32 in [0, 1].
        """
        if direction not in self._fns:
            raise ValueError(f"direction must be one of {', '.join(self._fns)}")
        if len(faces) == 0:
            return np.zeros((0, self.output_size, self.output_size, 3), np.float32)
        return self._fns[direction](np.ascontiguousarray(faces, dtype=np.uint8)).numpy()


def load_swap_model(model_dir: str | Path) -> SwapModel:
    """Load the latest good save of a model for conversion."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    state = read_state(model_dir)
    if state is None or not (model_dir / SAVE).exists() and not (model_dir / BACKUP).exists():
        raise InputError(model_dir, "model has no save yet (train it first)")
    nets = Networks(state["trainer"], "float32")
    state = load_checkpoint(model_dir, nets)
    return SwapModel(name=state.get("name", model_dir.name), trainer=state["trainer"],
                     iterations=int(state["iterations"]), input_size=nets.input_size,
                     output_size=nets.output_size, coverage=float(state["coverage"]),
                     padding=float(state["padding"]), nets=nets)


def face_crop_matrix(landmarks68: np.ndarray, model: SwapModel) -> np.ndarray:
    """2x3 matrix: frame -> the model's input crop (aligned face, centre ``coverage``)."""
    size = 256  # any working size: the composition is exact
    return compose(sub_crop_matrix(size, model.coverage, model.input_size),
                   crop_matrix(landmarks68, size, model.padding))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
