"""Extraction speed against decode-only speed, measured in one run.

On a 20-second 1280x720 25 fps clip with one real face (built from the astronaut photo, with
known motion), prints decode-only frames/s, extraction frames/s with --every-n 4 and 1, each
as a ratio to decode-only, and the peak RSS. Targets on a 2-core CPU: every-4 >= 0.5x decode,
every-1 >= 60 frames/s, peak RSS < 1.5 GB.

    python bench/extract.py [--seconds 20] [--size 512]
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hotfolders import quiet  # noqa: E402

quiet.silence(False)
quiet.filter_native_stderr()


def clip(path: Path, seconds: float) -> Path:
    from media import make_video

    if not path.exists():
        make_video(path, "astronaut", seconds=seconds, fps=25, size=(1280, 720), zoom=1.6)
    return path


def decode_only(path: Path) -> tuple[int, float]:
    from hotfolders.video import read_frames

    start = time.perf_counter()
    n = sum(1 for _ in read_frames(path))
    return n, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facedrop-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    video = clip(args.cache / f"extract-{int(args.seconds)}s-720p-z16.mp4", args.seconds)

    from hotfolders.extract import extract

    # warm up: import TensorFlow Lite/MediaPipe and load the models once, outside the timings
    from hotfolders.landmarks import FaceLandmarker
    from hotfolders.video import read_frames

    with FaceLandmarker(video=True) as landmarker:
        landmarker.detect(next(iter(read_frames(video))).image)
    n, secs = decode_only(video)
    decode_fps = n / secs
    print(f"clip: {video.name}, {n} frames 1280x720")
    print(f"decode-only          {decode_fps:7.1f} frames/s   1.00x")
    results = {}
    for every_n in (4, 1):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = extract(video, out, every_n=every_n, size=args.size)
            elapsed = time.perf_counter() - start
        fps = n / elapsed  # source frames covered per second
        results[every_n] = fps
        print(f"extract --every-n {every_n}  {fps:7.1f} frames/s   {fps / decode_fps:.2f}x decode "
              f"({summary.faces_written} faces at {args.size} px, {elapsed:.1f} s)")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS             {rss_mb:7.0f} MB")
    print(f"targets: every-4 >= 0.5x decode: {'met' if results[4] >= 0.5 * decode_fps else 'MISSED'}; "
          f"every-1 >= 60 frames/s: {'met' if results[1] >= 60 else 'MISSED'}; "
          f"RSS < 1536 MB: {'met' if rss_mb < 1536 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
