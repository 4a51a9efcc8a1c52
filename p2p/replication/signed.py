"""The signed byte formats of replication: offers, agreements and releases.

Both sides must build exactly the same bytes, so they are defined once, here:
- the offer (what a StoreRequest's `manifest` field carries): the owner's
  signed manifest, the wanted count and the holder list, signed by the owner
  over `Offer.placement_bytes()`;
- what the requester signs (`offer_signing_bytes`, StoreRequest.owner_sig);
- what the holder signs (`agreement_bytes`, StoreResponse.agreement_sig);
- what the owner signs to give a replica back (`release_bytes`,
  ReleaseRequest.owner_sig).
Each signed string starts with its own domain tag, so a signature over one
can never be replayed as another.

Not here: where they are kept (shoal.p2p.replication.agreements, the SQLite
tables) or the manifest itself (shoal.store.proofs.manifest).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Callable

import msgpack

from shoal.p2p.errors import ProtocolError

if TYPE_CHECKING:
    from shoal.p2p.secure.identity import PeerId


def unpack_signed(data: bytes, what: str, *, max_bin_len: int, max_array_len: int) -> Any:
    """Bounded msgpack decode of a signed replication record (an offer, a shard map).

    Why shared: every such record comes from a peer, so each decode caps bin
    and array lengths and refuses text, maps and extensions (none of these
    records has any); any msgpack failure becomes one ProtocolError naming
    `what`. The caller checks the shape of the value it gets back.
    """
    try:
        return msgpack.unpackb(data, raw=False, max_bin_len=max_bin_len, max_array_len=max_array_len,
                               max_str_len=0, max_map_len=0, max_ext_len=0)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"{what} is not valid msgpack: {type(exc).__name__}") from None

__all__ = ["Offer", "trusted_holders", "offer_signing_bytes", "agreement_bytes", "release_bytes", "MAX_OFFER_HOLDERS"]

MAX_OFFER_HOLDERS = 64

_OFFER_DOMAIN = b"shoal-offer-v1\x00"
_PLACEMENT_DOMAIN = b"shoal-placement-v1\x00"
_AGREEMENT_DOMAIN = b"shoal-agreement-v1\x00"
_RELEASE_DOMAIN = b"shoal-release-v1\x00"


@dataclass(frozen=True)
class Offer:
    """What a StoreRequest's `manifest` field carries.

    msgpack array [2, manifest bytes (shoal.store.proofs.manifest, signed by the owner),
    replicas wanted, [holder peer id bytes...], issued, owner_sig]. The
    holder list lets a holder find the other copies (to pull from, to know
    who may audit it, and to elect a deputy if the owner disappears), so it
    is the owner's word, not the requester's: `owner_sig` is the owner's
    signature over `placement_bytes()` (the manifest's hash, the count, the
    holder list and `issued`). A deputy re-sends the owner's last signed
    placement unchanged; it cannot add holders. `issued` (the owner's clock,
    microseconds, strictly increasing per object) lets a holder refuse an
    older signed list replayed over a newer one.

    The requester also signs `offer_signing_bytes` (the StoreRequest's
    `owner_sig`, named before deputies existed). Version 1 arrays
    ([1, manifest, replicas, holders], no owner signature) still decode, for
    offers recorded by older versions; nothing trusts their holder list.
    """

    manifest: bytes
    replicas_wanted: int
    holders: tuple[bytes, ...]
    issued: int = 0
    owner_sig: bytes = b""

    def encode(self) -> bytes:
        if self.issued == 0 and not self.owner_sig:
            fields: list[object] = [1, self.manifest, self.replicas_wanted, list(self.holders)]
        else:
            fields = [2, self.manifest, self.replicas_wanted, list(self.holders), self.issued, self.owner_sig]
        out: bytes = msgpack.packb(fields, use_bin_type=True)
        return out

    def placement_bytes(self) -> bytes:
        """What the owner signs: "this object, this many copies, these holders, as of `issued`"."""
        body: bytes = msgpack.packb([hashlib.sha256(self.manifest).digest(), self.replicas_wanted,
                                     sorted(self.holders), self.issued], use_bin_type=True)
        return _PLACEMENT_DOMAIN + body

    def with_owner_sig(self, issued: int, sign: "Callable[[bytes], bytes]") -> "Offer":
        """This offer as of `issued`, signed with the owner's `sign`."""
        unsigned = replace(self, issued=issued, owner_sig=b"")
        return replace(unsigned, owner_sig=sign(unsigned.placement_bytes()))

    def signed_by(self, owner: "PeerId") -> bool:
        """True if the owner signed this holder list and count."""
        return bool(self.owner_sig) and owner.verify(self.owner_sig, self.placement_bytes())

    @classmethod
    def decode(cls, data: bytes) -> "Offer":
        v = unpack_signed(data, "offer", max_bin_len=4096, max_array_len=MAX_OFFER_HOLDERS)
        if isinstance(v, list) and len(v) == 4 and v[0] == 1:
            _, manifest, wanted, holders = v
            issued, sig = 0, b""
        elif isinstance(v, list) and len(v) == 6 and v[0] == 2:
            _, manifest, wanted, holders, issued, sig = v
            if (not isinstance(issued, int) or isinstance(issued, bool) or not 0 < issued < 1 << 63
                    or not isinstance(sig, bytes) or len(sig) != 64):
                raise ProtocolError("offer placement signature malformed")
        else:
            raise ProtocolError("offer must be [2, manifest, replicas, holders, issued, owner_sig]")
        if not isinstance(manifest, bytes) or not isinstance(wanted, int) or isinstance(wanted, bool):
            raise ProtocolError("offer fields have the wrong types")
        if not 1 <= wanted <= MAX_OFFER_HOLDERS or not isinstance(holders, list):
            raise ProtocolError("offer replica count out of range")
        if not all(isinstance(h, bytes) and 2 <= len(h) <= 64 for h in holders):
            raise ProtocolError("offer holder ids malformed")
        if len(set(holders)) != len(holders):
            raise ProtocolError("offer lists a holder twice")
        offer = cls(manifest, wanted, tuple(holders), issued, sig)
        if offer.encode() != data:
            raise ProtocolError("offer encoding is not canonical")
        return offer


