"""Conversion stage: swap the face in every frame of a target video, keep its audio.

Entry point: :func:`convert`. Per frame: landmarks (from an alignments file, or MediaPipe in
tracking mode with the One Euro filter against jitter), the model's crop, the other person's
decoder, then faceswap's order — mask, colour adjustment, warp back into the frame and blend,
sharpen inside the mask — and a visible "AI-generated" label. Frames without a face pass
through unchanged; every input frame is written once, in order, at the source frame rate.

Four threads overlap the work so both cores stay busy: decoding, landmarks (MediaPipe),
model + blending (TensorFlow, OpenCV; faces go through the model in batches), and encoding.
The result is written under a temporary name beside the output and renamed only when it is
complete, so a failure never leaves a partial file where the output should be.
"""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import alignments as al
from .align import compose, invert, transform_points
from .digest import sha256_file
from .errors import InputError
from .heap import frozen_heap
from .landmarks import Detection, FaceTracker, PhotoFaces, plausibility
from .masks import MASK_TYPES, landmark_mask
from .model import SwapModel, face_crop_matrix, load_swap_model
from .plugins.convert import FACE_SELECT, load_color, load_sharpen
from .provenance import (
    container_tags,
    draw_label,
    manifest_path,
    png_with_text,
    sidecar_name,
    write_manifest,
)
from .smoothing import TrackSmoother
from .video import (
    IMAGE_EXTENSIONS,
    VideoWriter,
    prefetch,
    probe,
    read_frames,
    read_image,
)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
Face = tuple[np.ndarray, "np.ndarray | None"]  # 68 landmarks, mesh (frame pixels)

MIN_FACE = 32            # px; smaller detections are not swapped
# masks conversion blends with: the landmark masks, and "occlusion" (the extended mask where
# the person's occlusion network sees their face: a hand or microphone over it stays)
CONVERT_MASKS = (*MASK_TYPES, "occlusion")
PROBE_EVERY = 25         # frames between checks for additional faces (single-face tracking)
DISK_ERRORS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


@dataclass
class ConvertResult:
    output: Path
    manifest: Path | None
    frames: int = 0
    frames_swapped: int = 0
    faces_swapped: int = 0
    frames_detected: int = 0  # frames whose landmarks were detected (not from alignments)
    seconds: float = 0.0
    iterations: int = 0       # of the model save that made it (also in the manifest)
    settings: dict = field(default_factory=dict)

    def describe(self) -> str:
        fps = self.frames / self.seconds if self.seconds else 0.0
        return (f"{self.output}: {self.frames} frames, {self.frames_swapped} with a swapped face "
                f"({self.seconds:.1f} s, {fps:.1f} frames/s)")


