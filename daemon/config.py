"""``facedrop.toml``: settings with defaults, validation and a commented template.

Every key is optional; a missing file means all defaults. Unknown keys are an error (a typo
should not silently do nothing).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

CONFIG_NAME = "facedrop.toml"

TEMPLATE = '''# facedrop settings. Every key is optional; the values shown are the defaults.

# Status page (read-only). Keep it on 127.0.0.1 unless a reverse proxy guards it.
host = "127.0.0.1"
port = 8765

# A dropped file is taken once its size and modification time have not changed for this long.
settle_seconds = 5.0
# Poll the folders every N seconds instead of inotify (for network shares); 0 = inotify.
poll_seconds = 0
# Full rescan of the hot folders every N seconds (a safety net: watchers can miss events).
rescan_seconds = 30
# Pause new work while the disk holding the root has less free space than this.
min_free_gb = 2.0
# Other names the status page answers to (e.g. ["studio-nas.local"]); it always answers to
# its own host, localhost, 127.0.0.1 and [::1]. Any other Host header gets 421 (DNS rebinding).
allowed_hosts = []
# GPUs for training and conversion: "auto" (every GPU TensorFlow sees), "cpu", or indices
# such as "1" or "0,1". Memory growth is always on (several jobs may share a card).
gpu = "auto"

[extract]
every_n = 4        # keep every Nth frame of inbox videos (4 at 25 fps)
size = 512         # aligned face size in pixels
min_size = 48      # ignore faces smaller than this in the source frame

[train]
trainer = "lightweight"   # lightweight | original | dfaker (a model.toml may override)
batch_size = 16
iterations = 100000       # stop when a model reaches this (a model.toml may override)
save_every = 250
snapshot_every = 25000
keep_snapshots = 3
precision = "auto"        # auto | float32 | mixed
window = "always"         # or e.g. "22:00-07:00": train only at night

[convert]
color = "avg-color"       # avg-color | color-transfer | match-hist | seamless | none
mask = "extended"         # extended | components | mesh
sharpen = "none"          # none | box | gaussian | unsharp
face_select = "largest"   # several faces in a frame: largest | center | person | all
label = true              # visible "AI-generated" label (metadata and manifest always say so)

[limits]
stall_seconds = 600       # a job silent this long is killed and failed (training: 3x as long)
max_interruptions = 3     # a job cut off this often (crash, OOM kill) fails instead of rerunning
retry_seconds = 60        # first wait after a transient fault (disk full, I/O error); doubles
'''


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the file and the key."""


@dataclass
class Extract:
    every_n: int = 4
    size: int = 512
    min_size: int = 48


@dataclass
class Train:
    trainer: str = "lightweight"
    batch_size: int = 16
    iterations: int = 100000
    save_every: int = 250
    snapshot_every: int = 25000
    keep_snapshots: int = 3
    precision: str = "auto"
    window: str = "always"


@dataclass
class Convert:
    color: str = "avg-color"
    mask: str = "extended"
    sharpen: str = "none"
    face_select: str = "largest"
    label: bool = True


@dataclass
class Limits:
    stall_seconds: float = 600.0
    max_interruptions: int = 3
    retry_seconds: float = 60.0

    def stall(self, kind: str) -> float:
        """Seconds a job of ``kind`` may go without reporting progress (training builds and
        compiles a model and loads every face before its first step: it gets longer)."""
        return self.stall_seconds * (3 if kind == "train" else 1)


SECTIONS = {"extract": Extract, "train": Train, "convert": Convert, "limits": Limits}


@dataclass
class Config:
    root: Path = Path("facedrop-data")
    host: str = "127.0.0.1"
    port: int = 8765
    settle_seconds: float = 5.0
    poll_seconds: float = 0.0
    rescan_seconds: float = 30.0
    min_free_gb: float = 2.0
    allowed_hosts: list = field(default_factory=list)
    gpu: str = "auto"
    extract: Extract = field(default_factory=Extract)
    train: Train = field(default_factory=Train)
    convert: Convert = field(default_factory=Convert)
    limits: Limits = field(default_factory=Limits)

    @property
    def state_dir(self) -> Path:
        return self.root / ".facedrop"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"


_WINDOW = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")


def parse_window(text: str) -> tuple[int, int] | None:
    """``"always"`` -> None; ``"22:00-07:00"`` -> (start, end) in minutes after midnight."""
    if text == "always":
        return None
    m = _WINDOW.match(text)
    if not m or int(m[1]) > 23 or int(m[3]) > 23 or int(m[2]) > 59 or int(m[4]) > 59:
        raise ConfigError(f"train.window must be \"always\" or \"HH:MM-HH:MM\", not {text!r}")
    return int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])


def window_open(text: str, minute_of_day: int) -> bool:
    window = parse_window(text)
    if window is None:
        return True
    start, end = window
    if start <= end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end  # spans midnight


def _apply(obj: Any, data: dict[str, Any], where: str, source: Path) -> None:
    known = {f.name: f for f in fields(obj)}
    for key, value in data.items():
        if key not in known or key == "root" and where:
            raise ConfigError(f"{source}: unknown setting {where}{key!r}")
        current = getattr(obj, key)
        if isinstance(current, tuple(SECTIONS.values())):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: [{key}] must be a table")
            _apply(current, value, f"{key}.", source)
            continue
        expected = type(current)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is Path:
            value = Path(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{source}: {where}{key} must be {_TYPE_NAMES.get(expected, expected.__name__)}, "
                              f"not {_shown(value)}")
        if expected is list and not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{source}: {where}{key} must be a list of strings")
        setattr(obj, key, value)


