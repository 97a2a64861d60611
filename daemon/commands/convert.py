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

from ..cli import UsageError
from ..settings import add_options, check_options, engine_kwargs


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
    add_options(parser, "convert")  # every [convert] setting, declared in daemon/settings.py
    parser.add_argument("--occlusion-weights", type=Path, metavar="FILE",
                        help="the input person's occlusion network, for --mask occlusion "
                             "(from `facedrop mask train`)")
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
        check_options(args, "convert")
    except ValueError as exc:
        raise UsageError(str(exc)) from None

    with progress_bar(f"convert {args.input.name}") as update:
        result = convert(args.input, args.model_dir, args.output, alignments=args.alignments,
                         batch_size=args.batch_size, progress=update,
                         occlusion=args.occlusion_weights,
                         **engine_kwargs(args, "convert"))
    print(result.describe())
    if result.manifest:
        print(f"provenance: {result.manifest}")
    return 0
