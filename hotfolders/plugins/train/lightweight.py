"""``lightweight``: 64 px in and out, small enough to train for real on a 2-core CPU."""
from __future__ import annotations

import keras

from .layers import conv, to_rgb, upscale

INPUT_SIZE = 64
OUTPUT_SIZE = 64
DESCRIPTION = "64 px, small and fast; trains on a CPU"
BOTTLENECK = 256


def build_encoder() -> keras.Model:
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="face")
    x = conv(inputs, 64)
    x = conv(x, 128)
    x = conv(x, 256)
    x = conv(x, 256)                       # 4x4x256
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(BOTTLENECK)(x)  # the narrow code: expression and pose, not texture
    x = keras.layers.Dense(4 * 4 * 256)(x)
    x = keras.layers.Reshape((4, 4, 256))(x)
    x = upscale(x, 256)                    # 8x8x256
    return keras.Model(inputs, x, name="encoder")


def build_decoder(name: str) -> keras.Model:
    inputs = keras.Input((8, 8, 256), name="code")
    x = upscale(inputs, 128)               # 16
    x = upscale(x, 64)                     # 32
    x = upscale(x, 32)                     # 64
    return keras.Model(inputs, to_rgb(x, f"{name}_rgb"), name=name)