_TYPE_NAMES = {int: "int (a whole number)", float: "float (a number)", str: "str (text in quotes)",
               bool: "bool (true or false)", list: "a list"}


def _shown(value: Any) -> str:
    """A value for an error message: short, and printable whatever a file held."""
    from hotfolders.names import printable

    text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


def root_from_environment() -> Path | None:
    """``$FACEDROP_ROOT`` (the systemd unit sets it), or None."""
    import os

    value = os.environ.get("FACEDROP_ROOT", "").strip()
    return Path(value) if value else None


def load(root: Path | None = None, config_file: Path | None = None) -> Config:
    """Defaults, then the config file (``ROOT/facedrop.toml`` unless given), then ``root``."""
    config = Config()
    path = config_file or ((root or config.root) / CONFIG_NAME)
    if path.exists():
        _apply(config, _read_toml(path), "", path)
    elif config_file is not None:
        raise ConfigError(f"{path}: config file not found")
    if root is not None:
        config.root = root
    config.root = config.root.expanduser().resolve()
    validate(config, path)
    return config


def _read_toml(path: Path) -> dict[str, Any]:
    """A settings file (at most 64 KB); any problem is a :class:`ConfigError` naming it."""
    from hotfolders.errors import InputError
    from hotfolders.safefs import load_toml

    try:
        return load_toml(path)
    except InputError as exc:
        raise ConfigError(f"{path}: {exc.reason}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def validate(config: Config, source: Path) -> None:
    from hotfolders.masks import MASK_TYPES
    from hotfolders.plugins.convert import COLORS, FACE_SELECT, SHARPENERS
    from hotfolders.plugins.train import TRAINERS

    checks = [
        (config.train.trainer in TRAINERS, f"train.trainer must be one of {TRAINERS}"),
        (config.train.precision in ("auto", "float32", "mixed"), "train.precision must be auto, float32 or mixed"),
        (config.convert.color in COLORS, f"convert.color must be one of {COLORS}"),
        (config.convert.mask in MASK_TYPES, f"convert.mask must be one of {MASK_TYPES}"),
        (config.convert.sharpen in SHARPENERS, f"convert.sharpen must be one of {SHARPENERS}"),
        (config.convert.face_select in FACE_SELECT,
         f"convert.face_select must be one of {FACE_SELECT}"),
        (config.extract.every_n >= 1, "extract.every_n must be at least 1"),
        (config.extract.size >= 64, "extract.size must be at least 64"),
        (config.settle_seconds >= 0, "settle_seconds must not be negative"),
        (0 < config.port < 65536, "port must be 1-65535"),
        (config.train.batch_size >= 1 and config.train.save_every >= 1,
         "train.batch_size and train.save_every must be at least 1"),
        (config.limits.stall_seconds > 0, "limits.stall_seconds must be more than 0"),
        (config.limits.max_interruptions >= 1, "limits.max_interruptions must be at least 1"),
        (config.limits.retry_seconds > 0, "limits.retry_seconds must be more than 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(f"{source}: {message}")
    from hotfolders.devices import check_gpu_setting

    try:
        check_gpu_setting(config.gpu)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    try:
        parse_window(config.train.window)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


# --- models/<name>/model.toml --------------------------------------------------------------
# written by whoever can write into models/: untrusted, validated, and only ever able to break
# its own model ("error: ..." on the page), never the daemon
MODEL_TRAIN_KEYS = ("trainer", "iterations", "batch_size", "save_every", "snapshot_every",
                    "precision")


@dataclass
class ModelSettings:
    """A model's pair and its training settings (the root's ``[train]`` where it says none)."""

    a: str
    b: str
    train: Train


def load_model(path: Path, defaults: Train) -> ModelSettings:
    """Read and check a ``model.toml``; :class:`ConfigError` names the file and the problem."""
    from dataclasses import replace

    from hotfolders.names import plain_name

    data = _read_toml(path)
    unknown = sorted(set(data) - {"a", "b", *MODEL_TRAIN_KEYS})
    if unknown:
        raise ConfigError(f"{path}: unknown keys {_shown(unknown)}; a model.toml may hold a, b "
                          f"and {', '.join(MODEL_TRAIN_KEYS)}")
    a, b = data.pop("a", None), data.pop("b", None)
    for side, person in (("a", a), ("b", b)):
        if not isinstance(person, str) or plain_name(person) is None:
            raise ConfigError(f'{path}: needs {side} = "<person>" (a folder name in approved/), '
                              f"not {_shown(person)}")
    train = replace(defaults)
    _apply(train, data, "", path)
    validate(Config(train=train), path)
    return ModelSettings(a, b, train)


HOT_FOLDERS = ("inbox", "review", "approved", "models", "targets", "output", "failed")


def init_root(root: Path) -> list[Path]:
    """Create the folder tree and a commented config; never overwrites. Returns what it made."""
    made = []
    for name in (*HOT_FOLDERS, ".facedrop"):
        path = root / name
        if not path.exists():
            path.mkdir(parents=True)
            made.append(path)
    config = root / CONFIG_NAME
    if not config.exists():
        config.write_text(TEMPLATE)
        made.append(config)
    return made
