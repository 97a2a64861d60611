"""A self-supervised occlusion mask: which pixels of a face are this person's face.

The common pain of face swapping is a hand, a microphone or hair over the face, painted over
by the swap. Other tools answer with a segmentation network whose weights are downloaded or
trained on masks people draw. Here nothing is downloaded and nobody draws: a small U-Net is
trained per person on that person's own approved faces, with synthetic occluders pasted on
them — polygons, blobs, hand- and microphone-like bars, patches of other faces and textures,
with soft edges and shadows. The target is the landmark mask minus the pasted pixels, so the
network learns "this person's face versus anything else".

Entry points: :func:`train_occlusion` (faces in, weights out) and :class:`OcclusionNet`
(weights in, the visible-face probability of face crops out). Faces are the aligned crops at
full coverage, scaled to :data:`SIZE`.
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import quiet

log = logging.getLogger(__name__)

SIZE = 96                  # px: network input (a face crop at full coverage)
MASK = "extended"          # the landmark mask the visible face lies within
CLEAN_SHARE = 0.3          # training samples left without an occluder
WEIGHTS_NAME = "occlusion.weights.h5"


# ---------------------------------------------------------------------------------------------
# synthetic occluders

def _texture(rng: np.random.Generator, size: int, faces: np.ndarray) -> np.ndarray:
    """An RGB fill: a flat colour, low-frequency noise, a gradient, or a patch of a face."""
    import cv2

    kind = rng.integers(4)
    if kind == 0:
        return np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3)).copy()
    if kind == 1:
        cells = int(rng.integers(2, 12))
        noise = rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)
        return cv2.resize(noise, (size, size), interpolation=cv2.INTER_CUBIC)
    if kind == 2:
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        ramp = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        grad = a + (b - a) * ramp
        return np.broadcast_to(grad, (size, size, 3)).astype(np.uint8).copy()
    other = faces[rng.integers(len(faces))]
    scale = rng.uniform(1.0, 3.0)
    patch = cv2.resize(other, None, fx=scale, fy=scale)
    y, x = rng.integers(0, patch.shape[0] - size + 1), rng.integers(0, patch.shape[1] - size + 1)
    return patch[y:y + size, x:x + size].copy()


def _shape(rng: np.random.Generator, size: int) -> np.ndarray:
    """A binary occluder shape: a polygon, a blob, or a hand/microphone-like bar from an edge."""
    import cv2

    alpha = np.zeros((size, size), np.uint8)
    kind = rng.integers(3)
    if kind == 0:
        centre = rng.uniform(0.2, 0.8, 2) * size
        n = int(rng.integers(3, 9))
        angles = np.sort(rng.uniform(0, 2 * math.pi, n))
        radii = rng.uniform(0.1, 0.35, n) * size
        pts = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radii[:, None]
        cv2.fillPoly(alpha, [pts.astype(np.int32)], 255)
    elif kind == 1:
        centre = tuple(int(v) for v in rng.uniform(0.15, 0.85, 2) * size)
        axes = tuple(int(v) for v in rng.uniform(0.08, 0.3, 2) * size)
        cv2.ellipse(alpha, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1)
    else:  # an elongated bar entering from an edge: a finger, a hand, a microphone
        side = rng.integers(4)
        t = rng.uniform(0.1, 0.9) * size
        start = [(t, size), (t, 0), (0, t), (size, t)][side]
        angle = math.atan2(size / 2 - start[1], size / 2 - start[0]) + rng.uniform(-0.6, 0.6)
        length = rng.uniform(0.3, 0.8) * size
        end = (start[0] + math.cos(angle) * length, start[1] + math.sin(angle) * length)
        width = int(rng.uniform(0.06, 0.22) * size)
        cv2.line(alpha, tuple(int(v) for v in start), tuple(int(v) for v in end), 255,
                 max(2, width))
        cv2.circle(alpha, tuple(int(v) for v in end), max(1, width // 2), 255, -1)
    return alpha


def paste(face: np.ndarray, fill: np.ndarray, shape: np.ndarray,
          rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``fill`` pasted on ``face`` where ``shape`` (uint8 0/255) is set, with a soft edge and a
    shadow on the face around it. Returns the image and the occluder's coverage (float 0..1)."""
    import cv2

    rng = rng or np.random.default_rng()
    alpha = shape.astype(np.float32) / 255.0
    edge = float(rng.uniform(0.3, 1.5))
    soft = cv2.GaussianBlur(alpha, (0, 0), edge)
    shift = rng.integers(-4, 5, 2)
    shadow = cv2.GaussianBlur(np.roll(alpha, tuple(shift), axis=(0, 1)), (0, 0), 3.0)
    out = face.astype(np.float32) * (1.0 - rng.uniform(0.1, 0.4) * shadow[..., None])
    out = out * (1.0 - soft[..., None]) + fill.astype(np.float32) * soft[..., None]
    return np.clip(out + 0.5, 0, 255).astype(np.uint8), soft


