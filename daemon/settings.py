"""Every setting of facedrop, declared once.

Like datasette's ``SETTINGS`` tuple: each :class:`Setting` says its name, type, default,
choices, help and where it may be set. From this one list come the checks with messages
that name the file and the key (:mod:`daemon.config`), the commented template ``facedrop
init`` writes, the options of the stage commands (``facedrop train``, ``facedrop convert``),
the README's settings table (a test keeps it true) and the settings the status page shows.
Choice lists come from the engine's plugin registries, never copied.

Where a setting may be set (``places``):

- ``facedrop.toml``: the operator's file, trusted: every setting;
- ``model.toml``: ``models/<name>/model.toml``, ``[train]`` and ``[convert]`` tables;
- ``target``: ``targets/<model>/<stem>.toml`` beside a target, convert settings for that file.

The last two are written by whoever can write into a hot folder, so only settings that cannot
hurt anyone else may be set there: never the visible "AI-generated" label, the GPUs, the
limits, how many snapshots are kept, or the page's address.

``python -m daemon.settings readme`` prints the README table; ``... template`` the template.
"""
from __future__ import annotations

import re
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

ROOT, MODEL, TARGET = "facedrop.toml", "model.toml", "target"
EVERYWHERE = frozenset({ROOT, MODEL, TARGET})
ROOT_ONLY = frozenset({ROOT})
ROOT_AND_MODEL = frozenset({ROOT, MODEL})
SECTIONS = ("extract", "train", "convert", "limits", "cluster")
AUTO = "auto"


class ConfigError(ValueError):
    """A setting that cannot be used; the message names the file and the key."""


# -- choices, from the engine's registries (imported when first asked: the CLI starts fast) --
def registry(module: str, name: str) -> Callable[[], tuple[str, ...]]:
    """The tuple ``module.name`` of the engine, looked up when it is needed."""
    def choices() -> tuple[str, ...]:
        import importlib

        return getattr(importlib.import_module(module), name)

    return choices


_trainers = registry("hotfolders.plugins.train", "TRAINERS")
_train_masks = registry("hotfolders.training", "TRAIN_MASKS")
_colors = registry("hotfolders.plugins.convert", "COLORS")
_sharpeners = registry("hotfolders.plugins.convert", "SHARPENERS")
_face_select = registry("hotfolders.plugins.convert", "FACE_SELECT")
_losses = registry("hotfolders.training", "LOSSES")
_precisions = registry("hotfolders.precision", "PRECISIONS")
_threads = registry("hotfolders.threads", "THREADS")
_stops = registry("hotfolders.training", "STOPS")
_warps = registry("hotfolders.training", "WARPS")
_convert_masks = registry("hotfolders.convert", "CONVERT_MASKS")
_frozen = registry("hotfolders.model", "FROZEN")


# -- extra checks: each returns what is wrong, or None ---------------------------------------
def at_least(low: float) -> Callable[[Any], str | None]:
    return lambda v: None if v >= low else f"must be at least {low:g}"


def between(low: float, high: float) -> Callable[[Any], str | None]:
    return lambda v: None if low <= v <= high else f"must be between {low:g} and {high:g}"


def positive(v: float) -> str | None:
    return None if v > 0 else "must be more than 0"


EXECUTORS = ("local", "ray")


def _address(v: str) -> str | None:
    return None if v.strip() and not any(c.isspace() for c in v) else \
        'must be "auto", "local", "host:port" or "ray://host:port"'


def _port(v: int) -> str | None:
    return None if 0 < v < 65536 else "must be 1-65535"


_WINDOW = re.compile(r"^(\d\d):(\d\d)-(\d\d):(\d\d)$")


def parse_window(text: str) -> tuple[int, int] | None:
    """``"always"`` -> None; ``"22:00-07:00"`` -> (start, end) in minutes after midnight."""
    if text == "always":
        return None
    m = _WINDOW.match(text)
    if not m or int(m[1]) > 23 or int(m[3]) > 23 or int(m[2]) > 59 or int(m[4]) > 59:
        raise ValueError(f'must be "always" or "HH:MM-HH:MM", not {text!r}')
    return int(m[1]) * 60 + int(m[2]), int(m[3]) * 60 + int(m[4])


def _window(text: str) -> str | None:
    try:
        parse_window(text)
    except ValueError as exc:
        return str(exc)
    return None


