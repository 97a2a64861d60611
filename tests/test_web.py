"""The read-only status page through Flask's test client, on a temp root holding real work:
faces extracted from real-face videos with their review report, a model folder with loss log,
timelapse JPEGs and a snapshot, a real mp4 output with its manifest, failure reports, and a
state database written by the daemon's own store."""
from __future__ import annotations

import json
import math
import re
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hotfolders.faceimage import list_faces, read_face, write_face
from hotfolders.review import review_report

HOSTILE_FACE = "<img src=x onerror=alert(1)>.png"
HOSTILE_OUTPUT = "<script>alert(1)<script>_swapped.mp4"
HOSTILE_FAILED = "\"><script>alert(2)<script>.mp4"


SAFE_TAGS = {"html", "head", "meta", "title", "link", "script", "body", "header", "div", "span",
             "nav", "b", "main", "section", "h2", "h3", "p", "table", "thead", "tbody", "tr", "th",
             "td", "article", "img", "a", "ul", "li", "code", "figure", "figcaption", "progress",
             "button", "input", "noscript", "details", "summary", "pre", "footer"}


def parse_tags(html: str) -> list[tuple[str, dict[str, str | None]]]:
    """Every start tag and its attributes, as an HTML parser sees them."""
    from html.parser import HTMLParser

    tags: list[tuple[str, dict[str, str | None]]] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag, attrs):
            tags.append((tag, dict(attrs)))

    Collect().feed(html)
    return tags


def write_loss_csv(path: Path, iterations: int, start: int = 1) -> None:
    """A plausible falling loss per side, written by the trainer's own loss log."""
    from hotfolders.training import LossLog

    rng = np.random.default_rng(start)
    log = LossLog(path, keep_until=start - 1)
    for i in range(start, start + iterations):
        log.add(i, 0.25 * math.exp(-i / 300) + 0.03 + rng.random() * 0.01,
                0.2 * math.exp(-i / 250) + 0.035 + rng.random() * 0.01)
    log.close()


def timelapse_jpg(path: Path, faces: list[Path], iterations: int) -> None:
    """A timelapse-like grid (original | rebuilt | swapped per row) from real faces."""
    rows = []
    for p in faces[:3]:
        img, _ = read_face(p)
        img = cv2.resize(img, (96, 96))
        k = min(1.0, iterations / 1000)
        rows.append(np.concatenate([img, (img * (0.4 + 0.6 * k)).astype(np.uint8), img[:, ::-1]], 1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))


def build_root(root: Path, astronaut_faces: Path, grace_faces: Path) -> Path:
    """A hot-folder root with finished work in every folder (files only; no database)."""
    for d in ("inbox", "review", "approved", "models", "targets", "output", "failed"):
        (root / d).mkdir(parents=True, exist_ok=True)
    # alice: a set waiting in review/, with planted bad faces and the review stage's report
    review = root / "review" / "alice" / "alice_clip"
    shutil.copytree(astronaut_faces, review)
    first = list_faces(review)[3]
    image, meta = read_face(first)
    write_face(review / HOSTILE_FACE, cv2.GaussianBlur(image, (0, 0), 6), {**meta, "face": 7})
    write_face(review / "alice_dark.png", (image * 0.12).astype(np.uint8), {**meta, "face": 8})
    review_report(review)
    # bob: an approved set
    shutil.copytree(grace_faces, root / "approved" / "bob" / "bob_clip")
    # a model mid-training
    model = root / "models" / "demo"
    (model / "timelapse").mkdir(parents=True)
    (model / "snapshots" / "00000500").mkdir(parents=True)   # the trainer's names
    (model / "model.toml").write_text('a = "alice"\nb = "bob"\ntrainer = "lightweight"\n'
                                      'iterations = 2000\n', encoding="utf-8")
    (model / "state.json").write_text(json.dumps({
        "version": 1, "name": "demo", "trainer": "lightweight", "input_size": 64,
        "output_size": 64, "coverage": 0.85, "iterations": 750, "last_loss": [0.04, 0.05],
        "loss_log": "loss.csv", "precision": "mixed_bfloat16", "precision_setting": "auto",
        "precision_choice": {"chosen": "mixed_bfloat16", "images_per_second": {
            "float32": 105.2, "mixed_bfloat16": 143.4}},
        "threads": "per-op", "threads_setting": "auto", "threads_choice": {
            "chosen": "per-op", "images_per_second": {"shared": 130.1, "per-op": 143.4,
                                                      "<i>x</i>": "fast"}},
        "learning_rate": 7.5e-5, "warp_off_from": 600,
        # the trainer's record of a loss that blew up; the junk entries are left out
        "diverged": [{"iteration": 500, "learning_rate": 1.5e-4, "at": "2026-12-01T10:00:00Z"},
                     "<script>alert(1)</script>", {"iteration": "<b>", "learning_rate": 1},
                     {"iteration": float("nan"), "learning_rate": 1e-4},
                     {"iteration": 750, "learning_rate": 7.5e-5, "at": 5}]}),
        encoding="utf-8")
    write_loss_csv(model / "loss.csv", 750)
    from hotfolders.coverage import coverage, report_json

    report = coverage(review, root / "approved" / "bob" / "bob_clip", out_image=model / "coverage.png")
    (model / "coverage.json").write_text(report_json(report), encoding="utf-8")
    faces = list_faces(root / "approved" / "bob" / "bob_clip")
    for it in (250, 500, 750):
        timelapse_jpg(model / "timelapse" / f"{it:08d}.jpg", faces, it)
    # outputs: a real small mp4 with its manifest, and one with a hostile name and no manifest
    from hotfolders.samples import render_frames, write_video

    out = root / "output" / "demo"
    out.mkdir(parents=True)
    frames, _ = render_frames("astronaut", seconds=0.4, fps=10, size=(160, 120))
    video = write_video(out / "alice_swapped.mp4", frames, fps=10, audio_hz=None)
    from hotfolders.provenance import manifest_path, write_manifest

    write_manifest(manifest_path(video), video, input_path=Path("alice.mp4"), input_sha256="ab" * 32,
                   output_sha256="cd" * 32, model={"name": "demo", "trainer": "lightweight",
                                                   "iterations": 750},
                   settings={"color": "avg-color", "mask": "extended"}, stats={"frames": 4})
    shutil.copy(video, out / HOSTILE_OUTPUT)
    # a failure, reported the way the daemon reports it
    from daemon.jobs import move_to_failed

    bad = root / "inbox" / "alice" / HOSTILE_FAILED
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a video")
    move_to_failed(root, "extract", bad, "<b>not a video</b> (no video stream)")
    # things that must never be served
    (root / ".facedrop").mkdir(exist_ok=True)
    (root / "inbox" / "alice" / "private.png").write_bytes(first.read_bytes())
    return root


