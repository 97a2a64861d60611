"""Training stage: one shared encoder, one decoder per person, saves that survive a kill.

Entry point: :func:`train`. Each iteration trains both sides on a batch of their own faces
(A -> encoder -> decoder A, B -> encoder -> decoder B); swapping later means decoding A's code
with B's decoder. The loss only counts pixels inside the face mask, with extra weight on eyes
and mouth. Training resumes exactly where the last save left it: iteration count, Adam's
moments and step count, and the loss history (``loss.csv`` rows after the save are dropped).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic
from .convolution import describe as describe_convolutions
from .dataset import FaceSet, batches, load_faces, sample_indices
from .errors import InputError
from .masks import MASK_TYPES
from .model import (BEST, DAMAGED, FROZEN, SAVE, STATE_VERSION, Networks, candidate_saves,
                    clean_temporary, copy_save, describe_stop, load_checkpoint, now,
                    read_state, rewrite_state, save_checkpoint)
from .plugins.train import DEFAULT_TRAINER, TRAINERS, load_trainer
from . import threads as thread_layout
from .precision import PRECISIONS, candidates as precision_candidates, choose as choose_precision
from .precision import describe as describe_precision, reusable as precision_reusable

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]
Progress = Callable[[int, int, dict[str, Any]], None]

LOSSES = ("mae+dssim", "mae", "mse", "mse+dssim")
# the loss's mask: a landmark mask, or "occlusion" (extended minus what covers the face, by
# each person's occlusion network beside their approved sets: facedrop mask train)
TRAIN_MASKS = (*MASK_TYPES, "occlusion")
STOPS = ("plateau", "iterations")  # when a model stops by itself (besides a stop request)
# the random warp of the input faces: always, never, or until the loss plateaus or training is
# WARP_OFF_SHARE of the way to its iteration cap, then without it (faceswap's advice for the end
# of training, to bring out detail; DeepFaceLab's users turn random_warp off late as well)
WARPS = ("always", "until-plateau", "never")
WARP_OFF_SHARE = 0.75
DEFAULTS: dict[str, Any] = {"trainer": DEFAULT_TRAINER, "coverage": 0.85, "mask": "extended",
                            "loss": "mae+dssim"}
RECOVERIES = 3            # a diverged loss resumes from the last save at half the rate, so often
EYE_MOUTH_WEIGHT = 3.0    # loss weight of eyes and mouth relative to the rest of the face
# Adam, beta_1 0.5, beta_2 0.99: faceswap's defaults. A new model steps at its trainer's own
# LEARNING_RATE; this is the step of models made before trainers declared one
LEARNING_RATE = 5e-5
PLATEAU_MIN_SAVES = 4     # --stop-on-plateau compares the last window of saves with the one
PLATEAU_SHARE = 0.2       # before; a window is 20 % of the saves so far (at least 4 saves) ...
PLATEAU_GAIN = 0.01       # ... and training stops when it gained less than 1 % (by default)
SAMPLES = 6               # timelapse faces per side


class TrainingDiverged(InputError):
    """The loss became NaN or infinite; the last good save is untouched."""


@dataclass
class TrainResult:
    model_dir: Path
    iterations: int
    loss_a: float
    loss_b: float
    stopped_because: str          # "iterations", "stop request", "plateau"
    seconds: float
    images_per_second: float      # faces through the network per second, A and B together
    start_iteration: int = 0
    precision: str = "float32"
    precision_choice: dict[str, Any] | None = None  # what precision = "auto" measured
    loaded_from: str | None = None  # "save", "save.bak", "best", "snapshots/N" on resume
    plateau_gain: float | None = None
    warnings: list[str] = field(default_factory=list)
    threads: str | None = None  # the thread layout (None: TensorFlow's default, not chosen)
    threads_choice: dict[str, Any] | None = None  # what threads = "auto" measured


# ---------------------------------------------------------------------------------------------
# loss, step

def ssim(x, y, filter_size: int, sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03):
    """``tf.image.ssim`` of images in [0, 1], per image, with its Gaussian window applied as
    two 1-D passes (the window is the outer product of a 1-D Gaussian with itself): the same
    value, 14 instead of 49 multiplies a pixel at 7x7. On a 2-core AMX Xeon its forward and
    backward take 3.6 instead of 5.5 ms for 16 faces of 64 px (15 instead of 41 at 128 px,
    11x11): ``lightweight``'s training step 1.03x (float32) to 1.07x (bfloat16) faster."""
    import tensorflow as tf

    coords = np.arange(filter_size, dtype=np.float64) - (filter_size - 1) / 2.0
    weights = np.exp(-0.5 * coords ** 2 / sigma ** 2)
    weights = (weights / weights.sum()).astype(np.float32)
    channels = x.shape[-1]
    rows = tf.constant(np.tile(weights.reshape(-1, 1, 1, 1), (1, 1, channels, 1)))
    cols = tf.constant(np.tile(weights.reshape(1, -1, 1, 1), (1, 1, channels, 1)))

    def blur(image):
        image = tf.nn.depthwise_conv2d(image, rows, [1, 1, 1, 1], "VALID")
        return tf.nn.depthwise_conv2d(image, cols, [1, 1, 1, 1], "VALID")

    c1, c2 = k1 ** 2, k2 ** 2
    mean_x, mean_y = blur(x), blur(y)
    num0 = mean_x * mean_y * 2.0
    den0 = tf.square(mean_x) + tf.square(mean_y)
    luminance = (num0 + c1) / (den0 + c1)
    cs = (blur(x * y) * 2.0 - num0 + c2) / (blur(tf.square(x) + tf.square(y)) - den0 + c2)
    return tf.reduce_mean(luminance * cs, axis=[1, 2, 3])


