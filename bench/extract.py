"""Extraction speed against decode-only speed, landmark jitter, measured in one run.

On a 20-second 1280x720 25 fps clip with one real face (built from the astronaut photo, with
known motion), prints decode-only frames/s, extraction frames/s with --every-n 4 and 1, each
as a ratio to decode-only, what each part costs per kept face, and the peak RSS. Then the
same for a wide shot (the face 90 px across: the small-face path), and the landmark jitter
and lag with and without the One Euro filter on still, usual and fast motion
(tests/motion.py). Targets on a 2-core CPU: every-4 >= 0.5x decode, every-1 >= 60 frames/s
on large faces, peak RSS < 1.5 GB.

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


def _make(path: Path, seconds: float, zoom: float) -> None:
    from media import make_video

    make_video(path, "astronaut", seconds=seconds, fps=25, size=(1280, 720), zoom=zoom)


def clip(path: Path, seconds: float, zoom: float = 1.6) -> Path:
    """The test clip, made once (in a child process: rendering holds every frame in memory,
    which must not count in this process's peak RSS)."""
    if not path.exists():
        import multiprocessing

        child = multiprocessing.get_context("spawn").Process(target=_make,
                                                             args=(path, seconds, zoom))
        child.start()
        child.join()
    return path


def detect_only(path: Path, every_n: int) -> tuple[int, float]:
    """(faces found, seconds) of the tracker alone on every Nth frame (decode included)."""
    from hotfolders.landmarks import FaceTracker
    from hotfolders.video import read_frames

    start = time.perf_counter()
    found = 0
    with FaceTracker() as tracker:
        for frame in read_frames(path, every_n):
            found += len(tracker.detect(frame.image))
    return found, time.perf_counter() - start


def run_clip(label: str, video: Path, size: int) -> dict[int, float]:
    """Decode-only, then extraction every 4th and every frame, with the cost per kept face."""
    from hotfolders.extract import extract

    n, secs = decode_only(video)
    decode_fps = n / secs
    print(f"\n{label}: {video.name}, {n} frames 1280x720")
    print(f"decode-only          {decode_fps:7.1f} frames/s   1.00x")
    results = {}
    for every_n in (4, 1):
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            summary = extract(video, out, every_n=every_n, size=size)
            elapsed = time.perf_counter() - start
        fps = n / elapsed  # source frames covered per second
        results[every_n] = fps
        found, detect_s = detect_only(video, every_n)
        faces = max(summary.faces_written, 1)
        print(f"extract --every-n {every_n}  {fps:7.1f} frames/s   {fps / decode_fps:.2f}x decode "
              f"({summary.faces_written} faces at {size} px of {-(-n // every_n)} frames, "
              f"{elapsed:.1f} s)")
        print(f"  per kept face: decode {1000 * secs / faces:.1f} ms, landmarks "
              f"{1000 * max(detect_s - secs, 0) / faces:.1f} ms, align + masks + PNG + write "
              f"{1000 * max(elapsed - detect_s, 0) / faces:.1f} ms")
    results[0] = decode_fps
    return results


def jitter_table(cache: Path) -> None:
    """Landmark jitter and lag against known motion, raw and filtered (tests/motion.py)."""
    from motion import Motion, fast_motion, make_clip, measure, track

    from hotfolders.landmarks import FaceLandmarker
    from hotfolders.samples import load_face
    from hotfolders.smoothing import BETA, MIN_CUTOFF

    with FaceLandmarker(video=False) as landmarker:
        (photo,) = landmarker.detect(load_face("astronaut"))
    still = Motion(angle=lambda t: 0.0, scale=lambda t: 1.0, dx=lambda t: 0.0, dy=lambda t: 0.0)
    print(f"\nlandmark jitter (share of the inter-ocular distance), One Euro filter "
          f"min_cutoff {MIN_CUTOFF} Hz, beta {BETA}:")
    print(f"{'motion':8} {'jitter raw':>11} {'filtered':>9} {'ratio':>6} {'error raw':>10} "
          f"{'filtered':>9} {'lag ms':>7}")
    for name, motion in (("still", still), ("usual", Motion()), ("fast", fast_motion())):
        clip_ = make_clip(cache / f"jitter-{name}.mp4", motion, seconds=4.0)
        meshes = track(clip_)
        raw, filt = measure(clip_, meshes, photo, None), measure(clip_, meshes, photo, {})
        lag = f"{filt['lag_ms']:7.0f}" if name != "still" else "      -"
        print(f"{name:8} {100 * raw['jitter']:10.2f}% {100 * filt['jitter']:8.2f}% "
              f"{filt['jitter'] / raw['jitter']:6.2f} {100 * raw['error']:9.2f}% "
              f"{100 * filt['error']:8.2f}% {lag}")


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
    from hotfolders.landmarks import FaceLandmarker
    from hotfolders.samples import load_face
    from hotfolders.video import read_frames

    # warm up: import TensorFlow Lite/MediaPipe and load the models once, outside the timings
    with FaceLandmarker(video=True) as landmarker:
        landmarker.detect(next(iter(read_frames(video))).image)
    with FaceLandmarker(video=False) as landmarker:
        (photo,) = landmarker.detect(load_face("astronaut"))
    wide = clip(args.cache / f"extract-{int(args.seconds)}s-720p-face90.mp4", args.seconds,
                zoom=90 / photo.size)
    results = run_clip("large face", video, args.size)
    small = run_clip("wide shot, face 90 px", wide, args.size)
    jitter_table(args.cache)
    decode_fps = results[0]
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS             {rss_mb:7.0f} MB")
    print(f"targets: every-4 >= 0.5x decode: {'met' if results[4] >= 0.5 * decode_fps else 'MISSED'}; "
          f"every-1 >= 60 frames/s: {'met' if results[1] >= 60 else 'MISSED'}; "
          f"RSS < 1536 MB: {'met' if rss_mb < 1536 else 'MISSED'}; wide shot every-4: "
          f"{small[4] / small[0]:.2f}x decode")
    return 0


if __name__ == "__main__":
    sys.exit(main())
