"""Reading frames from videos and still images, and writing H.264 mp4 files, with PyAV.

One module owns every touch of a media container so that the stages never deal with codecs,
rotation metadata or audio streams themselves.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from . import safefs
from .errors import InputError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v"}
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def is_media(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS | IMAGE_EXTENSIONS


@dataclass(frozen=True)
class VideoInfo:
    """What a stage needs to know about its input before decoding it."""

    path: Path
    width: int  # after rotation
    height: int
    fps: Fraction
    frames: int  # exact when the container says so, else estimated from the duration
    duration: float
    rotation: int  # degrees the picture is turned for display (0, 90, 180, 270)
    has_audio: bool
    is_image: bool = False


@dataclass
class Frame:
    index: int
    timestamp: float
    image: np.ndarray  # HxWx3 uint8 RGB, rotation already applied


def _open(path: Path):
    """A demuxer on the regular file at ``path`` (checked on the descriptor: a FIFO or a link
    out of a confined root is refused before FFmpeg sees it), its picture size checked."""
    import av

    with safefs.open_regular(path) as fh:
        if fh.seek(0, 2) == 0:
            raise InputError(path, "file is empty (0 bytes)")
        try:  # FFmpeg opens the very file checked, by its descriptor's name
            container = av.open(safefs.media_path(fh), metadata_errors="ignore")
        except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise InputError(path, f"not a readable video ({_reason(exc)})") from None
    if not container.streams.video:
        container.close()
        raise InputError(path, "has no video stream")
    context = container.streams.video[0].codec_context
    try:
        safefs.check_pixels(path, context.width, context.height)
    except InputError:
        container.close()
        raise
    return container


def _reason(exc: BaseException) -> str:
    import re

    text = str(exc).strip() or type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)
    # PyAV repeats the file name in its messages; the caller already names the file
    return text.split(": '", 1)[0].rstrip(";:")


def _stream_rotation(stream) -> int:
    """Rotation from the display matrix or the legacy ``rotate`` tag, as 0/90/180/270."""
    rotate = stream.metadata.get("rotate")
    if rotate is not None:
        try:
            return int(float(rotate)) % 360
        except ValueError:
            pass
    side = getattr(stream, "side_data", None)
    if side:
        for key in ("DISPLAYMATRIX", "displaymatrix"):
            if key in side:
                try:
                    return int(round(-float(side[key]))) % 360
                except (TypeError, ValueError):
                    pass
    return 0


def _frame_rotation(frame, fallback: int) -> int:
    rotation = getattr(frame, "rotation", None)  # PyAV >= 14 reads the display matrix
    if rotation is None:
        return fallback
    return int(-rotation) % 360


def _rotate(image: np.ndarray, rotation: int) -> np.ndarray:
    """Turn the decoded picture so it displays upright (clockwise ``rotation`` degrees)."""
    if rotation == 0:
        return image
    return np.ascontiguousarray(np.rot90(image, k=-(rotation // 90)))


def probe(path: str | Path) -> VideoInfo:
    """Describe a video or image; raises :class:`InputError` for anything unreadable."""
    import av

    path = Path(path)
    if is_image(path):
        image = read_image(path)
        h, w = image.shape[:2]
        return VideoInfo(path, w, h, Fraction(1), 1, 0.0, 0, False, True)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = stream.average_rate or stream.guessed_rate or Fraction(25)
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration:
            duration = container.duration / 1_000_000
        frames = int(stream.frames or 0) or int(round(duration * float(fps)))
        rotation = _stream_rotation(stream)
        try:  # the display matrix travels with decoded frames; one frame tells
            first = next(container.decode(stream))
            rotation = _frame_rotation(first, rotation)
        except (StopIteration, av.error.FFmpegError):
            raise InputError(path, "no decodable video frames (truncated or corrupt)") from None
        width, height = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            width, height = height, width
        if width <= 0 or height <= 0:
            raise InputError(path, "video stream has no picture size (corrupt header?)")
        return VideoInfo(path, width, height, Fraction(fps), frames, duration, rotation,
                         bool(container.streams.audio))
    finally:
        container.close()


def read_image(path: Path) -> np.ndarray:
    """A still image as RGB uint8; EXIF orientation honoured."""
    import cv2

    data = safefs.read_bytes(path, safefs.IMAGE_LIMIT)
    if not data:
        raise InputError(path, "file is empty (0 bytes)")
    safefs.check_image_header(path, data)  # before the decoder allocates the pixels
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(path, "not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_frames(path: str | Path, every_n: int = 1) -> Iterator[Frame]:
    """Yield every ``every_n``-th frame (index counted over all decoded frames), upright RGB.

    Frames that are skipped are still decoded (video codecs need them) but never converted
    to RGB, which is where most of the per-frame cost of a skipped frame would go.
    """
    import av

    path = Path(path)
    if every_n < 1:
        raise ValueError("every_n must be >= 1")
    if is_image(path):
        yield Frame(0, 0.0, read_image(path))
        return
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        fallback_rotation = _stream_rotation(stream)
        fps = float(stream.average_rate or stream.guessed_rate or 25)
        index = 0
        try:
            for frame in container.decode(stream):
                if index % every_n == 0:
                    ts = float(frame.time) if frame.time is not None else index / fps
                    image = frame.to_ndarray(format="rgb24")
                    yield Frame(index, ts, _rotate(image, _frame_rotation(frame, fallback_rotation)))
                index += 1
        except av.error.FFmpegError as exc:
            raise InputError(path, f"unreadable frame {index} ({_reason(exc)})") from None
        if index == 0:
            raise InputError(path, "no decodable video frames (truncated or corrupt)")
        declared = int(stream.frames or 0)
        if declared and index < declared - 1:
            raise InputError(path, f"truncated: only {index} of {declared} frames could be read")
    finally:
        container.close()


def prefetch(frames: Iterator[Frame], depth: int = 6) -> Iterator[Frame]:
    """Run a frame iterator in a background thread so decoding overlaps the caller's work.

    PyAV and NumPy release the GIL while they decode and convert, so on two cores this hides
    most of the decode time behind face detection. Exceptions are re-raised in the caller.
    """
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker() -> None:
        try:
            for item in frames:
                if stop.is_set():
                    break
                q.put(item)
        except BaseException as exc:  # handed to the consumer
            q.put(exc)
        finally:
            q.put(done)

    thread = threading.Thread(target=worker, name="decoder", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock the producer if it waits on a full queue
            try:
                q.get(timeout=0.05)
            except queue.Empty:
                pass
        if hasattr(frames, "close"):
            frames.close()


class VideoWriter:
    """Write RGB frames as H.264 (yuv420p) mp4, optionally with the audio of a source file.

    Audio packets mp4 can carry (AAC, MP3, AC-3, ALAC) are copied unchanged, as faceswap's
    ffmpeg writer does, so the swapped video has exactly the source's sound; others (Opus,
    Vorbis, PCM) are transcoded to AAC. Frames written with their source ``timestamp`` keep
    it (phones record variable frame rates: the picture stays in step with the sound);
    without one they follow ``fps``.
    """

    TIME_BASE = Fraction(1, 90000)  # fine enough for any source's timestamps

    def __init__(self, path: str | Path, width: int, height: int, fps: Fraction | float,
                 *, audio_from: str | Path | None = None, crf: int = 18, preset: str = "veryfast",
                 metadata: dict[str, str] | None = None, threads: int = 0) -> None:
        import av

        self.path = Path(path)
        self._av = av
        self.container = av.open(str(self.path), mode="w", format="mp4")
        for key, value in (metadata or {}).items():
            self.container.metadata[key] = value
        rate = Fraction(fps).limit_denominator(100000)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width = width - width % 2
        self.stream.height = height - height % 2
        self.stream.pix_fmt = "yuv420p"
        self.stream.codec_context.time_base = self.TIME_BASE
        self._tick = round(1 / (rate * self.TIME_BASE))  # one frame at ``fps``, in time-base units
        self.stream.options = {"crf": str(crf), "preset": preset}
        if threads:
            self.stream.codec_context.thread_count = threads
        self.stream.thread_type = "AUTO"
        self._source = None
        self._audio_in = None
        self._audio_out = None
        self._resampler = None  # set when the source's audio is transcoded to AAC
        self._audio_samples = 0  # AAC samples written (the next audio frame's pts)
        if audio_from is not None:
            self._source = _open(Path(audio_from))
            if self._source.streams.audio:
                self._audio_in = self._source.streams.audio[0]
                self._audio_out = self._audio_stream(self._audio_in)
        self._pts = 0

    def _audio_stream(self, source):
        """The output stream for the source's audio: copied when mp4 players take the codec
        as it is, else AAC (Opus, Vorbis, PCM in webm, mov or avi targets)."""
        codec = source.codec_context.codec.canonical_name  # "mp3", not the decoder's "mp3float"
        if codec in MP4_AUDIO_COPY:
            return self.container.add_stream_from_template(source)
        rate = source.codec_context.sample_rate or 48000
        rate = rate if rate in AAC_RATES else 48000
        channels = source.codec_context.channels or 2
        layout = {1: "mono", 2: "stereo", 6: "5.1"}.get(channels, "stereo")
        out = self.container.add_stream("aac", rate=rate)
        out.layout = layout
        self._resampler = self._av.AudioResampler(format=out.codec_context.format.name,
                                                  layout=layout, rate=rate)
        log.info("audio %s transcoded to AAC for mp4", codec)
        return out

    def _encode_audio(self, frames) -> None:
        """Resample decoded source audio (None: flush) and encode it as AAC."""
        for frame in self._resampler.resample(frames):
            frame.pts = self._audio_samples
            frame.time_base = Fraction(1, frame.sample_rate)
            self._audio_samples += frame.samples
            for packet in self._audio_out.encode(frame):
                self.container.mux(packet)

    def write(self, image: np.ndarray, timestamp: float | None = None) -> None:
        """Encode one frame, at ``timestamp`` seconds (the source's) or one ``fps`` step on."""
        import cv2

        h, w = self.stream.height, self.stream.width
        if image.shape[0] != h or image.shape[1] != w:
            image = image[:h, :w]
        # OpenCV's RGB -> I420 (BT.601, limited range, like swscale's default) is ~5x cheaper
        # than letting the encoder call swscale, and releases the GIL while it runs
        yuv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2YUV_I420)
        frame = self._av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        pts = self._pts if timestamp is None else max(0, round(timestamp / self.TIME_BASE))
        frame.pts = max(pts, self._pts)  # never before the previous frame
        frame.time_base = self.TIME_BASE
        self._pts = frame.pts + (1 if timestamp is not None else self._tick)
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode(None):
            self.container.mux(packet)
        if self._audio_in is not None and self._resampler is not None:
            for packet in self._source.demux(self._audio_in):
                for frame in packet.decode():
                    self._encode_audio(frame)
            self._encode_audio(None)
            for packet in self._audio_out.encode(None):
                self.container.mux(packet)
        elif self._audio_in is not None:
            for packet in self._source.demux(self._audio_in):
                if packet.dts is None:
                    continue
                packet.stream = self._audio_out
                self.container.mux(packet)
        if self._source is not None:
            self._source.close()
        self.container.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # leave no half-written container open; the caller removes the temp file
            try:
                self.container.close()
            finally:
                if self._source is not None:
                    self._source.close()


# audio codecs copied into mp4 as they are; anything else is transcoded to AAC
MP4_AUDIO_COPY = frozenset({"aac", "mp3", "ac3", "eac3", "alac"})
AAC_RATES = frozenset({8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000,
                       88200, 96000})


def even(value: int) -> int:
    return value - value % 2


def fps_of(info: VideoInfo) -> float:
    return float(info.fps) if info.fps else 25.0


def frame_count_hint(info: VideoInfo, every_n: int) -> int:
    return max(1, math.ceil(info.frames / every_n)) if info.frames else 0