def make_loss(kind: str):
    """Masked loss of one side: weighted MAE (or MSE) plus DSSIM of the masked faces.

    Weights are the face mask, times :data:`EYE_MOUTH_WEIGHT` on the eyes and mouth; pixels
    outside the mask do not count. Inputs are uint8 as the pipeline delivers them.
    """
    import tensorflow as tf

    if kind not in LOSSES:
        raise ValueError(f"unknown loss {kind!r}; choose one of {', '.join(LOSSES)}")
    use_mse, use_dssim = kind.startswith("mse"), "dssim" in kind

    def loss(target_u8, pred, maps_u8):
        target = tf.cast(target_u8, tf.float32) * (1.0 / 255.0)
        pred = tf.cast(pred, tf.float32)
        maps = tf.cast(maps_u8, tf.float32) * (1.0 / 255.0)
        mask, region = maps[..., 0:1], maps[..., 1:2]
        weight = mask * (1.0 + (EYE_MOUTH_WEIGHT - 1.0) * region)
        err = tf.square(target - pred) if use_mse else tf.abs(target - pred)
        per_face = tf.reduce_sum(err * weight, axis=[1, 2, 3]) / (
            3.0 * tf.reduce_sum(weight, axis=[1, 2, 3]) + 1e-6)
        if use_dssim:
            size = target.shape[1] or 64
            similarity = ssim(target * mask, pred * mask, 11 if size >= 128 else 7)
            per_face += (1.0 - similarity) / 2.0
        return tf.reduce_mean(per_face)

    return loss


def make_step(nets: Networks, optimizer, loss_kind: str, scaled: bool = False):
    """The compiled training step: uint8 batches of A and B in, (loss A, loss B) out.

    A and B go through the shared encoder as one batch: its weights are cast to the compute
    precision, and their gradients summed, once a step instead of twice, and its dense layers
    multiply twice the rows (``original`` 1.14x faster in bfloat16, ``lightweight`` 1.02-1.05x,
    on a 2-core AMX Xeon); each face's code is the same as alone.
    """
    import tensorflow as tf

    loss = make_loss(loss_kind)
    variables = nets.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(xa, ya, ma, xb, yb, mb):
        with tf.GradientTape() as tape:
            faces = tf.cast(tf.concat([xa, xb], axis=0), tf.float32) * (1.0 / 255.0)
            code_a, code_b = tf.split(nets.encoder(faces, training=True),
                                      [tf.shape(xa)[0], tf.shape(xb)[0]])
            pa = nets.decoder_a(code_a, training=True)
            pb = nets.decoder_b(code_b, training=True)
            la = loss(ya, pa, ma)
            lb = loss(yb, pb, mb)
            total = la + lb
            if scaled:
                total = optimizer.scale_loss(total)
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return la, lb

    return step


