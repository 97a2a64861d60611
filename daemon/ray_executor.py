"""The ``ray`` executor: each job's stage runs in a Ray actor, on whichever node of the cluster
has the CPUs and GPUs its kind declares (:attr:`daemon.kinds.Kind.cpus` and ``gpus``).

The daemon stays the control plane: it watches, schedules and is the one writer of the state
database; the nodes only run stages. Each job gets its own actor (a worker process, as the
local executor gives each job its own child): the stage reports into a queue inside the actor,
which the daemon drains with ``poll`` calls, and a stop request or an update is a call to
``send``. The actor is killed when the job ends, so nothing it held (a GPU, TensorFlow's
memory) outlives the job. If its process or its node dies, the daemon's next call fails and
the worker runs the job again, wherever Ray finds room.

Every node must mount the root at the same path (the stages read and write there):
:meth:`RayExecutor.connect` checks that each node sees a file the daemon just wrote.
Ray itself is an optional dependency (``pip install "facedrop[cluster]"``), imported here only.
"""
from __future__ import annotations

import logging
import os
import queue
import secrets
import socket
from collections import deque
from pathlib import Path
from typing import Any

from hotfolders.atomic import write_text

from .kinds import BY_JOB

log = logging.getLogger(__name__)

PROBE = "cluster-probe"      # under <root>/.facedrop/: what each node must see
PROBE_SECONDS = 120.0        # how long the nodes get to answer the probe
THREADS = 4                  # actor threads: run() works while poll() and send() answer


def _ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError('[cluster] executor = "ray" needs Ray: pip install '
                           '"facedrop[cluster]"') from None
    return ray


