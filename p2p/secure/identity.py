"""Node identity: an Ed25519 key pair and the libp2p PeerId derived from it.

A PeerId is the identity multihash (code 0x00) of the protobuf-encoded
libp2p `PublicKey {Type = Ed25519, Data = 32 bytes}`, shown as base58btc
(`12D3KooW...`). Because the multihash is the identity, the public key can be
read back out of the PeerId, so a peer id alone is enough to verify its
owner's signatures.

Remote peers may hold any of the four key types of the peer-ids spec
(`PublicKey`): public IPFS nodes use RSA (`Qm...`, bootstrap peers),
secp256k1 (`16Uiu2...`) and ECDSA as well as Ed25519, and a node that joins the
public DHT must verify them in the Noise handshake and in identify. Keys longer
than 42 bytes once encoded (RSA, ECDSA) get sha2-256 peer ids, so such an id
does not carry its key: it is only checked against a key sent alongside.
Our own identity stays Ed25519. The key file holds the libp2p `PrivateKey`
protobuf, so keys can be moved to and from other libp2p implementations.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
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
    "PublicKey",
    "decode_public_key",
    "encode_public_key",
    "protobuf_fields",
    "protobuf_bytes_field",
]

KEY_TYPE_RSA = 0
KEY_TYPE_ED25519 = 1
KEY_TYPE_SECP256K1 = 2
KEY_TYPE_ECDSA = 3
_IDENTITY_CODE = 0x00
_SHA256_CODE = 0x12
_MAX_INLINE_KEY = 42  # peer-ids spec: keys longer than this are sha256-hashed
_ED25519_LEN = 32
_SECP256K1_LEN = 33  # compressed point, the only canonical form
# RSA below 2048 bits is refused (peer-ids spec minimum); above 8192 bits the
# verify cost and key size only serve an attacker. An 8192-bit PKIX key is
# about 1,060 bytes, so 2 KiB bounds any acceptable `PublicKey` protobuf.
RSA_MIN_BITS = 2048
RSA_MAX_BITS = 8192
MAX_PUBLIC_KEY_PROTO = 2048
RSA_MAX_EXPONENT = (1 << 32) - 1
_ECDSA_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
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


def _key_proto(key_type: int, data: bytes) -> bytes:
    """The canonical `PublicKey` protobuf: Type (even when 0, proto2) then Data."""
    return varint.encode(1 << 3) + varint.encode(key_type) + protobuf_bytes_field(2, data)


def encode_public_key(raw: bytes) -> bytes:
    """The libp2p `PublicKey` protobuf of a raw 32-byte Ed25519 public key."""
    if len(raw) != _ED25519_LEN:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return _key_proto(KEY_TYPE_ED25519, raw)


_VerifyKey = Ed25519PublicKey | rsa.RSAPublicKey | ec.EllipticCurvePublicKey


@dataclass(frozen=True, slots=True)
class PublicKey:
    """A remote peer's verified-canonical libp2p public key, of any spec type.

    Built only by `decode_public_key` (or `from_ed25519`), so `proto` is the
    one canonical encoding and its PeerId is unique.
    """

    key_type: int
    data: bytes
    key: _VerifyKey = field(repr=False, compare=False)

    @classmethod
    def from_ed25519(cls, key: Ed25519PublicKey | bytes) -> PublicKey:
        raw = key if isinstance(key, bytes) else key.public_bytes(_RAW, _RAW_PUB)
        if len(raw) != _ED25519_LEN:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return cls(KEY_TYPE_ED25519, raw, Ed25519PublicKey.from_public_bytes(raw))

    def to_proto(self) -> bytes:
        """The canonical libp2p `PublicKey` protobuf."""
        return _key_proto(self.key_type, self.data)

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if `signature` over `data` is valid under the type's scheme.

        Ed25519 signs the message itself; RSA uses RSASSA-PKCS1-v1_5 with
        SHA-256; secp256k1 and ECDSA use ECDSA over SHA-256 with a DER
        signature (what go-libp2p and js-libp2p produce).
        """
        if len(signature) > 2048:
            return False
        key = self.key
        try:
            if isinstance(key, Ed25519PublicKey):
                key.verify(signature, data)
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            else:
                key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            return False
        return True


