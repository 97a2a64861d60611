"""Labelling outputs as synthetic: container tags, a visible label, a provenance manifest.

A face swap of a real person is easy to abuse; every file facedrop writes says what it is in
three places: the file's own metadata (mp4 tags, PNG text chunks), a small visible label in a
corner (unless turned off), and a ``<stem>_swapped.provenance.json`` manifest with the sha256
of input and output, the model and every setting, so the claim can be checked against the
files with :func:`verify_manifest`.
"""
from __future__ import annotations

import functools
import json
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import atomic, version
from .digest import sha256_file
from .faceimage import png_chunk

LABEL_TEXT = "AI-generated"
MANIFEST_FORMAT = "facedrop-provenance"
MANIFEST_VERSION = 1
STATEMENT = "This file contains an AI-generated face swap (synthetic media)."


def sidecar_name(source: Path, suffix: str) -> str:
    """``clip.mov`` -> ``clip_swapped<suffix>``: the output name for a converted input."""
    return f"{Path(source).stem}_swapped{suffix}"


def manifest_path(output: Path) -> Path:
    """``x_swapped.mp4`` -> ``x_swapped.provenance.json`` beside it."""
    output = Path(output)
    return output.with_name(f"{output.stem}.provenance.json")


def container_tags(model_name: str, iterations: int, trainer: str = "") -> dict[str, str]:
    """Metadata tags that mark a file as synthetic and name the tool and model."""
    model = f"model {model_name}" + (f" ({trainer})" if trainer else "")
    text = (f"SYNTHETIC MEDIA: AI-generated face swap made with facedrop {version()}, "
            f"{model} at {iterations} iterations")
    return {"comment": text, "description": text, "title": "AI-generated face swap (synthetic)",
            "synthetic": "true", "encoder": f"facedrop {version()}"}


@functools.lru_cache(maxsize=8)
def _label_overlay(height: int, width: int, text: str):
    """Where the label goes and its text coverage (0..1), drawn once per frame size."""
    import cv2

    scale = max(0.35, height / 900)
    thickness = max(1, round(scale * 1.6))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(3, int(th * 0.4))
    x1, y1 = width - tw - 3 * pad, height - th - base - 3 * pad
    x2, y2 = width - pad, height - pad
    if x1 < 0 or y1 < 0:
        return None
    coverage = np.zeros((y2 - y1, x2 - x1), np.uint8)
    cv2.putText(coverage, text, (pad, (y2 - y1) - base - pad // 2), cv2.FONT_HERSHEY_SIMPLEX,
                scale, 255, thickness, cv2.LINE_AA)
    alpha = (coverage.astype(np.float32) / 255.0)[..., None]
    return (y1, y2, x1, x2), alpha


def draw_label(frame: np.ndarray, text: str = LABEL_TEXT) -> np.ndarray:
    """White text on a darkened box in the bottom-right corner (in place; returns ``frame``).

    Frames too small for legible text are left alone; the metadata and manifest still say
    the file is synthetic.
    """
    overlay = _label_overlay(frame.shape[0], frame.shape[1], text)
    if overlay is None:
        return frame
    (y1, y2, x1, x2), alpha = overlay
    roi = frame[y1:y2, x1:x2].astype(np.float32)
    frame[y1:y2, x1:x2] = (roi * 0.45 * (1.0 - alpha) + 255.0 * alpha + 0.5).astype(np.uint8)
    return frame


def png_with_text(png: bytes, tags: dict[str, str]) -> bytes:
    """PNG bytes with ``tags`` added as iTXt chunks right after the header (IHDR)."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG")
    ihdr_end = 8 + 12 + struct.unpack(">I", png[8:12])[0]
    chunks = b"".join(
        png_chunk(b"iTXt", key.encode("latin-1")[:79] + b"\x00\x00\x00\x00\x00"
               + value.encode("utf-8"))
        for key, value in tags.items())
    return png[:ihdr_end] + chunks + png[ihdr_end:]


def png_text(data: bytes) -> dict[str, str]:
    """The iTXt/tEXt tags of PNG bytes (uncompressed ones)."""
    tags: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        length = struct.unpack(">I", data[pos:pos + 4])[0]
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if kind == b"tEXt":
            key, _, value = body.partition(b"\x00")
            tags[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\x00")
            if rest[:1] == b"\x00":  # not compressed
                _lang, _, rest = rest[2:].partition(b"\x00")
                _translated, _, value = rest.partition(b"\x00")
                tags[key.decode("latin-1")] = value.decode("utf-8", "replace")
        elif kind == b"IEND":
            break
        pos += 12 + length
    return tags


def write_manifest(path: Path, output: Path, *, input_path: Path, input_sha256: str,
                   output_sha256: str, model: dict[str, Any], settings: dict[str, Any],
                   stats: dict[str, Any]) -> Path:
    """Write the manifest for ``output`` atomically at ``path`` and return ``path``.

    ``output`` may not exist yet (it is renamed into place after its manifest is written);
    ``output_sha256`` is the hash of its final content.
    """
    data = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "synthetic": True,
        "statement": STATEMENT,
        "generator": {"name": "facedrop", "version": version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": {"name": Path(input_path).name, "sha256": input_sha256},
        "output": {"name": Path(output).name, "sha256": output_sha256},
        "model": model,
        "settings": settings,
        "stats": stats,
    }
    return atomic.write_json(path, data, indent=2)


def verify_manifest(path: Path, input_path: Path | None = None) -> list[str]:
    """Check a manifest against the files it names; returns the problems (empty: all good).

    The output is looked up beside the manifest; the input only when ``input_path`` is given
    (inputs are usually moved away after conversion).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        return [f"manifest unreadable ({exc})"]
    if data.get("format") != MANIFEST_FORMAT or data.get("synthetic") is not True:
        return ["not a facedrop provenance manifest"]
    problems = []
    output = path.with_name(data["output"]["name"])
    if not output.exists():
        problems.append(f"output {output.name} not found")
    elif sha256_file(output) != data["output"]["sha256"]:
        problems.append(f"output {output.name} does not match its sha256 (changed since?)")
    if input_path is not None and sha256_file(Path(input_path)) != data["input"]["sha256"]:
        problems.append(f"input {Path(input_path).name} does not match its sha256")
    return problems
