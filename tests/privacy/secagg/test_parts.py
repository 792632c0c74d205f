"""The protocol's parts: settings refused by name, the quantization's bound and unbiasedness, Shamir's
threshold, the graph's degree, seeded reproducibility, the server's input checks and the traffic."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from service.errors import Conflict, InvalidRequest, InvalidTensor
from service.privacy.secagg import QuantizationField, SecAggSettings, SecureRound, mask
from service.privacy.secagg.crypto import seed_bytes
from service.privacy.secagg.graph import neighbours
from service.privacy.secagg.shamir import PRIME, combine, split
from tests.privacy.secagg.conftest import DIMENSION, cohort_of, quantize_rng, update, upload


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        (SecAggSettings(threshold=1), "threshold must be at least 2, got 1"),
        (SecAggSettings(threshold=11), r"threshold must be at most the cohort \(10 participants\), got 11"),
        (SecAggSettings(threshold=4, neighbors=3), r"neighbors must be at least the threshold \(4\), got 3"),
        (
            SecAggSettings(threshold=4, neighbors=10),
            r"neighbors must be below the cohort \(10 participants\)",
        ),
        (SecAggSettings(threshold=4, clipping_range=0.0), "clipping_range must be a finite number above 0"),
        (SecAggSettings(threshold=4, clipping_range=float("inf")), "clipping_range must be a finite number"),
        (SecAggSettings(threshold=4, clipping_range=float("nan")), "clipping_range must be a finite number"),
        (SecAggSettings(threshold=4, quantization_range=1), "quantization_range must be at least 2, got 1"),
        (
            SecAggSettings(threshold=4, min_inputs=3),
            r"min_inputs must be at least the threshold \(4\), got 3",
        ),
        (
            SecAggSettings(threshold=4, min_inputs=11),
            r"min_inputs must be at most the cohort \(10 participants\)",
        ),
        (SecAggSettings(threshold=4, quantization_range=1 << 30), "quantization_range 1073741824 would wrap"),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(settings: SecAggSettings, named: str) -> None:
    with pytest.raises(InvalidRequest, match=f"secure_aggregation.{named}"):
        settings.check(10)


def test_a_round_refuses_settings_unusable_whatever_the_cohort() -> None:
    with pytest.raises(InvalidRequest, match=r"secure_aggregation\.threshold must be at least 2, got 1"):
        SecureRound(SecAggSettings(threshold=1), cohort_of(5), DIMENSION, 1)
    with pytest.raises(InvalidRequest, match=r"4294967296 would wrap .* at most 858993460"):
        SecureRound(SecAggSettings(threshold=2, quantization_range=2**32), cohort_of(5), DIMENSION, 1)


def test_good_settings_pass_and_say_their_degree() -> None:
    SecAggSettings(threshold=10).check(10)
    SecAggSettings(threshold=4, neighbors=9, quantization_range=(2**32 - 1) // 10 + 1).check(10)
    assert SecAggSettings(threshold=3).degree(10) == 9
    assert SecAggSettings(threshold=3, neighbors=4).degree(10) == 4
    assert SecAggSettings(threshold=3, neighbors=5).degree(10) == 5  # odd k, even n: Harary
    assert SecAggSettings(threshold=3, neighbors=5).degree(11) == 6  # odd k, odd n: k + 1
    assert SecAggSettings(threshold=3, neighbors=8).degree(6) == 5  # the cohort shrank: complete


@pytest.mark.parametrize(("n", "k"), [(10, 4), (10, 5), (11, 6), (7, 6), (30, 8)])
def test_the_graph_is_symmetric_with_the_degree(n: int, k: int) -> None:
    cohort = cohort_of(n)
    graph = neighbours(cohort, k, b"seed")
    for member, around in graph.items():
        assert len(set(around)) == k and member not in around
        assert all(member in graph[other] for other in around)
    assert neighbours(cohort, k, b"seed") == graph
    if k < n - 1:
        assert neighbours(cohort, k, b"other") != graph


def test_quantization_error_is_within_the_bound_and_unbiased() -> None:
    field = QuantizationField(1.0, 2**8)
    values = np.random.default_rng(0).uniform(-1.0, 1.0, 20_000)
    rng = np.random.default_rng(1)
    draws = [field.quantize(values, rng) for _ in range(50)]
    assert max(d.max() for d in draws) <= 255
    for draw in draws[:3]:
        assert np.abs(field.dequantize(draw, 1) - values).max() < field.bound(1)
    mean = field.dequantize(np.sum(draws, axis=0, dtype=np.uint32), 50) / 50
    assert abs(float(np.mean(mean - values))) < field.step / 100  # stochastic rounding: no drift
    with pytest.raises(InvalidTensor, match="NaN or infinity"):
        field.quantize(np.array([0.0, np.nan]), rng)


def test_shamir_needs_the_threshold_of_shares() -> None:
    secret = bytes(range(32))
    draws = np.random.default_rng(2)
    shares = split(secret, 4, [1, 2, 3, 4, 5, 6], lambda n: draws.bytes(n))
    assert combine(shares[:4]) == secret
    assert combine(shares[2:]) == secret
    assert combine(shares) == secret
    with pytest.raises(ValueError, match="do not hold a secret"):
        combine(shares[:3])  # fewer than t: a random field element, almost never below 2**256
    assert all(0 <= y < PRIME for _, y in shares)


def test_the_same_seed_gives_the_same_masks_and_sum() -> None:
    settings, cohort = SecAggSettings(threshold=4, neighbors=4), cohort_of(8)
    runs = []
    for seed in ((1, 2), (1, 2), (1, 3)):
        secure = SecureRound(settings, cohort, DIMENSION, seed)
        sent = upload(secure, cohort[1:])
        runs.append((sent, secure.graph, secure.unmask()[0]))
    (first, graph, total), (again, graph_again, total_again), (other, _, other_total) = runs
    assert graph == graph_again
    assert all(np.array_equal(first[d], again[d]) for d in first)
    assert np.array_equal(total, total_again)
    assert all(np.mean(first[d] != other[d]) > 0.99 for d in first)
    assert np.abs(total - other_total).max() <= QuantizationField(8.0, 1 << 22).bound(7) * 2


def test_seeds_of_each_kind_are_told_apart() -> None:
    kinds = [1, b"1", "1", (1,), (1, 2), ((1, 2),), (12,), [1, 2]]
    encoded = [seed_bytes(k) for k in kinds]
    assert len(set(encoded[:-1])) == len(kinds) - 1 and encoded[-1] == encoded[4]
    assert seed_bytes(np.int64(7)) == seed_bytes(7)
    with pytest.raises(TypeError, match="seed is an int, bytes or a tuple"):
        seed_bytes(1.5)


def test_the_server_checks_what_it_receives() -> None:
    settings, cohort = SecAggSettings(threshold=3), cohort_of(5)
    secure = SecureRound(settings, cohort, DIMENSION, 4)
    good = mask(update(cohort[0]), secure.keys(cohort[0]), quantize_rng(cohort[0]))
    with pytest.raises(InvalidTensor, match=r"uint32 \(1000,\), got float32"):
        secure.receive(cohort[0], good.astype(np.float32))
    with pytest.raises(InvalidTensor, match=r"got uint32 \(999,\)"):
        secure.receive(cohort[0], good[:-1])
    with pytest.raises(InvalidRequest, match="not in this secure round's cohort"):
        secure.receive("stranger", good)
    secure.receive(cohort[0], good)
    with pytest.raises(Conflict, match="already sent"):
        secure.receive(cohort[0], good)
    with pytest.raises(InvalidRequest, match=f"device {cohort[1]} cannot answer"):
        secure.unmask([cohort[0], cohort[1]])


def test_masking_keys_cross_to_a_worker() -> None:
    secure = SecureRound(SecAggSettings(threshold=3), cohort_of(5), DIMENSION, 5)
    keys = secure.keys("phone-01")
    assert pickle.loads(pickle.dumps(keys)) == keys
    assert "self_seed" not in repr(keys) and keys.self_seed.hex() not in repr(keys)


def test_traffic_as_planned_and_less_for_a_dropout() -> None:
    settings, cohort = SecAggSettings(threshold=4, neighbors=6), cohort_of(12)
    secure = SecureRound(settings, cohort, 2_000, 6)
    upload(secure, cohort[1:])
    secure.unmask(cohort[2:])
    planned = SecureRound.planned_traffic(settings, 12, 2_000)
    assert secure.traffic(cohort[2]) == planned
    assert planned.round_trips == 3 and planned.key_agreements == 12 and planned.prg_bytes == 7 * 4 * 2_000
    dropped, silent = secure.traffic(cohort[0]), secure.traffic(cohort[1])
    assert dropped.round_trips == silent.round_trips == 2 and dropped.prg_bytes == 0
    assert silent.prg_bytes == planned.prg_bytes and silent.upload_bytes < planned.upload_bytes
