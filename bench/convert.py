"""Conversion speed against transcode-only speed, measured in one run.

On a 20-second 1280x720 25 fps clip with one real face (the astronaut photo with known motion
and a sine-tone track), prints:

- transcode-only frames/s: decode + the very encoder settings conversion uses (H.264, same CRF
  and preset, audio copied) with the same decode and encode threads, no swap;
- conversion frames/s with the ``lightweight`` model (landmarks detected on every frame with
  jitter reduction, model, mask, avg-color, warp back, label, encode, audio copied);
- their ratio, the process CPU time per frame of each, and the peak RSS.

Targets on a 2-core CPU: conversion >= 0.6x transcode-only and >= 25 frames/s (real time).
The model is trained for a few iterations only: speed does not depend on its quality. When
TensorFlow sees a GPU it runs the model there; the first line says which device was used.

    python bench/convert.py [--seconds 20] [--batch-size 8] [--cache DIR] [--keep OUT.mp4]
"""
from __future__ import annotations

import argparse
import os
import queue
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hotfolders import quiet  # noqa: E402

quiet.silence(False)
quiet.filter_native_stderr()


def clip(path: Path, seconds: float) -> Path:
    """The same clip as bench/extract.py (shared cache): the face fills a fair part of 720p."""
    from media import make_video

    if not path.exists():
        make_video(path, "astronaut", seconds=seconds, fps=25, size=(1280, 720), zoom=1.6)
    return path


def model(cache: Path) -> Path:
    """A ``lightweight`` model trained a few iterations on short clips of two people."""
    from media import make_video

    from hotfolders.errors import InputError
    from hotfolders.extract import extract
    from hotfolders.model import load_swap_model
    from hotfolders.training import train

    model_dir = cache / "convert-model-lightweight"
    if (model_dir / "state.json").exists():
        try:
            load_swap_model(model_dir)
            return model_dir
        except InputError:  # made by an older version of the trainer: train a new one
            import shutil

            shutil.rmtree(model_dir)
    faces = []
    for name, hz in (("astronaut", 440.0), ("grace", 660.0)):
        video, _ = make_video(cache / f"convert-{name}.mp4", name, seconds=1.0, audio_hz=hz)
        out = cache / f"convert-faces-{name}"
        if not out.exists():
            extract(video, out, every_n=1, size=128)
        faces.append(out)
    train([faces[0]], [faces[1]], model_dir, trainer="lightweight", batch_size=4, iterations=4,
          save_every=4, precision="float32", seed=0)
    return model_dir


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def transcode(video: Path, out: Path) -> int:
    """Decode and re-encode with conversion's writer settings and decode/encode threads."""
    from hotfolders.video import VideoWriter, prefetch, probe, read_frames

    info = probe(video)
    n = 0
    q: queue.Queue = queue.Queue(maxsize=16)
    with VideoWriter(out, info.width, info.height, info.fps, audio_from=video) as writer:
        def encode() -> None:
            while (item := q.get()) is not None:
                writer.write(item)

        thread = threading.Thread(target=encode, name="encode")
        thread.start()
        try:
            for frame in prefetch(read_frames(video)):
                q.put(frame.image)
                n += 1
        finally:
            q.put(None)
            thread.join()
    return n


def device() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    return f"GPU ({gpus[0].name})" if gpus else f"CPU ({os.cpu_count()} cores)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facedrop-bench")
    parser.add_argument("--keep", type=Path, default=None,
                        help="copy the converted video here, to look at it")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    video = clip(args.cache / f"extract-{int(args.seconds)}s-720p-z16.mp4", args.seconds)
    model_dir = model(args.cache)

    import numpy as np

    from hotfolders.convert import convert
    from hotfolders.landmarks import FaceLandmarker
    from hotfolders.model import load_swap_model
    from hotfolders.video import probe, read_frames

    # warm up outside the timings: TensorFlow and the model's graph, MediaPipe's models
    swap_model = load_swap_model(model_dir)
    size = swap_model.input_size
    swap_model.swap(np.zeros((args.batch_size, size, size, 3), np.uint8))
    with FaceLandmarker(video=True) as landmarker:
        landmarker.detect(next(iter(read_frames(video))).image)

    info = probe(video)
    print(f"clip: {video.name}, {info.frames} frames {info.width}x{info.height} @ "
          f"{float(info.fps):g} fps; model: {swap_model.trainer} {size}->"
          f"{swap_model.output_size} px, batch {args.batch_size}; inference on {device()}")
    with tempfile.TemporaryDirectory(dir=args.cache) as tmp:
        cpu, start = cpu_seconds(), time.perf_counter()
        n = transcode(video, Path(tmp) / "transcode.mp4")
        secs, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        transcode_fps = n / secs
        print(f"transcode-only   {transcode_fps:7.1f} frames/s   1.00x   "
              f"({secs:.1f} s, {1000 * cpu / n:.1f} ms CPU/frame)")
        out = Path(tmp) / "bench_swapped.mp4"
        cpu, start = cpu_seconds(), time.perf_counter()
        result = convert(video, model_dir, out, batch_size=args.batch_size, model=swap_model)
        secs, cpu = time.perf_counter() - start, cpu_seconds() - cpu
        fps = result.frames / secs
        ratio = fps / transcode_fps
        print(f"convert          {fps:7.1f} frames/s   {ratio:.2f}x   ({secs:.1f} s, "
              f"{1000 * cpu / result.frames:.1f} ms CPU/frame, "
              f"{result.frames_swapped}/{result.frames} frames swapped)")
        if args.keep:
            import shutil

            shutil.copy(out, args.keep)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load = os.getloadavg()[0]
    print(f"peak RSS         {rss_mb:7.0f} MB; load average {load:.1f} on {os.cpu_count()} cores "
          f"(other work on the machine lowers both rates)")
    print(f"targets: >= 0.6x transcode-only: {'met' if ratio >= 0.6 else 'MISSED'}; "
          f">= 25 frames/s: {'met' if fps >= 25 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
