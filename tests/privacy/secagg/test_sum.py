"""The secure sum equals the plain sum within the quantization's bound, with no dropout, with devices
that drop out after sharing keys and after uploading, over SecAgg's complete graph and SecAgg+'s sparse
one; too many dropouts fail the round with the reason."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from service.privacy.secagg import QuantizationField, SecAggFailed, SecAggSettings, SecureRound, mask
from tests.privacy.secagg.conftest import DIMENSION, cohort_of, plain_sum, quantize_rng, update, upload

GRAPHS = {
    "secagg": SecAggSettings(threshold=7),
    "secagg+": SecAggSettings(threshold=4, neighbors=6),
    "secagg+ odd k (Harary)": SecAggSettings(threshold=4, neighbors=5),
}


def assert_close(settings: SecAggSettings, total: np.ndarray, devices: list[str]) -> None:
    error = np.abs(total - plain_sum(settings, devices))
    bound = QuantizationField(settings.clipping_range, settings.quantization_range).bound(len(devices))
    assert error.max() <= bound, (error.max(), bound)


@pytest.mark.parametrize("graph", GRAPHS)
def test_secure_sum_is_the_plain_sum_without_dropouts(graph: str) -> None:
    settings, cohort = GRAPHS[graph], cohort_of(12)
    secure = SecureRound(settings, cohort, DIMENSION, (3, 1))
    upload(secure, cohort)
    total, count = secure.unmask()
    assert count == 12 and total.dtype == np.float64 and total.shape == (DIMENSION,)
    assert_close(settings, total, cohort)


@pytest.mark.parametrize("graph", GRAPHS)
def test_devices_that_drop_after_sharing_keys_are_recovered(graph: str) -> None:
    settings, cohort = GRAPHS[graph], cohort_of(12)
    secure = SecureRound(settings, cohort, DIMENSION, (3, 2))
    sent = [d for d in cohort if d not in ("phone-02", "phone-07")]
    upload(secure, sent)
    total, count = secure.unmask()
    assert count == 10
    assert_close(settings, total, sent)


@pytest.mark.parametrize("graph", GRAPHS)
def test_devices_that_drop_after_uploading_still_count(graph: str) -> None:
    settings, cohort = GRAPHS[graph], cohort_of(12)
    secure = SecureRound(settings, cohort, DIMENSION, (3, 3))
    upload(secure, cohort)
    total, count = secure.unmask([d for d in cohort if d not in ("phone-04", "phone-09")])
    assert count == 12
    assert_close(settings, total, cohort)


@pytest.mark.parametrize("graph", GRAPHS)
def test_dropouts_at_both_steps(graph: str) -> None:
    settings, cohort = GRAPHS[graph], cohort_of(16)
    secure = SecureRound(settings, cohort, DIMENSION, (3, 4))
    sent = cohort[2:]
    upload(secure, sent)
    total, count = secure.unmask(sent[1:])
    assert count == 14
    assert_close(settings, total, sent)


def test_a_larger_sparse_cohort() -> None:
    settings, cohort = SecAggSettings(threshold=5, neighbors=8), cohort_of(30)
    secure = SecureRound(settings, cohort, DIMENSION, b"larger")
    sent = cohort[3:]
    upload(secure, sent)
    total, count = secure.unmask(sent[:-2])
    assert count == 27
    assert_close(settings, total, sent)


def test_too_many_dropouts_name_the_device_and_threshold() -> None:
    settings, cohort = SecAggSettings(threshold=4, neighbors=4), cohort_of(10)
    secure = SecureRound(settings, cohort, DIMENSION, 5)
    upload(secure, cohort)
    victim = cohort[0]
    lost = [*secure.graph[victim][:2], victim]
    with pytest.raises(
        SecAggFailed, match=rf"2 of device {victim}'s 4 neighbours survived; the threshold is 4"
    ):
        secure.unmask([d for d in cohort if d not in lost])


def test_a_dropped_device_without_enough_surviving_neighbours_fails() -> None:
    settings, cohort = SecAggSettings(threshold=5, neighbors=6), cohort_of(10)
    secure = SecureRound(settings, cohort, DIMENSION, 6)
    victim = cohort[3]
    gone = {victim, *secure.graph[victim][:2]}
    upload(secure, [d for d in cohort if d not in gone])
    with pytest.raises(
        SecAggFailed, match=rf"4 of device {victim}'s 6 neighbours survived; the threshold is 5"
    ):
        secure.unmask()


def test_fewer_inputs_than_the_threshold_fail() -> None:
    settings, cohort = SecAggSettings(threshold=4), cohort_of(6)
    secure = SecureRound(settings, cohort, DIMENSION, 7)
    upload(secure, cohort[:3])
    with pytest.raises(
        SecAggFailed, match="only 3 of the cohort's 6 devices sent masked inputs; the threshold is 4"
    ):
        secure.unmask()


def test_fewer_inputs_than_min_inputs_fail_though_the_shares_would_do() -> None:
    """A sparse graph's small threshold, and a round that must still sum ``min_inputs`` (distributed DP
    sized each device's noise for that many)."""
    settings, cohort = SecAggSettings(threshold=2, neighbors=4, min_inputs=5), cohort_of(8)
    secure = SecureRound(settings, cohort, DIMENSION, 7)
    upload(secure, cohort[:4])
    with pytest.raises(
        SecAggFailed,
        match=r"only 4 of the cohort's 8 devices sent masked inputs; min_inputs is 5 \(threshold 2\)",
    ):
        secure.unmask()
    enough = SecureRound(settings, cohort, DIMENSION, 7)
    upload(enough, cohort[:5])
    total, count = enough.unmask()
    assert count == 5
    assert_close(settings, total, cohort[:5])


def test_a_cohort_below_the_threshold_fails_at_setup() -> None:
    with pytest.raises(SecAggFailed, match="only 2 devices shared keys; the threshold is 3"):
        SecureRound(SecAggSettings(threshold=3), cohort_of(2), DIMENSION, 8)


def test_threshold_of_the_whole_cohort_on_the_complete_graph() -> None:
    """Each device keeps one share of its own, so t = n works while every device answers."""
    settings, cohort = SecAggSettings(threshold=5), cohort_of(5)
    secure = SecureRound(settings, cohort, DIMENSION, 9)
    upload(secure, cohort)
    total, _ = secure.unmask()
    assert_close(settings, total, cohort)


def test_inputs_received_from_many_threads_sum_alike() -> None:
    """numpy lets go of the GIL while it adds: without the round's lock, sums lose inputs."""
    settings, cohort, dimension = SecAggSettings(threshold=4, neighbors=6), cohort_of(32), 500_000
    masked = {
        d: mask(update(d, dimension), SecureRound(settings, cohort, dimension, 10).keys(d), quantize_rng(d))
        for d in cohort
    }
    serial = SecureRound(settings, cohort, dimension, 10)
    for device in cohort:
        serial.receive(device, masked[device])
    for _ in range(3):
        secure = SecureRound(settings, cohort, dimension, 10)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(secure.receive, cohort, [masked[d] for d in cohort]))
        assert np.array_equal(secure.sum, serial.sum)
    assert np.abs(serial.unmask()[0] - plain_sum(settings, cohort, dimension)).max() <= serial.field.bound(32)