@dataclass
class Settings:
    """Every choice that changes the output; recorded in the provenance manifest."""

    mask: str = "extended"
    erode: int = 0           # model-output pixels; negative grows the mask
    blur: int | None = None  # feather radius in model-output pixels (default: 1/16 of it)
    color: str = "avg-color"
    sharpen: str = "none"
    swap: bool = False       # False: A -> B (target shows A); True: B -> A
    label: bool = True
    face_select: str = "largest"
    occlusion: str | None = None  # weights of the input person's occlusion network

    def check(self) -> None:
        """Unknown names fail before any work is done."""
        if self.mask not in CONVERT_MASKS:
            raise ValueError(f"unknown mask {self.mask!r}; choose one of "
                             f"{', '.join(CONVERT_MASKS)}")
        if self.mask == "occlusion" and not self.occlusion:
            raise ValueError("mask occlusion needs the input person's occlusion weights "
                             "(facedrop mask train; --occlusion-weights)")
        if self.face_select not in FACE_SELECT:
            raise ValueError(f"unknown face selection {self.face_select!r}; "
                             f"choose one of {', '.join(FACE_SELECT)}")
        if self.blur is not None and self.blur < 0:
            raise ValueError("blur must be >= 0")
        load_color(self.color)
        load_sharpen(self.sharpen)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class FaceSwapper:
    """Everything per face that does not depend on the video: crop, model, mask, colour, blend."""

    def __init__(self, model: SwapModel, settings: Settings) -> None:
        settings.check()
        self.model = model
        self.settings = settings
        self.color = load_color(settings.color)
        self.sharpen = load_sharpen(settings.sharpen) if settings.sharpen != "none" else None
        self.direction = "b2a" if settings.swap else "a2b"
        out = model.output_size
        self.to_output = np.array([[out / model.input_size, 0, 0], [0, out / model.input_size, 0]])
        self.blur = settings.blur if settings.blur is not None else max(1, out // 16)
        self.own = "b2b" if settings.swap else "a2a"  # the input person's own decoder
        self.faces_swapped = 0
        self.occlusion = None
        if settings.mask == "occlusion":
            from .occlusion import OcclusionNet

            if not Path(settings.occlusion).is_file():
                raise InputError(Path(settings.occlusion), "occlusion weights not found "
                                                           "(make them with facedrop mask train)")
            self.occlusion = OcclusionNet(settings.occlusion)

    def crop(self, frame: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The model's input crop and its frame -> crop matrix.

        When the face is much larger than the model's input the crop is first warped at about
        the face's own scale and then area-averaged down, so the model sees a smooth face
        rather than an aliased one (warpAffine itself only samples bilinearly).
        """
        import cv2

        size = self.model.input_size
        matrix = face_crop_matrix(landmarks, self.model)
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        if scale >= 0.5:
            return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT), matrix
        factor = min(int(1.0 / scale), 8)
        big = np.array([[factor, 0, 0], [0, factor, 0]], np.float64)
        crop = cv2.warpAffine(frame, compose(big, matrix), (size * factor, size * factor),
                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        return cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), matrix

    def output_matrix(self, matrix: np.ndarray) -> np.ndarray:
        """Frame -> model output pixels."""
        return compose(self.to_output, matrix)

    def mask(self, landmarks: np.ndarray, mesh: np.ndarray | None, matrix: np.ndarray,
             frame: np.ndarray | None = None) -> np.ndarray:
        """The blend mask in model-output space: float32 HxWx1 in [0, 1], eroded and feathered.
        ``occlusion`` needs the ``frame`` (what covers the face is in its pixels)."""
        import cv2

        out = self.model.output_size
        to_out = self.output_matrix(matrix)
        mesh_out = transform_points(mesh, to_out) if mesh is not None and len(mesh) else None
        kind = self.settings.mask if (self.settings.mask != "mesh" or mesh_out is not None) else "extended"
        if kind == "occlusion":
            kind = "extended"
        m = landmark_mask(kind, transform_points(landmarks, to_out), out, mesh_out)
        if self.occlusion is not None and frame is not None:
            m = m & self._visible(frame, landmarks, to_out)
        if self.settings.erode:
            k = np.ones((3, 3), np.uint8)
            op = cv2.erode if self.settings.erode > 0 else cv2.dilate
            m = op(m, k, iterations=abs(self.settings.erode))
        if self.blur:
            m = cv2.GaussianBlur(m, (0, 0), self.blur / 2)
        return m.astype(np.float32)[..., None] / 255.0

    def _visible(self, frame: np.ndarray, landmarks: np.ndarray, to_out: np.ndarray) -> np.ndarray:
        """Where the input person's occlusion network sees their face, in model-output
        pixels (uint8 0/255): it looks at the full aligned crop, as it was trained."""
        import cv2

        from .align import crop_matrix
        from .occlusion import SIZE

        full = crop_matrix(landmarks, SIZE, self.model.padding)
        crop = cv2.warpAffine(frame, full, (SIZE, SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
        prob = self.occlusion.visible(crop[None])[0]
        out = self.model.output_size
        prob = cv2.warpAffine(prob, compose(to_out, invert(full)), (out, out),
                              flags=cv2.INTER_LINEAR)
        return ((prob > 0.5) * 255).astype(np.uint8)

    def blend(self, frame: np.ndarray, face: np.ndarray, landmarks: np.ndarray,
              mesh: np.ndarray | None, matrix: np.ndarray) -> np.ndarray:
        """Colour-match ``face`` (model output, float [0,1]) and paste it into ``frame`` in place.

        Only the frame region the face square lands in is touched; pixels outside the
        (feathered) mask keep their exact values.
        """
        import cv2

        out = self.model.output_size
        to_out = self.output_matrix(matrix)
        original = cv2.warpAffine(frame, to_out, (out, out), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REFLECT).astype(np.float32) / 255.0
        mask = self.mask(landmarks, mesh, matrix, frame)
        face = self.color(face, original, mask)
        # only the frame region under the mask is touched: its bounding box, mapped back
        bx, by, bw, bh = cv2.boundingRect((mask[..., 0] > 0).astype(np.uint8))
        if bw == 0 or bh == 0:
            return frame
        up = 2  # a 2x bicubic resize first, then a bilinear warp: bicubic look, bilinear cost
        back = invert(compose(np.array([[up, 0, 0], [0, up, 0]], np.float64), to_out))
        box = np.array([[bx, by], [bx + bw, by], [bx, by + bh], [bx + bw, by + bh]]) * up
        corners = transform_points(box, back)
        h, w = frame.shape[:2]
        x0, y0 = np.floor(corners.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(corners.max(axis=0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            return frame
        shift = back.copy()
        shift[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        face_u8 = np.clip(face * 255.0 + 0.5, 0, 255).astype(np.uint8)
        face_u8 = cv2.resize(face_u8, (out * up, out * up), interpolation=cv2.INTER_CUBIC)
        mask_up = cv2.resize(mask, (out * up, out * up), interpolation=cv2.INTER_LINEAR)
        face_roi = cv2.warpAffine(face_u8, shift, size, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask_up, shift, size, flags=cv2.INTER_LINEAR)
        alpha[alpha < 1.0 / 512] = 0.0  # exact pass-through outside the feathered edge
        beta = 1.0 - alpha
        roi = frame[y0:y1, x0:x1]
        blended = cv2.blendLinear(face_roi, roi, alpha, beta)
        if self.sharpen is not None:  # sharpen the swapped face only, never the background
            radius = 1.0 / float(np.sqrt(abs(np.linalg.det(to_out[:, :2]))))
            sharp = self.sharpen(blended.astype(np.float32) / 255.0, radius)
            sharp = np.clip(sharp * 255.0 + 0.5, 0, 255).astype(np.uint8)
            blended = cv2.blendLinear(sharp, roi, alpha, beta)
        roi[...] = blended
        return frame

    def swap_batch(self, batch: list[tuple[np.ndarray, list[Face]]]) -> list[np.ndarray]:
        """Run every face of a batch of frames through the model and blend each back."""
        jobs = [(i, face) for i, (_, faces) in enumerate(batch) for face in faces]
        frames = [frame for frame, _ in batch]
        if not jobs:
            return frames
        crops, matrices = [], []
        for i, (landmarks, _) in jobs:
            crop, matrix = self.crop(frames[i], landmarks)
            crops.append(crop)
            matrices.append(matrix)
        swapped = self.model.swap(np.stack(crops), self.direction)
        if self.settings.face_select == "person":
            keep = self._person(jobs, crops, matrices, swapped)
            jobs, matrices, swapped = ([x[k] for k in keep] for x in (jobs, matrices, swapped))
        for (i, (landmarks, mesh)), face, matrix in zip(jobs, swapped, matrices):
            self.blend(frames[i], face, landmarks, mesh, matrix)
        self.faces_swapped += len(jobs)
        return frames

    def person_score(self, crops: list[np.ndarray], faces: list[Face],
                     matrices: list[np.ndarray], swapped: np.ndarray | None = None) -> np.ndarray:
        """How much better the input person's own decoder rebuilds each face than the other
        decoder does (error ratio, inside the face mask): below 1 for the person the model
        learnt as its input, above 1 for its other person. A ratio, because a small or
        blurred face is easier for *both* decoders to rebuild."""
        import cv2

        out = self.model.output_size
        own = self.model.swap(np.stack(crops), self.own)
        other = swapped if swapped is not None else self.model.swap(np.stack(crops),
                                                                     self.direction)
        scores = np.empty(len(crops))
        for n, (crop, (landmarks, mesh), matrix) in enumerate(zip(crops, faces, matrices)):
            original = cv2.resize(crop, (out, out), interpolation=cv2.INTER_AREA)
            original = original.astype(np.float32) / 255.0
            mask = self.mask(landmarks, mesh, matrix)
            own_error = float((np.abs(own[n] - original) * mask).sum())
            other_error = float((np.abs(other[n] - original) * mask).sum())
            scores[n] = own_error / max(other_error, 1e-6)
        return scores

    def _person(self, jobs: list[tuple[int, Face]], crops: list[np.ndarray],
                matrices: list[np.ndarray], swapped: np.ndarray) -> list[int]:
        """Per frame, the index (into ``jobs``) of the face the model knows as its input
        person; frames with one face keep it without asking the model again."""
        by_frame: dict[int, list[int]] = {}
        for k, (i, _) in enumerate(jobs):
            by_frame.setdefault(i, []).append(k)
        crowded = [k for ks in by_frame.values() if len(ks) > 1 for k in ks]
        scores: dict[int, float] = {}
        if crowded:
            values = self.person_score([crops[k] for k in crowded],
                                       [jobs[k][1] for k in crowded],
                                       [matrices[k] for k in crowded], swapped[crowded])
            scores = dict(zip(crowded, values))
        return sorted(min(ks, key=lambda k: scores.get(k, 0.0)) for ks in by_frame.values())


def select_faces(faces: list[Face], how: str, frame_shape: tuple[int, ...]) -> list[Face]:
    """The faces to swap: the largest (default), the one nearest the centre, or all.

    ``person`` keeps every candidate: :class:`FaceSwapper` asks the model which one it is.
    """
    if not faces or how in ("all", "person"):
        return faces

    def area(face: Face) -> float:
        span = face[0].max(axis=0) - face[0].min(axis=0)
        return float(span[0] * span[1])

    if how == "largest":
        return [max(faces, key=area)]
    centre = np.array([frame_shape[1] / 2.0, frame_shape[0] / 2.0])
    return [min(faces, key=lambda f: float(np.linalg.norm(f[0].mean(axis=0) - centre)))]


class FrameFaces:
    """Faces per frame: from an alignments file, or detected with jitter reduction.

    Frames the alignments file has an entry for use it (an entry without faces means "no
    face": the user removed it during review); frames it lacks (extracted every Nth frame)
    are detected by a :class:`FaceTracker`: one face cheaply, up to four once a second one
    shows up (it looks every ``PROBE_EVERY`` frames), so that ``face_select`` can choose.
    """

    def __init__(self, alignments: al.Alignments | None, face_select: str,
                 record: al.Alignments | None = None) -> None:
        self.alignments = alignments
        self.face_select = face_select
        self.record = record  # detections are added here (to cache them as an alignments file)
        self.tracker: FaceTracker | None = None  # started on the first frame that needs it
        self.smoother = TrackSmoother()
        self.detected = 0

    def __call__(self, index: int, timestamp: float, image: np.ndarray) -> list[Face]:
        if self.alignments is not None and index in self.alignments.frames:
            faces = [(f.landmarks, f.mesh) for f in self.alignments.faces(index)]
            return select_faces(faces, self.face_select, image.shape)
        self.detected += 1
        if self.tracker is None:
            self.tracker = FaceTracker(max_faces=4, probe_every=PROBE_EVERY, min_size=MIN_FACE)
        dets = self.tracker.detect(image)
        if dets:
            meshes = self.smoother([d.mesh for d in dets], timestamp, [d.size for d in dets])
            dets = [Detection(m) for m in meshes]
        dets = [d for d in dets if plausibility(d, image.shape, MIN_FACE) is None]
        if self.record is not None:
            self.record.add(index, timestamp, [_entry(d) for d in dets])
        return select_faces([(d.landmarks, d.mesh) for d in dets], self.face_select, image.shape)

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()


def _entry(det: Detection) -> al.FaceEntry:
    """A light alignments entry (no stored masks) for the landmarks cache."""
    from .align import crop_matrix

    x0, y0 = det.mesh.min(axis=0)
    x1, y1 = det.mesh.max(axis=0)
    return al.FaceEntry(box=[float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                        landmarks=det.landmarks, mesh=det.mesh,
                        matrix=crop_matrix(det.landmarks, 256), size=256)


class _Stopped(Exception):
    """Another stage failed; this one just winds down."""


_END = object()


class _Pipeline:
    """Bounded queues between threads; the first error anywhere stops every stage."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []

    def put(self, q: queue.Queue, item: Any) -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                pass
        raise _Stopped

    def get(self, q: queue.Queue) -> Any:
        while not self.stop.is_set():
            try:
                return q.get(timeout=0.1)
            except queue.Empty:
                pass
        raise _Stopped

    def start(self, name: str, target: Callable[[], None]) -> None:
        def run() -> None:
            try:
                target()
            except _Stopped:
                pass
            except BaseException as exc:  # handed to the main thread
                self.fail(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self.threads.append(thread)

    def fail(self, exc: BaseException) -> None:
        if not self.errors:
            self.errors.append(exc)
        self.stop.set()

    def join(self) -> None:
        for thread in self.threads:
            thread.join()
        if self.errors:
            raise self.errors[0]


def _write_error(output: Path, exc: OSError) -> InputError:
    reason = exc.strerror or str(exc)
    if exc.errno in DISK_ERRORS:
        return InputError(output, f"disk full while writing the output ({reason}); "
                                  f"nothing was written, free some space and try again")
    return InputError(output, f"could not write the output ({reason})")


def _temp_name(output: Path) -> Path:
    return output.with_name(f".{output.stem}.{os.getpid()}.part{output.suffix or '.mp4'}")


def _check_paths(source: Path, output: Path) -> None:
    if output.exists() and output.resolve() == source.resolve():
        raise InputError(output, "the output would overwrite the input; choose another name")


@frozen_heap()
def convert(video: str | Path, model_dir: str | Path, output: str | Path, *,
            alignments: str | Path | None = None, mask: str = "extended", erode: int = 0,
            blur: int | None = None, color: str = "avg-color", sharpen: str = "none",
            swap: bool = False, label: bool = True, face_select: str = "largest",
            occlusion: str | Path | None = None,
            batch_size: int = 8, progress: Progress | None = None,
            model: SwapModel | None = None, sha256: str | None = None) -> ConvertResult:
    """Swap faces in ``video`` (or a folder of images) with the model in ``model_dir``.

    ``alignments``: landmarks of the target from ``facedrop extract --every-n 1`` (or a
    previous conversion); when the file does not exist yet, the landmarks detected here are
    saved there, so converting the same target again with other settings skips detection.
    ``model`` lets a caller that converts many files load the model once; ``sha256`` of the
    video, a caller that hashed it already (the daemon does, to spot duplicates).
    """
    started = time.perf_counter()
    video, output = Path(video), Path(output)
    settings = Settings(mask, erode, blur, color, sharpen, swap, label, face_select,
                        str(occlusion) if occlusion else None)
    settings.check()
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    if video.is_dir():
        files = _image_files(video)
        if not files:
            raise InputError(video, "folder holds no images")
        if output.exists() and not output.is_dir():
            raise InputError(output, "output for a folder of photos must be a folder")
        if output.resolve() == video.resolve():
            raise InputError(output, "write the swapped photos to another folder than the input")
        jobs = [(path, output / sidecar_name(path, ".png")) for path in files]
        return _convert_images(jobs, output, model_dir, settings, progress, started, model)
    _check_paths(video, output)
    info = probe(video)  # InputError for missing/corrupt targets
    if info.is_image:  # one photo: a PNG (lossless, with text tags) beside the asked-for name
        target = output.with_suffix(".png")
        _check_paths(video, target)
        return _convert_images([(video, target)], target, model_dir, settings, progress, started,
                               model, need_face=True)
    model = model or load_swap_model(model_dir)
    input_sha = sha256 or sha256_file(video)
    aligned, record = None, None
    alignments = Path(alignments) if alignments else None
    if alignments is not None and alignments.exists():
        aligned = al.load(alignments)
        if aligned.source.get("sha256") not in (None, input_sha):
            raise InputError(alignments, f"alignments were made from "
                                         f"{aligned.source.get('name')}, not from {video.name}")
    elif alignments is not None:
        record = al.Alignments(
            source={"name": video.name, "sha256": input_sha, "width": info.width,
                    "height": info.height, "fps": float(info.fps), "frames": info.frames},
            settings={"every_n": 1, "made_by": "convert"})
    swapper = FaceSwapper(model, settings)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_name(output)
    result = ConvertResult(output, None, settings=settings.as_dict(), iterations=model.iterations)
    faces_of = FrameFaces(aligned, face_select, record)
    pipe = _Pipeline()
    batches: queue.Queue = queue.Queue(maxsize=2)
    frames_out: queue.Queue = queue.Queue(maxsize=2 * batch_size)
    manifest = manifest_path(output)
    manifest_tmp = manifest.with_name(f".{manifest.name}.{os.getpid()}.part")
    ok = False
    try:
        tags = container_tags(model.name, model.iterations, model.trainer)
        with VideoWriter(tmp, info.width, info.height, info.fps, audio_from=video,
                         metadata=tags) as writer:

            def swap_stage() -> None:
                while (batch := pipe.get(batches)) is not _END:
                    stamps = [ts for _, _, ts in batch]
                    swapped = swapper.swap_batch([(image, faces) for image, faces, _ in batch])
                    for frame, ts in zip(swapped, stamps):
                        if label:
                            draw_label(frame)
                        pipe.put(frames_out, (frame, ts))
                pipe.put(frames_out, _END)

            def encode_stage() -> None:  # at the source's timestamps (variable frame rates)
                while (item := pipe.get(frames_out)) is not _END:
                    writer.write(*item)

            pipe.start("swap", swap_stage)
            pipe.start("encode", encode_stage)
            try:
                batch: list = []
                for frame in prefetch(read_frames(video)):
                    if pipe.stop.is_set():
                        break
                    faces = faces_of(frame.index, frame.timestamp, frame.image)
                    batch.append((frame.image, faces, frame.timestamp))
                    result.frames += 1
                    result.frames_swapped += bool(faces)
                    if len(batch) >= batch_size:
                        pipe.put(batches, batch)
                        batch = []
                    if progress:
                        progress(result.frames, max(info.frames, result.frames))
                if batch:
                    pipe.put(batches, batch)
                pipe.put(batches, _END)
            except _Stopped:
                pass
            except BaseException as exc:
                pipe.fail(exc)
            pipe.join()
            result.faces_swapped = swapper.faces_swapped
            if result.frames_swapped == 0:
                raise InputError(video, f"no face found in any of its {result.frames} frames; "
                                        f"nothing to swap")
        # the file is complete: hash it, write the manifest, then move both into place,
        # the manifest first: a kill between the renames leaves no output without its manifest
        result.seconds = time.perf_counter() - started
        write_manifest(
            manifest_tmp, output, input_path=video, input_sha256=input_sha,
            output_sha256=sha256_file(tmp),
            model={"name": model.name, "trainer": model.trainer, "iterations": model.iterations,
                   "path": str(model_dir) if model_dir is not None else None},
            settings={**settings.as_dict(), "batch_size": batch_size,
                      "alignments": str(alignments) if alignments else None},
            stats={"frames": result.frames, "frames_swapped": result.frames_swapped,
                   "faces_swapped": result.faces_swapped, "fps": float(info.fps),
                   "width": info.width, "height": info.height, "audio": info.has_audio,
                   "seconds": round(result.seconds, 2)})
        os.replace(manifest_tmp, manifest)
        os.replace(tmp, output)
        ok = True
    except OSError as exc:
        raise _write_error(output, exc) from exc
    finally:
        faces_of.close()
        if not ok:
            tmp.unlink(missing_ok=True)
            manifest_tmp.unlink(missing_ok=True)
    result.manifest = manifest
    result.frames_detected = faces_of.detected
    if record is not None and alignments is not None:
        try:
            al.save(record, alignments)
        except OSError as exc:  # a cache: the conversion itself succeeded
            log.warning("could not save the landmarks to %s (%s)", alignments, exc)
    log.debug(result.describe())
    return result


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                  and not p.name.startswith("."))


def _convert_images(jobs: list[tuple[Path, Path]], output: Path, model_dir, settings: Settings,
                    progress: Progress | None, started: float, model: SwapModel | None,
                    need_face: bool = False) -> ConvertResult:
    """Photos in, PNGs out (with text tags and a manifest each); photos without a face pass
    through, unless ``need_face`` (a single photo) makes that an error.
    """
    import cv2

    model = model or load_swap_model(model_dir)
    swapper = FaceSwapper(model, settings)
    result = ConvertResult(output, None, settings=settings.as_dict(), iterations=model.iterations)
    tags = container_tags(model.name, model.iterations, model.trainer)
    model_info = {"name": model.name, "trainer": model.trainer, "iterations": model.iterations,
                  "path": str(model_dir) if model_dir is not None else None}
    with PhotoFaces(max_faces=4) as landmarker:
        for n, (path, target) in enumerate(jobs, 1):
            image = read_image(path)
            dets = [d for d in landmarker.detect(image)
                    if plausibility(d, image.shape, MIN_FACE) is None]
            faces = select_faces([(d.landmarks, d.mesh) for d in dets], settings.face_select,
                                 image.shape)
            if need_face and not faces:
                raise InputError(path, "no face found in the photo; nothing to swap")
            (swapped,) = swapper.swap_batch([(image, faces)])
            if settings.label:
                draw_label(swapped)
            target.parent.mkdir(parents=True, exist_ok=True)
            ok, png = cv2.imencode(".png", cv2.cvtColor(swapped, cv2.COLOR_RGB2BGR))
            assert ok
            data = png_with_text(png.tobytes(), tags)
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                tmp.write_bytes(data)
                write_manifest(manifest_path(target), target, input_path=path,
                               input_sha256=sha256_file(path),
                               output_sha256=hashlib.sha256(data).hexdigest(),
                               model=model_info, settings={**settings.as_dict()},
                               stats={"faces_found": len(dets),
                                      "faces_swapped": swapper.faces_swapped - result.faces_swapped})
                os.replace(tmp, target)
            except OSError as exc:
                tmp.unlink(missing_ok=True)
                raise _write_error(target, exc) from exc
            result.frames += 1
            result.frames_swapped += bool(faces)
            result.faces_swapped = swapper.faces_swapped
            if progress:
                progress(n, len(jobs))
    result.seconds = time.perf_counter() - started
    if need_face:
        result.manifest = manifest_path(output)
    return result
