"""``facedrop.toml`` and the per-model and per-target settings files, read and checked.

The settings themselves are declared in :mod:`daemon.settings`; this module turns files into
frozen values. Every key is optional; a missing file means all defaults. Unknown keys are an
error (a typo should not silently do nothing).
"""
from __future__ import annotations

from copy import copy
from dataclasses import dataclass, field, make_dataclass, replace
from pathlib import Path
from typing import Any

from . import settings
from .settings import ConfigError, parse_window, shown

CONFIG_NAME = "facedrop.toml"


def _section_class(section: str, namespace: dict[str, Any] | None = None) -> type:
    """A frozen dataclass of one section's settings, with their defaults."""
    fields_ = [(s.name, Any, field(default_factory=lambda v=s.default: copy(v)))
               for s in settings.in_section(section)]
    return _here(make_dataclass(section.title(), fields_, frozen=True,
                                namespace=namespace or {}))


def _here(cls: type) -> type:
    """Made classes belong to this module (they pickle to a job's child process by name)."""
    cls.__module__ = __name__
    return cls


Extract = _section_class("extract")
Train = _section_class("train")
Convert = _section_class("convert")
Limits = _section_class("limits")
Cluster = _section_class("cluster")
SECTION_CLASSES = {"extract": Extract, "train": Train, "convert": Convert, "limits": Limits,
                   "cluster": Cluster}
TEMPLATE = settings.template()


@dataclass(frozen=True)
class _Paths:
    root: Path = Path("facedrop-data")

    @property
    def state_dir(self) -> Path:
        return self.root / ".facedrop"

    @property
    def db_path(self) -> Path:
        return self.state_dir / "state.db"


Config = _here(make_dataclass(
    "Config",
    [(s.name, Any, field(default_factory=lambda v=s.default: copy(v)))
     for s in settings.in_section("")]
    + [(name, Any, field(default_factory=cls)) for name, cls in SECTION_CLASSES.items()],
    bases=(_Paths,), frozen=True))
Config.__doc__ = "Every setting of ``facedrop.toml`` (see :mod:`daemon.settings`), and the root."


def window_open(text: str, minute_of_day: int) -> bool:
    window = parse_window(text)
    if window is None:
        return True
    start, end = window
    if start <= end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end  # spans midnight


def read_section(section: str, data: Any, place: str, source: object,
                 where: str | None = None) -> dict[str, Any]:
    """Checked values of one table of a settings file (``where`` names the table in messages:
    ``[train]``); an unknown key, or one not allowed at ``place``, is an error."""
    label = where if where is not None else (f"[{section}]" if section else "")
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {label} must be a table")
    out: dict[str, Any] = {}
    for key, value in data.items():
        s = settings.find(section, key, place)
        if s is None:
            known = settings.find(section, key)
            if known is not None:
                raise ConfigError(f"{source}: {known.key} may only be set in {CONFIG_NAME} "
                                  "(the operator's file)")
            raise ConfigError(f"{source}: unknown setting {label + ' ' if label else ''}"
                              f"{shown(key)}")
        out[s.name] = s.parse(value, source)
    return out


def root_from_environment() -> Path | None:
    """``$FACEDROP_ROOT`` (the systemd unit sets it), or None."""
    import os

    value = os.environ.get("FACEDROP_ROOT", "").strip()
    return Path(value) if value else None


def load(root: Path | None = None, config_file: Path | None = None) -> Config:
    """Defaults, then the config file (``ROOT/facedrop.toml`` unless given), then ``root``."""
    path = config_file or ((root or Config().root) / CONFIG_NAME)
    top: dict[str, Any] = {}
    sections: dict[str, Any] = {}
    if path.exists():
        data = _read_toml(path)
        for name in SECTION_CLASSES:
            if name in data:
                sections[name] = SECTION_CLASSES[name](
                    **read_section(name, data.pop(name), settings.ROOT, path))
        if "root" in data:
            top["root"] = Path(str(data.pop("root")))
        top.update(read_section("", data, settings.ROOT, path))
    elif config_file is not None:
        raise ConfigError(f"{path}: config file not found")
    config = Config(**top, **sections)
    root = root if root is not None else config.root
    return replace(config, root=Path(root).expanduser().resolve())


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


# --- models/<name>/model.toml and targets/<model>/<stem>.toml ---------------------------------
# written by whoever can write into models/ or targets/: untrusted, checked against the same
# declarations, only ever able to break their own model or target ("error: ..." on the page)
@dataclass(frozen=True)
class ModelSettings:
    """A model's pair, its training and conversion settings (``facedrop.toml``'s where its
    ``model.toml`` says nothing), and which training keys it set itself."""

    a: str
    b: str
    train: Any
    convert: Any
    explicit: frozenset[str] = frozenset()


def load_model(path: Path, config: Config) -> ModelSettings:
    """Read and check a ``model.toml``; :class:`ConfigError` names the file and the key.

    ``[train]`` and ``[convert]`` tables hold that model's settings; training keys may also
    stand at the top level (the older form).
    """
    from hotfolders.names import plain_name

    data = _read_toml(path)
    a, b = data.pop("a", None), data.pop("b", None)
    for side, person in (("a", a), ("b", b)):
        if not isinstance(person, str) or plain_name(person) is None:
            raise ConfigError(f'{path}: needs {side} = "<person>" (a folder name in approved/), '
                              f"not {shown(person)}")
    tables = {name: data.pop(name, {}) for name in ("train", "convert")}
    train = read_section("train", data, settings.MODEL, path, where="")  # top-level keys
    train.update(read_section("train", tables["train"], settings.MODEL, path))
    convert = read_section("convert", tables["convert"], settings.MODEL, path)
    return ModelSettings(a, b, replace(config.train, **train), replace(config.convert, **convert),
                         frozenset(train))


def load_target(path: Path, convert: Any) -> Any:
    """A target's own convert settings (``<stem>.toml`` beside it) over ``convert``."""
    return replace(convert, **read_section("convert", _read_toml(path), settings.TARGET, path,
                                           where=""))


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