RUNNING_INPUT = "<i>carol<i> holiday.mp4"


def populate_db(root: Path):
    """The state database as the daemon leaves it, written through the daemon's own Store:
    finished, running, queued, paused and failed jobs, a model, a heartbeat."""
    from daemon.store import Store

    store = Store(root / ".facedrop" / "state.db")
    for person, n in (("alice", 50), ("bob", 50)):
        job = store.add_job("extract", root / "inbox" / person / f"{person}.mp4", person=person)
        store.transition(job, "running", f"extract {person}.mp4")
        store.update(job, done=n, total=n, unit="frames", progress=1.0)
        store.transition(job, "done", f"{n} faces written", progress=1.0)
    bad = store.add_job("extract", root / "inbox" / "bob" / "broken.mov", person="bob")
    store.transition(bad, "running")
    store.transition(bad, "failed", "no video stream in <u>broken.mov</u>",
                     error="no video stream in <u>broken.mov</u>")
    train = store.add_job("train", root / "models" / "demo", model="demo")
    store.transition(train, "running", "train demo")
    store.update(train, done=750, total=2000, unit="iterations", progress=750 / 2000)
    store.transition(train, "paused", "paused at iteration 750 (saved)")
    store.upsert_model("demo", a="alice", b="bob", status="paused", max_iterations=2000)
    store.record_loss("demo", 750, 0.041, 0.052)
    store.add_job("convert", root / "targets" / "demo" / "clip1.mp4", model="demo")
    store.add_job("convert", root / "targets" / "demo" / "clip2.mp4", model="demo")
    running = store.add_job("extract", root / "inbox" / "carol" / RUNNING_INPUT, person="carol")
    store.transition(running, "running", f"extract {RUNNING_INPUT}")
    store.update(running, done=30, total=120, unit="frames", progress=0.25,
                 node="<b>gpu-box</b> (10.0.0.7)")
    store.set_daemon(heartbeat=time.time(), state="running", message=f"extract {RUNNING_INPUT}",
                     url="http://127.0.0.1:8765/")
    return store, running


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    """A folder outside the root with a secret and an image, for symlink attacks."""
    d = tmp_path_factory.mktemp("outside")
    (d / "secret.txt").write_text("top secret\n")
    cv2.imwrite(str(d / "face.png"), np.zeros((8, 8, 3), np.uint8))
    return d


@pytest.fixture(scope="module")
def root(tmp_path_factory, astronaut_faces, grace_faces, outside) -> Path:
    r = build_root(tmp_path_factory.mktemp("web") / "root", astronaut_faces, grace_faces)
    # symlinks: one escaping the root, one pointing at the state folder, one folder link out
    (r / "review" / "alice" / "alice_clip" / "escape.png").symlink_to(outside / "face.png")
    (r / "output" / "demo" / "db_swapped.mp4").symlink_to(r / ".facedrop" / "state.db")
    (r / "approved" / "eve").mkdir()
    (r / "approved" / "eve" / "linked").symlink_to(outside, target_is_directory=True)
    # a symlink inside the root to an allowed file is fine
    (r / "output" / "demo" / "again_swapped.mp4").symlink_to(r / "output" / "demo" / "alice_swapped.mp4")
    store, _ = populate_db(r)
    yield r
    store.close()


