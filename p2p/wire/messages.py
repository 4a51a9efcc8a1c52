"""The wire messages: frozen dataclasses that validate themselves when built.

A message that exists is a valid message: every constructor checks types
(strictly: `True` is not an int, a `str` is not `bytes`), lengths against
shoal.p2p.wire.limits and ranges. Building an invalid one locally raises
LocalProtocolError (our bug); the codec turns the same failure on decoded
input into RemoteProtocolError (their bug). Field order is the wire order.

This module knows nothing of msgpack or sockets, and it does not parse CIDs:
they travel as binary CID bytes, bounded in length here, and the exchange
parses and hash-verifies them with shoal.store.ipld.cid before use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import ClassVar

from shoal.p2p.wire import limits as L
from shoal.p2p.errors import LocalProtocolError

__all__ = [
    "ErrorCode", "Message", "Error", "Hello", "Ping", "Pong", "GetPeers", "Peers", "GetLanes", "Lanes",
    "PeerInfo", "WantHave", "Have", "DontHave", "WantBlock", "Block", "BlockMissing",
    "StoreRequest", "StoreResponse", "ReleaseRequest", "ReleaseResponse", "AuditChallenge", "AuditProof",
    "LedgerSummaryRequest", "LedgerSummary", "LedgerEntry", "NamePublish", "NameAck", "EcMapGet", "EcMapPush",
    "EcMapReply", "MESSAGE_TYPES",
    "RESPONSES",
]


class ErrorCode(IntEnum):
    """Codes carried by Error. Receivers must accept codes they do not know."""

    MALFORMED = 1  # undecodable or invalid message
    UNSUPPORTED_VERSION = 2  # envelope version we do not speak
    UNKNOWN_TYPE = 3  # message type code we do not know
    TOO_LARGE = 4  # frame over the cap (the connection is closed after)
    BUSY = 5  # in-flight cap reached: retry later, on this or another peer
    NOT_FOUND = 6  # we do not hold the object the request is about
    REFUSED = 7  # policy: no space, unknown owner, replayed nonce...
    UNEXPECTED = 8  # a response with no matching request, or a request out of order
    INTERNAL = 9  # the server failed; the request may be retried


# --- validation helpers (raise LocalProtocolError) -------------------------


def _bad(name: str, why: str) -> LocalProtocolError:
    return LocalProtocolError(f"{name}: {why}")


def _uint(name: str, value: object, hi: int, lo: int = 0) -> None:
    if not isinstance(value, int) or isinstance(value, bool):  # IntEnum ok, bool not
        raise _bad(name, f"expected int, got {type(value).__name__}")
    if not lo <= value <= hi:
        raise _bad(name, f"{value} outside [{lo}, {hi}]")


def _bytes(name: str, value: object, lo: int, hi: int) -> None:
    if type(value) is not bytes:
        raise _bad(name, f"expected bytes, got {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise _bad(name, f"length {len(value)} outside [{lo}, {hi}]")


def _text(name: str, value: object, hi: int, *, printable: bool = False) -> None:
    """Strings are capped in UTF-8 bytes, since that is what the wire carries."""
    if type(value) is not str:
        raise _bad(name, f"expected str, got {type(value).__name__}")
    if len(value) > hi or len(value.encode("utf-8", "surrogatepass")) > hi:
        raise _bad(name, f"longer than {hi} bytes")
    if printable and not (value.isascii() and value.isprintable()):
        raise _bad(name, "must be printable ASCII")


def _addr(name: str, value: object) -> None:
    _text(name, value, L.MAX_ADDR_BYTES, printable=True)
    assert isinstance(value, str)
    if not value.startswith("/"):
        raise _bad(name, "a multiaddr starts with '/'")


def _seq(name: str, value: object, hi: int, lo: int = 0) -> tuple[object, ...]:
    if type(value) is not tuple:
        raise _bad(name, f"expected tuple, got {type(value).__name__}")
    if not lo <= len(value) <= hi:
        raise _bad(name, f"{len(value)} items outside [{lo}, {hi}]")
    return value


def _cids(name: str, value: object, hi: int) -> None:
    for i, cid in enumerate(_seq(name, value, hi, lo=1)):
        _bytes(f"{name}[{i}]", cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)


def _no_duplicates(name: str, items: tuple[object, ...]) -> None:
    if len(set(items)) != len(items):
        raise _bad(name, "duplicate entries")


# --- base -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Message:
    """Common envelope part: the request id (the codec adds version and type).

    ROLE says how the id is used: a "request" has a fresh non-zero id chosen
    by its sender; a "response" echoes the id of the request it answers (0
    only where an unsolicited form is allowed); "hello" is always 0.
    """

    TYPE: ClassVar[int] = 0
    ROLE: ClassVar[str] = "response"
    UNSOLICITED_OK: ClassVar[bool] = False

    request_id: int

    def __post_init__(self) -> None:
        lo = 1 if self.ROLE == "request" or (self.ROLE == "response" and not self.UNSOLICITED_OK) else 0
        hi = 0 if self.ROLE == "hello" else L.MAX_REQUEST_ID
        _uint("request_id", self.request_id, hi, lo)
        self._validate()

    def _validate(self) -> None:
        """Subclasses check their own fields here."""


# --- connection ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Error(Message):
    """Ends the request `request_id` with a failure; 0 = about the connection."""

    TYPE: ClassVar[int] = 0x01
    UNSOLICITED_OK: ClassVar[bool] = True
    code: int
    message: str

    def _validate(self) -> None:
        _uint("code", self.code, 0xFFFF, 1)
        _text("message", self.message, L.MAX_ERROR_MESSAGE_BYTES)


@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message each side sends after the Noise handshake.

    The peer id is not here: the Noise handshake already proved it.
    """

    TYPE: ClassVar[int] = 0x02
    ROLE: ClassVar[str] = "hello"
    versions: tuple[int, ...]
    listen_addrs: tuple[str, ...]
    agent: str
    capacity_bytes: int
    free_bytes: int

    def _validate(self) -> None:
        for i, v in enumerate(_seq("versions", self.versions, L.MAX_VERSIONS, lo=1)):
            _uint(f"versions[{i}]", v, 0xFFFF, 1)
        _no_duplicates("versions", self.versions)
        for i, a in enumerate(_seq("listen_addrs", self.listen_addrs, L.MAX_LISTEN_ADDRS)):
            _addr(f"listen_addrs[{i}]", a)
        _text("agent", self.agent, L.MAX_AGENT_BYTES, printable=True)
        _uint("capacity_bytes", self.capacity_bytes, L.MAX_UINT64)
        _uint("free_bytes", self.free_bytes, self.capacity_bytes)


