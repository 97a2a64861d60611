"""The hot folders, declared once: which folder triggers which job, and how that job behaves.

Like paperless-ngx's explicit, ordered list of consume steps: each :class:`Kind` says the
folder it watches, what counts as a candidate there, the job it becomes, its priority, its
stage function, what its failure does and what its stage leaves behind when killed. The
watcher, the service, the store's priorities, the failure advice, the worker's preemption and
the housekeeping all read this list; adding a hot folder means a line here, a stage (with its
parameter class) in :mod:`daemon.stages`, and its parameters in the service.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _partial_folder(path: Path) -> bool:
    return path.is_dir() and path.name.startswith(".") and path.name.endswith(".partial")


def _part_file(path: Path) -> bool:
    return path.is_file() and path.name.startswith(".") and ".part" in path.name


@dataclass(frozen=True)
class Kind:
    """One hot folder and the job it triggers."""

    job: str                # the job's kind in the store and its stage's name: "extract"
    folder: str             # the hot folder it watches: "inbox"
    takes: str              # candidates: "media" (videos and photos in <folder>/<owner>/),
                            # "folders" (<folder>/<owner>/<set>/), "settings" (<owner>/model.toml),
                            # or "follow-up": none, the service queues it after other work
    owner: str              # the store column of the owner folder's name: "person" or "model"
    priority: int           # lower runs first; training, last, yields to everything else
    advice: str             # what to do about a failure (in the .error.txt)
    moves_failed: bool = True      # a failed input goes to failed/<job>/ with its reason
    preemptible: bool = False      # asked to stop (it saves) when other work waits
    stall_factor: float = 1.0      # times [limits] stall_seconds it may go silent
    temp_folder: str | None = None  # where a killed stage leaves hidden temp outputs ...
    temp: Callable[[Path], bool] | None = None  # ... and which names they are
    sidecars: tuple[str, ...] = ()  # file types beside a candidate that are not candidates
    cpus: float = 1.0              # what one job needs on a cluster node (the ray executor
    gpus: float = 0.0              # asks for the GPUs only where the cluster has some)


KINDS: tuple[Kind, ...] = (
    Kind("extract", "inbox", "media", "person", 10,
         "Check that the file plays and shows a face, then drop it into inbox/<person>/ again.",
         temp_folder="review", temp=_partial_folder),
    Kind("clean", "approved", "folders", "person", 10,
         "Check the folder holds the faces of one extraction and its alignments.json.gz, then "
         "move it into approved/<person>/ again."),
    Kind("mask", "approved", "follow-up", "person", 15,
         "Check the approved faces of that person, then move a set into approved/<person>/ "
         "again (or run facedrop mask train).", moves_failed=False, stall_factor=3.0, gpus=0.5),
    Kind("convert", "targets", "media", "model", 20,
         "Check that the video plays and that its model has trained, then drop it into "
         "targets/<model>/ again.", temp_folder="output", temp=_part_file,
         sidecars=(".toml",),  # <stem>.toml: that target's own convert settings
         gpus=0.5),  # two conversions share a GPU: decoding and encoding leave it half idle
    Kind("train", "models", "settings", "model", 30,
         "Check the approved faces of both people and the model.toml, then restart the daemon.",
         moves_failed=False, preemptible=True, stall_factor=3.0, gpus=1.0),
)

SETTINGS_FILE = "model.toml"  # what a "settings" kind's owner folder holds

BY_JOB = {k.job: k for k in KINDS}
WATCHED = tuple(dict.fromkeys(k.folder for k in KINDS if k.takes != "follow-up"))
PRIORITY = {k.job: k.priority for k in KINDS}


def describe_needs(kind: Kind) -> str:
    """What one job of ``kind`` asks of a cluster node, in words: "1 CPU and 0.5 GPU"."""
    needs = f"{kind.cpus:g} CPU"
    return needs + (f" and {kind.gpus:g} GPU" if kind.gpus else "")
