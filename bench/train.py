"""Training speed against this machine's matrix-multiply peak, measured in one run.

Prints the float32 and bfloat16 matmul peaks, then for each trainer at batch 16: images/s with
the real data pipeline (faces read from PNG metadata, augmented in a background thread) and
with pre-made tensors, the pipeline's cost, the achieved FLOP/s as a fraction of the peak of
the precision used, and the peak RSS. Images/s counts every face that goes through the
network: one iteration trains a batch of A and a batch of B, so batch 16 = 32 images.

Other processes share the CPU with a benchmark; the load average is printed, and the
"alone" column estimates the rate with the CPU to itself from this process's CPU time
(images per CPU-second x cores). Blocks of pre-made and pipeline steps are interleaved so that
a change of load hits both alike.

Targets on a 2-core CPU: lightweight >= 60 img/s, pipeline cost <= 10 %, peak RSS < 4 GB.

    python bench/train.py [--trainers lightweight,original,dfaker] [--precision auto]
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from hotfolders import quiet  # noqa: E402

quiet.silence(False)
quiet.filter_native_stderr()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak(tf, dtype, n: int = 2048, seconds: float = 3.0) -> float:
    """Best FLOP/s of repeated n x n matmuls (best of several bursts: load only slows)."""
    a = tf.cast(tf.random.normal((n, n)), dtype)

    @tf.function
    def mm(x):
        return tf.matmul(x, x)

    mm(a).numpy()
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        out = None
        for _ in range(3):
            out = mm(a)
        out.numpy()
        best = max(best, 3 * 2 * n ** 3 / (time.perf_counter() - start))
    return best


def graph_flops(concrete) -> float:
    """FLOPs of a traced function, from TensorFlow's profiler (NaN if it cannot tell)."""
    try:
        from tensorflow.python.profiler import model_analyzer, option_builder

        opts = option_builder.ProfileOptionBuilder.float_operation()
        opts["output"] = "none"
        return float(model_analyzer.profile(concrete.graph, options=opts).total_float_ops)
    except Exception:
        return float("nan")


def forward_flops(tf, nets) -> float:
    spec = tf.TensorSpec((1, nets.input_size, nets.input_size, 3), tf.float32)
    fn = tf.function(lambda x: nets.decoder_a(nets.encoder(x)))
    return graph_flops(fn.get_concrete_function(spec))


def make_faces(cache: Path) -> tuple[Path, Path]:
    """Real faces (256 px, with metadata) of two people, extracted once and cached."""
    from hotfolders.extract import extract
    from media import make_video

    out = []
    for name, hz in (("astronaut", 440.0), ("grace", 660.0)):
        folder = cache / f"train-faces-{name}"
        if not (folder / "alignments.json.gz").exists():
            video, _ = make_video(cache / f"train-{name}.mp4", name, seconds=4.0, audio_hz=hz)
            extract(video, folder, size=256)
        out.append(folder)
    return out[0], out[1]


class Meter:
    """Wall and process-CPU time of blocks of steps."""

    def __init__(self) -> None:
        self.steps, self.wall, self.cpu = 0, 0.0, 0.0
        self.rates: list[float] = []

    def block(self, fn, steps: int) -> None:
        w, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            out = fn()
        float(out[0])
        dw, dc = time.perf_counter() - w, time.process_time() - c
        self.steps += steps
        self.wall += dw
        self.cpu += dc
        self.rates.append(steps / dw)

    def median(self, images_per_step: int) -> float:
        return images_per_step * statistics.median(self.rates)

    def best(self, images_per_step: int) -> float:
        return images_per_step * max(self.rates)

    def alone(self, images_per_step: int) -> float:
        """Rate with the CPU to itself, from this process's CPU time (images per core-second)."""
        cores = os.cpu_count() or 1
        return images_per_step * self.steps / max(self.cpu / cores, 1e-9)


def pipeline_cost(tensors: Meter, pipeline: Meter) -> float:
    """Median over adjacent block pairs of 1 - pipeline rate / pre-made rate (pairs see the
    same load, so a change of load between pairs cancels out)."""
    return statistics.median(1 - p / t for t, p in zip(tensors.rates, pipeline.rates))


