"""``original``: the classic deepfakes layout users know (64 px in and out).

Encoder: 5x5 stride-2 convolutions 128->256->512->1024, dense 1024, dense 4*4*1024, reshape,
pixel-shuffle upscale to 8x8x512. Each decoder upscales 256->128->64 and ends in a 5x5
convolution to 3 channels.
"""
from __future__ import annotations

import keras

from .layers import conv, to_rgb, upscale

INPUT_SIZE = 64
OUTPUT_SIZE = 64
DESCRIPTION = "64 px, the classic deepfakes model"
LEARNING_RATE = 5e-5  # faceswap's (the layout users know from there; not re-measured here)


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
    x = upscale(inputs, 256)
    x = upscale(x, 128)
    x = upscale(x, 64)
    return keras.Model(inputs, to_rgb(x, f"{name}_rgb"), name=name)
