"""The model folder: networks, atomic saves with backups, snapshots, and swapping faces.

Layout of ``models/<name>/``::

    state.json              settings frozen at creation, iterations, losses (readers' copy)
    save/                   the latest save: state.json, encoder / decoder_a / decoder_b
                            .weights.h5, optimizer.npz
    save.bak/               the save before it (used when ``save`` is missing or damaged)
    best/                   the save with the lowest loss so far (the last fallback)
    snapshots/<iterations>/ periodic copies, the last few kept
    timelapse/<iterations>.jpg, timelapse/samples.npz
    previews/<key>.jpg      a waiting target's frame swapped by the latest save
    loss.csv                iteration, loss_a, loss_b
    coverage.json, .png     does B cover A's poses (advice)

:class:`ModelFolder` owns these names: the trainer, the daemon and the status page ask it.

A save is written into a temporary folder, fsynced, and swapped in with renames, so a kill at
any moment leaves either the new save or the previous one intact; loading tries ``save``, then
``save.bak``, then ``best``, then the snapshots. The encoder is stored once (one set of
weights), each decoder on its own. Nothing is pickled: weights are Keras ``.weights.h5``
(HDF5), the optimizer state a plain ``.npz`` read with ``allow_pickle=False``, settings JSON.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import quiet
from .align import compose, crop_matrix, sub_crop_matrix
from .atomic import fsync_dir, write_json
from .errors import InputError

log = logging.getLogger(__name__)

STATE_VERSION = 1
FROZEN = ("trainer", "input_size", "output_size", "coverage", "padding", "mask", "loss")
SAVE, BACKUP, BEST, DAMAGED = "save", "save.bak", "best", "save.damaged"
PARTS = ("encoder", "decoder_a", "decoder_b")
_POLICY_LOCK = threading.Lock()  # Keras' dtype policy is process-global while layers are built


# ---------------------------------------------------------------------------------------------
# files

def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(folder)


def read_state(model_dir: str | Path) -> dict[str, Any] | None:
    """The model's state, or None for a folder that holds no model yet.

    The readers' copy ``state.json`` normally answers; if a kill came between a first save and
    that copy, the save's own ``state.json`` does.
    """
    model_dir = Path(model_dir)
    for path in (model_dir / "state.json", model_dir / SAVE / "state.json",
                 model_dir / BACKUP / "state.json"):
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise InputError(path, f"model state is unreadable ({exc.strerror or exc})") from None
        try:
            state = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(path, f"model state is unreadable (not JSON: {exc})") from None
        if not isinstance(state, dict) or "trainer" not in state:
            raise InputError(path, "not a facedrop model state")
        if int(state.get("version", 0)) > STATE_VERSION:
            raise InputError(path, f"model state version {state.get('version')} is newer than "
                                   "this facedrop understands; upgrade facedrop")
        return state
    return None


def clean_temporary(model_dir: Path) -> None:
    """Remove what a killed save left behind (``.save-*.tmp``, ``.best.tmp`` ...), after
    putting back a ``best/`` or snapshot that a kill left parked."""
    _recover_copies(Path(model_dir))
    for path in Path(model_dir).glob(".*.tmp"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    for pattern in ("snapshots/.*.tmp", "timelapse/.*.tmp*"):
        for path in Path(model_dir).glob(pattern):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)


class ModelFolder:
    """The layout of one model folder, and the questions asked of it.

    ``ready`` is the daemon's "may its targets be converted": the model stopped by itself
    (a plateau, or its cap) and has a save to convert with.
    """

    STATE, LOSS_LOG, TIMELAPSE, SNAPSHOTS, PREVIEWS = (
        "state.json", "loss.csv", "timelapse", "snapshots", "previews")
    COVERAGE_JSON, COVERAGE_PNG = "coverage.json", "coverage.png"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.path)!r})"

    @property
    def name(self) -> str:
        return self.path.name

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def state(self) -> dict[str, Any] | None:
        """The readers' copy of the state (see :func:`read_state`); InputError if damaged."""
        return read_state(self.path)

    def saves(self) -> list[Path]:
        return candidate_saves(self.path)

    def has_save(self) -> bool:
        return bool(self.saves())

    @property
    def timelapse(self) -> Path:
        return self.path / self.TIMELAPSE

    @property
    def snapshots(self) -> Path:
        return self.path / self.SNAPSHOTS

    @property
    def loss_log(self) -> Path:
        return self.path / self.LOSS_LOG

    def preview(self, key: str | int) -> Path:
        """Where the preview frame of waiting target ``key`` (the daemon: its job id) goes."""
        return self.path / self.PREVIEWS / f"{key}.jpg"


