"""Secure aggregation, SecAgg+ (Bell et al. 2020) over the protocol of Bonawitz et al. 2017, simulated
with real cryptography (X25519, HKDF, AES-GCM, AES-CTR; Shamir over ``2**521 - 1``): each device masks
its quantized update so the server learns only the sum, and survivors' shares recover the masks of
devices that drop out. A library: it knows nothing of devices' files, rounds or HTTP."""

from service.privacy.secagg.errors import SecAggFailed
from service.privacy.secagg.field import QuantizationField
from service.privacy.secagg.masking import MaskingKeys, mask
from service.privacy.secagg.protocol import SecureRound
from service.privacy.secagg.settings import SecAggSettings
from service.privacy.secagg.traffic import Traffic

__all__ = [
    "MaskingKeys",
    "QuantizationField",
    "SecAggFailed",
    "SecAggSettings",
    "SecureRound",
    "Traffic",
    "mask",
]