def make_optimizer(policy: str, learning_rate: float = LEARNING_RATE):
    import keras

    from .adam import Adam

    opt = Adam(learning_rate=learning_rate, beta_1=0.5, beta_2=0.99)
    if policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


# ---------------------------------------------------------------------------------------------
# loss log, plateau

class LossLog:
    """``loss.csv``: one row per iteration; rows past the last save are dropped on resume."""

    HEADER = ["iteration", "loss_a", "loss_b"]

    def __init__(self, path: Path, keep_until: int) -> None:
        self.path = path
        rows: list[list[str]] = []
        stale = False
        if path.exists():
            with path.open(newline="") as fh:
                for row in csv.reader(fh):
                    if row and row[0].isdigit():
                        if int(row[0]) <= keep_until:
                            rows.append(row)
                        else:
                            stale = True
                    elif row != self.HEADER:
                        stale = True
        if stale or not path.exists():
            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(self.HEADER)
            writer.writerows(rows)
            atomic.write_text(path, text.getvalue())
        self._fh = path.open("a", newline="")
        self._writer = csv.writer(self._fh)

    def add(self, iteration: int, la: float, lb: float) -> None:
        self._writer.writerow([iteration, f"{la:.6f}", f"{lb:.6f}"])

    def flush(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        self._fh.close()


def loss_gain(history: Sequence[Sequence[float]], since: int = 0) -> float | None:
    """Relative loss gain of the last window of saves over the window before it.

    ``history`` rows are ``[iteration, loss_a, loss_b]`` (mean losses between saves); only
    rows after iteration ``since`` count (a model that resumes after it stopped — more faces,
    a higher cap — measures its new stretch on its own). A window is 20 % of those saves, at
    least 4, so late in training the comparison spans more iterations: the walkthrough's "the
    gain gets small", measured. None until there are two windows.
    """
    totals = [float(h[1]) + float(h[2]) for h in history if h[0] > since]
    window = max(PLATEAU_MIN_SAVES, int(len(totals) * PLATEAU_SHARE))
    if len(totals) < 2 * window:
        return None
    before = float(np.mean(totals[-2 * window:-window]))
    recent = float(np.mean(totals[-window:]))
    return (before - recent) / before if before > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# helpers

def _warping(warp: str, state: dict[str, Any]) -> bool:
    """Whether the input faces are randomly warped now (see :data:`WARPS`)."""
    return warp == "always" or (warp == "until-plateau" and state.get("warp_off_from") is None)


class _PreviewRenderer:
    """Renders the waiting targets' preview frames at each save (hotfolders.preview) with the
    weights being trained. A preview that fails is logged; it never stops training."""

    def __init__(self, wanted: Callable[[], list[tuple[Path, Path]]], nets: Networks,
                 state: dict[str, Any]) -> None:
        from .preview import Previews

        self.wanted = wanted
        self.nets = nets
        self.state = state
        self.previews = Previews()
        self.swapper = None

    def __call__(self, iteration: int) -> None:
        try:
            wanted = self.wanted()
            if not wanted:
                return
            if self.swapper is None:
                from .convert import FaceSwapper, Settings
                from .model import SwapModel

                s = self.state
                model = SwapModel(str(s.get("name", "")), s["trainer"], iteration,
                                  self.nets.input_size, self.nets.output_size,
                                  float(s["coverage"]), float(s["padding"]), self.nets,
                                  str(s.get("mask", "extended")))
                self.swapper = FaceSwapper(model, Settings())
            self.swapper.model.iterations = iteration
            self.previews.update(wanted, self.swapper)
        except Exception as exc:  # a preview is a courtesy: training goes on without it
            log.warning("preview frames not rendered at iteration %d: %s", iteration, exc)


def _check_frozen(state: dict[str, Any], wanted: dict[str, Any], model_dir: Path) -> None:
    for key, value in wanted.items():
        if value is None or key not in state:
            continue
        if isinstance(value, float) and math.isclose(value, float(state[key]), rel_tol=1e-6):
            continue
        if value != state[key]:
            raise InputError(model_dir, f"this model was created with {key} = {state[key]!r}; "
                                        f"it cannot continue with {key} = {value!r} (leave the "
                                        "option out, or start a new model folder)")


def _validate(trainer: str, coverage: float, mask: str, loss: str, batch_size: int,
              save_every: int, snapshot_every: int, keep_snapshots: int) -> None:
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; choose one of {', '.join(TRAINERS)}")
    if mask not in TRAIN_MASKS:
        raise ValueError(f"unknown mask {mask!r}; choose one of {', '.join(TRAIN_MASKS)}")
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    if not 0.5 <= coverage <= 1.0:
        raise ValueError("coverage must be between 0.5 and 1.0")
    if batch_size < 1 or save_every < 1 or snapshot_every < 0 or keep_snapshots < 0:
        raise ValueError("batch size and save interval must be at least 1, snapshot interval "
                         "and kept snapshots at least 0")


def _pick_samples(faces: FaceSet, folders: Sequence[str | Path] | None, coverage: float,
                  mask: str, side: str) -> np.ndarray:
    if folders:
        faces = load_faces(folders, faces.size, coverage,  # only the pictures are used
                           "extended" if mask == "occlusion" else mask, f"{side} (timelapse)",
                           min_faces=1)
    return faces.images[sample_indices(len(faces), SAMPLES)]


def _prune_snapshots(folder: Path, keep: int) -> None:
    import shutil

    snaps = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.isdigit()),
                   key=lambda p: int(p.name))
    for old in snaps[:-keep] if keep > 0 else snaps:
        shutil.rmtree(old, ignore_errors=True)


