"""Labelling outputs as synthetic: container tags, a visible label, a provenance manifest.

A face swap of a real person is easy to abuse; every video facedrop writes says what it is in
three places: the mp4's own metadata, a small visible label (unless turned off), and a
``<stem>_swapped.provenance.json`` manifest with the sha256 of input and output, the model and
every setting, so the claim can be checked against the files.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import version

LABEL_TEXT = "AI-generated"


def container_tags(model_name: str, iterations: int) -> dict[str, str]:
    """mp4 metadata tags that mark the file as synthetic."""
    text = (f"SYNTHETIC MEDIA: AI-generated face swap made with facedrop {version()} "
            f"(model {model_name}, {iterations} iterations)")
    return {"comment": text, "description": text, "synthetic": "true",
            "encoder": f"facedrop {version()}"}


def draw_label(frame: np.ndarray, text: str = LABEL_TEXT) -> np.ndarray:
    """Draw a small, legible label in the bottom-right corner (in place; returns ``frame``)."""
    import cv2

    h, w = frame.shape[:2]
    scale = max(0.35, h / 900)
    thickness = max(1, int(round(scale * 1.6)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(3, int(th * 0.4))
    x1, y1 = w - tw - 3 * pad, h - th - base - 3 * pad
    x2, y2 = w - pad, h - pad
    if x1 < 0 or y1 < 0:
        return frame
    roi = frame[y1:y2, x1:x2].astype(np.float32)
    frame[y1:y2, x1:x2] = (roi * 0.45).astype(np.uint8)
    cv2.putText(frame, text, (x1 + pad, y2 - base - pad // 2), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return frame


def manifest_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.provenance.json")


def write_manifest(output: Path, *, input_path: Path, input_sha256: str, output_sha256: str,
                   model: dict[str, Any], settings: dict[str, Any], stats: dict[str, Any]) -> Path:
    """Write the manifest atomically beside ``output`` and return its path."""
    data = {
        "synthetic": True,
        "statement": "This video contains an AI-generated face swap.",
        "generator": {"name": "facedrop", "version": version()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "input": {"name": input_path.name, "sha256": input_sha256},
        "output": {"name": output.name, "sha256": output_sha256},
        "model": model,
        "settings": settings,
        "stats": stats,
    }
    path = manifest_path(output)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path
