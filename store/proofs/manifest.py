"""Object manifests: what an owner states, and signs, about one stored object.

Why: a holder agrees to keep "this object"; the manifest pins down exactly
which one (root CID, size, how it was chunked) together with the storage
commitment that later audits are checked against, and who owns it. Both
sides keep it next to the storage agreement, so its encoding must be
canonical: one manifest, one byte string, one signature.

Encoding (the envelope is shoal.store.proofs.signed_array's): a msgpack array in fixed field order (no maps, so no key-order
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
from typing import ClassVar

from shoal.store.errors import ProofError
from shoal.store.proofs.commitment import HASH_LEN, Commitment, MalformedProof
from shoal.store.proofs.signed_array import (
    MAX_OWNER, MAX_SIGNATURE, SignedArray, check_envelope, is_int as _is_int, unpack_array,
)

MANIFEST_VERSION = 1
MAX_MANIFEST_BYTES = 2048
MAX_NAME = 64  # chunker and profile names
_SIGN_DOMAIN = b"shoal-manifest-v1\x00"
_FIELDS = 11


class MalformedManifest(ProofError):
    """Bytes or values that are not a valid manifest.

    Placeholder until the lead adds a proof/manifest family to store/errors.py.
    """


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedManifest(what)


@dataclass(frozen=True)
class Manifest(SignedArray):
    """One object, as its owner describes it. Validated when built."""

    sign_domain: ClassVar[bytes] = _SIGN_DOMAIN

    root_cid: str
    size: int
    chunker: str
    profile: str
    commitment: Commitment
    owner: bytes
    created: int  # Unix seconds, UTC
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_envelope(MalformedManifest, self.root_cid, self.owner, self.created, self.signature)
        _check(_is_int(self.size) and 0 <= self.size < 1 << 64, "size out of range")
        for name in (self.chunker, self.profile):
            _check(isinstance(name, str) and 0 < len(name) <= MAX_NAME, "bad chunker or profile name")
        _check(isinstance(self.commitment, Commitment), "commitment missing")

    def _fields(self, with_signature: bool) -> list[object]:
        c = self.commitment
        out: list[object] = [
            MANIFEST_VERSION, self.root_cid, self.size, self.chunker, self.profile,
            c.root, c.length, c.segment_size, self.owner, self.created,
        ]
        if with_signature:
            out.append(self.signature)
        return out

    def with_signature(self, signature: bytes) -> "Manifest":
        return replace(self, signature=signature)

    @classmethod
    def decode(cls, data: bytes) -> "Manifest":
        """Strict, bounded decode of `encode()` output."""
        v = unpack_array(data, error=MalformedManifest, what="a manifest", version=MANIFEST_VERSION,
                         fields=_FIELDS, max_bytes=MAX_MANIFEST_BYTES,
                         max_bin_len=max(MAX_OWNER, MAX_SIGNATURE, HASH_LEN), max_array_len=_FIELDS)
        root_cid, size, chunker, profile, croot, clen, cseg, owner, created, sig = v
        _check(isinstance(croot, bytes) and _is_int(clen) and _is_int(cseg), "bad commitment")
        try:
            commitment = Commitment(croot, clen, cseg)
        except MalformedProof as exc:
            raise MalformedManifest(f"bad commitment: {exc}") from exc
        m = cls(root_cid, size, chunker, profile, commitment, owner, created, sig)
        _check(m.encode() == bytes(data), "manifest encoding is not canonical")
        return m
