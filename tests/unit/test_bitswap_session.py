"""The Bitswap fetch session (shoal.p2p.bitswap.session), and a session fetching from engines.

The last tests wire sessions to real engines through the codec and the
framing (bytes in memory, no sockets): what one side encodes, the other
decodes, so the two state machines are checked against each other.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.p2p.bitswap.engine import Engine
from shoal.p2p.bitswap.message import (
    PROTOCOL_1_1_0,
    PROTOCOL_1_2_0,
    BitswapError,
    BlockPayload,
    BlockPresence,
    Entry,
    FrameReader,
    Message,
    PresenceType,
    WantType,
    frame,
)
from shoal.p2p.bitswap.session import (
    BlockReceived,
    Done,
    Event,
    Failed,
    PeerBad,
    SendWants,
    Session,
)
from shoal.store.ipld.cid import make_cid


def cid_of(data: bytes) -> bytes:
    return bytes(make_cid("raw", data))


def sent(events: list[Event]) -> dict[object, list[Entry]]:
    out: dict[object, list[Entry]] = {}
    for e in events:
        if isinstance(e, SendWants):
            out.setdefault(e.peer, []).extend(e.message.wantlist.entries)
    return out


def kinds(entries: list[Entry]) -> list[tuple[bytes, str]]:
    return [(e.cid, "cancel" if e.cancel else e.want_type.name.lower()) for e in entries]


def have(cid: bytes) -> Message:
    return Message(presences=(BlockPresence(cid, PresenceType.HAVE),))


def dont_have(cid: bytes) -> Message:
    return Message(presences=(BlockPresence(cid, PresenceType.DONT_HAVE),))


def block(data: bytes) -> Message:
    return Message(blocks=(BlockPayload(cid_of(data), data),))


X = b"the block"
CX = cid_of(X)


def test_several_peers_want_have_then_want_block_then_cancel() -> None:
    s = Session([CX], ["a", "b", "c"], now=0.0)
    first = sent(s.next_events())
    assert {p: kinds(e) for p, e in first.items()} == {p: [(CX, "have")] for p in "abc"}
    assert all(e.send_dont_have for es in first.values() for e in es)
    s.receive_message("b", have(CX), now=1.0)
    assert {p: kinds(e) for p, e in sent(s.next_events()).items()} == {"b": [(CX, "block")]}
    s.receive_message("a", have(CX), now=1.1)  # a backup, nothing sent
    assert s.next_events() == []
    s.receive_message("b", block(X), now=2.0)
    events = s.next_events()
    assert BlockReceived(CX, X, "b") in events
    assert {p: kinds(e) for p, e in sent(events).items()} == {"a": [(CX, "cancel")], "c": [(CX, "cancel")]}
    assert events[-1] == Done() and s.finished


def test_one_peer_gets_want_block_directly() -> None:
    s = Session([CX], ["only"], now=0.0)
    (entry,) = sent(s.next_events())["only"]
    assert entry.want_type is WantType.BLOCK and entry.send_dont_have and not entry.cancel


def test_dont_have_from_the_block_peer_moves_to_the_next_have() -> None:
    s = Session([CX], ["a", "b"], now=0.0)
    s.next_events()
    s.receive_message("a", have(CX), now=1.0)
    s.receive_message("b", have(CX), now=1.0)
    assert kinds(sent(s.next_events())["a"]) == [(CX, "block")]
    s.receive_message("a", dont_have(CX), now=2.0)
    assert {p: kinds(e) for p, e in sent(s.next_events()).items()} == {"b": [(CX, "block")]}
    s.receive_message("b", block(X), now=3.0)
    assert s.next_events()[-1] == Done()


def test_all_dont_have_fails_with_the_missing_cids_in_order() -> None:
    other = b"other"
    s = Session([CX, cid_of(other)], ["a", "b"], now=0.0)
    s.next_events()
    for peer in "ab":
        s.receive_message(peer, dont_have(CX), now=1.0)
    s.receive_message("a", have(cid_of(other)), now=1.0)
    assert not s.finished  # the other CID is still on its way
    s.receive_message("a", block(other), now=2.0)
    events = s.next_events()
    assert BlockReceived(cid_of(other), other, "a") in events
    assert events[-1] == Failed((CX,))


def test_a_block_that_does_not_match_its_cid_marks_the_peer_bad() -> None:
    s = Session([CX], ["evil", "good"], now=0.0)
    s.next_events()
    s.receive_message("evil", have(CX), now=1.0)
    s.receive_message("good", have(CX), now=1.0)
    s.next_events()
    forged = Message(blocks=(BlockPayload(CX, b"not the block"),))
    s.receive_message("evil", forged, now=2.0)
    events = s.next_events()
    assert [e for e in events if isinstance(e, PeerBad)][0].peer == "evil"
    assert not any(isinstance(e, BlockReceived) for e in events)
    assert kinds(sent(events)["good"]) == [(CX, "block")]
    s.receive_message("evil", block(X), now=2.5)  # a bad peer is not heard any more
    assert not any(isinstance(e, BlockReceived) for e in s.next_events())
    s.receive_message("good", block(X), now=3.0)
    events = s.next_events()
    assert BlockReceived(CX, X, "good") in events and events[-1] == Done()


def test_unwanted_and_duplicate_blocks_are_ignored() -> None:
    s = Session([CX], ["a"], now=0.0)
    s.next_events()
    s.receive_message("a", block(b"stray"), now=1.0)
    s.receive_message("stranger", block(X), now=1.0)  # not in the session
    assert s.next_events() == [] and s.unwanted_blocks == 1
    s.receive_message("a", Message(blocks=(BlockPayload(CX, X), BlockPayload(CX, X))), now=2.0)
    assert [e for e in s.next_events() if isinstance(e, BlockReceived)] == [BlockReceived(CX, X, "a")]
    assert s.unwanted_blocks == 2


def test_timeouts_re_want_then_give_up() -> None:
    s = Session([CX], ["a", "b"], now=0.0, timeout_s=10.0, max_attempts=2)
    s.next_events()
    s.tick(5.0)
    assert s.next_events() == []
    s.tick(10.0)
    assert {p: kinds(e) for p, e in sent(s.next_events()).items()} == {p: [(CX, "have")] for p in "ab"}
    s.receive_message("a", have(CX), now=12.0)
    assert kinds(sent(s.next_events())["a"]) == [(CX, "block")]
    s.tick(20.0)  # b's second want-have times out: b is given up
    assert s.next_events() == []
    s.tick(22.0)  # a's want-block: sent again once...
    assert kinds(sent(s.next_events())["a"]) == [(CX, "block")]
    s.tick(32.0)  # ...then given up: nobody is left, and both are told to forget it
    events = s.next_events()
    assert {p: kinds(e) for p, e in sent(events).items()} == {p: [(CX, "cancel")] for p in "ab"}
    assert events[-1] == Failed((CX,))


def test_a_slow_block_peer_yields_to_another_that_has_it() -> None:
    s = Session([CX], ["a", "b"], now=0.0, timeout_s=10.0)
    s.next_events()
    s.receive_message("a", have(CX), now=1.0)
    s.receive_message("b", have(CX), now=1.0)
    s.next_events()
    s.tick(11.0)
    out = {p: kinds(e) for p, e in sent(s.next_events()).items()}
    assert out == {"a": [(CX, "cancel")], "b": [(CX, "block")]}


def test_in_flight_wants_are_bounded() -> None:
    blobs = [i.to_bytes(2, "big") for i in range(100)]
    s = Session([cid_of(b) for b in blobs], ["a"], now=0.0, max_in_flight=10)
    assert [c for c, _ in kinds(sent(s.next_events())["a"])] == [cid_of(b) for b in blobs[:10]]
    assert len(s.wanted()) == 10
    s.receive_message("a", block(blobs[3]), now=1.0)
    assert [c for c, _ in kinds(sent(s.next_events())["a"])] == [cid_of(blobs[10])]
    assert len(s.wanted()) == 10


def test_legacy_peers_are_the_fallback() -> None:
    s = Session([CX], ["new", "old"], now=0.0, legacy_peers=["old"])
    assert {p: kinds(e) for p, e in sent(s.next_events()).items()} == {"new": [(CX, "have")]}
    s.receive_message("new", dont_have(CX), now=1.0)
    (entry,) = sent(s.next_events())["old"]
    assert entry.want_type is WantType.BLOCK and not entry.send_dont_have
    s.receive_message("old", block(X), now=2.0)
    assert s.next_events()[-1] == Done()


def test_peer_gone_and_no_peers() -> None:
    s = Session([CX], ["a", "b"], now=0.0)
    s.next_events()
    s.peer_gone("a", now=1.0)
    s.receive_message("b", have(CX), now=1.0)
    assert {p: kinds(e) for p, e in sent(s.next_events()).items()} == {"b": [(CX, "block")]}
    s.peer_gone("b", now=2.0)
    assert s.next_events() == [Failed((CX,))]
    assert Session([CX], [], now=0.0).next_events() == [Failed((CX,))]
    assert Session([], ["a"], now=0.0).next_events() == [Done()]
    with pytest.raises(BitswapError):
        Session([b"\x01"], ["a"], now=0.0)


# -- sessions against engines, through the codec ----------------------------------


class Net:
    """Engines (one store each) and one session, exchanging framed bytes in memory."""

    def __init__(self, stores: dict[str, dict[bytes, bytes]], legacy: frozenset[str] = frozenset(),
                 *, corrupt: frozenset[str] = frozenset()) -> None:
        self.stores = stores
        self.corrupt = corrupt
        self.engines: dict[str, Engine] = {}
        self.to_engine = {name: FrameReader() for name in stores}
        self.to_session = {name: FrameReader() for name in stores}
        for name, blocks in stores.items():
            engine = Engine(lambda c, b=blocks: c in b, lambda c, b=blocks: len(b[c]) if c in b else None,
                            max_message_bytes=64 * 1024)
            engine.add_peer("me", PROTOCOL_1_1_0 if name in legacy else PROTOCOL_1_2_0)
            self.engines[name] = engine

    def run(self, session: Session, rng: random.Random, max_rounds: int = 200) -> list[Event]:
        done: list[Event] = []
        now = 0.0
        for _ in range(max_rounds):
            events = session.next_events()
            for event in events:
                if isinstance(event, SendWants):
                    wire = frame(event.message)
                    for message in self._deliver(self.to_engine[str(event.peer)], wire, rng):
                        self.engines[str(event.peer)].receive_message("me", message)
                else:
                    done.append(event)
            for name, engine in self.engines.items():
                for out in engine.poll():
                    blocks = self.stores[name]
                    payloads = [BlockPayload(c, blocks[c] if name not in self.corrupt else blocks[c] + b"?")
                                for c in out.block_cids]
                    wire = frame(out.build(payloads))
                    engine.message_sent(out)
                    for message in self._deliver(self.to_session[name], wire, rng):
                        session.receive_message(name, message, now)
            if session.finished and not events:
                return done + session.next_events()
            now += 1.0
            session.tick(now)
        raise AssertionError("session did not finish")

    @staticmethod
    def _deliver(reader: FrameReader, wire: bytes, rng: random.Random) -> list[Message]:
        out: list[Message] = []
        pos = 0
        while pos < len(wire):
            step = rng.randint(1, 4096)
            out += reader.feed(wire[pos:pos + step])
            pos += step
        return out


def test_a_session_fetches_from_engines_over_the_codec() -> None:
    rng = random.Random(7)
    blobs = [rng.randbytes(rng.randint(0, 20_000)) for _ in range(120)]
    cids = [cid_of(b) for b in blobs]
    everything = dict(zip(cids, blobs))
    stores = {
        "full": dict(everything),
        "half": {c: everything[c] for c in cids[::2]},
        "empty": {},
        "old": {c: everything[c] for c in cids[1::2]},
    }
    net = Net(stores, legacy=frozenset({"old"}))
    session = Session(cids, list(stores), now=0.0, legacy_peers=["old"], max_in_flight=16)
    events = net.run(session, rng)
    got = {e.cid: e.data for e in events if isinstance(e, BlockReceived)}
    assert got == everything
    assert events[-1] == Done()


def test_a_session_fails_cleanly_on_what_no_engine_has_and_drops_liars() -> None:
    rng = random.Random(8)
    blobs = [rng.randbytes(100) for _ in range(10)]
    cids = [cid_of(b) for b in blobs]
    missing = cid_of(b"nobody has this")
    stores = {"liar": dict(zip(cids, blobs)), "honest": dict(zip(cids[:5], blobs[:5]))}
    net = Net(stores, corrupt=frozenset({"liar"}))
    session = Session(cids + [missing], list(stores), now=0.0)
    events = net.run(session, rng)
    got = {e.cid for e in events if isinstance(e, BlockReceived)}
    assert got == set(cids[:5])
    # The liar's corrupt blocks decode under other CIDs: they are strays, never delivered.
    assert all(e.peer == "honest" for e in events if isinstance(e, BlockReceived))
    assert events[-1] == Failed(tuple(cids[5:]) + (missing,))


# -- any sequence of inputs --------------------------------------------------------

BLOBS = [b"block %d" % i for i in range(5)]
PEERS = ["a", "b", "c"]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_sequence_of_answers_ends_consistently(data: st.DataObject) -> None:
    """Random presences, blocks (right, forged, stray), ticks and departures, from any peer.

    Whatever happens: only verified blocks are reported, each once; nothing is
    sent to a peer after it left or lied; ticks alone always end the session;
    the end lists exactly the CIDs not received.
    """
    wanted = BLOBS[: data.draw(st.integers(1, len(BLOBS)))]
    cids = [cid_of(b) for b in wanted]
    legacy = data.draw(st.sets(st.sampled_from(PEERS), max_size=1))
    s = Session(cids, PEERS, now=0.0, legacy_peers=legacy, timeout_s=1.0, max_attempts=2,
                max_in_flight=data.draw(st.integers(1, 3)))
    now = 0.0
    received: dict[bytes, bytes] = {}
    silenced: set[str] = set()
    ends: list[Event] = []

    def drain() -> None:
        for event in s.next_events():
            if isinstance(event, SendWants):
                assert event.peer not in silenced
            elif isinstance(event, BlockReceived):
                assert event.cid not in received and cid_of(event.data) == event.cid
                received[event.cid] = event.data
            elif isinstance(event, PeerBad):
                silenced.add(str(event.peer))
            else:
                ends.append(event)

    drain()
    for _ in range(data.draw(st.integers(0, 40))):
        peer = data.draw(st.sampled_from(PEERS))
        i = data.draw(st.integers(0, len(wanted) - 1))
        action = data.draw(st.sampled_from(["have", "dont", "block", "forged", "stray", "tick", "gone"]))
        if action == "have":
            s.receive_message(peer, have(cids[i]), now)
        elif action == "dont":
            s.receive_message(peer, dont_have(cids[i]), now)
        elif action == "block":
            s.receive_message(peer, block(wanted[i]), now)
        elif action == "forged":
            s.receive_message(peer, Message(blocks=(BlockPayload(cids[i], b"forged"),)), now)
        elif action == "stray":
            s.receive_message(peer, block(b"nobody asked"), now)
        elif action == "tick":
            now += data.draw(st.floats(0.0, 3.0))
            s.tick(now)
        else:
            s.peer_gone(peer, now)
            silenced.add(peer)
        drain()
    for _ in range(20):  # with no more answers, timeouts alone finish it
        if s.finished:
            break
        now += 1.0
        s.tick(now)
        drain()
    assert s.finished and len(ends) == 1
    missing = [c for c in cids if c not in received]
    assert ends[0] == (Failed(tuple(missing)) if missing else Done())
    assert s.next_events() == []
