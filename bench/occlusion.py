"""The self-supervised occlusion mask, measured on faces and occluders it never saw.

Trains the occlusion network (hotfolders/occlusion.py) on the first 70 % of a clip's faces
(the astronaut, with known motion), then on the last 30 % — frames it never saw — pastes
occluders of a kind it was never trained on: real object photos that ship with scikit-image
(the cat, the coffee cup, the rocket) cut out with real silhouettes (the horse, the
cameraman's figure). Prints the IoU of the predicted visible face against the truth (the
landmark mask minus the pasted object) and, on the same faces without occluders, the IoU
with the landmark mask; writes a picture (face, truth, prediction) per case. Targets: >= 0.85
occluded, >= 0.95 unoccluded.

    python bench/occlusion.py [--steps 1200] [--out test-artifacts/occlusion.png]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from hotfolders import quiet  # noqa: E402

quiet.silence(False)
quiet.filter_native_stderr()


def real_occluders(size: int, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """(fill, shape) pairs from scikit-image's photos: object textures in real silhouettes."""
    import cv2
    from skimage import data

    textures = [data.chelsea(), data.coffee(), data.rocket()]
    silhouettes = [data.horse() == 0, data.camera() < 40]  # the horse; the cameraman's coat
    out = []
    for texture in textures:
        for silhouette in silhouettes:
            scale = rng.uniform(0.35, 0.6) * size / max(silhouette.shape)
            shape = cv2.resize(silhouette.astype(np.uint8) * 255, None, fx=scale, fy=scale,
                               interpolation=cv2.INTER_NEAREST)
            canvas = np.zeros((size, size), np.uint8)
            y = int(rng.uniform(0.3, 0.75) * size)  # over the lower face and mouth, or the eyes
            x = int(rng.uniform(0.0, 0.6) * size)
            h, w = min(shape.shape[0], size - y), min(shape.shape[1], size - x)
            canvas[y:y + h, x:x + w] = shape[:h, :w]
            fill = cv2.resize(texture, (size, size), interpolation=cv2.INTER_AREA)
            out.append((fill, canvas))
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--seconds", type=float, default=6.0, help="length of the face clip")
    parser.add_argument("--out", type=Path, default=Path("test-artifacts/occlusion.png"))
    args = parser.parse_args()

    import cv2
    from media import make_video

    from hotfolders.extract import extract
    from hotfolders.faceimage import list_faces
    from hotfolders.occlusion import OcclusionNet, face_crops, paste, train_occlusion

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        video, _ = make_video(tmp / "astronaut.mp4", "astronaut", seconds=args.seconds)
        extract(video, tmp / "faces", every_n=1, size=256)
        faces = list_faces(tmp / "faces")
        split = int(len(faces) * 0.7)
        (tmp / "train").mkdir()
        (tmp / "test").mkdir()
        for i, path in enumerate(faces):
            path.rename(tmp / ("train" if i < split else "test") / path.name)
        started = time.perf_counter()
        result = train_occlusion([tmp / "train"], tmp / "occlusion.weights.h5", steps=args.steps)
        print(f"trained on {split} faces: {result.steps} steps in {result.seconds:.0f} s "
              f"({result.seconds / result.steps * 1000:.0f} ms a step), loss {result.loss:.3f}")
        net = OcclusionNet(result.weights)
        test, masks = face_crops([tmp / "test"])
        rng = np.random.default_rng(7)
        occluded_iou, clean_iou, rows = [], [], []
        clean = net.visible(test) > 0.5
        for i, (face, mask) in enumerate(zip(test, masks)):
            inside = mask > 127
            clean_iou.append(iou(clean[i] & inside, inside))
            for fill, shape in real_occluders(face.shape[0], rng)[:2] if i % 3 else []:
                pasted, covered = paste(face, fill, shape, rng)
                truth = inside & (covered < 0.5)
                pred = (net.visible(pasted[None])[0] > 0.5) & inside
                occluded_iou.append(iou(pred, truth))
                if len(rows) < 6:
                    show = lambda m: np.repeat((m * 255).astype(np.uint8)[..., None], 3, 2)
                    rows.append(np.concatenate([pasted, show(truth), show(pred)], axis=1))
        elapsed = time.perf_counter() - started
    print(f"occluded (unseen objects, {len(occluded_iou)} cases): IoU mean "
          f"{np.mean(occluded_iou):.3f}, median {np.median(occluded_iou):.3f}, worst "
          f"{np.min(occluded_iou):.3f}   target >= 0.85: "
          f"{'met' if np.mean(occluded_iou) >= 0.85 else 'MISSED'}")
    print(f"unoccluded ({len(clean_iou)} faces): IoU with the landmark mask mean "
          f"{np.mean(clean_iou):.3f}, worst {np.min(clean_iou):.3f}   target >= 0.95: "
          f"{'met' if np.mean(clean_iou) >= 0.95 else 'MISSED'}")
    if rows:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        picture = np.concatenate(rows, axis=0)
        cv2.imwrite(str(args.out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        print(f"picture (face with the object, truth, prediction): {args.out}")
    print(f"total {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
