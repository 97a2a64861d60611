"""Conversion of real videos and photos with a real (briefly) trained ``lightweight`` model.

A model trained for a few dozen iterations swaps badly but it does swap: pixels inside the mask
change, which is what these tests check, together with everything around the swap (frames,
rate, audio, labels, manifests, bad input).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hotfolders.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def converted(model_dir, swap_model, astronaut_video, astronaut_faces, tmp_path_factory):
    """The 2 s astronaut video converted with its extraction's alignments, no label."""
    from hotfolders import alignments as al
    from hotfolders.convert import convert

    out = tmp_path_factory.mktemp("converted") / "astronaut_swapped.mp4"
    before = _sha(astronaut_video[0])
    result = convert(astronaut_video[0], model_dir, out,
                     alignments=astronaut_faces / al.ALIGNMENTS_NAME, label=False,
                     model=swap_model)
    assert _sha(astronaut_video[0]) == before, "the input must stay untouched"
    return out, result


@pytest.fixture(scope="module")
def short_video(tmp_path_factory) -> Path:
    """0.4 s (10 frames) of the astronaut with motion and a tone."""
    from media import make_video

    path, _ = make_video(tmp_path_factory.mktemp("short") / "short.mp4", "astronaut",
                         seconds=0.4)
    return path


def _sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _frames(path: Path) -> list[np.ndarray]:
    from hotfolders.video import read_frames

    return [f.image for f in read_frames(path)]


