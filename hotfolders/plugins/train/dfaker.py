"""``dfaker``: 64 px in, 128 px out, residual blocks in the decoder; meant for GPUs.

The encoder is ``original``'s; only the decoder differs (twice the output size).
"""
from __future__ import annotations

import keras

from .layers import residual, to_rgb, upscale
from .original import build_encoder  # noqa: F401  (the same encoder: 64 px in, 8x8x512 code)

INPUT_SIZE = 64
OUTPUT_SIZE = 128
DESCRIPTION = "64 px in, 128 px out with residual decoder; for GPUs"
LEARNING_RATE = 5e-5  # faceswap's (not re-measured here)


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