def _decode_key_data(key_type: int, data: bytes) -> _VerifyKey:
    """The key object of canonical `data`; ValueError for anything else."""
    if key_type == KEY_TYPE_ED25519:
        if len(data) != _ED25519_LEN:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return Ed25519PublicKey.from_public_bytes(data)
    if key_type == KEY_TYPE_SECP256K1:
        if len(data) != _SECP256K1_LEN or data[0] not in (2, 3):
            raise ValueError("a secp256k1 key must be a 33-byte compressed point")
        # from_encoded_point checks that the point is on the curve.
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), data)
    if key_type not in (KEY_TYPE_RSA, KEY_TYPE_ECDSA):
        raise ValueError(f"unsupported key type {key_type!r}")
    try:
        key = serialization.load_der_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise ValueError(f"bad PKIX public key: {exc}") from None
    if key.public_bytes(_DER, _SPKI) != data:
        raise ValueError("non-canonical PKIX public key")
    if key_type == KEY_TYPE_RSA:
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError("RSA key type holds a non-RSA key")
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            raise ValueError(f"RSA key of {key.key_size} bits (allowed "
                             f"{RSA_MIN_BITS}..{RSA_MAX_BITS})")
        # A huge public exponent makes every verify as slow as a private-key
        # operation: a cheap way to burn our CPU per handshake. Real keys use 65537.
        if key.public_numbers().e > RSA_MAX_EXPONENT:
            raise ValueError("RSA public exponent too large")
        return key
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _ECDSA_CURVES):
        raise ValueError("ECDSA key type must hold a NIST P-256/384/521 key")
    return key


def decode_public_key(proto: bytes) -> PublicKey:
    """Parse a libp2p `PublicKey` protobuf of any of the four spec key types.

    Only the canonical encoding is accepted (the peer-ids spec requires it),
    so one key has exactly one PeerId: Type then Data, nothing else, and
    Data in its canonical form (raw Ed25519, compressed secp256k1, DER PKIX
    for RSA and ECDSA). Bounded in size; ValueError otherwise.
    """
    if len(proto) > MAX_PUBLIC_KEY_PROTO:
        raise ValueError(f"PublicKey of {len(proto)} bytes is too large")
    fields = list(protobuf_fields(proto))
    if [n for n, _ in fields] != [1, 2]:
        raise ValueError("PublicKey must hold exactly Type then Data")
    key_type, data = fields[0][1], fields[1][1]
    if not isinstance(key_type, int) or not isinstance(data, bytes):
        raise ValueError("PublicKey fields have the wrong wire types")
    key = _decode_key_data(key_type, data)
    if _key_proto(key_type, data) != proto:
        raise ValueError("non-canonical PublicKey protobuf")
    return PublicKey(key_type, data, key)


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
    def from_public_key(cls, key: PublicKey | Ed25519PublicKey | bytes) -> PeerId:
        """The PeerId of a public key (raw 32 bytes meaning Ed25519).

        Identity multihash when the encoded key is at most 42 bytes
        (Ed25519, secp256k1), else sha2-256 of it (RSA, ECDSA): peer-ids spec.
        """
        if not isinstance(key, PublicKey):
            key = PublicKey.from_ed25519(key)
        proto = key.to_proto()
        if len(proto) <= _MAX_INLINE_KEY:
            return cls(bytes([_IDENTITY_CODE, len(proto)]) + proto)
        return cls(bytes([_SHA256_CODE, 32]) + hashlib.sha256(proto).digest())

    def matches(self, key: PublicKey) -> bool:
        """True if `key` is the key this id names (also for hashed ids)."""
        return PeerId.from_public_key(key) == self

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

    def public_key(self) -> PublicKey:
        """The key inlined in the id; ValueError for hashed ids."""
        if self.multihash[0] != _IDENTITY_CODE:
            raise ValueError("hashed peer ids do not carry their key")
        return decode_public_key(self.multihash[2:])

    def verify(self, signature: bytes, data: bytes) -> bool:
        """True if `signature` over `data` was made by this peer's key."""
        try:
            key = self.public_key()
        except ValueError:
            return False
        return key.verify(signature, data)


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
    def load(cls, path: Path) -> Identity:
        """Load an existing key file, never creating one (FileNotFoundError if absent).

        For a node's second processes (its lanes, shoal.p2p.lanes.worker): they
        prove the node's identity, so a missing key must fail, not mint a new one.
        """
        return cls._load(Path(path))

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
