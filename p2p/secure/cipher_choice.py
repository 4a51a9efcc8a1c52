"""Which Noise cipher a connection offers: AES-GCM between Shoal nodes with AES hardware.

libp2p-noise (`/noise`) is ChaCha20-Poly1305 only, and every IPFS
implementation speaks it, so every node offers and accepts it. DESIGN.md
allows AES-GCM as well, and on a CPU with AES and carry-less multiply
instructions OpenSSL's AES-256-GCM is ~2.7x cheaper per byte here (0.12 vs
0.33 CPU s/GiB, bench/RESULTS.md "Noise with AES-GCM"): the cipher is the
one per-byte cost both ends of every block transfer pay. So a node whose CPU
has them also offers `Noise_XX_25519_AESGCM_SHA256` under its own protocol
id, first. multistream-select then picks it when both ends are such Shoal
nodes, and `/noise` otherwise (one extra round trip, once per connection,
to a peer that does not know the id). A node without the instructions
neither offers nor accepts it: software AES would be slower than ChaCha.

Choosing by protocol id is how libp2p picks between security protocols
(`/noise`, `/tls/1.0.0`); the choice is not authenticated, but then both
choices are secure, and the handshake hash covers the cipher's name, so the
two ends cannot end up disagreeing unnoticed.

`SHOAL_NOISE_AESGCM=0` turns the offer off (`=1` forces it on) for A/B
benchmarks and tests; anything else leaves the CPU check in charge.
"""

from __future__ import annotations

import functools
import os
from typing import Final

from shoal.p2p.secure.noise import NoiseCipher

__all__ = [
    "NOISE_AESGCM_PROTOCOL",
    "NOISE_PROTOCOL",
    "aes_hardware",
    "cipher_for",
    "security_protocols",
]

NOISE_PROTOCOL: Final = "/noise"
NOISE_AESGCM_PROTOCOL: Final = "/shoal/noise-aesgcm/1.0.0"
ENV_OVERRIDE: Final = "SHOAL_NOISE_AESGCM"

# x86: AES-NI plus PCLMULQDQ (GHASH); arm64: the AES and PMULL extensions.
_NEEDED: Final = ({"aes", "pclmulqdq"}, {"aes", "pmull"})


def aes_hardware(cpuinfo: str) -> bool:
    """True if `cpuinfo` (the text of /proc/cpuinfo) lists AES-GCM instructions."""
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            return any(needed <= flags for needed in _NEEDED)
    return False


@functools.cache
def _local_aes_hardware() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return aes_hardware(f.read(1 << 20))
    except OSError:
        return False


def security_protocols(aes: bool | None = None) -> list[str]:
    """The security protocol ids to offer (dialer, in order) or accept (listener).

    `aes` None means: this machine's CPU, unless SHOAL_NOISE_AESGCM says otherwise.
    """
    if aes is None:
        forced = os.environ.get(ENV_OVERRIDE, "")
        aes = {"0": False, "1": True}.get(forced, None)
        if aes is None:
            aes = _local_aes_hardware()
    return [NOISE_AESGCM_PROTOCOL, NOISE_PROTOCOL] if aes else [NOISE_PROTOCOL]


def cipher_for(protocol_id: str) -> NoiseCipher:
    """The Noise cipher a negotiated security protocol id stands for."""
    if protocol_id == NOISE_AESGCM_PROTOCOL:
        return NoiseCipher.AESGCM
    if protocol_id == NOISE_PROTOCOL:
        return NoiseCipher.CHACHAPOLY
    raise ValueError(f"not a Noise protocol id: {protocol_id!r}")
