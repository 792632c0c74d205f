"""One secure-aggregation round (SecAgg+, Bell et al. 2020, over Bonawitz et al. 2017's protocol), both
sides simulated with real cryptography: the clients, each holding only its own secrets, and the server,
holding only public keys, the running sum of masked inputs and the shares revealed to it.

The server sets U1 (every cohort member advertised and shared keys at construction), U2 (``receive``:
masked inputs) and U3 (``unmask``: the answering survivors); it rebuilds ``b_j`` for every ``j`` in U2
and the mask key of every ``j`` in U1 \\ U2, strips their masks from the sum and dequantizes it. It keeps
one vector (the sum mod ``2**32``) whatever the cohort: no device's masked input is stored."""

from __future__ import annotations

import threading
from collections.abc import Collection, Sequence

import numpy as np

from service.errors import Conflict, InvalidRequest, InvalidTensor
from service.privacy.secagg import crypto, shamir
from service.privacy.secagg import traffic as costs
from service.privacy.secagg.client import Kind, SecAggClient
from service.privacy.secagg.errors import SecAggFailed
from service.privacy.secagg.field import QuantizationField
from service.privacy.secagg.graph import neighbours
from service.privacy.secagg.masking import MaskingKeys
from service.privacy.secagg.settings import SecAggSettings
from service.privacy.secagg.traffic import Traffic


