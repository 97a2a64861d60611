"""Targets as people have them: audio that mp4 cannot carry as it is becomes AAC, and
variable frame rates keep their timing.

Each source is a real file made here (webm with Opus or Vorbis, mov and avi with PCM) holding
a 440 Hz tone; the output must have an AAC track of the same length that still sounds at
440 Hz. AAC and MP3 are copied untouched.
"""
from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from hotfolders.samples import write_video
from hotfolders.video import VideoWriter

FRAMES = [np.full((64, 96, 3), v, np.uint8) for v in range(0, 250, 10)]  # 1 s at 25 fps


def _tone(path) -> tuple[str, float, float]:
    """(codec, seconds, loudest frequency in Hz) of a file's audio track."""
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        codec = stream.codec_context.codec.canonical_name
        chunks, rate = [], stream.codec_context.sample_rate
        for frame in container.decode(stream):
            chunks.append(frame.to_ndarray().astype(np.float64).mean(axis=0)
                          if frame.format.is_planar else
                          frame.to_ndarray().astype(np.float64).reshape(-1))
    samples = np.concatenate(chunks)
    spectrum = np.abs(np.fft.rfft(samples))
    return codec, len(samples) / rate, float(np.fft.rfftfreq(len(samples), 1 / rate)[
        spectrum.argmax()])


@pytest.mark.parametrize("suffix,video,audio,expected", [
    (".webm", "libvpx", "libopus", "aac"),
    (".webm", "libvpx", "libvorbis", "aac"),
    (".mov", "libx264", "pcm_s16le", "aac"),
    (".avi", "libx264", "pcm_s16le", "aac"),
    (".mp4", "libx264", "aac", "aac"),       # copied as it is
    (".mkv", "libx264", "libmp3lame", "mp3"),  # copied as it is
])
def test_target_audio_reaches_the_mp4(tmp_path, suffix, video, audio, expected):
    source = write_video(tmp_path / f"source{suffix}", FRAMES, audio_hz=440.0,
                         video_codec=video, audio_codec=audio)
    assert _tone(source)[0] == {"libopus": "opus", "libvorbis": "vorbis",
                                "libmp3lame": "mp3"}.get(audio, audio)
    out = tmp_path / "out.mp4"
    with VideoWriter(out, 96, 64, 25, audio_from=source) as writer:
        for image in FRAMES:
            writer.write(image)
    codec, seconds, hz = _tone(out)
    assert codec == expected
    assert abs(seconds - 1.0) < 0.1, seconds
    assert abs(hz - 440.0) < 5.0, hz


@pytest.mark.slow
def test_a_webm_target_with_vorbis_audio_converts(tmp_path, model_dir, astronaut_video):
    from hotfolders.convert import convert

    with av.open(str(astronaut_video[0])) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)][:25]
    target = write_video(tmp_path / "phone clip.webm", frames, audio_hz=440.0,
                         video_codec="libvpx", audio_codec="libvorbis")
    out = tmp_path / "phone clip_swapped.mp4"
    result = convert(target, model_dir, out, label=False)
    assert result.frames == 25 and result.frames_swapped >= 20
    codec, seconds, hz = _tone(out)
    assert codec == "aac" and abs(seconds - 1.0) < 0.1 and abs(hz - 440.0) < 5.0
    np.testing.assert_allclose(_video_times(out), _video_times(target), atol=1e-3)


def _video_times(path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.time) for f in container.decode(video=0)]


def test_variable_frame_rate_keeps_its_timing(tmp_path):
    """A phone-style clip whose frames come 1/30 s and 1/15 s apart: the output frames keep
    the source's times (a fixed fps would drift 0.3 s from the sound within 18 frames)."""
    from hotfolders.video import read_frames

    source = tmp_path / "vfr.mp4"
    times = np.cumsum([0.0] + [1 / 30 if i % 2 else 1 / 15 for i in range(17)])
    with av.open(str(source), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 96, 64, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 90000)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(FRAMES[i], format="rgb24")
            frame.pts, frame.time_base = round(t * 90000), Fraction(1, 90000)
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    source_times = [f.timestamp for f in read_frames(source)]
    np.testing.assert_allclose(source_times, times, atol=1e-3)
    out_path = tmp_path / "out.mp4"
    with VideoWriter(out_path, 96, 64, 30) as writer:
        for frame in read_frames(source):
            writer.write(frame.image, frame.timestamp)
    np.testing.assert_allclose(_video_times(out_path), times, atol=1e-3)
    with VideoWriter(tmp_path / "cfr.mp4", 96, 64, 25) as writer:  # no timestamps: fps steps
        for image in FRAMES[:5]:
            writer.write(image)
    np.testing.assert_allclose(_video_times(tmp_path / "cfr.mp4"), np.arange(5) / 25, atol=1e-3)
