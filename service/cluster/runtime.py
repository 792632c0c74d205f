"""Ray: the shard actors, the coordinator actor that keeps the member view, and joining a cluster.

Only this module and ``service.cluster.front`` import Ray; the single-process service never does.
Shards are named actors (``fleet-shard-<random>``; ``cluster/shard-<slot>.json`` names the one that
took each slot) that are not restarted in place: the calls they had in flight are not retried (a
train step is applied at most once), and the coordinator replaces a dead one with a warm spare, a
process that has imported TensorFlow already (most of a new process's start-up), or with a new
process when no spare is left; it then starts a new spare. The coordinator (``fleet-coordinator``)
is restarted by Ray, and its calls retried: each of them is idempotent, and a resize resumes from
``cluster/view.json``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections import Counter
from typing import Any, NamedTuple

import ray
from ray.exceptions import ActorDiedError, ActorUnschedulableError, GetTimeoutError, RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from service.cluster.names import COORDINATOR, SHARD_PREFIX, namespace
from service.cluster.shard import START_TIMEOUT, ShardServer
from service.cluster.state import ClusterState, Membership
from service.config import Settings
from service.errors import FleetError, InvalidRequest, Unavailable
from service.wire.view import ShardInfo, View

log = logging.getLogger(__name__)

MAX_SHARDS = 64
STOP_TIMEOUT = 20.0
"""Seconds a shard a resize takes away has to finish its calls before it is killed."""
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}


class ShardActor(ShardServer):
    """A shard (or a spare) on whichever node Ray placed it, listening on that node's address."""

    def __init__(self, settings: dict[str, Any], host: str | None, name: str, background: bool) -> None:
        super().__init__(settings, host or node_address(), name, background)

    def info(self) -> dict[str, Any]:
        return {**super().info(), "node_id": str(ray.get_runtime_context().get_node_id())}


RemoteShard = ray.remote(ShardActor)


def node_address() -> str:
    """The address this worker's Ray node was started with (``--node-ip-address``), which other
    nodes reach it at; not the machine's default route, which ``ray.util`` would give."""
    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return str(node["NodeManagerAddress"])
    return str(ray.util.get_node_ip_address())


class Process(NamedTuple):
    """A shard process (or a spare): its actor's name and handle."""

    name: str
    handle: Any


