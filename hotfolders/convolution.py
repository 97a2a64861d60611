"""How each convolution of a trainer that oneDNN runs poorly runs on this machine, chosen by
measurement.

oneDNN's convolution kernels are fast on wide images with many filters, and slow at the two
ends of a trainer: where the output is a few pixels across and the channels are many
(``original``'s last encoder convolution, 8x8 -> 4x4, 512 -> 1024 filters, and its 4x4 upscale
reached 28-52 % of the matmul peak on a 2-core AVX-512 CPU), and where a wide image ends in
three filters (the 5x5 ``to_rgb`` of every decoder, there 16 % of ``lightweight``'s step for
4 % of its FLOPs). Each has another way to the same numbers:

- ``matmul``: explicit patches (im2col) times the kernel, one large matrix multiply;
- ``dw-matmul``: oneDNN's forward pass and input gradient, the kernel's gradient as patches
  times the output gradient (oneDNN's bfloat16 weight gradient is the slow part at 8x8 and
  smaller outputs);
- ``s2d``: a stride-1 convolution on a space-to-depth view of the image, whose 3x3 kernel
  gathers the 5x5 one so that each output pixel of a 2x2 block is one of 4x the filters:
  fewer, wider pixels that oneDNN vectorises well.

Each can be faster or slower depending on the shape and the machine, so nothing is assumed:
:func:`tune` times oneDNN and every form that applies to a layer, forward and backward at the
training batch size in the layer's own precision, and keeps the fastest. All forms compute the
same convolution from the same weights; saved models do not know which ran.
"""
from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any, Callable

import numpy as np

log = logging.getLogger(__name__)

ONEDNN = "oneDNN"
MAX_OUTPUT_PIXELS = 16   # matmul: outputs of at most 4x4 (bigger ones: oneDNN won, 0.5-0.9x)
MAX_DW_OUTPUT_PIXELS = 64  # dw-matmul: at most 8x8 (1.5-2.9x there; 16x16: 0.8x, 32x32: 0.55x)
MAX_S2D_FILTERS = 4      # s2d: layers this narrow (to_rgb); wider ones oneDNN runs well
MIN_GAIN = 1.05          # another form must be this much faster than oneDNN to be chosen
REPEATS = 5              # timed rounds per form (the fastest counts; other processes only slow),
ROUND_SECONDS = 0.03     # each of enough passes to last this long (a single 5 ms pass is noisy)

_cache: dict[tuple, dict[str, float]] = {}  # shapes, dtype, forms -> speed-up of each form