@pytest.fixture()
def client(root):
    from web_status.app import create_app

    app = create_app(root, status_ttl=0.0)
    return app.test_client()


def test_page_renders_every_section(client, root):
    r = client.get("/")
    assert r.status_code == 200 and r.mimetype == "text/html"
    html = r.get_data(as_text=True)
    for section in ('id="now"', 'id="people"', 'id="models"', 'id="outputs"', 'id="failures"'):
        assert section in html
    # people with counts, thumbnails and the review report's flagged faces
    assert "alice" in html and "bob" in html
    assert "/thumb/review/alice/alice_clip/" in html
    assert "alice_dark.png" in html and "dark" in html
    assert "contact sheet" in html
    # the model: chart, latest timelapse, snapshot list, iterations
    assert "/models/demo/loss.svg" in html
    assert "/file/models/demo/timelapse/00000750.jpg" in html
    assert "snapshots/00000500" in html and "750" in html
    assert "bfloat16 (measured: float32 105 img/s, bfloat16 143 img/s)" in html
    assert "threads per-op (measured: shared 130 img/s, per-op 143 img/s)" in html
    assert "learning rate <b data-field=\"learning-rate\">7.5e-5</b>" in html
    assert "random warp off since <b>600</b>" in html
    assert ("The loss blew up 2 times; each time training went back to its last save at half "
            "the learning rate:\n      iteration 500 at 1.5e-4, iteration 750 at 7.5e-5.") in html
    # outputs with manifest, failures with their reason
    assert "/file/output/demo/alice_swapped.mp4" in html and "synthetic" in html
    assert "cdcdcdcdcdcd" in html
    assert "not a video" in html


def test_hostile_names_render_as_text(client):
    html = client.get("/").get_data(as_text=True)
    assert "<script>alert" not in html and "<img src=x" not in html
    assert "<b>not a video</b>" not in html
    assert "&lt;script&gt;alert(1)&lt;script&gt;_swapped.mp4" in html
    assert "&lt;img src=x onerror=alert(1)&gt;.png" in html
    assert "&lt;b&gt;not a video&lt;/b&gt;" in html
    # parsed as a browser would: the only script is the app's own file, no element carries an
    # event handler, every image comes from the app itself, and the names are text
    tags = parse_tags(html)
    assert [a for t, a in tags if t == "script"] == [{"src": "/static/status.js", "defer": None}]
    assert not [(t, a) for t, a in tags if any(k.startswith("on") for k in a)]
    assert all(a["src"].startswith(("/thumb/", "/file/", "/models/")) for t, a in tags if t == "img")
    assert {t for t, _ in tags} <= SAFE_TAGS
    # and the hostile face is still reachable through a correctly quoted link
    m = re.search(r'src="(/thumb/review/alice/alice_clip/%3Cimg[^"]*)"', html)
    assert m, "hostile face thumbnail link missing"
    r = client.get(m.group(1).replace("&amp;", "&"))
    assert r.status_code == 200 and r.mimetype == "image/jpeg"


