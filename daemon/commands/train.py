"""Train a swap model: one shared encoder, one decoder for A and one for B.

Saves every --save-every iterations (atomically; a kill never breaks the model), keeps the
previous save as a backup and the best-loss save in MODEL/best, snapshots every
--snapshot-every iterations, renders a timelapse of fixed sample faces at every save and logs
the loss per side to MODEL/loss.csv. Run the same command again to resume exactly where it
stopped. Ctrl-C (or SIGTERM) saves and stops; a second Ctrl-C aborts without saving.
Trainer, mask, loss and coverage are fixed when a model is created. By default training
stops by itself when the loss stopped improving (--stop plateau) or at --max-iterations; run
it again with a higher --max-iterations to go on.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ..cli import UsageError
from ..settings import add_options, check_options, engine_kwargs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--a", nargs="+", type=Path, required=True, metavar="DIR",
                        help="folders of person A's faces (the face to replace)")
    parser.add_argument("--b", nargs="+", type=Path, required=True, metavar="DIR",
                        help="folders of person B's faces (the face to put in)")
    parser.add_argument("--model-dir", type=Path, required=True, metavar="DIR",
                        help="model folder (created if missing, resumed if present)")
    add_options(parser, "train")  # every [train] setting, declared in daemon/settings.py
    parser.add_argument("--timelapse-a", nargs="+", type=Path, metavar="DIR",
                        help="sample faces of A for the timelapse (default: picked from --a)")
    parser.add_argument("--timelapse-b", nargs="+", type=Path, metavar="DIR",
                        help="sample faces of B for the timelapse (default: picked from --b)")
    parser.add_argument("--gpu", default="auto", metavar="WHICH",
                        help='GPUs to use: auto (every GPU TensorFlow sees), cpu, or indices '
                             'such as 1 or 0,1 (default: auto; memory growth is always on)')


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hotfolders.devices import select_gpus
    from hotfolders.precision import describe as describe_precision
    from hotfolders.threads import summary
    from hotfolders.training import train

    try:
        select_gpus(args.gpu)
        check_options(args, "train")
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
    bar = tqdm(total=args.max_iterations, desc="train", unit="it", dynamic_ncols=True, leave=False,
               disable=not sys.stderr.isatty(), file=sys.stderr)

    def progress(iteration: int, total: int, info: dict) -> None:
        if bar.n == 0 and iteration > 1:  # resumed: start the bar at the saved count
            bar.reset(total=total or None)
            bar.n = bar.initial = iteration - 1
        bar.update(iteration - bar.n)
        bar.set_postfix(loss_a=f"{info['loss_a']:.4f}", loss_b=f"{info['loss_b']:.4f}",
                        img_s=f"{info['img_s']:.0f}", refresh=False)

    try:
        result = train(args.a, args.b, args.model_dir, timelapse_a=args.timelapse_a,
                       timelapse_b=args.timelapse_b, stop_event=stop, progress=progress,
                       **engine_kwargs(args, "train"))
    except ValueError as exc:  # a bad option value (unknown trainer, coverage out of range)
        print(f"facedrop train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        bar.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    gain = "" if result.plateau_gain is None else f", recent gain {result.plateau_gain:+.1%}"
    choice = result.precision_choice
    how = f"precision auto: {describe_precision(choice)}" if choice else result.precision
    how += f"; threads {summary(result.threads, result.threads_choice)}"
    print(f"{result.model_dir}: {result.iterations} iterations (this run "
          f"{result.iterations - result.start_iteration}), loss A {result.loss_a:.4f}, "
          f"B {result.loss_b:.4f}, {result.images_per_second:.1f} img/s ({how})"
          f"{gain}; stopped: {result.stopped_because}")
    return 0