def stopped(state: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where and why a model stopped by itself (``{"reason", "iteration", ...}``), or None."""
    value = (state or {}).get("stopped")
    return value if isinstance(value, dict) else None


def describe_stop(record: dict[str, Any] | None) -> str:
    """One line for a model's ``stopped`` record: where and why it stopped."""
    if not record:
        return ""
    where = f"iteration {record.get('iteration')}"
    if record.get("reason") == "plateau":
        gain = record.get("gain")
        return (f"stopped at {where}: the loss improved by {100 * (gain or 0):.2f}% over its last "
                f"{record.get('window', '?')} saves (less than "
                f"{100 * record.get('threshold', 0.01):g}%)")
    return f"stopped at {where}: reached max_iterations ({record.get('max_iterations')})"


# ---------------------------------------------------------------------------------------------
# networks

class Networks:
    """One shared encoder and two decoders of the same structure, separate weights."""

    def __init__(self, trainer: str, policy: str = "float32") -> None:
        quiet.import_tensorflow()
        import keras

        from .plugins.train import load_trainer

        plugin = load_trainer(trainer)
        self.trainer = trainer
        self.policy = policy
        self.input_size: int = plugin.INPUT_SIZE
        self.output_size: int = plugin.OUTPUT_SIZE
        with _POLICY_LOCK:
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

    def tune(self, batch_size: int) -> list[dict[str, Any]]:
        """Run each convolution that oneDNN runs poorly in the form measured fastest on this
        machine for training at ``batch_size`` (:func:`hotfolders.convolution.tune`); call
        before tracing a step. The encoder is measured at twice the batch, as the training step
        runs it: A and B in one batch."""
        from . import convolution

        return (convolution.tune([self.encoder], 2 * batch_size)
                + convolution.tune([self.decoder_a, self.decoder_b], batch_size))

    @property
    def trainable_variables(self) -> list:
        return (self.encoder.trainable_variables + self.decoder_a.trainable_variables
                + self.decoder_b.trainable_variables)

    def save_weights(self, folder: Path) -> None:
        for name in PARTS:
            self.part(name).save_weights(str(folder / f"{name}.weights.h5"))

    def load_weights(self, folder: Path) -> None:
        for name in PARTS:
            path = folder / f"{name}.weights.h5"
            if not path.is_file():
                raise FileNotFoundError(f"{path.name} is missing")
            self.part(name).load_weights(str(path))


def _adam(optimizer):
    """The Adam inside a loss-scale wrapper (float16), or the optimizer itself."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def save_optimizer(optimizer, path: Path) -> None:
    """Adam's step count and moments, in the order of the model's variables.

    Only the inner Adam is stored (not a float16 loss scale), so a model trained on a GPU in
    float16 resumes on a CPU in float32 or bfloat16 and the other way round.
    """
    adam = _adam(optimizer)
    arrays = {f"v{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(adam.variables)}
    arrays["paths"] = np.array([str(getattr(v, "path", v.name)) for v in adam.variables])
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def load_optimizer(optimizer, variables: list, path: Path) -> None:
    """Restore the state written by :func:`save_optimizer` (shapes checked one by one)."""
    optimizer.build(variables)
    adam = _adam(optimizer)
    with np.load(path, allow_pickle=False) as data:
        keys = sorted(k for k in data.files if k.startswith("v"))
        if len(keys) != len(adam.variables):
            raise ValueError(f"optimizer state has {len(keys)} arrays, the model needs "
                             f"{len(adam.variables)}")
        values = [data[k] for k in keys]
    for var, value in zip(adam.variables, values):
        if tuple(var.shape) != tuple(value.shape):
            raise ValueError(f"optimizer variable {var.path} is {tuple(var.shape)}, the save has "
                             f"{tuple(value.shape)}")
    for var, value in zip(adam.variables, values):
        if not str(getattr(var, "path", var.name)).endswith("learning_rate"):
            var.assign(value)  # the learning rate is this run's choice, not the save's


# ---------------------------------------------------------------------------------------------
# saves

def save_checkpoint(model_dir: Path, nets: Networks, optimizer, state: dict[str, Any]) -> None:
    """Atomically replace ``save/`` (the previous one becomes ``save.bak/``).

    Order: write and fsync ``.save-<pid>.tmp/``; drop the old backup; rename ``save`` ->
    ``save.bak``; rename the temp folder -> ``save``; then the readers' ``state.json``. A kill
    between any two steps leaves ``save`` or ``save.bak`` complete, and loading tries both.
    """
    model_dir = Path(model_dir)
    tmp = model_dir / f".save-{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        nets.save_weights(tmp)
        save_optimizer(optimizer, tmp / "optimizer.npz")
        write_json(tmp / "state.json", state)
        _fsync_tree(tmp)
    except BaseException:  # a full disk: give the space back, the last save stands
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    save, backup = model_dir / SAVE, model_dir / BACKUP
    if save.exists():
        old = model_dir / f".{BACKUP}-old.tmp"
        if backup.exists():
            os.replace(backup, old)
        os.replace(save, backup)
        shutil.rmtree(old, ignore_errors=True)
    os.replace(tmp, save)
    fsync_dir(model_dir)
    write_json(model_dir / "state.json", state)


def rewrite_state(model_dir: Path, state: dict[str, Any]) -> None:
    """Replace the state of the current save and the readers' copy, weights untouched (a
    model that stopped without training further records why). Each file is replaced by a
    rename, so ``best/`` or a snapshot sharing the save's files by hard link keeps its own."""
    write_json(Path(model_dir) / SAVE / "state.json", state)
    write_json(Path(model_dir) / "state.json", state)


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link (saves are written once and never changed in place), else copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def copy_save(model_dir: Path, dest: Path) -> None:
    """Copy the current save to ``dest`` (snapshots, best) so ``dest`` is never half-written.

    Files are hard-linked where the file system allows, so a best copy or a snapshot of a
    600 MB save costs no disk space or time until the save moves on.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    old = _previous(dest)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(Path(model_dir) / SAVE, tmp, copy_function=_link_or_copy)
        _fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        os.replace(dest, old)
    os.replace(tmp, dest)  # a kill just before this leaves only the old copy: see _previous
    shutil.rmtree(old, ignore_errors=True)
    fsync_dir(dest.parent)


def _previous(dest: Path) -> Path:
    """Where :func:`copy_save` parks the copy it replaces, until the new one is in place."""
    return dest.with_name(f".{dest.name}-old.tmp")


def _recover_copies(model_dir: Path) -> None:
    """A kill between the two renames of :func:`copy_save` left ``best/`` or a snapshot only
    under its parked name: it is complete (it was the current copy), so it goes back."""
    parked = list(model_dir.glob(f".{BEST}-old.tmp"))
    if (model_dir / "snapshots").is_dir():
        parked += list((model_dir / "snapshots").glob(".*-old.tmp"))
    for path in parked:
        dest = path.with_name(path.name[1:-len("-old.tmp")])
        if path.is_dir() and not dest.exists():
            os.replace(path, dest)
            log.info("restored %s after an interrupted copy", dest)


def candidate_saves(model_dir: Path) -> list[Path]:
    """Where a model can be loaded from, in order of preference."""
    model_dir = Path(model_dir)
    out = [model_dir / SAVE, model_dir / BACKUP, model_dir / BEST]
    snaps = model_dir / "snapshots"
    if snaps.is_dir():
        out += sorted((p for p in snaps.iterdir() if p.is_dir() and p.name.isdigit()),
                      key=lambda p: int(p.name), reverse=True)
    return [p for p in out if p.is_dir()]


def load_checkpoint(model_dir: Path, nets: Networks, optimizer=None
                    ) -> tuple[dict[str, Any], Path]:
    """Load the newest intact save: ``save/``, else ``save.bak/``, ``best/``, snapshots.

    Returns the save's state and the folder it came from. Raises InputError when there is no
    save, or when every save is damaged (nothing is changed on disk either way).
    """
    model_dir = Path(model_dir)
    errors = []
    for folder in candidate_saves(model_dir):
        try:
            state = json.loads((folder / "state.json").read_text())
            if not isinstance(state, dict) or "iterations" not in state:
                raise ValueError("state.json holds no iteration count")
            nets.load_weights(folder)
            if optimizer is not None:
                load_optimizer(optimizer, nets.trainable_variables, folder / "optimizer.npz")
        except Exception as exc:  # any damage: try the next one
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            errors.append(f"{folder.name}: {reason}")
            log.warning("model save %s is damaged (%s); trying the next one", folder, reason)
            continue
        if folder.name != SAVE:
            log.warning("loaded %s from %s (iteration %s): the newer save was missing or "
                        "damaged", model_dir, folder.relative_to(model_dir), state["iterations"])
        return state, folder
    if errors:
        raise InputError(model_dir, "every save of this model is damaged: " + "; ".join(errors))
    raise InputError(model_dir, "model has no save yet (train it first)")


# ---------------------------------------------------------------------------------------------
# conversion's view of a model

class SwapModel:
    """A trained model ready to swap faces (what the conversion stage uses).

    ``swap`` runs compiled graphs at a few fixed batch sizes (1, 2, 4, 8, 16: a batch is padded
    up to the next one and longer inputs are chunked), so each shape is traced once and no
    Keras ``predict`` overhead is paid per call.
    """

    BUCKETS = (1, 2, 4, 8, 16)
    DIRECTIONS = ("a2b", "b2a", "a2a", "b2b")

    def __init__(self, name: str, trainer: str, iterations: int, input_size: int,
                 output_size: int, coverage: float, padding: float, nets: Networks,
                 mask: str = "extended") -> None:
        self.name = name
        self.trainer = trainer
        self.iterations = iterations
        self.input_size = input_size
        self.output_size = output_size
        self.coverage = coverage
        self.padding = padding
        self.mask = mask
        self.nets = nets
        self._fns: dict[tuple[str, int], Any] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"SwapModel({self.name!r}, trainer={self.trainer!r}, iterations={self.iterations}, "
                f"{self.input_size}->{self.output_size} px, coverage={self.coverage})")

    def _fn(self, direction: str, batch: int):
        key = (direction, batch)
        with self._lock:
            if key not in self._fns:
                import tensorflow as tf

                decoder = self.nets.decoder_b if direction in ("a2b", "b2b") else self.nets.decoder_a
                encoder = self.nets.encoder
                spec = tf.TensorSpec((batch, self.input_size, self.input_size, 3), tf.uint8)

                @tf.function(input_signature=[spec])
                def run(faces):
                    x = tf.cast(faces, tf.float32) * (1.0 / 255.0)
                    y = decoder(encoder(x, training=False), training=False)
                    return tf.clip_by_value(tf.cast(y, tf.float32), 0.0, 1.0)

                self._fns[key] = run.get_concrete_function()
            return self._fns[key]

    def swap(self, faces: np.ndarray, direction: str = "a2b") -> np.ndarray:
        """Faces (N x input x input x 3 uint8 RGB, cropped to ``coverage``) through the shared
        encoder and the other side's decoder: N x output x output x 3 float32 in [0, 1].

        ``a2a`` / ``b2b`` rebuild a face with its own decoder (useful to judge training).
        """
        if direction not in self.DIRECTIONS:
            raise ValueError(f"direction must be one of {', '.join(self.DIRECTIONS)}")
        faces = np.asarray(faces)
        size = self.input_size
        if faces.ndim != 4 or faces.shape[1:] != (size, size, 3):
            raise ValueError(f"faces must be N x {size} x {size} x 3, got {faces.shape}")
        out = np.empty((len(faces), self.output_size, self.output_size, 3), np.float32)
        top = self.BUCKETS[-1]
        for start in range(0, len(faces), top):
            chunk = np.ascontiguousarray(faces[start:start + top], dtype=np.uint8)
            n = len(chunk)
            batch = next(b for b in self.BUCKETS if b >= n)
            if batch != n:
                chunk = np.concatenate([chunk, np.zeros((batch - n, size, size, 3), np.uint8)])
            out[start:start + n] = self._fn(direction, batch)(chunk).numpy()[:n]
        return out


def load_swap_model(model_dir: str | Path) -> SwapModel:
    """Load the latest intact save of a model for conversion (read-only: nothing is written)."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(model_dir, "model folder not found")
    state = read_state(model_dir)
    if state is None or not candidate_saves(model_dir):
        raise InputError(model_dir, "model has no save yet (train it first)")
    try:
        nets = Networks(state["trainer"], "float32")
    except ValueError as exc:
        raise InputError(model_dir / "state.json", str(exc)) from None
    saved, _ = load_checkpoint(model_dir, nets)
    state = {**state, **saved}
    return SwapModel(name=str(state.get("name", model_dir.name)), trainer=state["trainer"],
                     iterations=int(state["iterations"]), input_size=nets.input_size,
                     output_size=nets.output_size, coverage=float(state["coverage"]),
                     padding=float(state["padding"]), nets=nets,
                     mask=str(state.get("mask", "extended")))


def face_crop_matrix(landmarks68: np.ndarray, model: SwapModel) -> np.ndarray:
    """2x3 matrix: frame -> the model's input crop (aligned face, centre ``coverage``)."""
    size = 256  # any working size: the composition is exact
    return compose(sub_crop_matrix(size, model.coverage, model.input_size),
                   crop_matrix(landmarks68, size, model.padding))


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