@dataclass(frozen=True, slots=True)
class Ping(Message):
    TYPE: ClassVar[int] = 0x03
    ROLE: ClassVar[str] = "request"
    payload: bytes

    def _validate(self) -> None:
        _bytes("payload", self.payload, 0, L.MAX_PING_BYTES)


@dataclass(frozen=True, slots=True)
class Pong(Message):
    """Echoes the Ping payload, so a late Pong cannot answer a newer Ping."""

    TYPE: ClassVar[int] = 0x04
    payload: bytes

    def _validate(self) -> None:
        _bytes("payload", self.payload, 0, L.MAX_PING_BYTES)


# --- discovery ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeerInfo:
    """One entry of a Peers reply: a peer id (bytes) and its multiaddrs."""

    peer_id: bytes
    addrs: tuple[str, ...]

    def __post_init__(self) -> None:
        _bytes("peer_id", self.peer_id, L.MIN_PEER_ID_BYTES, L.MAX_PEER_ID_BYTES)
        for i, a in enumerate(_seq("addrs", self.addrs, L.MAX_ADDRS_PER_PEER, lo=1)):
            _addr(f"addrs[{i}]", a)


@dataclass(frozen=True, slots=True)
class GetPeers(Message):
    TYPE: ClassVar[int] = 0x10
    ROLE: ClassVar[str] = "request"
    max_peers: int

    def _validate(self) -> None:
        _uint("max_peers", self.max_peers, L.MAX_PEERS_PER_REPLY, 1)


