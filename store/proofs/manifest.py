"""Object manifests: what an owner states, and signs, about one stored object.

Why: a holder agrees to keep "this object"; the manifest pins down exactly
which one (root CID, size, how it was chunked) together with the storage
commitment that later audits are checked against, and who owns it. Both
sides keep it next to the storage agreement, so its encoding must be
canonical: one manifest, one byte string, one signature.

Encoding: a msgpack array in fixed field order (no maps, so no key-order
ambiguity), ints in msgpack's shortest form, bytes as bin, text as str:
    [version=1, root_cid, size, chunker, profile,
     commitment.root, commitment.length, commitment.segment_size,
     owner, created, signature]
`signing_bytes()` is a domain tag plus the same array without the signature.
Decoding is bounded (input size, string and bin lengths, array length) and
strict: it re-encodes and refuses anything that is not byte-identical.

Not here: signing and verifying signatures (the p2p identity does that);
what `commitment` covers for a directory object (the caller decides which
bytes it commits to; `size` is the UnixFS size, `commitment.length` the
committed byte count).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import msgpack

from shoal.store.ipld.cid import parse_cid
from shoal.store.errors import InvalidCID, ProofError
from shoal.store.proofs.commitment import HASH_LEN, Commitment, MalformedProof

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 2048
MAX_NAME = 64  # chunker and profile names
MAX_CID_TEXT = 128
MAX_OWNER = 128  # PeerId bytes; Ed25519 ones are 38
MAX_SIGNATURE = 128  # Ed25519 signatures are 64
_SIGN_DOMAIN = b"shoal-manifest-v1\x00"
_FIELDS = 11


class MalformedManifest(ProofError):
    """Bytes or values that are not a valid manifest.

    Placeholder until the lead adds a proof/manifest family to store/errors.py.
    """


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedManifest(what)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class Manifest:
    """One object, as its owner describes it. Validated when built."""

    root_cid: str
    size: int
    chunker: str
    profile: str
    commitment: Commitment
    owner: bytes
    created: int  # Unix seconds, UTC
    signature: bytes = b""

    def __post_init__(self) -> None:
        _check(isinstance(self.root_cid, str) and 0 < len(self.root_cid) <= MAX_CID_TEXT, "bad root CID")
        try:
            parse_cid(self.root_cid)
        except InvalidCID as exc:
            raise MalformedManifest(f"bad root CID: {exc}") from exc
        _check(_is_int(self.size) and 0 <= self.size < 1 << 64, "size out of range")
        for name in (self.chunker, self.profile):
            _check(isinstance(name, str) and 0 < len(name) <= MAX_NAME, "bad chunker or profile name")
        _check(isinstance(self.commitment, Commitment), "commitment missing")
        _check(isinstance(self.owner, bytes) and 0 < len(self.owner) <= MAX_OWNER, "bad owner id")
        _check(_is_int(self.created) and 0 <= self.created < 1 << 63, "created out of range")
        _check(isinstance(self.signature, bytes) and len(self.signature) <= MAX_SIGNATURE, "bad signature")

    def _fields(self, with_signature: bool) -> list[object]:
        c = self.commitment
        out: list[object] = [
            MANIFEST_VERSION, self.root_cid, self.size, self.chunker, self.profile,
            c.root, c.length, c.segment_size, self.owner, self.created,
        ]
        if with_signature:
            out.append(self.signature)
        return out

    def encode(self) -> bytes:
        """Canonical bytes, signature included."""
        out: bytes = msgpack.packb(self._fields(True), use_bin_type=True)
        return out

    def signing_bytes(self) -> bytes:
        """What the owner's identity key signs: everything but the signature."""
        body: bytes = msgpack.packb(self._fields(False), use_bin_type=True)
        return _SIGN_DOMAIN + body

    def with_signature(self, signature: bytes) -> "Manifest":
        return replace(self, signature=signature)

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        """Strict, bounded decode of `encode()` output."""
        _check(len(data) <= MAX_MANIFEST_BYTES, "manifest too large")
        try:
            v = msgpack.unpackb(
                data,
                raw=False,
                use_list=True,
                strict_map_key=True,
                max_str_len=MAX_CID_TEXT,
                max_bin_len=max(MAX_OWNER, MAX_SIGNATURE, HASH_LEN),
                max_array_len=_FIELDS,
                max_map_len=0,
                max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises several unrelated types
            raise MalformedManifest(f"not a manifest: {type(exc).__name__}") from exc
        _check(isinstance(v, list) and len(v) == _FIELDS, "manifest must be an 11-element array")
        _check(v[0] == MANIFEST_VERSION and _is_int(v[0]), "unknown manifest version")
        root_cid, size, chunker, profile, croot, clen, cseg, owner, created, sig = v[1:]
        _check(isinstance(croot, bytes) and _is_int(clen) and _is_int(cseg), "bad commitment")
        try:
            commitment = Commitment(croot, clen, cseg)
        except MalformedProof as exc:
            raise MalformedManifest(f"bad commitment: {exc}") from exc
        m = cls(root_cid, size, chunker, profile, commitment, owner, created, sig)
        _check(m.encode() == bytes(data), "manifest encoding is not canonical")
        return m
