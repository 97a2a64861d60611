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


# 68 points (x, y, z) of a 3-D mean face in the units of MEAN_FACE_68 (z grows away from the
# camera): MediaPipe's face-mesh depth of two frontal public-domain photos (skimage's astronaut,
# matplotlib's Grace Hopper), brought into mean-face space by the 2-D similarity and made
# left/right symmetric. MediaPipe's 2-D landmarks are a projection of the 3-D mesh it fits, so
# fitting this template back to them recovers the head's rotation.
MEAN_FACE_3D_68 = np.array([
    (-0.1468, 0.1419, 0.3869),
    (-0.1516, 0.3914, 0.5460),
    (-0.1436, 0.5185, 0.5598),
    (-0.0936, 0.8060, 0.5006),
    (-0.0423, 0.9294, 0.4129),
    (0.0189, 1.0254, 0.3154),
    (0.1810, 1.1775, 0.1694),
    (0.3672, 1.2766, 0.0529),
    (0.5000, 1.2908, 0.0359),
    (0.6328, 1.2766, 0.0529),
    (0.8190, 1.1775, 0.1694),
    (0.9811, 1.0254, 0.3154),
    (1.0423, 0.9294, 0.4129),
    (1.0936, 0.8060, 0.5006),
    (1.1436, 0.5185, 0.5598),
    (1.1516, 0.3914, 0.5460),
    (1.1468, 0.1419, 0.3869),
    (-0.0435, 0.1171, 0.0166),
    (0.0139, 0.0706, -0.0643),
    (0.1036, 0.0446, -0.1284),
    (0.2209, 0.0503, -0.1835),
    (0.3560, 0.0665, -0.2098),
    (0.6440, 0.0665, -0.2098),
    (0.7791, 0.0503, -0.1835),
    (0.8964, 0.0446, -0.1284),
    (0.9861, 0.0706, -0.0643),
    (1.0435, 0.1171, 0.0166),
    (0.5000, 0.2148, -0.1926),
    (0.5000, 0.3563, -0.2758),
    (0.5000, 0.4918, -0.3754),
    (0.5000, 0.5750, -0.3939),
    (0.3564, 0.6334, -0.1821),
    (0.4138, 0.6671, -0.1987),
    (0.5000, 0.6760, -0.2143),
    (0.5862, 0.6671, -0.1987),
    (0.6436, 0.6334, -0.1821),
    (0.0690, 0.2387, 0.0205),
    (0.1257, 0.1972, -0.0454),
    (0.2275, 0.1906, -0.0618),
    (0.3349, 0.2582, -0.0276),
    (0.2451, 0.2702, -0.0469),
    (0.1477, 0.2723, -0.0301),
    (0.6651, 0.2582, -0.0276),
    (0.7725, 0.1906, -0.0618),
    (0.8743, 0.1972, -0.0454),
    (0.9310, 0.2387, 0.0205),
    (0.8523, 0.2723, -0.0301),
    (0.7549, 0.2702, -0.0469),
    (0.2185, 0.8250, 0.0158),
    (0.3355, 0.7966, -0.1486),
    (0.4143, 0.7899, -0.1873),
    (0.5000, 0.8042, -0.1932),
    (0.5857, 0.7899, -0.1873),
    (0.6645, 0.7966, -0.1486),
    (0.7815, 0.8250, 0.0158),
    (0.6574, 0.9439, -0.1003),
    (0.5846, 0.9691, -0.1334),
    (0.5000, 0.9762, -0.1402),
    (0.4154, 0.9691, -0.1334),
    (0.3426, 0.9439, -0.1003),
    (0.2409, 0.8284, -0.0017),
    (0.4270, 0.8426, -0.1268),
    (0.5000, 0.8486, -0.1355),
    (0.5730, 0.8426, -0.1268),
    (0.7591, 0.8284, -0.0017),
    (0.5709, 0.8919, -0.1152),
    (0.5000, 0.8977, -0.1242),
    (0.4291, 0.8919, -0.1152),
], dtype=np.float64)
# landmarks that move little with expression: upper jaw line, brows, nose, eyes, upper lip
RIGID = np.r_[0:5, 12:17, 17:48, 48:55]


def head_rotation(landmarks: np.ndarray) -> np.ndarray:
    """3x3 rotation (mean-face model -> image axes) of a weak-perspective fit of the 3-D mean face.

    Least squares gives the 2x3 affine camera mapping the centred template onto the centred
    landmarks; its nearest scaled orthonormal pair of rows (SVD) is the top of the rotation.
    Translation, scale and in-plane rotation of the landmarks do not change yaw and pitch, so
    landmarks of the frame and of the aligned face give the same answer.
    """
    pts = np.asarray(landmarks, dtype=np.float64)[RIGID]
    model = MEAN_FACE_3D_68[RIGID]
    pts = pts - pts.mean(axis=0)
    model = model - model.mean(axis=0)
    affine = np.linalg.lstsq(model, pts, rcond=None)[0].T  # 2x3
    u, _s, vt = np.linalg.svd(affine, full_matrices=False)
    top = u @ vt
    return np.vstack([top, np.cross(top[0], top[1])])


def pose_angles(landmarks: np.ndarray) -> tuple[float, float, float]:
    """Approximate (yaw, pitch, roll) in degrees from 68 landmarks, no camera model needed.

    Yaw and pitch come from a weak-perspective fit of :data:`MEAN_FACE_3D_68`
    (:func:`head_rotation`): yaw > 0 when the face turns towards the image's right (its nose
    tip moves right), pitch > 0 when it looks up (the nose tip rises towards the eyes). Roll is
    the in-plane angle of the 2-D alignment. Good enough to sort and bin poses; faces turned
    beyond ~60 degrees are beyond what the landmarker reports reliably anyway.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    matrix = normalised_matrix(lm)
    roll = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    rot = head_rotation(lm)
    # rot = Rz(roll) @ Rx(pitch) @ Ry(yaw); the bottom row does not depend on the in-plane
    # roll: (cos p sin y, -sin p, cos p cos y). The nose tip is towards the camera (z < 0).
    yaw = float(np.degrees(np.arctan2(rot[2, 0], rot[2, 2])))
    pitch = float(np.degrees(np.arcsin(np.clip(-rot[2, 1], -1.0, 1.0))))
    return yaw, pitch, roll
