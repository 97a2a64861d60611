"""Swap faces in a video (or a photo, or a folder of photos) with a trained model.

Every frame is written once, in order, at the source frame rate, with the source audio; frames
without a face pass through unchanged. The output is labelled as synthetic: mp4 metadata, a
`<output stem>.provenance.json` manifest beside it (sha256 of input and output, model, every
setting), and a small visible label (unless --no-label). A photo converts into a PNG; a folder
of photos into a folder of `<stem>_swapped.png` files, each with its manifest.
Exit code 2 with a one-line message for a corrupt or missing target, a missing or unsaved
model, or a full disk; nothing is left at the output path then.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from hotfolders.masks import MASK_TYPES
from hotfolders.plugins.convert import COLORS, FACE_SELECT, SHARPENERS

from ..cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="target video of person A (or of B, with --swap), a photo, or a "
                             "folder of photos")
    parser.add_argument("--model-dir", type=Path, required=True, metavar="DIR",
                        help="trained model folder")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                        help="output mp4 (a .png beside it for a photo; a folder for a folder)")
    parser.add_argument("--alignments", type=Path, metavar="FILE",
                        help="landmarks of the target (from `facedrop extract --every-n 1`, or "
                             "saved by an earlier convert); if FILE does not exist yet, the "
                             "landmarks detected now are saved there for the next run "
                             "(default: detect faces in every frame)")
    parser.add_argument("--mask", choices=MASK_TYPES, default="extended", help="default: extended")
    parser.add_argument("--erode", type=int, default=0, metavar="PX",
                        help="shrink (positive) or grow (negative) the mask, in model pixels")
    parser.add_argument("--blur", type=int, default=None, metavar="PX",
                        help="feather the mask edge (default: 1/16 of the model's output size)")
    parser.add_argument("--color", choices=COLORS, default="avg-color",
                        help="colour adjustment (default: avg-color)")
    parser.add_argument("--sharpen", choices=SHARPENERS, default="none", help="default: none")
    parser.add_argument("--swap", action="store_true",
                        help="swap B -> A instead of A -> B (the target shows person B)")
    parser.add_argument("--face-select", choices=FACE_SELECT, default="largest",
                        help="which face to swap when a frame shows several: the largest "
                             "(default), the one nearest the centre, the model's own person "
                             "(the face its decoder for that person rebuilds best: needs a "
                             "model trained past its first blurry thousands of iterations), "
                             "or all")
    parser.add_argument("--no-label", action="store_true",
                        help="leave out the visible 'AI-generated' label (metadata and manifest "
                             "still mark the video as synthetic)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N",
                        help="faces per model call (default: 8)")
    parser.add_argument("--gpu", default="auto", metavar="WHICH",
                        help='GPUs to use: auto (every GPU TensorFlow sees), cpu, or indices '
                             'such as 1 or 0,1 (default: auto; memory growth is always on)')


def run(args: argparse.Namespace) -> int:
    from hotfolders.convert import convert
    from hotfolders.devices import select_gpus

    from ..progress import progress_bar

    try:
        select_gpus(args.gpu)
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    with progress_bar(f"convert {args.input.name}") as update:
        result = convert(args.input, args.model_dir, args.output, alignments=args.alignments,
                         mask=args.mask, erode=args.erode, blur=args.blur, color=args.color,
                         sharpen=args.sharpen, swap=args.swap, label=not args.no_label,
                         face_select=args.face_select,
                         batch_size=args.batch_size, progress=update)
    print(result.describe())
    if result.manifest:
        print(f"provenance: {result.manifest}")
    return 0
