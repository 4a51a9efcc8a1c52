"""Private swarms: the libp2p pre-shared-key connection protector (pnet, PSK v1).

A node started with a swarm key (a `swarm.key` file, the format kubo and
go/js/rust-libp2p read) talks only to peers that hold the same key. As the
libp2p spec "Pre-shared Key Based Private Networks" (pnet/PSK v1) says:
before anything else on a connection, each side sends a random 24-byte nonce;
every later byte it sends is XORed with the XSalsa20 keystream of (key, its
own nonce), and every byte it receives with the keystream of (key, the
remote's nonce). A peer with another key, or none, decrypts noise: its Noise
handshake fails and it learns nothing but that the port is open.

The layer hides membership and everything above it; it does not
authenticate anything. Noise, above it, still authenticates every byte (a
flipped ciphertext bit flips a plaintext bit, which Noise's AEAD rejects),
exactly as the spec intends.

XSalsa20 = Salsa20 under the subkey HSalsa20(key, nonce[0:16]), with
nonce[16:24] as its 8-byte nonce. `cryptography` has no Salsa20, so the
stream comes from pycryptodomex (its C Salsa20) and HSalsa20, run once per
connection direction, is written out here; both are checked against NaCl's
published test vectors (tests/unit/test_pnet.py).

This module is sans-IO: `PnetCipher` takes and returns bytes, and
`shoal.p2p.secure.pnet_stream.PnetStream` is the thin trio wrapper. Not here: the peer
allowlist (`shoal.p2p.secure.allowlist`), which works on proven identities after Noise.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from Cryptodome.Cipher import Salsa20

from shoal.p2p.errors import P2PError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "PSK_V1_CODEC",
    "PnetCipher",
    "SwarmKey",
    "SwarmKeyError",
    "XSalsa20",
    "hsalsa20",
    "load_swarm_key",
    "parse_swarm_key",
]

PSK_V1_CODEC: Final = "/key/swarm/psk/1.0.0/"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 24
MAX_KEY_FILE_BYTES: Final = 4096
"""A swarm.key is ~95 bytes; reading more of a wrong file is pointless."""

_SIGMA: Final = struct.unpack("<4I", b"expand 32-byte k")
_MASK: Final = 0xFFFFFFFF


class SwarmKeyError(P2PError):
    """A swarm key file that is missing, unreadable or not in the swarm.key format."""

    hint = ("a swarm.key has three lines: /key/swarm/psk/1.0.0/, /base16/ and 64 hex digits "
            "(e.g. `printf '/key/swarm/psk/1.0.0/\\n/base16/\\n%s\\n' $(openssl rand -hex 32)`)")


# -- the cipher -----------------------------------------------------------------


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) & _MASK) | (value >> (32 - shift))


def hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    """HSalsa20: 20 Salsa20 rounds over (key, 16-byte input), no final addition.

    Returns the 32-byte subkey from state words 0, 5, 10, 15, 6, 7, 8, 9
    (Bernstein, "Extending the Salsa20 nonce", 2008). Run once per
    connection direction, so plain Python is fast enough (~60 us).
    """
    if len(key) != KEY_BYTES or len(nonce16) != 16:
        raise ValueError("HSalsa20 takes a 32-byte key and a 16-byte input")
    k = struct.unpack("<8I", key)
    n = struct.unpack("<4I", nonce16)
    x = [_SIGMA[0], k[0], k[1], k[2], k[3], _SIGMA[1], n[0], n[1],
         n[2], n[3], _SIGMA[2], k[4], k[5], k[6], k[7], _SIGMA[3]]

    def quarter(a: int, b: int, c: int, d: int) -> None:
        x[b] ^= _rotl((x[a] + x[d]) & _MASK, 7)
        x[c] ^= _rotl((x[b] + x[a]) & _MASK, 9)
        x[d] ^= _rotl((x[c] + x[b]) & _MASK, 13)
        x[a] ^= _rotl((x[d] + x[c]) & _MASK, 18)

    for _ in range(10):
        quarter(0, 4, 8, 12)  # columns
        quarter(5, 9, 13, 1)
        quarter(10, 14, 2, 6)
        quarter(15, 3, 7, 11)
        quarter(0, 1, 2, 3)  # rows
        quarter(5, 6, 7, 4)
        quarter(10, 11, 8, 9)
        quarter(15, 12, 13, 14)
    return struct.pack("<8I", x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9])


class XSalsa20:
    """An XSalsa20 keystream, XORed into data as it passes (state carries over calls)."""

    __slots__ = ("_salsa",)

    def __init__(self, key: bytes, nonce: bytes) -> None:
        if len(key) != KEY_BYTES or len(nonce) != NONCE_BYTES:
            raise ValueError("XSalsa20 takes a 32-byte key and a 24-byte nonce")
        self._salsa = Salsa20.new(key=hsalsa20(key, nonce[:16]), nonce=nonce[16:])

    def xor(self, data: bytes | bytearray | memoryview) -> bytes:
        """`data` XOR the next len(data) keystream bytes."""
        return self._salsa.encrypt(data)


# -- the connection protector (sans-IO) ----------------------------------------------


class PnetCipher:
    """Both directions of one protected connection: bytes in, bytes out.

    `seal(data)` returns what to write: on the first call our nonce followed
    by the encrypted data (as go-libp2p, the nonce goes out with the first
    write, so a node that only listens sends nothing to a stranger).
    `open(data)` takes whatever arrived: the first 24 bytes are the remote's
    nonce, everything after is decrypted; it returns b"" while the nonce is
    still incomplete. Neither direction waits for the other.
    """

    __slots__ = ("_key", "_nonce", "_sender", "_nonce_sent", "_remote_nonce", "_receiver")

    def __init__(self, key: "SwarmKey", *, nonce: bytes | None = None) -> None:
        """`nonce` is for tests only; a real connection takes 24 fresh random bytes."""
        self._key = key
        self._nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
        if len(self._nonce) != NONCE_BYTES:
            raise ValueError("a pnet nonce is 24 bytes")
        self._sender = XSalsa20(key.psk, self._nonce)
        self._nonce_sent = False
        self._remote_nonce = bytearray()
        self._receiver: XSalsa20 | None = None

    @property
    def remote_nonce_received(self) -> bool:
        return self._receiver is not None

    @property
    def nonce_sent(self) -> bool:
        """Whether `seal` has handed out our nonce already."""
        return self._nonce_sent

    def seal(self, data: bytes | bytearray | memoryview) -> bytes:
        """Encrypt outgoing bytes (prefixed by our nonce the first time)."""
        out = self._sender.xor(data) if len(data) else b""
        if not self._nonce_sent:
            self._nonce_sent = True
            return self._nonce + out
        return out

    def open(self, data: bytes | bytearray | memoryview) -> bytes:
        """Decrypt incoming bytes; the remote's nonce is taken off the front first."""
        if self._receiver is None:
            need = NONCE_BYTES - len(self._remote_nonce)
            view = memoryview(data)
            self._remote_nonce += view[:need]
            data = view[need:]
            if len(self._remote_nonce) < NONCE_BYTES:
                return b""
            self._receiver = XSalsa20(self._key.psk, bytes(self._remote_nonce))
        return self._receiver.xor(data) if len(data) else b""


