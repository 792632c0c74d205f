"""Privacy accounting (``service.privacy.accounting``) over Google's dp-accounting."""

from __future__ import annotations

import dp_accounting
import pytest
from dp_accounting import rdp

from service.errors import InvalidRequest
from service.privacy.accounting import Ledger, Sampling, affordable_rounds, round_event
from service.privacy.settings import DPSettings

DELTA = 1e-5


def test_epsilon_grows_with_rounds_and_falls_with_noise():
    quiet, loud = (Ledger(DPSettings(noise_multiplier=z), Sampling("poisson", 1000, 100)) for z in (0.8, 1.5))
    previous = 0.0
    for _ in range(5):
        epsilon = quiet.spend(0.8)
        assert epsilon > previous
        previous = epsilon
        loud.spend(1.5)
    assert loud.epsilon < quiet.epsilon
    assert quiet.rounds == 5


def test_fixed_size_sampling_is_accounted_under_replace_one():
    """A cohort drawn without replacement is accounted with replace-one adjacency, whose sensitivity is
    twice the clip: with every device in every round, that is the Gaussian mechanism at ``z / 2``."""
    ledger = Ledger(DPSettings(noise_multiplier=2.0), Sampling("fixed", 50, 50))
    for _ in range(10):
        ledger.spend(2.0)
    plain = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    plain.compose(dp_accounting.GaussianDpEvent(1.0), 10)
    assert ledger.epsilon == pytest.approx(plain.get_epsilon(DELTA), rel=1e-9)


def test_poisson_sampling_amplifies():
    """Sampling 10% of the devices costs far less than taking every device every round."""
    sampled = Ledger(DPSettings(noise_multiplier=1.0), Sampling("poisson", 1000, 100))
    everyone = Ledger(DPSettings(noise_multiplier=1.0), Sampling("poisson", 1000, 1000))
    assert sampled.after(20, 1.0) < everyone.after(20, 1.0) / 3


def test_pld_is_at_least_as_tight_as_rdp():
    rdp_ledger = Ledger(DPSettings(noise_multiplier=1.0), Sampling("poisson", 1000, 100))
    pld_ledger = Ledger(DPSettings(noise_multiplier=1.0, accountant="pld"), Sampling("poisson", 1000, 100))
    assert pld_ledger.after(50, 1.0) < rdp_ledger.after(50, 1.0)


def test_pld_refuses_fixed_size_sampling():
    with pytest.raises(InvalidRequest, match="pld"):
        Ledger(DPSettings(accountant="pld"), Sampling("fixed", 100, 10))


def test_local_dp_is_the_gaussian_per_round_without_amplification():
    ledger = Ledger(DPSettings(mode="local", noise_multiplier=4.0), Sampling("poisson", 1000, 10))
    plain = rdp.RdpAccountant()
    plain.compose(dp_accounting.GaussianDpEvent(2.0), 3)
    assert ledger.after(3, 4.0) == pytest.approx(plain.get_epsilon(DELTA), rel=1e-9)


def test_no_noise_is_no_privacy():
    ledger = Ledger(DPSettings(noise_multiplier=0.0), Sampling("poisson", 100, 10))
    assert ledger.spend(0.0) == float("inf")
    assert isinstance(
        round_event(DPSettings(), Sampling("poisson", 10, 1), 0.0), dp_accounting.NonPrivateDpEvent
    )


def test_after_leaves_the_ledger_as_it_was():
    ledger = Ledger(DPSettings(), Sampling("poisson", 1000, 100))
    ledger.spend(1.0)
    before = ledger.epsilon
    assert ledger.after(10, 1.0) > before
    assert ledger.rounds == 1 and ledger.epsilon == before
    assert ledger.after(0, 1.0) == pytest.approx(before)


@pytest.mark.parametrize("target", [4.0, 8.0])
def test_affordable_rounds_is_the_last_round_within_the_target(target):
    ledger = Ledger(DPSettings(), Sampling("poisson", 1000, 100))
    fits = affordable_rounds(ledger, target, 200, 1.0)
    assert 0 < fits < 200
    assert ledger.after(fits, 1.0) <= target < ledger.after(fits + 1, 1.0)
