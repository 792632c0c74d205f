"""What a strategy asks of each participant beyond FedAvg's (``ClientTask``): kept apart from the
strategies so that ``Participation`` carries it without importing them."""

from __future__ import annotations

from dataclasses import dataclass

from service.privacy.secagg import MaskingKeys


@dataclass(frozen=True)
class ClientTask:
    """What a participant trains with and sends back, beyond its weights (carried by ``Participation``).

    ``signature``: the model's signature each local step runs (``train``, or a strategy's variant, which
    the model must have). ``proximal_mu``: FedProx's weight, fed with the round's global weights to
    ``train_prox``. ``control``: SCAFFOLD's server control variate (a file under the data directory that
    the participant reads); the participant corrects every step by it and its own, and sends its own's
    change as ``Update.control``.
    """

    signature: str = "train"
    proximal_mu: float = 0.0
    control: str | None = None


@dataclass(frozen=True)
class Privatize:
    """What a participant does to its update before it sends it, under differential privacy or secure
    aggregation (``Participation.privatize``): it sends ``trained - global`` over the floating tensors as
    one vector (``private.flatten``'s order), clipped to L2 norm ``clip`` (None: not clipped), plus
    Gaussian noise of ``noise_stddev`` (local DP, or its share of distributed DP), and one more
    coordinate (``flag``). With ``masking`` (secure aggregation), that vector is quantized and masked:
    all the server ever receives of it."""

    clip: float | None = None
    noise_stddev: float = 0.0
    masking: MaskingKeys | None = None
    protocol_seconds: float = 0.0
    """Simulated seconds the secure aggregation protocol costs this device beyond its plain part (its
    profile's, charged to its clock: ``private_run.protocol_seconds``)."""
    flag: bool = False
    """Adaptive clipping: the last coordinate says whether the update was within the clip (1) or not
    (0); without it, that coordinate is 0 (whether an update was clipped is not the server's to know)."""
    flag_noise_stddev: float = 0.0
    """Distributed DP with adaptive clipping: the device's share of the noise on the count of updates
    within the clip."""
