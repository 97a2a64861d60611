"""Train a swap model: one shared encoder, one decoder for A and one for B.

Saves every --save-every iterations (atomically; a kill never breaks the model), keeps the
previous save as a backup and the best-loss save in MODEL/best, snapshots every
--snapshot-every iterations, renders a timelapse of fixed sample faces at every save and logs
the loss per side to MODEL/loss.csv. Run the same command again to resume exactly where it
stopped. Ctrl-C (or SIGTERM) saves and stops; a second Ctrl-C aborts without saving.
Trainer, mask, loss and coverage are fixed when a model is created.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from hotfolders.masks import MASK_TYPES
from hotfolders.plugins.train import TRAINERS

from ..cli import UsageError

LOSSES = ("mae+dssim", "mae", "mse", "mse+dssim")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a", nargs="+", type=Path, required=True, metavar="DIR",
                        help="folders of person A's faces (the face to replace)")
    parser.add_argument("--b", nargs="+", type=Path, required=True, metavar="DIR",
                        help="folders of person B's faces (the face to put in)")
    parser.add_argument("--model-dir", type=Path, required=True, metavar="DIR",
                        help="model folder (created if missing, resumed if present)")
    parser.add_argument("--trainer", choices=TRAINERS, default=None,
                        help="model layout of a new model (default: lightweight; lightweight "
                             "and original 64 px, dfaker 128 px output, for GPUs)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="faces per side per iteration (default: 16)")
    parser.add_argument("--iterations", type=int, default=None, metavar="N",
                        help="stop at this total iteration count, counted across resumes "
                             "(default: run until stopped)")
    parser.add_argument("--save-every", type=int, default=250, metavar="N",
                        help="save, and render the timelapse, every N iterations (default: 250)")
    parser.add_argument("--snapshot-every", type=int, default=25000, metavar="N",
                        help="copy the save to snapshots/<iterations>/ (default: 25000; 0: never)")
    parser.add_argument("--keep-snapshots", type=int, default=3, metavar="K",
                        help="snapshots to keep (default: 3)")
    parser.add_argument("--timelapse-a", nargs="+", type=Path, metavar="DIR",
                        help="sample faces of A for the timelapse (default: picked from --a)")
    parser.add_argument("--timelapse-b", nargs="+", type=Path, metavar="DIR",
                        help="sample faces of B for the timelapse (default: picked from --b)")
    parser.add_argument("--precision", choices=("auto", "float32", "mixed"), default="auto",
                        help="auto: float16 on a GPU, bfloat16 on CPUs with AMX/AVX512-BF16, "
                             "else float32; mixed: reduced precision even where it is slower "
                             "(default: auto)")
    parser.add_argument("--gpu", default="auto", metavar="WHICH",
                        help='GPUs to use: auto (every GPU TensorFlow sees), cpu, or indices '
                             'such as 1 or 0,1 (default: auto; memory growth is always on)')
    parser.add_argument("--mask", choices=MASK_TYPES, default=None,
                        help="mask for the loss of a new model (default: extended)")
    parser.add_argument("--loss", choices=LOSSES, default=None,
                        help="loss of a new model (default: mae+dssim)")
    parser.add_argument("--coverage", type=float, default=None, metavar="F",
                        help="share of the aligned face the model sees, for a new model "
                             "(default: 0.85; long chins need room)")
    parser.add_argument("--learning-rate", type=float, default=5e-5, metavar="LR",
                        help="Adam learning rate (default: 5e-5)")
    parser.add_argument("--stop-on-plateau", action="store_true",
                        help="stop when the loss gained less than 1%% over the last 20%% of "
                             "the saves (at least 4 saves against the 4 before)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hotfolders.devices import select_gpus
    from hotfolders.training import train

    try:
        select_gpus(args.gpu)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    stop = threading.Event()

    def request_stop(signum, frame) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        print("\nstopping after this iteration (saving first); Ctrl-C again aborts without "
              "saving", file=sys.stderr)
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    bar = tqdm(total=args.iterations, desc="train", unit="it", dynamic_ncols=True, leave=False,
               disable=not sys.stderr.isatty(), file=sys.stderr)

    def progress(iteration: int, total: int, info: dict) -> None:
        if bar.n == 0 and iteration > 1:  # resumed: start the bar at the saved count
            bar.reset(total=total or None)
            bar.n = bar.initial = iteration - 1
        bar.update(iteration - bar.n)
        bar.set_postfix(loss_a=f"{info['loss_a']:.4f}", loss_b=f"{info['loss_b']:.4f}",
                        img_s=f"{info['img_s']:.0f}", refresh=False)

    try:
        result = train(args.a, args.b, args.model_dir, trainer=args.trainer,
                       batch_size=args.batch_size, iterations=args.iterations,
                       save_every=args.save_every, snapshot_every=args.snapshot_every,
                       keep_snapshots=args.keep_snapshots, timelapse_a=args.timelapse_a,
                       timelapse_b=args.timelapse_b, precision=args.precision, mask=args.mask,
                       loss=args.loss, coverage=args.coverage,
                       learning_rate=args.learning_rate, stop_on_plateau=args.stop_on_plateau,
                       stop_event=stop, progress=progress)
    except ValueError as exc:  # a bad option value (unknown trainer, coverage out of range)
        print(f"facedrop train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    gain = "" if result.plateau_gain is None else f", recent gain {result.plateau_gain:+.1%}"
    print(f"{result.model_dir}: {result.iterations} iterations (this run "
          f"{result.iterations - result.start_iteration}), loss A {result.loss_a:.4f}, "
          f"B {result.loss_b:.4f}, {result.images_per_second:.1f} img/s ({result.precision})"
          f"{gain}; stopped: {result.stopped_because}")
    return 0
