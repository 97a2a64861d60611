"""Face detection and landmarks with MediaPipe face mesh (bundled models only).

MediaPipe's face mesh gives 478 points (468 + irises); masks, alignment and users' habits use the
68-point iBUG layout, so :data:`MESH_TO_68` maps one onto the other. Video mode lets MediaPipe
track faces between frames instead of re-detecting each one, which is both faster and steadier.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import quiet  # noqa: F401  (must precede the mediapipe import)

log = logging.getLogger(__name__)

# iBUG 68 -> MediaPipe mesh index: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, lips 48-67
MESH_TO_68: tuple[int, ...] = (
    162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389,
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    78, 82, 13, 312, 308, 317, 14, 87,
)
# left/right mirror of the 68 points, used for flips and symmetric templates
MIRROR_68: tuple[int, ...] = (
    16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0,
    26, 25, 24, 23, 22, 21, 20, 19, 18, 17,
    27, 28, 29, 30, 35, 34, 33, 32, 31,
    45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40,
    54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55,
    64, 63, 62, 61, 60, 67, 66, 65,
)

REJECT_REASONS = ("too small", "implausible geometry", "extreme scale", "off frame")


@dataclass
class Detection:
    """One face in pixel coordinates of the frame it was found in."""

    mesh: np.ndarray                      # 478x2 float32
    landmarks: np.ndarray = field(init=False)  # 68x2 float32
    box: tuple[float, float, float, float] = field(init=False)  # x, y, w, h of the mesh

    def __post_init__(self) -> None:
        self.landmarks = self.mesh[list(MESH_TO_68)]
        x0, y0 = self.mesh.min(axis=0)
        x1, y1 = self.mesh.max(axis=0)
        self.box = float(x0), float(y0), float(x1 - x0), float(y1 - y0)

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the landmark box."""
        _, _, w, h = self.box
        return max(w, h)

    @property
    def interocular(self) -> float:
        left = self.landmarks[36:42].mean(axis=0)
        right = self.landmarks[42:48].mean(axis=0)
        return float(np.linalg.norm(right - left))


def plausibility(det: Detection, frame_shape: tuple[int, int], min_size: int) -> str | None:
    """Why a detection is not a usable face (one of :data:`REJECT_REASONS`), or None."""
    h, w = frame_shape[:2]
    if det.size < min_size:
        return "too small"
    lm = det.landmarks
    eyes = np.concatenate([lm[36:42], lm[42:48]]).mean(axis=0)
    mouth = lm[48:60].mean(axis=0)
    nose = lm[30]
    chin = lm[8]
    # in face-up coordinates the eyes lie above the nose, the nose above the mouth, the
    # mouth above the chin: measure along the eye->chin axis so rolled faces still pass
    axis = chin - eyes
    length = float(np.linalg.norm(axis))
    if length < 1e-3:
        return "implausible geometry"
    axis /= length
    t_nose, t_mouth = float((nose - eyes) @ axis), float((mouth - eyes) @ axis)
    if not (0 < t_nose < t_mouth < length):
        return "implausible geometry"
    if det.interocular < 0.15 * det.size or det.interocular > 0.8 * det.size:
        return "implausible geometry"
    if det.size > 2.0 * max(h, w):
        return "extreme scale"
    x, y, bw, bh = det.box
    cx, cy = x + bw / 2, y + bh / 2
    if not (0 <= cx < w and 0 <= cy < h):
        return "off frame"
    return None


# A NormalizedLandmarkList with x, y and z set serialises as 17 bytes per point: field 1,
# length 15, then x, y, z as tagged little-endian floats. Reading that with NumPy is ~20x
# faster than 478 Python attribute reads per face per frame.
_POINT_BYTES = 17
_TAG_COLUMNS = np.array([0, 1, 2, 7, 12])              # where the tags sit in a point's bytes
_TAGS = np.array([0x0A, 0x0F, 0x0D, 0x15, 0x1D], np.uint8)  # field 1 len 15; x; y; z
_XY_COLUMNS = np.r_[3:7, 8:12]                           # the bytes of x and y


def landmark_xy(landmarks) -> np.ndarray:
    """N x 2 float32 (x, y) of a MediaPipe ``NormalizedLandmarkList``, in [0, 1] units."""
    raw = landmarks.SerializeToString()
    count = len(landmarks.landmark)
    if len(raw) == count * _POINT_BYTES:
        points = np.frombuffer(raw, np.uint8).reshape(count, _POINT_BYTES)
        if (points[:, _TAG_COLUMNS] == _TAGS).all():
            return points[:, _XY_COLUMNS].copy().view("<f4").reshape(count, 2)
    # another layout (a field missing or added): read the points one by one
    return np.array([(p.x, p.y) for p in landmarks.landmark], dtype=np.float32).reshape(-1, 2)


