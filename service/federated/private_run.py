"""A run's privacy, round by round (``PrivateRun``, ``PrivateRound``): what each participant is asked to
do to its update (``task.Privatize``), how the server sums what arrives (in the clear, or through
secure aggregation), the noise it adds, the clip norm's next value, and the privacy spent.

The server side of DP-FedAvg: the sum of clipped updates, plus ``N(0, (z C)**2)`` in central mode, is
divided by the expected cohort (a fixed denominator, as McMahan et al. 2018: dividing by the count that
arrived would leak it); local DP divides by the count, as its noise is on each update already. Secure
aggregation without DP averages over the survivors. The global version moves by that mean through the
run's strategy (``Strategy.step``: FedAvg, or a server optimizer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from service.errors import InvalidTensor
from service.federated import private
from service.federated.checkpoints import Weights
from service.federated.participants import Update
from service.federated.selection import Plan
from service.federated.selectors.order import Profiles
from service.federated.spec import RoundSpec
from service.federated.task import Privatize
from service.privacy.accounting import Ledger
from service.privacy.clipping import NOISE_STREAM, AdaptiveClip, gaussian
from service.privacy.secagg import SecureRound, Traffic
from service.profiles import DeviceProfile
from service.profiles.profile import REFERENCE_TRAIN_MS

KEY_AGREEMENT_MS = 0.15
"""A reference phone's X25519 key agreement (a mid-range ARM core; the protocol's clock charges these)."""
SHARE_MS = 0.02
"""A reference phone's Shamir share made or one decrypted (a small polynomial and an AES-GCM block)."""
PRG_NS_PER_BYTE = 1.0
"""A reference phone's AES-CTR keystream, about 1 GB/s with the ARMv8 crypto extensions."""


def protocol_seconds(profile: DeviceProfile, traffic: Traffic) -> float:
    """Simulated seconds secure aggregation adds to a device's part: its extra round trips and bytes at
    its network's rates, its key agreements, shares and mask expansion at its compute's speed."""
    network = profile.profile.network
    slower = profile.profile.compute.train_ms_per_sample / REFERENCE_TRAIN_MS / profile.speed
    compute_ms = traffic.key_agreements * KEY_AGREEMENT_MS + traffic.shares * SHARE_MS
    compute_ms += traffic.prg_bytes * PRG_NS_PER_BYTE / 1e6
    return (
        traffic.round_trips * network.rtt_ms / 1000.0
        + traffic.upload_bytes * 8 / (network.uplink_mbps * 1e6)
        + traffic.download_bytes * 8 / (network.downlink_mbps * 1e6)
        + compute_ms * slower / 1000.0
    )


class PrivateCollector:
    """A round's privatized updates as they arrive: their sum in the clear (float64), or handed to the
    secure aggregation's server, which keeps only the masked sum."""

    def __init__(self, dimension: int, secure: SecureRound | None) -> None:
        self.dimension = dimension
        self.secure = secure
        self.sum = np.zeros(0 if secure is not None else dimension)
        self._count = 0

    @property
    def count(self) -> int:
        return self._count

    def add(self, update: Update, rounds_late: int = 0) -> None:
        payload = update.payload
        if payload is None or payload.shape != (self.dimension,):
            raise InvalidTensor(
                f"participant '{update.device}' sent no privatized update of {self.dimension} values"
            )
        if self.secure is not None:
            self.secure.receive(update.device, payload)
        else:
            if payload.dtype != np.float64 or not np.isfinite(payload).all():
                raise InvalidTensor(f"participant '{update.device}''s update has non-finite values")
            self.sum += payload
        self._count += 1


@dataclass
class PrivateRound:
    """One round's privacy: the clip norm, each participant's ``Privatize``, the collector."""

    number: int
    clip: float | None
    device_noise: float
    flag_noise: float
    flag: bool
    collector: PrivateCollector
    cohort: list[str] = field(default_factory=list)
    """Secure aggregation: the participants that shared keys (``U1``)."""
    protocol: dict[str, float] = field(default_factory=dict)
    """Secure aggregation: each participant's protocol seconds (its profile's)."""

    def privatize(self, device: str) -> Privatize:
        secure = self.collector.secure
        return Privatize(
            self.clip,
            self.device_noise,
            secure.keys(device) if secure is not None else None,
            self.protocol.get(device, 0.0),
            self.flag,
            self.flag_noise,
        )


