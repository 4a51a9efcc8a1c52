"""Erasure manifests: what an owner states, and signs, about one EC-stored object.

Why: shards carry their own layout (block table, piece hashes), but a shard
that lies can carry a lying layout too. The owner names the one true
encoding by its `layout_id` and each shard by its raw CID and storage
commitment, and signs that; a reader passes the signed `layout_id` to
`codec.reconstruct`, a repairer checks rebuilt shards against the signed
CIDs, and each holder's audits are checked against the signed commitment of
the shard it keeps, exactly as a replica's are against
shoal.store.proofs.manifest.Manifest.

Encoding (canonical; the envelope is shoal.store.proofs.signed_array's, shared with
the replica manifest): a msgpack array in fixed
field order, ints in msgpack's shortest form, bytes as bin, text as str:
    [version=1, root_cid, k, m, piece_size, layout_id,
     [[shard_cid_bytes, commitment.encode()] * (k + m)],
     owner, created, signature]
`signing_bytes()` is a domain tag plus the same array without the
signature. Decoding is bounded (input size, string, bin and array lengths)
and strict: it re-encodes and refuses anything not byte-identical.

Not here: signing and verifying (the p2p identity does that), placement.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar, Sequence

from shoal.store.erasure.layout import MAX_SHARDS, ErasureError, check_scheme
from shoal.store.erasure.shard import ShardHeader, ShardInfo
from shoal.store.errors import InvalidCID
from shoal.store.ipld.cid import CID, RAW_CODE, cid_from_bytes
from shoal.store.proofs.commitment import Commitment, MalformedProof
from shoal.store.proofs.signed_array import (
    MAX_OWNER, MAX_SIGNATURE, SignedArray, check_envelope, is_int as _is_int, unpack_array,
)

__all__ = ["ErasureManifest", "MalformedErasureManifest", "MAX_EC_MANIFEST_BYTES"]

EC_MANIFEST_VERSION = 1
_COMMITMENT_BYTES = 45
_SHARD_CID_BYTES = 36  # raw CIDv1, sha2-256
_FIELDS = 10
_SIGN_DOMAIN = b"shoal-ec-manifest-v1\x00"
# every field at its largest: 256 shards of ~85 bytes, plus the rest
MAX_EC_MANIFEST_BYTES = 1024 + MAX_SHARDS * (_SHARD_CID_BYTES + _COMMITMENT_BYTES + 8)


class MalformedErasureManifest(ErasureError):
    """Bytes or values that are not a valid erasure manifest."""


def _check(cond: bool, what: str) -> None:
    if not cond:
        raise MalformedErasureManifest(what)


@dataclass(frozen=True)
class ErasureManifest(SignedArray):
    """One EC-stored object, as its owner describes it. Validated when built."""

    sign_domain: ClassVar[bytes] = _SIGN_DOMAIN

    root_cid: str
    k: int
    m: int
    piece_size: int
    layout_id: bytes
    shards: tuple[tuple[CID, Commitment], ...]  # index i: shard i's raw CID and commitment
    owner: bytes
    created: int  # Unix seconds, UTC
    signature: bytes = b""

    def __post_init__(self) -> None:
        check_envelope(MalformedErasureManifest, self.root_cid, self.owner, self.created, self.signature)
        _check(_is_int(self.k) and _is_int(self.m), "K and M must be integers")
        try:
            check_scheme(self.k, self.m)
        except ErasureError as exc:
            raise MalformedErasureManifest(str(exc)) from None
        _check(_is_int(self.piece_size) and 0 < self.piece_size < 1 << 32, "bad piece size")
        _check(isinstance(self.layout_id, bytes) and len(self.layout_id) == 32, "layout id must be 32 bytes")
        _check(isinstance(self.shards, tuple) and len(self.shards) == self.k + self.m, "one entry per shard")
        lengths = set()
        for cid, c in self.shards:
            _check(isinstance(cid, CID) and int(cid.codec.code) == RAW_CODE and len(bytes(cid)) == _SHARD_CID_BYTES,
                   "shard CIDs must be raw sha2-256 CIDv1")
            _check(isinstance(c, Commitment), "shard commitment missing")
            lengths.add(c.length)
        _check(len(lengths) == 1, "every shard of an object has the same length")

    @classmethod
    def from_encoding(cls, header: ShardHeader, infos: Sequence[ShardInfo], owner: bytes,
                      created: int) -> "ErasureManifest":
        """The manifest of a fresh encoding (`codec.encode` with a commitment segment size)."""
        by_index = {i.index: i for i in infos}
        _check(sorted(by_index) == list(range(header.layout.n)), "need every shard's info")
        shards = []
        for i in range(header.layout.n):
            c = by_index[i].commitment
            if c is None or c.length != by_index[i].length:
                raise MalformedErasureManifest("shard info without its commitment (encode with commit_segment_size)")
            shards.append((by_index[i].cid, c))
        lay = header.layout
        return cls(str(lay.object_cid), lay.k, lay.m, lay.piece_size, header.layout_id, tuple(shards),
                   owner, created)

    def matches(self, header: ShardHeader) -> bool:
        """Whether a shard's header belongs to this encoding (same layout id and object)."""
        lay = header.layout
        return (header.layout_id == self.layout_id and str(lay.object_cid) == self.root_cid
                and (lay.k, lay.m, lay.piece_size) == (self.k, self.m, self.piece_size))

    def shard_cid(self, index: int) -> CID:
        return self.shards[index][0]

    def commitment(self, index: int) -> Commitment:
        return self.shards[index][1]

    def _fields(self, with_signature: bool) -> list[object]:
        out: list[object] = [
            EC_MANIFEST_VERSION, self.root_cid, self.k, self.m, self.piece_size, self.layout_id,
            [[bytes(cid), c.encode()] for cid, c in self.shards], self.owner, self.created,
        ]
        if with_signature:
            out.append(self.signature)
        return out

    def with_signature(self, signature: bytes) -> "ErasureManifest":
        return replace(self, signature=signature)

    @classmethod
    def decode(cls, data: bytes) -> "ErasureManifest":
        """Strict, bounded decode of `encode()` output."""
        v = unpack_array(data, error=MalformedErasureManifest, what="an erasure manifest",
                         version=EC_MANIFEST_VERSION, fields=_FIELDS, max_bytes=MAX_EC_MANIFEST_BYTES,
                         max_bin_len=max(MAX_OWNER, MAX_SIGNATURE), max_array_len=MAX_SHARDS)
        root_cid, k, m, piece_size, layout_id, raw_shards, owner, created, sig = v
        _check(isinstance(raw_shards, list), "shards must be an array")
        shards = []
        for entry in raw_shards:
            _check(isinstance(entry, list) and len(entry) == 2 and all(isinstance(x, bytes) for x in entry),
                   "a shard entry is [cid, commitment]")
            try:
                cid = cid_from_bytes(entry[0])
                c = Commitment.decode(entry[1])
            except (InvalidCID, MalformedProof) as exc:
                raise MalformedErasureManifest(f"bad shard entry: {exc}") from None
            shards.append((cid, c))
        mf = cls(root_cid, k, m, piece_size, layout_id, tuple(shards), owner, created, sig)
        _check(mf.encode() == bytes(data), "manifest encoding is not canonical")
        return mf