def trusted_holders(offer: bytes | None, owner: "PeerId") -> tuple[bytes, ...]:
    """The holder list of a recorded offer if its owner signed it, else ()."""
    if not offer:
        return ()
    try:
        parsed = Offer.decode(offer)
    except ProtocolError:
        return ()
    return parsed.holders if parsed.signed_by(owner) else ()


def offer_signing_bytes(offer: bytes) -> bytes:
    """What the requester signs (StoreRequest.owner_sig)."""
    return _OFFER_DOMAIN + offer


def agreement_bytes(offer: bytes, requester: bytes, holder: bytes) -> bytes:
    """What the holder signs (StoreResponse.agreement_sig): "I, holder, keep
    the object of this offer for this requester". Hashing the offer keeps it
    short; the ids are length-prefixed so no two triples share bytes."""
    digest = hashlib.sha256(offer).digest()
    return _AGREEMENT_DOMAIN + digest + bytes([len(requester)]) + requester + bytes([len(holder)]) + holder


def release_bytes(root_cid: bytes, owner: bytes, holder: bytes) -> bytes:
    """What the owner signs (ReleaseRequest.owner_sig): "I, owner, no longer
    need holder to keep this object". Per holder, so one holder's evidence
    says nothing about another's; length-prefixed like `agreement_bytes`."""
    return (_RELEASE_DOMAIN + bytes([len(root_cid)]) + root_cid + bytes([len(owner)]) + owner
            + bytes([len(holder)]) + holder)
