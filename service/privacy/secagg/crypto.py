"""The protocol's primitives, all from ``cryptography`` (OpenSSL): X25519 key agreement, HKDF-SHA256,
AES-GCM for the shares in transit, AES-CTR as the masks' pseudorandom generator.

Key material is DERIVED from the round's seed and the device's id (``derive``), so a seeded round is
reproducible: this is a simulation of the protocol's computation and traffic, not a deployment (a real
device draws its keys from its own entropy and never tells anyone)."""

from __future__ import annotations

import hashlib
from numbers import Integral

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
Seed = int | bytes | tuple[object, ...]


def seed_bytes(seed: object) -> bytes:
    """An unambiguous byte string for an int, bytes, str or (nested) tuple of them."""
    if isinstance(seed, bytes):
        return b"b" + len(seed).to_bytes(4, "big") + seed
    if isinstance(seed, list):
        seed = tuple(seed)
    if isinstance(seed, Integral) and not isinstance(seed, bool):
        seed = int(seed)  # numpy's integers too
    if isinstance(seed, bool) or not isinstance(seed, int | str | tuple):
        raise TypeError(
            f"a secure round's seed is an int, bytes or a tuple of them, got {type(seed).__name__}"
        )
    if isinstance(seed, int):
        text = str(seed).encode()
        return b"i" + len(text).to_bytes(4, "big") + text
    if isinstance(seed, str):
        return b"s" + seed_bytes(seed.encode())[1:]
    return b"t" + len(seed).to_bytes(4, "big") + b"".join(seed_bytes(part) for part in seed)


def derive(master: bytes, label: str, device: str, length: int = KEY_BYTES) -> bytes:
    """``length`` bytes for ``device``'s ``label`` (its key pairs, its self-mask seed, its share
    polynomials), a deterministic function of the round's seed."""
    info = label.encode() + b"\x00" + device.encode()
    return HKDF(hashes.SHA256(), length, salt=master, info=info).derive(b"tflite-fleet secagg+")


def private_key(material: bytes) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(material)


def public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes_raw()


def agree(own: X25519PrivateKey, other_public: bytes, purpose: str, a: str, b: str) -> bytes:
    """A 32-byte key both ends of the pair ``{a, b}`` derive alike: HKDF over X25519's shared secret."""
    shared = own.exchange(X25519PublicKey.from_public_bytes(other_public))
    low, high = sorted((a, b))
    info = purpose.encode() + b"\x00" + low.encode() + b"\x00" + high.encode()
    return HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=info).derive(shared)


def associated(sender: str, recipient: str) -> bytes:
    """What a share's ciphertext is bound to: both ids, in order (a share relayed to another device,
    or claimed to come from another sender, fails authentication)."""
    return b"secagg share\x00" + sender.encode() + b"\x00" + recipient.encode()


def seal(key: bytes, sender: str, recipient: str, plaintext: bytes, nonce: bytes) -> bytes:
    """``nonce || AES-GCM(plaintext)``; each pair key seals one message per direction, and the nonce
    (derived per sender and recipient) differs between the two."""
    return nonce + AESGCM(key).encrypt(nonce, plaintext, associated(sender, recipient))


def open_sealed(key: bytes, sender: str, recipient: str, sealed: bytes) -> bytes | None:
    """The plaintext, or None when the ciphertext fails authentication (altered, or not theirs)."""
    nonce, body = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        return AESGCM(key).decrypt(nonce, body, associated(sender, recipient))
    except InvalidTag:
        return None


def nonce_for(sender: str, recipient: str) -> bytes:
    return hashlib.sha256(associated(sender, recipient)).digest()[:NONCE_BYTES]


def stream(seed: bytes, length: int) -> bytes:
    """``length`` bytes of AES-256-CTR keystream (zero nonce) under the 32-byte ``seed``."""
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    return encryptor.update(bytes(length)) + encryptor.finalize()


def prg(seed: bytes, dimension: int) -> np.ndarray:
    """The mask a 32-byte seed expands to: AES-256-CTR's keystream (zero nonce) as little-endian uint32."""
    return np.frombuffer(stream(seed, 4 * dimension), dtype="<u4").astype(np.uint32, copy=False)
