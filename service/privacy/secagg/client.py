"""One device's side of the protocol: its secrets (two X25519 key pairs, the self-mask seed ``b``), the
sealed shares its neighbours sent it, and the rule it keeps when asked to reveal them: for any one
neighbour, the share of ``b`` or the share of the mask key, never both (both would unmask its input)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from service.privacy.secagg import crypto, shamir
from service.privacy.secagg.errors import SecAggFailed
from service.privacy.secagg.masking import MaskingKeys

Kind = Literal["b", "s"]
"""Which share a neighbour is asked for: ``b`` (it sent its masked input) or ``s`` (it dropped out)."""


class SecAggClient:
    def __init__(self, device: str, master: bytes, index: dict[str, int]) -> None:
        self.device = device
        self.index = index
        """Every cohort member's Shamir ``x`` (its 1-based place in the sorted cohort)."""
        self._master = master
        self._c = crypto.private_key(crypto.derive(master, "c", device))
        self._s = crypto.private_key(crypto.derive(master, "s", device))
        self._b = crypto.derive(master, "b", device)
        self.inbox: dict[str, bytes] = {}
        """Sealed shares by sender, as the server relayed them."""
        self._own: dict[Kind, int] = {}
        self._revealed: dict[str, Kind] = {}
        self._peers: dict[str, tuple[bytes, bytes]] = {}

    def advertise(self) -> tuple[bytes, bytes]:
        """The public halves: the encryption key ``c`` and the masking key ``s``."""
        return crypto.public_bytes(self._c), crypto.public_bytes(self._s)

    def share(self, threshold: int, peers: Mapping[str, tuple[bytes, bytes]]) -> dict[str, bytes]:
        """Shamir-share ``b`` and the mask key's secret to ``peers`` (the neighbours, with their public
        keys) and to itself; one sealed message per neighbour, by recipient."""
        self._peers = dict(peers)
        holders = [*peers, self.device]
        xs = [self.index[h] for h in holders]
        s_secret = self._s.private_bytes_raw()
        b_shares = shamir.split(self._b, threshold, xs, self._stream("poly-b"))
        s_shares = shamir.split(s_secret, threshold, xs, self._stream("poly-s"))
        sealed = {}
        for holder, (_, b_y), (_, s_y) in zip(holders, b_shares, s_shares, strict=True):
            if holder == self.device:
                self._own = {"b": b_y, "s": s_y}
                continue
            body = self._plain(self.device, holder) + shamir.encode(b_y) + shamir.encode(s_y)
            key = crypto.agree(self._c, peers[holder][0], "share", self.device, holder)
            sealed[holder] = crypto.seal(
                key, self.device, holder, body, crypto.nonce_for(self.device, holder)
            )
        return sealed

    def keys(self, field: tuple[float, int]) -> MaskingKeys:
        """What masking needs: ``b`` and, per neighbour, ``s_ij`` signed by the sorted-cohort order."""
        rank = self.index[self.device]
        pairwise = tuple(
            (crypto.agree(self._s, keys[1], "mask", self.device, peer), 1 if self.index[peer] > rank else -1)
            for peer, keys in self._peers.items()
        )
        return MaskingKeys(self.device, self._b, pairwise, field)

    def reveal(self, request: Mapping[str, Kind]) -> dict[str, int]:
        """The asked shares (``y`` values, by the device whose secret they share). Refused with
        SecAggFailed: a kind for a device for which it revealed the other kind, its own mask key, a
        device that is not a neighbour, a share that fails authentication."""
        for peer, kind in request.items():
            earlier = self._revealed.get(peer)
            if kind not in ("b", "s"):
                raise SecAggFailed(f"device {self.device} was asked for an unknown share kind {kind!r}")
            if peer == self.device and kind == "s":
                raise SecAggFailed(f"device {self.device} refused to reveal its own mask key: it is alive")
            if earlier is not None and earlier != kind:
                raise SecAggFailed(
                    f"device {self.device} refused to reveal both shares for device {peer}: that would "
                    f"unmask {peer}'s input"
                )
            if peer != self.device and peer not in self.inbox:
                raise SecAggFailed(f"device {self.device} holds no share of device {peer}")
        answer = {}
        for peer, kind in request.items():
            self._revealed[peer] = kind
            answer[peer] = self._own[kind] if peer == self.device else self._opened(peer, kind)
        return answer

    def _opened(self, peer: str, kind: Kind) -> int:
        key = crypto.agree(self._c, self._peers[peer][0], "share", self.device, peer)
        body = crypto.open_sealed(key, peer, self.device, self.inbox[peer])
        head = self._plain(peer, self.device)
        if body is None or not body.startswith(head):
            raise SecAggFailed(
                f"device {self.device}'s share from device {peer} failed authentication (AES-GCM): "
                "altered or misrouted in transit"
            )
        offset = len(head) + (0 if kind == "b" else shamir.ELEMENT_BYTES)
        return shamir.decode(body[offset : offset + shamir.ELEMENT_BYTES])

    def _plain(self, sender: str, recipient: str) -> bytes:
        return self.index[sender].to_bytes(4, "big") + self.index[recipient].to_bytes(4, "big")

    def _stream(self, label: str) -> Callable[[int], bytes]:
        key = crypto.derive(self._master, label, self.device)
        return lambda n: crypto.stream(key, n)