class SecureRound:
    """One round's protocol over a cohort. Key material derives from ``seed`` and each device's id, so
    the same seed gives the same graph, keys, masks and sum: a simulation, not a deployment."""

    def __init__(
        self, settings: SecAggSettings, cohort: Sequence[str], dimension: int, seed: crypto.Seed
    ) -> None:
        members = sorted(cohort)
        if len(set(members)) != len(members):
            raise InvalidRequest("a secure round's cohort names a device twice")
        settings.check_values(len(members))
        if len(members) < settings.fewest:
            raise SecAggFailed(f"only {len(members)} devices shared keys; {_fewest(settings)}")
        if dimension < 1:
            raise InvalidRequest(f"a secure round masks vectors of at least 1 value, got {dimension}")
        self.settings, self.dimension = settings, dimension
        self.field = QuantizationField(settings.clipping_range, settings.quantization_range)
        self.degree = settings.degree(len(members))
        master = crypto.seed_bytes(seed)
        self.index = {device: i + 1 for i, device in enumerate(members)}
        self.graph = neighbours(members, self.degree, crypto.derive(master, "graph", ""))
        self._clients = {device: SecAggClient(device, master, self.index) for device in members}
        self._traffic = {device: Traffic() for device in members}
        self.public: dict[str, tuple[bytes, bytes]] = {}
        self.sum = np.zeros(dimension, dtype=np.uint32)
        """The masked inputs' running sum mod ``2**32``: all the server keeps of them."""
        self.received: set[str] = set()
        self.unmasked = False
        self._lock = threading.Lock()
        """Inputs may arrive from many threads: each ``receive`` checks and adds as one step."""
        self._setup()

    def _setup(self) -> None:
        """Advertise keys, then share keys; the server only relays (it keeps no ciphertext)."""
        for device, client in self._clients.items():
            self.public[device] = client.advertise()
            self._traffic[device].add(costs.advertise(self.degree))
        for device, client in self._clients.items():
            peers = {peer: self.public[peer] for peer in self.graph[device]}
            for recipient, sealed in client.share(self.settings.threshold, peers).items():
                self._clients[recipient].inbox[device] = sealed
            self._traffic[device].add(costs.share_keys(self.degree))

    @property
    def cohort(self) -> tuple[str, ...]:
        return tuple(self._clients)

    def client(self, device: str) -> SecAggClient:
        """The device's side (its secrets): for the simulation's devices, never the server."""
        if device not in self._clients:
            raise InvalidRequest(f"device {device} is not in this secure round's cohort")
        return self._clients[device]

    def keys(self, device: str) -> MaskingKeys:
        field = (self.field.clipping_range, self.field.quantization_range)
        return self.client(device).keys(field)

    def receive(self, device: str, masked: np.ndarray) -> None:
        """Server: add one device's masked input to the sum (U2)."""
        self.client(device)
        with self._lock:
            self._receive(device, masked)

    def _receive(self, device: str, masked: np.ndarray) -> None:
        if self.unmasked:
            raise Conflict(f"the secure round was unmasked; device {device}'s input came too late")
        if device in self.received:
            raise Conflict(f"device {device} already sent its masked input")
        if (
            not isinstance(masked, np.ndarray)
            or masked.dtype != np.uint32
            or masked.shape != (self.dimension,)
        ):
            shown = (
                f"{masked.dtype} {masked.shape}" if isinstance(masked, np.ndarray) else type(masked).__name__
            )
            raise InvalidTensor(
                f"a masked input is uint32 ({self.dimension},), got {shown} from device {device}"
            )
        self.sum += masked
        self.received.add(device)
        self._traffic[device].add(costs.masking(self.degree, self.dimension))

    def unmask(self, answering: Collection[str] | None = None) -> tuple[np.ndarray, int]:
        """The float64 sum over U2 and ``|U2|``; U3 is ``answering`` (None: all of U2). SecAggFailed,
        saying why, when U2 or some device's surviving share holders fall below the threshold."""
        with self._lock:
            return self._unmask(answering)

    def _unmask(self, answering: Collection[str] | None) -> tuple[np.ndarray, int]:
        if self.unmasked:
            raise Conflict("the secure round was already unmasked")
        survivors = set(self.received if answering is None else answering)
        strangers = sorted(survivors - self.received)
        if strangers:
            raise InvalidRequest(
                f"device {strangers[0]} cannot answer the unmasking: it sent no masked input"
            )
        if len(self.received) < self.settings.fewest:
            raise SecAggFailed(
                f"only {len(self.received)} of the cohort's {len(self._clients)} devices sent masked "
                f"inputs; {_fewest(self.settings)}"
            )
        self._check_holders(survivors)
        self.unmasked = True
        revealed = self._collect(survivors)
        total = self.sum.copy()
        for device, shares in revealed.items():
            secret = self._combine(device, shares[: self.settings.threshold])
            if device in self.received:
                total -= crypto.prg(secret, self.dimension)
            else:
                self._strip_pairs(total, device, secret)
        return self.field.dequantize(total, len(self.received)), len(self.received)

    def _needed(self) -> list[str]:
        """Whose secret the sum needs: ``b`` of each device in U2, the mask key of each dropped device
        with a neighbour in U2 (one without left no pair mask in the sum)."""
        return [d for d in self._clients if d in self.received or not self.received.isdisjoint(self.graph[d])]

    def _check_holders(self, survivors: set[str]) -> None:
        t = self.settings.threshold
        for device in self._needed():
            holders = self.graph[device]
            alive = sum(1 for h in holders if h in survivors)
            own = device in survivors
            if alive + own < t:
                whose = f"device {device}'s {len(holders)} neighbours"
                also = " (and itself)" if own else ""
                raise SecAggFailed(f"{alive} of {whose} survived{also}; the threshold is {t}")

    def _collect(self, survivors: set[str]) -> dict[str, list[tuple[int, int]]]:
        """Ask each survivor for its share of every neighbour (and itself): ``b`` for those in U2, the
        mask key for those that dropped; the answers by whose secret they rebuild."""
        revealed: dict[str, list[tuple[int, int]]] = {device: [] for device in self._needed()}
        for holder in sorted(survivors):
            asked: dict[str, Kind] = {
                p: "b" if p in self.received else "s" for p in self.graph[holder] if p in revealed
            }
            asked[holder] = "b"
            answer = self._clients[holder].reveal(asked)
            x = self.index[holder]
            for device, y in answer.items():
                revealed[device].append((x, y))
            step = costs.unmasking(self.degree, len(answer), len(answer) - 1)  # its own share is not sealed
            self._traffic[holder].add(step)
        return revealed

    @staticmethod
    def _combine(device: str, shares: list[tuple[int, int]]) -> bytes:
        try:
            return shamir.combine(shares)
        except ValueError as exc:
            raise SecAggFailed(
                f"the shares revealed for device {device} do not rebuild its secret: {exc}"
            ) from exc

    def _strip_pairs(self, total: np.ndarray, dropped: str, secret: bytes) -> None:
        """Remove a dropped device's pair masks from its surviving neighbours' inputs."""
        key = crypto.private_key(secret)
        rank = self.index[dropped]
        for peer in self.graph[dropped]:
            if peer not in self.received:
                continue
            seed = crypto.agree(key, self.public[peer][1], "mask", dropped, peer)
            # the peer added +PRG when the dropped device comes after it, -PRG when before
            if rank > self.index[peer]:
                total -= crypto.prg(seed, self.dimension)
            else:
                total += crypto.prg(seed, self.dimension)

    def traffic(self, device: str) -> Traffic:
        """What the device sent, received and computed in this round so far."""
        self.client(device)
        return Traffic(**vars(self._traffic[device]))

    @staticmethod
    def planned_traffic(settings: SecAggSettings, cohort: int, dimension: int) -> Traffic:
        """The traffic of a member that takes part in every step, before the round (for the clock)."""
        return costs.planned(settings.degree(cohort), dimension)


def _fewest(settings: SecAggSettings) -> str:
    """What a round needs at least, as its failure says it."""
    if settings.min_inputs is None:
        return f"the threshold is {settings.threshold}"
    return f"min_inputs is {settings.fewest} (threshold {settings.threshold})"