def test_api_status_schema(client):
    r = client.get("/api/status")
    assert r.status_code == 200 and r.mimetype == "application/json"
    s = r.get_json()
    assert s["api_version"] == 1
    assert set(s) >= {"generated", "root", "daemon", "counts", "running", "queue", "people",
                      "models", "outputs", "failures", "digest"}
    assert set(s["counts"]) >= {"jobs", "queue_length", "faces_extracted", "people", "models",
                                "outputs", "failures"}
    assert isinstance(s["counts"]["jobs"], dict)
    assert {"state", "message"} <= set(s["daemon"])
    people = {p["name"]: p for p in s["people"]}
    assert people["bob"]["approved_faces"] == len(list_faces(Path(s["root"]) / "approved/bob/bob_clip"))
    assert people["alice"]["review_faces"] >= 52 and people["alice"]["approved_faces"] == 0
    flagged = {f["name"]: f["reasons"] for f in people["alice"]["flagged"]}
    assert "dark" in flagged["alice_dark.png"]
    assert "blurred" in flagged[HOSTILE_FACE]
    for p in s["people"]:
        assert {"name", "approved_faces", "review_faces", "thumbnails", "thumbnail_urls",
                "flagged", "coverage_urls"} <= set(p)
    (m,) = s["models"]
    assert m["name"] == "demo" and m["a"] == "alice" and m["b"] == "bob"
    assert m["trainer"] == "lightweight" and m["iterations"] == 750
    assert m["precision"] == {"policy": "bfloat16", "setting": "auto",
                              "images_per_second": {"float32": 105.2, "bfloat16": 143.4}}
    assert m["threads"] == {"layout": "per-op", "setting": "auto",
                            "images_per_second": {"shared": 130.1, "per-op": 143.4}}
    assert m["learning_rate"] == 7.5e-5 and m["warp_off_from"] == 600
    assert m["diverged"] == [
        {"iteration": 500, "learning_rate": 1.5e-4, "at": "2026-12-01T10:00:00Z"},
        {"iteration": 750, "learning_rate": 7.5e-5, "at": None}]
    assert m["loss_points"] == 750 and 0 < m["loss"]["a"] < 0.1 and 0 < m["loss"]["b"] < 0.1
    assert [f["iterations"] for f in m["timelapse"]] == [250, 500, 750]
    assert [sn["iterations"] for sn in m["snapshots"]] == [500]
    assert m["progress"] == pytest.approx(750 / 2000)
    outputs = {o["name"]: o for o in s["outputs"]}
    assert outputs["alice_swapped.mp4"]["manifest"]["model"]["iterations"] == 750
    assert outputs["alice_swapped.mp4"]["summary"]["output_sha256"] == "cd" * 32
    assert outputs[HOSTILE_OUTPUT]["manifest"] is None
    assert any(f["file"] == HOSTILE_FAILED and "not a video" in f["reason"]
               for f in s["failures"])
    # JSON only carries relative paths and URLs of the app, never absolute paths of files
    for url in [u for p in s["people"] for u in p["thumbnail_urls"]] + [
            f["url"] for f in m["timelapse"]] + [o["url"] for o in s["outputs"]]:
        assert url.startswith(("/thumb/", "/file/"))


def test_every_url_the_api_gives_is_served(client):
    s = client.get("/api/status").get_json()
    urls = [u for p in s["people"] for u in p["thumbnail_urls"] + p["coverage_urls"]]
    urls += [f["url"] for p in s["people"] for f in p["flagged"]]
    urls += [f["url"] for m in s["models"] for f in m["timelapse"]] + [m["chart_url"] for m in s["models"]]
    urls += [o["url"] for o in s["outputs"]]
    urls += [o["manifest_url"] for o in s["outputs"] if o["manifest_url"]]
    assert len(urls) > 15
    for url in urls:
        r = client.get(url)
        assert r.status_code == 200, url
        assert r.headers["X-Content-Type-Options"] == "nosniff"


def test_loss_chart_is_svg_with_both_sides(client):
    r = client.get("/models/demo/loss.svg")
    assert r.status_code == 200 and r.mimetype == "image/svg+xml"
    svg = r.get_data(as_text=True)
    assert svg.startswith("<svg") and "<script" not in svg
    for side in ("a", "b"):
        trend = re.search(rf'class="trend side-{side}" points="([^"]+)"', svg)
        assert trend and len(trend.group(1).split()) > 100
    assert client.get("/models/nothere/loss.svg").status_code == 404
    assert client.get("/models/..%2F..%2Fetc/loss.svg").status_code == 404


def test_files_served_with_types_and_ranges(client):
    r = client.get("/file/models/demo/timelapse/00000750.jpg")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR) is not None
    r = client.get("/file/output/demo/alice_swapped.mp4", headers={"Range": "bytes=0-99"})
    assert r.status_code == 206 and r.mimetype == "video/mp4" and len(r.data) == 100
    r = client.get("/file/output/demo/alice_swapped.provenance.json")
    assert r.status_code == 200 and r.get_json()["synthetic"] is True
    r = client.get("/thumb/approved/bob/bob_clip/" + list_faces(
        Path(client.application.extensions["facedrop"].root) / "approved/bob/bob_clip")[0].name + "?s=64")
    assert r.status_code == 200 and r.mimetype == "image/jpeg"
    thumb = cv2.imdecode(np.frombuffer(r.data, np.uint8), cv2.IMREAD_COLOR)
    assert max(thumb.shape[:2]) == 64


def test_metrics_prometheus_text(client):
    r = client.get("/metrics")
    assert r.status_code == 200 and r.mimetype == "text/plain"
    assert "version=0.0.4" in r.headers["Content-Type"]
    text = r.get_data(as_text=True)
    samples = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"# (HELP|TYPE) facedrop_\w+ ", line), line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    assert samples['facedrop_model_iterations{model="demo"}'] == 750
    assert 0 < samples['facedrop_model_loss{model="demo",side="a"}'] < 0.1
    assert samples["facedrop_faces_extracted"] > 100
    assert "facedrop_queue_length" in samples
    assert 'facedrop_jobs{status="queued"}' in samples


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE"])
@pytest.mark.parametrize("path", ["/", "/api/status", "/metrics", "/file/models/demo/loss.csv",
                                  "/no/such/page", "/static/style.css"])
def test_only_get_and_head(client, method, path):
    r = client.open(path, method=method)
    assert r.status_code == 405
    assert r.headers["Allow"] == "GET, HEAD"