def bench_trainer(tf, name: str, precision: str, faces: tuple[Path, Path], args) -> dict:
    from hotfolders.dataset import batches, load_faces
    from hotfolders.model import Networks
    from hotfolders.plugins.train import load_trainer
    from hotfolders.training import choose_policy, make_optimizer, make_step

    plugin = load_trainer(name)
    policy = choose_policy(precision)
    start = time.perf_counter()
    fa = load_faces([faces[0]], plugin.OUTPUT_SIZE, 0.85, "extended", "A")
    fb = load_faces([faces[1]], plugin.OUTPUT_SIZE, 0.85, "extended", "B")
    load_s = time.perf_counter() - start
    nets = Networks(name, policy)
    opt = make_optimizer(policy)
    step = make_step(nets, opt, "mae+dssim", policy == "mixed_float16")
    data = batches(fa, fb, args.batch_size, plugin.INPUT_SIZE, seed=0)
    try:
        fixed = [tf.constant(t) for side in next(data) for t in side]
        start = time.perf_counter()
        step(*fixed)  # trace
        first = time.perf_counter() - start
        step_s = first
        for _ in range(2):  # warm up; also an estimate of one step
            start = time.perf_counter()
            float(step(*fixed)[0])
            step_s = time.perf_counter() - start
        block = max(1, min(args.steps, int(args.block_seconds / max(step_s, 1e-3))))
        rounds = max(1, min(args.rounds, int(args.trainer_seconds / (2 * block * step_s))))
        tensors, pipeline = Meter(), Meter()

        def from_pipeline():
            (xa, ya, ma), (xb, yb, mb) = next(data)
            return step(xa, ya, ma, xb, yb, mb)

        for r in range(rounds):  # alternate which goes first, so neither always follows the other
            for meter, fn in ((tensors, lambda: step(*fixed)), (pipeline, from_pipeline))[
                    ::1 if r % 2 == 0 else -1]:
                meter.block(fn, block)
        flops_step = graph_flops(step.get_concrete_function(*fixed))
        flops_fwd = forward_flops(tf, nets)
    finally:
        data.close()
    images = 2 * args.batch_size
    return {"name": name, "policy": policy, "faces": len(fa) + len(fb), "load_s": load_s,
            "trace_s": first, "steps": tensors.steps + pipeline.steps,
            "tensors": tensors.median(images), "pipeline": pipeline.median(images),
            "tensors_best": tensors.best(images), "pipeline_best": pipeline.best(images),
            "cost": pipeline_cost(tensors, pipeline), "alone": pipeline.alone(images), "flops_step": flops_step, "flops_fwd": flops_fwd,
            "rss": rss_mb()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", default="lightweight,original,dfaker")
    parser.add_argument("--precision", default="auto",
                        help="auto, float32 or mixed; a comma list compares them (lightweight only "
                             "for the extra ones)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="most steps per timed block")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved block pairs")
    parser.add_argument("--block-seconds", type=float, default=2.5)
    parser.add_argument("--trainer-seconds", type=float, default=60.0,
                        help="time budget of the timed part per trainer")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "facedrop-bench")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tf = quiet.import_tensorflow()
    from hotfolders.training import choose_policy, cpu_has_bf16

    load_start = os.getloadavg()
    gpu = tf.config.list_physical_devices("GPU")
    device = f"GPU ({len(gpu)})" if gpu else f"CPU ({os.cpu_count()} cores, " + (
        "AMX/AVX-512 BF16" if cpu_has_bf16() else "no bfloat16 hardware") + ")"
    print(f"device: {device}; load average at start {load_start[0]:.1f} (other processes share "
          f"the CPU)")
    peaks = {"float32": matmul_peak(tf, tf.float32), "mixed_bfloat16": matmul_peak(tf, tf.bfloat16)}
    if gpu:
        peaks["mixed_float16"] = matmul_peak(tf, tf.float16, n=8192)
    print("matmul peak: " + ", ".join(f"{k.replace('mixed_', '')} {v / 1e9:.0f} GFLOP/s"
                                      for k, v in peaks.items()))
    faces = make_faces(args.cache)
    precisions = args.precision.split(",")
    rows = []
    print(f"{'trainer':12} {'precision':15} {'pipeline':>9} {'tensors':>9} {'cost':>6} "
          f"{'best':>15} {'alone':>7} {'GFLOP/img':>9} {'GFLOP/s':>8} {'of peak':>7} {'RSS MB':>7}")
    for name in args.trainers.split(","):
        for precision in precisions if name == "lightweight" else precisions[:1]:
            r = bench_trainer(tf, name, precision, faces, args)
            rows.append(r)
            per_img = r["flops_step"] / (2 * args.batch_size)
            achieved = per_img * r["tensors_best"]
            peak = peaks.get(r["policy"], peaks["float32"])
            print(f"{r['name']:12} {r['policy']:15} {r['pipeline']:7.1f}/s {r['tensors']:7.1f}/s "
                  f"{r['cost']:6.1%} {r['pipeline_best']:6.1f}/{r['tensors_best']:6.1f}/s "
                  f"{r['alone']:5.1f}/s {per_img / 1e9:9.2f} {achieved / 1e9:8.1f} "
                  f"{achieved / peak:7.1%} {r['rss']:7.0f}", flush=True)
    print(f"img/s = faces through the network per second, A and B together (batch "
          f"{args.batch_size} per side = {2 * args.batch_size} per iteration), median of the "
          "timed blocks; cost = median pipeline slowdown of adjacent block pairs; best = fastest "
          "block (pipeline/pre-made), the least disturbed by other processes; alone = estimate "
          "with the CPU to itself, from this process's CPU time; GFLOP/s and 'of peak' from the "
          "best pre-made block and a training step's FLOPs (forward + backward) against the "
          "matmul peak of the precision used")
    for r in rows:
        print(f"  {r['name']} ({r['policy']}): forward {r['flops_fwd'] / 1e9:.2f} GFLOP/face, "
              f"loaded {r['faces']} faces in {r['load_s']:.1f} s, first step (tracing) "
              f"{r['trace_s']:.1f} s, {r['steps']} timed steps")
    # the peak again: load only ever lowers a measurement, so the higher of the two counts
    again = {"float32": matmul_peak(tf, tf.float32), "mixed_bfloat16": matmul_peak(tf, tf.bfloat16)}
    for key, value in again.items():
        peaks[key] = max(peaks[key], value)
    print("matmul peak (higher of start and end): " + ", ".join(
        f"{k.replace('mixed_', '')} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items()))
    for r in rows:
        peak = peaks.get(r["policy"], peaks["float32"])
        achieved = r["flops_step"] / (2 * args.batch_size) * r["tensors_best"]
        print(f"  {r['name']} ({r['policy']}): best block {achieved / 1e9:.0f} GFLOP/s = "
              f"{achieved / peak:.0%} of that peak; median block "
              f"{achieved * r['tensors'] / r['tensors_best'] / peak:.0%}")
    load_end = os.getloadavg()
    print(f"load average at end {load_end[0]:.1f}; peak RSS {rss_mb():.0f} MB")
    light = next((r for r in rows if r["name"] == "lightweight"
                  and r["policy"] == choose_policy(precisions[0])), None)
    if light:
        cost = light["cost"]
        print(f"targets: lightweight {light['pipeline']:.0f} img/s (best block "
              f"{light['pipeline_best']:.0f}, alone ~{light['alone']:.0f}) vs >= 60: "
              f"{'ok' if light['pipeline'] >= 60 else 'MISSED'}"
              f"{'' if light['pipeline'] >= 60 or light['alone'] < 60 else ' under this load'}; "
              f"pipeline cost {cost:.1%} vs <= 10%: {'ok' if cost <= 0.10 else 'MISSED'}; "
              f"peak RSS {rss_mb() / 1024:.2f} GB vs < 4 GB: "
              f"{'ok' if rss_mb() < 4096 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
