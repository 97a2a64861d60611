"""Sample videos of two real people, built from public-domain photos that ship inside
installed packages: ``astronaut.png`` (scikit-image) and ``grace_hopper.jpg`` (matplotlib).

The demo needs sample input on a machine with no network, and the tests need faces whose
motion is known exactly. A sample video places the photo on a canvas and moves it by a known
similarity transform per frame (rotation, scale, translation) with a sine-tone audio track,
so the ground truth of every frame is the still photo moved by the same transform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np


def astronaut_path() -> Path:
    import skimage

    return Path(skimage.__file__).parent / "data" / "astronaut.png"


def grace_hopper_path() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"


FACES = {"astronaut": astronaut_path, "grace": grace_hopper_path}


def load_face(name: str) -> np.ndarray:
    """RGB uint8 photo of ``astronaut`` or ``grace``."""
    import cv2

    from .errors import InputError

    try:
        path = FACES[name]()
    except KeyError:
        raise InputError(name, f"no sample photo of that name (have: {', '.join(FACES)})") from None
    except ImportError as exc:
        raise InputError(name, f"the package holding this sample photo is missing: {exc}") from None
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(path, "sample photo missing or unreadable in the installed package")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class Motion:
    """Per-frame similarity transform: rotation (deg), scale and shift (px) as functions of t."""

    angle: Callable[[float], float] = lambda t: 8.0 * math.sin(2 * math.pi * t / 2.0)
    scale: Callable[[float], float] = lambda t: 1.0 + 0.12 * math.sin(2 * math.pi * t / 3.0)
    dx: Callable[[float], float] = lambda t: 40.0 * math.sin(2 * math.pi * t / 4.0)
    dy: Callable[[float], float] = lambda t: 20.0 * math.cos(2 * math.pi * t / 5.0)


def frame_matrix(motion: Motion, t: float, photo_shape: tuple[int, int],
                 canvas: tuple[int, int], zoom: float = 1.0) -> np.ndarray:
    """2x3 matrix photo -> canvas at time ``t``: centre the photo, then rotate/scale/shift."""
    import cv2

    ph, pw = photo_shape[:2]
    ch, cw = canvas
    centre = (pw / 2.0, ph / 2.0)
    m = cv2.getRotationMatrix2D(centre, motion.angle(t), motion.scale(t) * zoom)
    m[0, 2] += cw / 2.0 - pw / 2.0 + motion.dx(t)
    m[1, 2] += ch / 2.0 - ph / 2.0 + motion.dy(t)
    return m


def render_frames(face: str = "astronaut", seconds: float = 2.0, fps: int = 25,
                  size: tuple[int, int] = (640, 480), motion: Motion | None = None,
                  background: int = 40, zoom: float = 1.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames (RGB) and their photo->frame matrices; ``zoom`` enlarges the photo."""
    import cv2

    photo = load_face(face)
    motion = motion or Motion()
    w, h = size
    frames, matrices = [], []
    for i in range(int(round(seconds * fps))):
        m = frame_matrix(motion, i / fps, photo.shape, (h, w), zoom)
        frame = cv2.warpAffine(photo, m, (w, h), flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=(background,) * 3)
        frames.append(frame)
        matrices.append(m)
    return frames, matrices


def write_video(path: Path, frames: list[np.ndarray], fps: int = 25, audio_hz: float | None = 440.0,
                sample_rate: int = 48000, crf: int = 16, video_codec: str = "libx264",
                audio_codec: str = "aac") -> Path:
    """Write frames (H.264 in the container the suffix names, by default) with a sine tone of
    the same duration in ``audio_codec`` (AAC; Opus, Vorbis or PCM for other containers)."""
    import av

    path = Path(path)
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        video = out.add_stream(video_codec, rate=fps)
        video.width, video.height, video.pix_fmt = w, h, "yuv420p"
        if video_codec == "libx264":
            video.options = {"crf": str(crf), "preset": "ultrafast"}
        audio = None
        if audio_hz:
            audio = out.add_stream(audio_codec, rate=sample_rate)
            audio.layout = "mono"
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if audio is not None:
            total = int(len(frames) / fps * sample_rate)
            t = np.arange(total) / sample_rate
            samples = (0.3 * np.sin(2 * np.pi * audio_hz * t)).astype(np.float32)
            chunk = audio.codec_context.frame_size or 1024
            resample = av.AudioResampler(format=audio.codec_context.format.name, layout="mono",
                                         rate=sample_rate)
            for start in range(0, total, chunk):
                block = samples[start:start + chunk]
                if len(block) < chunk and audio.codec_context.frame_size:
                    block = np.pad(block, (0, chunk - len(block)))  # fixed-size frames (Opus)
                aframe = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                aframe.sample_rate = sample_rate
                aframe.pts = start
                aframe.time_base = Fraction(1, sample_rate)
                for converted in resample.resample(aframe):
                    out.mux(audio.encode(converted))
            out.mux(audio.encode(None))
    return path


def make_video(path: Path, face: str = "astronaut", seconds: float = 2.0, fps: int = 25,
               size: tuple[int, int] = (640, 480), motion: Motion | None = None,
               audio_hz: float | None = 440.0, zoom: float = 1.0) -> tuple[Path, list[np.ndarray]]:
    """A test video of ``face`` with known motion; returns its path and per-frame matrices."""
    frames, matrices = render_frames(face, seconds, fps, size, motion, zoom=zoom)
    write_video(path, frames, fps, audio_hz)
    return path, matrices