@dataclass(frozen=True, slots=True)
class Peers(Message):
    TYPE: ClassVar[int] = 0x11
    peers: tuple[PeerInfo, ...]

    def _validate(self) -> None:
        for i, p in enumerate(_seq("peers", self.peers, L.MAX_PEERS_PER_REPLY)):
            if type(p) is not PeerInfo:
                raise _bad(f"peers[{i}]", "expected PeerInfo")
        _no_duplicates("peers.peer_id", tuple(p.peer_id for p in self.peers))


@dataclass(frozen=True, slots=True)
class GetLanes(Message):
    """Ask where the peer's lanes (its block-moving processes) listen.

    A new message type rather than a field of HELLO: a message never gains
    fields within a version (§10), and an older peer answers UNKNOWN_TYPE,
    which means "no lanes"."""

    TYPE: ClassVar[int] = 0x12
    ROLE: ClassVar[str] = "request"


@dataclass(frozen=True, slots=True)
class Lanes(Message):
    """The answer to GET_LANES: the lanes' multiaddrs (without /p2p; empty: none)."""

    TYPE: ClassVar[int] = 0x13
    addrs: tuple[str, ...]

    def _validate(self) -> None:
        for i, a in enumerate(_seq("addrs", self.addrs, L.MAX_LANE_ADDRS)):
            _addr(f"addrs[{i}]", a)
        _no_duplicates("addrs", self.addrs)


# --- block exchange -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WantHave(Message):
    """Ask which CIDs the peer holds; each CID is answered once by Have/DontHave."""

    TYPE: ClassVar[int] = 0x20
    ROLE: ClassVar[str] = "request"
    cids: tuple[bytes, ...]

    def _validate(self) -> None:
        _cids("cids", self.cids, L.MAX_CIDS_PER_WANT_HAVE)
        _no_duplicates("cids", self.cids)


@dataclass(frozen=True, slots=True)
class Have(Message):
    """Answers part of a WantHave; with request id 0, an unsolicited announcement."""

    TYPE: ClassVar[int] = 0x21
    UNSOLICITED_OK: ClassVar[bool] = True
    cids: tuple[bytes, ...]

    def _validate(self) -> None:
        _cids("cids", self.cids, L.MAX_CIDS_PER_WANT_HAVE)


@dataclass(frozen=True, slots=True)
class DontHave(Message):
    TYPE: ClassVar[int] = 0x22
    cids: tuple[bytes, ...]

    def _validate(self) -> None:
        _cids("cids", self.cids, L.MAX_CIDS_PER_WANT_HAVE)


@dataclass(frozen=True, slots=True)
class WantBlock(Message):
    """Ask for blocks; each CID is answered once by Block or BlockMissing."""

    TYPE: ClassVar[int] = 0x23
    ROLE: ClassVar[str] = "request"
    cids: tuple[bytes, ...]

    def _validate(self) -> None:
        _cids("cids", self.cids, L.MAX_CIDS_PER_WANT_BLOCK)
        _no_duplicates("cids", self.cids)


@dataclass(frozen=True, slots=True)
class Block(Message):
    """Unverified until the receiver checks sha2-256(data) against cid."""

    TYPE: ClassVar[int] = 0x24
    cid: bytes
    data: bytes

    def _validate(self) -> None:
        _bytes("cid", self.cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)
        _bytes("data", self.data, 0, L.MAX_BLOCK_BYTES)


@dataclass(frozen=True, slots=True)
class BlockMissing(Message):
    TYPE: ClassVar[int] = 0x25
    cid: bytes

    def _validate(self) -> None:
        _bytes("cid", self.cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)


# --- replication and audits -----------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreRequest(Message):
    """Ask a peer to hold an object; owner_sig signs the manifest (see replication)."""

    TYPE: ClassVar[int] = 0x30
    ROLE: ClassVar[str] = "request"
    root_cid: bytes
    size: int
    manifest: bytes
    owner_sig: bytes

    def _validate(self) -> None:
        _bytes("root_cid", self.root_cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)
        _uint("size", self.size, L.MAX_UINT64)
        _bytes("manifest", self.manifest, 1, L.MAX_MANIFEST_BYTES)
        _bytes("owner_sig", self.owner_sig, L.SIGNATURE_BYTES, L.SIGNATURE_BYTES)


