"""``dfaker``: 64 px in, 128 px out, residual blocks in the decoder; meant for GPUs."""
from __future__ import annotations

import keras

from .layers import conv, residual, to_rgb, upscale

INPUT_SIZE = 64
OUTPUT_SIZE = 128
DESCRIPTION = "64 px in, 128 px out with residual decoder; for GPUs"


def build_encoder() -> keras.Model:
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="face")
    x = conv(inputs, 128)
    x = conv(x, 256)
    x = conv(x, 512)
    x = conv(x, 1024)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(1024)(x)
    x = keras.layers.Dense(4 * 4 * 1024)(x)
    x = keras.layers.Reshape((4, 4, 1024))(x)
    x = upscale(x, 512)
    return keras.Model(inputs, x, name="encoder")


def build_decoder(name: str) -> keras.Model:
    inputs = keras.Input((8, 8, 512), name="code")
    x = upscale(inputs, 512)   # 16
    x = residual(x, 512)
    x = upscale(x, 256)        # 32
    x = residual(x, 256)
    x = upscale(x, 128)        # 64
    x = residual(x, 128)
    x = upscale(x, 64)         # 128
    return keras.Model(inputs, to_rgb(x, f"{name}_rgb"), name=name)
