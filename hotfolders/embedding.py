"""Face measurements and an honest face embedding for sorting, review and coverage.

There is no face-recognition model in this project, so "how typical is this face of the set"
is measured with what we have: the aligned pixels (a small grey patch of the face, normalised
for brightness and contrast, plus coarse colour) and the landmark geometry, reduced with PCA.
Aligned faces of one person vary little in that space; another person, a blank or non-face
crop, or an occluded face lands far from the set's median. It is a set-relative measure: good
at "this one is unlike the others", not at telling who someone is.

The per-face measures (sharpness, brightness, colour histogram, size, pose, openness) are
computed on the face region only (the landmark hull), at a fixed working size so that the
numbers of 128 px and 512 px crops compare.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .align import MEAN_FACE_68, pose_angles

WORK_SIZE = 128          # crops are measured at this size
PATCH = 32               # grey appearance patch side
CHROMA = 8               # colour patch side
HIST_BINS = 8            # per channel
GEOMETRY_WEIGHT = 6.0    # landmark deviations (mean-face units) are ~10x smaller than pixels'
CHROMA_WEIGHT = 0.5
SHARPNESS_EPS = 25.0     # grey variance added below the ratio: a flat crop scores 0


def unit_matrix(meta: dict[str, Any], size: int) -> np.ndarray:
    """2x3 matrix: mean-face unit square -> pixels of a face crop resized to ``size``."""
    padding = float(meta.get("padding", 0.5))
    scale = size / (1.0 + 2.0 * padding)
    offset = padding * scale
    return np.array([[scale, 0.0, offset], [0.0, scale, offset]])


def face_landmarks(meta: dict[str, Any], size: int | None = None) -> np.ndarray:
    """68x2 landmarks in face-crop pixels, rescaled to a crop of ``size`` pixels."""
    lm = np.asarray(meta["landmarks"], dtype=np.float64).reshape(68, 2)
    if size is not None:
        lm = lm * (size / float(meta.get("size") or size))
    return lm


def unit_landmarks(meta: dict[str, Any]) -> np.ndarray:
    """Landmarks in mean-face units (the space of :data:`MEAN_FACE_68`)."""
    m = unit_matrix(meta, int(meta.get("size") or WORK_SIZE))
    return (face_landmarks(meta) - m[:, 2]) / m[0, 0]


def face_mask(meta: dict[str, Any], size: int) -> np.ndarray:
    """Boolean mask of the landmark hull (jaw + brows) in a crop of ``size`` pixels."""
    import cv2

    lm = face_landmarks(meta, size)
    hull = cv2.convexHull(np.round(lm).astype(np.int32))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillConvexPoly(mask, hull, 1)
    return mask.astype(bool)


def working_image(image: np.ndarray) -> np.ndarray:
    """The crop at :data:`WORK_SIZE` (area filter, so larger crops are not sharper by fiat)."""
    import cv2

    if image.shape[0] == WORK_SIZE and image.shape[1] == WORK_SIZE:
        return image
    interp = cv2.INTER_AREA if image.shape[0] > WORK_SIZE else cv2.INTER_CUBIC
    return cv2.resize(image, (WORK_SIZE, WORK_SIZE), interpolation=interp)


def pose(meta: dict[str, Any]) -> tuple[float, float]:
    """(yaw, pitch) in degrees from the face-space landmarks (similarity-invariant)."""
    yaw, pitch, _roll = pose_angles(face_landmarks(meta))
    return yaw, pitch


def mouth_openness(meta: dict[str, Any]) -> float:
    """Inner-lip gap over mouth width: ~0 closed, ~0.3 open, >0.5 wide open."""
    lm = face_landmarks(meta)
    gap = np.linalg.norm(lm[[61, 62, 63]] - lm[[67, 66, 65]], axis=1).mean()
    width = max(float(np.linalg.norm(lm[64] - lm[60])), 1e-6)
    return float(gap / width)


def eye_openness(meta: dict[str, Any]) -> float:
    """Eye aspect ratio (lid gap over eye width), both eyes: ~0.1 closed, ~0.3 open."""
    lm = face_landmarks(meta)
    values = []
    for a in (36, 42):
        eye = lm[a:a + 6]
        gap = (np.linalg.norm(eye[1] - eye[5]) + np.linalg.norm(eye[2] - eye[4])) / 2.0
        values.append(gap / max(float(np.linalg.norm(eye[3] - eye[0])), 1e-6))
    return float(np.mean(values))


def source_size(meta: dict[str, Any]) -> float:
    """Face size in the source frame (pixels): geometric mean of the landmark box sides."""
    box = meta.get("source_box") or [0, 0, 0, 0]
    return float(np.sqrt(max(float(box[2]), 0.0) * max(float(box[3]), 0.0)))


@dataclass
class FaceMeasures:
    """What sorting and review need of one face, from its pixels and metadata."""

    sharpness: float       # Laplacian energy over grey-level energy inside the face
    brightness: float      # mean luma inside the face, 0..255
    size: float            # face size in the source frame, px
    yaw: float
    pitch: float
    appearance: np.ndarray  # embedding input vector
    histogram: np.ndarray   # sqrt of the normalised RGB histogram (Hellinger space)


def appearance_vector(image: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Grey face patch (contrast-normalised) + coarse chroma + landmark geometry, one vector.

    Each block is scaled to a comparable share of the distance, so a face can be atypical by
    its look (another person, no face) or by its shape (a wrong landmark fit).
    """
    import cv2

    img = working_image(image)
    m = unit_matrix(meta, WORK_SIZE)
    # the face proper: unit square widened to the jaw, a little above the brows
    x0, y0 = m[0, 2] + m[0, 0] * -0.1, m[1, 2] + m[1, 1] * -0.1
    x1, y1 = m[0, 2] + m[0, 0] * 1.1, m[1, 2] + m[1, 1] * 1.3
    src = np.float32([[x0, y0], [x1, y0], [x0, y1]])
    grey_dst = np.float32([[0, 0], [PATCH, 0], [0, PATCH]])
    to_patch = cv2.getAffineTransform(src, grey_dst)
    patch = cv2.warpAffine(img, to_patch, (PATCH, PATCH), flags=cv2.INTER_AREA)
    grey = cv2.cvtColor(patch, cv2.COLOR_RGB2GRAY).astype(np.float64)
    std = grey.std()
    grey = (grey - grey.mean()) / std if std > 1.0 else np.zeros_like(grey)
    lab = cv2.cvtColor(patch, cv2.COLOR_RGB2LAB).astype(np.float64)
    chroma = cv2.resize(lab[..., 1:], (CHROMA, CHROMA), interpolation=cv2.INTER_AREA)
    chroma = (chroma - 128.0) / 16.0
    geometry = (unit_landmarks(meta) - MEAN_FACE_68).ravel()
    return np.concatenate([
        grey.ravel() / np.sqrt(grey.size),
        CHROMA_WEIGHT * chroma.ravel() / np.sqrt(chroma.size),
        GEOMETRY_WEIGHT * geometry / np.sqrt(geometry.size),
    ])


