"""Training speed against this machine's matrix-multiply peak, measured in one run.

Prints the float32 (and bfloat16) matmul peak, then for each trainer at batch 16: images/s
with the real data pipeline (faces from PNG metadata, augmentation in a background thread) and
with pre-made tensors, the pipeline's cost, achieved FLOP/s as a fraction of the peak, and the
peak RSS. Target on a 2-core CPU: lightweight >= 60 img/s, pipeline cost <= 10 %, RSS < 4 GB.

    python bench/train.py [--trainers lightweight,original,dfaker] [--steps 30]
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


def matmul_peak(tf, dtype, n: int = 2048, reps: int = 10) -> float:
    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a, dtype)

    @tf.function
    def mm(x):
        return tf.matmul(x, x)

    mm(a).numpy()
    start = time.perf_counter()
    for _ in range(reps):
        out = mm(a)
    out.numpy()
    return 2 * n ** 3 * reps / (time.perf_counter() - start)


def step_flops(tf, step, args) -> float:
    """FLOPs of one compiled training step, from TensorFlow's cost analysis."""
    try:
        graph = step.get_concrete_function(*args).graph
        from tensorflow.python.profiler import model_analyzer, option_builder

        opts = option_builder.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        return float(model_analyzer.profile(graph, options=opts).total_float_ops)
    except Exception:
        return float("nan")


def faces(cache: Path) -> tuple[Path, Path]:
    from hotfolders.extract import extract
    from media import make_video

    out = []
    for name in ("astronaut", "grace"):
        folder = cache / f"train-faces-{name}"
        if not (folder / "alignments.json.gz").exists():
            video, _ = make_video(cache / f"train-{name}.mp4", name, seconds=4.0)
            extract(video, folder, size=256)
        out.append(folder)
    return out[0], out[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", default="lightweight,original")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "facedrop-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tf = quiet.import_tensorflow()
    from hotfolders.dataset import batches, load_faces
    from hotfolders.model import Networks
    from hotfolders.plugins.train import load_trainer
    from hotfolders.training import _make_step, _optimizer, choose_policy

    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    peak32 = matmul_peak(tf, tf.float32)
    peak16 = matmul_peak(tf, tf.bfloat16)
    print(f"device: {device}; matmul peak float32 {peak32 / 1e9:.0f} GFLOP/s, "
          f"bfloat16 {peak16 / 1e9:.0f} GFLOP/s")
    a_dir, b_dir = faces(args.cache)
    policy = choose_policy("auto")
    peak = peak16 if "mixed" in policy else peak32
    for name in args.trainers.split(","):
        plugin = load_trainer(name)
        nets = Networks(name, policy)
        opt = _optimizer(policy, 5e-5)
        step = _make_step(nets, opt, "mae+dssim", policy == "mixed_float16")
        fa = load_faces([a_dir], plugin.OUTPUT_SIZE, 0.85, "extended", "A")
        fb = load_faces([b_dir], plugin.OUTPUT_SIZE, 0.85, "extended", "B")
        data = batches(fa, fb, args.batch_size, plugin.INPUT_SIZE)
        fixed = next(data)
        flat = (*fixed[0], *fixed[1])
        for _ in range(3):
            step(*flat)  # trace and warm up
        start = time.perf_counter()
        for _ in range(args.steps):
            la, _ = step(*flat)
        float(la)
        tensors = 2 * args.batch_size * args.steps / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(args.steps):
            (xa, ya, ma, wa), (xb, yb, mb, wb) = next(data)
            la, _ = step(xa, ya, ma, wa, xb, yb, mb, wb)
        float(la)
        real = 2 * args.batch_size * args.steps / (time.perf_counter() - start)
        data.close()
        flops = step_flops(tf, step, flat)
        achieved = flops * tensors / (2 * args.batch_size)
        print(f"{name:12} {policy:15} real pipeline {real:6.1f} img/s | pre-made tensors "
              f"{tensors:6.1f} img/s | pipeline cost {max(0.0, 1 - real / tensors):5.1%} | "
              f"{achieved / 1e9:6.1f} GFLOP/s = {achieved / peak:5.1%} of peak")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