class StageActor:
    """One job's stage in a Ray worker process (a threaded actor)."""

    def __init__(self, kind: str, verbose: bool) -> None:
        from .stages import Control, quiet_logging

        quiet_logging(kind, verbose)
        self._outbox: queue.Queue = queue.Queue()
        self._control = Control()

    def where(self) -> str:
        """This node, in words: its host name and address."""
        return f"{socket.gethostname()} ({_ray().util.get_node_ip_address()})"

    def pid(self) -> int:
        return os.getpid()

    def run(self, kind: str, params: Any) -> None:
        from .stages import run_stage

        run_stage(kind, params, self._outbox.put, self._control)

    def poll(self, timeout: float) -> list[Any]:
        """The messages the stage sent, waiting up to ``timeout`` seconds for the first."""
        try:
            messages = [self._outbox.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                messages.append(self._outbox.get_nowait())
            except queue.Empty:
                return messages

    def send(self, message: Any) -> None:
        self._control.deliver(message)


def sees(path: str, token: str) -> bool:
    """Whether this node reads ``token`` in the file at ``path`` (the root's probe)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read(256).strip() == token
    except OSError:
        return False


class RayRun:
    """A job's actor, seen from the daemon."""

    def __init__(self, actor: Any, run_ref: Any, where_ref: Any) -> None:
        self._ray = _ray()
        self._actor = actor
        self._run_ref = run_ref
        self._where_ref = where_ref
        self._where = ""
        self._poll_ref: Any = None   # at most one poll in flight: none is lost unread
        self._messages: deque = deque()
        self._lost = False

    @property
    def where(self) -> str:
        """The node it runs on; "" while Ray is still placing it."""
        if not self._where:
            ready, _ = self._ray.wait([self._where_ref], timeout=0)
            if ready:
                try:
                    self._where = self._ray.get(ready[0])
                except self._ray.exceptions.RayError:
                    self._where = "a lost node"
        return self._where

    def receive(self, timeout: float) -> Any | None:
        if not self._messages:
            self._poll(timeout)
        if self._messages:
            return self._messages.popleft()
        if self._lost:
            raise EOFError("the job's actor is gone")
        return None

    def _poll(self, timeout: float) -> None:
        if self._lost:
            return
        if self._poll_ref is None:
            self._poll_ref = self._actor.poll.remote(min(timeout, 1.0))
        ready, _ = self._ray.wait([self._poll_ref], timeout=timeout)
        if not ready:
            return  # the next call collects it (or it waits for the actor to be placed)
        ref, self._poll_ref = self._poll_ref, None
        try:
            self._messages.extend(self._ray.get(ref))
        except self._ray.exceptions.RayError:  # its process or node died
            self._lost = True

    def send(self, message: Any) -> None:
        if self._lost:
            raise OSError("the job's actor is gone")
        self._actor.send.remote(message)

    def alive(self) -> bool:
        if self._messages:
            return True
        ready, _ = self._ray.wait([self._run_ref], timeout=0)
        if not ready:
            return not self._lost
        while not self._lost:  # the stage returned: what it sent last is still queued
            before = len(self._messages)
            self._poll(0.05)
            if self._poll_ref is None and len(self._messages) == before:
                break
        return bool(self._messages)

    def terminate(self) -> None:
        self.kill()  # a stage writes under temporary names: a killed one restarts cleanly

    def kill(self) -> None:
        self._ray.kill(self._actor, no_restart=True)
        self._lost = True

    def finish(self, timeout: float) -> int | None:
        """0 when the stage returned; None when its actor was lost or had to be killed."""
        ready, _ = self._ray.wait([self._run_ref], timeout=timeout)
        code = None
        if ready:
            try:
                self._ray.get(ready[0])
                code = 0
            except self._ray.exceptions.RayError:
                pass
        try:
            self._ray.kill(self._actor, no_restart=True)
            self._ray.get(self._actor.pid.remote(), timeout=timeout)  # answers until it is gone
        except Exception:  # gone (what we waited for), or not answering within the timeout
            pass
        return code


class RayExecutor:
    """Jobs as Ray actors on the cluster at ``address`` ("local": a private one)."""

    def __init__(self, address: str, root: Path, verbose: bool = False,
                 use_gpus: bool = True) -> None:
        self.address = address
        self.root = Path(root)
        self.verbose = verbose
        self.use_gpus = use_gpus
        self._gpus = 0.0
        self._actor_class: Any = None
        self._started_ray = False

    def connect(self) -> None:
        """Join the cluster and check that every node sees the root at its path."""
        ray = _ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {"log_to_driver": self.verbose,
                                       "logging_level": logging.INFO if self.verbose
                                       else logging.ERROR}
            if self.address == "local":
                ray.init(include_dashboard=False, **options)
            else:
                ray.init(address=self.address, **options)
            self._started_ray = True
        self._gpus = float(ray.cluster_resources().get("GPU", 0.0)) if self.use_gpus else 0.0
        self._actor_class = ray.remote(max_concurrency=THREADS)(StageActor)
        blind = self.nodes_blind_to_root()
        if blind:
            raise RuntimeError(f"these Ray nodes do not see the root {self.root}: "
                               f"{', '.join(blind)}; mount it at the same path on every node")
        log.info("running jobs on the Ray cluster at %s: %s", self.address, self.summary())

    def summary(self) -> str:
        """The cluster in words: "2 nodes, 16 CPUs, 2 GPUs"."""
        ray = _ray()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        total = ray.cluster_resources()
        unused = "" if self.use_gpus else ' (not used: gpu = "cpu")'
        return (f"{nodes} node(s), {total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} "
                f"GPU(s){unused}")

    def nodes_blind_to_root(self) -> list[str]:
        """The alive nodes that cannot read a file just written into the root's state folder."""
        ray = _ray()
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = secrets.token_hex(16)
        probe = self.root / ".facedrop" / PROBE
        probe.parent.mkdir(parents=True, exist_ok=True)
        write_text(probe, token)
        check = ray.remote(num_cpus=0)(sees)
        asked = {}
        for node in ray.nodes():
            if node.get("Alive"):
                strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
                name = f"{node.get('NodeManagerHostname', '?')} ({node.get('NodeManagerAddress', '?')})"
                asked[name] = check.options(scheduling_strategy=strategy).remote(str(probe), token)
        answers = ray.get(list(asked.values()), timeout=PROBE_SECONDS)
        return [name for name, ok in zip(asked, answers) if not ok]

    def needs(self, kind: str) -> dict[str, float]:
        """What an actor of ``kind`` asks Ray for: the GPUs only where the cluster has some."""
        declared = BY_JOB[kind]
        needs = {"num_cpus": declared.cpus}
        if declared.gpus and self._gpus:
            needs["num_gpus"] = declared.gpus
        return needs

    def has_room(self, kind: str) -> bool:
        """Whether the cluster has the CPUs and GPUs a job of ``kind`` asks for free now
        (summed over the nodes: a job may still wait a little for one node to hold them)."""
        if self._actor_class is None:
            return True
        free = _ray().available_resources()
        needs = self.needs(kind)
        return (free.get("CPU", 0.0) >= needs["num_cpus"] - 1e-9 and
                free.get("GPU", 0.0) >= needs.get("num_gpus", 0.0) - 1e-9)

    def start(self, kind: str, params: Any) -> RayRun:
        if self._actor_class is None:
            self.connect()
        actor = self._actor_class.options(**self.needs(kind)).remote(kind, self.verbose)
        return RayRun(actor, actor.run.remote(kind, params), actor.where.remote())

    def close(self) -> None:
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False


__all__ = ["RayExecutor", "RayRun", "StageActor", "sees"]