class PrivateRun:
    """A run's privacy state: its accountant's ledger, the adaptive clip norm, the server's noise."""

    def __init__(self, spec: RoundSpec) -> None:
        self.spec = spec
        self.dp = spec.privacy
        self.secure = spec.secure_aggregation
        self.sampling = spec.sampling()
        self.ledger = Ledger(self.dp, self.sampling) if self.dp is not None else None
        self.adaptive = None
        if self.dp is not None and self.dp.adaptive:
            self.adaptive = AdaptiveClip(
                self.dp.clip,
                self.dp.target_quantile,
                self.dp.clip_learning_rate,
                self.dp.count_stddev(self.sampling.cohort),
            )
        self.stopped: str | None = None

    @property
    def noise_multiplier(self) -> float:
        """``z`` of the rounds' sum (the accountant's)."""
        return 0.0 if self.dp is None else self.dp.noise_multiplier

    def budget_allows_next(self) -> bool:
        """Whether one more round stays within the target epsilon (``on_budget="stop"``); when not, why
        is kept in ``stopped``."""
        dp = self.dp
        if dp is None or dp.target_epsilon is None or self.ledger is None:
            return True
        after = self.ledger.after(1, self.noise_multiplier)
        if after <= dp.target_epsilon:
            return True
        self.stopped = (
            f"the privacy budget: round {self.ledger.rounds + 1} would reach epsilon {after:.4g} at delta "
            f"{dp.delta:g}, over the target {dp.target_epsilon:g} (epsilon {self.ledger.epsilon:.4g} "
            f"after {self.ledger.rounds} rounds)"
        )
        return False

    def protocol(self, cohort: int, weights: Weights) -> Callable[[DeviceProfile], float] | None:
        """The simulated seconds secure aggregation adds to a profiled member of a cohort of ``cohort``
        (None without it)."""
        if self.secure is None:
            return None
        traffic = SecureRound.planned_traffic(self.secure, max(cohort, 2), private.dimension(weights))
        return lambda profile: protocol_seconds(profile, traffic)

    def begin(
        self,
        number: int,
        plans: list[Plan],
        weights: Weights,
        profiles: Profiles,
        protocol: Callable[[DeviceProfile], float] | None,
    ) -> PrivateRound:
        """Round ``number``'s privacy over its plans: the secure aggregation's cohort is every picked
        participant that was online to share keys (not offline at the start, not failed before it)."""
        dp, secure_round, cohort = self.dp, None, []
        dimension = private.dimension(weights)
        seconds: dict[str, float] = {}
        if self.secure is not None:
            cohort = [
                p.device for p in plans if p.fate != "failed" and not (p.fate == "dropped" and p.gone == 0)
            ]
            secure_round = SecureRound(self.secure, cohort, dimension, (self.spec.seed, number))
            for device in cohort:
                profile = profiles.get(device)
                if profile is not None and protocol is not None:
                    seconds[device] = protocol(profile)
        clip = None if dp is None else (self.adaptive.clip if self.adaptive else dp.clip)
        device_noise = flag_noise = 0.0
        if dp is not None and clip is not None and dp.mode != "central":
            share = 1.0 if dp.mode == "local" else 1.0 / math.sqrt(self._threshold())
            device_noise = dp.update_noise_multiplier(self.sampling.cohort) * clip * share
            if self.adaptive is not None:
                flag_noise = self.adaptive.count_stddev * share
        collector = PrivateCollector(dimension, secure_round)
        flag = self.adaptive is not None
        return PrivateRound(number, clip, device_noise, flag_noise, flag, collector, cohort, seconds)

    def _threshold(self) -> int:
        """The fewest inputs a successful secure round sums: what a device's noise share is sized for."""
        assert self.secure is not None
        return self.secure.fewest

    def finish(
        self, private_round: PrivateRound, global_weights: Weights
    ) -> tuple[Weights, dict[str, object]]:
        """The round's client aggregate (``global + mean update``) and what the round shows of its privacy."""
        collector = private_round.collector
        shown: dict[str, object] = {}
        if collector.secure is not None:
            total, count = collector.secure.unmask()
            shown["secure"] = self._secure_view(collector.secure, private_round.cohort, count)
        else:
            total, count = collector.sum, collector.count
        delta, within = total[:-1], float(total[-1])
        dp = self.dp
        rng = np.random.default_rng([self.spec.seed, private_round.number, NOISE_STREAM])
        if dp is not None and dp.mode == "central" and private_round.clip is not None:
            z = dp.update_noise_multiplier(self.sampling.cohort)
            delta = delta + gaussian(rng, z * private_round.clip, delta.size)
            within += float(gaussian(rng, self.adaptive.count_stddev, 1)[0]) if self.adaptive else 0.0
        fixed = dp is not None and dp.mode != "local"
        denominator = float(self.sampling.cohort if fixed else max(count, 1))
        aggregate = private.moved(global_weights, delta / denominator)
        if dp is not None:
            shown.update(self._dp_view(private_round, within))
        return aggregate, shown

    def _dp_view(self, private_round: PrivateRound, within: float) -> dict[str, object]:
        assert self.dp is not None and self.ledger is not None
        epsilon = self.ledger.spend(self.noise_multiplier)
        view: dict[str, object] = {
            "epsilon": epsilon if math.isfinite(epsilon) else None,
            "delta": self.dp.delta,
            "clip": private_round.clip,
            "noise_multiplier": self.noise_multiplier,
        }
        if self.adaptive is not None:
            fraction = within / self.sampling.cohort
            view["unclipped_fraction"] = fraction
            view["next_clip"] = self.adaptive.move(fraction)
        return view

    @staticmethod
    def _secure_view(secure: SecureRound, cohort: list[str], survivors: int) -> dict[str, object]:
        traffic = [secure.traffic(device) for device in cohort]
        return {
            "cohort": len(cohort),
            "survivors": survivors,
            "recovered": len(cohort) - survivors,
            "upload_bytes": max((t.upload_bytes for t in traffic), default=0),
            "download_bytes": max((t.download_bytes for t in traffic), default=0),
        }