def test_head_works(client):
    r = client.head("/api/status")
    assert r.status_code == 200 and r.data == b""


@pytest.mark.parametrize("url", [
    "/file/../../etc/passwd",
    "/file/%2e%2e/%2e%2e/etc/passwd",
    "/file/review/%2e%2e/%2e%2e/%2e%2e/etc/passwd.png",
    "/file/review/..%2f..%2f..%2fetc%2fpasswd",
    "/file//etc/passwd",
    "/file/%2Fetc%2Fpasswd",
    "/file/review/alice/alice_clip/..%5c..%5c..%5cfoo.png",
    "/file/.facedrop/state.db",
    "/file/models/demo/../../.facedrop/state.db",
    "/file/review/alice/alice_clip/escape.png",          # symlink out of the root
    "/thumb/review/alice/alice_clip/escape.png",
    "/file/output/demo/db_swapped.mp4",                  # symlink to the database
    "/file/approved/eve/linked/face.png",                # symlinked folder out of the root
    "/file/approved/eve/linked/secret.txt",
    "/file/inbox/alice/private.png",                     # a folder that serves nothing
    "/file/failed/extract/broken.mp4",
    "/file/models/demo/model.toml",                      # a type the folder does not serve
    "/file/models/demo/state.json",
    "/file/review/alice/alice_clip/alignments.json.gz",
    "/file/review/alice/alice_clip/%00.png",
    "/thumb/output/demo/alice_swapped.mp4",
    "/models/%2e%2e/loss.svg",
])
def test_traversal_and_unlisted_files_refused(client, url):
    r = client.get(url)
    assert r.status_code == 404, (url, r.status_code)
    assert b"top secret" not in r.data and b"root:" not in r.data


def test_absolute_path_outside_root_refused(client, outside):
    for prefix in ("/file", "/thumb"):
        r = client.get(f"{prefix}/{outside}/face.png")
        assert r.status_code == 404
        r = client.get(f"{prefix}//{outside}/face.png")
        assert r.status_code == 404


def test_allowed_symlink_inside_root_is_served(client):
    r = client.get("/file/output/demo/again_swapped.mp4")
    assert r.status_code == 200 and r.mimetype == "video/mp4"


def test_security_headers(client):
    for url in ("/", "/api/status", "/metrics", "/models/demo/loss.svg", "/nope"):
        r = client.get(url)
        h = r.headers
        assert h["X-Content-Type-Options"] == "nosniff"
        csp = h["Content-Security-Policy"]
        assert "default-src 'none'" in csp and "script-src 'self'" in csp
        assert "unsafe-eval" not in csp and "http" not in csp
        assert h["X-Frame-Options"] == "DENY"


def test_app_is_not_in_debug_mode(client):
    app = client.application
    assert app.debug is False and app.testing is False
    r = client.get("/file/" + "x" * 5000)
    assert r.status_code == 404 and b"Traceback" not in r.data


def test_missing_database_says_daemon_has_not_run(tmp_path):
    from web_status.app import create_app

    for d in ("review", "approved", "models", "output", "failed"):
        (tmp_path / d).mkdir()
    c = create_app(tmp_path, status_ttl=0).test_client()
    s = c.get("/api/status").get_json()
    assert s["daemon"]["state"] == "not-run"
    assert s["running"] == [] and s["queue"] == [] and s["people"] == []
    html = c.get("/").get_data(as_text=True)
    assert "daemon has not run yet" in html
    assert c.get("/metrics").status_code == 200
    # an empty directory, not even the hot folders: still a page
    bare = tmp_path / "bare"
    bare.mkdir()
    assert create_app(bare).test_client().get("/").status_code == 200


def test_jobs_from_the_state_database(client):
    s = client.get("/api/status").get_json()
    assert s["daemon"]["state"] == "running" and RUNNING_INPUT in s["daemon"]["message"]
    assert s["counts"]["jobs"] == {"done": 2, "failed": 1, "paused": 1, "queued": 2, "running": 1}
    assert s["counts"]["queue_length"] == 3
    (job,) = s["running"]
    assert job["kind"] == "extract" and job["name"] == RUNNING_INPUT
    assert job["input"] == f"inbox/carol/{RUNNING_INPUT}"   # relative to the root
    assert job["progress"] == 0.25 and (job["done"], job["total"], job["unit"]) == (30, 120, "frames")
    assert job["elapsed_s"] >= 0
    # queue in the order the worker runs it: conversions before (paused) training
    assert [(q["kind"], q["name"], q["status"]) for q in s["queue"]] == [
        ("convert", "clip1.mp4", "queued"), ("convert", "clip2.mp4", "queued"),
        ("train", "demo", "paused")]
    fail = next(f for f in s["failures"] if f["source"] == "job")
    assert fail["file"] == "broken.mov" and "no video stream" in fail["reason"]
    (model,) = s["models"]
    assert model["state"] == "paused" and model["loss"] == {"a": 0.041, "b": 0.052}


