"""Preview frames: one frame of a waiting target, swapped by the model's current save.

While a target waits for its model to be ready, people want to see where it is going. At
every save, training renders for each waiting target one frame — the target beside the same
frame swapped by the current weights, labelled — so the page shows it getting better.
The frame is chosen once per target (the face nearest the middle of the clip, from a handful
of sampled frames) and kept in memory for the rest of the training run.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

log = logging.getLogger(__name__)

SAMPLES = 7          # frames looked at to choose the preview frame
HEIGHT = 270         # px; each half of the picture
MIN_FACE = 32


@dataclass
class PreviewFrame:
    image: np.ndarray                 # RGB, scaled to HEIGHT
    faces: list                       # [(landmarks68, mesh)] in the scaled frame


def choose_frame(source: Path) -> PreviewFrame | None:
    """The sampled frame whose face sits nearest the middle of ``source`` (a video or photo),
    or None when none of the samples shows a face. InputError for an unreadable file."""
    import cv2

    from .convert import select_faces
    from .landmarks import PhotoFaces, plausibility
    from .video import probe, read_frames, read_image

    info = probe(source)
    if info.is_image:
        frames = [read_image(source)]
    else:
        step = max(1, (info.frames or SAMPLES) // SAMPLES)
        frames = [f.image for _, f in zip(range(SAMPLES), read_frames(source, every_n=step))]
    middle = (len(frames) - 1) / 2
    with PhotoFaces(max_faces=4) as landmarker:
        for index in sorted(range(len(frames)), key=lambda i: abs(i - middle)):
            image = frames[index]
            scale = HEIGHT / image.shape[0]
            image = cv2.resize(image, (max(2, round(image.shape[1] * scale)), HEIGHT),
                               interpolation=cv2.INTER_AREA)
            dets = [d for d in landmarker.detect(image)
                    if plausibility(d, image.shape, MIN_FACE) is None]
            faces = select_faces([(d.landmarks, d.mesh) for d in dets], "largest", image.shape)
            if faces:
                return PreviewFrame(image, faces)
    return None


def render(frame: PreviewFrame, swapper) -> np.ndarray:
    """The target frame beside the same frame swapped (labelled), RGB uint8."""
    from .provenance import draw_label

    (swapped,) = swapper.swap_batch([(frame.image.copy(), frame.faces)])
    draw_label(swapped)
    gap = np.full((HEIGHT, 6, 3), 255, np.uint8)
    return np.concatenate([frame.image, gap, swapped], axis=1)


class Previews:
    """Renders the previews of a training run: ``update(swapper)`` at each save."""

    def __init__(self) -> None:
        self.frames: dict[Path, PreviewFrame | None] = {}

    def update(self, wanted: list[tuple[Path, Path]], swapper) -> list[Path]:
        """Render ``(target, picture)`` pairs; returns the pictures written. A target that
        cannot be read or shows no face is skipped (its conversion will say why)."""
        from .timelapse import write

        written = []
        for source, picture in wanted:
            if source not in self.frames:
                try:
                    self.frames[source] = choose_frame(source)
                except (InputError, OSError) as exc:
                    log.info("no preview of %s: %s", source.name, exc)
                    self.frames[source] = None
            frame = self.frames[source]
            if frame is None:
                continue
            write(picture, render(frame, swapper))
            written.append(picture)
        return written
