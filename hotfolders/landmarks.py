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

    def __post_init__(self) -> None:
        self.landmarks = self.mesh[list(MESH_TO_68)]

    @property
    def box(self) -> tuple[float, float, float, float]:
        x0, y0 = self.mesh.min(axis=0)
        x1, y1 = self.mesh.max(axis=0)
        return float(x0), float(y0), float(x1 - x0), float(y1 - y0)

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
        image.flags.writeable = False
        if self._warm:
            result = self._mesh.process(image)
        else:  # the graph logs its set-up on the first frame
            with quiet.native_stderr_hidden():
                result = self._mesh.process(image)
            self._warm = True
        if not result.multi_face_landmarks:
            return []
        faces = []
        scale = np.array([w, h], dtype=np.float32)
        for face in result.multi_face_landmarks:
            pts = np.array([(p.x, p.y) for p in face.landmark], dtype=np.float32) * scale
            faces.append(Detection(pts))
        return faces

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
