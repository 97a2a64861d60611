"""Building blocks shared by the trainer plugins (Keras 3)."""
from __future__ import annotations

import keras
import tensorflow as tf

from ...convolution import FORMS, ONEDNN


@keras.saving.register_keras_serializable(package="facedrop")
class Conv2D(keras.layers.Conv2D):
    """Keras's Conv2D that can run in another form (a matrix multiply, a space-to-depth
    convolution) where :func:`hotfolders.convolution.tune` measured that faster (same class
    name, so saved weights keep their layer names; the form is never saved)."""

    form = ONEDNN

    def convolution_op(self, inputs, kernel):
        if self.form == ONEDNN:
            return super().convolution_op(inputs, kernel)
        return FORMS[self.form](inputs, kernel, tuple(self.strides))


@keras.saving.register_keras_serializable(package="facedrop")
class PixelShuffle(keras.layers.Layer):
    """Depth-to-space upscale by 2: (H, W, 4C) -> (2H, 2W, C), no checkerboard artefacts."""

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, 2)

    def compute_output_shape(self, shape):
        return (shape[0], None if shape[1] is None else shape[1] * 2,
                None if shape[2] is None else shape[2] * 2, shape[3] // 4)


def _leaky_relu(x, slope: float):
    """Leaky ReLU whose gradient is taken from its output (the sign of the output is the sign
    of the input). TensorFlow's own gradient reads the input, which keeps Grappler from
    fusing the convolution, its bias and the activation into one oneDNN kernel (it logs
    "remapper failed") and runs as a slow element-wise bfloat16 op of its own. The gradient
    is TensorFlow's one-pass ``LeakyReluGrad`` fed the output (three element-wise ops before:
    a training step 2-4 % slower on a 2-core AMX Xeon), in float32 where the tensors are
    bfloat16: its bfloat16 kernel is scalar, 2.8x slower than casting both inputs to float32
    and the result back (4.6 against 1.6 ms at 16x32x32x96 on that Xeon)."""

    @tf.custom_gradient
    def forward(x):
        y = tf.nn.leaky_relu(x, slope)

        def backward(dy):
            if dy.dtype != tf.bfloat16:
                return tf.raw_ops.LeakyReluGrad(gradients=dy, features=y, alpha=slope)
            grad = tf.raw_ops.LeakyReluGrad(gradients=tf.cast(dy, tf.float32),
                                            features=tf.cast(y, tf.float32), alpha=slope)
            return tf.cast(grad, tf.bfloat16)

        return y, backward

    return forward(x)


@keras.saving.register_keras_serializable(package="facedrop")
class LeakyReLU(keras.layers.LeakyReLU):
    """Keras's LeakyReLU with the gradient of :func:`_leaky_relu` (same class name, so saved
    weights keep their layer names)."""

    def call(self, inputs):
        return _leaky_relu(inputs, self.negative_slope)


def conv(x, filters: int, kernel: int = 5, strides: int = 2, name: str | None = None):
    x = Conv2D(filters, kernel, strides=strides, padding="same", name=name)(x)
    return LeakyReLU(0.1)(x)


def upscale(x, filters: int, name: str | None = None):
    x = Conv2D(filters * 4, 3, padding="same", name=name)(x)
    x = LeakyReLU(0.1)(x)
    return PixelShuffle()(x)


def residual(x, filters: int):
    y = Conv2D(filters, 3, padding="same")(x)
    y = LeakyReLU(0.2)(y)
    y = Conv2D(filters, 3, padding="same")(y)
    y = keras.layers.Add()([x, y])
    return LeakyReLU(0.2)(y)


def to_rgb(x, name: str):
    """The face's three colours: a 5x5 convolution in the model's precision, then the sigmoid
    in float32, so that the output, and the losses computed from it, are float32 whatever the
    policy (what Keras's mixed-precision guide does with a model's last layer). In bfloat16
    this convolution ran 2.1x faster than in float32 on a 2-core AMX Xeon (``original``'s:
    2.8x); its rounding moves a training face's pixels by 0.14 of a level of 255 on average,
    at most about 1.3 (conversion runs in float32). Saved weights load either way: the
    activation has none."""
    x = Conv2D(3, 5, padding="same", name=name)(x)
    return keras.layers.Activation("sigmoid", dtype="float32", name=f"{name}_sigmoid")(x)
