"""Node identity: an Ed25519 key pair and the libp2p PeerId derived from it.

A PeerId is the identity multihash (code 0x00) of the protobuf-encoded
libp2p `PublicKey {Type = Ed25519, Data = 32 bytes}`, shown as base58btc
(`12D3KooW...`). Because the multihash is the identity, the public key can be
read back out of the PeerId, so a peer id alone is enough to verify its
owner's signatures.

What this module does not do: RSA, secp256k1 or ECDSA keys. PeerIds of those
kinds (`Qm...`, `16Uiu2...`) parse and compare, but cannot verify anything.
The key file holds the libp2p `PrivateKey` protobuf, so keys can be moved to
and from other libp2p implementations.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from multiformats import CID, multibase

from shoal.p2p.errors import InvalidMultiaddr, P2PError
from shoal.store.ipld import varint
from shoal.store.persist.durable import durable_file

__all__ = [
    "Identity",
    "PeerId",
    "decode_public_key",
    "encode_public_key",
    "protobuf_fields",
    "protobuf_bytes_field",
]

KEY_TYPE_ED25519 = 1
_IDENTITY_CODE = 0x00
_SHA256_CODE = 0x12
_MAX_INLINE_KEY = 42  # peer-ids spec: keys longer than this are sha256-hashed
_ED25519_LEN = 32
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw


# -- a minimal protobuf subset: varints and length-delimited fields ---------


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Read a varint of at most 10 bytes; ValueError when truncated or too long."""
    result = 0
    for shift in range(0, 70, 7):
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
    raise ValueError("varint too long")


def protobuf_bytes_field(number: int, value: bytes) -> bytes:
    """Encode one length-delimited protobuf field."""
    return varint.encode(number << 3 | 2) + varint.encode(len(value)) + value


def protobuf_fields(buf: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) of a protobuf message, strictly bounded.

    Varint fields yield ints, length-delimited ones bytes; fixed32/fixed64
    fields are skipped (yielded as raw bytes) so unknown fields of any wire
    type are tolerated, as protobuf requires. ValueError on malformed input.
    """
    pos = 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ValueError("field number 0")
        if wire == 0:
            value, pos = _read_varint(buf, pos)
            yield number, value
        elif wire == 2:
            length, pos = _read_varint(buf, pos)
            if length > len(buf) - pos:
                raise ValueError("truncated field")
            yield number, buf[pos : pos + length]
            pos += length
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if size > len(buf) - pos:
                raise ValueError("truncated field")
            yield number, buf[pos : pos + size]
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")


def encode_public_key(raw: bytes) -> bytes:
    """The libp2p `PublicKey` protobuf of a raw 32-byte Ed25519 public key."""
    if len(raw) != _ED25519_LEN:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return bytes([0x08, KEY_TYPE_ED25519]) + protobuf_bytes_field(2, raw)


def decode_public_key(proto: bytes) -> Ed25519PublicKey:
    """Parse a libp2p `PublicKey` protobuf holding an Ed25519 key.

    Only the canonical encoding is accepted (the peer-ids spec requires it),
    so one key has exactly one PeerId. ValueError otherwise.
    """
    fields = list(protobuf_fields(proto))
    if [n for n, _ in fields] != [1, 2]:
        raise ValueError("PublicKey must hold exactly Type then Data")
    key_type, data = fields[0][1], fields[1][1]
    if key_type != KEY_TYPE_ED25519:
        raise ValueError(f"unsupported key type {key_type!r}")
    assert isinstance(data, bytes)
    if len(data) != _ED25519_LEN or encode_public_key(data) != proto:
        raise ValueError("non-canonical Ed25519 PublicKey")
    return Ed25519PublicKey.from_public_bytes(data)


# -- PeerId ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerId:
    """A libp2p peer id: the multihash bytes, validated when built."""

    multihash: bytes

    def __post_init__(self) -> None:
        try:
            code, pos = _read_varint(self.multihash, 0)
            length, pos = _read_varint(self.multihash, pos)
        except ValueError as exc:
            raise InvalidMultiaddr(f"peer id is not a multihash: {exc}") from None
        if length != len(self.multihash) - pos:
            raise InvalidMultiaddr("peer id multihash has the wrong length")
        if code == _IDENTITY_CODE and 0 < length <= _MAX_INLINE_KEY:
            return
        if code == _SHA256_CODE and length == 32:
            return
        raise InvalidMultiaddr("peer id must be an identity or sha2-256 multihash")

    @classmethod
    def from_public_key(cls, key: Ed25519PublicKey | bytes) -> PeerId:
        """The PeerId of an Ed25519 public key (object or raw 32 bytes)."""
        raw = key if isinstance(key, bytes) else key.public_bytes(_RAW, _RAW_PUB)
        proto = encode_public_key(raw)
        return cls(bytes([_IDENTITY_CODE, len(proto)]) + proto)

    @classmethod
    def from_bytes(cls, data: bytes) -> PeerId:
        """Parse binary multihash bytes (as carried inside multiaddrs)."""
        return cls(bytes(data))

    @classmethod
    def from_string(cls, text: str) -> PeerId:
        """Parse base58btc (`12D3KooW...`, `Qm...`) or CIDv1 `libp2p-key` text."""
        if not isinstance(text, str) or not text or len(text) > 200:
            raise InvalidMultiaddr("peer id must be a short non-empty string")
        try:
            if text[0] in "1Q":
                return cls(bytes(multibase.decode("z" + text)))
            cid = CID.decode(text)
        except InvalidMultiaddr:
            raise
        except Exception as exc:  # multiformats raises assorted error types
            raise InvalidMultiaddr(f"not a peer id: {text!r} ({exc})") from None
        if cid.version != 1 or cid.codec.name != "libp2p-key":
            raise InvalidMultiaddr(f"CID {text!r} is not a libp2p-key")
        return cls(bytes(cid.digest))

    def to_bytes(self) -> bytes:
        """The binary multihash."""
        return self.multihash

    def to_string(self) -> str:
        """The canonical base58btc text form."""
        return str(multibase.encode(self.multihash, "base58btc"))[1:]

    def __str__(self) -> str:
        return self.to_string()

    def __repr__(self) -> str:
        return f"PeerId({self.to_string()!r})"

    def public_key(self) -> Ed25519PublicKey:
        """The Ed25519 key inlined in the id; ValueError for other key kinds."""
        if self.multihash[0] != _IDENTITY_CODE:
            raise ValueError("hashed peer ids do not carry their key")
        return decode_public_key(self.multihash[2:])

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if `signature` over `data` was made by this peer's key."""
        try:
            self.public_key().verify(signature, data)
        except (ValueError, InvalidSignature):
            return False
        return True