class FaceLandmarker:
    """MediaPipe face mesh over RGB frames. ``video=True`` tracks faces between frames.

    Not thread-safe; one instance per stream of frames. Use as a context manager so the
    MediaPipe graph is closed.
    """

    def __init__(self, video: bool = True, max_faces: int = 4,
                 min_detection_confidence: float = 0.5, min_tracking_confidence: float = 0.5) -> None:
        with quiet.native_stderr_hidden():
            import mediapipe as mp

            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=not video,
                max_num_faces=max_faces,
                refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence,
            )
        self._warm = False

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces in an RGB uint8 frame, in MediaPipe's (tracking-stable) order."""
        h, w = image.shape[:2]
        image = np.ascontiguousarray(image)
        writeable = image.flags.writeable
        image.flags.writeable = False  # lets MediaPipe use the pixels without a copy
        try:
            if self._warm:
                result = self._mesh.process(image)
            else:  # the graph logs its set-up on the first frame
                with quiet.native_stderr_hidden():
                    result = self._mesh.process(image)
                self._warm = True
        finally:
            image.flags.writeable = writeable  # the frame stays the caller's to draw on
        if not result.multi_face_landmarks:
            return []
        scale = np.array([w, h], dtype=np.float32)
        return [Detection(landmark_xy(face) * scale) for face in result.multi_face_landmarks]

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


Box = tuple[float, float, float, float]  # x, y, w, h in frame pixels


def tiles(height: int, width: int, n: int = 2) -> list[Box]:
    """``n`` x ``n`` overlapping tiles covering a frame (each 1.5/n of each side), so a face
    on a seam is whole in a neighbour."""
    th, tw = min(height, int(height * 1.5 / n)), min(width, int(width * 1.5 / n))
    steps = max(1, n - 1)
    return [(float(round(j * (width - tw) / steps)), float(round(i * (height - th) / steps)),
             float(tw), float(th)) for i in range(n) for j in range(n)]


def _overlap(a: Box, b: Box) -> float:
    """Intersection over the smaller box's area (a face found twice on two tiles)."""
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / max(1e-6, min(a[2] * a[3], b[2] * b[3]))


class FaceFinder:
    """MediaPipe's full-range face detector (bundled in the wheel), on the whole frame and,
    when that finds nothing, on overlapping tiles: the detector sees the frame at 192 px, so
    a 60 px face in a 1280 px frame would be 9 px to it; on a 2 x 2 tile it is twice that.

    Measured on a 2-core machine, 1280 x 720: the whole frame finds faces from about 90 px,
    2 x 2 tiles from about 60 px, at about 6 and 25 ms per frame.
    """

    def __init__(self, min_confidence: float = 0.5, grid: int = 2) -> None:
        with quiet.native_stderr_hidden():
            import mediapipe as mp

            self._detector = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_confidence)
        self.grid = grid

    def _run(self, image: np.ndarray, x0: float, y0: float) -> list[tuple[float, Box]]:
        h, w = image.shape[:2]
        result = self._detector.process(np.ascontiguousarray(image))
        found = []
        for det in result.detections or ():
            box = det.location_data.relative_bounding_box
            found.append((float(det.score[0]), (x0 + box.xmin * w, y0 + box.ymin * h,
                                                box.width * w, box.height * h)))
        return found

    def boxes(self, image: np.ndarray) -> list[Box]:
        """Faces in an RGB frame, best first, each once."""
        found = self._run(image, 0.0, 0.0)
        if not found and self.grid > 1:
            for x, y, w, h in tiles(*image.shape[:2], self.grid):
                found += self._run(image[int(y):int(y + h), int(x):int(x + w)], x, y)
        kept: list[Box] = []
        for _, box in sorted(found, key=lambda f: -f[0]):
            if all(_overlap(box, other) < 0.5 for other in kept):
                kept.append(box)
        return kept

    def close(self) -> None:
        self._detector.close()


class CropLandmarker:
    """Face mesh on an enlarged crop around one face, scaled up to :attr:`SIZE` px, with the
    points mapped back to the frame: the mesh then sees a small face as a large one."""

    SIZE = 256

    def __init__(self) -> None:
        self._mesh = FaceLandmarker(video=False, max_faces=1)

    def detect(self, image: np.ndarray, box: Box, enlarge: float = 2.2) -> Detection | None:
        import cv2

        x, y, w, h = box
        side = max(w, h) * enlarge
        scale = self.SIZE / max(side, 1.0)
        cx, cy = x + w / 2, y + h / 2
        matrix = np.array([[scale, 0, self.SIZE / 2 - cx * scale],
                           [0, scale, self.SIZE / 2 - cy * scale]], np.float32)
        crop = cv2.warpAffine(image, matrix, (self.SIZE, self.SIZE), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT)
        found = self._mesh.detect(crop)
        if not found:
            return None
        centre = np.array([self.SIZE / 2, self.SIZE / 2], np.float32)
        best = min(found, key=lambda d: float(np.linalg.norm(d.mesh.mean(axis=0) - centre)))
        return Detection(((best.mesh - matrix[:, 2]) / scale).astype(np.float32))

    def close(self) -> None:
        self._mesh.close()


