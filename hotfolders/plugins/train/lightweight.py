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
    x = conv(inputs, 32)
    x = conv(x, 64)
    x = conv(x, 128)
    x = conv(x, 256)                       # 4x4x256
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(BOTTLENECK)(x)  # the narrow code: expression and pose, not texture
    x = keras.layers.Dense(4 * 4 * 256)(x)
    x = keras.layers.Reshape((4, 4, 256))(x)
    x = upscale(x, 128)                    # 8x8x128
    return keras.Model(inputs, x, name="encoder")


def build_decoder(name: str) -> keras.Model:
    # about 0.25 GFLOP per face forward: ~4x less than `original`'s decoder widths
    inputs = keras.Input((8, 8, 128), name="code")
    x = upscale(inputs, 64)                # 16
    x = upscale(x, 32)                     # 32
    x = upscale(x, 16)                     # 64
    return keras.Model(inputs, to_rgb(x, f"{name}_rgb"), name=name)
