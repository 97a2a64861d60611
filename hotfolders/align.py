"""Face alignment: a similarity (Umeyama) transform of the landmarks onto a mean face.

The template is the symmetric mean of MediaPipe's 68-point landmarks on frontal faces,
normalised so that the 51 inner points (brows, eyes, nose, mouth; the jaw is left out because
it moves with the mouth) span the unit square. An aligned crop of ``size`` pixels places that
unit square in its centre with ``padding`` of it on every side, so the crop holds the whole
face, the forehead and some background ("face" centring).
"""
from __future__ import annotations

import numpy as np

# 68 points (x, y) of the mean face; inner points 17..67 span [0, 1] x [0, 1]
MEAN_FACE_68 = np.array([
    (-0.0962, 0.0885),
    (-0.1124, 0.3504),
    (-0.1112, 0.4843),
    (-0.0788, 0.7889),
    (-0.0375, 0.9214),
    (0.0142, 1.0254),
    (0.1561, 1.1941),
    (0.3226, 1.3083),
    (0.4441, 1.3304),
    (0.5669, 1.3227),
    (0.7429, 1.2288),
    (0.8993, 1.0778),
    (0.9601, 0.9804),
    (1.0132, 0.8535),
    (1.0729, 0.5543),
    (1.0863, 0.4213),
    (1.0938, 0.1589),
    (0.0000, 0.0681),
    (0.0551, 0.0224),
    (0.1388, 0.0000),
    (0.2465, 0.0123),
    (0.3699, 0.0365),
    (0.6349, 0.0522),
    (0.7599, 0.0426),
    (0.8681, 0.0431),
    (0.9493, 0.0753),
    (1.0000, 0.1272),
    (0.4954, 0.2002),
    (0.4886, 0.3488),
    (0.4822, 0.4911),
    (0.4782, 0.5785),
    (0.3433, 0.6319),
    (0.3945, 0.6705),
    (0.4734, 0.6846),
    (0.5531, 0.6798),
    (0.6075, 0.6476),
    (0.0978, 0.2019),
    (0.1520, 0.1614),
    (0.2458, 0.1598),
    (0.3413, 0.2366),
    (0.2583, 0.2443),
    (0.1687, 0.2414),
    (0.6452, 0.2546),
    (0.7472, 0.1895),
    (0.8403, 0.2021),
    (0.8906, 0.2488),
    (0.8165, 0.2797),
    (0.7271, 0.2721),
    (0.2075, 0.8259),
    (0.3164, 0.8023),
    (0.3891, 0.7995),
    (0.4673, 0.8192),
    (0.5468, 0.8088),
    (0.6189, 0.8202),
    (0.7251, 0.8565),
    (0.6054, 0.9746),
    (0.5372, 0.9971),
    (0.4591, 1.0000),
    (0.3816, 0.9879),
    (0.3159, 0.9575),
    (0.2280, 0.8307),
    (0.3983, 0.8555),
    (0.4652, 0.8659),
    (0.5326, 0.8634),
    (0.7043, 0.8589),
    (0.5282, 0.9153),
    (0.4628, 0.9176),
    (0.3979, 0.9076),
], dtype=np.float64)
INNER = slice(17, 68)
# fraction of the unit square added on each side of the aligned crop
EXTRACT_PADDING = 0.5


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, translation) src -> dst.

    Returns a 2x3 matrix. Umeyama, "Least-squares estimation of transformation parameters
    between two point patterns", PAMI 1991.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    n = src.shape[0]
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / n
    u, s, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(cov) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    var = (src_c ** 2).sum() / n
    scale = (s * d).sum() / var if var > 0 else 1.0
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def invert(matrix: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def normalised_matrix(landmarks: np.ndarray) -> np.ndarray:
    """Frame -> unit-square mean-face space, fitted on the 51 inner landmarks."""
    return umeyama(np.asarray(landmarks)[INNER], MEAN_FACE_68[INNER])


def crop_matrix(landmarks: np.ndarray, size: int, padding: float = EXTRACT_PADDING) -> np.ndarray:
    """Frame -> aligned crop of ``size`` pixels with ``padding`` around the unit square."""
    unit = normalised_matrix(landmarks)
    scale = size / (1.0 + 2.0 * padding)
    offset = padding * scale
    return np.vstack([unit[0] * scale, unit[1] * scale]) + np.array([[0, 0, offset], [0, 0, offset]])


def sub_crop_matrix(size: int, coverage: float, out_size: int) -> np.ndarray:
    """Aligned crop (``size`` px) -> its centre ``coverage`` fraction resized to ``out_size``."""
    side = size * coverage
    start = (size - side) / 2.0
    scale = out_size / side
    return np.array([[scale, 0.0, -start * scale], [0.0, scale, -start * scale]])


def compose(outer: np.ndarray, inner: np.ndarray) -> np.ndarray:
    """The 2x3 matrix applying ``inner`` first, then ``outer``."""
    o = np.vstack([outer, [0, 0, 1]])
    i = np.vstack([inner, [0, 0, 1]])
    return (o @ i)[:2]


def warp(image: np.ndarray, matrix: np.ndarray, size: int | tuple[int, int],
         border: int | None = None, fast: bool = False) -> np.ndarray:
    """Warp ``image`` by ``matrix`` into a ``size`` output.

    Area filter when shrinking; bicubic when enlarging, or bilinear with ``fast`` (about five
    times cheaper; extraction uses it, since training shrinks the crops again anyway).
    """
    import cv2

    w, h = (size, size) if isinstance(size, int) else (size[1], size[0])
    scale = float(np.sqrt(abs(np.linalg.det(np.asarray(matrix)[:, :2]))))
    if scale < 1.0:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR if fast else cv2.INTER_CUBIC
    mode = cv2.BORDER_REFLECT if border is None else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, np.asarray(matrix, dtype=np.float64), (w, h), flags=interp,
                          borderMode=mode, borderValue=0 if border is None else border)


def pose_angles(landmarks: np.ndarray) -> tuple[float, float, float]:
    """Approximate (yaw, pitch, roll) in degrees from 68 landmarks, no camera model needed.

    Yaw from the nose tip's horizontal offset between the eye corners' midline and the jaw
    edges, pitch from the nose tip's vertical position between the eyes and the mouth compared
    with the mean face, roll from the eye line. Good enough to sort and bin poses.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    matrix = normalised_matrix(lm)
    roll = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    pts = transform_points(lm, matrix)  # roll and scale removed
    left, right = pts[0], pts[16]
    nose = pts[30]
    width = max(right[0] - left[0], 1e-6)
    yaw_ratio = ((nose[0] - left[0]) / width - 0.5) * 2.0  # -1 .. 1
    yaw = float(np.degrees(np.arcsin(np.clip(yaw_ratio, -1, 1))))
    eyes_y = pts[36:48, 1].mean()
    mouth_y = pts[48:60, 1].mean()
    ref = MEAN_FACE_68
    ref_ratio = (ref[30, 1] - ref[36:48, 1].mean()) / (ref[48:60, 1].mean() - ref[36:48, 1].mean())
    ratio = (nose[1] - eyes_y) / max(mouth_y - eyes_y, 1e-6)
    pitch = float(np.degrees(np.arcsin(np.clip((ratio - ref_ratio) * 2.0, -1, 1))))
    return yaw, pitch, roll