def test_page_shows_running_job_and_queue(client):
    html = client.get("/").get_data(as_text=True)
    tags = parse_tags(html)
    assert ("progress", {"max": "1000", "value": "250"}) in tags
    assert "30 / 120 frames" in html
    assert "&lt;i&gt;carol&lt;i&gt; holiday.mp4" in html and "<i>carol" not in html
    assert "on &lt;b&gt;gpu-box&lt;/b&gt; (10.0.0.7)" in html  # where it runs, escaped
    queue = html[html.index('id="queue"'):html.index("</table>", html.index('id="queue"'))]
    assert queue.index("clip1.mp4") < queue.index("clip2.mp4") < queue.index('class="name">demo<')
    assert "no video stream in &lt;u&gt;broken.mov&lt;/u&gt;" in html


def test_metrics_count_jobs_by_status(client):
    text = client.get("/metrics").get_data(as_text=True)
    for status, n in {"done": 2, "failed": 1, "paused": 1, "queued": 2, "running": 1}.items():
        assert f'facedrop_jobs{{status="{status}"}} {n}\n' in text
    assert "facedrop_queue_length 3\n" in text
    assert "facedrop_daemon_up 1\n" in text


SCHEMA = {
    "api_version": int, "generated": str, "root": str, "build_ms": float,
    "daemon": {"state": str, "message": str, "db": bool, "heartbeat": (str, None), "url": (str, None)},
    "counts": {"jobs": dict, "queue_length": int, "faces_extracted": int, "people": int,
               "models": int, "outputs": int, "failures": int},
    "running": [{"id": int, "kind": str, "name": str, "input": str, "status": str,
                 "progress": (float, None), "done": (int, None), "total": (int, None),
                 "unit": (str, None), "rate": (float, None), "eta_s": (float, None),
                 "elapsed_s": (float, None), "message": (str, None), "model": (str, None),
                 "node": (str, None), "created": (str, None), "started": (str, None)}],
    "queue": [{"id": int, "kind": str, "name": str, "status": str, "priority": int,
               "created": str, "model": (str, None)}],
    "people": [{"name": str, "approved_faces": int, "review_faces": int, "thumbnails": [str],
                "thumbnail_urls": [str], "coverage_urls": [str],
                "flagged": [{"name": str, "reasons": [str], "notes": [str], "url": str}]}],
    "models": [{"name": str, "a": str, "b": str, "trainer": (str, None), "state": str,
                "iterations": (int, None), "target_iterations": (int, None),
                "progress": (float, None), "loss": {"a": (float, None), "b": (float, None)},
                "loss_points": int, "chart_url": str,
                "precision": {"policy": str, "setting": (str, None), "images_per_second": dict},
                "threads": {"layout": str, "setting": (str, None), "images_per_second": dict},
                "learning_rate": (float, None), "warp_off_from": (int, None),
                "diverged": [{"iteration": int, "learning_rate": float, "at": (str, None)}],
                "timelapse": [{"iterations": int, "url": str}],
                "snapshots": [{"iterations": int, "name": str, "modified": (str, None)}]}],
    "outputs": [{"model": str, "name": str, "url": str, "size": int, "modified": (str, None),
                 "manifest": (dict, None), "manifest_url": (str, None), "summary": dict}],
    "failures": [{"stage": str, "file": str, "reason": str, "when": (str, None), "source": str}],
    "digest": {"people": str, "models": str, "outputs": str, "failures": str},
}


def check_schema(value, spec, where="status"):
    """A small structural check: dicts list required keys, lists give the item spec."""
    if isinstance(spec, dict):
        assert isinstance(value, dict), where
        for key, sub in spec.items():
            assert key in value, f"{where}.{key} missing"
            check_schema(value[key], sub, f"{where}.{key}")
    elif isinstance(spec, list):
        assert isinstance(value, list), where
        for i, item in enumerate(value):
            check_schema(item, spec[0], f"{where}[{i}]")
    else:
        types = spec if isinstance(spec, tuple) else (spec,)
        ok = any(value is None if t is None else
                 (isinstance(value, (int, float)) and not isinstance(value, bool)) if t is float
                 else isinstance(value, t) and not (t is int and isinstance(value, bool))
                 for t in types)
        assert ok, f"{where}: {value!r} is not {types}"


def test_api_status_matches_schema(client):
    s = client.get("/api/status").get_json()
    check_schema(s, SCHEMA)
    assert s["running"] and s["queue"] and s["people"] and s["models"] and s["outputs"]
    assert any(p["flagged"] for p in s["people"]) and s["failures"]