def colour_histogram(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Hellinger-space RGB histogram of the face region (Euclidean distance ~ Bhattacharyya)."""
    import cv2

    hist = cv2.calcHist([image], [0, 1, 2], mask.astype(np.uint8), [HIST_BINS] * 3,
                        [0, 256] * 3).ravel().astype(np.float64)
    total = hist.sum()
    return np.sqrt(hist / total) if total > 0 else hist


def measure(image: np.ndarray, meta: dict[str, Any]) -> FaceMeasures:
    """All per-face measures of one aligned face."""
    import cv2

    img = working_image(image)
    mask = face_mask(meta, WORK_SIZE)
    if not mask.any():
        mask[:] = True
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    lap = cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F, ksize=3)
    # divided by the contrast, so a dark (low-contrast) face does not pass for a blurred one
    sharpness = float(lap[mask].var()) / (float(grey[mask].var()) + SHARPNESS_EPS)
    yaw, pitch = pose(meta)
    return FaceMeasures(
        sharpness=sharpness,
        brightness=float(grey[mask].mean()),
        size=source_size(meta),
        yaw=yaw,
        pitch=pitch,
        appearance=appearance_vector(image, meta),
        histogram=colour_histogram(img, mask),
    )


@dataclass
class Typicality:
    """How far each face is from the set's typical face, in a PCA embedding."""

    embedding: np.ndarray   # n x k PCA coordinates (plus the residual as last column)
    distance: np.ndarray    # n: distance to the set's median face
    outlier: np.ndarray     # n bool: far from the typical face (see :func:`outliers`)
    threshold: float


def outliers(distance: np.ndarray, ratio: float = 1.8,
             sigmas: float = 5.0) -> tuple[np.ndarray, float]:
    """Faces much farther from the typical face than the rest; returns (mask, threshold).

    A robust rule: beyond ``sigmas`` robust standard deviations (MAD) above the median
    distance AND more than ``ratio`` times the median distance. The second condition keeps
    a very uniform set (tiny MAD) from flagging ordinary frames.
    """
    d = np.asarray(distance, dtype=np.float64)
    if d.size < 3:
        return np.zeros(d.shape, bool), float("inf")
    median = float(np.median(d))
    mad = float(np.median(np.abs(d - median))) * 1.4826
    threshold = max(median + sigmas * mad, ratio * median)
    return d > threshold, threshold


def typicality(vectors: np.ndarray, components: int = 16) -> Typicality:
    """PCA embedding of ``vectors`` (n x d) and each one's distance to the median face.

    The principal axes are fitted on the typical faces only (after a first robust pass), so a
    few outliers cannot tilt the embedding; their distance from the subspace is kept as an
    extra coordinate (the residual), so nothing that makes a face odd is thrown away.
    """
    x = np.asarray(vectors, dtype=np.float64)
    n = x.shape[0]
    centre = np.median(x, axis=0)
    centred = x - centre
    raw = np.linalg.norm(centred, axis=1)
    mask, threshold = outliers(raw)
    inliers = centred[~mask] if (~mask).sum() >= 2 else centred
    k = max(1, min(components, inliers.shape[0] - 1, x.shape[1]))
    _u, _s, vt = np.linalg.svd(inliers - inliers.mean(axis=0), full_matrices=False)
    axes = vt[:k]
    coords = centred @ axes.T
    residual = np.linalg.norm(centred - coords @ axes, axis=1)
    embedding = np.column_stack([coords, residual]) if n else np.zeros((0, k + 1))
    distance = np.linalg.norm(embedding, axis=1)  # == raw: the embedding loses nothing
    return Typicality(embedding=embedding, distance=distance, outlier=mask, threshold=threshold)


def similarity_order(points: np.ndarray, distance: np.ndarray, outlier: np.ndarray) -> list[int]:
    """Outliers first (farthest first), then a greedy nearest-neighbour chain of the rest.

    The chain starts at the least typical of the typical faces and always steps to the
    nearest face not yet placed, so look-alike faces end up next to each other and a person
    cleaning the folder deletes runs of them at once.
    """
    n = len(distance)
    out = [int(i) for i in np.argsort(-distance, kind="stable") if outlier[i]]
    rest = [i for i in range(n) if not outlier[i]]
    if not rest:
        return out
    remaining = np.array(rest)
    current = int(remaining[np.argmax(distance[remaining])])
    chain = [current]
    remaining = remaining[remaining != current]
    while remaining.size:
        gaps = np.linalg.norm(points[remaining] - points[current], axis=1)
        current = int(remaining[int(np.argmin(gaps))])
        chain.append(current)
        remaining = remaining[remaining != current]
    return out + chain
