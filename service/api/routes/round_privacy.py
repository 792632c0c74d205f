"""The privacy parts of a rounds request: differential privacy (``PrivacyBody``) and secure aggregation
(``SecureAggregationBody``), each turned into its settings (``service.privacy``); and what a participant
is asked to do to its update (``PrivatizeBody``: a sharded fleet's round sends it to the device's shard)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from service.federated.task import Privatize
from service.privacy.secagg import MaskingKeys, SecAggSettings
from service.privacy.settings import MAX_CLIP, MAX_EPSILON, MAX_NOISE_MULTIPLIER, DPSettings

MAX_COHORT = 1_000_000


class PrivacyBody(BaseModel):
    """Differential privacy for a run (docs/privacy.md): central (DP-FedAvg), local, or distributed
    (with secure aggregation); accounted with Google's dp-accounting after every round."""

    mode: Literal["central", "local", "distributed"] = Field(
        "central",
        description="central: the server adds the noise to the sum; local: each device noises its own "
        "update; distributed: each device adds its share, under secure aggregation",
    )
    noise_multiplier: float = Field(
        1.0,
        ge=0,
        le=MAX_NOISE_MULTIPLIER,
        allow_inf_nan=False,
        description="the Gaussian noise's standard deviation over the clip norm (0: clipping only)",
    )
    clip: float = Field(
        1.0, gt=0, le=MAX_CLIP, allow_inf_nan=False, description="the L2 norm each update is clipped to"
    )
    adaptive: bool = Field(False, description="move the clip norm to a quantile of the norms (Andrew et al.)")
    target_quantile: float = Field(0.5, ge=0, le=1, allow_inf_nan=False, description="adaptive: the quantile")
    clip_learning_rate: float = Field(
        0.2, ge=0, le=10, allow_inf_nan=False, description="adaptive: the clip norm's geometric step"
    )
    clipped_count_stddev: float | None = Field(
        None,
        gt=0,
        le=1e9,
        allow_inf_nan=False,
        description="adaptive: the noise on the count of unclipped updates; default: the cohort / 20",
    )
    delta: float = Field(
        1e-5, gt=0, lt=1, allow_inf_nan=False, description="epsilon is reported at this delta"
    )
    accountant: Literal["rdp", "pld"] = Field(
        "rdp", description="Renyi DP, or privacy loss distributions (tighter; Poisson sampling only)"
    )
    target_epsilon: float | None = Field(
        None, gt=0, le=MAX_EPSILON, allow_inf_nan=False, description="the budget at delta; default: none"
    )
    on_budget: Literal["refuse", "stop"] = Field(
        "refuse",
        description="a run that would exceed target_epsilon: refused at its start, or stopped before the "
        "round that would",
    )

    def settings(self) -> DPSettings:
        return DPSettings(**self.model_dump())


class SecureAggregationBody(BaseModel):
    """Secure aggregation (SecAgg+, Bell et al. 2020): the server only sees masked updates and their sum."""

    threshold: int = Field(
        ge=2, le=MAX_COHORT, description="shares needed to rebuild a device's secrets; at most the cohort"
    )
    neighbors: int | None = Field(
        None,
        ge=2,
        le=MAX_COHORT,
        description="each device's neighbours in SecAgg+'s sparse graph; default: every other participant",
    )
    clipping_range: float = Field(
        8.0, gt=0, le=1e6, allow_inf_nan=False, description="each value is clipped to [-range, range]"
    )
    quantization_range: int = Field(
        1 << 22, ge=2, le=1 << 31, description="levels each value is quantized to before masking"
    )
    min_inputs: int | None = Field(
        None,
        ge=2,
        le=MAX_COHORT,
        description="the fewest masked inputs a round sums, or it fails; distributed DP sizes each "
        "device's noise for this many; default: the threshold",
    )

    def settings(self) -> SecAggSettings:
        return SecAggSettings(**self.model_dump())


SEED = r"^[0-9a-f]{64}$"
"""A 32-byte seed, in hex."""
MAX_NEIGHBORS = 100_000


class MaskingBody(BaseModel):
    """A participant's masking keys: its self mask's seed, its pairwise seeds with their signs."""

    device: str = Field(max_length=256)
    self_seed: str = Field(pattern=SEED)
    pairwise: list[tuple[Annotated[str, Field(pattern=SEED)], Literal[1, -1]]] = Field(
        max_length=MAX_NEIGHBORS
    )
    clipping_range: float = Field(gt=0, le=1e6, allow_inf_nan=False)
    quantization_range: int = Field(ge=2, le=1 << 31)

    @classmethod
    def of(cls, keys: MaskingKeys) -> MaskingBody:
        clipping_range, quantization_range = keys.field
        return cls(
            device=keys.device,
            self_seed=keys.self_seed.hex(),
            pairwise=[(seed.hex(), 1 if sign > 0 else -1) for seed, sign in keys.pairwise],
            clipping_range=clipping_range,
            quantization_range=quantization_range,
        )

    def keys(self) -> MaskingKeys:
        return MaskingKeys(
            self.device,
            bytes.fromhex(self.self_seed),
            tuple((bytes.fromhex(seed), sign) for seed, sign in self.pairwise),
            (self.clipping_range, self.quantization_range),
        )


class PrivatizeBody(BaseModel):
    """What the participant does to its update before sending it (``task.Privatize``): the answer then
    carries only the vector ``p`` (docs/privacy.md)."""

    clip: float | None = Field(None, gt=0, le=MAX_CLIP, allow_inf_nan=False)
    noise_stddev: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False)
    masking: MaskingBody | None = None
    protocol_seconds: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False)
    flag: bool = False
    flag_noise_stddev: float = Field(0.0, ge=0, le=1e9, allow_inf_nan=False)

    @classmethod
    def of(cls, how: Privatize) -> PrivatizeBody:
        masking = MaskingBody.of(how.masking) if how.masking is not None else None
        return cls(
            clip=how.clip,
            noise_stddev=how.noise_stddev,
            masking=masking,
            protocol_seconds=how.protocol_seconds,
            flag=how.flag,
            flag_noise_stddev=how.flag_noise_stddev,
        )

    def privatize(self) -> Privatize:
        masking = self.masking.keys() if self.masking is not None else None
        return Privatize(
            self.clip, self.noise_stddev, masking, self.protocol_seconds, self.flag, self.flag_noise_stddev
        )
