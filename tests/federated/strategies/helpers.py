"""What the strategy tests share: a run's wait."""

from __future__ import annotations

from service.federated.federation import Federation
from service.federated.spec import RoundSpec

WAIT = 180.0


def run(federation: Federation, spec: RoundSpec) -> dict[str, object]:
    """Start ``spec`` and wait for it to end; its view."""
    view = federation.rounds.wait(str(federation.rounds.start(spec)["id"]), WAIT)
    assert view["state"] == "succeeded", view
    return view
