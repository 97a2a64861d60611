"""The ``ray`` executor: each job's stage runs in a Ray actor, on whichever node of the cluster
has the CPUs and GPUs its kind declares (:attr:`daemon.kinds.Kind.cpus` and ``gpus``).

The daemon stays the control plane: it watches, schedules and is the one writer of the state
database; the nodes only run stages. Each job gets its own actor (a worker process, as the
local executor gives each job its own child): the stage reports into a queue inside the actor,
which the daemon drains with ``poll`` calls, and a stop request or an update is a call to
``send``. The actor is killed when the job ends, so nothing it held (a GPU, TensorFlow's
memory) outlives the job. If its process or its node dies, the daemon's next call fails and
the worker runs the job again, wherever Ray finds room. If the daemon dies instead, the actor
(named ``job-<id>-<attempt>`` in a namespace of the root, and detached) carries on; the next
daemon attaches to it and collects what it missed.

Every node must mount the root at the same path (the stages read and write there):
:meth:`RayExecutor.connect` checks that each node sees a file the daemon just wrote.
Ray itself is an optional dependency (``pip install "facedrop[cluster]"``), imported here only.
"""
from __future__ import annotations

import hashlib
import logging
import os
import queue
import secrets
import socket
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any

from hotfolders.atomic import write_text

from .kinds import BY_JOB

log = logging.getLogger(__name__)

PROBE = "cluster-probe"      # under <root>/.facedrop/: what each node must see
PROBE_SECONDS = 120.0        # how long the nodes get to answer the probe
THREADS = 4                  # actor threads answering begin(), poll() and send()
ORPHAN_SECONDS = 3600.0      # an ended stage's actor waits this long for a daemon to collect it
FREE_SECONDS = 0.5           # how long has_room() trusts its last look at the free resources


def _ray():
    try:
        import ray
    except ImportError:
        raise RuntimeError('[cluster] executor = "ray" needs Ray: pip install '
                           '"facedrop[cluster]"') from None
    return ray


class StageActor:
    """One job's stage in a Ray worker process (a threaded actor: the stage works in a thread
    of its own while ``poll`` and ``send`` answer). It does not depend on the daemon that
    started it: a new daemon can find it by name and carry on where the old one stopped."""

    def __init__(self, kind: str, verbose: bool) -> None:
        from .stages import Control, quiet_logging

        quiet_logging(kind, verbose)
        self._outbox: queue.Queue = queue.Queue()
        self._control = Control()
        self._stage: threading.Thread | None = None
        self._ended = threading.Event()  # the stage returned (its outcome is in the outbox)
        self._last_poll = time.monotonic()

    def where(self) -> str:
        """This node, in words: its host name and address."""
        return f"{socket.gethostname()} ({_ray().util.get_node_ip_address()})"

    def pid(self) -> int:
        return os.getpid()

    def begin(self, kind: str, params: Any) -> None:
        """Start the stage (once); its messages queue up until a daemon polls them."""
        from .stages import run_stage

        def work() -> None:
            run_stage(kind, params, self._outbox.put, self._control)
            self._ended.set()
            while time.monotonic() - self._last_poll < ORPHAN_SECONDS:  # wait for a daemon
                time.sleep(5)
            log.error("no daemon collected this job's outcome for %.0f s; exiting",
                      ORPHAN_SECONDS)
            os._exit(1)  # a detached actor nobody will ask for again

        if self._stage is None:
            self._stage = threading.Thread(target=work, name="stage", daemon=True)
            self._stage.start()

    def poll(self, timeout: float) -> tuple[list[Any], bool]:
        """The messages the stage sent (waiting up to ``timeout`` seconds for the first),
        and whether it has ended and sent everything."""
        self._last_poll = time.monotonic()
        messages = []
        try:
            messages.append(self._outbox.get(timeout=timeout))
            while True:
                messages.append(self._outbox.get_nowait())
        except queue.Empty:
            pass
        self._last_poll = time.monotonic()
        return messages, self._ended.is_set() and self._outbox.empty()

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

    def __init__(self, actor: Any) -> None:
        self._ray = _ray()
        self._actor = actor
        self._where_ref = actor.where.remote()
        self._where = ""
        self._poll_ref: Any = None   # at most one poll in flight: none is lost unread
        self._messages: deque = deque()
        self._ended = False          # the stage ended and every message it sent is here
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
        if self._lost or self._ended:
            return
        if self._poll_ref is None:
            self._poll_ref = self._actor.poll.remote(min(timeout, 1.0))
        ready, _ = self._ray.wait([self._poll_ref], timeout=timeout)
        if not ready:
            return  # the next call collects it (or it waits for the actor to be placed)
        ref, self._poll_ref = self._poll_ref, None
        try:
            messages, self._ended = self._ray.get(ref)
            self._messages.extend(messages)
        except self._ray.exceptions.RayError:  # its process or node died
            self._lost = True

    def send(self, message: Any) -> None:
        if self._lost:
            raise OSError("the job's actor is gone")
        self._actor.send.remote(message)

    def alive(self) -> bool:
        return bool(self._messages) or not (self._ended or self._lost)

    def terminate(self) -> None:
        self.kill()  # a stage writes under temporary names: a killed one restarts cleanly

    def kill(self) -> None:
        self._ray.kill(self._actor, no_restart=True)
        self._lost = True

    def finish(self, timeout: float) -> int | None:
        """0 when the stage ended and said so; None when its actor was lost or was killed."""
        deadline = time.monotonic() + timeout
        while not (self._ended or self._lost) and time.monotonic() < deadline:
            self._poll(min(1.0, max(0.0, deadline - time.monotonic())))
        code = 0 if self._ended and not self._lost else None
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
        self._free: tuple[float, dict[str, float]] = (0.0, {})  # (when asked, free resources)
        # one namespace per root: daemons of other roots on the same cluster never meet
        self.namespace = "facedrop-" + hashlib.sha256(
            str(self.root.resolve()).encode()).hexdigest()[:16]

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
        asked, free = self._free
        if time.monotonic() - asked > FREE_SECONDS:  # one cluster query per pass of the queue
            free = _ray().available_resources()
            self._free = (time.monotonic(), free)
        needs = self.needs(kind)
        return (free.get("CPU", 0.0) >= needs["num_cpus"] - 1e-9 and
                free.get("GPU", 0.0) >= needs.get("num_gpus", 0.0) - 1e-9)

    def start(self, kind: str, params: Any, key: str | None = None) -> RayRun:
        """Start an actor for the stage; with a ``key`` (the job and its attempt) it is named
        and outlives this daemon, so that the next one can :meth:`attach` to it."""
        if self._actor_class is None:
            self.connect()
        options: dict[str, Any] = dict(self.needs(kind))
        if key is not None:
            options.update(name=f"job-{key}", namespace=self.namespace, lifetime="detached")
        actor = self._actor_class.options(**options).remote(kind, self.verbose)
        actor.begin.remote(kind, params)
        return RayRun(actor)

    def attach(self, key: str) -> RayRun | None:
        """The run a previous daemon started under ``key``, if its actor is still there."""
        ray = _ray()
        try:
            actor = ray.get_actor(f"job-{key}", namespace=self.namespace)
            ray.get(actor.pid.remote(), timeout=30)
        except (ValueError, ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
            return None  # gone with its node, or never started
        return RayRun(actor)

    def close(self) -> None:
        if self._started_ray:
            _ray().shutdown()
            self._started_ray = False


__all__ = ["RayExecutor", "RayRun", "StageActor", "sees"]
