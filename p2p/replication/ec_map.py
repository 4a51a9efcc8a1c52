"""The shard map of an erasure-coded object: what a reader needs to rebuild it.

An object put with `--ec K+M` is stored as K + M shards
(shoal.store.erasure), each one a content-addressed byte string imported
as its own UnixFS file (the shard's CID) and replicated to exactly one
holder through the ordinary offer / agreement / audit machinery. The map
ties them together: the object's CID, K, M, the layout id every shard
header carries (`ShardHeader.layout_id`), and for each shard index its CID
and its current holder. The owner signs it; it is re-signed (a larger
`issued`) whenever a repair moves a shard.

Where it lives and how a reader finds it: the owner keeps it (`repl_ec`)
and pushes it (EcMapPush) to every shard holder, which keeps the newest one
(`repl_ec_maps`). A reader whose plain fetch found no peer with the object
asks its connected peers (EcMapGet): the owner or any shard holder answers.

What the signature does and does not buy: it binds the map to its owner,
so holders accept pushes only from the owner a map names and replace a
map only with a newer one from the same owner. It does not make the map
trustworthy to a reader, who cannot know who the owner should be; it does
not need to: every rebuilt block is checked against the object's CID and
its DAG walk (shoal.store.erasure.codec.reconstruct), so a forged map can
make a read fail, never return other bytes.

msgpack array: [1, object CID bytes, K, M, layout id (32 bytes),
[[shard CID bytes, holder peer id bytes or b""], ...] (K + M, by index),
owner peer id bytes, issued (µs, strictly increasing), signature].
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import msgpack

from shoal.store.errors import StoreError
from shoal.store.ipld.cid import CID, cid_from_bytes

from shoal.p2p.errors import P2PError, ProtocolError
from shoal.p2p.net.node_config import MAX_EC_SHARDS, parse_ec_scheme as parse_scheme
from shoal.p2p.replication.signed import unpack_signed
from shoal.p2p.secure.identity import PeerId

__all__ = ["EcMap", "ShardEntry", "MAX_EC_SHARDS", "parse_scheme"]


_DOMAIN = b"shoal-ec-map-v1\x00"


@dataclass(frozen=True)
class ShardEntry:
    """Shard i of the map: its CID (bytes) and its holder (peer id bytes, b"" if none yet)."""

    cid: bytes
    holder: bytes = b""


@dataclass(frozen=True)
class EcMap:
    object_cid: bytes
    k: int
    m: int
    layout_id: bytes
    shards: tuple[ShardEntry, ...]
    owner: bytes
    issued: int = 0
    sig: bytes = b""

    def __post_init__(self) -> None:
        try:
            parse_scheme(f"{self.k}+{self.m}")
        except ValueError as exc:
            raise ProtocolError(str(exc)) from None
        if len(self.shards) != self.k + self.m:
            raise ProtocolError("shard map must list K + M shards")
        if len(self.layout_id) != 32:
            raise ProtocolError("layout id must be 32 bytes")
        try:
            cid_from_bytes(self.object_cid)
            for s in self.shards:
                cid_from_bytes(s.cid)
        except StoreError as exc:
            raise ProtocolError(f"shard map holds a bad CID: {exc}") from None
        for s in self.shards:
            if s.holder and not 2 <= len(s.holder) <= 64:
                raise ProtocolError("shard holder id malformed")
        if not 2 <= len(self.owner) <= 64:
            raise ProtocolError("shard map owner id malformed")

    @property
    def object_root(self) -> CID:
        return cid_from_bytes(self.object_cid)

    def shard_cid(self, i: int) -> CID:
        return cid_from_bytes(self.shards[i].cid)

    def holder(self, i: int) -> PeerId | None:
        raw = self.shards[i].holder
        if not raw:
            return None
        try:
            return PeerId.from_bytes(raw)
        except P2PError:
            return None

    def _fields(self) -> list[object]:
        return [1, self.object_cid, self.k, self.m, self.layout_id,
                [[s.cid, s.holder] for s in self.shards], self.owner, self.issued]

    def signing_bytes(self) -> bytes:
        body: bytes = msgpack.packb(self._fields(), use_bin_type=True)
        return _DOMAIN + body

    def signed(self, issued: int, sign: Callable[[bytes], bytes]) -> "EcMap":
        unsigned = replace(self, issued=issued, sig=b"")
        return replace(unsigned, sig=sign(unsigned.signing_bytes()))

    def verify(self) -> bool:
        """True if the owner the map names signed it."""
        try:
            owner = PeerId.from_bytes(self.owner)
        except P2PError:
            return False
        return len(self.sig) == 64 and owner.verify(self.sig, self.signing_bytes())

    def encode(self) -> bytes:
        out: bytes = msgpack.packb(self._fields() + [self.sig], use_bin_type=True)
        return out

    @classmethod
    def decode(cls, data: bytes) -> "EcMap":
        v = unpack_signed(data, "shard map", max_bin_len=128, max_array_len=MAX_EC_SHARDS)
        if not (isinstance(v, list) and len(v) == 9 and v[0] == 1):
            raise ProtocolError("shard map must be [1, cid, K, M, layout, shards, owner, issued, sig]")
        _, obj, k, m, layout, shards, owner, issued, sig = v
        ints = (k, m, issued)
        if not all(isinstance(x, int) and not isinstance(x, bool) for x in ints) or not 0 < issued < 1 << 63:
            raise ProtocolError("shard map numbers malformed")
        if not all(isinstance(x, bytes) for x in (obj, layout, owner, sig)) or not isinstance(shards, list):
            raise ProtocolError("shard map fields have the wrong types")
        entries = []
        for s in shards:
            if not (isinstance(s, list) and len(s) == 2 and all(isinstance(x, bytes) for x in s)):
                raise ProtocolError("shard entry must be [cid, holder]")
            entries.append(ShardEntry(s[0], s[1]))
        out = cls(obj, k, m, layout, tuple(entries), owner, issued, sig)
        if out.encode() != data:
            raise ProtocolError("shard map encoding is not canonical")
        return out
