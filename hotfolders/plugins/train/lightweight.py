"""``lightweight``: 64 px in and out, small enough to train for real on a 2-core CPU.

The classic layout at reduced width: four strided 5x5 convolutions (32->256 filters), a dense
bottleneck of 256, and decoders that upscale 96->48->24 filters with pixel shuffles. About
0.36 GFLOP per face forward (the ``original`` layout needs ~2.6), which is what lets a small
CPU reach ~60 faces/s at batch 16; the narrow code still forces the encoder to carry pose and
expression rather than texture.
"""
from __future__ import annotations

import keras

from .layers import conv, to_rgb, upscale

INPUT_SIZE = 64
OUTPUT_SIZE = 64
DESCRIPTION = "64 px, small and fast; trains on a CPU"
# Adam's step: 6x faceswap's 5e-5. bench/quality.py on a 2-core CPU, 5e-5 -> 1.5e-4 after 60
# min: identity margin 38% -> 57% of a real B photo's, landmark error 14.1% -> 8.7%, fewer dark
# blotches (docs/pictures/quality-learning-rate-60min.jpg); 1.5e-4 -> 3e-4 after 30 min:
# margin 53% -> 63%, landmark error 9.1% -> 7.4% (pasting B's real face scores 6.8%), pose
# points 7.4% -> 5.4% (docs/pictures/quality-learning-rate-30min.jpg). Lowering the rate
# after 30 minutes made it worse, not sharper; a loss that diverges resumes at half the rate.
LEARNING_RATE = 3e-4
BOTTLENECK = 256


def build_encoder() -> keras.Model:
    inputs = keras.Input((INPUT_SIZE, INPUT_SIZE, 3), name="face")
    x = conv(inputs, 32)                   # 32x32
    x = conv(x, 64)                        # 16x16
    x = conv(x, 128)                       # 8x8
    x = conv(x, 256)                       # 4x4x256
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(BOTTLENECK)(x)  # the narrow code: expression and pose, not texture
    x = keras.layers.Dense(4 * 4 * 256)(x)
    x = keras.layers.Reshape((4, 4, 256))(x)
    x = upscale(x, 128)                    # 8x8x128
    return keras.Model(inputs, x, name="encoder")


def build_decoder(name: str) -> keras.Model:
    inputs = keras.Input((8, 8, 128), name="code")
    x = upscale(inputs, 96)                # 16
    x = upscale(x, 48)                     # 32
    x = upscale(x, 24)                     # 64
    return keras.Model(inputs, to_rgb(x, f"{name}_rgb"), name=name)
