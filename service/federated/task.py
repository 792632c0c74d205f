"""What a strategy asks of each participant beyond FedAvg's (``ClientTask``): kept apart from the
strategies so that ``Participation`` carries it without importing them."""

from __future__ import annotations

from dataclasses import dataclass


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