def parse_convert_when(text: str) -> tuple[str, int]:
    """``"stopped"`` -> ("stopped", 0); ``"first-save"`` -> ("first-save", 0);
    ``"iterations:5000"`` -> ("iterations", 5000)."""
    if text in ("stopped", "first-save"):
        return text, 0
    m = re.fullmatch(r"iterations:(\d{1,9})", text)
    if not m or int(m[1]) < 1:
        raise ValueError(f'must be "stopped", "first-save" or "iterations:N", not {text!r}')
    return "iterations", int(m[1])


def _convert_when(text: str) -> str | None:
    try:
        parse_convert_when(text)
    except ValueError as exc:
        return str(exc)
    return None


def _gpu(text: str) -> str | None:
    from hotfolders.devices import check_gpu_setting

    try:
        check_gpu_setting(text)
    except ValueError as exc:
        return str(exc)
    return None


def _blur(value: int | str) -> str | None:
    if value == AUTO or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return None
    return 'must be "auto" or a whole number of pixels (0 or more)'


def _learning_rate(value: float | str) -> str | None:
    if value == AUTO or (isinstance(value, float) and 1e-7 <= value <= 0.01):
        return None
    return 'must be "auto" or a number between 1e-07 and 0.01'


def _hosts(value: list) -> str | None:
    return None if all(isinstance(v, str) for v in value) else "must be a list of strings"


# -- the declaration -------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One setting: where it lives, what it may hold, what it means."""

    section: str                 # "" (top level) or one of SECTIONS
    name: str
    default: Any
    help: str
    types: tuple[type, ...] = ()  # accepted TOML types; from the default when empty
    choices: Callable[[], tuple[str, ...]] | None = None
    check: Callable[[Any], str | None] | None = None
    places: frozenset[str] = ROOT_ONLY
    option: bool = False         # an option of the section's stage command (train, convert)
    arg: str | None = None       # the engine's keyword for it, where the name differs
    aliases: tuple[str, ...] = ()  # older names still read (e.g. train.iterations)

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}" if self.section else self.name

    @property
    def accepted(self) -> tuple[type, ...]:
        return self.types or (type(self.default),)

    @property
    def frozen(self) -> bool:
        """Fixed when a model is created (a later value must match, or is an error)."""
        return self.section == "train" and self.name in _frozen()

    def allowed(self) -> tuple[str, ...] | None:
        return self.choices() if self.choices else None

    def parse(self, value: Any, source: object) -> Any:
        """``value`` as read from ``source`` (a path), checked; ConfigError says why not."""
        if float in self.accepted and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        ok = isinstance(value, self.accepted) and not (
            isinstance(value, bool) and bool not in self.accepted)
        if not ok:
            raise ConfigError(f"{source}: {self.key} must be {_type_name(self.accepted)}, not "
                              f"{shown(value)}")
        choices = self.allowed()
        if choices is not None and value not in choices:
            raise ConfigError(f"{source}: {self.key} must be one of {', '.join(choices)}, not "
                              f"{shown(value)}")
        problem = self.check(value) if self.check else None
        if problem:
            raise ConfigError(f"{source}: {self.key} {problem}")
        return value

    def toml(self, value: Any = None) -> str:
        """The value as TOML (the template, the README)."""
        value = self.default if value is None else value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, str):
            return f'"{value}"'
        if isinstance(value, list):
            return "[" + ", ".join(f'"{v}"' for v in value) + "]"
        return repr(value)


_TYPE_NAMES = {int: "a whole number", float: "a number", str: "text in quotes",
               bool: "true or false", list: "a list"}


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in types)


def shown(value: Any) -> str:
    """A value for an error message: short, and printable whatever a file held."""
    from hotfolders.names import printable

    text = printable(repr(value))
    return text if len(text) <= 60 else text[:57] + "..."


