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


class FaceTracker:
    """Faces of a video, tracked: one face cheaply, several once a second one shows up.

    MediaPipe runs its face detector on every frame that holds fewer faces than its
    ``max_num_faces``, so tracking up to four faces in a video of one person costs half as
    much again per frame as tracking one. This tracks a single face and, every
    ``probe_every`` frames, looks for more with a still-image landmarker; from the first
    frame that shows several plausible faces on, it tracks up to ``max_faces``.
    """

    def __init__(self, max_faces: int = 4, probe_every: int = 25, min_size: int = 32) -> None:
        self.max_faces = max_faces
        self.probe_every = probe_every
        self.min_size = min_size
        self.multi = max_faces == 1  # nothing to look for
        self._tracker = FaceLandmarker(video=True, max_faces=1)
        self._prober: FaceLandmarker | None = None
        self._frames = 0

    def detect(self, image: np.ndarray) -> list[Detection]:
        if not self.multi and self._frames % self.probe_every == 0:
            if self._prober is None:
                self._prober = FaceLandmarker(video=False, max_faces=self.max_faces)
            found = [d for d in self._prober.detect(image)
                     if plausibility(d, image.shape, self.min_size) is None]
            if len(found) > 1:
                log.info("several faces in view: tracking up to %d", self.max_faces)
                self.close()
                self._tracker = FaceLandmarker(video=True, max_faces=self.max_faces)
                self.multi = True
        self._frames += 1
        return self._tracker.detect(image)

    def close(self) -> None:
        for landmarker in (self._tracker, self._prober):
            if landmarker is not None:
                landmarker.close()
        self._prober = None

    def __enter__(self) -> "FaceTracker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
