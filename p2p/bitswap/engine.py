"""The serving side of Bitswap, sans-IO: per-peer wantlists answered from the store.

A driver feeds the engine what peers send (`receive_message`) and asks it
what to send (`poll`). The engine keeps each peer's wantlist (its ledger),
decides the answers with two callbacks, `has(cid)` and `size(cid)`, and
returns `SendMessage` events: the presences to send and the CIDs of the
blocks to send. The driver reads those blocks from the repo (which verifies
each against its CID on read), attaches them with `SendMessage.build`,
writes the message, then calls `message_sent` so the bytes count as
delivered. A block that cannot be read after all is reported with
`block_unavailable` and answered DONT_HAVE on the next poll.

Rules, following boxo's decision engine:

- want-have: HAVE if the block is here, else DONT_HAVE when the entry asked
  for it (sendDontHave), else nothing. Answered HAVEs leave the ledger;
  unanswered wants stay, so a block that arrives later (`blocks_added`)
  still reaches the peers that want it.
- want-block: the block, or DONT_HAVE / nothing as above. A sent block
  leaves the ledger.
- Bitswap 1.1.0 peers have no presences: every want is a want-block and
  only blocks are ever sent to them.
- cancel removes the want; a `full` wantlist replaces the peer's ledger.

Bounds: a peer's ledger holds at most `max_entries_per_peer` wants and all
ledgers together `max_entries_total` (wants past either are dropped, and
counted); block bytes planned for a peer and not yet reported sent stay
under `send_budget_bytes` (one block may always go when nothing is in
flight, so a budget smaller than a block cannot wedge a peer); each message
stays under `max_message_bytes` and the per-message counts of `message`.

Not here: streams, reading blocks, who may connect (the private swarm key
is enforced below Bitswap, at the connection).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Final, Hashable, Iterable, Sequence

from shoal.p2p.bitswap.message import (
    MAX_BLOCKS_PER_MESSAGE,
    MAX_MESSAGE_BYTES,
    MAX_PRESENCES_PER_MESSAGE,
    PROTOCOL_1_1_0,
    PROTOCOL_1_2_0,
    BitswapError,
    BlockPayload,
    BlockPresence,
    Entry,
    Message,
    PresenceType,
    WantType,
    payload_size,
    presence_size,
)
from shoal.p2p.errors import LocalProtocolError
from shoal.p2p.wire import limits as L

__all__ = ["Engine", "SendMessage", "MAX_LEDGER_ENTRIES_PER_PEER", "MAX_LEDGER_ENTRIES_TOTAL"]

MAX_LEDGER_ENTRIES_PER_PEER: Final = 4096
"""Wants one peer may have open with us (boxo: 1024 queued per peer; a
full-wantlist Helia session over a big DAG asks for a few hundred at once)."""

MAX_LEDGER_ENTRIES_TOTAL: Final = 256 * 1024
"""Across all peers: ~60 MB worst case of Python objects, whatever the peer count."""

_MESSAGE_OVERHEAD: Final = 16
"""Room for pendingBytes and the like around the packed entries."""


@dataclass(frozen=True, slots=True)
class SendMessage:
    """Send `message` (presences) plus the blocks named in `block_cids` to `peer`.

    `reserved` is the send budget these blocks hold until `Engine.message_sent`.
    """

    peer: Hashable
    message: Message
    block_cids: tuple[bytes, ...] = ()
    reserved: int = 0

    def build(self, blocks: Sequence[BlockPayload]) -> Message:
        """The message to write, with the blocks the driver could read (a subset, in order)."""
        return Message(presences=self.message.presences, blocks=tuple(blocks))


@dataclass(slots=True)
class _Want:
    want_type: WantType
    send_dont_have: bool
    priority: int
    seq: int
    missing: bool = False  # the driver could not read it: answer as absent


@dataclass(slots=True)
class _Peer:
    legacy: bool  # Bitswap 1.1.0: blocks only, no presences
    ledger: dict[bytes, _Want] = field(default_factory=dict)
    pending: dict[bytes, None] = field(default_factory=dict)  # wants not answered yet
    in_flight: int = 0
    planned: dict[bytes, _Want] = field(default_factory=dict)  # blocks handed to the driver


class Engine:
    """Per-peer Bitswap ledgers and the decisions of what to answer."""

    def __init__(
        self,
        has: Callable[[bytes], bool],
        size: Callable[[bytes], int | None],
        *,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        send_budget_bytes: int = L.SEND_BUDGET_BYTES,
        max_entries_per_peer: int = MAX_LEDGER_ENTRIES_PER_PEER,
        max_entries_total: int = MAX_LEDGER_ENTRIES_TOTAL,
    ) -> None:
        """`has(cid)`: is the block here; `size(cid)`: its length, None if absent.

        Both take binary CIDs of any kind (answer False/None for CIDs the
        store cannot hold) and must not raise.
        """
        if not 0 < max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError("max_message_bytes out of range")
        self._has = has
        self._size = size
        self.max_message_bytes = max_message_bytes
        self.send_budget_bytes = send_budget_bytes
        self.max_entries_per_peer = max_entries_per_peer
        self.max_entries_total = max_entries_total
        self._peers: dict[Hashable, _Peer] = {}
        self._total = 0
        self._seq = itertools.count()
        self.dropped_entries = 0
        """Wants ignored because a ledger was full (a metric for the driver to log)."""

    # -- peers ---------------------------------------------------------------

    def add_peer(self, peer: Hashable, protocol: str) -> None:
        """A peer opened a Bitswap stream with `protocol` (1.2.0 or 1.1.0)."""
        if protocol not in (PROTOCOL_1_2_0, PROTOCOL_1_1_0):
            raise LocalProtocolError(f"not a Bitswap version this engine serves: {protocol}")
        if peer in self._peers:
            self._peers[peer].legacy = protocol == PROTOCOL_1_1_0
            return
        self._peers[peer] = _Peer(legacy=protocol == PROTOCOL_1_1_0)

    def remove_peer(self, peer: Hashable) -> None:
        """The peer is gone: forget its wants (its in-flight budget goes with it)."""
        state = self._peers.pop(peer, None)
        if state is not None:
            self._total -= len(state.ledger)

    def peers(self) -> list[Hashable]:
        return list(self._peers)

    def is_legacy(self, peer: Hashable) -> bool:
        """True if the peer is served as Bitswap 1.1.0 (blocks only, no presences)."""
        return self._state(peer).legacy

    def ledger_size(self, peer: Hashable) -> int:
        """Wants the peer has open with us."""
        return len(self._state(peer).ledger)

    def in_flight(self, peer: Hashable) -> int:
        """Block bytes planned for the peer and not yet reported sent."""
        return self._state(peer).in_flight

    @property
    def total_entries(self) -> int:
        return self._total

    def _state(self, peer: Hashable) -> _Peer:
        try:
            return self._peers[peer]
        except KeyError:
            raise LocalProtocolError(f"peer {peer!r} was not added to the engine") from None

    # -- input -----------------------------------------------------------------

    def receive_message(self, peer: Hashable, message: Message) -> None:
        """Apply the wantlist of a message from `peer` (its blocks and presences are not ours)."""
        state = self._state(peer)
        wantlist = message.wantlist
        if wantlist.full:
            keep = {e.cid for e in wantlist.entries if not e.cancel}
            for cid in [c for c in state.ledger if c not in keep]:
                self._drop(state, cid)
        for entry in wantlist.entries:
            if entry.cancel:
                self._drop(state, entry.cid)
            else:
                self._want(state, entry)

    def _want(self, state: _Peer, entry: Entry) -> None:
        want_type = WantType.BLOCK if state.legacy else entry.want_type
        send_dont_have = entry.send_dont_have and not state.legacy
        old = state.ledger.get(entry.cid)
        if old is not None:
            # A want-block is never weakened to a want-have (boxo's rule); the
            # same want again is answered again (the peer may have lost the answer).
            old.priority = entry.priority
            old.send_dont_have = send_dont_have
            if want_type == WantType.BLOCK or old.want_type == WantType.HAVE:
                old.want_type = want_type
                old.missing = False
                state.pending[entry.cid] = None
            return
        if len(state.ledger) >= self.max_entries_per_peer or self._total >= self.max_entries_total:
            self.dropped_entries += 1
            return
        state.ledger[entry.cid] = _Want(want_type, send_dont_have, entry.priority, next(self._seq))
        state.pending[entry.cid] = None
        self._total += 1

    def _drop(self, state: _Peer, cid: bytes) -> None:
        if state.ledger.pop(cid, None) is not None:
            self._total -= 1
        state.pending.pop(cid, None)

    def blocks_added(self, cids: Iterable[bytes]) -> None:
        """New blocks are in the store: wants waiting for them are answered on the next poll."""
        for cid in cids:
            for state in self._peers.values():
                want = state.ledger.get(cid)
                if want is not None:
                    want.missing = False
                    state.pending[cid] = None

    def message_sent(self, event: SendMessage) -> None:
        """The driver wrote `event`'s message (or gave up on it): its budget comes back."""
        state = self._peers.get(event.peer)
        if state is None:
            return
        state.in_flight = max(0, state.in_flight - event.reserved)
        for cid in event.block_cids:
            state.planned.pop(cid, None)

    def block_unavailable(self, peer: Hashable, cid: bytes) -> None:
        """A planned block could not be read (gone, or corrupt and quarantined).

        The want goes back to the ledger as absent: DONT_HAVE on the next poll
        if the peer asked for that, and the block if it comes back later.
        """
        state = self._peers.get(peer)
        if state is None:
            return
        want = state.planned.pop(cid, None)
        if want is None or cid in state.ledger:
            return
        if len(state.ledger) >= self.max_entries_per_peer or self._total >= self.max_entries_total:
            self.dropped_entries += 1
            return
        want.missing = True
        state.ledger[cid] = want
        state.pending[cid] = None
        self._total += 1

    # -- output ----------------------------------------------------------------

    def poll(self, peer: Hashable | None = None) -> list[SendMessage]:
        """What to send now, to `peer` or to every peer; wants left unanswered stay pending.

        Calls `has`/`size` for the pending wants, so a driver with a slow
        store runs this in a worker thread (one at a time).
        """
        peers = [peer] if peer is not None else list(self._peers)
        out: list[SendMessage] = []
        for key in peers:
            out.extend(self._poll_peer(key, self._state(key)))
        return out

    def _poll_peer(self, peer: Hashable, state: _Peer) -> list[SendMessage]:
        if not state.pending:
            return []
        order = sorted(state.pending, key=lambda c: (-state.ledger[c].priority, state.ledger[c].seq))
        out: list[SendMessage] = []
        presences: list[BlockPresence] = []
        blocks: list[bytes] = []
        reserved = 0
        used = _MESSAGE_OVERHEAD
        budget_full = False

        def flush() -> None:
            nonlocal presences, blocks, reserved, used
            if presences or blocks:
                out.append(SendMessage(peer, Message(presences=tuple(presences)), tuple(blocks), reserved))
                state.in_flight += reserved
            presences, blocks, reserved, used = [], [], 0, _MESSAGE_OVERHEAD

        for cid in order:
            want = state.ledger[cid]
            item: BlockPresence | None = None
            if want.want_type == WantType.BLOCK:
                size = None if want.missing else self._size(cid)
                if size is not None:
                    if budget_full or (state.in_flight + reserved > 0
                                       and state.in_flight + reserved + size > self.send_budget_bytes):
                        budget_full = True  # stays pending until message_sent frees room
                        continue
                    try:
                        cost = payload_size(cid, size)
                    except BitswapError:  # a CID whose blocks cannot travel (unknown hash)
                        cost = None
                    if cost is not None:
                        if blocks and (used + cost > self.max_message_bytes
                                       or len(blocks) >= MAX_BLOCKS_PER_MESSAGE):
                            flush()
                        blocks.append(cid)
                        reserved += size
                        used += cost
                        state.planned[cid] = want
                        self._answered(state, cid, remove=True)
                        continue
                item = self._absent(state, cid, want)
            elif not want.missing and self._has(cid):
                item = BlockPresence(cid, PresenceType.HAVE)
                self._answered(state, cid, remove=True)
            else:
                item = self._absent(state, cid, want)
            if item is not None:
                cost = presence_size(item)
                if presences and (used + cost > self.max_message_bytes
                                  or len(presences) >= MAX_PRESENCES_PER_MESSAGE):
                    flush()
                presences.append(item)
                used += cost
        flush()
        return out

    def _absent(self, state: _Peer, cid: bytes, want: _Want) -> BlockPresence | None:
        """Not here: DONT_HAVE if asked for (1.2.0 only); the want stays for `blocks_added`."""
        self._answered(state, cid, remove=False)
        if want.send_dont_have and not state.legacy:
            return BlockPresence(cid, PresenceType.DONT_HAVE)
        return None

    def _answered(self, state: _Peer, cid: bytes, *, remove: bool) -> None:
        state.pending.pop(cid, None)
        if remove:
            self._drop(state, cid)