def test_database_is_opened_read_only(root):
    from web_status import queries

    conn = queries.connect(root / ".facedrop" / "state.db")
    try:
        with pytest.raises(Exception, match="readonly|read-only|query_only|attempt to write"):
            conn.execute("UPDATE jobs SET status = 'done'")
        with pytest.raises(Exception):
            conn.execute("PRAGMA query_only = OFF").fetchall()
            conn.execute("INSERT INTO daemon VALUES ('x', 'y')")
    finally:
        conn.close()


def test_page_reads_while_the_daemon_holds_a_write_transaction(root, client):
    from daemon.store import Store

    writer = Store(root / ".facedrop" / "state.db")
    try:
        writer.db.execute("BEGIN IMMEDIATE")
        writer.db.execute("UPDATE jobs SET message = 'mid-write' WHERE status = 'running'")
        started = time.perf_counter()
        r = client.get("/api/status")
        assert r.status_code == 200 and time.perf_counter() - started < 2
        assert r.get_json()["running"][0]["message"] != "mid-write"   # not committed yet
        writer.db.execute("ROLLBACK")
    finally:
        writer.close()


@pytest.fixture()
def small(tmp_path):
    """An empty root with its own state database, for tests that change the state."""
    from daemon.store import Store

    from web_status.app import create_app

    store = Store(tmp_path / ".facedrop" / "state.db")
    yield store, create_app(tmp_path, status_ttl=0).test_client()
    store.close()


def test_rate_and_eta_follow_progress(small):
    store, client = small
    conv = store.add_job("convert", "targets/demo/clip.mp4", model="demo")
    store.transition(conv, "running")
    train = store.add_job("train", "models/demo", model="demo")
    store.transition(train, "running")
    # training resumed from a save at 5000: absolute iterations, so only the slope counts
    store.update(conv, done=10, total=110, unit="frames", progress=10 / 110)
    store.update(train, done=5000, total=6000, unit="iterations", progress=5000 / 6000)
    store.set_daemon(heartbeat=time.time(), state="running", message="")
    first = {j["kind"]: j for j in client.get("/api/status").get_json()["running"]}
    assert first["train"]["rate"] is None and first["train"]["eta_s"] is None
    time.sleep(1.2)
    store.update(conv, done=34, total=110, progress=34 / 110)
    store.update(train, done=5012, total=6000, progress=5012 / 6000)
    jobs = {j["kind"]: j for j in client.get("/api/status").get_json()["running"]}
    for kind, delta, left in (("convert", 24, 76), ("train", 12, 988)):
        rate = jobs[kind]["rate"]
        assert delta / 1.6 < rate < delta / 1.15, (kind, rate)
        assert jobs[kind]["eta_s"] == pytest.approx(left / rate)
    html = client.get("/").get_data(as_text=True)
    assert "iterations/s" in html and "ETA" in html


