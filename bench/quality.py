"""How good a swap gets per CPU-minute, scored by a face model that is not ours (dlib).

Trains a model (``lightweight`` by default, the default settings otherwise) on two face sets
made from the bundled public-domain photos moving with known motion (A = the astronaut,
B = Grace Hopper), and at each checkpoint of ``--minutes`` (cumulative: 10,30,60 trains 60
minutes in all) converts a held-out target (A moving in a way training never saw) and scores
the output with dlib's face recognition network (128-D descriptors) and its 68-point
landmark predictor:

- identity: the share of output frames whose face is nearer B than A, and the margin
  (distance to A minus distance to B), beside the same figures for a held-out frame of B
  (what a real B scores) and for the untouched target (what A scores);
- expression and pose kept: the landmark error between output and target frames over the
  inter-ocular distance (all 68 points, and the eye corners and nose alone: a swap moves the
  jaw, mouth and brows to B's shape), beside the error of the target against itself
  re-encoded (what the codec alone costs), and beside two perfect stand-ins for a model: the
  target's own face cropped to the model's size and pasted back (a floor: what the model's
  resolution costs before any training), and B's real face pasted in the target's alignment
  (what a swap that rebuilt B exactly would score: B's eyes, nose and jaw are not where A's
  are, so a swap that looks like B moves them);
- noise: the high-frequency energy (variance of the Laplacian) inside the face, output over
  target.

Targets after 60 minutes on a 2-core CPU: identity margin >= half of a real B's, landmark
error <= 1.5x the re-encoding error, noise <= 1.5x the target's. dlib comes from the test
extra (``pip install -e '.[test]'``); facedrop itself never uses it.

    python bench/quality.py [--minutes 10,30,60] [--trainer lightweight] [--out DIR]
    python bench/quality.py --minutes 45,60 --warp-off 45   # the warp off for the last 15
"""
from __future__ import annotations

import argparse
import copy
import math
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hotfolders import quiet  # noqa: E402
from hotfolders.model import read_state  # noqa: E402

SAMPLE_EVERY = 5  # score every 5th frame of the target (dlib takes ~0.1 s a frame)
# eye corners and the nose: where the head is and how it is turned. A swap changes the jaw,
# mouth and brows with the identity, so these points say more about the pose kept.
POSE_POINTS = [27, 28, 29, 30, 33, 36, 39, 42, 45]

# the target: A turning and nodding at other rates and amplitudes than the training clips
HELD_OUT = dict(angle=lambda t: -12.0 * math.sin(2 * math.pi * t / 2.7),
                scale=lambda t: 1.05 + 0.15 * math.sin(2 * math.pi * t / 1.9),
                dx=lambda t: -55.0 * math.sin(2 * math.pi * t / 3.3),
                dy=lambda t: 30.0 * math.sin(2 * math.pi * t / 2.3))


class Judge:
    """dlib's detector, 68-point predictor and face recognition network."""

    def __init__(self) -> None:
        import importlib.util

        import dlib

        spec = importlib.util.find_spec("face_recognition_models")  # its __init__ needs
        if spec is None or not spec.submodule_search_locations:     # pkg_resources: not run
            raise ImportError("face_recognition_models is not installed")
        models = Path(list(spec.submodule_search_locations)[0]) / "models"
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
        self.network = dlib.face_recognition_model_v1(
            str(models / "dlib_face_recognition_resnet_model_v1.dat"))

    def face(self, rgb: np.ndarray, near: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray] | None:
        """(68 landmarks, 128-D descriptor) of the face nearest ``near`` (where the known
        motion puts it: the photos hold face-like patches too), else the largest, or None."""
        rgb = np.ascontiguousarray(rgb)
        found = self.detector(rgb, 1)
        if near is not None:
            found = [r for r in found if abs(r.center().x - near[0]) < r.width() / 2
                     and abs(r.center().y - near[1]) < r.height() / 2]
        if not found:
            return None
        box = max(found, key=lambda r: r.width() * r.height())
        shape = self.predictor(rgb, box)
        points = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
        return points, np.array(self.network.compute_face_descriptor(rgb, shape))


def interocular(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))


