"""The server never holds an individual unmasked input; a client never reveals both shares for one
device; a share altered in transit is refused."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from service.privacy.secagg import QuantizationField, SecAggFailed, SecAggSettings, SecureRound, crypto
from tests.privacy.secagg.conftest import DIMENSION, cohort_of, quantize_rng, update, upload

SETTINGS = SecAggSettings(threshold=4, neighbors=6)


def quantized(settings: SecAggSettings, device: str) -> np.ndarray:
    field = QuantizationField(settings.clipping_range, settings.quantization_range)
    return field.quantize(update(device), quantize_rng(device))


def arrays(value: object, seen: set[int] | None = None) -> Iterator[np.ndarray]:
    """Every ndarray reachable from ``value`` through attributes and containers."""
    seen = set() if seen is None else seen
    if id(value) in seen:
        return
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from arrays(key, seen)
            yield from arrays(item, seen)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from arrays(item, seen)
    elif hasattr(value, "__dict__"):
        yield from arrays(vars(value), seen)


def test_a_masked_input_looks_uniform_and_hides_its_quantized_input() -> None:
    cohort = cohort_of(10)
    secure = SecureRound(SETTINGS, cohort, DIMENSION, 1)
    masked = upload(secure, cohort[:1])[cohort[0]]
    plain = quantized(SETTINGS, cohort[0])
    assert np.mean(masked != plain) > 0.99
    # quantized values sit below 2**22; masked ones spread over all 2**32: 16 equal bins by the top bits
    counts = np.bincount(masked >> 28, minlength=16)
    expected = DIMENSION / 16
    chi2 = float(np.sum((counts - expected) ** 2 / expected))
    assert chi2 < 37.7, counts  # 15 degrees of freedom, p = 0.001


def test_the_server_object_holds_no_individual_input() -> None:
    cohort = cohort_of(10)
    secure = SecureRound(SETTINGS, cohort, DIMENSION, 2)
    sent = upload(secure, cohort[:8])
    secure.unmask(cohort[:7])
    held = list(arrays(secure))
    assert held, "the walk found no arrays: it would prove nothing"
    individual = [quantized(SETTINGS, d) for d in cohort] + list(sent.values())
    for array in held:
        for vector in individual:
            assert not (array.shape == vector.shape and np.array_equal(array, vector))


def test_a_client_never_reveals_both_shares_of_one_device() -> None:
    cohort = cohort_of(10)
    secure = SecureRound(SETTINGS, cohort, DIMENSION, 3)
    upload(secure, cohort)
    secure.unmask()
    holder = cohort[0]
    neighbour = secure.graph[holder][0]
    # a curious server, after the round, asks for the mask key of a device whose b share it already got
    with pytest.raises(SecAggFailed, match=f"refused to reveal both shares for device {neighbour}"):
        secure.client(holder).reveal({neighbour: "s"})
    with pytest.raises(SecAggFailed, match="refused to reveal its own mask key"):
        secure.client(holder).reveal({holder: "s"})


def test_a_client_asked_for_b_after_the_mask_key_refuses() -> None:
    cohort = cohort_of(10)
    secure = SecureRound(SETTINGS, cohort, DIMENSION, 4)
    holder = cohort[0]
    neighbour = secure.graph[holder][0]
    assert isinstance(secure.client(holder).reveal({neighbour: "s"})[neighbour], int)
    with pytest.raises(SecAggFailed, match=f"refused to reveal both shares for device {neighbour}"):
        secure.client(holder).reveal({neighbour: "b"})


def test_a_tampered_share_is_refused() -> None:
    cohort = cohort_of(10)
    secure = SecureRound(SETTINGS, cohort, DIMENSION, 5)
    upload(secure, cohort)
    holder = cohort[0]
    sender = secure.graph[holder][0]
    sealed = bytearray(secure.client(holder).inbox[sender])
    sealed[-20] ^= 0x01
    secure.client(holder).inbox[sender] = bytes(sealed)
    with pytest.raises(
        SecAggFailed, match=f"device {holder}'s share from device {sender} failed authentication"
    ):
        secure.unmask()


def test_a_share_relayed_to_another_device_is_refused() -> None:
    cohort = cohort_of(10)
    secure = SecureRound(SETTINGS, cohort, DIMENSION, 6)
    upload(secure, cohort)
    holder = cohort[0]
    first, second = secure.graph[holder][:2]
    inbox = secure.client(holder).inbox
    inbox[first], inbox[second] = inbox[second], inbox[first]
    with pytest.raises(SecAggFailed, match="failed authentication"):
        secure.unmask()


def test_a_share_reflected_to_its_sender_is_refused() -> None:
    """The pair's two messages share one key; the ids bound into each (associated data) tell them apart."""
    cohort = cohort_of(10)
    secure = SecureRound(SETTINGS, cohort, DIMENSION, 7)
    upload(secure, cohort)
    holder = cohort[0]
    sender = secure.graph[holder][0]
    own = secure.client(sender).inbox[holder]  # what holder sent to sender
    secure.client(holder).inbox[sender] = own
    with pytest.raises(SecAggFailed, match="failed authentication"):
        secure.unmask()


def test_a_ciphertext_is_bound_to_both_ids_in_order() -> None:
    key = bytes(32)
    sealed = crypto.seal(key, "a", "b", b"share", crypto.nonce_for("a", "b"))
    assert crypto.open_sealed(key, "a", "b", sealed) == b"share"
    assert crypto.open_sealed(key, "b", "a", sealed) is None
    assert crypto.open_sealed(key, "a", "c", sealed) is None
