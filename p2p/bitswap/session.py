"""The fetching side of Bitswap, sans-IO: get a set of blocks from a set of peers.

A `Session` wants some CIDs from some peers. The driver passes it what the
peers send (`receive_message`), the passing of time (`tick`) and lost peers
(`peer_gone`), and carries out the events it returns (`next_events`):
`SendWants` (a message for a peer), `BlockReceived` (a verified block),
`PeerBad` (a peer sent a block that is not what its CID says: drop it) and,
once, `Done` or `Failed` (the CIDs no peer could give).

How one CID is fetched (boxo's session, simplified):

- With several peers, it sends want-have (sendDontHave) to all of them and
  want-block to the first that answers HAVE; with one peer, want-block
  (sendDontHave) to it directly. Bitswap 1.1.0 peers (no presences) are
  asked want-block only when no 1.2.0 peer has the block.
- DONT_HAVE from the peer asked for the block moves the want-block to the
  next peer that said HAVE (fewest timeouts first).
- A want unanswered for `timeout_s` is sent again, at most `max_attempts`
  times per peer; after that the peer counts as not having the block.
- A block is checked against its CID (sha2-256 of the data, or identity)
  before it is reported; a mismatch marks the sender bad for the whole
  session. Once a block is in (or the CID has failed), every peer asked
  is sent a cancel, so no remote ledger keeps a stale want.
- The CID has failed when every peer said DONT_HAVE, timed out too often,
  went away or was bad.

At most `max_in_flight` CIDs are wanted at once, in the order given; the
rest wait their turn. Blocks nobody asked for are ignored (and counted).

Not here: streams, timers (the driver calls `tick`), storing blocks, or
walking a DAG (the driver starts new sessions for the links it finds).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import Final, Hashable, Iterable, Union

from shoal.p2p.bitswap.message import (
    MAX_WANTLIST_ENTRIES,
    BlockPayload,
    Entry,
    Message,
    PresenceType,
    WantType,
    Wantlist,
    block_cid,
    check_cid,
)

__all__ = [
    "Session", "SendWants", "BlockReceived", "PeerBad", "Done", "Failed", "Event",
    "DEFAULT_TIMEOUT_S", "DEFAULT_MAX_ATTEMPTS", "DEFAULT_MAX_IN_FLIGHT",
]

DEFAULT_TIMEOUT_S: Final = 15.0
"""A want unanswered this long is sent again. HAVE/DONT_HAVE come back in
one round trip; a 2 MiB block on a ~4 Mbit/s link takes ~4 s."""

DEFAULT_MAX_ATTEMPTS: Final = 3
DEFAULT_MAX_IN_FLIGHT: Final = 64
"""CIDs wanted at once: enough to fill a link of 1 MiB blocks, few enough
that one message of wants (and of cancels) stays small."""

_INT32_MAX: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class SendWants:
    """Send `message` (wantlist entries: wants and cancels) to `peer`."""

    peer: Hashable
    message: Message


@dataclass(frozen=True, slots=True)
class BlockReceived:
    """A wanted block, verified against its CID."""

    cid: bytes
    data: bytes = field(repr=False)
    peer: Hashable


@dataclass(frozen=True, slots=True)
class PeerBad:
    """`peer` sent a block whose bytes do not match its CID; it is no longer asked."""

    peer: Hashable
    reason: str


@dataclass(frozen=True, slots=True)
class Done:
    """Every wanted block was received."""


@dataclass(frozen=True, slots=True)
class Failed:
    """The session ended with these CIDs missing (in the order they were wanted)."""

    missing: tuple[bytes, ...]


Event = Union[SendWants, BlockReceived, PeerBad, Done, Failed]


class _Ask(Enum):
    IDLE = "idle"        # not asked (a 1.1.0 peer kept in reserve)
    ASKED = "asked"      # want-have sent, no answer yet
    HAVE = "have"        # said HAVE
    BLOCK = "block"      # want-block sent, block not in yet
    NO = "no"            # DONT_HAVE, too many timeouts, gone or bad


@dataclass(slots=True)
class _Want:
    priority: int
    ask: dict[Hashable, _Ask] = field(default_factory=dict)
    deadline: dict[Hashable, float] = field(default_factory=dict)
    attempts: dict[Hashable, int] = field(default_factory=dict)


class Session:
    """Fetch `cids` from `peers`; see the module docstring for the rules."""

    def __init__(
        self,
        cids: Iterable[bytes],
        peers: Iterable[Hashable],
        *,
        now: float,
        legacy_peers: Iterable[Hashable] = (),
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        """`legacy_peers` (a subset of `peers`) speak Bitswap 1.1.0: no want-have, no presences.

        CIDs are binary; a malformed one raises BitswapError here.
        """
        if not 0 < max_in_flight <= MAX_WANTLIST_ENTRIES:
            raise ValueError("max_in_flight out of range")
        if timeout_s <= 0 or max_attempts < 1:
            raise ValueError("timeout_s and max_attempts must be positive")
        self._order = list(dict.fromkeys(check_cid(c) for c in cids))
        self._peers = list(dict.fromkeys(peers))
        self._legacy = set(legacy_peers) & set(self._peers)
        self._gone: set[Hashable] = set()
        self._bad: set[Hashable] = set()
        self._timeout = timeout_s
        self._max_attempts = max_attempts
        self._max_in_flight = max_in_flight
        self._queue = deque(self._order)
        self._active: dict[bytes, _Want] = {}
        self._received: set[bytes] = set()
        self._failed: set[bytes] = set()
        self._out: dict[Hashable, list[Entry]] = {}
        self._events: list[Event] = []
        self._finished = False
        self.unwanted_blocks = 0
        """Blocks received that no active want asked for (duplicates, strays)."""
        self._fill(now)

    # -- state ---------------------------------------------------------------

    @property
    def finished(self) -> bool:
        """True once Done or Failed has been emitted."""
        return self._finished

    def wanted(self) -> list[bytes]:
        """CIDs asked for right now."""
        return list(self._active)

    def _live(self) -> list[Hashable]:
        return [p for p in self._peers if p not in self._gone and p not in self._bad]

    def _send(self, peer: Hashable, entry: Entry) -> None:
        self._out.setdefault(peer, []).append(entry)

    def _want_entry(self, cid: bytes, peer: Hashable, want_type: WantType) -> Entry:
        legacy = peer in self._legacy
        return Entry(cid, self._active[cid].priority, False,
                     WantType.BLOCK if legacy else want_type, not legacy)

    # -- activation and progress -------------------------------------------

    def _fill(self, now: float) -> None:
        """Start wanting queued CIDs up to the in-flight bound, then check for the end."""
        while self._queue and len(self._active) < self._max_in_flight:
            cid = self._queue.popleft()
            index = len(self._order) - len(self._queue) - 1
            want = self._active[cid] = _Want(priority=max(1, _INT32_MAX - index))
            live = self._live()
            for peer in live:
                if len(live) == 1 or peer in self._legacy:
                    want.ask[peer] = _Ask.IDLE
                else:
                    want.ask[peer] = _Ask.ASKED
                    want.deadline[peer] = now + self._timeout
                    want.attempts[peer] = 0
                    self._send(peer, self._want_entry(cid, peer, WantType.HAVE))
            self._advance(cid, now)
        if not self._queue and not self._active and not self._finished:
            self._finished = True
            missing = tuple(c for c in self._order if c not in self._received)
            self._events.append(Failed(missing) if missing else Done())

    def _advance(self, cid: bytes, now: float) -> None:
        """Make sure the CID has a want-block out, is waiting for answers, or has failed."""
        want = self._active.get(cid)
        if want is None:
            return
        asks = want.ask
        if any(a is _Ask.BLOCK for a in asks.values()):
            return
        haves = [p for p, a in asks.items() if a is _Ask.HAVE]
        if haves:
            self._ask_block(cid, want, min(haves, key=lambda p: want.attempts.get(p, 0)), now)
            return
        if any(a is _Ask.ASKED for a in asks.values()):
            return
        idle = [p for p, a in asks.items() if a is _Ask.IDLE]
        if idle:
            self._ask_block(cid, want, idle[0], now)
            return
        del self._active[cid]
        self._failed.add(cid)
        self._cancel(cid, want, None)

    def _cancel(self, cid: bytes, want: _Want, sender: Hashable | None) -> None:
        """Cancel `cid` at every reachable peer that was asked, so no ledger keeps a stale want."""
        for peer, ask in want.ask.items():
            if peer != sender and ask is not _Ask.IDLE and peer not in self._gone and peer not in self._bad:
                self._send(peer, Entry(cid, want.priority, cancel=True))

    def _ask_block(self, cid: bytes, want: _Want, peer: Hashable, now: float) -> None:
        want.ask[peer] = _Ask.BLOCK
        want.deadline[peer] = now + self._timeout
        want.attempts.setdefault(peer, 0)
        self._send(peer, self._want_entry(cid, peer, WantType.BLOCK))

    def _drop_peer(self, peer: Hashable, now: float) -> None:
        """`peer` answers nothing more in this session: every want moves on without it."""
        for cid in list(self._active):
            want = self._active[cid]
            if peer in want.ask:
                want.ask[peer] = _Ask.NO
                self._advance(cid, now)
        self._fill(now)

    # -- input -----------------------------------------------------------------

    def receive_message(self, peer: Hashable, message: Message, now: float) -> None:
        """Blocks and presences from `peer` (its own wantlist is the engine's business)."""
        if peer not in self._peers or peer in self._gone or peer in self._bad:
            return
        for block in message.blocks:
            self._block(peer, block, now)
            if peer in self._bad:
                return
        for presence in message.presences:
            want = self._active.get(presence.cid)
            if want is None or want.ask.get(peer) in (None, _Ask.NO):
                continue
            if presence.type is PresenceType.DONT_HAVE:
                want.ask[peer] = _Ask.NO
            elif want.ask[peer] is _Ask.ASKED:
                # An answer: its earlier silences no longer count against it. Only
                # here, so unsolicited HAVEs cannot keep a session alive forever.
                want.ask[peer] = _Ask.HAVE
                want.attempts[peer] = 0
            elif want.ask[peer] is _Ask.IDLE:
                want.ask[peer] = _Ask.HAVE
            self._advance(presence.cid, now)
        self._fill(now)

    def _block(self, peer: Hashable, block: BlockPayload, now: float) -> None:
        want = self._active.get(block.cid)
        if want is None:
            self.unwanted_blocks += 1
            return
        if not block_cid(block.cid, block.data):
            self._bad.add(peer)
            self._out.pop(peer, None)  # nothing more for it, not even what was queued
            self._events.append(PeerBad(peer, f"block for {block.cid.hex()} does not match its CID"))
            self._drop_peer(peer, now)
            return
        del self._active[block.cid]
        self._received.add(block.cid)
        self._events.append(BlockReceived(block.cid, block.data, peer))
        self._cancel(block.cid, want, peer)

    def peer_gone(self, peer: Hashable, now: float) -> None:
        """The connection to `peer` closed: stop counting on it."""
        if peer in self._peers and peer not in self._gone:
            self._gone.add(peer)
            self._out.pop(peer, None)
            self._drop_peer(peer, now)

    def tick(self, now: float) -> None:
        """Time passed: send unanswered wants again, give up on peers that never answer."""
        for cid in list(self._active):
            want = self._active[cid]
            for peer, ask in list(want.ask.items()):
                if ask not in (_Ask.ASKED, _Ask.BLOCK) or want.deadline[peer] > now:
                    continue
                want.attempts[peer] += 1
                if want.attempts[peer] >= self._max_attempts:
                    want.ask[peer] = _Ask.NO  # (cancelled with the others when the CID ends)
                elif ask is _Ask.BLOCK and any(a is _Ask.HAVE for a in want.ask.values()):
                    # Another peer has it: let it try, keep this one as a fallback.
                    want.ask[peer] = _Ask.HAVE
                    self._send(peer, Entry(cid, want.priority, cancel=True))
                else:
                    want.deadline[peer] = now + self._timeout
                    self._send(peer, self._want_entry(
                        cid, peer, WantType.BLOCK if ask is _Ask.BLOCK else WantType.HAVE))
            self._advance(cid, now)
        self._fill(now)

    # -- output ----------------------------------------------------------------

    def next_events(self) -> list[Event]:
        """Messages to send (one per peer, split at the wantlist cap), then what happened."""
        out: list[Event] = []
        for peer, entries in self._out.items():
            for start in range(0, len(entries), MAX_WANTLIST_ENTRIES):
                chunk = tuple(entries[start:start + MAX_WANTLIST_ENTRIES])
                out.append(SendWants(peer, Message(wantlist=Wantlist(chunk))))
        self._out.clear()
        out.extend(self._events)
        self._events.clear()
        return out