@dataclass(frozen=True, slots=True)
class StoreResponse(Message):
    """accepted=True carries the holder's agreement signature; False a reason."""

    TYPE: ClassVar[int] = 0x31
    accepted: bool
    reason: str
    agreement_sig: bytes

    def _validate(self) -> None:
        if type(self.accepted) is not bool:
            raise _bad("accepted", "expected bool")
        _text("reason", self.reason, L.MAX_REASON_BYTES)
        want = L.SIGNATURE_BYTES if self.accepted else 0
        _bytes("agreement_sig", self.agreement_sig, want, want)


@dataclass(frozen=True, slots=True)
class ReleaseRequest(Message):
    """The owner gives a replica back: the holder may drop the pin it took.

    Only the owner recorded in the holder's agreement may send it (the Noise
    handshake proves who the sender is). `owner_sig` signs the release bytes
    (shoal.p2p.replication.signed.release_bytes); the holder keeps it beside the agreement
    as evidence, just as both signatures of the agreement itself are kept,
    so a holder can show that it dropped the data because it was told to.
    """

    TYPE: ClassVar[int] = 0x32
    ROLE: ClassVar[str] = "request"
    root_cid: bytes
    owner_sig: bytes

    def _validate(self) -> None:
        _bytes("root_cid", self.root_cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)
        _bytes("owner_sig", self.owner_sig, L.SIGNATURE_BYTES, L.SIGNATURE_BYTES)


@dataclass(frozen=True, slots=True)
class ReleaseResponse(Message):
    """The agreement is over. `unpinned` False: the holder's own user had
    pinned the object independently, so that pin (and the blocks) stay."""

    TYPE: ClassVar[int] = 0x33
    root_cid: bytes
    unpinned: bool

    def _validate(self) -> None:
        _bytes("root_cid", self.root_cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)
        if type(self.unpinned) is not bool:
            raise _bad("unpinned", "expected bool")


@dataclass(frozen=True, slots=True)
class AuditChallenge(Message):
    TYPE: ClassVar[int] = 0x40
    ROLE: ClassVar[str] = "request"
    root_cid: bytes
    nonce: bytes
    count: int
    deadline_ms: int

    def _validate(self) -> None:
        _bytes("root_cid", self.root_cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)
        _bytes("nonce", self.nonce, L.NONCE_BYTES, L.NONCE_BYTES)
        _uint("count", self.count, L.MAX_AUDIT_CHALLENGES, 1)
        _uint("deadline_ms", self.deadline_ms, L.MAX_AUDIT_DEADLINE_MS, 1)


@dataclass(frozen=True, slots=True)
class AuditProof(Message):
    """proof is opaque here (segments + Merkle paths, defined by the audit layer)."""

    TYPE: ClassVar[int] = 0x41
    root_cid: bytes
    nonce: bytes
    proof: bytes
    sig: bytes

    def _validate(self) -> None:
        _bytes("root_cid", self.root_cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)
        _bytes("nonce", self.nonce, L.NONCE_BYTES, L.NONCE_BYTES)
        _bytes("proof", self.proof, 1, L.MAX_PROOF_BYTES)
        _bytes("sig", self.sig, L.SIGNATURE_BYTES, L.SIGNATURE_BYTES)


# --- erasure-coded objects (shoal.p2p.replication.erasure) --------------------------


@dataclass(frozen=True, slots=True)
class EcMapGet(Message):
    """Ask a peer for the shard map of an erasure-coded object (a reader
    whose plain fetch found no holder of the object's DAG)."""

    TYPE: ClassVar[int] = 0x34
    ROLE: ClassVar[str] = "request"
    root_cid: bytes

    def _validate(self) -> None:
        _bytes("root_cid", self.root_cid, L.MIN_CID_BYTES, L.MAX_CID_BYTES)


@dataclass(frozen=True, slots=True)
class EcMapPush(Message):
    """The owner hands its signed shard map to the holders of the shards, so
    that readers can learn it from them when the owner is gone. The map is
    opaque here (shoal.p2p.replication.ec_map bounds, decodes and verifies it)."""

    TYPE: ClassVar[int] = 0x35
    ROLE: ClassVar[str] = "request"
    ec_map: bytes
    offers: bytes = b""  # msgpack [offer bytes, ...]: each shard's owner-signed offer, for a deputy

    def _validate(self) -> None:
        _bytes("ec_map", self.ec_map, 1, L.MAX_EC_MAP_BYTES)
        _bytes("offers", self.offers, 0, L.MAX_EC_OFFERS_BYTES)