S = Setting
SETTINGS: tuple[Setting, ...] = (
    # -- the daemon and its page
    S("", "host", "127.0.0.1", "address of the read-only status page; keep 127.0.0.1 unless a "
      "reverse proxy guards it"),
    S("", "port", 8765, "port of the status page", check=_port),
    S("", "settle_seconds", 5.0, "a dropped file is taken once its size and modification time "
      "have not changed for this long", check=at_least(0)),
    S("", "poll_seconds", 0.0, "poll the folders every N seconds instead of inotify (network "
      "shares); 0: inotify", check=at_least(0)),
    S("", "rescan_seconds", 30.0, "full rescan of the hot folders every N seconds (a safety net: "
      "watchers can miss events)", check=positive),
    S("", "min_free_gb", 2.0, "pause new work while the disk holding the root has less free "
      "space than this", check=at_least(0)),
    S("", "allowed_hosts", [], "more names the status page answers to (a LAN name such as "
      '"studio-nas.local"); it always answers to its host, localhost, 127.0.0.1 and [::1], '
      "any other Host header gets 421 (DNS rebinding)", check=_hosts),
    S("", "gpu", "auto", 'GPUs for training and conversion: "auto" (every GPU TensorFlow '
      'sees), "cpu", or indices such as "1" or "0,1"; memory growth is always on',
      check=_gpu),
    # -- extraction (inbox/)
    S("extract", "every_n", 4, "keep every Nth frame of inbox videos (4 at 25 fps)",
      check=at_least(1)),
    S("extract", "size", 512, "aligned face size in pixels", check=at_least(64)),
    S("extract", "min_size", 48, "ignore faces smaller than this in the source frame (pixels)",
      check=at_least(1)),
    # -- training (models/)
    S("train", "trainer", "lightweight", "model layout of a new model: lightweight and original "
      "64 px for a CPU, dfaker 128 px for a GPU", choices=_trainers, places=ROOT_AND_MODEL,
      option=True),
    S("train", "stop", "plateau", "when a model stops by itself: plateau (the loss stopped "
      "improving, or max_iterations) or iterations (at max_iterations)", choices=_stops,
      places=ROOT_AND_MODEL, option=True),
    S("train", "max_iterations", 100000, "the most iterations a model trains (counted across "
      "resumes); raise it and a stopped model resumes", check=between(1, 10**9),
      places=ROOT_AND_MODEL, option=True, arg="iterations", aliases=("iterations",)),
    S("train", "plateau_gain", 0.01, "stop = plateau: stop when the smoothed loss improved by "
      "less than this share over the last window of saves (20% of the saves, at least 4) "
      "against the window before", check=between(0.0001, 0.9), places=ROOT_AND_MODEL,
      option=True),
    S("train", "batch_size", 16, "faces per side per iteration", check=between(1, 512),
      places=ROOT_AND_MODEL, option=True),
    S("train", "save_every", 250, "save, and render the timelapse and previews, every N "
      "iterations", check=at_least(1), places=ROOT_AND_MODEL, option=True),
    S("train", "snapshot_every", 25000, "copy the save to snapshots/<iterations>/ every N "
      "iterations; 0: never", check=at_least(0), places=ROOT_AND_MODEL, option=True),
    S("train", "keep_snapshots", 3, "snapshots kept (the oldest go)", check=at_least(0),
      option=True),
    S("train", "precision", "auto", "auto: time a few training steps in float32 and in "
      "reduced precision (bfloat16 on a CPU, float16 on a GPU) and take the faster, again "
      "on another machine; mixed: reduced precision even where it is slower",
      choices=_precisions, places=ROOT_AND_MODEL, option=True),
    S("train", "threads", "auto", "how TensorFlow spreads a training step over the CPU's "
      "cores: shared (every operation over all cores, TensorFlow's default), per-op (each "
      "operation on one core, as many at once as there are cores); auto: time both in worker "
      "processes when a model starts (about 20 s) and take the faster, again on another "
      "machine", choices=_threads, places=ROOT_AND_MODEL, option=True),
    S("train", "coverage", 0.85, "share of the aligned face a new model sees (long chins need "
      "room)", check=between(0.5, 1.0), places=ROOT_AND_MODEL, option=True),
    S("train", "mask", "extended", "mask of a new model's loss: only the face inside it "
      "counts; occlusion: the extended mask minus what covers the face (each person's "
      "occlusion network, beside their approved sets)", choices=_train_masks,
      places=ROOT_AND_MODEL, option=True),
    S("train", "loss", "mae+dssim", "loss of a new model", choices=_losses,
      places=ROOT_AND_MODEL, option=True),
    S("train", "mask_steps", 1200, "training steps of each person's occlusion network (mask = "
      "occlusion; about 4 minutes on a 2-core CPU, once per cleaned set)",
      check=between(10, 10**6)),
    S("train", "learning_rate", AUTO, 'Adam\'s learning rate; "auto": the model\'s own, for a '
      "new model its trainer's (lightweight 3e-4, original and dfaker 5e-5); lower it if the "
      "loss diverges", types=(float, str), check=_learning_rate, places=ROOT_AND_MODEL,
      option=True),
    S("train", "warp", "always", "random warp of the input faces, which teaches the model to "
      "rebuild a face rather than copy it; until-plateau: warp until the loss stops improving "
      "(plateau_gain) or 3/4 of max_iterations are done, then train on without it, as "
      "faceswap advises for the end of training (to bring out detail); never: faceswap warns "
      "that training without it from the start is likely to ruin a model", choices=_warps,
      places=ROOT_AND_MODEL, option=True),
    S("train", "window", "always", 'e.g. "22:00-07:00": train only then; outside it training '
      "pauses with a save", check=_window),
    # -- conversion (targets/)
    S("convert", "convert_when", "stopped", 'when a target is converted: "stopped" (once its '
      'model stopped by itself), "iterations:N" or "first-save" (early, blurry results); '
      "targets are converted again each time their model stops after training further",
      check=_convert_when, places=EVERYWHERE),
    S("convert", "color", "avg-color", "colour adjustment of the swapped face", choices=_colors,
      places=EVERYWHERE, option=True),
    S("convert", "mask", "extended", "mask that blends the swapped face into the frame; "
      "occlusion: the extended mask minus what covers the face (a hand, a microphone), by "
      "the input person's occlusion network (facedrop mask train; the daemon uses "
      "approved/<person>/occlusion.weights.h5)", choices=_convert_masks, places=EVERYWHERE,
      option=True),
    S("convert", "erode", 0, "shrink (positive) or grow (negative) the mask, in model pixels",
      check=between(-64, 64), places=EVERYWHERE, option=True),
    S("convert", "blur", AUTO, 'feather the mask edge, in model pixels; "auto": 1/16 of the '
      "model's output size", types=(int, str), check=_blur, places=EVERYWHERE, option=True),
    S("convert", "sharpen", "none", "sharpening of the swapped face", choices=_sharpeners,
      places=EVERYWHERE, option=True),
    S("convert", "swap", False, "swap B -> A instead of A -> B (the target shows person B)",
      places=EVERYWHERE, option=True),
    S("convert", "face_select", "largest", "several faces in a frame: the largest, the one "
      "nearest the center, the model's own person, or all", choices=_face_select,
      places=EVERYWHERE, option=True),
    S("convert", "label", True, 'the visible "AI-generated" label (metadata and manifest always '
      "say so); only the operator may turn it off", option=True),
    # -- limits
    S("limits", "stall_seconds", 600.0, "a job silent this long is killed and failed "
      "(training: 3x as long)", check=positive),
    S("limits", "max_interruptions", 3, "a job cut off this often (crash, OOM kill) fails "
      "instead of running again", check=at_least(1)),
    S("limits", "retry_seconds", 60.0, "first wait after a transient fault (disk full, I/O "
      "error); doubles, up to an hour", check=positive),
    # -- where jobs run
    S("cluster", "executor", "local", "where jobs run: local (a child process of the daemon, "
      'one machine) or ray (the nodes of a Ray cluster; pip install "facedrop[cluster]", and '
      "every node mounts the root at the same path)", choices=lambda: EXECUTORS),
    S("cluster", "address", "auto", 'executor = ray: the cluster to join: "auto" (the one '
      '`ray start` runs on this machine), "host:port" or "ray://host:port"; "local" starts a '
      "private one inside the daemon", check=_address),
    S("cluster", "jobs", 1, "jobs run at the same time (training and conversion still take "
      "their GPUs: on a cluster, Ray places each job where its CPUs and GPUs are free)",
      check=between(1, 1024)),
)
del S

