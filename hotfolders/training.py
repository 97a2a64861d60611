"""Training stage: one shared encoder, one decoder per person, saves that survive a kill.

Entry point: :func:`train`. Each iteration trains both sides on a batch of their own faces
(A -> encoder -> decoder A, B -> encoder -> decoder B); swapping later means decoding A's code
with B's decoder. The loss only counts pixels inside the face mask, with extra weight on eyes
and mouth. Training resumes exactly where the last save left it: iteration count, optimizer
moments and loss history.
"""
from __future__ import annotations

import csv
import logging
import math
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import quiet
from .dataset import FaceSet, batches, load_faces, sample_indices
from .errors import InputError
from .masks import MASK_TYPES
from .model import (BEST, FROZEN, STATE_VERSION, Networks, copy_save, load_checkpoint, now,
                    read_state, save_checkpoint)
from .plugins.train import TRAINERS, load_trainer

log = logging.getLogger(__name__)

Callback = Callable[[dict[str, Any]], None]
PLATEAU_PATIENCE = 4      # saves without a 1 % gain before --stop-on-plateau stops
PLATEAU_GAIN = 0.01


@dataclass
class TrainResult:
    model_dir: Path
    iterations: int
    loss_a: float
    loss_b: float
    stopped_because: str  # "iterations", "stop request", "plateau"
    seconds: float
    images_per_second: float


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def choose_policy(precision: str) -> str:
    """Keras dtype policy for ``auto`` / ``float32`` / ``mixed``.

    Mixed precision means float16 on a GPU and bfloat16 on CPUs that have AMX or AVX-512 BF16
    (about 1.7x faster here); ``auto`` picks it only where the hardware has it.
    """
    if precision == "float32":
        return "float32"
    tf = quiet.import_tensorflow()
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    if precision == "mixed" or cpu_has_bf16():
        return "mixed_bfloat16"
    return "float32"


def _loss_fn(kind: str):
    import tensorflow as tf

    use_mse = "mse" in kind
    use_dssim = "dssim" in kind

    def loss(target, pred, mask, weight):
        pred = tf.cast(pred, tf.float32)
        err = tf.square(target - pred) if use_mse else tf.abs(target - pred)
        total = tf.reduce_sum(err * weight, axis=[1, 2, 3]) / (
            3.0 * tf.reduce_sum(weight, axis=[1, 2, 3]) + 1e-6)
        if use_dssim:
            ssim = tf.image.ssim(target * mask, pred * mask, max_val=1.0, filter_size=7)
            total += (1.0 - ssim) / 2.0
        return tf.reduce_mean(total)

    return loss


