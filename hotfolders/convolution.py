"""How each small convolution of a trainer runs on this machine, chosen by measurement.

oneDNN's convolution kernels are fast on wide images but slow where the output is a few
pixels across and the channels are many: ``original``'s last encoder convolution (8x8 -> 4x4,
512 -> 1024 filters) and its 4x4 upscale (1024 -> 2048) reached 28-52 % of the matmul peak
forwards and backwards on a 2-core AVX-512 CPU. The same convolution written as explicit
patches (im2col) times the kernel is one large matrix multiply: 1.4-2.5x faster there, and
slower on other shapes and other machines. So nothing is assumed: :func:`tune` times both
forms of every candidate layer, forward and backward at the training batch size in the
layer's own precision, and keeps the faster. Either form computes the same convolution from
the same weights; saved models do not know which ran.
"""
from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger(__name__)

MAX_OUTPUT_PIXELS = 16   # candidates: outputs of at most 4x4 (bigger ones: oneDNN won, 0.5-0.9x)
MIN_GAIN = 1.1           # the matrix multiply must be this much faster to be chosen
REPEATS = 3              # timed rounds per form (the fastest counts; other processes only slow)

_cache: dict[tuple, float] = {}  # (shape, dtype, batch) -> speed-up measured in this process


def conv_as_matmul(inputs, kernel, strides: tuple[int, int]):
    """A "same"-padded 2-D convolution (NHWC, dilation 1) as patches x kernel.

    The patches are built from strided slices of the padded input, in the kernel's own
    (row, column, channel) order, so ``kernel`` reshapes to the multiply's right-hand side
    without copying, and the gradients of the slices are cheap pads.
    """
    import tensorflow as tf

    kh, kw, cin, cout = kernel.shape
    sh, sw = strides
    height, width = inputs.shape[1], inputs.shape[2]
    out_h, out_w = -(-height // sh), -(-width // sw)
    pad_h = max((out_h - 1) * sh + kh - height, 0)
    pad_w = max((out_w - 1) * sw + kw - width, 0)
    padded = tf.pad(inputs, [[0, 0], [pad_h // 2, pad_h - pad_h // 2],
                             [pad_w // 2, pad_w - pad_w // 2], [0, 0]])
    patches = tf.concat([padded[:, dy:dy + (out_h - 1) * sh + 1:sh,
                                dx:dx + (out_w - 1) * sw + 1:sw, :]
                         for dy in range(kh) for dx in range(kw)], axis=-1)
    product = tf.matmul(tf.reshape(patches, [-1, kh * kw * cin]),
                        tf.reshape(kernel, [kh * kw * cin, cout]))
    return tf.reshape(product, [-1, out_h, out_w, cout])


def candidates(model) -> list:
    """The layers of a model that may run as a matrix multiply: facedrop's Conv2D with a
    small output ("same" padding, no dilation or groups, channels last)."""
    from .plugins.train.layers import Conv2D

    found = []
    for layer in model.layers:
        if not isinstance(layer, Conv2D) or layer.padding != "same" or layer.groups != 1 or (
                tuple(layer.dilation_rate) != (1, 1) or layer.data_format != "channels_last"):
            continue
        _, out_h, out_w, _ = layer.output.shape
        if out_h is not None and out_w is not None and out_h * out_w <= MAX_OUTPUT_PIXELS:
            found.append(layer)
    return found


def label(model, layer) -> str:
    """``encoder 8x8->4x4 512->1024``: a layer by its place and shape (Keras's own names
    number every layer a process ever built)."""
    _, h, w, cin = layer.input.shape
    _, oh, ow, cout = layer.output.shape
    return f"{model.name} {h}x{w}->{oh}x{ow} {cin}->{cout}"


def _speedup(layer, batch_size: int) -> float:
    """How many times faster the matrix multiply runs a layer's forward and backward pass."""
    import tensorflow as tf

    dtype = tf.as_dtype(layer.compute_dtype)
    in_shape = (batch_size, *layer.input.shape[1:])
    out_shape = (batch_size, *layer.output.shape[1:])
    key = (in_shape, tuple(layer.kernel.shape), tuple(layer.strides), dtype.name)
    if key in _cache:
        return _cache[key]
    x = tf.cast(tf.random.stateless_normal(in_shape, (1, 2)), dtype)
    kernel = tf.cast(tf.random.stateless_normal(layer.kernel.shape, (3, 4)) * 0.05, dtype)
    dy = tf.cast(tf.random.stateless_normal(out_shape, (5, 6)), dtype)
    strides = tuple(layer.strides)

    def timed(form):
        @tf.function
        def pass_(x, kernel, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = form(x, kernel)
            return tape.gradient(y, [x, kernel], output_gradients=dy)

        return lambda: [t.numpy() for t in pass_(x, kernel, dy)]

    forms = {"oneDNN": timed(lambda x, k: tf.nn.conv2d(x, k, strides, "SAME")),
             "matmul": timed(lambda x, k: conv_as_matmul(x, k, strides))}
    best = {name: float("inf") for name in forms}
    for run in forms.values():
        run()  # traced, kernels made
    for _ in range(REPEATS):  # interleaved, so a change of load hits both alike
        for name, run in forms.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    _cache[key] = best["oneDNN"] / best["matmul"]
    return _cache[key]


def tune(models, batch_size: int) -> list[dict[str, Any]]:
    """Choose the faster form for each candidate layer of ``models`` (call before tracing a
    step); returns what was measured, one row per candidate."""
    rows = []
    for model in models:
        for layer in candidates(model):
            gain = _speedup(layer, batch_size)
            layer.as_matmul = gain >= MIN_GAIN
            rows.append({"layer": label(model, layer), "speedup": round(gain, 2),
                         "matmul": layer.as_matmul})
            log.debug("%s: matrix multiply %.2fx oneDNN's speed, %s", rows[-1]["layer"], gain,
                      "chosen" if layer.as_matmul else "not chosen")
    return rows


def describe(rows: list[dict[str, Any]]) -> str:
    """One line for the training log: which layers run as a matrix multiply, and the gain."""
    chosen = [r for r in rows if r["matmul"]]
    if not chosen:
        return "all convolutions run as oneDNN convolutions"
    return "as a matrix multiply (measured): " + ", ".join(
        f"{r['layer']} {r['speedup']:.2f}x" for r in chosen)