BY_KEY = {s.key: s for s in SETTINGS}


def in_section(section: str, place: str | None = None) -> Iterator[Setting]:
    """The settings of ``section`` ("" for the top level), those allowed at ``place``."""
    for s in SETTINGS:
        if s.section == section and (place is None or place in s.places):
            yield s


def find(section: str, name: str, place: str = ROOT) -> Setting | None:
    """The setting ``section.name`` (or an alias of it) allowed at ``place``."""
    for s in in_section(section, place):
        if name == s.name or name in s.aliases:
            return s
    return None


def values(section: str, place: str = ROOT) -> dict[str, Any]:
    """Defaults of a section."""
    return {s.name: s.default for s in in_section(section, place)}


# -- the stage commands' options and the engine's keywords -----------------------------------
def _option_type(s: Setting) -> Callable[[str], Any] | None:
    if s.types in ((int, str), (float, str)):  # a number, or "auto"
        return lambda text: text if text == AUTO else s.types[0](text)
    return None if s.choices else type(s.default)


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def add_options(parser: Any, section: str) -> None:
    """The options of stage command ``section`` (``train``, ``convert``), one per setting.

    Settings fixed when a model is created default to "as the model was made" (None)."""
    import argparse

    for s in in_section(section):
        if not s.option:
            continue
        flags = ["--" + s.name.replace("_", "-"), *("--" + a.replace("_", "-") for a in s.aliases)]
        default = None if s.frozen else s.default
        plain = str(s.default).lower() if isinstance(s.default, bool) else str(s.default)
        shown_default = f"as the model was made; a new model: {plain}" if s.frozen else plain
        help_text = f"{s.help} (default: {shown_default})".replace("%", "%%")
        if isinstance(s.default, bool):
            parser.add_argument(*flags, dest=s.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
            continue
        parser.add_argument(*flags, dest=s.name, type=_option_type(s), choices=s.allowed(),
                            default=default, help=help_text,
                            metavar=None if s.choices else _METAVARS.get(type(s.default), "X"))


def check_options(args: Any, section: str) -> None:
    """The extra checks of a section's options (ranges, formats): ValueError says which."""
    for s in in_section(section):
        value = getattr(args, s.name, None)
        if s.option and value is not None and s.check:
            problem = s.check(value)
            if problem:
                raise ValueError(f"--{s.name.replace('_', '-')} {problem}")


def engine_kwargs(values: Any, section: str) -> dict[str, Any]:
    """Keyword arguments of the engine's stage function from a section's values (a frozen
    section of the config, or parsed options); "auto" becomes None (the engine's default)."""
    out = {}
    for s in in_section(section):
        if s.option and hasattr(values, s.name):
            value = getattr(values, s.name)
            out[s.arg or s.name] = None if value == AUTO and s.types in (
                (int, str), (float, str)) else value
    return out


# -- documents made from the declaration -----------------------------------------------------
TEMPLATE_HEAD = """\
# facedrop settings. Every key is optional; the values shown are the defaults.
# models/<name>/model.toml may set [train] and [convert] keys for one model, and
# targets/<model>/<stem>.toml convert keys for one target (see the README).
"""


def _comment(text: str) -> list[str]:
    return textwrap.wrap(text, 90, initial_indent="# ", subsequent_indent="# ")


def template() -> str:
    """The commented ``facedrop.toml`` that ``facedrop init`` writes: every default."""
    lines = [TEMPLATE_HEAD]
    for section in ("", *SECTIONS):
        if section:
            lines.append(f"\n[{section}]")
        for s in in_section(section):
            choices = s.allowed()
            lines += _comment(s.help + (f" ({' | '.join(choices)})" if choices else ""))
            lines.append(f"{s.name} = {s.toml()}")
    return "\n".join(lines) + "\n"


def describe(config: Any) -> list[dict[str, Any]]:
    """Every setting's value in ``config`` beside its default: what the status page shows
    (the daemon hands it to the page, which reads no settings files itself)."""
    rows = []
    for s in SETTINGS:
        value = getattr(getattr(config, s.section) if s.section else config, s.name)
        rows.append({"key": s.key, "value": s.toml(value), "default": s.toml(),
                     "changed": value != s.default, "help": s.help, "where": _where(s)})
    return rows


def _where(s: Setting) -> str:
    return ", ".join(p for p in (ROOT, MODEL, TARGET) if p in s.places)


def readme_table() -> str:
    """The README's settings table (``tests/test_docs.py`` keeps the README equal to it)."""
    rows = ["| setting | default | may be set in | meaning |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        name = f"[{s.section}] {s.name}" if s.section else s.name
        choices = s.allowed()
        meaning = s.help + (f"; one of {', '.join(f'`{c}`' for c in choices)}" if choices else "")
        rows.append(f"| `{name}` | `{s.toml()}` | {_where(s)} | {meaning.replace('|', '/')} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    import sys

    what = (argv if argv is not None else sys.argv[1:]) or ["readme"]
    print(readme_table() if what[0] == "readme" else template(), end="\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
