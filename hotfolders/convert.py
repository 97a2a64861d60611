"""Conversion stage: swap the face in every frame of a target video, keep its audio.

Entry point: :func:`convert`. Per frame: landmarks (from an alignments file, or MediaPipe in
tracking mode with the One Euro filter), the model's crop, the other person's decoder, then
faceswap's order — mask, colour adjustment, warp back into the frame and blend, sharpen inside
the mask — and a visible "AI-generated" label. Frames without a face pass through unchanged.
Decoding, inference and encoding overlap in separate threads; faces go through the model in
batches. The result is written under a temporary name and renamed only when complete.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from . import alignments as al
from .align import compose, invert, transform_points, warp
from .errors import InputError
from .extract import sha256_file
from .landmarks import Detection, FaceLandmarker, plausibility
from .masks import MASK_TYPES, landmark_mask
from .model import SwapModel, face_crop_matrix, load_swap_model
from .plugins.convert import load_color, load_sharpen
from .provenance import container_tags, draw_label, write_manifest
from .smoothing import TrackSmoother
from .video import IMAGE_EXTENSIONS, VideoWriter, prefetch, probe, read_frames, read_image

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass
class ConvertResult:
    output: Path
    manifest: Path | None
    frames: int = 0
    frames_swapped: int = 0
    seconds: float = 0.0
    settings: dict = field(default_factory=dict)

    def describe(self) -> str:
        fps = self.frames / self.seconds if self.seconds else 0.0
        return (f"{self.output}: {self.frames} frames, {self.frames_swapped} with a swapped face "
                f"({self.seconds:.1f} s, {fps:.1f} frames/s)")


@dataclass
class Settings:
    mask: str = "extended"
    erode: int = 0          # pixels at the model's output size; negative dilates
    blur: int | None = None  # feather radius at output size (default: 1/16 of it)
    color: str = "avg-color"
    sharpen: str = "none"
    swap: bool = False
    label: bool = True

    def as_dict(self) -> dict:
        return dict(self.__dict__)


class FaceSwapper:
    """Everything per face that does not depend on the video: crop, model, mask, colour, blend."""

    def __init__(self, model: SwapModel, settings: Settings) -> None:
        if settings.mask not in MASK_TYPES:
            raise ValueError(f"unknown mask {settings.mask!r}")
        self.model = model
        self.settings = settings
        self.color = load_color(settings.color)
        self.sharpen = load_sharpen(settings.sharpen)
        self.direction = "b2a" if settings.swap else "a2b"
        out = model.output_size
        self.to_output = np.array([[out / model.input_size, 0, 0], [0, out / model.input_size, 0]])
        self.blur = settings.blur if settings.blur is not None else max(1, out // 16)

    def crop(self, frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        matrix = face_crop_matrix(landmarks, self.model)
        return warp(frame, matrix, self.model.input_size), matrix

    def mask(self, landmarks: np.ndarray, mesh: np.ndarray | None, matrix: np.ndarray) -> np.ndarray:
        import cv2

        out = self.model.output_size
        to_out = compose(self.to_output, matrix)
        mesh_out = transform_points(mesh, to_out) if mesh is not None and len(mesh) else None
        kind = self.settings.mask if (self.settings.mask != "mesh" or mesh_out is not None) else "extended"
        m = landmark_mask(kind, transform_points(landmarks, to_out), out, mesh_out)
        if self.settings.erode:
            k = np.ones((3, 3), np.uint8)
            op = cv2.erode if self.settings.erode > 0 else cv2.dilate
            m = op(m, k, iterations=abs(self.settings.erode))
        if self.blur:
            m = cv2.GaussianBlur(m, (0, 0), self.blur / 2)
        return m.astype(np.float32)[..., None] / 255.0

    def blend(self, frame: np.ndarray, face: np.ndarray, landmarks: np.ndarray,
              mesh: np.ndarray | None, matrix: np.ndarray) -> np.ndarray:
        """Colour-match ``face`` (model output, float [0,1]) and paste it into ``frame``."""
        import cv2

        out = self.model.output_size
        to_out = compose(self.to_output, matrix)
        original = warp(frame, to_out, out).astype(np.float32) / 255.0
        mask = self.mask(landmarks, mesh, matrix)
        face = self.color(face, original, mask)
        back = invert(to_out)
        h, w = frame.shape[:2]
        # work only on the frame region the face square lands in
        corners = transform_points(np.array([[0, 0], [out, 0], [0, out], [out, out]]), back)
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 2
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return frame
        shift = back.copy()
        shift[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        face_roi = cv2.warpAffine(face, shift, size, flags=cv2.INTER_CUBIC,
                                  borderMode=cv2.BORDER_REPLICATE)
        mask_roi = cv2.warpAffine(mask, shift, size, flags=cv2.INTER_LINEAR)[..., None]
        roi = frame[y0:y1, x0:x1].astype(np.float32) / 255.0
        blended = roi * (1 - mask_roi) + np.clip(face_roi, 0, 1) * mask_roi
        if self.settings.sharpen != "none":
            blended = roi * (1 - mask_roi) + self.sharpen(blended) * mask_roi
        result = frame.copy()
        result[y0:y1, x0:x1] = np.clip(blended * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return result


def _largest(faces: list[tuple[np.ndarray, np.ndarray | None]]):
    def area(item):
        pts = item[0]
        span = pts.max(axis=0) - pts.min(axis=0)
        return float(span[0] * span[1])
    return max(faces, key=area) if faces else None


class _Landmarks:
    """Landmarks per frame: from an alignments file, or detected with jitter reduction."""

    def __init__(self, alignments: al.Alignments | None, min_size: int = 32) -> None:
        self.alignments = alignments
        self.min_size = min_size
        self.landmarker = None if alignments else FaceLandmarker(video=True, max_faces=4)
        self.smoother = TrackSmoother()

    def __call__(self, index: int, timestamp: float, image: np.ndarray):
        if self.alignments is not None:
            faces = [(f.landmarks, f.mesh) for f in self.alignments.faces(index)]
        else:
            dets = self.landmarker.detect(image)
            if dets:
                meshes = self.smoother([d.mesh for d in dets], timestamp, [d.size for d in dets])
                dets = [Detection(m) for m in meshes]
            faces = [(d.landmarks, d.mesh) for d in dets
                     if plausibility(d, image.shape, self.min_size) is None]
        return _largest(faces)

    def close(self) -> None:
        if self.landmarker is not None:
            self.landmarker.close()


def _swap_batch(swapper: FaceSwapper, batch: list) -> list[np.ndarray]:
    """Run a batch of (frame, face) through the model and blend each back."""
    with_face = [i for i, (_, face) in enumerate(batch) if face is not None]
    frames = [frame for frame, _ in batch]
    if with_face:
        crops, matrices = [], []
        for i in with_face:
            crop, matrix = swapper.crop(batch[i][0], batch[i][1][0])
            crops.append(crop)
            matrices.append(matrix)
        swapped = swapper.model.swap(np.stack(crops), swapper.direction)
        for j, i in enumerate(with_face):
            lm, mesh = batch[i][1]
            frames[i] = swapper.blend(frames[i], swapped[j], lm, mesh, matrices[j])
    return frames


def _finish(path: Path, tmp: Path) -> None:
    os.replace(tmp, path)


def convert(video: str | Path, model_dir: str | Path, output: str | Path, *,
            alignments: str | Path | None = None, mask: str = "extended", erode: int = 0,
            blur: int | None = None, color: str = "avg-color", sharpen: str = "none",
            swap: bool = False, label: bool = True, batch_size: int = 8,
            progress: Progress | None = None, model: SwapModel | None = None) -> ConvertResult:
    """Swap faces in ``video`` (or a folder of images) with the model in ``model_dir``."""
    started = time.perf_counter()
    video, output = Path(video), Path(output)
    settings = Settings(mask, erode, blur, color, sharpen, swap, label)
    load_color(color), load_sharpen(sharpen)  # unknown names fail before any work
    if video.is_dir():
        return _convert_images(video, model_dir, output, settings, batch_size, progress, started,
                               model)
    info = probe(video)  # InputError for missing/corrupt targets
    model = model or load_swap_model(model_dir)
    aligned = al.load(alignments) if alignments else None
    input_sha = sha256_file(video)
    if aligned is not None and aligned.source.get("sha256") not in (None, input_sha):
        raise InputError(Path(alignments), f"alignments were made from {aligned.source.get('name')}, "
                                           f"not from {video.name}")
    swapper = FaceSwapper(model, settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.part{output.suffix or '.mp4'}")
    result = ConvertResult(output, None, settings=settings.as_dict())
    landmarks = _Landmarks(aligned)
    frames_q: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    writer_error: list[BaseException] = []

    def write_frames(writer: VideoWriter) -> None:
        try:
            while (item := frames_q.get()) is not None:
                writer.write(item)
        except BaseException as exc:  # reported in the main thread
            writer_error.append(exc)
            while frames_q.get() is not None:
                pass

    ok = False
    try:
        tags = container_tags(model.name, model.iterations)
        with VideoWriter(tmp, info.width, info.height, info.fps, audio_from=video,
                         metadata=tags) as writer:
            thread = threading.Thread(target=write_frames, args=(writer,), name="encoder",
                                      daemon=True)
            thread.start()
            batch: list = []

            def flush() -> None:
                for frame in _swap_batch(swapper, batch):
                    if label:
                        draw_label(frame)
                    frames_q.put(frame)
                batch.clear()
                if writer_error:
                    raise writer_error[0]

            try:
                for frame in prefetch(read_frames(video)):
                    face = landmarks(frame.index, frame.timestamp, frame.image)
                    batch.append((frame.image, face))
                    result.frames += 1
                    result.frames_swapped += face is not None
                    if len(batch) >= batch_size:
                        flush()
                    if progress:
                        progress(result.frames, info.frames)
                flush()
            finally:
                frames_q.put(None)
                thread.join()
            if writer_error:
                raise writer_error[0]
        _finish(output, tmp)
        ok = True
    except OSError as exc:
        raise InputError(output, f"could not write the output ({exc.strerror or exc})") from None
    finally:
        landmarks.close()
        if not ok:
            tmp.unlink(missing_ok=True)
    result.seconds = time.perf_counter() - started
    result.manifest = write_manifest(
        output, input_path=video, input_sha256=input_sha, output_sha256=sha256_file(output),
        model={"name": model.name, "trainer": model.trainer, "iterations": model.iterations,
               "path": str(Path(model_dir))},
        settings={**settings.as_dict(), "batch_size": batch_size,
                  "alignments": str(alignments) if alignments else None},
        stats={"frames": result.frames, "frames_swapped": result.frames_swapped,
               "fps": float(info.fps), "seconds": round(result.seconds, 2)})
    log.debug(result.describe())
    return result


def _convert_images(folder: Path, model_dir, output: Path, settings: Settings, batch_size: int,
                    progress, started: float, model: SwapModel | None) -> ConvertResult:
    """Photos in, photos out (PNG), one face swapped per photo."""
    import cv2

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS
                   and not p.name.startswith("."))
    if not files:
        raise InputError(folder, "folder holds no images")
    model = model or load_swap_model(model_dir)
    swapper = FaceSwapper(model, settings)
    output.mkdir(parents=True, exist_ok=True)
    result = ConvertResult(output, None, settings=settings.as_dict())
    with FaceLandmarker(video=False) as landmarker:
        for n, path in enumerate(files, 1):
            image = read_image(path)
            dets = [d for d in landmarker.detect(image) if plausibility(d, image.shape, 32) is None]
            face = _largest([(d.landmarks, d.mesh) for d in dets])
            (swapped,) = _swap_batch(swapper, [(image, face)])
            if settings.label:
                draw_label(swapped)
            target = output / f"{path.stem}_swapped.png"
            tmp = target.with_name(f".{target.name}.tmp.png")
            cv2.imwrite(str(tmp), cv2.cvtColor(swapped, cv2.COLOR_RGB2BGR))
            os.replace(tmp, target)
            result.frames += 1
            result.frames_swapped += face is not None
            if progress:
                progress(n, len(files))
    result.seconds = time.perf_counter() - started
    return result