# -- Identity ----------------------------------------------------------------


class Identity:
    """Our own Ed25519 key pair; the private half never leaves this object."""

    __slots__ = ("_key", "_public", "_peer_id")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self._public = private_key.public_key().public_bytes(_RAW, _RAW_PUB)
        self._peer_id = PeerId.from_public_key(self._public)

    @classmethod
    def generate(cls) -> Identity:
        """A fresh random identity."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity of a 32-byte Ed25519 private key (tests, imports)."""
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    def __repr__(self) -> str:
        return f"Identity({self._peer_id})"  # never the private key

    @property
    def peer_id(self) -> PeerId:
        return self._peer_id

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        return self._public

    @property
    def public_key_proto(self) -> bytes:
        """The libp2p `PublicKey` protobuf (what the Noise payload carries)."""
        return encode_public_key(self._public)

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature (64 bytes) over `data`."""
        return self._key.sign(data)

    def to_private_proto(self) -> bytes:
        """The libp2p `PrivateKey` protobuf: Data = seed || public key."""
        seed = self._key.private_bytes(_RAW, _RAW_PRIV, serialization.NoEncryption())
        return bytes([0x08, KEY_TYPE_ED25519]) + protobuf_bytes_field(2, seed + self._public)

    @classmethod
    def from_private_proto(cls, proto: bytes) -> Identity:
        """Parse a libp2p `PrivateKey` protobuf (64- or legacy 96-byte Data).

        ValueError when malformed or when the stored public key does not
        belong to the private key (a corrupt or tampered file).
        """
        fields = dict(protobuf_fields(proto))
        data = fields.get(2)
        if fields.get(1) != KEY_TYPE_ED25519 or not isinstance(data, bytes):
            raise ValueError("not an Ed25519 libp2p PrivateKey")
        if len(data) == 96 and data[64:] == data[32:64]:
            data = data[:64]
        if len(data) != 64:
            raise ValueError("Ed25519 PrivateKey data must be 64 bytes")
        identity = cls.from_seed(data[:32])
        if identity.public_key_bytes != data[32:]:
            raise ValueError("stored public key does not match the private key")
        return identity

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """Load the key file at `path`, creating it (mode 0600) if absent.

        Creation is atomic: temp file, fsync, hard link into place, fsync of
        the directory; if two processes race, both end up with the winner's
        key. A key file readable or writable by group or others is refused
        (P2PError with a hint) rather than silently used or repaired, since
        the key may already have leaked and the user should decide.
        """
        path = Path(path)
        try:
            return cls._load(path)
        except FileNotFoundError:
            pass
        identity = cls.generate()
        if identity._write_new(path):
            return identity
        return cls._load(path)

    @classmethod
    def _load(cls, path: Path) -> Identity:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                err = P2PError(
                    f"key file {path} is accessible by other users (mode {mode & 0o777:o})"
                )
                err.hint = (
                    f"run `chmod 600 {path}` if it has not leaked, "
                    "else delete it to create a new identity"
                )
                raise err
            raw = f.read(4096)
        try:
            return cls.from_private_proto(raw)
        except ValueError as exc:
            err = P2PError(f"key file {path} is corrupt: {exc}")
            err.hint = "restore it from a backup, or delete it to create a new identity"
            raise err from None

    def _write_new(self, path: Path) -> bool:
        """Write the key file unless one appeared meanwhile; True if we wrote it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Linked into place, never over a key another process wrote meanwhile.
            with durable_file(path, mode=0o600, overwrite=False, prefix=".key-", suffix="") as f:
                f.write(self.to_private_proto())
        except FileExistsError:
            return False
        return True