def occluded_batch(faces: np.ndarray, masks: np.ndarray, rng: np.random.Generator,
                   count: int) -> tuple[np.ndarray, np.ndarray]:
    """``count`` training pairs: faces with synthetic occluders, and the visible face (the
    landmark mask minus the occluder), both at the faces' size; flips and shifts for variety."""
    import cv2

    size = faces.shape[1]
    xs = np.empty((count, size, size, 3), np.uint8)
    ys = np.empty((count, size, size, 1), np.uint8)
    for i in range(count):
        k = rng.integers(len(faces))
        face, mask = faces[k], masks[k]
        if rng.random() < 0.5:
            face, mask = face[:, ::-1], mask[:, ::-1]
        dx, dy, angle = rng.uniform(-0.05, 0.05, 2) * size, rng.uniform(-0.05, 0.05) * size, \
            rng.uniform(-10, 10)
        m = cv2.getRotationMatrix2D((size / 2, size / 2), float(angle), float(rng.uniform(0.95, 1.05)))
        m[:, 2] += (dx[0], dy)
        face = cv2.warpAffine(np.ascontiguousarray(face), m, (size, size),
                              borderMode=cv2.BORDER_REFLECT)
        mask = cv2.warpAffine(np.ascontiguousarray(mask), m, (size, size))
        covered = np.zeros((size, size), np.float32)
        if rng.random() >= CLEAN_SHARE:
            for _ in range(int(rng.integers(1, 3))):
                face, soft = paste(face, _texture(rng, size, faces), _shape(rng, size), rng)
                covered = np.maximum(covered, soft)
        xs[i] = face
        ys[i, ..., 0] = ((mask > 127) & (covered < 0.5)).astype(np.uint8)
    return xs, ys


# ---------------------------------------------------------------------------------------------
# the network

