"""Train a person's occlusion mask on their own faces, or apply it to faces.

`facedrop mask train FACES... -o WEIGHTS` trains a small network on the person's approved
faces with synthetic occluders pasted on them (hands, bars, blobs, patches; nothing to draw,
nothing downloaded), so it learns which pixels are this person's face and which are anything
else: a hand, a microphone, hair. `facedrop mask apply FACES... --weights WEIGHTS -o DIR`
writes, per face, the visible face (the landmark mask minus what covers it) as a grey PNG
for review. About 4-5 minutes on a 2-core CPU at the default 1200 steps.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True,
                                help="train: learn the mask; apply: write it for faces")
    train = sub.add_parser("train", help="train the occlusion mask on a person's faces",
                           description="Train the occlusion mask on a person's faces.")
    train.add_argument("faces", nargs="+", type=Path, metavar="FACES",
                       help="folders of the person's approved faces")
    train.add_argument("-o", "--output", type=Path, metavar="WEIGHTS",
                       help="where the weights go (default: occlusion.weights.h5 in the "
                            "folder above the first FACES folder: beside the approved sets)")
    train.add_argument("--steps", type=int, default=1200, metavar="N",
                       help="training steps of 16 faces (default: 1200)")
    apply = sub.add_parser("apply", help="write the visible face of each face as a PNG",
                           description="Write the visible face of each face as a grey PNG.")
    apply.add_argument("faces", nargs="+", type=Path, metavar="FACES",
                       help="folders of faces (as extracted)")
    apply.add_argument("--weights", type=Path, required=True, metavar="WEIGHTS",
                       help="weights from `facedrop mask train`")
    apply.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                       help="folder for <face>_visible.png")
    for p in (train, apply):
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="show debug logging and TensorFlow/MediaPipe messages")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from hotfolders import occlusion

    if args.action == "train":
        if args.steps < 1:
            raise UsageError("--steps must be at least 1")
        out = args.output or args.faces[0].resolve().parent / occlusion.WEIGHTS_NAME
        with tqdm(total=args.steps, desc="occlusion mask", unit="step", leave=False,
                  disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
            result = occlusion.train_occlusion(
                args.faces, out, steps=args.steps,
                progress=lambda i, n, loss: (bar.update(1), bar.set_postfix(loss=f"{loss:.3f}",
                                                                            refresh=False)))
        print(f"{result.weights}: {result.steps} steps in {result.seconds:.0f} s, "
              f"loss {result.loss:.3f}")
        return 0
    written = occlusion.apply_occlusion(args.faces, args.weights, args.output)
    print(f"{len(written)} visible-face masks in {args.output}")
    return 0