def test_daemon_liveness_from_heartbeat(small):
    store, client = small
    store.set_daemon(heartbeat=time.time() - 300, state="running", message="idle")
    s = client.get("/api/status").get_json()
    assert s["daemon"]["state"] == "stale" and "no heartbeat" in s["daemon"]["message"]
    assert "facedrop_daemon_up 0" in client.get("/metrics").get_data(as_text=True)
    store.set_daemon(heartbeat=time.time(), state="stopped", message="stopped")
    s = client.get("/api/status").get_json()
    assert s["daemon"]["state"] == "stopped" and "not running" in s["daemon"]["message"]
    assert "not running" in client.get("/").get_data(as_text=True)
    store.set_daemon(heartbeat=time.time(), state="running", message="idle")
    s = client.get("/api/status").get_json()
    assert s["daemon"]["state"] == "running"
    assert 'class="banner hidden"' in client.get("/").get_data(as_text=True)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_demo_runs_the_pipeline_and_the_daemon_serves_this_page(tmp_path):
    """`facedrop demo` end to end on a fresh root (real extraction, training, conversion by the
    real daemon), then the page as `facedrop run` serves it, then Ctrl-C stops everything."""
    import signal
    import subprocess
    import sys
    import threading
    import urllib.request

    port = free_port()
    root = tmp_path / "demo"
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "demo", "--root", str(root), "--port", str(port),
         "--minutes", "0.1", "--seconds", "3", "--timeout", "5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # Ctrl-C works even where this runs as a background job, which ignores SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines: list[str] = []
    result_seen = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line.rstrip())
            if line.startswith("status page:"):
                result_seen.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        assert result_seen.wait(300), "demo did not finish:\n" + "\n".join(lines)
        out = "\n".join(lines)
        for step in range(1, 9):
            assert f"[{step}/8]" in out
        result = root / "output" / "demo" / "eileen_target_swapped.mp4"
        assert f"result:      {result}" in out
        manifest = json.loads(result.with_name("eileen_target_swapped.provenance.json").read_text())
        assert manifest["synthetic"] is True and manifest["model"]["name"] == "demo"
        from hotfolders.video import probe

        assert probe(result).frames == 75
        # the daemon is still up, serving this status page with the demo's work
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 20  # the page rebuilds its status at most once a second
        while True:
            with urllib.request.urlopen(f"{base}/api/status", timeout=10) as r:
                s = json.load(r)
            if s["outputs"] or time.time() > deadline:
                break
            time.sleep(0.5)
        assert s["daemon"]["state"] == "running"
        people = {p["name"]: p for p in s["people"]}
        assert people["eileen"]["approved_faces"] >= 8 and people["grace"]["approved_faces"] >= 8
        (model,) = s["models"]
        assert model["a"] == "eileen" and model["b"] == "grace" and model["iterations"] > 0
        assert model["timelapse"] and model["loss_points"] > 0
        assert [o["name"] for o in s["outputs"]] == ["eileen_target_swapped.mp4"]
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:
            html = r.read().decode()
        assert "eileen_target_swapped.mp4" in html and "/models/demo/loss.svg" in html
        with urllib.request.urlopen(f"{base}{model['chart_url']}", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("image/svg+xml")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, "\n".join(lines)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_pose_coverage_picture_shown_for_the_model_and_its_people(client):
    s = client.get("/api/status").get_json()
    (model,) = s["models"]
    assert model["coverage_urls"] == ["/file/models/demo/coverage.png"]
    assert 0.0 <= model["coverage_fraction"] <= 1.0
    people = {p["name"]: p for p in s["people"]}
    for name in ("alice", "bob"):
        assert people[name]["coverage_urls"] == ["/file/models/demo/coverage.png"]
    r = client.get("/file/models/demo/coverage.png")
    assert r.status_code == 200 and r.data.startswith(b"\x89PNG")
    assert client.get("/file/models/demo/coverage.json").status_code == 404
    html = client.get("/").get_data(as_text=True)
    assert "pose coverage of bob for alice" in html


def test_folder_listings_follow_every_change_and_skip_unchanged_folders(tmp_path, monkeypatch):
    """A folder is re-read when it changed (even twice within one clock tick) and only then."""
    import os

    from web_status import folders

    source = tmp_path / "review" / "alice" / "clip"
    source.mkdir(parents=True)
    for i in range(3):
        (source / f"clip_{i:06d}_0.png").write_bytes(b"x")

    def faces() -> int:
        (person,) = folders.people(tmp_path)
        return person["review_faces"]

    assert faces() == 3
    (source / "clip_000003_0.png").write_bytes(b"x")  # within the same second: seen at once
    assert faces() == 4
    past = time.time() - 10
    os.utime(source, (past, past))  # the folder has been quiet for a while
    reads = []
    real_scandir = os.scandir
    monkeypatch.setattr(folders.os, "scandir", lambda p: reads.append(str(p)) or real_scandir(p))
    assert faces() == 4 and str(source) in reads  # read once more, now trusted
    reads.clear()
    assert faces() == 4 and str(source) not in reads  # unchanged: not read again
    (source / "clip_000001_0.png").unlink()  # a person deletes a face
    assert faces() == 3 and str(source) in reads
    (source / "clip_000002_0.png").rename(source / "0001_clip_000002_0.png")
    (person,) = folders.people(tmp_path)
    assert "0001_clip_000002_0.png" in person["review"][0]["sample"]


def test_swapped_photos_are_listed_with_their_manifest(tmp_path):
    from web_status import folders

    out = tmp_path / "output" / "m"
    out.mkdir(parents=True)
    (out / "portrait_swapped.png").write_bytes(b"png")
    (out / "portrait_swapped.provenance.json").write_text(json.dumps(
        {"input": {"name": "portrait.jpg", "sha256": "ab"}, "model": {"name": "m"}}))
    (out / "clip_swapped.mp4").write_bytes(b"mp4")
    listed = {o["name"]: o for o in folders.outputs(tmp_path)}
    assert set(listed) == {"portrait_swapped.png", "clip_swapped.mp4"}
    photo = listed["portrait_swapped.png"]
    assert photo["manifest_path"] == "output/m/portrait_swapped.provenance.json"
    assert photo["summary"]["input"] == "portrait.jpg"
    assert listed["clip_swapped.mp4"]["manifest"] is None


@pytest.mark.parametrize("value, text", [(3e-4, "3e-4"), (1.5e-4, "1.5e-4"), (7.5e-5, "7.5e-5"),
                                         (1.25e-5, "1.25e-5"), ("x", "–"), (None, "–")])
def test_learning_rates_read_as_people_write_them(value, text):
    from web_status.fmt import rate

    assert rate(value) == text


@pytest.mark.parametrize("value, text", [(387.4, "387 img/s"), (10.0, "10 img/s"),
                                         (3.56, "3.6 img/s"), (3.44, "3.4 img/s"),
                                         ("x", "–"), (None, "–")])
def test_training_speeds_keep_a_decimal_below_10_img_s(value, text):
    from web_status.fmt import speed

    assert speed(value) == text  # whole numbers made dfaker's 3.4 against 3.6 read 3 against 4
