"""Which libp2p protocol id (yamux stream) carries each Shoal message type.

Every Shoal message family runs on a stream of its own, negotiated by
multistream-select (docs/PROTOCOL.md §3): a stream of one protocol carries
only that protocol's messages, so a peer that does not serve a family
answers `na` to its protocol id instead of ERROR to each request, and one
family's bulk traffic (blocks) has its own flow-control window.

This module is the single table of that mapping (sans-IO: no trio, no
streams). A new Message subclass must be added here; tests/unit/
test_protocols.py checks that every one is.
"""

from __future__ import annotations

from typing import Final, Iterable

from shoal.p2p.wire.messages import (
    AuditChallenge, AuditProof, Block, BlockMissing, DontHave, EcMapGet, EcMapPush, EcMapReply,
    Error, GetLanes, GetPeers, Have, Lanes, Hello, LedgerSummary, LedgerSummaryRequest, Message, NameAck,
    NamePublish, Peers, Ping, Pong, ReleaseRequest, ReleaseResponse, StoreRequest, StoreResponse,
    WantBlock, WantHave,
)

SESSION: Final = "/shoal/session/1.0.0"
"""Hello (first, both ways), Ping, peer exchange, where the lanes listen. Opened by the dialer right
after the libp2p upgrade; the connection lives as long as this stream."""
EXCHANGE: Final = "/shoal/exchange/1.0.0"
REPLICATION: Final = "/shoal/replication/1.0.0"
AUDIT: Final = "/shoal/audit/1.0.0"
ENERGY: Final = "/shoal/energy/1.0.0"
NAMES: Final = "/shoal/names/1.0.0"

ALL: Final = (SESSION, EXCHANGE, REPLICATION, AUDIT, ENERGY, NAMES)
"""Every Shoal protocol id, the session first."""

BUILT_IN: Final = frozenset({SESSION, EXCHANGE})
"""Served by every node (its own request handlers); the others only when a
service handles at least one of their requests (see `served`)."""

BULK: Final = frozenset({EXCHANGE})
"""Streams that carry blocks (up to 1 MiB each, many requests at once): the
only ones granted the large yamux receive window."""

PROTOCOL_OF: Final[dict[type[Message], str | None]] = {
    Error: None,  # answers a request on the stream it came on; id 0: about that stream's peer
    Hello: SESSION, Ping: SESSION, Pong: SESSION, GetPeers: SESSION, Peers: SESSION,
    GetLanes: SESSION, Lanes: SESSION,
    WantHave: EXCHANGE, Have: EXCHANGE, DontHave: EXCHANGE,
    WantBlock: EXCHANGE, Block: EXCHANGE, BlockMissing: EXCHANGE,
    StoreRequest: REPLICATION, StoreResponse: REPLICATION,
    ReleaseRequest: REPLICATION, ReleaseResponse: REPLICATION,
    EcMapGet: REPLICATION, EcMapPush: REPLICATION, EcMapReply: REPLICATION,
    AuditChallenge: AUDIT, AuditProof: AUDIT,
    LedgerSummaryRequest: ENERGY, LedgerSummary: ENERGY,
    NamePublish: NAMES, NameAck: NAMES,
}
"""Message class -> the protocol id of the streams that carry it; None (ERROR
only): any Shoal stream."""


def protocol_of(kind: type[Message]) -> str | None:
    """The protocol id that carries `kind` (None: any stream). KeyError for a
    class missing from the table: a bug caught by the tests, never by a peer
    (the codec only decodes classes of MESSAGE_TYPES)."""
    return PROTOCOL_OF[kind]


def carries(protocol: str, kind: type[Message]) -> bool:
    """May a message of `kind` travel on a stream of `protocol`?"""
    p = PROTOCOL_OF.get(kind, "")
    return p is None or p == protocol


def served(request_kinds: Iterable[type[Message]]) -> list[str]:
    """The protocol ids a node answers on: the built-in ones, plus each
    family one of whose requests has a handler (`request_kinds`)."""
    wanted = set(BUILT_IN)
    for kind in request_kinds:
        p = PROTOCOL_OF.get(kind)
        if p is not None:
            wanted.add(p)
    return [p for p in ALL if p in wanted]