def face_region(points: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Inside the landmarks' hull, shrunk by a tenth of the inter-ocular distance (the blend
    edge is not the face)."""
    import cv2

    mask = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(points.astype(np.int32)), 1)
    k = max(3, int(interocular(points) / 10) | 1)
    return cv2.erode(mask, np.ones((k, k), np.uint8)).astype(bool)


def high_frequency(rgb: np.ndarray, region: np.ndarray) -> float:
    import cv2

    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(cv2.Laplacian(gray, cv2.CV_32F, ksize=3)[region].var())


@dataclass
class Score:
    frames: int = 0          # frames where dlib found a face in both
    nearer_b: float = 0.0    # share of those nearer B than A
    margin: float = 0.0      # mean distance to A minus distance to B
    landmarks: float = 0.0   # mean landmark error / inter-ocular distance
    pose: float = 0.0        # the same over POSE_POINTS
    noise: float = 0.0       # mean high-frequency energy ratio to the reference frames

    def row(self, label: str) -> str:
        return (f"{label:28} {self.frames:6d} {100 * self.nearer_b:8.0f}% {self.margin:+8.3f} "
                f"{100 * self.landmarks:9.1f}% {100 * self.pose:5.1f}% {self.noise:7.2f}")


def read(video: Path) -> list[np.ndarray]:
    from hotfolders.video import read_frames

    return [f.image for f in read_frames(video)]


def score(judge: Judge, frames: list[np.ndarray], reference: list[np.ndarray],
          centres: list[np.ndarray], ref_a: np.ndarray, ref_b: np.ndarray) -> Score:
    """``frames`` judged against the same frames of ``reference`` (the target), the face
    looked for at ``centres`` (one per frame)."""
    margins, nearer, errors, pose, noise = [], [], [], [], []
    for i in range(0, min(len(frames), len(reference)), SAMPLE_EVERY):
        got, want = judge.face(frames[i], centres[i]), judge.face(reference[i], centres[i])
        if got is None or want is None:
            continue
        (points, desc), (ref_points, _) = got, want
        d_a, d_b = np.linalg.norm(desc - ref_a), np.linalg.norm(desc - ref_b)
        margins.append(d_a - d_b)
        nearer.append(d_b < d_a)
        error = np.linalg.norm(points - ref_points, axis=1) / interocular(ref_points)
        errors.append(float(error.mean()))
        pose.append(float(error[POSE_POINTS].mean()))
        region = face_region(ref_points, reference[i].shape)
        noise.append(high_frequency(frames[i], region)
                     / max(high_frequency(reference[i], region), 1e-6))
    if not margins:
        return Score()
    return Score(len(margins), float(np.mean(nearer)), float(np.mean(margins)),
                 float(np.mean(errors)), float(np.mean(pose)), float(np.mean(noise)))


class PerfectSwap:
    """Stands in for a trained model in ``convert``: returns each input crop itself (A rebuilt
    perfectly) or always ``face``, B's real face in the model's alignment (B rebuilt
    perfectly): what a model that had learnt everything would score."""

    name, trainer, iterations = "perfect", "none", 0

    def __init__(self, trainer: str) -> None:
        from hotfolders.align import EXTRACT_PADDING
        from hotfolders.plugins.train import load_trainer
        from hotfolders.training import DEFAULTS

        plugin = load_trainer(trainer)
        self.input_size, self.output_size = plugin.INPUT_SIZE, plugin.OUTPUT_SIZE
        self.coverage, self.padding = float(DEFAULTS["coverage"]), EXTRACT_PADDING
        self.face: np.ndarray | None = None

    def with_face_of(self, photo: np.ndarray) -> "PerfectSwap":
        """The same stand-in, always answering with the face in ``photo``, cropped as
        conversion crops (our own landmarks, area-averaged to the model's size)."""
        import cv2

        from hotfolders.convert import FaceSwapper, Settings
        from hotfolders.landmarks import PhotoFaces

        with PhotoFaces(max_faces=1) as finder:
            found = finder.detect(photo)
        if not found:
            raise RuntimeError("no face found in the photo of B")
        crop, _ = FaceSwapper(self, Settings()).crop(photo, found[0].landmarks)
        crop = cv2.resize(crop, (self.output_size, self.output_size), interpolation=cv2.INTER_AREA)
        perfect_b = copy.copy(self)
        perfect_b.face = crop.astype(np.float32) / 255.0
        return perfect_b

    def swap(self, crops: np.ndarray, direction: str) -> np.ndarray:
        import cv2

        if self.face is not None:
            return np.repeat(self.face[None], len(crops), axis=0)
        size = (self.output_size, self.output_size)
        return np.stack([cv2.resize(c, size, interpolation=cv2.INTER_AREA) for c in crops]
                        ).astype(np.float32) / 255.0


def reencode(video: Path, out: Path) -> Path:
    """The target through the encoder once more, as conversion writes it (the codec's cost)."""
    from hotfolders.video import VideoWriter, probe

    info = probe(video)
    with VideoWriter(out, info.width, info.height, info.fps) as writer:
        for image in read(video):
            writer.write(image)
    return out


def make_sets(work: Path, seconds: float) -> tuple[Path, Path, Path, Path, list, list]:
    """Faces of A and B (training), the held-out target video and a held-out B video, and
    the photo -> frame matrices of those two."""
    from hotfolders.extract import extract
    from hotfolders.samples import Motion, make_video

    faces = []
    for name, hz in (("astronaut", 440.0), ("grace", 660.0)):
        video, _ = make_video(work / f"{name}.mp4", name, seconds=seconds, audio_hz=hz)
        extract(video, work / f"faces-{name}", every_n=1, size=256)
        faces.append(work / f"faces-{name}")
    target, to_target = make_video(work / "target.mp4", "astronaut", seconds=4.0,
                                   motion=Motion(**HELD_OUT))
    real_b, to_real_b = make_video(work / "real-b.mp4", "grace", seconds=4.0,
                                   motion=Motion(**HELD_OUT))
    return faces[0], faces[1], target, real_b, to_target, to_real_b


def centres(photo_face: np.ndarray, matrices: list[np.ndarray]) -> list[np.ndarray]:
    """Where the photo's face centre is in each frame."""
    centre = np.append(photo_face.mean(axis=0), 1.0)
    return [m @ centre for m in matrices]


def train_for(minutes: float, faces: tuple[Path, Path], model: Path, trainer: str,
              learning_rate: float | None, warp: str = "always"):
    """Train (resuming) for ``minutes`` of wall time, then save."""
    from hotfolders.training import train

    stop = threading.Event()
    timer = threading.Timer(minutes * 60, stop.set)
    timer.start()
    try:
        return train([faces[0]], [faces[1]], model, trainer=trainer, stop_event=stop,
                     save_every=500, snapshot_every=0, learning_rate=learning_rate,
                     warp=warp)
    finally:
        timer.cancel()


def describe_warp(model: Path) -> str:
    """", no warp from N" once ``--warp until-plateau`` turned the warp off at iteration N."""
    off = read_state(model).get("warp_off_from")
    return f", no warp from {off}" if off is not None else ""


def picture(path: Path, target: list[np.ndarray], output: list[np.ndarray],
            real_b: list[np.ndarray]) -> None:
    """Target | output | B, middle frame, side by side."""
    import cv2

    i = len(target) // 2
    row = np.concatenate([target[i], output[i], real_b[min(i, len(real_b) - 1)]], axis=1)
    cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="10,30,60",
                        help="checkpoints in minutes of training, counted from the start")
    parser.add_argument("--trainer", default="lightweight")
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adam's step (default: the trainer's own LEARNING_RATE)")
    parser.add_argument("--warp", default="always", choices=("always", "until-plateau", "never"),
                        help="the random warp of the input faces (facedrop train --warp)")
    parser.add_argument("--warp-off", type=float, default=None, metavar="MINUTES",
                        help="train without the random warp from this minute on (a checkpoint "
                             "is added there)")
    parser.add_argument("--seconds", type=float, default=8.0,
                        help="length of each person's training clip (25 faces a second)")
    parser.add_argument("--out", type=Path, default=None,
                        help="keep the model, outputs and pictures here (default: a temp folder)")
    args = parser.parse_args()
    quiet.silence(False)
    quiet.filter_native_stderr()
    checkpoints = sorted({float(m) for m in args.minutes.split(",")}
                         | ({args.warp_off} if args.warp_off else set()))
    try:
        judge = Judge()
    except ImportError as exc:
        print(f"bench/quality.py needs dlib: pip install -e '.[test]' ({exc})")
        return 2
    from hotfolders.convert import convert

    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        faces_a, faces_b, target, real_b_video, to_target, to_real_b = make_sets(
            work, args.seconds)
        target_frames, real_b = read(target), read(real_b_video)
        from hotfolders.samples import load_face

        photo_a, photo_b = judge.face(load_face("astronaut")), judge.face(load_face("grace"))
        if photo_a is None or photo_b is None:
            print("dlib finds no face in a reference photo")
            return 1
        ref_a, ref_b = photo_a[1], photo_b[1]
        at_target = centres(photo_a[0], to_target)
        perfect_a = PerfectSwap(args.trainer)
        perfect_b = perfect_a.with_face_of(load_face("grace"))

        def converted(stand_in: PerfectSwap, name: str) -> list[np.ndarray]:
            convert(target, work, work / name, model=stand_in)
            return read(work / name)

        baselines = {
            "real B (identity only)": score(judge, real_b, real_b,
                                            centres(photo_b[0], to_real_b), ref_a, ref_b),
            "untouched target (A)": score(judge, read(reencode(target, work / "re.mp4")),
                                          target_frames, at_target, ref_a, ref_b),
            "perfect: A rebuilt": score(judge, converted(perfect_a, "perfect-a.mp4"),
                                        target_frames, at_target, ref_a, ref_b),
            "perfect: B's face pasted": score(judge, converted(perfect_b, "perfect-b.mp4"),
                                              target_frames, at_target, ref_a, ref_b),
        }
        print(f"{'':28} {'frames':>6} {'nearer B':>9} {'margin':>8} {'landmarks':>10} "
              f"{'pose':>6} {'noise':>7}")
        for label, s in baselines.items():
            print(s.row(label), flush=True)
        real_margin = baselines["real B (identity only)"].margin
        codec_error = baselines["untouched target (A)"].landmarks
        codec_pose = baselines["untouched target (A)"].pose
        for label in ("perfect: A rebuilt", "perfect: B's face pasted"):
            perfect = baselines[label]
            print(f"{'':28} {label} at {perfect_a.output_size} px: landmark error "
                  f"{perfect.landmarks / max(codec_error, 1e-9):.1f}x the codec's, pose points "
                  f"{perfect.pose / max(codec_pose, 1e-9):.1f}x", flush=True)
        done = 0.0
        for minutes in checkpoints:
            warp = "never" if args.warp_off is not None and done >= args.warp_off else args.warp
            result = train_for(minutes - done, (faces_a, faces_b), work / "model", args.trainer,
                               args.learning_rate, warp)
            done = minutes
            out = work / f"swapped-{minutes:g}min.mp4"
            convert(target, work / "model", out)
            frames = read(out)
            s = score(judge, frames, target_frames, at_target, ref_a, ref_b)
            picture(work / f"swapped-{minutes:g}min.png", target_frames, frames, real_b)
            print(s.row(f"after {minutes:g} min ({result.iterations} it)"
                        + (f", no warp from {args.warp_off:g} min" if warp != args.warp
                           else describe_warp(work / "model"))), flush=True)
            pasted = baselines["perfect: B's face pasted"]
            print(f"{'':28} identity margin {s.margin / real_margin:.0%} of a real B's "
                  f"(target >= 50%), landmark error {s.landmarks / max(codec_error, 1e-9):.1f}x "
                  f"the codec's (<= 1.5x; pose points {s.pose / max(codec_pose, 1e-9):.1f}x) and "
                  f"{s.landmarks / max(pasted.landmarks, 1e-9):.2f}x B's face pasted (pose "
                  f"points {s.pose / max(pasted.pose, 1e-9):.2f}x), noise {s.noise:.2f}x the "
                  f"target's (<= 1.5x); {result.images_per_second:.0f} img/s in "
                  f"{result.precision}, learning rate "
                  f"{read_state(work / 'model')['learning_rate']:g}", flush=True)
        if args.out:
            print(f"model, outputs and pictures (target | output | B) in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
