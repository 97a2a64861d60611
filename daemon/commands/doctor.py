"""Check this installation and root, and say what is wrong: run it when something is off.

Prints one line per check with a verdict (ok, warn, FAIL) and what it found: Python and
package versions, the MediaPipe face models, TensorFlow's devices, the precision `auto`
chooses here (it times a few training steps in each: a few seconds), free disk under the
root, whether the root's folders are writable, whether inotify sees changes on the root
(network shares need `poll_seconds`), whether the status page port is free, where jobs run
(with ``executor = "ray"``: that the cluster answers and each node sees the root), and chromium
(only the browser test needs it). Exit code 0 when nothing failed, 1 with the reasons
otherwise.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from importlib import metadata
from pathlib import Path

OK, WARN, FAIL = "ok", "warn", "FAIL"
NETWORK_FS = {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "fuse.sshfs", "fuse.rclone",
              "afs", "ceph", "glusterfs", "fuse.glusterfs"}
MODELS = ("face_detection/face_detection_short_range.tflite",
          "face_detection/face_detection_full_range_sparse.tflite",
          "face_landmark/face_landmark_with_attention.tflite")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, default=None,
                        help="facedrop root (default: $FACEDROP_ROOT, else ./facedrop-data)")
    parser.add_argument("--config", type=Path, default=None, metavar="FILE",
                        help="settings file (default: ROOT/facedrop.toml)")


# --- the checks: each returns (verdict, what it found) -------------------------------------

def check_python() -> tuple[str, str]:
    found = ".".join(map(str, sys.version_info[:3]))
    return (OK if sys.version_info[:2] == (3, 11) else FAIL,
            f"{found} ({sys.executable})" + ("" if sys.version_info[:2] == (3, 11)
                                             else "; facedrop needs Python 3.11"))


def check_packages() -> tuple[str, str]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    found, problems = [], []
    rules = {"facedrop": None, "tensorflow": lambda v: v.startswith("2.19."),
             "mediapipe": lambda v: v == "0.10.21", "numpy": lambda v: int(v.split(".")[0]) < 2,
             "protobuf": lambda v: int(v.split(".")[0]) < 5, "opencv-contrib-python": None,
             "av": None, "flask": None, "waitress": None, "watchdog": None,
             "sqlite-utils": None, "apscheduler": None}
    for name, rule in rules.items():
        v = version(name)
        if v is None:
            problems.append(f"{name} is missing")
        elif rule is not None and not rule(v):
            problems.append(f"{name} {v} does not fit (see pyproject.toml)")
        else:
            found.append(f"{name} {v}")
    if version("opencv-python") or version("opencv-python-headless"):
        problems.append("a second OpenCV package is installed (keep only "
                        "opencv-contrib-python)")
    return (FAIL if problems else OK, "; ".join(problems) if problems else ", ".join(found))


def check_mediapipe_models() -> tuple[str, str]:
    import importlib.util

    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        return FAIL, "mediapipe is not installed"
    modules = Path(list(spec.submodule_search_locations)[0]) / "modules"
    missing = [m for m in MODELS if not (modules / m).is_file()]
    if missing:
        return FAIL, (f"missing {', '.join(missing)} under {modules} (mediapipe 0.10.21 is the "
                      "last release that ships them)")
    return OK, f"{len(MODELS)} face models in {modules}"


def check_tensorflow(gpu: str) -> tuple[str, str]:
    from hotfolders import quiet
    from hotfolders.devices import select_gpus

    tf = quiet.import_tensorflow()
    try:
        chosen = select_gpus(gpu)
    except ValueError as exc:
        return FAIL, str(exc)
    seen = len(tf.config.list_physical_devices("GPU"))
    devices = f"{seen} GPU(s) seen, using {', '.join(chosen) if chosen else 'the CPU'}"
    return OK, f"TensorFlow {tf.__version__}: {devices}"


def check_precision(trainer: str, batch_size: int) -> tuple[str, str]:
    """What ``precision = "auto"`` and ``threads = "auto"`` pick here, by timing the default
    trainer (a new model measures its own trainer and batch size the same way)."""
    from hotfolders import precision, quiet, threads

    tf = quiet.import_tensorflow()
    rates, layout = None, ""
    if not tf.config.get_visible_devices("GPU") and threads.cores() > 1:
        try:
            _, layout_choice, rates = threads.decide(trainer, batch_size, "mae+dssim",
                                                     precision.candidates("auto"))
            layout = f"; threads auto -> {threads.describe(layout_choice)}"
        except RuntimeError as exc:
            layout = f"; threads: could not time the layouts ({exc})"
    _, choice = precision.choose("auto", trainer, batch_size, rates=rates)
    return OK, (f"auto -> {precision.describe(choice)}{layout}, {trainer} at batch "
                f"{batch_size}; CPU: {precision.describe_cpu()}")


def check_disk(root: Path, min_free_gb: float) -> tuple[str, str]:
    where = root if root.exists() else root.parent
    free = shutil.disk_usage(where).free / 1e9
    if free < min_free_gb:
        return FAIL, (f"{free:.1f} GB free under {where}, less than min_free_gb = {min_free_gb}: "
                      "the daemon pauses new work")
    return OK, f"{free:.1f} GB free under {where}"


def check_folders(root: Path) -> tuple[str, str]:
    from ..config import HOT_FOLDERS

    if not (root / "facedrop.toml").exists() and not (root / "inbox").is_dir():
        return FAIL, f"{root} is not a facedrop root yet (facedrop init {root})"
    problems = []
    for name in (*HOT_FOLDERS, ".facedrop"):
        folder = root / name
        if not folder.is_dir():
            problems.append(f"{name}/ is missing")
            continue
        try:
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-"):
                pass
        except OSError as exc:
            problems.append(f"{name}/ is not writable ({exc.strerror})")
    return (FAIL, "; ".join(problems)) if problems else (OK, f"{root}: every folder writable")


def _fs_type(path: Path) -> str:
    """The file system type of the mount that holds ``path`` (from /proc/self/mounts)."""
    real, best, kind = os.path.realpath(path), "", "?"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                mount = parts[1].replace("\\040", " ")
                if (real == mount or real.startswith(mount.rstrip("/") + "/")) and \
                        len(mount) > len(best):
                    best, kind = mount, parts[2]
    except OSError:
        pass
    return kind


def check_inotify(root: Path, poll_seconds: float) -> tuple[str, str]:
    if poll_seconds > 0:
        return OK, f"polling every {poll_seconds:g} s (poll_seconds)"
    kind = _fs_type(root)
    if kind in NETWORK_FS:
        return FAIL, (f"the root is on {kind}: inotify does not see other machines' changes; "
                      "set poll_seconds = 10 in facedrop.toml")
    import threading

    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver

    seen = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event) -> None:
            seen.set()

    watch = root / ".facedrop" if (root / ".facedrop").is_dir() else root
    try:
        observer = InotifyObserver()
        observer.schedule(Handler(), str(watch), recursive=False)
        observer.start()
    except OSError as exc:
        return FAIL, f"inotify cannot watch {watch} ({exc}); set poll_seconds in facedrop.toml"
    try:
        with tempfile.NamedTemporaryFile(dir=watch, prefix=".doctor-"):
            seen.wait(3.0)
    finally:
        observer.stop()
        observer.join(5)
    if not seen.is_set():
        return FAIL, f"inotify saw no change on {watch} ({kind}); set poll_seconds"
    return OK, f"inotify works on {watch} ({kind})"


def check_port(root: Path, host: str, port: int) -> tuple[str, str]:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        try:
            sock.bind((host, port))
            return OK, f"{host}:{port} is free"
        except OSError as exc:
            reason = exc.strerror
    from web_status.status import StatusReader

    daemon = StatusReader(root, root / ".facedrop" / "state.db").daemon()
    if daemon["state"] == "running" and f":{port}/" in str(daemon.get("url")):
        return OK, f"{host}:{port} is served by this root's running daemon"
    return FAIL, (f"{host}:{port} is taken ({reason}) by another program; set port in "
                  "facedrop.toml or pass --port")


def check_cluster(cluster, root: Path, gpu: str) -> tuple[str, str]:
    """Where jobs run; for ``executor = "ray"``: that the cluster answers and every node sees
    the root (what the daemon checks at start)."""
    if cluster.executor == "local":
        return OK, f"local: jobs run in child processes of the daemon, {cluster.jobs} at a time"
    from ..ray_executor import RayExecutor

    executor = RayExecutor(cluster.address, root, use_gpus=gpu != "cpu")
    try:
        executor.connect()
        return OK, f"ray at {cluster.address}: {executor.summary()}"
    except Exception as exc:
        return FAIL, f"ray at {cluster.address}: {exc}"
    finally:
        executor.close()


def check_chromium() -> tuple[str, str]:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return OK, found
    return WARN, "not installed: only the browser test needs it (apt-get install chromium)"


def run(args: argparse.Namespace) -> int:
    from hotfolders.names import printable

    from .. import config as cfg

    root = args.root or cfg.root_from_environment()
    config = cfg.load(root, args.config)  # a bad facedrop.toml: exit 3, with the reason
    checks = [
        ("python", check_python),
        ("packages", check_packages),
        ("mediapipe models", check_mediapipe_models),
        ("tensorflow", lambda: check_tensorflow(config.gpu)),
        ("precision", lambda: check_precision(config.train.trainer, config.train.batch_size)),
        ("disk", lambda: check_disk(config.root, config.min_free_gb)),
        ("root folders", lambda: check_folders(config.root)),
        ("folder events", lambda: check_inotify(config.root, config.poll_seconds)),
        ("status page port", lambda: check_port(config.root, config.host, config.port)),
        ("cluster", lambda: check_cluster(config.cluster, config.root, config.gpu)),
        ("chromium", check_chromium),
    ]
    failed = []
    width = max(len(name) for name, _ in checks)
    for name, check in checks:
        try:
            verdict, detail = check()
        except Exception as exc:  # a check that breaks is itself a finding
            verdict, detail = FAIL, f"the check failed: {type(exc).__name__}: {exc}"
        print(printable(f"{name:<{width}}  {verdict:<4}  {detail}"), flush=True)
        if verdict == FAIL:
            failed.append(name)
    if failed:
        print(f"\n{len(failed)} check(s) failed: {', '.join(failed)}")
        return 1
    print("\nall checks passed")
    return 0
