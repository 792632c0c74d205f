"""Clipping and adaptive clipping (``service.privacy.clipping``)."""

from __future__ import annotations

import numpy as np
import pytest

from service.privacy.clipping import AdaptiveClip, clip, gaussian


def test_clip_scales_long_vectors_down_to_the_norm_only():
    long = np.full(100, 1.0)
    clipped, within = clip(long, 2.0)
    assert not within and np.linalg.norm(clipped) == pytest.approx(2.0)
    assert np.allclose(clipped / np.linalg.norm(clipped), long / np.linalg.norm(long))
    short = np.full(4, 0.1)
    kept, within = clip(short, 2.0)
    assert within and np.array_equal(kept, short)


def test_gaussian_noise_is_seeded_and_scaled():
    a = gaussian(np.random.default_rng(7), 3.0, 100_000)
    b = gaussian(np.random.default_rng(7), 3.0, 100_000)
    assert np.array_equal(a, b)
    assert a.std() == pytest.approx(3.0, rel=0.02)
    assert not gaussian(np.random.default_rng(7), 0.0, 5).any()


def test_adaptive_clip_converges_to_the_target_quantile():
    """Andrew et al.'s geometric update, fed the exact unclipped fraction of fixed norms, settles at
    the target quantile of those norms."""
    norms = np.random.default_rng(0).lognormal(0.0, 1.0, 1000)
    adaptive = AdaptiveClip(clip=0.01, target_quantile=0.7, learning_rate=0.2, count_stddev=0.0)
    for _ in range(400):
        adaptive.move(float(np.mean(norms <= adaptive.clip)))
    assert adaptive.clip == pytest.approx(np.quantile(norms, 0.7), rel=0.05)