class SmallFaces:
    """Faces too small for the face mesh's own detector: found with :class:`FaceFinder`,
    then followed from frame to frame by running the mesh on a crop around where each face
    was (re-detecting only when a face is lost, and every ``redetect_every`` frames for
    faces that walk in)."""

    def __init__(self, max_faces: int = 4, redetect_every: int = 25) -> None:
        self.max_faces = max_faces
        self.redetect_every = redetect_every
        self.finder = FaceFinder()
        self.crop = CropLandmarker()
        self.boxes: list[Box] = []
        self._since = 0
        self.detections = 0  # how often the finder ran (for the benchmark)

    def _find(self, image: np.ndarray) -> None:
        self.boxes = self.finder.boxes(image)[:self.max_faces]
        self._since = 0
        self.detections += 1

    def detect(self, image: np.ndarray) -> list[Detection]:
        fresh = not self.boxes or self._since >= self.redetect_every
        if fresh:
            self._find(image)
        found = [d for box in self.boxes if (d := self.crop.detect(image, box)) is not None]
        if not found and not fresh:  # lost them: look again, once
            self._find(image)
            found = [d for box in self.boxes if (d := self.crop.detect(image, box)) is not None]
        if found:  # follow each face with its own landmarks (the mesh box is larger: less room)
            self.boxes = [d.box for d in found]
        self._since += 1
        return found

    def close(self) -> None:
        self.finder.close()
        self.crop.close()


class PhotoFaces:
    """Faces of unrelated photos: the mesh's own detector, and when it sees none, the
    small-face path (a group photo, a wide shot)."""

    def __init__(self, max_faces: int = 4) -> None:
        self.max_faces = max_faces
        self._mesh = FaceLandmarker(video=False, max_faces=max_faces)
        self._small: SmallFaces | None = None

    def detect(self, image: np.ndarray) -> list[Detection]:
        found = self._mesh.detect(image)
        if found:
            return found
        if self._small is None:
            self._small = SmallFaces(self.max_faces)
        self._small.boxes = []  # nothing carries over from another photo
        return self._small.detect(image)

    def close(self) -> None:
        self._mesh.close()
        if self._small is not None:
            self._small.close()

    def __enter__(self) -> "PhotoFaces":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FaceTracker:
    """Faces of a video, tracked: one face cheaply, several once a second one shows up, and
    faces too small for the mesh's own detector through :class:`SmallFaces`.

    MediaPipe runs its face detector on every frame that holds fewer faces than its
    ``max_num_faces``, so tracking up to four faces in a video of one person costs half as
    much again per frame as tracking one. This tracks a single face and, every
    ``probe_every`` frames, looks for more with a still-image landmarker; from the first
    frame that shows several plausible faces on, it tracks up to ``max_faces``.

    When the mesh finds no face in a frame, the small-face path looks (a wide shot: a face of
    60-120 px in a 720p frame). While it follows small faces, the full-frame mesh runs only
    every ``probe_every`` frames, to notice a face that came close; large faces never pay for
    the small-face path.
    """

    def __init__(self, max_faces: int = 4, probe_every: int = 25, min_size: int = 32,
                 small_faces: bool = True) -> None:
        self.max_faces = max_faces
        self.probe_every = probe_every
        self.min_size = min_size
        self.small_faces = small_faces
        self.multi = max_faces == 1  # nothing to look for
        self._tracker = FaceLandmarker(video=True, max_faces=1)
        self._prober: FaceLandmarker | None = None
        self._small: SmallFaces | None = None
        self._following_small = False
        self._frames = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        if not self.multi and self._frames % self.probe_every == 0:
            if self._prober is None:
                self._prober = FaceLandmarker(video=False, max_faces=self.max_faces)
            found = [d for d in self._prober.detect(image)
                     if plausibility(d, image.shape, self.min_size) is None]
            if len(found) > 1:
                log.info("several faces in view: tracking up to %d", self.max_faces)
                self._tracker.close()
                self._prober.close()
                self._prober = None
                self._tracker = FaceLandmarker(video=True, max_faces=self.max_faces)
                self.multi = True
        probe = self._frames % self.probe_every == 0
        self._frames += 1
        if self._following_small and not probe:
            found = self._small.detect(image)
            if found:
                return found
        found = self._tracker.detect(image)
        if found or not self.small_faces:
            self._following_small = False
            return found
        if self._small is None:
            self._small = SmallFaces(self.max_faces, self.probe_every)
        found = self._small.detect(image)
        self._following_small = bool(found)
        return found

    def close(self) -> None:
        for landmarker in (self._tracker, self._prober, self._small):
            if landmarker is not None:
                landmarker.close()
        self._prober = None
        self._small = None

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
