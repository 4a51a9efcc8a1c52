"""The names node service: spreads this node's name records, takes peers', resolves with trust.

- On connect: each newly connected peer is offered this node's own records
  (at most MAX_NAMES_ON_CONNECT, newest names first), one NamePublish each.
- On import (`POST /v1/hf/import`): the new record is pushed to every
  connected peer at once.
- On receipt (NamePublish): the record is decoded (bounded), must be
  first-hand (publisher == the authenticated peer that sent it: a node
  relays nothing, so "a peer of the private swarm" is exactly who published
  it), signed by that publisher's key, and within MAX_NAMES_PER_PUBLISHER
  names; then the book keeps it if its seq is newer. Invalid records get an
  Error (MALFORMED or REFUSED) and change nothing.
- `resolver_of(node).resolve(kind, repo, revision)` / `.repos()`: the
  book's answer among the publishers `[names] trust` trusts
  (shoal.p2p.names.trust). These read SQLite: call them from a worker thread
  on a running node (trio.to_thread.run_sync).

Why first-hand only: relayed records would let any swarm member introduce a
record of an outside publisher, and make "trust the swarm" mean "trust
whoever any member met". With peer exchange every swarm node connects to the
others, so first-hand spreading still reaches them all.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import trio

from shoal.store.chunking.choice import DEFAULT_CHUNKER, chunker_for
from shoal.store.errors import StoreError
from shoal.store.names.records import InvalidNameRecord, NameRecord, validate_repo, validate_revision

from shoal.p2p.errors import P2PError
from shoal.p2p.names.publish import listing_json, publish_folder, record_json, verify
from shoal.p2p.names.trust import TrustPolicy
from shoal.p2p.net.api import ApiError, param
from shoal.p2p.net.connection import PeerConnection
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import Error, ErrorCode, Message, NameAck, NamePublish

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

__all__ = ["NameResolver", "NameService", "resolver_of", "install", "GREET_INTERVAL_S"]

log = logging.getLogger("shoal.names")

GREET_INTERVAL_S = 0.5
"""How often new connections are looked for (a service has no connect hook)."""


class NameResolver(Protocol):
    """What the gateway asks: names resolved among trusted publishers."""

    def resolve(self, kind: str, repo: str, revision: str) -> NameRecord | None: ...

    def repos(self) -> list[NameRecord]: ...


class NameService:
    """One node's name records: offered, received, verified, resolved."""

    def __init__(self) -> None:
        self._node: "Node | None" = None
        self.trust: TrustPolicy | None = None
        self._greeted: dict[object, PeerConnection] = {}
        self._nursery: trio.Nursery | None = None
        self._send_limit = trio.CapacityLimiter(8)

    @property
    def node(self) -> "Node":
        if self._node is None:
            raise P2PError("the names service is not attached to a node")
        return self._node

    def attach(self, node: "Node") -> None:
        self._node = node
        self.trust = TrustPolicy.from_config(node.repo.config.get("names"), node.peer_id,
                                             node.options.swarm_key is not None)
        node.add_handler(NamePublish, self._on_publish)
        node.add_route("POST", "/v1/hf/import", self.api_import)
        node.add_route("GET", "/v1/hf/ls", self.api_ls)

    # -- resolving --------------------------------------------------------------

    def resolve(self, kind: str, repo: str, revision: str) -> NameRecord | None:
        """The trusted record for (kind, repo) at a revision name or commit (blocking)."""
        return self.node.repo.names.resolve(kind, repo, revision, trusted=self.trust)

    def repos(self) -> list[NameRecord]:
        """The trusted record of every known name (blocking)."""
        return self.node.repo.names.repos(trusted=self.trust)

    # -- receiving ---------------------------------------------------------------

    def _accept(self, sender: str, data: bytes) -> tuple[bool, str]:
        """Worker thread: decode, check and store a record a peer sent; (stored, label)."""
        record = NameRecord.decode(data)
        if record.publisher != sender:
            raise _Refused(f"record published by {record.publisher}, sent by {sender}: only first-hand records")
        if not verify(record):
            raise _Refused("bad signature")
        book = self.node.repo.names
        if (not book.holds(record.publisher, record.kind, record.repo, record.revision)
                and book.count_names(record.publisher) >= L.MAX_NAMES_PER_PUBLISHER):
            raise _Refused(f"{record.publisher} has {L.MAX_NAMES_PER_PUBLISHER} names here already")
        return book.put(record), _label(record)

    async def _on_publish(self, conn: PeerConnection, msg: Message) -> Sequence[Message]:
        assert isinstance(msg, NamePublish)
        rid = msg.request_id
        try:
            stored, label = await trio.to_thread.run_sync(self._accept, str(conn.remote_peer), msg.record)
        except InvalidNameRecord as exc:
            log.info("name record from %s refused: %s", conn.remote_peer, exc)
            return [Error(rid, ErrorCode.MALFORMED, _short(str(exc)))]
        except _Refused as exc:
            log.info("name record from %s refused: %s", conn.remote_peer, exc)
            return [Error(rid, ErrorCode.REFUSED, _short(str(exc)))]
        except StoreError as exc:
            log.warning("cannot store a name record from %s: %s", conn.remote_peer, exc)
            return [Error(rid, ErrorCode.INTERNAL, "cannot store the record")]
        if stored:
            log.info("name record from %s: %s", conn.remote_peer, label)
        return [NameAck(rid, stored)]

    # -- sending -----------------------------------------------------------------

    async def _send(self, conn: PeerConnection, records: list[NameRecord]) -> None:
        async with self._send_limit:
            for record in records:
                data = record.encode()
                try:
                    replies = await conn.request(lambda rid: NamePublish(rid, data))
                except (P2PError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    log.info("could not offer %s to %s: %s", _label(record), conn.remote_peer, exc)
                    return
                if not (replies and isinstance(replies[0], NameAck)):
                    log.info("%s answered a name record with %s", conn.remote_peer, replies)

    def _own_records(self, limit: int) -> list[NameRecord]:
        return self.node.repo.names.own_records(str(self.node.peer_id), limit)

    async def _greet_new_connections(self, nursery: trio.Nursery) -> None:
        node = self.node
        live: dict[object, PeerConnection] = {}
        for peer in node.connected_peers():
            conn = node.connection_to(peer)
            if conn is not None:
                live[peer] = conn
        new = [c for p, c in live.items() if self._greeted.get(p) is not c]
        self._greeted = live
        if not new:
            return
        records = await trio.to_thread.run_sync(self._own_records, L.MAX_NAMES_ON_CONNECT)
        if records:
            for conn in new:
                nursery.start_soon(self._send, conn, records)

    async def push(self, record: NameRecord) -> int:
        """Offer `record` to every connected peer now (in the background); how many."""
        if self._nursery is None:
            return 0
        count = 0
        for peer in self.node.connected_peers():
            conn = self.node.connection_to(peer)
            if conn is not None:
                self._nursery.start_soon(self._send, conn, [record])
                count += 1
        return count

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                while True:
                    try:
                        await self._greet_new_connections(nursery)
                    except StoreError as exc:
                        log.warning("cannot read the name book: %s", exc)
                    await trio.sleep(GREET_INTERVAL_S)
            finally:
                self._nursery = None

    # -- control API -----------------------------------------------------------------

    async def api_import(self, p: dict[str, Any]) -> Any:
        """POST /v1/hf/import {path, repo, revision, type}: import, sign, store, spread."""
        path = Path(param(p, "path"))
        if not path.is_absolute():
            raise ApiError(f"path must be an absolute path, not {str(path)!r}")
        name = validate_repo(param(p, "repo"))
        revision = validate_revision(param(p, "revision", str, "main"))
        kind = param(p, "type", str, None)
        node = self.node

        def work() -> NameRecord:
            chunker = chunker_for(DEFAULT_CHUNKER, node.repo.default_profile(), path) if path.exists() else None
            return publish_folder(node.repo, node.identity, path, name, kind=kind, revision=revision,
                                  chunker=chunker)

        async with node.store_guard.shared():
            record = await trio.to_thread.run_sync(work)
        pushed = await self.push(record)
        log.info("published %s (seq %d) to %d peer(s)", _label(record), record.seq, pushed)
        return {**record_json(record), "type": record.kind, "seq": record.seq, "publisher": record.publisher}

    async def api_ls(self, p: dict[str, Any]) -> Any:
        """GET /v1/hf/ls: the trusted record of every known name."""
        return [listing_json(r) for r in await trio.to_thread.run_sync(self.repos)]


class _Refused(P2PError):
    """A well-formed record this node will not take (forged, relayed, over quota)."""


def _short(text: str) -> str:
    return text[: L.MAX_ERROR_MESSAGE_BYTES // 4]


def _label(record: NameRecord) -> str:
    return f"{record.kind} {record.repo}@{record.revision} -> {record.cid}"


def resolver_of(node: "Node") -> NameResolver:
    """The names service of `node` (the gateway's one entry point); P2PError if it has none."""
    for service in node.services:
        if isinstance(service, NameService):
            return service
    raise P2PError("this node has no names service")


def install(node: "Node") -> NameService:
    """Register the names service on `node`."""
    service = NameService()
    node.register(service)
    return service
