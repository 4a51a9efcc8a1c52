"""The Bitswap serving engine (shoal.p2p.bitswap.engine): ledgers, answers, budget, bounds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.p2p.bitswap.engine import Engine, SendMessage
from shoal.p2p.bitswap.message import (
    MAX_MESSAGE_BYTES,
    PROTOCOL_1_1_0,
    PROTOCOL_1_2_0,
    BlockPayload,
    BlockPresence,
    Entry,
    Message,
    PresenceType,
    WantType,
    Wantlist,
    decode,
    encode,
)
from shoal.p2p.errors import LocalProtocolError
from shoal.store.ipld.cid import make_cid


class Store:
    """A dict blockstore, with the two callbacks the engine takes."""

    def __init__(self, *blobs: bytes) -> None:
        self.blocks = {bytes(make_cid("raw", b)): b for b in blobs}

    def add(self, data: bytes) -> bytes:
        cid = bytes(make_cid("raw", data))
        self.blocks[cid] = data
        return cid

    def has(self, cid: bytes) -> bool:
        return cid in self.blocks

    def size(self, cid: bytes) -> int | None:
        data = self.blocks.get(cid)
        return None if data is None else len(data)

    def fill(self, event: SendMessage) -> Message:
        return event.build([BlockPayload(c, self.blocks[c]) for c in event.block_cids])


def cid_of(data: bytes) -> bytes:
    return bytes(make_cid("raw", data))


def wants(*entries: Entry, full: bool = False) -> Message:
    return Message(Wantlist(tuple(entries), full))


def presences(events: list[SendMessage]) -> list[tuple[bytes, PresenceType]]:
    return [(p.cid, p.type) for e in events for p in e.message.presences]


def block_cids(events: list[SendMessage]) -> list[bytes]:
    return [c for e in events for c in e.block_cids]


def engine_for(store: Store, **kw: int) -> Engine:
    engine = Engine(store.has, store.size, **kw)
    engine.add_peer("p", PROTOCOL_1_2_0)
    return engine


def test_want_have_is_answered_have_or_dont_have() -> None:
    store = Store(b"here")
    engine = engine_for(store)
    here, gone, quiet = cid_of(b"here"), cid_of(b"gone"), cid_of(b"quiet")
    engine.receive_message("p", wants(Entry(here, 3, want_type=WantType.HAVE, send_dont_have=True),
                                      Entry(gone, 2, want_type=WantType.HAVE, send_dont_have=True),
                                      Entry(quiet, 1, want_type=WantType.HAVE)))
    out = engine.poll()
    assert presences(out) == [(here, PresenceType.HAVE), (gone, PresenceType.DONT_HAVE)]
    assert block_cids(out) == []
    assert engine.poll() == []  # answered once
    # HAVE sent: that want is done; the unanswered ones wait for the block.
    assert engine.ledger_size("p") == 2
    store.add(b"quiet")
    engine.blocks_added([quiet])
    assert presences(engine.poll()) == [(quiet, PresenceType.HAVE)]


def test_want_block_sends_the_block_or_dont_have() -> None:
    store = Store(b"block one")
    engine = engine_for(store)
    one, missing = cid_of(b"block one"), cid_of(b"missing")
    engine.receive_message("p", wants(Entry(one, 2), Entry(missing, 1, send_dont_have=True)))
    (event,) = engine.poll()
    assert event.block_cids == (one,) and event.reserved == len(b"block one")
    assert presences([event]) == [(missing, PresenceType.DONT_HAVE)]
    wire = decode(encode(store.fill(event)))
    assert wire.blocks == (BlockPayload(one, b"block one"),)
    assert engine.in_flight("p") == 9
    engine.message_sent(event)
    assert engine.in_flight("p") == 0
    assert engine.ledger_size("p") == 1  # the block's want is done, the missing one waits
    store.add(b"missing")
    engine.blocks_added([missing])
    assert block_cids(engine.poll()) == [missing]


def test_priority_orders_the_answers() -> None:
    store = Store(b"a", b"b", b"c")
    engine = engine_for(store)
    engine.receive_message("p", wants(Entry(cid_of(b"a"), 1), Entry(cid_of(b"b"), 9), Entry(cid_of(b"c"), 5)))
    assert block_cids(engine.poll()) == [cid_of(b"b"), cid_of(b"c"), cid_of(b"a")]


def test_bitswap_1_1_0_peers_get_blocks_and_never_presences() -> None:
    store = Store(b"x")
    engine = Engine(store.has, store.size)
    engine.add_peer("old", PROTOCOL_1_1_0)
    x, y = cid_of(b"x"), cid_of(b"y")
    engine.receive_message("old", wants(Entry(x, want_type=WantType.HAVE, send_dont_have=True),
                                        Entry(y, send_dont_have=True)))
    out = engine.poll()
    assert block_cids(out) == [x]  # a want-have from a 1.1.0 peer is a want-block
    assert presences(out) == []
    assert engine.ledger_size("old") == 1  # y waits silently


def test_cancel_and_full_wantlist() -> None:
    store = Store()
    engine = engine_for(store)
    a, b, c = cid_of(b"a"), cid_of(b"b"), cid_of(b"c")
    engine.receive_message("p", wants(Entry(a), Entry(b), Entry(c)))
    engine.receive_message("p", wants(Entry(a, cancel=True)))
    assert engine.ledger_size("p") == 2
    engine.receive_message("p", wants(Entry(c, send_dont_have=True), full=True))
    assert engine.ledger_size("p") == 1 and engine.total_entries == 1
    assert presences(engine.poll()) == [(c, PresenceType.DONT_HAVE)]
    engine.receive_message("p", wants(full=True))
    assert engine.ledger_size("p") == 0 and engine.total_entries == 0


def test_want_have_never_weakens_a_want_block() -> None:
    store = Store(b"x")
    engine = engine_for(store)
    x = cid_of(b"x")
    engine.receive_message("p", wants(Entry(x), Entry(x, want_type=WantType.HAVE)))
    assert block_cids(engine.poll()) == [x]


def test_send_budget_holds_blocks_until_sent() -> None:
    blobs = [bytes([i]) * 1000 for i in range(3)]
    store = Store(*blobs)
    engine = engine_for(store, send_budget_bytes=2000)
    engine.receive_message("p", wants(*(Entry(cid_of(b), 10 - i) for i, b in enumerate(blobs))))
    first = engine.poll()
    assert block_cids(first) == [cid_of(blobs[0]), cid_of(blobs[1])]
    assert engine.in_flight("p") == 2000
    assert engine.poll() == []  # the third waits for room
    for event in first:
        engine.message_sent(event)
    assert block_cids(engine.poll()) == [cid_of(blobs[2])]


def test_one_block_bigger_than_the_budget_still_goes_alone() -> None:
    store = Store(b"z" * 5000)
    engine = engine_for(store, send_budget_bytes=1000)
    engine.receive_message("p", wants(Entry(cid_of(b"z" * 5000))))
    assert engine.in_flight("p") == 0
    assert len(block_cids(engine.poll())) == 1


def test_messages_are_split_under_the_size_cap() -> None:
    blobs = [bytes([i]) * 3000 for i in range(10)]
    store = Store(*blobs)
    cap = 8000
    engine = engine_for(store, max_message_bytes=cap)
    haves = [cid_of(i.to_bytes(2, 'big')) for i in range(300)]
    engine.receive_message("p", wants(*(Entry(cid_of(b)) for b in blobs),
                                      *(Entry(c, want_type=WantType.HAVE, send_dont_have=True) for c in haves)))
    out = engine.poll()
    assert len(out) > 3
    assert sorted(block_cids(out)) == sorted(cid_of(b) for b in blobs)
    assert len(presences(out)) == 300
    for event in out:
        assert len(encode(store.fill(event))) <= cap


def test_ledgers_are_bounded_per_peer_and_in_total() -> None:
    store = Store()
    engine = Engine(store.has, store.size, max_entries_per_peer=10, max_entries_total=15)
    engine.add_peer("a", PROTOCOL_1_2_0)
    engine.add_peer("b", PROTOCOL_1_2_0)
    engine.receive_message("a", wants(*(Entry(cid_of(bytes([i]))) for i in range(50))))
    assert engine.ledger_size("a") == 10 and engine.dropped_entries == 40
    engine.receive_message("b", wants(*(Entry(cid_of(bytes([100 + i]))) for i in range(50))))
    assert engine.ledger_size("b") == 5 and engine.total_entries == 15
    engine.remove_peer("a")
    assert engine.total_entries == 5


def test_block_unavailable_is_answered_dont_have() -> None:
    store = Store(b"vanishing")
    engine = engine_for(store)
    v = cid_of(b"vanishing")
    engine.receive_message("p", wants(Entry(v, send_dont_have=True)))
    (event,) = engine.poll()
    assert event.block_cids == (v,)
    engine.block_unavailable("p", v)  # the driver's read found it corrupt and quarantined it
    engine.message_sent(event)
    assert presences(engine.poll()) == [(v, PresenceType.DONT_HAVE)]
    assert engine.poll() == []


def test_unknown_peers_and_protocols_are_local_errors() -> None:
    engine = Engine(lambda c: False, lambda c: None)
    with pytest.raises(LocalProtocolError):
        engine.receive_message("nobody", Message())
    with pytest.raises(LocalProtocolError):
        engine.add_peer("p", "/ipfs/bitswap/1.0.0")
    with pytest.raises(ValueError):
        Engine(lambda c: False, lambda c: None, max_message_bytes=MAX_MESSAGE_BYTES + 1)


def test_wants_for_unverifiable_cids_are_dont_have() -> None:
    """A want may name a CID with another hash: answered DONT_HAVE, never served."""
    blake3 = bytes([0x01, 0x55, 0x1E, 0x20]) + bytes(32)
    engine = engine_for(Store())
    engine.receive_message("p", wants(Entry(blake3, send_dont_have=True)))
    assert presences(engine.poll()) == [(blake3, PresenceType.DONT_HAVE)]
    # Even a store that claims it cannot make the engine send an uncheckable block.
    liar = Engine(lambda c: True, lambda c: 10)
    liar.add_peer("p", PROTOCOL_1_2_0)
    liar.receive_message("p", wants(Entry(blake3, send_dont_have=True)))
    out = liar.poll()
    assert block_cids(out) == [] and presences(out) == [(blake3, PresenceType.DONT_HAVE)]
    assert BlockPresence(blake3, PresenceType.DONT_HAVE) in out[0].message.presences


# -- any sequence of wantlists ---------------------------------------------------------

POOL = [bytes([i]) * (100 * (i + 1)) for i in range(12)]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_sequence_keeps_the_bounds(data: st.DataObject) -> None:
    """Random wants, cancels, full lists, sends and departures from two peers (one 1.1.0).

    The ledgers never pass their caps and their sum is the total; a peer's
    in-flight bytes stay under the budget (or are one block); blocks go only
    to peers that want them and exist; 1.1.0 peers never get a presence.
    """
    store = Store(*POOL[::2])
    engine = Engine(store.has, store.size, send_budget_bytes=1500, max_entries_per_peer=6,
                    max_entries_total=9, max_message_bytes=1200)
    protocols = {"new": PROTOCOL_1_2_0, "old": PROTOCOL_1_1_0}
    for peer, protocol in protocols.items():
        engine.add_peer(peer, protocol)
    unsent: list[SendMessage] = []
    for _ in range(data.draw(st.integers(1, 40))):
        peer = data.draw(st.sampled_from(sorted(protocols)))
        action = data.draw(st.sampled_from(["want", "want", "cancel", "full", "poll", "sent", "gone"]))
        if action in ("want", "cancel", "full"):
            entries = tuple(
                Entry(cid_of(data.draw(st.sampled_from(POOL))), data.draw(st.integers(-3, 3)),
                      action == "cancel", data.draw(st.sampled_from(WantType)), data.draw(st.booleans()))
                for _ in range(data.draw(st.integers(0, 8))))
            engine.receive_message(peer, wants(*entries, full=action == "full"))
        elif action == "poll":
            for event in engine.poll(peer):
                assert len(encode(store.fill(event))) <= 1200 or len(event.block_cids) == 1
                assert all(store.has(c) for c in event.block_cids)
                if protocols[peer] == PROTOCOL_1_1_0:
                    assert event.message.presences == ()
                unsent.append(event)
        elif action == "sent" and unsent:
            engine.message_sent(unsent.pop(0))
        elif action == "gone":
            engine.remove_peer(peer)
            unsent = [e for e in unsent if e.peer != peer]
            engine.add_peer(peer, protocols[peer])
        sizes = [engine.ledger_size(p) for p in protocols]
        assert all(n <= 6 for n in sizes) and sum(sizes) == engine.total_entries <= 9
        for p in protocols:
            in_flight = engine.in_flight(p)
            assert in_flight <= 1500 or len([c for e in unsent if e.peer == p for c in e.block_cids]) == 1
