"""What secure aggregation costs one device beyond a plain upload of the same vector: bytes, round
trips, key agreements, keystream and shares. Sizes follow the simulated messages byte for byte;
participants are named on the wire by a 4-byte index into the cohort."""

from __future__ import annotations

from dataclasses import dataclass

from service.privacy.secagg.crypto import KEY_BYTES, NONCE_BYTES, TAG_BYTES
from service.privacy.secagg.shamir import ELEMENT_BYTES

INDEX_BYTES = 4
ROUND_TRIPS = 3
"""Advertise keys, share keys, unmask (the masked upload replaces the plain one: a uint32 per value, as
a float32 upload). Honest-but-curious: no consistency-check round of signatures."""
ADVERTISE_UP = 2 * KEY_BYTES
ADVERTISE_DOWN_EACH = INDEX_BYTES + 2 * KEY_BYTES
SHARE_PLAINTEXT = 2 * INDEX_BYTES + 2 * ELEMENT_BYTES
"""Sender, recipient, the share of ``b`` and the share of the mask key."""
SEALED_SHARE = INDEX_BYTES + NONCE_BYTES + SHARE_PLAINTEXT + TAG_BYTES
"""On the wire: the other end's index, the nonce, the ciphertext and its tag."""
UNMASK_DOWN_EACH = 1
"""Per neighbour, whether it sent its masked input (the server's ask: which share to reveal)."""
REVEALED_SHARE = INDEX_BYTES + ELEMENT_BYTES


@dataclass
class Traffic:
    upload_bytes: int = 0
    download_bytes: int = 0
    round_trips: int = 0
    key_agreements: int = 0
    prg_bytes: int = 0
    shares: int = 0
    """Shamir share values computed (2 per holder: ``b`` and the mask key, for each neighbour and
    itself) plus sealed share messages opened at unmasking."""

    def add(self, other: Traffic) -> None:
        for name in vars(self):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def advertise(degree: int) -> Traffic:
    return Traffic(ADVERTISE_UP, degree * ADVERTISE_DOWN_EACH, 1)


def share_keys(degree: int) -> Traffic:
    """Seal one message per neighbour (an agreement on the encryption keys each) and receive theirs."""
    sealed = degree * SEALED_SHARE
    return Traffic(sealed, sealed, 1, key_agreements=degree, shares=2 * (degree + 1))


def masking(degree: int, dimension: int) -> Traffic:
    """Derive the pair seeds (an agreement each) and expand them and the self-mask seed."""
    return Traffic(key_agreements=degree, prg_bytes=(degree + 1) * 4 * dimension)


def unmasking(degree: int, revealed: int, opened: int) -> Traffic:
    return Traffic(revealed * REVEALED_SHARE, degree * UNMASK_DOWN_EACH, 1, shares=opened)


def planned(degree: int, dimension: int) -> Traffic:
    """A device that takes part in every step, every neighbour surviving: it reveals a share for each
    neighbour and for itself, opening each neighbour's message."""
    total = advertise(degree)
    for step in (share_keys(degree), masking(degree, dimension), unmasking(degree, degree + 1, degree)):
        total.add(step)
    return total
