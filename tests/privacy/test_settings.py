"""DP settings (``service.privacy.settings``): every bad one refused, naming it."""

from __future__ import annotations

import math

import pytest

from service.errors import InvalidRequest
from service.privacy.settings import DPSettings


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"noise_multiplier": -0.1}, "noise_multiplier"),
        ({"noise_multiplier": math.nan}, "noise_multiplier"),
        ({"clip": 0.0}, "clip"),
        ({"clip": -1.0}, "clip"),
        ({"delta": 0.0}, "delta"),
        ({"delta": 1.0}, "delta"),
        ({"delta": 1.5}, "delta"),
        ({"target_quantile": 1.2}, "target_quantile"),
        ({"clip_learning_rate": -1.0}, "clip_learning_rate"),
        ({"clipped_count_stddev": 0.0}, "clipped_count_stddev"),
        ({"target_epsilon": 0.0}, "target_epsilon"),
        ({"mode": "trusted"}, "mode"),
        ({"accountant": "moments"}, "accountant"),
        ({"on_budget": "warn"}, "on_budget"),
        ({"noise_multiplier": True}, "noise_multiplier"),
    ],
)
def test_bad_settings_are_refused_by_name(change, named):
    with pytest.raises(InvalidRequest, match=f"privacy.{named}"):
        DPSettings(**change).check()


def test_good_settings_pass():
    DPSettings().check()
    DPSettings(mode="local", noise_multiplier=0.0, delta=1e-9, target_epsilon=8.0).check()


def test_adaptive_clipping_splits_the_noise_as_andrew_et_al():
    """z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2: the updates get a little more noise than z, so that
    updates and count together are as private as z alone."""
    settings = DPSettings(noise_multiplier=1.0, adaptive=True, clipped_count_stddev=5.0)
    z_delta = settings.update_noise_multiplier(100)
    assert z_delta == pytest.approx((1.0 - 0.01) ** -0.5)
    assert (z_delta**-2 + (2 * 5.0) ** -2) ** -0.5 == pytest.approx(1.0)
    assert DPSettings(noise_multiplier=1.0).update_noise_multiplier(100) == 1.0
    assert settings.count_stddev(100) == 5.0
    assert DPSettings(adaptive=True).count_stddev(100) == 5.0  # Andrew et al.: cohort / 20


def test_adaptive_clipping_refuses_a_count_noise_too_small():
    with pytest.raises(InvalidRequest, match="clipped_count_stddev"):
        DPSettings(noise_multiplier=2.0, adaptive=True, clipped_count_stddev=0.9).update_noise_multiplier(10)