def _patches(inputs, kh: int, kw: int, stride: int):
    """The "same"-padded patches of a convolution (NHWC, dilation 1, a square stride): one row
    of ``kh * kw * cin`` values per output pixel, in a kernel's own (row, column, channel)
    order, so a kernel reshapes onto them without copying.

    They are plain slices of the padded input (of its space-to-depth view when strided: tap
    (dy, dx) of stride s is block (dy % s, dx % s) moved by (dy // s, dx // s)). The gradient
    of a plain slice is a pad; that of a strided slice is TensorFlow's ``StridedSliceGrad``,
    which costs 3x a pad in bfloat16 (9 of them were 11 % of ``lightweight``'s step on a 2-core
    AMX Xeon).
    """
    import tensorflow as tf

    cin = inputs.shape[-1]
    height, width = inputs.shape[1], inputs.shape[2]
    s = stride
    out_h, out_w = -(-height // s), -(-width // s)
    pad_h = max((out_h - 1) * s + kh - height, 0)
    pad_w = max((out_w - 1) * s + kw - width, 0)
    # and to whole blocks of the stride at the bottom and right (never read by a tap)
    padded = tf.pad(inputs, [[0, 0], [pad_h // 2, pad_h - pad_h // 2 - (height + pad_h) % -s],
                             [pad_w // 2, pad_w - pad_w // 2 - (width + pad_w) % -s], [0, 0]])
    if s > 1:
        padded = tf.nn.space_to_depth(padded, s)
    patches = tf.concat([tf.slice(padded, [0, dy // s, dx // s, ((dy % s) * s + dx % s) * cin],
                                  [-1, out_h, out_w, cin])
                         for dy in range(kh) for dx in range(kw)], axis=-1)
    return tf.reshape(patches, [-1, kh * kw * cin]), (out_h, out_w)


def _square(strides: tuple[int, int]) -> int:
    if strides[0] != strides[1]:
        raise ValueError(f"this form is for square strides, not {tuple(strides)}")
    return strides[0]


def conv_as_matmul(inputs, kernel, strides: tuple[int, int]):
    """A "same"-padded 2-D convolution (NHWC, dilation 1, a square stride) as patches x kernel,
    one large matrix multiply."""
    import tensorflow as tf

    kh, kw, cin, cout = kernel.shape
    patches, (out_h, out_w) = _patches(inputs, kh, kw, _square(strides))
    product = tf.matmul(patches, tf.reshape(kernel, [kh * kw * cin, cout]))
    return tf.reshape(product, [-1, out_h, out_w, cout])


def conv_weights_by_matmul(inputs, kernel, strides: tuple[int, int]):
    """oneDNN's convolution and input gradient, with the kernel's gradient as one matrix
    multiply, patches transposed x output gradient: where the output is a few pixels across,
    oneDNN's bfloat16 weight-gradient kernel is slow (146 GFLOP/s at 8x8 -> 4x4, 128 -> 256 on
    a 2-core AMX Xeon, an eighth of the matmul peak), while its forward pass is not."""
    import tensorflow as tf

    kh, kw, cin, cout = kernel.shape
    s = _square(strides)

    @tf.custom_gradient
    def convolve(x, k):
        def gradient(dy):
            dx = tf.raw_ops.Conv2DBackpropInput(input_sizes=tf.shape(x), filter=k,
                                                out_backprop=dy, strides=[1, s, s, 1],
                                                padding="SAME")
            patches, _ = _patches(x, kh, kw, s)
            dk = tf.matmul(patches, tf.reshape(dy, [-1, cout]), transpose_a=True)
            return dx, tf.reshape(dk, [kh, kw, cin, cout])

        return tf.nn.conv2d(x, k, s, "SAME"), gradient

    # a variable's value, read where the tape sees it (a custom gradient may not hold variables)
    return convolve(inputs, tf.convert_to_tensor(kernel))


@lru_cache(maxsize=None)
def _s2d_taps(size: int) -> np.ndarray:
    """For each (u, v) of the 3x3 space-to-depth kernel, input offset (r, s) in its 2x2 block
    and output offset (a, b): the index of the original kernel's tap, or ``size**2`` (zero)."""
    half = size // 2
    taps = np.full((3, 3, 2, 2, 2, 2), size * size, np.int32)
    for u, v, r, s, a, b in np.ndindex(taps.shape):
        dy, dx = 2 * (u - 1) + r - a + half, 2 * (v - 1) + s - b + half
        if 0 <= dy < size and 0 <= dx < size:
            taps[u, v, r, s, a, b] = dy * size + dx
    return taps


def conv_space_to_depth(inputs, kernel, strides: tuple[int, int] = (1, 1)):
    """A "same"-padded stride-1 convolution with an odd kernel of at most 5x5 on an image of
    even height and width, as a 3x3 convolution of its 2x2 space-to-depth view.

    Output pixel (2i+a, 2j+b) reads input pixels 2i+a-2 .. 2i+a+2, which lie in blocks i-1 ..
    i+1: so a 3x3 kernel over blocks, from 4x the channels to 4x the filters, holds every tap,
    gathered from the original kernel (zero where a block's pixel is out of its reach).
    """
    import tensorflow as tf

    if tuple(strides) != (1, 1):
        raise ValueError(f"the space-to-depth form is for stride-1 convolutions, not {strides}")
    size, _, cin, cout = kernel.shape
    taps = tf.concat([tf.reshape(kernel, [size * size, cin, cout]),
                      tf.zeros([1, cin, cout], kernel.dtype)], axis=0)
    blocks = tf.gather(taps, _s2d_taps(size))                # u v r s a b cin cout
    blocks = tf.transpose(blocks, [0, 1, 2, 3, 6, 4, 5, 7])  # u v (r s cin) (a b cout)
    blocks = tf.reshape(blocks, [3, 3, 4 * cin, 4 * cout])
    blocks_out = tf.nn.conv2d(tf.nn.space_to_depth(inputs, 2), blocks, 1, "SAME")
    return tf.nn.depth_to_space(blocks_out, 2)


def _onednn(inputs, kernel, strides: tuple[int, int]):
    import tensorflow as tf

    return tf.nn.conv2d(inputs, kernel, strides, "SAME")


FORMS: dict[str, Callable] = {ONEDNN: _onednn, "matmul": conv_as_matmul,
                              "dw-matmul": conv_weights_by_matmul, "s2d": conv_space_to_depth}


def forms(layer) -> tuple[str, ...]:
    """The forms other than oneDNN's that can compute ``layer`` (facedrop's Conv2D with "same"
    padding, no dilation or groups, channels last), and where they may win."""
    from .plugins.train.layers import Conv2D

    if not isinstance(layer, Conv2D) or layer.padding != "same" or layer.groups != 1 or (
            tuple(layer.dilation_rate) != (1, 1) or layer.data_format != "channels_last"):
        return ()
    _, height, width, _ = layer.input.shape
    _, out_h, out_w, filters = layer.output.shape
    found = []
    if layer.strides[0] == layer.strides[1]:
        if out_h * out_w <= MAX_OUTPUT_PIXELS:
            found.append("matmul")
        if out_h * out_w <= MAX_DW_OUTPUT_PIXELS:
            found.append("dw-matmul")
    size = layer.kernel_size
    if (tuple(layer.strides) == (1, 1) and size[0] == size[1] and size[0] % 2 == 1
            and size[0] <= 5 and height % 2 == 0 and width % 2 == 0
            and filters <= MAX_S2D_FILTERS):
        found.append("s2d")
    return tuple(found)


def candidates(model) -> list:
    """The layers of a model that another form may run faster."""
    return [layer for layer in model.layers if forms(layer)]


def label(model, layer) -> str:
    """``encoder 8x8->4x4 512->1024``: a layer by its place and shape (Keras's own names
    number every layer a process ever built)."""
    _, h, w, cin = layer.input.shape
    _, oh, ow, cout = layer.output.shape
    return f"{model.name} {h}x{w}->{oh}x{ow} {cin}->{cout}"


def _speedups(layer, batch_size: int) -> dict[str, float]:
    """How many times faster than oneDNN each other form runs a layer's forward and backward
    pass, at ``batch_size`` in the layer's precision."""
    import tensorflow as tf

    dtype = tf.as_dtype(layer.compute_dtype)
    in_shape = (batch_size, *layer.input.shape[1:])
    out_shape = (batch_size, *layer.output.shape[1:])
    strides = tuple(layer.strides)
    names = (ONEDNN, *forms(layer))
    key = (in_shape, tuple(layer.kernel.shape), strides, dtype.name, names)
    if key in _cache:
        return _cache[key]
    x = tf.cast(tf.random.stateless_normal(in_shape, (1, 2)), dtype)
    kernel = tf.cast(tf.random.stateless_normal(layer.kernel.shape, (3, 4)) * 0.05, dtype)
    dy = tf.cast(tf.random.stateless_normal(out_shape, (5, 6)), dtype)

    def timed(form):
        @tf.function
        def pass_(x, kernel, dy):
            with tf.GradientTape() as tape:
                tape.watch([x, kernel])
                y = form(x, kernel, strides)
            return tape.gradient(y, [x, kernel], output_gradients=dy)

        return lambda: [t.numpy() for t in pass_(x, kernel, dy)]

    runs = {name: timed(FORMS[name]) for name in names}
    for run in runs.values():
        run()  # traced, kernels made
    start = time.perf_counter()
    runs[ONEDNN]()
    calls = max(1, round(ROUND_SECONDS / (time.perf_counter() - start)))
    best = dict.fromkeys(names, float("inf"))
    for _ in range(REPEATS):  # interleaved, so a change of load hits all alike
        for name, run in runs.items():
            start = time.perf_counter()
            for _ in range(calls):
                run()
            best[name] = min(best[name], time.perf_counter() - start)
    _cache[key] = {name: best[ONEDNN] / best[name] for name in names[1:]}
    return _cache[key]


def tune(models, batch_size: int) -> list[dict[str, Any]]:
    """Run each candidate layer of ``models`` in the form measured fastest (call before tracing
    a step); returns one row per candidate: its label, the form chosen and every speed-up."""
    rows = []
    for model in models:
        for layer in candidates(model):
            # decided on the speed-ups as recorded, so a log that reads 1.05x agrees with it
            gains = {name: round(g, 2) for name, g in _speedups(layer, batch_size).items()}
            fastest = max(gains, key=gains.get)
            layer.form = fastest if gains[fastest] >= MIN_GAIN else ONEDNN
            rows.append({"layer": label(model, layer), "form": layer.form, "speedups": gains})
            log.debug("%s: %s, runs as %s", rows[-1]["layer"], ", ".join(
                f"{name} {g:.2f}x oneDNN's speed" for name, g in gains.items()), layer.form)
    return rows


def describe(rows: list[dict[str, Any]]) -> str:
    """One line for the training log: which layers run in another form, and the gain."""
    chosen = [r for r in rows if r["form"] != ONEDNN]
    if not chosen:
        return "all run as oneDNN convolutions"
    return "measured faster in another form: " + ", ".join(
        f"{r['layer']} as {r['form']} {r['speedups'][r['form']]:.2f}x" for r in chosen)