@dataclass(frozen=True, slots=True)
class EcMapReply(Message):
    """Answers EcMapGet with the newest signed map held, or EcMapPush with an
    empty `ec_map` (stored)."""

    TYPE: ClassVar[int] = 0x36
    ec_map: bytes

    def _validate(self) -> None:
        _bytes("ec_map", self.ec_map, 0, L.MAX_EC_MAP_BYTES)


# --- energy ledger ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """Totals for one operation kind (put, replicate, serve, audit, repair...)."""

    kind: str
    joules: float
    nbytes: int

    def __post_init__(self) -> None:
        _text("kind", self.kind, L.MAX_LEDGER_KIND_BYTES, printable=True)
        if not self.kind:
            raise _bad("kind", "empty")
        if type(self.joules) is not float or not math.isfinite(self.joules) or self.joules < 0:
            raise _bad("joules", "expected a finite float >= 0")
        _uint("nbytes", self.nbytes, L.MAX_UINT64)


@dataclass(frozen=True, slots=True)
class LedgerSummaryRequest(Message):
    TYPE: ClassVar[int] = 0x50
    ROLE: ClassVar[str] = "request"


@dataclass(frozen=True, slots=True)
class LedgerSummary(Message):
    """A map kind -> (joules, bytes), carried as a list of unique-kind entries."""

    TYPE: ClassVar[int] = 0x51
    entries: tuple[LedgerEntry, ...]

    def _validate(self) -> None:
        for i, e in enumerate(_seq("entries", self.entries, L.MAX_LEDGER_KINDS)):
            if type(e) is not LedgerEntry:
                raise _bad(f"entries[{i}]", "expected LedgerEntry")
        _no_duplicates("entries.kind", tuple(e.kind for e in self.entries))

    def as_dict(self) -> dict[str, tuple[float, int]]:
        """kind -> (joules, bytes), for callers that want the map form."""
        return {e.kind: (e.joules, e.nbytes) for e in self.entries}


# --- name records -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamePublish(Message):
    """A signed name record, in its own encoding (shoal.store.names.records),
    opaque here: the names service decodes, bounds and verifies it."""

    TYPE: ClassVar[int] = 0x60
    ROLE: ClassVar[str] = "request"
    record: bytes

    def _validate(self) -> None:
        _bytes("record", self.record, 1, L.MAX_NAME_RECORD_BYTES)


@dataclass(frozen=True, slots=True)
class NameAck(Message):
    """The record was valid; `stored`: it was new or newer than the one held."""

    TYPE: ClassVar[int] = 0x61
    stored: bool

    def _validate(self) -> None:
        if type(self.stored) is not bool:
            raise _bad("stored", f"expected bool, got {type(self.stored).__name__}")


MESSAGE_TYPES: dict[int, type[Message]] = {
    cls.TYPE: cls
    for cls in (
        Error, Hello, Ping, Pong, GetPeers, Peers, GetLanes, Lanes, WantHave, Have, DontHave, WantBlock,
        Block, BlockMissing, StoreRequest, StoreResponse, ReleaseRequest, ReleaseResponse,
        AuditChallenge, AuditProof, LedgerSummaryRequest, LedgerSummary, NamePublish, NameAck,
        EcMapGet, EcMapPush, EcMapReply,
    )
}
"""Type code -> class. Codes never change meaning within a protocol version."""

RESPONSES: dict[type[Message], tuple[type[Message], ...]] = {
    Ping: (Pong, Error),
    GetPeers: (Peers, Error),
    GetLanes: (Lanes, Error),
    WantHave: (Have, DontHave, Error),
    WantBlock: (Block, BlockMissing, Error),
    StoreRequest: (StoreResponse, Error),
    ReleaseRequest: (ReleaseResponse, Error),
    AuditChallenge: (AuditProof, Error),
    LedgerSummaryRequest: (LedgerSummary, Error),
    NamePublish: (NameAck, Error),
    EcMapGet: (EcMapReply, Error),
    EcMapPush: (EcMapReply, Error),
}
"""Request class -> the message classes that may answer it (same request id)."""