def build_unet(size: int = SIZE, width: int = 12):
    """A small U-Net (3 levels, ``width`` channels at the top): face crop in, visible-face
    probability out."""
    quiet.import_tensorflow()
    import keras
    from keras import layers

    def block(x, ch: int):
        for _ in range(2):
            x = layers.Conv2D(ch, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        return x

    inp = keras.Input((size, size, 3), dtype="uint8")
    x = layers.Rescaling(1.0 / 255.0)(inp)
    skips = []
    for level in range(3):
        x = block(x, width * 2 ** level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = block(x, width * 8)
    for level in reversed(range(3)):
        x = layers.UpSampling2D()(x)
        x = layers.Concatenate()([x, skips[level]])
        x = block(x, width * 2 ** level)
    out = layers.Conv2D(1, 1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inp, out, name="occlusion_unet")


def _dice_bce(y_true, y_pred):
    import tensorflow as tf

    y_true = tf.cast(y_true, tf.float32)
    bce = tf.reduce_mean(tf.keras.losses.binary_crossentropy(y_true, y_pred))
    inter = tf.reduce_sum(y_true * y_pred, axis=[1, 2, 3])
    union = tf.reduce_sum(y_true + y_pred, axis=[1, 2, 3])
    return bce + tf.reduce_mean(1.0 - (2.0 * inter + 1.0) / (union + 1.0))


@dataclass
class OcclusionResult:
    weights: Path
    steps: int
    seconds: float
    loss: float


def face_crops(dirs: Sequence[str | Path], size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """The approved faces of ``dirs`` at full coverage and ``size`` px, with their landmark
    masks (uint8 0/255)."""
    from .dataset import load_faces

    faces = load_faces(dirs, size, 1.0, MASK, "occlusion", min_faces=1)
    return faces.images, faces.maps[..., 0]


def train_occlusion(dirs: Sequence[str | Path], weights: str | Path, *, steps: int = 1200,
                    batch_size: int = 16, size: int = SIZE, seed: int = 0,
                    progress: Callable[[int, int, float], None] | None = None) -> OcclusionResult:
    """Train the occlusion network on the faces in ``dirs`` and write its weights (Keras
    ``.weights.h5``, never a pickle) to ``weights``."""
    import tensorflow as tf

    from .adam import Adam

    started = time.perf_counter()
    faces, masks = face_crops(dirs, size)
    rng = np.random.default_rng(seed)
    tf.keras.utils.set_random_seed(seed)
    net = build_unet(size)
    optimizer = Adam(1e-3)

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = _dice_bce(y, net(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, net.trainable_variables),
                                      net.trainable_variables))
        return loss

    loss = float("nan")
    for i in range(1, steps + 1):
        if i == int(steps * 0.7):
            optimizer.learning_rate.assign(3e-4)
        x, y = occluded_batch(faces, masks, rng, batch_size)
        loss = float(step(tf.constant(x), tf.constant(y)))
        if progress:
            progress(i, steps, loss)
    weights = Path(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_name(f".{weights.name}.tmp.weights.h5")
    net.save_weights(str(tmp))
    tmp.replace(weights)
    seconds = time.perf_counter() - started
    log.info("occlusion net for %s: %d steps in %.0f s, loss %.4f", weights.parent, steps,
             seconds, loss)
    return OcclusionResult(weights, steps, seconds, loss)


class OcclusionNet:
    """Trained weights, ready to say which pixels of face crops are the person's face."""

    def __init__(self, weights: str | Path, size: int = SIZE) -> None:
        self.size = size
        self.net = build_unet(size)
        self.net.load_weights(str(weights))

    def visible(self, faces: np.ndarray) -> np.ndarray:
        """N x S x S x 3 uint8 face crops (full coverage, any S) -> N x S x S float32 in 0..1."""
        import cv2

        faces = np.asarray(faces)
        n, s = len(faces), faces.shape[1]
        small = faces if s == self.size else np.stack(
            [cv2.resize(f, (self.size, self.size), interpolation=cv2.INTER_AREA) for f in faces])
        prob = self.net.predict_on_batch(small)[..., 0] if n else np.zeros((0, self.size,
                                                                            self.size))
        if s != self.size:
            prob = np.stack([cv2.resize(p, (s, s), interpolation=cv2.INTER_LINEAR) for p in prob])
        return prob.astype(np.float32)


def weights_for(dirs: Sequence[str | Path]) -> Path:
    """Where a person's weights live: beside their approved sets (``approved/<person>/``),
    that is in the folder above the first face folder."""
    return Path(dirs[0]).resolve().parent / WEIGHTS_NAME


def occlude_maps(faces, full: np.ndarray, dirs: Sequence[str | Path], coverage: float,
                 weights: str | Path | None = None) -> None:
    """Cut what covers each face out of ``faces.maps[..., 0]`` (a training FaceSet at
    ``coverage``), with the person's network: a hand on a training face is not learned as
    face. The network sees ``full``, the same faces as whole aligned crops at :data:`SIZE`,
    as it was trained."""
    import cv2

    from .align import sub_crop_matrix
    from .errors import InputError

    weights = Path(weights) if weights else weights_for(dirs)
    if not weights.is_file():
        raise InputError(weights, "no occlusion mask for these faces yet (train it with "
                                  "facedrop mask train)")
    net = OcclusionNet(weights)
    size = faces.size
    to_crop = sub_crop_matrix(SIZE, coverage, size)
    for start in range(0, len(full), 64):
        prob = net.visible(full[start:start + 64])
        for i, p in enumerate(prob, start):
            seen = cv2.warpAffine(p, to_crop, (size, size), flags=cv2.INTER_LINEAR) > 0.5
            faces.maps[i, ..., 0] = np.where(seen, faces.maps[i, ..., 0], 0)


def visible_face(net: OcclusionNet, faces: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """The occlusion mask: the landmark mask (uint8 0/255) where the network sees the face;
    N x S x S bool."""
    return (net.visible(faces) > 0.5) & (masks > 127)


def apply_occlusion(dirs: Sequence[str | Path], weights: str | Path, out_dir: str | Path,
                    size: int | None = None) -> list[Path]:
    """Write ``<face>_visible.png`` (white: the person's visible face) for every face in
    ``dirs``, for review, at ``size`` px (default: the faces' own size, at most 256)."""
    import cv2

    from .dataset import face_files, load_faces
    from .faceimage import read_face

    if size is None:
        files = face_files(dirs)
        size = min(256, read_face(files[0])[0].shape[0]) if files else SIZE
    faces = load_faces(dirs, size, 1.0, MASK, "occlusion", min_faces=1)
    net = OcclusionNet(weights)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for start in range(0, len(faces), 32):
        chunk = slice(start, start + 32)
        shown = visible_face(net, faces.images[chunk], faces.maps[chunk, ..., 0])
        for path, mask in zip(faces.paths[chunk], shown):
            target = out_dir / f"{path.stem}_visible.png"
            cv2.imwrite(str(target), mask.astype(np.uint8) * 255)
            written.append(target)
    return written