class Coordinator:
    """Keeps the member view: starts the shards, answers who serves each slot, resizes in two phases,
    replaces dead shards (with spares kept warm)."""

    def __init__(self, settings: dict[str, Any], shard_host: str | None) -> None:
        self.settings = settings
        self.shard_host = shard_host
        self.spare_count = Settings(**settings).spare_shards
        self.state = ClusterState(Settings(**settings).data_dir)
        self.namespace = namespace(self.state.data_dir)
        self.infos: dict[int, ShardInfo] = {}
        self.handles: dict[int, Process] = {}
        self.node_of: dict[str, str] = {}
        """The node each process this coordinator made runs on, by name."""
        self.spares = self._adopt_spares()
        """Warm processes serving no slot yet, the oldest first."""
        self._keep_spares()

    def _handle(self, slot: int, replace: bool = False) -> Any:
        """The slot's process: the one its record names if it lives (unless ``replace``), else a
        spare or a new one, told to serve it."""
        process = self.handles.get(slot) or (None if replace else self._holder(slot))
        if process is not None:
            self.handles[slot] = process
            return process.handle
        process = self.handles[slot] = self._assign(slot)
        if self._membership().pending is None:  # in a resize: once it is done, not in its way
            self._keep_spares()
        return process.handle

    def _holder(self, slot: int) -> Process | None:
        name = self.state.holder(slot)
        if name is None:
            return None
        try:
            return Process(name, ray.get_actor(name, namespace=self.namespace))
        except ValueError:  # gone: it died, or it was killed
            return None

    def _assign(self, slot: int) -> Process:
        """Give ``slot`` to a spare (one still importing is waited for), else to a new process.

        The slot's next incarnation is recorded for the process before it is told to serve, and it
        serves only if the record still names it: a process that a crashed coordinator had told to
        serve the slot is refused once another took it.
        """
        while True:
            spare = bool(self.spares)
            process = self.spares.pop(0) if spare else self._make(background=False)
            incarnation = self.state.next_incarnation(slot, process.name)
            try:
                ray.get(process.handle.serve.remote(slot, incarnation), timeout=START_TIMEOUT)
                return process
            except (RayActorError, GetTimeoutError, FleetError) as exc:
                log.warning("process %s could not take shard %d (%s)", process.name, slot, type(exc).__name__)
                ray.kill(process.handle, no_restart=True)
                if not spare:
                    raise

    def _make(self, background: bool = True) -> Process:
        """A new process (a spare until told to serve) on the live node that runs fewest of them;
        ``background``: it warms up at a low CPU priority (it is not waited for)."""
        name = f"{SHARD_PREFIX}{secrets.token_hex(6)}"
        live = {p.name for p in [*self.handles.values(), *self.spares]}
        self.node_of = {n: node for n, node in self.node_of.items() if n in live}  # the dead ones go
        used = Counter(self.node_of.values())
        node = self.node_of[name] = min(_working_nodes(), key=lambda node: (used[node], node))
        options: dict[str, Any] = {
            "name": name,
            "namespace": self.namespace,
            "max_restarts": 0,  # replaced by the coordinator, not restarted in place
            "max_task_retries": 0,
            "num_cpus": 0,
            "lifetime": "detached",  # not the coordinator's: shards outlive a coordinator that crashed
            # Pinned: Ray's soft affinity and "SPREAD" both put two shards of a three-node test
            # cluster on one node. A process whose node is lost is replaced on a live one.
            "scheduling_strategy": NodeAffinitySchedulingStrategy(node_id=node, soft=False),
            "runtime_env": {"env_vars": WORKER_ENV},
        }
        handle = RemoteShard.options(**options).remote(self.settings, self.shard_host, name, background)
        return Process(name, handle)

    def _adopt_spares(self) -> list[Process]:
        """The spares a coordinator before this one started: the processes no slot's record names."""
        holders = {self.state.holder(slot) for slot in range(self._slots())}
        names = [n for n in ray.util.list_named_actors() if n.startswith(SHARD_PREFIX) and n not in holders]
        return [Process(n, ray.get_actor(n, namespace=self.namespace)) for n in names]

    def _keep_spares(self) -> None:
        """Start spares up to the count set (not waited for: each imports TensorFlow on its own)."""
        while len(self.spares) > self.spare_count:
            ray.kill(self.spares.pop().handle, no_restart=True)
        while len(self.spares) < self.spare_count:
            self.spares.append(self._make())

    def _slots(self) -> int:
        """Slots that may have a process: the committed ones and those of a resize in progress."""
        membership = self.state.membership()
        return 0 if membership is None else max(membership.shards, membership.pending or 0)

    def _info(self, slot: int, timeout: float = START_TIMEOUT) -> ShardInfo:
        try:
            try:
                value = self._ask(slot, timeout)
            except (ActorDiedError, ActorUnschedulableError) as exc:
                # Dead (or pinned to a node that is gone): a spare or a new process takes the slot.
                # The old actor is killed first, or it would keep its name.
                log.warning("shard %d is gone (%s); replacing it", slot, type(exc).__name__)
                ray.kill(self.handles.pop(slot).handle, no_restart=True)
                self._handle(slot, replace=True)
                value = self._ask(slot, timeout)
        except (GetTimeoutError, RayActorError, FleetError) as exc:
            raise Unavailable(f"shard {slot} does not answer: {type(exc).__name__}", retry_after=2) from exc
        info = ShardInfo.parse(value)
        self.infos[slot] = info
        return info

    def _ask(self, slot: int, timeout: float) -> dict[str, Any]:
        """The slot's process's own account, once it serves: a process the slot's record names but a
        crashed coordinator did not get to tell to serve is told now."""
        handle = self._handle(slot)
        value: dict[str, Any] = ray.get(handle.info.remote(), timeout=timeout)
        if value["slot"] is None:
            value = ray.get(handle.serve.remote(slot, self.state.incarnation(slot)), timeout=timeout)
        return value

    def _membership(self) -> Membership:
        membership = self.state.membership()
        if membership is None:
            raise Unavailable("the fleet has not been started", retry_after=2)
        return membership

    def start(self, shards: int | None) -> dict[str, Any]:
        """Bring up the view in the data directory (a first one of ``shards`` slots, default 1, if
        there is none), finish a resize a crash interrupted, then resize to ``shards`` if given."""
        if shards is not None:
            _check_count(shards)
        membership = self.state.membership()
        if membership is None:
            membership = Membership(epoch=1, shards=shards or 1)
            self.state.write_membership(membership)
        if membership.pending is not None:
            self._resize(membership, membership.pending)
        if shards is not None and self._membership().shards != shards:
            self._resize(self._membership(), shards)
        return self.view()

    def stop(self) -> None:
        """Stop every shard's server (each closes its fleet: counters written), for a local shutdown."""
        running = (self.handles.get(slot) or self._holder(slot) for slot in range(self._slots()))
        ray.get([process.handle.stop.remote() for process in running if process is not None])

    def view(self) -> dict[str, Any]:
        membership = self._membership()
        shards = tuple(self.infos.get(slot) or self._info(slot) for slot in range(membership.shards))
        view = View(epoch=membership.epoch, shards=shards).to_json()
        view["resizing_to"] = membership.pending
        return view

    def refresh(self, slot: int, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        """Ask the slot's process who it is now (after a restart it has a new address); a slot a
        resize took away is not asked (nor started again)."""
        if slot < self._membership().shards:
            self.infos.pop(slot, None)
            self._info(slot, timeout)
        return self.view()

    def whoami(self) -> dict[str, Any]:
        return {
            "node": socket.gethostname(),
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
        }

    def shard_details(self) -> dict[str, list[dict[str, Any]]]:
        """Each shard's own account, and each spare's (one still importing is "starting")."""
        membership = self._membership()
        shards = []
        for slot in range(membership.shards):
            try:
                value = ray.get(self._handle(slot).info.remote(), timeout=10)
                value["state"] = "serving"
            except (GetTimeoutError, RayActorError) as exc:
                value = {"slot": slot, "state": f"unavailable ({type(exc).__name__})"}
            shards.append(value)
        spares = []
        for spare in self.spares:
            try:
                spares.append({**ray.get(spare.handle.info.remote(), timeout=0.5), "state": "ready"})
            except GetTimeoutError:
                spares.append({"state": "starting"})
            except RayActorError as exc:
                spares.append({"state": f"unavailable ({type(exc).__name__})"})
        return {"shards": shards, "spares": spares}

    def resize(self, shards: int) -> dict[str, Any]:
        _check_count(shards)
        membership = self._membership()
        if membership.pending is not None or membership.shards != shards:
            self._resize(membership, shards)
        return self.view()

    def _resize(self, membership: Membership, shards: int) -> None:
        """Fence every shard (each hands over what moves), then commit the new view.

        Each step is idempotent, and ``view.json`` records the intent first: a coordinator restarted
        halfway (or a shard restarted meanwhile, which reads the intent and starts fenced) ends at the
        same view by running this again.
        """
        old = membership.shards
        self.state.write_membership(Membership(membership.epoch, old, shards))
        slots = range(max(old, shards))
        for slot in slots:
            self.infos.pop(slot, None)
        for slot in slots:  # new slots start fenced: they read the intent
            self._info(slot)
        handed = ray.get([self._handle(slot).fence.remote(shards) for slot in range(old)])
        epoch = membership.epoch + 1
        self.state.write_membership(Membership(epoch, shards))
        taken = ray.get([self._handle(slot).commit.remote(epoch, shards) for slot in range(shards)])
        removed = [self.handles.pop(slot, None) or self._holder(slot) for slot in range(shards, old)]
        for slot in range(shards, old):
            self.infos.pop(slot, None)
        # Not waited for: the view is answered meanwhile (fronts ask for it as the shards' 421s come).
        threading.Thread(target=_retire, args=([p for p in removed if p],), daemon=True).start()
        self._keep_spares()
        log.info(
            "resized %d -> %d shards (epoch %d): %d handed over, %d taken over",
            old,
            shards,
            epoch,
            sum(handed),
            sum(taken),
        )


def _retire(processes: list[Process]) -> None:
    """Let each process finish its calls (it owns nothing any more: each is refused), then kill it.
    A coordinator that dies meanwhile leaves it to the next one, which finds it among the spares
    and kills it when it refuses to serve another slot."""
    for process in processes:
        with contextlib.suppress(RayActorError, GetTimeoutError):
            ray.get(process.handle.stop.remote(), timeout=STOP_TIMEOUT)
        ray.kill(process.handle, no_restart=True)


def _working_nodes() -> list[str]:
    """The live nodes with CPUs (not a 0-CPU head), by node ID."""
    alive = [n for n in ray.nodes() if n.get("Alive")]
    working = [n for n in alive if n.get("Resources", {}).get("CPU", 0) > 0] or alive
    return sorted(n["NodeID"] for n in working)


def _check_count(shards: int) -> None:
    if not 1 <= shards <= MAX_SHARDS:
        raise InvalidRequest(f"a fleet has 1 to {MAX_SHARDS} shards, not {shards}")


def connect(settings: Settings, address: str | None, shards: int) -> None:
    """Join the cluster at ``address``, or start a local Ray runtime for ``shards`` shard processes."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    kwargs: dict[str, Any] = {
        "namespace": namespace(settings.data_dir),
        "log_to_driver": True,
        "configure_logging": False,
    }
    if address is None:
        kwargs.update(include_dashboard=False, num_cpus=max(2, shards), runtime_env={"env_vars": WORKER_ENV})
    ray.init(address=address or "local", **kwargs)  # "local": a new runtime, never one found running


def coordinator(settings: Settings, shard_host: str | None) -> Any:
    """The coordinator actor, made if it does not exist (a restarted front finds the running one)."""
    options: dict[str, Any] = {
        "name": COORDINATOR,
        "namespace": namespace(settings.data_dir),
        "get_if_exists": True,
        "max_restarts": -1,
        "max_task_retries": -1,
        "num_cpus": 0,
        "lifetime": "detached",  # a new front on the same data directory finds it
        "runtime_env": {"env_vars": WORKER_ENV},
    }
    return ray.remote(Coordinator).options(**options).remote(settings.model_dump(mode="json"), shard_host)