def _audio(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.concatenate([f.to_ndarray().ravel() for f in c.decode(c.streams.audio[0])])


def _frame_mask(swap_model, landmarks, mesh, shape, **settings) -> np.ndarray:
    """The blend mask of one face in frame pixels (float 0..1), as conversion builds it."""
    import cv2

    from hotfolders.align import invert
    from hotfolders.convert import FaceSwapper, Settings
    from hotfolders.model import face_crop_matrix

    swapper = FaceSwapper(swap_model, Settings(**settings))
    matrix = face_crop_matrix(landmarks, swap_model)
    small = swapper.mask(landmarks, mesh, matrix)[..., 0]
    back = invert(swapper.output_matrix(matrix))
    return cv2.warpAffine(small, back, (shape[1], shape[0]), flags=cv2.INTER_LINEAR)


def _diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean(axis=2)


# --- the video: frames, rate, audio ------------------------------------------------------

def test_frames_rate_duration_and_audio_are_kept(converted, astronaut_video):
    from hotfolders.video import probe

    out, result = converted
    src, dst = probe(astronaut_video[0]), probe(out)
    assert result.frames == result.frames_swapped == 50
    assert dst.frames == src.frames == 50 and dst.fps == src.fps
    assert (dst.width, dst.height) == (src.width, src.height)
    assert abs(dst.duration - src.duration) < 0.05
    assert dst.has_audio
    a, b = _audio(astronaut_video[0]), _audio(out)
    assert len(a) == len(b) and np.array_equal(a, b), "audio must be copied untouched"


def test_only_the_masked_face_changes(converted, astronaut_video, astronaut_faces, swap_model):
    import cv2

    from hotfolders import alignments as al
    from hotfolders.video import VideoWriter

    out, _ = converted
    src, dst = _frames(astronaut_video[0]), _frames(out)
    # the codec tolerance: the same frames through the same encoder, nothing swapped
    plain = out.with_name("plain.mp4")
    with VideoWriter(plain, 640, 480, 25) as writer:
        for frame in src:
            writer.write(frame)
    reencoded = _frames(plain)
    plain.unlink()
    aligned = al.load(astronaut_faces / al.ALIGNMENTS_NAME)
    for index in (0, 17, 33, 49):
        entry = aligned.faces(index)[0]
        soft = _frame_mask(swap_model, entry.landmarks, entry.mesh, src[index].shape)
        mask = soft > 0.5
        dilated = cv2.dilate((soft > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        diff = _diff(src[index], dst[index])
        codec = _diff(src[index], reencoded[index])[~dilated].mean()
        outside, inside = diff[~dilated].mean(), diff[mask].mean()
        assert outside < codec + 0.25, f"frame {index}: outside the mask changed by " \
                                      f"{outside:.2f} (re-encoding alone: {codec:.2f})"
        assert inside > 8.0 and inside > 5 * outside, f"frame {index}: face changed by {inside:.2f}"


def test_manifest_and_metadata_mark_it_synthetic(converted, astronaut_video, model_dir):
    import av

    from hotfolders import version
    from hotfolders.provenance import verify_manifest

    out, result = converted
    assert result.manifest == out.with_name("astronaut_swapped.provenance.json")
    manifest = json.loads(result.manifest.read_text())
    assert manifest["synthetic"] is True
    assert manifest["input"]["sha256"] == _sha(astronaut_video[0])
    assert manifest["output"]["sha256"] == _sha(out)
    assert manifest["generator"]["version"] == version()
    assert manifest["model"]["name"] == "astronaut2grace"
    assert manifest["model"]["iterations"] == 40 and manifest["model"]["trainer"] == "lightweight"
    settings = manifest["settings"]
    assert settings["color"] == "avg-color" and settings["mask"] == "extended"
    assert settings["sharpen"] == "none" and settings["label"] is False
    assert settings["swap"] is False and settings["face_select"] == "largest"
    assert verify_manifest(result.manifest, astronaut_video[0]) == []
    with av.open(str(out)) as c:
        assert c.metadata["comment"].startswith("SYNTHETIC MEDIA")
        assert "astronaut2grace" in c.metadata["comment"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "temp files left"


# --- landmarks, label, direction, face choice -------------------------------------------------

def test_detection_without_alignments_and_the_visible_label(swap_model, model_dir, short_video,
                                                            tmp_path):
    from hotfolders.convert import convert

    out = tmp_path / "out" / "short_swapped.mp4"
    result = convert(short_video, model_dir, out, model=swap_model)  # live landmarks, label on
    assert result.frames == 10 and result.frames_swapped == 10
    src, dst = _frames(short_video)[5], _frames(out)[5]
    h, w = src.shape[:2]
    corner = (slice(h - 30, h), slice(w - 140, w))
    assert _diff(src[corner], dst[corner]).mean() > 20, "the visible label is missing"
    centre = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    assert _diff(src[centre], dst[centre]).max() > 30, "the face was not swapped"


def test_swap_direction_uses_the_other_decoder(swap_model, model_dir, short_video,
                                              astronaut_video, astronaut_faces, tmp_path):
    from hotfolders import alignments as al
    from hotfolders.convert import FaceSwapper, Settings, convert

    # the frame A->B holds decoder B's face, B->A decoder A's: exactly, before encoding
    frame = _frames(astronaut_video[0])[7]
    entry = al.load(astronaut_faces / al.ALIGNMENTS_NAME).faces(7)[0]
    face = [(entry.landmarks, entry.mesh)]
    results = {}
    for swap, decoder in ((False, "a2b"), (True, "b2a")):
        swapper = FaceSwapper(swap_model, Settings(swap=swap, color="none"))
        (results[swap],) = swapper.swap_batch([(frame.copy(), face)])
        crop, matrix = swapper.crop(frame, entry.landmarks)
        (decoded,) = swap_model.swap(crop[None], decoder)
        expected = swapper.blend(frame.copy(), decoded, entry.landmarks, entry.mesh, matrix)
        assert np.array_equal(results[swap], expected)
    assert _diff(results[False], results[True]).max() > 0, "both directions gave the same face"
    # and the option reaches the video and its manifest
    outs = {}
    for swap in (False, True):
        outs[swap] = tmp_path / f"{swap}_swapped.mp4"
        convert(short_video, model_dir, outs[swap], swap=swap, color="none", label=False,
                model=swap_model)
    assert any(_diff(a, b).max() > 0 for a, b in zip(_frames(outs[False]), _frames(outs[True])))
    manifest = json.loads(outs[True].with_name("True_swapped.provenance.json").read_text())
    assert manifest["settings"]["swap"] is True


@pytest.fixture(scope="module")
def two_faces(tmp_path_factory) -> tuple[Path, tuple, tuple]:
    """A video with two people: the astronaut large on the left, Grace small on the right."""
    from media import two_people, write_video

    frames, big, small = two_people(6)
    return write_video(tmp_path_factory.mktemp("two") / "two.mp4", frames), big, small


@pytest.mark.parametrize("how", ["largest", "all"])
def test_face_select_picks_the_largest_face_or_all(how, two_faces, swap_model, model_dir,
                                                   tmp_path):
    from hotfolders.convert import convert

    video, big, small = two_faces
    out = tmp_path / "two_swapped.mp4"
    result = convert(video, model_dir, out, face_select=how, color="none", label=False,
                     model=swap_model)
    assert result.frames == 6 and result.faces_swapped == (6 if how == "largest" else 12)
    src, dst = _frames(video)[3], _frames(out)[3]
    if os.environ.get("FACEDROP_TEST_KEEP"):
        import cv2

        cv2.imwrite(f"{os.environ['FACEDROP_TEST_KEEP']}/two-{how}.png",
                    cv2.cvtColor(np.vstack([src, dst]), cv2.COLOR_RGB2BGR))
    def swapped(region) -> float:  # share of strongly changed pixels (re-encoding: none)
        return float((_diff(src[region], dst[region]) > 30).mean())

    assert swapped(big) > 0.05, "the large face must be swapped"
    if how == "largest":
        assert swapped(small) < 0.005, "the small face must stay as it was"
    else:
        assert swapped(small) > 0.05, "with 'all' both faces are swapped"


@pytest.mark.parametrize("swap", [False, True])
def test_face_select_person_swaps_the_face_the_model_knows(swap, two_faces, swap_model,
                                                           model_dir, tmp_path):
    """A -> B swaps the astronaut (large), B -> A swaps Grace (small): the model's own
    decoder for its input person rebuilds that person best, whatever the faces' sizes."""
    from hotfolders.convert import FaceSwapper, Settings, convert
    from hotfolders.landmarks import FaceLandmarker

    video, big, small = two_faces
    out = tmp_path / "two_swapped.mp4"
    result = convert(video, model_dir, out, face_select="person", swap=swap, color="none",
                     label=False, model=swap_model)
    assert result.frames == 6 and result.faces_swapped == 6  # one face per frame
    src, dst = _frames(video)[3], _frames(out)[3]

    def swapped(region) -> float:
        return float((_diff(src[region], dst[region]) > 30).mean())

    wanted, other = (small, big) if swap else (big, small)
    assert swapped(wanted) > 0.05, "the model's own person must be swapped"
    assert swapped(other) < 0.005, "the other person must stay as they were"
    # the measure behind it: the input person's own decoder rebuilds that person best
    with FaceLandmarker(video=False, max_faces=4) as landmarker:
        dets = landmarker.detect(src.copy())
    swapper = FaceSwapper(swap_model, Settings(swap=swap))
    faces = [(d.landmarks, d.mesh) for d in dets]
    crops, matrices = zip(*(swapper.crop(src, lm) for lm, _ in faces))
    scores = swapper.person_score(list(crops), faces, list(matrices))
    left_first = np.argsort([lm[:, 0].mean() for lm, _ in faces])
    astronaut, grace = scores[left_first[0]], scores[left_first[1]]
    assert (grace < 1 < astronaut) if swap else (astronaut < 1 < grace), scores


# --- alignments: reuse and cache --------------------------------------------------------------

def test_landmarks_are_cached_in_a_new_alignments_file_and_reused(swap_model, model_dir,
                                                                  short_video, tmp_path):
    from hotfolders import alignments as al
    from hotfolders.convert import convert

    cache = tmp_path / "cache" / "short.alignments.json.gz"
    first = convert(short_video, model_dir, tmp_path / "1_swapped.mp4", alignments=cache,
                    label=False, model=swap_model)
    aligned = al.load(cache)
    assert sorted(aligned.frames) == list(range(10))
    assert aligned.source["sha256"] == _sha(short_video) and aligned.face_count == 10
    second = convert(short_video, model_dir, tmp_path / "2_swapped.mp4", alignments=cache,
                     label=False, model=swap_model)
    assert first.frames_swapped == second.frames_swapped == 10
    assert (first.frames_detected, second.frames_detected) == (10, 0), "the cache was not used"
    a, b = _frames(tmp_path / "1_swapped.mp4"), _frames(tmp_path / "2_swapped.mp4")
    # same landmarks (to 0.01 px), same swap; what differs is the encoder's choices
    assert max(_diff(x, y).mean() for x, y in zip(a, b)) < 1.5
    # alignments that skip frames (extracted every Nth frame): the gaps are detected
    for index in (3, 4, 5):
        del aligned.frames[index]
    al.save(aligned, cache)
    third = convert(short_video, model_dir, tmp_path / "3_swapped.mp4", alignments=cache,
                    label=False, model=swap_model)
    assert third.frames_swapped == 10 and third.frames_detected == 3


def test_alignments_of_another_video_are_refused(swap_model, model_dir, short_video,
                                                 astronaut_faces, tmp_path):
    from hotfolders import alignments as al
    from hotfolders.convert import convert

    out = tmp_path / "x_swapped.mp4"
    with pytest.raises(InputError, match="not from short.mp4"):
        convert(short_video, model_dir, out, alignments=astronaut_faces / al.ALIGNMENTS_NAME,
                model=swap_model)
    assert not out.exists()


# --- masks and sharpening -------------------------------------------------------------------

def test_erode_and_blur_shape_the_mask(swap_model, astronaut_faces):
    from hotfolders import alignments as al

    entry = al.load(astronaut_faces / al.ALIGNMENTS_NAME).faces(0)[0]
    shape = (480, 640)

    def area(**kw) -> float:
        return float(_frame_mask(swap_model, entry.landmarks, entry.mesh, shape, **kw).sum())

    assert area(erode=3, blur=0) < area(erode=0, blur=0) < area(erode=-3, blur=0)
    hard = _frame_mask(swap_model, entry.landmarks, entry.mesh, shape, blur=0)
    soft = _frame_mask(swap_model, entry.landmarks, entry.mesh, shape, blur=8)
    edge = lambda m: int(((m > 0.05) & (m < 0.95)).sum())
    assert edge(soft) > 2 * edge(hard), "blur must feather the edge"
    mesh = _frame_mask(swap_model, entry.landmarks, entry.mesh, shape, mask="mesh")
    components = _frame_mask(swap_model, entry.landmarks, entry.mesh, shape, mask="components")
    extended = _frame_mask(swap_model, entry.landmarks, entry.mesh, shape, mask="extended")
    assert components.sum() < extended.sum(), "extended lifts the brows"
    assert mesh.sum() > 0 and not np.allclose(mesh, extended)


def test_sharpening_stays_inside_the_mask(swap_model, astronaut_video, astronaut_faces):
    from hotfolders import alignments as al
    from hotfolders.convert import FaceSwapper, Settings

    frame = _frames(astronaut_video[0])[20]
    entry = al.load(astronaut_faces / al.ALIGNMENTS_NAME).faces(20)[0]
    results = {}
    for sharpen in ("none", "unsharp"):
        swapper = FaceSwapper(swap_model, Settings(sharpen=sharpen))
        (results[sharpen],) = swapper.swap_batch([(frame.copy(), [(entry.landmarks, entry.mesh)])])
    import cv2

    mask = _frame_mask(swap_model, entry.landmarks, entry.mesh, frame.shape)
    # the blend warps a 2x upscaled mask: its edge may differ from this 1x warp by a pixel
    outside = cv2.dilate((mask > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) == 0
    for out in results.values():
        moved = int((np.abs(out.astype(int) - frame.astype(int)).max(axis=2)[outside] > 0).sum())
        assert moved == 0, f"{moved} pixels outside the mask moved"
    changed = _diff(results["none"], results["unsharp"]) > 0
    assert changed.sum() > 100 and not outside[changed].any()


@pytest.fixture(scope="module")
def face_colours(swap_model, model_dir, short_video, tmp_path_factory):
    """Mean colour inside the face mask of frame 5: source, and output per colour mode."""
    from hotfolders import alignments as al
    from hotfolders.convert import convert

    folder = tmp_path_factory.mktemp("colours")
    cache = folder / "short.alignments.json.gz"
    means = {}
    for color in ("none", "avg-color", "color-transfer", "match-hist", "seamless"):
        out = folder / f"{color}_swapped.mp4"
        convert(short_video, model_dir, out, color=color, label=False, alignments=cache,
                model=swap_model)
        means[color] = _frames(out)[5]
    entry = al.load(cache).faces(5)[0]
    src = _frames(short_video)[5]
    inside = _frame_mask(swap_model, entry.landmarks, entry.mesh, src.shape, erode=2) > 0.99
    return src[inside].mean(0), {k: v[inside].mean(0) for k, v in means.items()}


@pytest.mark.parametrize("color", ["avg-color", "color-transfer", "match-hist", "seamless"])
def test_colour_modes_move_the_swapped_face_towards_the_frames_colour(color, face_colours):
    source, out = face_colours
    raw = np.abs(out["none"] - source).sum()
    adjusted = np.abs(out[color] - source).sum()
    assert adjusted < 0.5 * raw, f"{color}: colour distance {raw:.1f} -> {adjusted:.1f}"


# --- frames without faces, photos --------------------------------------------------------------

def test_frames_without_faces_pass_through(swap_model, model_dir, tmp_path):
    from media import render_frames, write_video

    from hotfolders.convert import convert

    faces, _ = render_frames("astronaut", seconds=0.2)
    rng = np.random.default_rng(0)
    blank = [np.full((480, 640, 3), v, np.uint8) for v in rng.integers(60, 200, 4)]
    video = write_video(tmp_path / "mixed.mp4", faces + blank)
    out = tmp_path / "mixed_swapped.mp4"
    result = convert(video, model_dir, out, label=False, model=swap_model)
    assert result.frames == 9 and result.frames_swapped == 5
    src, dst = _frames(video), _frames(out)
    assert len(dst) == 9
    for a, b in zip(src[5:], dst[5:]):
        assert _diff(a, b).mean() < 1.5, "a frame without a face must pass through"
    assert _diff(src[2], dst[2]).max() > 30


def test_a_folder_of_photos(swap_model, model_dir, tmp_path):
    import cv2
    from media import load_face

    from hotfolders.convert import convert
    from hotfolders.provenance import png_text, verify_manifest

    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.jpg"), cv2.cvtColor(load_face("astronaut"), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(photos / "blank.png"), np.full((200, 300, 3), 90, np.uint8))
    (photos / "notes.txt").write_text("not a photo")
    out = tmp_path / "swapped"
    result = convert(photos, model_dir, out, model=swap_model)
    assert result.frames == 2 and result.frames_swapped == 1
    assert sorted(p.name for p in out.iterdir()) == [
        "astronaut_swapped.png", "astronaut_swapped.provenance.json",
        "blank_swapped.png", "blank_swapped.provenance.json"]
    data = (out / "astronaut_swapped.png").read_bytes()
    assert png_text(data)["comment"].startswith("SYNTHETIC MEDIA")
    assert verify_manifest(out / "astronaut_swapped.provenance.json", photos / "astronaut.jpg") == []
    src = load_face("astronaut")
    dst = cv2.cvtColor(cv2.imread(str(out / "astronaut_swapped.png")), cv2.COLOR_BGR2RGB)
    face = (slice(80, 180), slice(190, 290))
    assert _diff(src[face], dst[face]).mean() > 8, "the face in the photo must be swapped"
    h, w = src.shape[:2]
    assert _diff(src[h - 20:, w - 100:], dst[h - 20:, w - 100:]).mean() > 20, "label missing"
    # one photo (as the daemon hands over a photo dropped into targets/): a PNG beside the name
    single = convert(photos / "astronaut.jpg", model_dir, tmp_path / "one" / "a_swapped.mp4",
                     model=swap_model)
    assert single.output == tmp_path / "one" / "a_swapped.png" and single.frames_swapped == 1
    assert verify_manifest(single.manifest, photos / "astronaut.jpg") == []
    with pytest.raises(InputError, match="no face"):
        convert(photos / "blank.png", model_dir, tmp_path / "two" / "b_swapped.png",
                model=swap_model)
    assert not (tmp_path / "two").exists() or not list((tmp_path / "two").iterdir())


# --- bad input ------------------------------------------------------------------------------

def test_bad_input_gives_a_clear_error_and_leaves_nothing(swap_model, model_dir, short_video,
                                                          tmp_path):
    from media import write_video

    from hotfolders.convert import convert

    out_dir = tmp_path / "o"
    out = out_dir / "x_swapped.mp4"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(short_video.read_bytes()[:3000])
    with pytest.raises(InputError, match="corrupt.mp4"):
        convert(corrupt, model_dir, out, model=swap_model)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(os.urandom(5000))
    with pytest.raises(InputError, match="garbage.mp4"):
        convert(garbage, model_dir, out, model=swap_model)
    faceless = write_video(tmp_path / "faceless.mp4", [np.full((240, 320, 3), 80, np.uint8)] * 5)
    with pytest.raises(InputError, match="no face"):
        convert(faceless, model_dir, out, model=swap_model)
    with pytest.raises(InputError, match="not found"):
        convert(short_video, tmp_path / "no-such-model", out)
    empty_model = tmp_path / "empty-model"
    empty_model.mkdir()
    with pytest.raises(InputError, match="empty-model"):
        convert(short_video, empty_model, out)
    damaged = tmp_path / "damaged-model"
    shutil.copytree(model_dir, damaged)
    for weights in damaged.rglob("*.weights.h5"):
        weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(InputError, match="damaged-model"):
        convert(short_video, damaged, out)
    with pytest.raises(InputError, match="overwrite the input"):
        convert(short_video, model_dir, short_video, model=swap_model)
    with pytest.raises(ValueError, match="avg-color"):
        convert(short_video, model_dir, out, color="average", model=swap_model)
    assert not out.exists()
    assert not out_dir.exists() or not list(out_dir.iterdir()), "no partial or temp files"
    assert short_video.exists() and _frames(short_video)


def _cli(*args: str, fsize: int | None = None) -> subprocess.CompletedProcess:
    """``facedrop`` in a subprocess; ``fsize`` caps the size of any file it writes (bytes)."""
    code = "import sys\n"
    if fsize:
        code += f"import resource; resource.setrlimit(resource.RLIMIT_FSIZE, ({fsize}, {fsize}))\n"
    code += "from daemon.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_command_line_conversion_with_settings(model_dir, short_video, tmp_path):
    out = tmp_path / "cli" / "short_swapped.mp4"
    proc = _cli("convert", str(short_video), "--model-dir", str(model_dir), "-o", str(out),
                "--color", "color-transfer", "--mask", "components", "--sharpen", "gaussian",
                "--erode", "1", "--blur", "3", "--face-select", "center", "--no-label")
    assert proc.returncode == 0, proc.stderr
    assert "10 frames, 10 with a swapped face" in proc.stdout
    settings = json.loads(out.with_name("short_swapped.provenance.json").read_text())["settings"]
    assert settings["color"] == "color-transfer" and settings["mask"] == "components"
    assert settings["sharpen"] == "gaussian" and settings["erode"] == 1 and settings["blur"] == 3
    assert settings["face_select"] == "center" and settings["label"] is False
    bad = _cli("convert", str(short_video), "--model-dir", str(tmp_path / "none"), "-o",
               str(tmp_path / "cli" / "x.mp4"))
    assert bad.returncode == 2 and "model folder not found" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_disk_full_while_writing_leaves_nothing(model_dir, astronaut_video, tmp_path):
    """The output grows past what the OS lets the process write: a clear error, no files."""
    out = tmp_path / "full" / "astronaut_swapped.mp4"
    before = _sha(astronaut_video[0])
    proc = _cli("convert", str(astronaut_video[0]), "--model-dir", str(model_dir), "-o", str(out),
                fsize=150_000)
    assert proc.returncode == 2, proc.stderr
    assert "disk full" in proc.stderr and "astronaut_swapped.mp4" in proc.stderr
    assert not list(out.parent.iterdir()), "no partial output, temp file or manifest"
    assert _sha(astronaut_video[0]) == before
