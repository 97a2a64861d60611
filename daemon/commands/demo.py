"""Run the whole pipeline once on sample videos: a newcomer's first five minutes.

Builds short videos of two people from public-domain photos that ship inside installed
packages (the astronaut Eileen Collins from scikit-image, Grace Hopper from matplotlib),
creates a root, starts the daemon (`facedrop run`) on it, drops the videos into inbox/,
waits for the faces in review/, approves them (deleting the faces the review report flags,
as a person would), writes models/demo/model.toml, lets the daemon train a small model for a
few minutes on the CPU, drops a target video of Eileen into targets/demo/ and waits for the
swapped video in output/demo/. Prints the status page URL and the path of the result; the
daemon keeps running (and training) until Ctrl-C unless --stop is given.

No network is needed. The result is labelled as synthetic like every facedrop output.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from hotfolders import atomic

PEOPLE = {"eileen": "astronaut", "grace": "grace"}  # folder name -> sample photo
A, B = "eileen", "grace"
MODEL = "demo"
TARGET = "eileen_target.mp4"
MIN_FACES_AFTER_REVIEW = 24


class DemoError(Exception):
    """A step of the demo could not finish; the message says what to look at."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=Path("facedrop-demo"),
                        help="folder for the demo (default: ./facedrop-demo; created if missing)")
    parser.add_argument("--minutes", type=float, default=3.0, metavar="N",
                        help="minutes of training before the target is converted (default: 3)")
    parser.add_argument("--host", default="127.0.0.1", help="status page address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="status page port (default: 8765)")
    parser.add_argument("--seconds", type=float, default=8.0, metavar="S",
                        help="length of each sample video of a person (default: 8)")
    parser.add_argument("--timeout", type=float, default=20.0, metavar="MIN",
                        help="give up on a step after this many minutes (default: 20)")
    parser.add_argument("--stop", action="store_true",
                        help="stop the daemon once the result is written (default: keep it "
                             "running so you can look at the status page)")


def say(msg: str) -> None:
    print(msg, flush=True)


def run(args: argparse.Namespace) -> int:
    root = args.root.expanduser().resolve()
    demo = Demo(root, args.host, args.port, timeout=args.timeout * 60,
                train_seconds=args.minutes * 60, sample_seconds=args.seconds)
    try:
        result = demo.run()
    except DemoError as exc:
        print(f"facedrop demo: error: {exc}", file=sys.stderr)
        tail = demo.log_tail()
        if tail:
            print(f"last lines of the daemon log ({demo.log_path}):\n{tail}", file=sys.stderr)
        demo.stop_daemon()
        return 1
    except KeyboardInterrupt:
        say("\ninterrupted: stopping the daemon (training saves first) ...")
        demo.stop_daemon()
        return 130
    except BaseException:
        demo.stop_daemon()  # never leave a daemon behind
        raise
    say("")
    say(f"result:      {result}")
    manifest = result.with_name(result.stem + ".provenance.json")
    if manifest.exists():
        say(f"provenance:  {manifest}")
    say(f"status page: {demo.url}")
    say("The result is a synthetic video (labelled in its metadata, its manifest and on screen). "
        "Only swap faces of people who have given their consent.")
    if args.stop:
        demo.stop_daemon()
        return 0
    say(f"The daemon keeps running (training goes on). Open {demo.url}; press Ctrl-C to stop.")
    try:
        while demo.proc is not None and demo.proc.poll() is None:
            time.sleep(1)
    except KeyboardInterrupt:
        say("\nstopping the daemon (training saves first) ...")
    demo.stop_daemon()
    return 0


class Demo:
    """The demo's steps; each waits with a deadline and a message that says what is missing."""

    def __init__(self, root: Path, host: str, port: int, timeout: float, train_seconds: float,
                 sample_seconds: float) -> None:
        self.root = root
        self.host, self.port = host, port
        self.timeout = timeout
        self.train_seconds = train_seconds
        self.sample_seconds = sample_seconds
        self.proc: subprocess.Popen | None = None
        self.log_path = root / ".facedrop" / "demo-daemon.log"
        shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
        self.url = f"http://{shown}:{port}/"

    # -- steps -------------------------------------------------------------------------

    def run(self) -> Path:
        say(f"facedrop demo in {self.root}")
        self.init_root()
        videos = self.make_samples()
        self.start_daemon()
        say(f"      status page: {self.url}")
        dropped = [self.drop(videos[p], self.root / "inbox" / p) for p in (A, B)
                   if not self._extracted(p, videos[p].stem)]
        say(f"[4/8] dropped {', '.join(d.name for d in dropped) or 'nothing new'} into inbox/; "
            "waiting for the faces in review/ ...")
        self.wait_for_faces(videos)
        self.approve()
        self.write_model()
        self.train()
        return self.convert(videos["target"])

    def init_root(self) -> None:
        if (self.root / "facedrop.toml").exists():
            say(f"[1/8] using the existing root {self.root}")
            return
        say(f"[1/8] facedrop init {self.root}")
        self.facedrop("init", str(self.root))
        # quicker for a demo: files settle in 1 s, and 256 px faces (the small model uses 64)
        config = self.root / "facedrop.toml"
        text = config.read_text(encoding="utf-8")
        text = re.sub(r"(?m)^settle_seconds = [0-9.]+", "settle_seconds = 1.0", text)
        text = re.sub(r"(?m)^size = 512\b", "size = 256", text)
        config.write_text(text, encoding="utf-8")

    def make_samples(self) -> dict[str, Path]:
        """Sample videos of both people and a target of A, cached in .facedrop/demo-media/."""
        from hotfolders.samples import Motion, make_video

        media = self.root / ".facedrop" / "demo-media"
        media.mkdir(parents=True, exist_ok=True)
        wanted = {A: (PEOPLE[A], self.sample_seconds, None, 440.0),
                  B: (PEOPLE[B], self.sample_seconds, None, 660.0),
                  # the target moves differently from the training video of the same person
                  "target": (PEOPLE[A], 3.0, Motion(
                      angle=lambda t: 6.0 * math.sin(t * 2.1), scale=lambda t: 1.05,
                      dx=lambda t: 25.0 * math.cos(t), dy=lambda t: 0.0), 550.0)}
        out = {}
        say("[2/8] building sample videos from public-domain photos ...")
        for key, (face, seconds, motion, tone) in wanted.items():
            name = TARGET if key == "target" else f"{key}_sample.mp4"
            path = media / name
            if not path.exists():
                tmp = media / f".{name}.tmp.mp4"
                make_video(tmp, face, seconds=seconds, motion=motion, audio_hz=tone)
                os.replace(tmp, path)
            out[key] = path
        say(f"      {', '.join(p.name for p in out.values())} in {media}")
        return out

    def start_daemon(self) -> None:
        if self._get("/healthz") is not None:
            raise DemoError(f"something already answers on {self.url}: stop it, or pick another "
                            "port with --port")
        with socket.socket() as probe:
            try:
                probe.bind((self.host, self.port))
            except OSError as exc:
                raise DemoError(f"cannot use {self.host}:{self.port} for the status page ({exc}); "
                                "pick another port with --port") from None
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "daemon.cli", "run", "--root", str(self.root),
               "--host", self.host, "--port", str(self.port)]
        say(f"[3/8] starting the daemon: facedrop run --root {self.root} --port {self.port} "
            f"(log: {self.log_path})")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        self.wait("the status page to answer", lambda: self._get("/healthz") is not None,
                  timeout=180)

    def drop(self, video: Path, folder: Path) -> Path:
        """Copy ``video`` into a hot folder the way a careful person would: under a hidden
        temporary name first, renamed when complete (the daemon also waits for files to
        settle, so a plain slow copy would work too)."""
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / video.name
        tmp = folder / f".{video.name}.part"
        shutil.copyfile(video, tmp)
        os.replace(tmp, target)
        return target

    def _extracted(self, person: str, stem: str) -> bool:
        """Faces of this sample already in review/ or approved/ (a demo run before)."""
        return any(any((self.root / area / person / stem).glob("*.png"))
                   for area in ("review", "approved"))

    def wait_for_faces(self, videos: dict[str, Path]) -> None:
        def ready() -> bool:
            if not all(self._extracted(p, videos[p].stem) for p in (A, B)):
                return False
            s = self.status()
            return not any(j.get("kind") == "extract"
                           for j in s.get("running", []) + s.get("queue", []))

        self.wait("faces of both people in review/", ready)
        for person in (A, B):
            for area in ("review", "approved"):
                n = len(list((self.root / area / person / videos[person].stem).glob("*.png")))
                if n:
                    say(f"      {person}: {n} faces in {area}/{person}/{videos[person].stem}/")

    def approve(self) -> None:
        """Delete the faces the review report flags (if enough stay), then move each set from
        review/<person>/ to approved/<person>/: what a person does by hand."""
        say("[5/8] reviewing: deleting flagged faces, moving the sets to approved/ ...")
        if not any((self.root / "review" / p).is_dir() and any((self.root / "review" / p).iterdir())
                   for p in (A, B)):
            say("      nothing left in review/: approved in an earlier run")
        for person in (A, B):
            folder = self.root / "review" / person
            for source in sorted(folder.iterdir()) if folder.is_dir() else []:
                if not source.is_dir() or source.name.startswith("."):
                    continue
                deleted = self._delete_flagged(source)
                dest = self.root / "approved" / person / source.name
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(source, dest)
                kept = len(list(dest.glob("*.png")))
                say(f"      {person}/{source.name}: {kept} faces approved"
                    + (f" ({deleted} flagged faces deleted)" if deleted else ""))

    def _delete_flagged(self, folder: Path) -> int:
        try:
            report = json.loads((folder / "review.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return 0
        flagged = [i["name"] for i in report.get("items", []) if i.get("reasons")]
        faces = list(folder.glob("*.png"))
        if len(faces) - len(flagged) < MIN_FACES_AFTER_REVIEW:
            return 0  # too few would stay: keep them all, the demo must train
        n = 0
        for name in flagged:
            path = folder / name
            if path.parent == folder and path.exists():
                path.unlink()
                n += 1
        return n

    def write_model(self) -> None:
        folder = self.root / "models" / MODEL
        folder.mkdir(parents=True, exist_ok=True)
        toml = MODEL_TOML.format(a=A, b=B)
        path = folder / "model.toml"
        if path.exists() and path.read_text(encoding="utf-8") == toml:
            say(f"[6/8] models/{MODEL}/model.toml is already there")
            return
        atomic.write_text(path, toml)
        say(f"[6/8] wrote models/{MODEL}/model.toml: {A} -> {B}, lightweight trainer")

    def train(self) -> None:
        say("      waiting for the first training iterations (loading TensorFlow) ...")
        self.wait("training to start", lambda: ((self.model() or {}).get("iterations") or 0) > 0)
        say(f"[7/8] training for {self.train_seconds / 60:.1f} minutes on the CPU "
            f"(follow the loss curve on {self.url}) ...")
        end = time.monotonic() + self.train_seconds
        last_print = 0.0
        while time.monotonic() < end:
            self._check_alive()
            m = self.model() or {}
            if m.get("state") in ("stopped", "failed"):
                if m["state"] == "failed":
                    raise DemoError("training failed: see the failures on the status page")
                break
            if time.monotonic() - last_print > 15:
                m = self.model() or {}
                loss = m.get("loss") or {}
                say(f"      iteration {m.get('iterations') or 0}: loss A {_f(loss.get('a'))}, "
                    f"B {_f(loss.get('b'))}")
                last_print = time.monotonic()
            time.sleep(1)

    def convert(self, video: Path) -> Path:
        result = self.root / "output" / MODEL / f"{video.stem}_swapped.mp4"
        for old in (result, result.with_name(result.stem + ".provenance.json"),
                    self.root / "targets" / MODEL / video.name):
            old.unlink(missing_ok=True)  # a result of an earlier demo run: make a fresh one
        target = self.drop(video, self.root / "targets" / MODEL)
        say(f"[8/8] dropped {target.name} into targets/{MODEL}/; waiting for "
            f"output/{MODEL}/{result.name} ...")

        def done() -> bool:
            self._check_failed(target.name)
            return result.exists()

        self.wait(f"output/{MODEL}/{result.name}", done)
        return result

    # -- helpers -----------------------------------------------------------------------

    def facedrop(self, *argv: str) -> None:
        proc = subprocess.run([sys.executable, "-m", "daemon.cli", *argv], capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise DemoError(f"facedrop {' '.join(argv)} failed: "
                            f"{(proc.stderr or proc.stdout).strip()[-500:]}")

    def _get(self, path: str) -> bytes | None:
        try:
            with urllib.request.urlopen(self.url.rstrip("/") + path, timeout=5) as resp:
                return resp.read()
        except (urllib.error.URLError, OSError):
            return None

    def status(self) -> dict[str, Any]:
        data = self._get("/api/status")
        if data is None:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            return {}

    def model(self) -> dict[str, Any] | None:
        return next((m for m in self.status().get("models", []) if m.get("name") == MODEL), None)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise DemoError(f"the daemon exited with code {self.proc.returncode}")

    def _check_failed(self, name: str) -> None:
        for report in (self.root / "failed").glob(f"*/{name}.error.txt"):
            raise DemoError(f"the daemon could not process {name}: "
                            f"{report.read_text(encoding='utf-8', errors='replace').strip()[:800]}")

    def wait(self, what: str, ready: Callable[[], bool], timeout: float | None = None) -> None:
        """Poll ``ready`` until true; report the running job now and then; fail with a clear
        message after the deadline or when the daemon dies."""
        deadline = time.monotonic() + (timeout or self.timeout)
        last = 0.0
        while True:
            self._check_alive()
            for person in (A, B):
                self._check_failed(f"{person}_sample.mp4")
            if ready():
                return
            if time.monotonic() > deadline:
                s = self.status()
                running = "; ".join(_job(j) for j in s.get("running", [])) or "nothing running"
                raise DemoError(
                    f"timed out after {(timeout or self.timeout) / 60:.0f} min waiting for "
                    f"{what} ({running}, {len(s.get('queue', []))} queued). The machine may be "
                    f"slower than expected: try a longer --timeout, check {self.url} and the "
                    f"daemon log {self.log_path}.")
            if time.monotonic() - last > 10:
                s = self.status()
                if s.get("running"):
                    say("      " + "; ".join(_job(j) for j in s["running"]))
                last = time.monotonic()
            time.sleep(0.5)

    def stop_daemon(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


MODEL_TOML = """\
# written by `facedrop demo`: a small model that trains for real on a CPU
a = "{a}"
b = "{b}"

[train]
trainer = "lightweight"
batch_size = 8
max_iterations = 3000
save_every = 25

[convert]
# a first result after a few minutes; converted again once the model stops by itself
convert_when = "first-save"
"""


def _f(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else "-"


def _job(job: dict[str, Any]) -> str:
    pct = f" {job['progress'] * 100:.0f}%" if job.get("progress") is not None else ""
    eta = f", ETA {int(job['eta_s'])} s" if job.get("eta_s") is not None else ""
    return f"{job.get('kind', '?')} {job.get('name', '')}{pct}{eta}"