def _coverage_check(a_dirs, b_dirs, model_dir: Path) -> str | None:
    """Warn when B's faces do not cover A's poses; leave coverage.json/.png for the status page.

    The check is advice: any failure only skips it. The full warning is logged when the
    report is new; a resume with the same faces logs one line, not the same paragraph again.
    """
    from .coverage import coverage, report_json

    path = model_dir / "coverage.json"
    try:
        report = coverage(list(a_dirs), list(b_dirs), out_image=model_dir / "coverage.png")
        new = report_json(report)
        unchanged = path.is_file() and path.read_text(encoding="utf-8") == new
        atomic.write_text(path, new, durable=False)
    except Exception as exc:  # the check is advice; it never blocks training
        log.debug("pose coverage check skipped: %s", exc)
        return None
    if report.missing_regions:
        text = report.describe()
        if unchanged:
            log.info("B's faces still do not cover all of A's poses (%s, as at the last start)",
                     path)
            return text
        log.warning("B's faces do not cover all of A's poses; expect weak swaps there:")
        for line in text.splitlines():  # one record a line: a log line never holds a newline
            log.warning("  %s", line)
        return text
    return None


def _restore(model_dir: Path, loaded_from: Path) -> None:
    """After resuming from a fallback, make it the current save again.

    A damaged ``save/`` is moved aside to ``save.damaged/`` (never deleted: it is the user's),
    and the intact save is copied into ``save/``, so the next save rotates a good backup.
    """
    import shutil

    save = model_dir / SAVE
    if save.exists():
        shutil.rmtree(model_dir / DAMAGED, ignore_errors=True)
        os.replace(save, model_dir / DAMAGED)
        log.warning("moved the damaged save to %s", model_dir / DAMAGED)
    tmp = model_dir / ".restore.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(loaded_from, tmp)
    os.replace(tmp, save)


# ---------------------------------------------------------------------------------------------
# the stage

def _resume_after_divergence(model_dir: Path, nets: Networks, optimizer, state: dict[str, Any],
                             learning_rate: float, what: str) -> int:
    """Reload the newest intact save into ``nets`` and ``optimizer`` and go on at
    ``learning_rate`` (recorded in ``state``, written at the next save): a loss that blew up
    costs the steps since that save, not the job. Returns the save's iteration."""
    saved, folder = load_checkpoint(model_dir, nets, optimizer)
    optimizer.learning_rate = learning_rate  # after the load, which restores the old one
    iteration = int(saved["iterations"])
    state.update({k: v for k, v in saved.items() if k in ("iterations", "history", "best_loss",
                                                          "best_iteration", "plateau_gain")})
    for key in ("stretch_from", "warp_off_from"):  # as they were at that save
        if key in saved:
            state[key] = saved[key]
        else:
            state.pop(key, None)
    state["learning_rate"] = learning_rate
    state.setdefault("diverged", []).append(
        {"iteration": iteration, "learning_rate": learning_rate, "at": now()})
    log.warning("%s: %s; resuming from the save at iteration %d (%s/) at half the learning "
                "rate, %g", model_dir.name, what, iteration, folder.name, learning_rate)
    return iteration


