"""Training speed against this machine's matrix-multiply peak, measured in one run.

Prints the float32 and bfloat16 matmul peaks, then for each trainer at batch 16: images/s with
the real data pipeline (faces read from PNG metadata, augmented in a background thread) and
with pre-made tensors, the pipeline's cost, the achieved FLOP/s as a fraction of the peak of
the precision used, and the peak RSS. Each trainer runs in its own process, so its RSS is its
own. Images/s counts every face that goes through the network: one iteration trains a batch of
A and a batch of B, so batch 16 = 32 images.

Other processes may share the CPU; the load average is printed, blocks of pre-made and pipeline
steps are interleaved so a change of load hits both alike, the fastest block is shown beside
the median, and "alone" estimates the rate with the CPU to itself from the process's CPU time.

Targets on a 2-core CPU: lightweight >= 60 img/s, pipeline cost <= 10 %, peak RSS < 4 GB.
(dfaker is meant for GPUs: on a small CPU one of its steps takes half a minute.)

    python bench/train.py [--trainers lightweight,original,dfaker] [--precision auto,mixed]
                          [--convolutions auto,onednn] [--threads auto,shared,per-op]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

import numpy as np

from hotfolders import quiet

quiet.silence(False)
quiet.filter_native_stderr()


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def matmul_peak(tf, dtype, n: int = 2048, seconds: float = 4.0) -> tuple[float, float]:
    """(best burst, CPU-time rate) FLOP/s of repeated n x n matmuls.

    Load from other processes only ever lowers the best burst; the CPU-time rate (FLOPs per
    core-second x cores) is what the process would reach with the CPU to itself.
    """
    a = tf.cast(tf.random.normal((n, n)), dtype)

    @tf.function
    def mm(x):
        return tf.matmul(x, x)

    mm(a).numpy()
    best, count = 0.0, 0
    cpu0, end = time.process_time(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        mm(a).numpy()
        best = max(best, 2 * n ** 3 / (time.perf_counter() - start))
        count += 1
    cpu = time.process_time() - cpu0
    return best, 2 * n ** 3 * count / max(cpu / (os.cpu_count() or 1), 1e-9)


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
    from media import make_video

    from hotfolders.extract import extract

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


def bench_trainer(tf, name: str, precision: str, convolutions: str, threads: str,
                  faces: tuple[Path, Path], args) -> dict:
    from hotfolders import threads as thread_layout
    from hotfolders.dataset import batches, load_faces
    from hotfolders.model import Networks
    from hotfolders.plugins.train import load_trainer
    from hotfolders.precision import candidates, choose
    from hotfolders.training import make_optimizer, make_step

    plugin = load_trainer(name)
    # auto measures, as a new model does: the thread layouts (in worker processes), then the
    # precision (with the layouts' figures where they timed both)
    layout, layout_choice, rates = thread_layout.choose(threads, name, args.batch_size,
                                                        "mae+dssim", candidates(precision))
    if layout is not None and not thread_layout.apply(layout):
        layout = None
    policy, _ = choose(precision, name, args.batch_size, rates=rates)
    start = time.perf_counter()
    fa = load_faces([faces[0]], plugin.OUTPUT_SIZE, 0.85, "extended", "A")
    fb = load_faces([faces[1]], plugin.OUTPUT_SIZE, 0.85, "extended", "B")
    load_s = time.perf_counter() - start
    nets = Networks(name, policy)
    tuned = nets.tune(args.batch_size) if convolutions == "auto" else []
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
        from hotfolders.dataset import augment

        rng = np.random.default_rng(1)
        c = time.process_time()
        for _ in range(5):
            for faces_ in (fa, fb):
                augment(faces_, rng.integers(0, len(faces_), args.batch_size), rng,
                        plugin.INPUT_SIZE)
        augment_s = (time.process_time() - c) / 5
        flops_step = graph_flops(step.get_concrete_function(*fixed))
        flops_fwd = forward_flops(tf, nets)
    finally:
        data.close()
    images = 2 * args.batch_size
    return {"name": name, "policy": policy,
            "spec": f"{name}:{precision}:{convolutions}:{threads}",
            "convolutions": convolutions, "threads": layout or "default",
            "threads_summary": thread_layout.summary(layout, layout_choice), "tuned": tuned, "faces": len(fa) + len(fb),
            "load_s": load_s,
            "trace_s": first, "steps": tensors.steps + pipeline.steps,
            "tensors": tensors.median(images), "pipeline": pipeline.median(images),
            "tensors_best": tensors.best(images), "pipeline_best": pipeline.best(images),
            "cost": pipeline_cost(tensors, pipeline), "alone": pipeline.alone(images),
            "alone_tensors": tensors.alone(images), "augment_s": augment_s, "flops_step": flops_step, "flops_fwd": flops_fwd,
            "rss": rss_mb()}


def run_worker(args) -> dict:
    """One (trainer, precision) in a fresh process, so its peak RSS is its own."""
    cmd = [sys.executable, __file__, "--worker", args.worker_spec, "--cache", str(args.cache),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--rounds",
           str(args.rounds), "--block-seconds", str(args.block_seconds), "--trainer-seconds",
           str(args.trainer_seconds)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        raise RuntimeError(f"worker {args.worker_spec} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trainers", default="lightweight,original,dfaker")
    parser.add_argument("--precision", default="auto",
                        help="auto, float32 or mixed; a comma list compares them on lightweight "
                             "(the other trainers use the first)")
    parser.add_argument("--convolutions", default="auto",
                        help="auto (the convolutions oneDNN runs poorly in the form measured "
                             "fastest, as training does) or onednn (all as oneDNN "
                             "convolutions); a comma list compares them on every trainer")
    parser.add_argument("--threads", default="auto",
                        help="auto (both thread layouts timed, the faster taken, as training "
                             "does), shared or per-op; a comma list compares them on every "
                             "trainer")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=8, help="most steps per timed block")
    parser.add_argument("--rounds", type=int, default=12, help="interleaved block pairs")
    parser.add_argument("--block-seconds", type=float, default=2.5)
    parser.add_argument("--trainer-seconds", type=float, default=60.0,
                        help="time budget of the timed part per trainer")
    parser.add_argument("--cache", type=Path,
                        default=Path(tempfile.gettempdir()) / "facedrop-bench")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # "trainer:precision:form:threads"
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    tf = quiet.import_tensorflow()
    if args.worker:
        name, precision, convolutions, threads = args.worker.split(":")
        result = bench_trainer(tf, name, precision, convolutions, threads,
                               make_faces(args.cache), args)
        print(json.dumps(result), flush=True)
        return 0
    from hotfolders.precision import describe_cpu

    load_start = os.getloadavg()
    gpu = tf.config.list_physical_devices("GPU")
    device = f"GPU ({len(gpu)})" if gpu else f"CPU ({os.cpu_count()} cores, {describe_cpu()})"
    print(f"device: {device}; load average at start {load_start[0]:.1f} (other processes share "
          f"the CPU)", flush=True)
    peaks, alone_peaks = {}, {}
    kinds = [("float32", tf.float32, 2048), ("mixed_bfloat16", tf.bfloat16, 2048)]
    if gpu:
        kinds.append(("mixed_float16", tf.float16, 8192))
    for key, dtype, n in kinds:
        peaks[key], alone_peaks[key] = matmul_peak(tf, dtype, n)
    print("matmul peak: " + ", ".join(
        f"{k.replace('mixed_', '')} {peaks[k] / 1e9:.0f} GFLOP/s (alone ~{alone_peaks[k] / 1e9:.0f})"
        for k in peaks), flush=True)
    make_faces(args.cache)
    precisions = args.precision.split(",")
    rows = []
    print(f"{'trainer':12} {'precision':15} {'convs':6} {'threads':7} {'pipeline':>9} "
          f"{'tensors':>9} "
          f"{'cost':>6} "
          f"{'best':>15} {'alone':>7} {'GFLOP/img':>9} {'GFLOP/s':>8} {'of peak':>7} {'RSS MB':>7}",
          flush=True)
    forms = args.convolutions.split(",")
    layouts = args.threads.split(",")
    for name in args.trainers.split(","):
        for precision, form, layout in [(p, f, t) for p in (precisions if name == "lightweight"
                                                            else precisions[:1])
                                        for f in forms for t in layouts]:
            args.worker_spec = f"{name}:{precision}:{form}:{layout}"
            r = run_worker(args)
            rows.append(r)
            per_img = r["flops_step"] / (2 * args.batch_size)
            achieved = per_img * r["tensors_best"]
            peak = peaks[r["policy"] if r["policy"] in peaks else "float32"]
            print(f"{r['name']:12} {r['policy']:15} {r['convolutions']:6} {r['threads']:7} "
                  f"{r['pipeline']:7.1f}/s {r['tensors']:7.1f}/s "
                  f"{r['cost']:6.1%} {r['pipeline_best']:6.1f}/{r['tensors_best']:6.1f}/s "
                  f"{r['alone']:5.1f}/s {per_img / 1e9:9.2f} {achieved / 1e9:8.1f} "
                  f"{achieved / peak:7.1%} {r['rss']:7.0f}", flush=True)
    print(f"img/s = faces through the network per second, A and B together (batch "
          f"{args.batch_size} per side = {2 * args.batch_size} per iteration), median of the "
          "timed blocks; cost = median pipeline slowdown of adjacent block pairs; best = fastest "
          "block (pipeline/pre-made), the least disturbed by other processes; alone = estimate "
          "with the CPU to itself, from the process's CPU time; GFLOP/s and 'of peak' from the "
          "best pre-made block and a training step's FLOPs (forward + backward) against the "
          "matmul peak of the precision used; RSS = peak of the trainer's own process")
    for r in rows:
        if r["tuned"]:
            print(f"  {r['name']} ({r['policy']}): convolutions " + "; ".join(
                f"{t['layer']} " + ", ".join(f"{form} {gain:.2f}x" for form, gain in
                                              t["speedups"].items()) + f" -> {t['form']}"
                for t in r["tuned"]))
        print(f"  {r['name']} ({r['policy']}, {r['convolutions']}): threads "
              f"{r['threads_summary']}; forward {r['flops_fwd'] / 1e9:.2f} GFLOP/face, "
              f"loaded {r['faces']} faces in {r['load_s']:.1f} s, first step (tracing) "
              f"{r['trace_s']:.1f} s, {r['steps']} timed steps")
    # the peak again: load only ever lowers a measurement, so the higher of the two counts
    for key, dtype, n in kinds:
        best, alone = matmul_peak(tf, dtype, n)
        peaks[key], alone_peaks[key] = max(peaks[key], best), max(alone_peaks[key], alone)
    print("matmul peak (higher of start and end): " + ", ".join(
        f"{k.replace('mixed_', '')} {peaks[k] / 1e9:.0f} GFLOP/s (alone ~{alone_peaks[k] / 1e9:.0f})"
        for k in peaks))
    for r in rows:
        key = r["policy"] if r["policy"] in peaks else "float32"
        per_img = r["flops_step"] / (2 * args.batch_size)
        best = per_img * r["tensors_best"]
        alone = per_img * r["alone_tensors"]
        step_s = 2 * args.batch_size / r["tensors"]
        print(f"  {r['name']} ({r['policy']}, {r['convolutions']}): best block "
              f"{best / 1e9:.0f} GFLOP/s = "
              f"{best / peaks[key]:.0%} of the best matmul; alone {alone / 1e9:.0f} GFLOP/s = "
              f"{alone / alone_peaks[key]:.0%} of the matmul alone; augmenting one iteration "
              f"takes {1000 * r['augment_s']:.0f} ms of CPU = {r['augment_s'] / step_s:.1%} of "
              f"its step")
    load_end = os.getloadavg()
    print(f"load average at end {load_end[0]:.1f}")
    light = next((r for r in rows if r["name"] == "lightweight"
                  and r["spec"] == f"lightweight:{precisions[0]}:{forms[0]}:{layouts[0]}"),
                 None)
    if light:
        ok_speed = light["pipeline"] >= 60
        print(f"targets: lightweight {light['pipeline']:.0f} img/s (best block "
              f"{light['pipeline_best']:.0f}, alone ~{light['alone']:.0f}) vs >= 60: "
              f"{'ok' if ok_speed else 'MISSED'}"
              f"{'' if ok_speed or light['alone'] < 60 else ' under this load'}; "
              f"pipeline cost {light['cost']:.1%} vs <= 10%: "
              f"{'ok' if light['cost'] <= 0.10 else 'MISSED'}; peak RSS "
              f"{light['rss'] / 1024:.2f} GB vs < 4 GB: {'ok' if light['rss'] < 4096 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