# -- the key file --------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class SwarmKey:
    """A 256-bit pre-shared key. Its repr shows the fingerprint, never the key."""

    psk: bytes

    def __post_init__(self) -> None:
        if len(self.psk) != KEY_BYTES:
            raise SwarmKeyError(f"a swarm key is {KEY_BYTES} bytes, not {len(self.psk)}")

    @classmethod
    def generate(cls) -> "SwarmKey":
        return cls(os.urandom(KEY_BYTES))

    def fingerprint(self) -> str:
        """The 16-byte hex fingerprint go-libp2p and rust-libp2p print for a key.

        SHAKE-128 of 64 bytes of Salsa20 keystream (nonce "finprint"), so two
        operators can compare keys without showing them. Not in the spec;
        computed as the reference implementations do.
        """
        stream = Salsa20.new(key=self.psk, nonce=b"finprint").encrypt(bytes(64))
        return hashlib.shake_128(stream).hexdigest(16)

    def encode(self) -> bytes:
        """The key as a swarm.key file (base16, as kubo's users write it)."""
        return f"{PSK_V1_CODEC}\n/base16/\n{self.psk.hex()}\n".encode()

    def __repr__(self) -> str:
        return f"SwarmKey(fingerprint={self.fingerprint()})"


def parse_swarm_key(data: bytes) -> SwarmKey:
    """Read a swarm.key: `/key/swarm/psk/1.0.0/`, an encoding line, the key.

    The encodings are those go-libp2p reads: `/base16/` (64 hex digits, the
    usual one), `/base64/` and `/bin/` (32 raw bytes). Lines may end in CRLF;
    whitespace after a text key is ignored.
    """
    head, sep, rest = data.partition(b"\n")
    if not sep or head.rstrip(b"\r").decode("utf-8", "replace") != PSK_V1_CODEC:
        raise SwarmKeyError(f"not a swarm key: the first line must be {PSK_V1_CODEC}")
    enc_line, sep, body = rest.partition(b"\n")
    encoding = enc_line.rstrip(b"\r").decode("utf-8", "replace")
    if not sep:
        raise SwarmKeyError("the swarm key file ends before the key itself")
    if encoding == "/bin/":
        if len(body) < KEY_BYTES:
            raise SwarmKeyError(f"a /bin/ swarm key needs {KEY_BYTES} bytes after its header")
        return SwarmKey(body[:KEY_BYTES])
    text = body.strip()
    try:
        if encoding == "/base16/":
            if len(text) != 2 * KEY_BYTES:
                raise SwarmKeyError(f"a /base16/ swarm key is {2 * KEY_BYTES} hex digits, not {len(text)}")
            psk = binascii.unhexlify(text)
        elif encoding == "/base64/":
            psk = base64.b64decode(text, validate=True)
        else:
            raise SwarmKeyError(f"unknown swarm key encoding {encoding!r} (use /base16/)")
    except ValueError as exc:  # binascii.Error is one
        raise SwarmKeyError(f"the swarm key is not valid {encoding.strip('/')}: {exc}") from None
    return SwarmKey(psk)


def load_swarm_key(path: Path) -> SwarmKey:
    """Read and parse a swarm.key file; SwarmKeyError names the file on any failure."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise SwarmKeyError(f"cannot read swarm key {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_KEY_FILE_BYTES:
        raise SwarmKeyError(f"{path} is too big to be a swarm key")
    try:
        return parse_swarm_key(data)
    except SwarmKeyError as exc:
        raise SwarmKeyError(f"{path}: {exc}") from None
