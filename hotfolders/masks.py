"""Face masks built from landmarks: ``components``, ``extended`` and ``mesh``.

``components`` and ``extended`` follow faceswap's landmark masks (68-point iBUG indices):
the union of convex hulls of the jaw halves, cheeks, nose ridge, eye regions and nose, with the
top edge at the eyebrows; ``extended`` first lifts each eyebrow by half its distance to the top
of the eye, which keeps the brows inside the mask. ``mesh`` is the face oval of MediaPipe's
468-point mesh, which follows a long chin better than the 68-point jaw line.
"""
from __future__ import annotations

import numpy as np

MASK_TYPES = ("extended", "components", "mesh")

# hull groups of faceswap's components mask (68-point indices)
_COMPONENT_GROUPS: tuple[tuple[int, ...], ...] = (
    (*range(0, 9), 17),                       # right jaw + brow corner
    (*range(8, 17), 26),                      # left jaw + brow corner
    (17, 18, 19, 8),                          # right cheek
    (24, 25, 26, 8),                          # left cheek
    (*range(19, 25), 8),                      # nose ridge
    (*range(17, 22), 27, *range(31, 36), 8),  # right eye region
    (*range(22, 27), 27, *range(31, 36), 8),  # left eye region
    tuple(range(27, 36)),                     # nose
)

# MediaPipe face-mesh face oval (FACEMESH_FACE_OVAL), in order around the face
MESH_FACE_OVAL: tuple[int, ...] = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)


def extend_brows(landmarks: np.ndarray) -> np.ndarray:
    """Lift each eyebrow by half its distance to the top of the eye (faceswap's ``extended``)."""
    points = np.asarray(landmarks, dtype=np.float32).copy()
    # right brow 17-21 over right eye top 37,38; left brow 22-26 over left eye top 43,44
    for brow, eye in ((slice(17, 22), (36, 37, 38, 39)), (slice(22, 27), (42, 43, 44, 45))):
        eye_top = points[list(eye)].mean(axis=0)
        brow_pts = points[brow]
        lift = (brow_pts - eye_top) * 0.5
        points[brow] = brow_pts + lift
    return points


def _fill_hulls(size: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    import cv2

    mask = np.zeros(size, dtype=np.uint8)
    for poly in polygons:
        hull = cv2.convexHull(np.round(poly * 4).astype(np.int32))  # 2 bits of sub-pixel
        cv2.fillConvexPoly(mask, hull, 255, lineType=cv2.LINE_AA, shift=2)
    return mask


def landmark_mask(kind: str, landmarks: np.ndarray, size: int | tuple[int, int],
                  mesh: np.ndarray | None = None) -> np.ndarray:
    """A uint8 mask (0/255, anti-aliased edge) of ``kind`` in the space of the given points.

    ``landmarks`` are the 68 iBUG points and ``mesh`` the 468/478 mesh points, both already in
    the target image's pixel coordinates; ``size`` is ``side`` or ``(height, width)``.
    """
    import cv2

    shape = (size, size) if isinstance(size, int) else tuple(size)
    if kind == "mesh":
        if mesh is None:
            raise ValueError("the mesh mask needs the face-mesh points")
        oval = np.asarray(mesh, dtype=np.float32)[list(MESH_FACE_OVAL)]
        mask = np.zeros(shape, dtype=np.uint8)
        cv2.fillPoly(mask, [np.round(oval * 4).astype(np.int32)], 255, lineType=cv2.LINE_AA,
                     shift=2)
        return mask
    if kind == "extended":
        points = extend_brows(landmarks)
    elif kind == "components":
        points = np.asarray(landmarks, dtype=np.float32)
    else:
        raise ValueError(f"unknown mask {kind!r}; choose one of {', '.join(MASK_TYPES)}")
    return _fill_hulls(shape, [points[list(group)] for group in _COMPONENT_GROUPS])


def region_weights(landmarks: np.ndarray, size: int, eye_mouth_weight: float = 3.0) -> np.ndarray:
    """Per-pixel loss weights: 1 everywhere, ``eye_mouth_weight`` on the eyes and mouth."""
    import cv2

    weights = np.ones((size, size), dtype=np.float32)
    points = np.asarray(landmarks, dtype=np.float32)
    region = np.zeros((size, size), dtype=np.uint8)
    for idx in (range(36, 42), range(42, 48), range(48, 60)):
        hull = cv2.convexHull(np.round(points[list(idx)]).astype(np.int32))
        cv2.fillConvexPoly(region, hull, 1)
    region = cv2.dilate(region, np.ones((3, 3), np.uint8), iterations=max(1, size // 64))
    weights[region > 0] = eye_mouth_weight
    return weights