def train(a_dirs: Sequence[str | Path], b_dirs: Sequence[str | Path], model_dir: str | Path, *,
          trainer: str | None = None, batch_size: int = 16, iterations: int | None = None,
          save_every: int = 250, snapshot_every: int = 25000, keep_snapshots: int = 3,
          timelapse_a: Sequence[str | Path] | None = None,
          timelapse_b: Sequence[str | Path] | None = None, precision: str = "auto",
          threads: str = "auto",
          mask: str | None = None, loss: str | None = None, coverage: float | None = None,
          stop: str = "iterations", plateau_gain: float = PLATEAU_GAIN,
          learning_rate: float | None = None, warp: str = "always",
          callback: Callback | None = None, stop_event: threading.Event | None = None,
          progress: Progress | None = None, seed: int | None = None,
          previews: Callable[[], list[tuple[Path, Path]]] | None = None) -> TrainResult:
    """Train (or resume) the model in ``model_dir`` on the faces of A and B.

    ``trainer``, ``mask``, ``loss`` and ``coverage`` are fixed when the model is created
    (defaults: lightweight, extended, mae+dssim, 0.85); None means "as created", another value
    raises InputError. Training stops at ``iterations`` (a total, counted across resumes), when
    ``stop_event`` is set (at the next step), or with ``stop = "plateau"`` when the loss
    improved by less than ``plateau_gain`` (see :func:`loss_gain`); it saves before
    returning. Stopping by itself (plateau or ``iterations``) is recorded in the state as
    ``stopped`` (reason, iteration, gain); training such a model again starts a new stretch
    whose plateau is measured on its own. A NaN/Inf loss reloads the last save and goes on at
    half the learning rate, :data:`RECOVERIES` times in a run; once more raises
    :class:`TrainingDiverged`, the last good save kept. ``previews()``, asked at every save, lists
    ``(target, picture)`` pairs: each target's preview frame, swapped by the current weights,
    is written to its picture (see :mod:`hotfolders.preview`). ``precision = "auto"`` times
    a few steps in float32 and in reduced precision and takes the faster (recorded in the
    state as ``precision_choice``; see :mod:`hotfolders.precision`); before it, ``threads =
    "auto"`` times the thread layouts in worker processes, where TensorFlow has not run in
    this one yet (``threads_choice``; see :mod:`hotfolders.threads`). ``callback`` receives
    ``{"iteration", "loss_a", "loss_b", "img_s"}`` after every iteration and
    ``{"event": "save", ...}`` at every save; ``progress(iteration, total, info)`` is for
    progress bars. ``seed`` makes a run
    repeatable: the augmentation and, for a new model, the initial weights (default: the
    augmentation is seeded by the iteration count, the weights at random).
    ``learning_rate`` None: the model's own (recorded in its state), for a new model its
    trainer's ``LEARNING_RATE``. ``warp`` (see :data:`WARPS`): ``until-plateau`` trains on
    randomly warped input faces until the loss gains less than ``plateau_gain`` or the
    iteration reaches :data:`WARP_OFF_SHARE` of ``iterations``, records that iteration in the
    state as ``warp_off_from`` and goes on without the warp (a new stretch, whose plateau is
    measured on its own); a model that stopped by itself warps again in its next stretch.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir)
    a_dirs, b_dirs = list(a_dirs), list(b_dirs)
    warnings: list[str] = []

    # -- everything that can refuse the job comes first: nothing on disk changes before it
    if model_dir.exists() and not model_dir.is_dir():
        raise InputError(model_dir, "model folder is a file")
    state = read_state(model_dir) if model_dir.is_dir() else None
    wanted = {"trainer": trainer, "coverage": coverage, "mask": mask, "loss": loss}
    if state is not None:
        missing = [k for k in FROZEN if k not in state]
        if missing:
            raise InputError(model_dir / "state.json", f"model state lacks {', '.join(missing)}")
        if state["trainer"] not in TRAINERS:
            raise InputError(model_dir / "state.json", f"model was made with trainer "
                                                       f"{state['trainer']!r}, which this "
                                                       "facedrop does not have")
        _check_frozen(state, wanted, model_dir)
        if not candidate_saves(model_dir):
            raise InputError(model_dir, "state.json is there but no save is (deleted?); "
                                        "restore the save folders or start a new model folder")
    settings = {k: (v if v is not None else (state or DEFAULTS).get(k, DEFAULTS[k]))
                for k, v in wanted.items()}
    trainer_name, cov = str(settings["trainer"]), float(settings["coverage"])
    mask_kind, loss_kind = str(settings["mask"]), str(settings["loss"])
    _validate(trainer_name, cov, mask_kind, loss_kind, batch_size, save_every, snapshot_every,
              keep_snapshots)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
    if stop not in STOPS:
        raise ValueError(f"stop must be one of {', '.join(STOPS)}")
    if warp not in WARPS:
        raise ValueError(f"warp must be one of {', '.join(WARPS)}")
    if model_dir.is_dir() and not os.access(model_dir, os.W_OK | os.X_OK):
        raise InputError(model_dir, "model folder is not writable")
    plugin = load_trainer(trainer_name)

    faces_a = load_faces(a_dirs, plugin.OUTPUT_SIZE, cov, mask_kind, "A")
    faces_b = load_faces(b_dirs, plugin.OUTPUT_SIZE, cov, mask_kind, "B")
    if abs(faces_a.padding - faces_b.padding) > 1e-6:
        raise InputError(Path(str(b_dirs[0])), f"A's faces were extracted with padding "
                                               f"{faces_a.padding}, B's with {faces_b.padding}; "
                                               "re-extract one side")
    if state is not None and abs(float(state["padding"]) - faces_a.padding) > 1e-6:
        raise InputError(Path(str(a_dirs[0])), f"faces were extracted with padding "
                                               f"{faces_a.padding}, the model with "
                                               f"{state['padding']}; re-extract them")

    previous = (state or {}).get("precision_choice")
    policies = ((str(previous["chosen"]),) if precision == "auto" and precision_reusable(
        previous, trainer_name, batch_size) else precision_candidates(precision))
    layout, layout_choice, rates = thread_layout.choose(
        threads, trainer_name, batch_size, loss_kind, policies,
        (state or {}).get("threads_choice"))
    if layout is not None and not thread_layout.apply(layout):
        layout = None
    policy, measured = choose_precision(precision, trainer_name, batch_size, loss_kind,
                                        previous, rates)
    if seed is not None and state is None:
        import keras

        keras.utils.set_random_seed(seed)
    if learning_rate is None:
        learning_rate = float(state.get("learning_rate", LEARNING_RATE) if state is not None
                              else plugin.LEARNING_RATE)
    nets = Networks(trainer_name, policy)
    convolutions = nets.tune(batch_size)
    optimizer = make_optimizer(policy, learning_rate)
    loaded_from = None
    if state is not None:
        saved, folder = load_checkpoint(model_dir, nets, optimizer)  # InputError if all damaged
        state = {**state, **saved}
        loaded_from = folder.relative_to(model_dir).as_posix()

    # -- from here on the model folder is ours to write
    model_dir.mkdir(parents=True, exist_ok=True)
    clean_temporary(model_dir)
    if loaded_from is not None and loaded_from != SAVE:
        _restore(model_dir, model_dir / loaded_from)
        warnings.append(f"resumed from {loaded_from}: the newer save was missing or damaged")
    if state is None:
        state = {"version": STATE_VERSION, "name": model_dir.name, "trainer": trainer_name,
                 "input_size": plugin.INPUT_SIZE, "output_size": plugin.OUTPUT_SIZE,
                 "coverage": cov, "padding": faces_a.padding, "mask": mask_kind,
                 "loss": loss_kind, "iterations": 0, "created": now(), "best_loss": None,
                 "history": [], "loss_log": "loss.csv"}
    if measured is not None:
        state["precision_choice"] = measured
    state["precision_setting"] = precision
    if layout_choice is not None:
        state["threads_choice"] = layout_choice
    state["threads_setting"], state["threads"] = threads, layout
    state["learning_rate"] = learning_rate
    coverage_note = _coverage_check(a_dirs, b_dirs, model_dir)
    if coverage_note:
        warnings.append(coverage_note)

    from . import timelapse

    samples_path = model_dir / "timelapse" / "samples.npz"
    samples = timelapse.load_samples(samples_path, plugin.OUTPUT_SIZE)
    if samples is None:
        samples = (_pick_samples(faces_a, timelapse_a, cov, mask_kind, "A"),
                   _pick_samples(faces_b, timelapse_b, cov, mask_kind, "B"))
        timelapse.save_samples(samples_path, *samples)

    start_iter = int(state["iterations"])
    new_stretch = bool(state.get("stopped"))  # it had stopped by itself (new faces, a higher cap)
    if new_stretch:
        state["stopped"] = None
        state["stretch_from"] = start_iter
    if new_stretch or warp != "until-plateau":  # warp again until the plateau; or set to
        state.pop("warp_off_from", None)        # always or never since: the record is past
    losses = LossLog(model_dir / "loss.csv", start_iter)
    step = make_step(nets, optimizer, loss_kind, policy == "mixed_float16")
    log.info("training %s (%s, precision %s, threads %s) from iteration %d on %d A / %d B "
             "faces", model_dir.name, trainer_name, describe_precision(measured) if measured
             else f"{policy} as set", thread_layout.summary(layout, layout_choice),
             start_iter, len(faces_a), len(faces_b))
    log.info("convolutions: %s", describe_convolutions(convolutions))
    warping = _warping(warp, state)
    if not warping and warp == "until-plateau":
        log.info("%s trains without the random warp, as since iteration %d (warp = "
                 "until-plateau)", model_dir.name, state["warp_off_from"])

    def open_batches(at: int, warp_input: bool):
        """Augmented batches from iteration ``at`` (the seed, unless one was given)."""
        return batches(faces_a, faces_b, batch_size, plugin.INPUT_SIZE,
                       seed=seed if seed is not None else at, warp_input=warp_input)

    data = open_batches(start_iter, warping)
    iteration = last_saved = start_iter
    window: list[tuple[float, float]] = []
    la = lb = float("nan")
    gain: float | None = None
    stopped = "iterations"
    resumes = 0  # times the loss diverged and training went back to the last save
    timed_from, timed_steps = None, 0
    preview_pictures = _PreviewRenderer(previews, nets, state) if previews else None
    total_target = iterations or 0

    def rate() -> float:
        if timed_from is None or timed_steps == 0:
            return 0.0
        return 2 * batch_size * timed_steps / max(time.perf_counter() - timed_from, 1e-9)

    def do_save() -> None:
        nonlocal last_saved, gain
        mean_a = float(np.mean([w[0] for w in window])) if window else la
        mean_b = float(np.mean([w[1] for w in window])) if window else lb
        state.update(iterations=iteration, updated=now(), last_loss=[mean_a, mean_b],
                     batch_size=batch_size, precision=policy, learning_rate=learning_rate,
                     faces=[len(faces_a), len(faces_b)])
        if window:
            state["history"].append([iteration, round(mean_a, 6), round(mean_b, 6)])
        stretch_from = int(state.get("stretch_from") or 0)
        gain = loss_gain(state["history"], since=stretch_from)
        state["plateau_gain"] = gain
        plateaued = gain is not None and gain < plateau_gain
        capped = iterations is not None and iteration >= iterations
        late = iterations is not None and iteration >= WARP_OFF_SHARE * iterations
        if warp == "until-plateau" and _warping(warp, state) and (plateaued or late) and not capped:
            state["warp_off_from"] = state["stretch_from"] = iteration
            log.info("%s: %s; training on without the random warp from iteration %d",
                     model_dir.name,
                     f"the loss gained only {gain:.1%} with it" if plateaued else
                     f"{WARP_OFF_SHARE:.0%} of the {iterations} iterations are done", iteration)
            plateaued = False
        if stop == "plateau" and plateaued:
            state["stopped"] = {"reason": "plateau", "iteration": iteration, "gain": gain,
                                "threshold": plateau_gain, "at": now(),
                                "window": max(PLATEAU_MIN_SAVES, int(
                                    sum(h[0] > stretch_from for h in state["history"])
                                    * PLATEAU_SHARE))}
        elif capped:
            state["stopped"] = {"reason": "iterations", "iteration": iteration,
                                "max_iterations": iterations, "at": now()}
        losses.flush()
        is_best = state.get("best_loss") is None or mean_a + mean_b < state["best_loss"]
        if is_best:
            state["best_loss"] = mean_a + mean_b
            state["best_iteration"] = iteration
        save_checkpoint(model_dir, nets, optimizer, state)
        if is_best:
            copy_save(model_dir, model_dir / BEST)
        if snapshot_every and iteration % snapshot_every == 0:
            copy_save(model_dir, model_dir / "snapshots" / str(iteration))
            _prune_snapshots(model_dir / "snapshots", keep_snapshots)
        timelapse.write(model_dir / "timelapse" / f"{iteration}.jpg",
                        timelapse.render(nets, samples[0], samples[1], iteration))
        if preview_pictures is not None:
            preview_pictures(iteration)
        last_saved = iteration
        window.clear()
        log.info("saved %s at iteration %d (loss A %.4f, B %.4f%s)", model_dir.name, iteration,
                 mean_a, mean_b, "" if gain is None else f", gain {gain:+.1%}")
        if callback:
            callback({"event": "save", "iteration": iteration, "loss_a": mean_a,
                      "loss_b": mean_b, "best": is_best, "plateau_gain": gain})

    try:
        while iterations is None or iteration < iterations:
            if stop_event is not None and stop_event.is_set():
                stopped = "stop request"
                break
            if warping != _warping(warp, state):  # switched off at a save, or back on by
                warping = not warping                # a divergence that reloaded an older save
                data.close()
                data = open_batches(iteration, warping)
            (xa, ya, ma), (xb, yb, mb) = next(data)
            la_t, lb_t = step(xa, ya, ma, xb, yb, mb)
            la, lb = float(la_t), float(lb_t)
            if not (math.isfinite(la) and math.isfinite(lb)):
                what = f"the loss became {la}/{lb} (A/B) at iteration {iteration + 1}"
                if resumes >= RECOVERIES or not candidate_saves(model_dir):
                    raise TrainingDiverged(
                        model_dir, f"{what}; training stopped and the last good save "
                                   f"(iteration {last_saved}) is kept"
                                   + (f" (after {resumes} resumes, each at half the rate)"
                                      if resumes else "")
                                   + ". Resume with a lower --learning-rate"
                                   + (" or --precision float32" if policy != "float32" else ""))
                learning_rate /= 2
                iteration = last_saved = _resume_after_divergence(
                    model_dir, nets, optimizer, state, learning_rate, what)
                resumes += 1
                warnings.append(f"{what}; resumed from the save at iteration {iteration} at "
                                f"half the learning rate ({learning_rate:g})")
                losses.close()
                losses = LossLog(model_dir / "loss.csv", iteration)
                window.clear()
                continue
            iteration += 1
            if timed_from is None:
                timed_from = time.perf_counter()  # the first step includes tracing
            else:
                timed_steps += 1
            window.append((la, lb))
            losses.add(iteration, la, lb)
            if callback:
                callback({"iteration": iteration, "loss_a": la, "loss_b": lb, "img_s": rate()})
            if progress:
                speed = rate()
                left = (total_target - iteration) * 2 * batch_size / speed if (
                    speed and total_target) else None
                progress(iteration, total_target,
                         {"loss_a": la, "loss_b": lb, "img_s": speed, "eta_s": left})
            if iteration % save_every == 0 or (snapshot_every and iteration % snapshot_every == 0):
                do_save()
                if state.get("stopped"):
                    break
        if iteration > last_saved:
            do_save()
        elif iterations is not None and iteration >= iterations and not state.get("stopped"):
            state["stopped"] = {"reason": "iterations", "iteration": iteration,  # nothing to do
                                "max_iterations": iterations, "at": now()}
            rewrite_state(model_dir, state)
        if state.get("stopped"):
            stopped = state["stopped"]["reason"]
    finally:
        data.close()
        losses.close()
    if state.get("stopped"):
        log.info("%s %s", model_dir.name, describe_stop(state["stopped"]))
    return TrainResult(model_dir, iteration, la, lb, stopped, time.perf_counter() - started,
                       rate(), start_iter, policy, measured, loaded_from, gain, warnings,
                       layout, layout_choice if layout else None)
