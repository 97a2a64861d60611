"""Where a job's stage runs: the seam between the worker and the processes doing the work.

The worker decides what runs and records what happened; an executor only starts a stage
somewhere and carries messages both ways: log records, progress and the outcome from the
stage (``("log", level, logger, text)``, ``("progress", info)``, ``("done", result)``,
``("failed", ...)``, ``("transient", ...)``), and a stop request or updates to it
(``"stop"``, ``("update", topic, value)``). The stage
functions (:mod:`daemon.stages`) are the same whoever runs them.

``local``, the default, runs each job in a spawned child process of the daemon: a crash in
native code cannot take the daemon down, and killing the child frees everything it held.
``ray`` (:mod:`daemon.ray_executor`) runs each in a Ray actor on a node of a cluster.
"""
from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any, Protocol


class Run(Protocol):
    """One job's stage, running."""

    where: str  # the machine it runs on, in words (for the log and the page)

    def receive(self, timeout: float) -> Any | None:
        """The next message, or None when none came within ``timeout`` seconds; raises
        EOFError or OSError once the stage is gone."""

    def send(self, message: Any) -> None:
        """A message to the stage (raises OSError or ValueError if it is gone)."""

    def alive(self) -> bool: ...

    def terminate(self) -> None:
        """Stop it now (stages that write under temporary names restart cleanly)."""

    def kill(self) -> None: ...

    def finish(self, timeout: float) -> int | None:
        """Wait up to ``timeout`` seconds for it to end, kill it if it has not, release what
        it held; its exit code (None where there is none)."""


class Executor(Protocol):
    def connect(self) -> None:
        """Get ready to start jobs (join a cluster); raises with the reason if it cannot."""

    def has_room(self, kind: str) -> bool:
        """Whether a job of ``kind`` could start now (a cluster: its CPUs and GPUs are free)."""

    def start(self, kind: str, params: Any, key: str | None = None) -> Run:
        """Start the stage; ``key`` (job id and attempt) names it for :meth:`attach`."""

    def attach(self, key: str) -> Run | None:
        """The run a previous daemon started under ``key``, where it outlived that daemon."""

    def close(self) -> None: ...


class LocalRun:
    where = "local"

    def __init__(self, process, conn) -> None:
        self._process = process
        self._conn = conn

    def receive(self, timeout: float) -> Any | None:
        if not self._conn.poll(timeout):
            return None
        return self._conn.recv()

    def send(self, message: Any) -> None:
        self._conn.send(message)

    def alive(self) -> bool:
        return self._process.is_alive()

    def terminate(self) -> None:
        self._process.terminate()

    def kill(self) -> None:
        self._process.kill()

    def finish(self, timeout: float) -> int | None:
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()
        self._conn.close()
        return self._process.exitcode


class LocalExecutor:
    """Each job in a spawned child process of the daemon, talking through a pipe."""

    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self._ctx = multiprocessing.get_context("spawn")

    def connect(self) -> None:
        pass

    def close(self) -> None:
        pass

    def has_room(self, kind: str) -> bool:
        return True  # the worker's slots are the limit

    def attach(self, key: str) -> None:
        return None  # a child dies with its daemon (PR_SET_PDEATHSIG)

    def start(self, kind: str, params: Any, key: str | None = None) -> LocalRun:
        from .stages import child_main

        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=child_main, args=(kind, params, child, self.verbose),
                                    name=f"facedrop-{kind}", daemon=True)
        process.start()
        child.close()
        return LocalRun(process, parent)


def make_executor(cluster: Any, root: Path, gpu: str, verbose: bool = False) -> Executor:
    """The executor ``[cluster]`` asks for (``gpu = "cpu"`` keeps jobs off a cluster's GPUs)."""
    if cluster.executor == "ray":
        from .ray_executor import RayExecutor

        return RayExecutor(cluster.address, root, verbose, use_gpus=gpu != "cpu")
    return LocalExecutor(verbose)


__all__ = ["Executor", "LocalExecutor", "LocalRun", "Run", "make_executor"]