def _make_step(nets: Networks, optimizer, loss_kind: str, scaled: bool):
    import tensorflow as tf

    loss = _loss_fn(loss_kind)
    variables = nets.trainable_variables

    @tf.function(reduce_retracing=True)
    def step(xa, ya, ma, wa, xb, yb, mb, wb):
        with tf.GradientTape() as tape:
            pa = nets.decoder_a(nets.encoder(xa, training=True), training=True)
            pb = nets.decoder_b(nets.encoder(xb, training=True), training=True)
            la = loss(ya, pa, ma, wa)
            lb = loss(yb, pb, mb, wb)
            total = la + lb
            if scaled:
                total = optimizer.scale_loss(total)
        grads = tape.gradient(total, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return la, lb

    return step


def _optimizer(policy: str, learning_rate: float):
    import keras

    opt = keras.optimizers.Adam(learning_rate=learning_rate, beta_1=0.5, beta_2=0.99)
    if policy == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    return opt


class LossLog:
    """``loss.csv``: one row per iteration; rows past the last save are dropped on resume."""

    def __init__(self, path: Path, keep_until: int) -> None:
        self.path = path
        rows: list[list[str]] = []
        if path.exists():
            with path.open() as fh:
                for row in csv.reader(fh):
                    if row and row[0].isdigit() and int(row[0]) <= keep_until:
                        rows.append(row)
        tmp = path.with_name(".loss.csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["iteration", "loss_a", "loss_b"])
            writer.writerows(rows)
        tmp.replace(path)
        self._fh = path.open("a", newline="")
        self._writer = csv.writer(self._fh)

    def add(self, iteration: int, la: float, lb: float) -> None:
        self._writer.writerow([iteration, f"{la:.6f}", f"{lb:.6f}"])

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def _check_frozen(state: dict[str, Any], wanted: dict[str, Any], model_dir: Path) -> None:
    for key, value in wanted.items():
        if value is None or key not in state:
            continue
        if isinstance(value, float) and math.isclose(value, float(state[key]), rel_tol=1e-6):
            continue
        if value != state[key]:
            raise InputError(model_dir, f"this model was created with {key} = {state[key]!r}; "
                                        f"it cannot continue with {key} = {value!r} (start a new "
                                        "model folder for other settings)")


def _pick_samples(faces: FaceSet, folders: Sequence[Path] | None, size: int, coverage: float,
                  mask: str, side: str) -> np.ndarray:
    if folders:
        faces = load_faces(folders, size, coverage, mask, side)
    return faces.images[sample_indices(len(faces))]


def train(a_dirs: Sequence[str | Path], b_dirs: Sequence[str | Path], model_dir: str | Path, *,
          trainer: str | None = None, batch_size: int = 16, iterations: int | None = None,
          save_every: int = 250, snapshot_every: int = 25000, keep_snapshots: int = 3,
          timelapse_a: Sequence[str | Path] | None = None,
          timelapse_b: Sequence[str | Path] | None = None, precision: str = "auto",
          mask: str | None = None, loss: str = "mae+dssim", coverage: float | None = None,
          stop_on_plateau: bool = False, learning_rate: float = 5e-5,
          callback: Callback | None = None, stop_event: threading.Event | None = None,
          progress: Callable[[int, int, dict[str, Any]], None] | None = None,
          seed: int | None = None) -> TrainResult:
    """Train (or resume) the model in ``model_dir`` on faces of A and B.

    Stops at ``iterations`` (total, counted across resumes), when ``stop_event`` is set, or,
    with ``stop_on_plateau``, when the loss gained less than 1 % over the last saves; it
    always saves before returning. ``callback`` receives ``{"iteration", "loss_a", "loss_b"}``
    every iteration and ``{"event": "save", ...}`` at every save.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir)
    if batch_size < 1 or save_every < 1:
        raise ValueError("batch size and save interval must be at least 1")
    if loss not in ("mae", "mse", "mae+dssim", "mse+dssim"):
        raise ValueError(f"unknown loss {loss!r}")
    if model_dir.exists() and not model_dir.is_dir():
        raise InputError(model_dir, "model folder is a file")
    state = read_state(model_dir)
    if state is not None:
        if state.get("version", 0) > STATE_VERSION or "trainer" not in state:
            raise InputError(model_dir / "state.json", "not a model state this facedrop understands")
        _check_frozen(state, {"trainer": trainer, "coverage": coverage, "mask": mask}, model_dir)
    trainer = trainer or (state or {}).get("trainer", "lightweight")
    coverage = coverage if coverage is not None else float((state or {}).get("coverage", 0.85))
    mask = mask or (state or {}).get("mask", "extended")
    if trainer not in TRAINERS:
        raise ValueError(f"unknown trainer {trainer!r}; choose one of {', '.join(TRAINERS)}")
    if mask not in MASK_TYPES:
        raise ValueError(f"unknown mask {mask!r}")
    if not 0.5 <= coverage <= 1.0:
        raise ValueError("coverage must be between 0.5 and 1.0")
    plugin = load_trainer(trainer)

    faces_a = load_faces(a_dirs, plugin.OUTPUT_SIZE, coverage, mask, "A")
    faces_b = load_faces(b_dirs, plugin.OUTPUT_SIZE, coverage, mask, "B")
    if abs(faces_a.padding - faces_b.padding) > 1e-6:
        raise InputError(Path(str(b_dirs[0])), "A and B faces were extracted with different "
                                               "paddings; re-extract one side")
    if state is not None and abs(float(state["padding"]) - faces_a.padding) > 1e-6:
        raise InputError(Path(str(a_dirs[0])), f"faces were extracted with padding "
                                               f"{faces_a.padding}, the model with {state['padding']}")
    _warn_coverage(a_dirs, b_dirs)

    policy = choose_policy(precision)
    nets = Networks(trainer, policy)
    optimizer = _optimizer(policy, learning_rate)
    model_dir.mkdir(parents=True, exist_ok=True)
    samples_path = model_dir / "timelapse" / "samples.npz"
    from . import timelapse

    if state is not None:
        state = load_checkpoint(model_dir, nets, optimizer)
    else:
        state = {"version": STATE_VERSION, "name": model_dir.name, "trainer": trainer,
                 "input_size": plugin.INPUT_SIZE, "output_size": plugin.OUTPUT_SIZE,
                 "coverage": coverage, "padding": faces_a.padding, "mask": mask, "loss": loss,
                 "iterations": 0, "created": now(), "best_loss": None, "history": [],
                 "loss_log": "loss.csv"}
    if timelapse.load_samples(samples_path) is None:
        timelapse.save_samples(samples_path,
                               _pick_samples(faces_a, timelapse_a, plugin.OUTPUT_SIZE, coverage, mask, "A"),
                               _pick_samples(faces_b, timelapse_b, plugin.OUTPUT_SIZE, coverage, mask, "B"))
    samples = timelapse.load_samples(samples_path)
    assert samples is not None
    assert all(k in state for k in FROZEN)

    start_iter = int(state["iterations"])
    losses = LossLog(model_dir / "loss.csv", start_iter)
    step = _make_step(nets, optimizer, loss, policy == "mixed_float16")
    log.info("training %s (%s, %s) from iteration %d on %d A / %d B faces", model_dir.name,
             trainer, policy, start_iter, len(faces_a), len(faces_b))
    data = batches(faces_a, faces_b, batch_size, plugin.INPUT_SIZE,
                   seed=seed if seed is not None else start_iter)
    iteration = start_iter
    window: list[tuple[float, float]] = []
    la = lb = float("nan")
    stopped = "iterations"
    timing_start, timing_iters = time.perf_counter(), 0

    def do_save() -> None:
        mean_a = float(np.mean([w[0] for w in window])) if window else la
        mean_b = float(np.mean([w[1] for w in window])) if window else lb
        state.update(iterations=iteration, updated=now(), last_loss=[mean_a, mean_b],
                     batch_size=batch_size, precision=policy, faces=[len(faces_a), len(faces_b)])
        if window:
            state["history"].append([iteration, mean_a, mean_b])
        losses.flush()
        save_checkpoint(model_dir, nets, optimizer, state)
        total = mean_a + mean_b
        if state.get("best_loss") is None or total < state["best_loss"]:
            state["best_loss"] = total
            copy_save(model_dir, model_dir / BEST)
        if snapshot_every and iteration % snapshot_every == 0 and iteration > 0:
            copy_save(model_dir, model_dir / "snapshots" / f"{iteration:08d}")
            _prune_snapshots(model_dir / "snapshots", keep_snapshots)
        timelapse.write(model_dir / "timelapse" / f"{iteration:08d}.jpg",
                        timelapse.render(nets, samples[0], samples[1], iteration))
        window.clear()
        if callback:
            callback({"event": "save", "iteration": iteration, "loss_a": mean_a, "loss_b": mean_b})

    try:
        if iterations is not None and iteration >= iterations:
            stopped = "iterations"
        else:
            for (xa, ya, ma, wa), (xb, yb, mb, wb) in data:
                la_t, lb_t = step(xa, ya, ma, wa, xb, yb, mb, wb)
                la, lb = float(la_t), float(lb_t)
                if not (math.isfinite(la) and math.isfinite(lb)):
                    raise InputError(model_dir, f"the loss became {la}/{lb} at iteration "
                                                f"{iteration + 1}; training stopped and the last good "
                                                f"save (iteration {state['iterations']}) is kept. "
                                                "Try --precision float32 or a lower learning rate")
                iteration += 1
                timing_iters += 1
                window.append((la, lb))
                losses.add(iteration, la, lb)
                if callback:
                    callback({"iteration": iteration, "loss_a": la, "loss_b": lb})
                if progress:
                    elapsed = time.perf_counter() - timing_start
                    progress(iteration, iterations or 0,
                             {"loss_a": la, "loss_b": lb,
                              "img_s": 2 * batch_size * timing_iters / max(elapsed, 1e-9)})
                done = iterations is not None and iteration >= iterations
                stop = stop_event is not None and stop_event.is_set()
                if iteration % save_every == 0 or done or stop:
                    do_save()
                    if stop_on_plateau and _plateaued(state["history"]):
                        stopped = "plateau"
                        break
                if done:
                    stopped = "iterations"
                    break
                if stop:
                    stopped = "stop request"
                    break
    finally:
        data.close()
        losses.close()
    elapsed = time.perf_counter() - started
    rate = 2 * batch_size * timing_iters / max(time.perf_counter() - timing_start, 1e-9)
    return TrainResult(model_dir, iteration, la, lb, stopped, elapsed, rate)


def _plateaued(history: list[list[float]]) -> bool:
    """True when the best total loss of the last saves improved < 1 % on the best before."""
    if len(history) < 2 * PLATEAU_PATIENCE:
        return False
    totals = [h[1] + h[2] for h in history]
    before = min(totals[:-PLATEAU_PATIENCE])
    recent = min(totals[-PLATEAU_PATIENCE:])
    return recent > before * (1 - PLATEAU_GAIN)


def _prune_snapshots(folder: Path, keep: int) -> None:
    snaps = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit())
    for old in snaps[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)


def _warn_coverage(a_dirs, b_dirs) -> None:
    """Say so when B's faces do not cover A's poses (the walkthrough's main lesson)."""
    try:
        from .coverage import coverage
    except ImportError:
        return
    try:
        report = coverage(list(a_dirs), list(b_dirs))
    except InputError:
        return
    if getattr(report, "missing_regions", None):
        log.warning("B's faces do not cover all of A's poses; expect weak swaps there:\n%s",
                    report.describe())
