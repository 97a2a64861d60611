"""Building blocks shared by the trainer plugins (Keras 3)."""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="facedrop")
class PixelShuffle(keras.layers.Layer):
    """Depth-to-space upscale by 2: (H, W, 4C) -> (2H, 2W, C), no checkerboard artefacts."""

    def call(self, inputs):
        return tf.nn.depth_to_space(inputs, 2)

    def compute_output_shape(self, shape):
        return (shape[0], None if shape[1] is None else shape[1] * 2,
                None if shape[2] is None else shape[2] * 2, shape[3] // 4)


def conv(x, filters: int, kernel: int = 5, strides: int = 2, name: str | None = None):
    x = keras.layers.Conv2D(filters, kernel, strides=strides, padding="same", name=name)(x)
    return keras.layers.LeakyReLU(0.1)(x)


def upscale(x, filters: int, name: str | None = None):
    x = keras.layers.Conv2D(filters * 4, 3, padding="same", name=name)(x)
    x = keras.layers.LeakyReLU(0.1)(x)
    return PixelShuffle()(x)


def residual(x, filters: int):
    y = keras.layers.Conv2D(filters, 3, padding="same")(x)
    y = keras.layers.LeakyReLU(0.2)(y)
    y = keras.layers.Conv2D(filters, 3, padding="same")(y)
    y = keras.layers.Add()([x, y])
    return keras.layers.LeakyReLU(0.2)(y)


def to_rgb(x, name: str):
    # float32 output whatever the mixed-precision policy, so losses are computed in float32
    return keras.layers.Conv2D(3, 5, padding="same", activation="sigmoid", dtype="float32",
                               name=name)(x)
