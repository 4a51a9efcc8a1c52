"""The Bitswap protobuf codec, CID prefixes and framing (shoal.p2p.bitswap.message).

Golden bytes are written by hand from message.proto (field number << 3 |
wire type, then the value), not produced by this codec, so a mistake in
field numbers, wire types or nesting fails here. Fuzzing checks that no
input raises anything but BitswapError; the bound tests check that caps
are enforced before data is copied.
"""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.p2p.bitswap import message as bm
from shoal.p2p.bitswap.message import (
    BitswapError,
    BlockPayload,
    BlockPresence,
    CidPrefix,
    Entry,
    FrameReader,
    Message,
    PresenceType,
    WantType,
    Wantlist,
    block_cid,
    cid_prefix,
    decode,
    encode,
    frame,
)
from shoal.p2p.errors import ProtocolError
from shoal.store.ipld import varint
from shoal.store.ipld.cid import make_cid

A_DIGEST = hashlib.sha256(b"a").digest()
CID_RAW_A = bytes.fromhex("01551220") + A_DIGEST  # CIDv1, raw, sha2-256("a")
CID_V0_A = bytes.fromhex("1220") + A_DIGEST


# -- golden bytes ----------------------------------------------------------------


def test_golden_wantlist_entry_by_hand() -> None:
    """Wantlist{entries: [Entry{block, priority 1, wantType Have, sendDontHave}], full}."""
    entry = (bytes([0x0A, 36]) + CID_RAW_A   # field 1 (block), LEN 36
             + bytes([0x10, 0x01])            # field 2 (priority), varint 1
             + bytes([0x20, 0x01])            # field 4 (wantType), Have = 1
             + bytes([0x28, 0x01]))           # field 5 (sendDontHave), true
    wantlist = bytes([0x0A, len(entry)]) + entry + bytes([0x10, 0x01])  # entries; full = true
    golden = bytes([0x0A, len(wantlist)]) + wantlist                    # Message.wantlist = 1
    msg = Message(Wantlist((Entry(CID_RAW_A, 1, False, WantType.HAVE, True),), full=True))
    assert encode(msg) == golden
    assert decode(golden) == msg
    assert golden[:2] == bytes([0x0A, 0x30])


def test_golden_payload_presence_pending_by_hand() -> None:
    data = b"hello"
    cid = bytes.fromhex("01551220") + hashlib.sha256(data).digest()
    block = bytes([0x0A, 4]) + bytes.fromhex("01551220") + bytes([0x12, 5]) + data  # prefix, data
    presence = bytes([0x0A, 36]) + CID_RAW_A + bytes([0x10, 0x01])                 # cid, DontHave
    golden = (bytes([0x1A, len(block)]) + block          # field 3 (payload)
              + bytes([0x22, len(presence)]) + presence  # field 4 (blockPresences)
              + bytes([0x28, 0x07]))                      # field 5 (pendingBytes) = 7
    msg = Message(blocks=(BlockPayload(cid, data),),
                  presences=(BlockPresence(CID_RAW_A, PresenceType.DONT_HAVE),), pending_bytes=7)
    assert encode(msg) == golden
    assert decode(golden) == msg


def test_proto3_defaults_are_left_out_and_negative_int32_is_ten_bytes() -> None:
    msg = Message(Wantlist((Entry(CID_RAW_A, 0, False, WantType.BLOCK, False),)))
    assert encode(msg) == bytes([0x0A, 40, 0x0A, 38, 0x0A, 36]) + CID_RAW_A
    negative = Message(Wantlist((Entry(CID_RAW_A, -1),)))
    raw = encode(negative)
    assert bytes([0x10]) + b"\xff" * 9 + b"\x01" in raw
    assert decode(raw) == negative
    assert encode(Message()) == b""
    assert decode(b"") == Message()


def test_bitswap_1_0_0_blocks_field_is_cidv0() -> None:
    data = b"\x0a\x02\x08\x01"  # any bytes: 1.0.0 blocks are addressed as CIDv0
    golden = bytes([0x12, len(data)]) + data
    (block,) = decode(golden).blocks
    assert block.cid == bytes.fromhex("1220") + hashlib.sha256(data).digest()
    assert block.data == data


def test_unknown_fields_are_skipped_in_every_message() -> None:
    unknown = (bytes([0x78, 0x05])                    # field 15 varint
               + bytes([0x7D]) + b"\x00" * 4           # field 15 fixed32
               + bytes([0x79]) + b"\x00" * 8           # field 15 fixed64
               + bytes([0x7A, 0x02, 0xAA, 0xBB]))      # field 15 LEN
    entry = bytes([0x0A, 36]) + CID_RAW_A + unknown
    wantlist = bytes([0x0A, len(entry)]) + entry + unknown
    presence = bytes([0x0A, 36]) + CID_RAW_A + unknown
    raw = unknown + bytes([0x0A, len(wantlist)]) + wantlist + bytes([0x22, len(presence)]) + presence
    msg = decode(raw)
    assert msg.wantlist.entries == (Entry(CID_RAW_A, 0),)
    assert msg.presences == (BlockPresence(CID_RAW_A, PresenceType.HAVE),)


@pytest.mark.parametrize("raw", [
    bytes([0x08, 0x01]),                        # wantlist (field 1) as a varint
    bytes([0x2A, 0x01, 0x00]),                  # pendingBytes (field 5) as LEN
    bytes([0x0A, 0x02, 0x08, 0x01]),            # entry list as varint inside the wantlist
    bytes([0x0B]),                              # field 1, start-group (wire type 3)
    bytes([0x0E]),                              # wire type 6
    bytes([0x00, 0x00]),                        # field number 0
    bytes([0x0A, 0x05, 0x00]),                  # LEN past the end
    bytes([0x28]) + b"\xff" * 11,               # varint longer than 10 bytes
    bytes([0x28]) + b"\xff" * 9 + b"\x02",      # varint over 64 bits
])
def test_malformed_is_refused(raw: bytes) -> None:
    with pytest.raises(BitswapError):
        decode(raw)


def test_a_full_empty_wantlist_is_valid() -> None:
    assert decode(bytes([0x0A, 0x02, 0x10, 0x01])).wantlist == Wantlist((), full=True)


def test_entry_without_cid_and_unknown_enum_are_refused() -> None:
    entry = bytes([0x10, 0x01])
    with pytest.raises(BitswapError, match="without a CID"):
        decode(bytes([0x0A, 4, 0x0A, 2]) + entry)
    bad_type = bytes([0x0A, 36]) + CID_RAW_A + bytes([0x20, 0x07])
    with pytest.raises(BitswapError, match="WantType"):
        decode(bytes([0x0A, len(bad_type) + 2, 0x0A, len(bad_type)]) + bad_type)


def test_two_wantlists_are_refused() -> None:
    one = bytes([0x0A, 0x02, 0x10, 0x01])
    with pytest.raises(BitswapError):
        decode(one + one)


# -- CIDs and prefixes ----------------------------------------------------------------


def test_prefix_rebuilds_the_cid_of_the_data() -> None:
    data = b"block bytes"
    for cid in (bytes(make_cid("raw", data)), bytes(make_cid("dag-pb", data, version=0)),
                bytes(make_cid("dag-pb", data))):
        prefix = cid_prefix(cid)
        assert CidPrefix.from_bytes(prefix.to_bytes()) == prefix
        assert prefix.cid_for(data) == cid
        assert block_cid(cid, data)
        assert not block_cid(cid, data + b"!")
    assert cid_prefix(CID_V0_A).to_bytes() == bytes([0x00, 0x70, 0x12, 0x20])


def test_identity_blocks_and_other_hashes() -> None:
    data = b"tiny"
    identity_cid = bytes([0x01, 0x55, 0x00, len(data)]) + data
    assert cid_prefix(identity_cid).cid_for(data) == identity_cid
    assert not block_cid(identity_cid, b"tinY")
    blake3 = bytes([0x01, 0x55, 0x1E, 0x20]) + bytes(32)
    cid_prefix(blake3)  # a want may name it...
    with pytest.raises(BitswapError, match="unsupported multihash"):
        cid_prefix(blake3).cid_for(b"x")  # ...but a block under it cannot be checked: refused
    block = bytes([0x0A, 4, 0x01, 0x55, 0x1E, 0x20, 0x12, 1]) + b"x"
    with pytest.raises(BitswapError):
        decode(bytes([0x1A, len(block)]) + block)


@pytest.mark.parametrize("cid", [
    b"", b"\x01", bytes([0x02, 0x55, 0x12, 0x20]) + bytes(32), bytes([0x01, 0x55, 0x12, 0x10]) + bytes(16),
    bytes([0x01, 0x55, 0x12, 0x20]) + bytes(31), bytes([0x01, 0x55, 0x00, 0x7F]) + bytes(0x7F),
    bytes([0x01, 0x55, 0x12, 0xA0, 0x00]) + bytes(32),  # non-minimal varint length
])
def test_bad_cids_are_refused(cid: bytes) -> None:
    with pytest.raises(BitswapError):
        Entry(cid)


@pytest.mark.parametrize("prefix", [
    b"", b"\x01\x55\x12", b"\x01\x55\x12\x20\x00", b"\x00\x55\x12\x20", b"\x02\x55\x12\x20", b"\xff" * 40,
])
def test_bad_prefixes_are_refused(prefix: bytes) -> None:
    with pytest.raises(BitswapError):
        CidPrefix.from_bytes(prefix)


# -- bounds ----------------------------------------------------------------------------


def test_too_many_entries_is_refused_while_counting() -> None:
    entry = bytes([0x0A, 2 + 34, 0x0A, 34]) + CID_V0_A
    ok = bytes(b"".join([entry] * bm.MAX_WANTLIST_ENTRIES))
    assert len(decode(bytes([0x0A]) + varint.encode(len(ok)) + ok).wantlist.entries) == bm.MAX_WANTLIST_ENTRIES
    over = ok + entry
    with pytest.raises(BitswapError, match="wantlist entries"):
        decode(bytes([0x0A]) + varint.encode(len(over)) + over)


def test_too_many_blocks_and_presences_are_refused() -> None:
    empty_block = bytes([0x1A, 6, 0x0A, 4, 0x01, 0x55, 0x12, 0x20])
    decode(empty_block * bm.MAX_BLOCKS_PER_MESSAGE)
    with pytest.raises(BitswapError, match="blocks"):
        decode(empty_block * (bm.MAX_BLOCKS_PER_MESSAGE + 1))
    presence = bytes([0x22, 36, 0x0A, 34]) + CID_V0_A
    decode(presence * bm.MAX_PRESENCES_PER_MESSAGE)
    with pytest.raises(BitswapError, match="presences"):
        decode(presence * (bm.MAX_PRESENCES_PER_MESSAGE + 1))


def test_declared_lengths_over_the_caps_are_refused_before_copying() -> None:
    # A block claiming 2 MiB + 1 bytes is refused on its length, with none of the bytes sent.
    with pytest.raises(BitswapError, match="block"):
        decode(bytes([0x12]) + varint.encode(bm.MAX_BLOCK_BYTES + 1))
    with pytest.raises(BitswapError, match="wanted CID"):
        decode(bytes([0x0A, 0x05, 0x0A, 0x03, 0x0A]) + varint.encode(bm.MAX_CID_BYTES + 1))
    with pytest.raises(BitswapError):
        Message(blocks=(BlockPayload(CID_RAW_A, bytes(bm.MAX_BLOCK_BYTES + 1)),))
    with pytest.raises(BitswapError):
        decode(bytes(bm.MAX_MESSAGE_BYTES + 1))


def test_the_biggest_legal_block_round_trips() -> None:
    data = random.Random(1).randbytes(bm.MAX_BLOCK_BYTES)
    cid = bytes(make_cid("raw", data))
    msg = Message(blocks=(BlockPayload(cid, data),))
    assert decode(encode(msg)) == msg


# -- framing ---------------------------------------------------------------------------


def test_frame_reader_refuses_an_oversized_length_from_its_header_alone() -> None:
    reader = FrameReader()
    with pytest.raises(BitswapError, match="announced"):
        reader.feed(varint.encode(bm.MAX_MESSAGE_BYTES + 1))
    assert reader.buffered < 8
    with pytest.raises(BitswapError):
        reader.feed(b"")  # broken for good


def test_frame_reader_refuses_long_and_non_minimal_headers() -> None:
    with pytest.raises(BitswapError):
        FrameReader().feed(b"\x80\x80\x80\x80\x80")
    with pytest.raises(BitswapError):
        FrameReader().feed(b"\x85\x00")


def test_frame_reader_holds_a_partial_message_then_completes_it() -> None:
    msg = Message(Wantlist((Entry(CID_RAW_A, 5, want_type=WantType.HAVE),)))
    wire = frame(msg)
    reader = FrameReader()
    assert reader.feed(wire[:1]) == []
    assert reader.feed(wire[1:-1]) == []
    assert not reader.at_boundary()
    assert reader.feed(wire[-1:]) == [msg]
    assert reader.at_boundary()
    assert reader.feed(frame(Message()) + wire) == [Message(), msg]


# -- properties ------------------------------------------------------------------------

cids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: bytes([0x12, 0x20]) + d),
    st.tuples(st.sampled_from([0x55, 0x70, 0x71, 0x0129]), st.binary(min_size=32, max_size=32)).map(
        lambda t: varint.encode(1) + varint.encode(t[0]) + bytes([0x12, 0x20]) + t[1]),
    st.binary(max_size=bm.MAX_IDENTITY_DIGEST_BYTES).map(lambda d: bytes([0x01, 0x55, 0x00, len(d)]) + d),
)
int32 = st.integers(-(2**31), 2**31 - 1)
entries = st.builds(Entry, cids, int32, st.booleans(), st.sampled_from(WantType), st.booleans())
payloads = st.tuples(st.sampled_from([(1, 0x55), (1, 0x70), (0, 0x70)]), st.binary(max_size=300)).map(
    lambda t: BlockPayload(CidPrefix(t[0][0], t[0][1], 0x12, 32).cid_for(t[1]), t[1]))
messages = st.builds(
    Message,
    st.builds(Wantlist, st.lists(entries, max_size=8).map(tuple), st.booleans()),
    st.lists(payloads, max_size=4).map(tuple),
    st.lists(st.builds(BlockPresence, cids, st.sampled_from(PresenceType)), max_size=8).map(tuple),
    int32,
)


@settings(max_examples=300, deadline=None)
@given(messages)
def test_round_trip(msg: Message) -> None:
    assert decode(encode(msg)) == msg


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages, min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_frames_in_any_chunking(msgs: list[Message], rnd: random.Random) -> None:
    wire = b"".join(frame(m) for m in msgs)
    reader = FrameReader()
    got: list[Message] = []
    pos = 0
    while pos < len(wire):
        step = rnd.randint(1, 64)
        got += reader.feed(wire[pos:pos + step])
        pos += step
    assert got == msgs and reader.at_boundary()


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes_raise_only_bitswap_errors(raw: bytes) -> None:
    try:
        decode(raw)
    except BitswapError:
        pass
    try:
        FrameReader().feed(raw)
    except BitswapError:
        pass


def test_fuzz_mutated_messages_raise_only_protocol_errors() -> None:
    """Seeded mutations (flips, truncations, splices, inserted bytes) of valid messages."""
    rng = random.Random(20261204)
    corpus: list[bytes] = []
    for i in range(40):
        data = rng.randbytes(rng.randint(0, 200))
        cid = bytes(make_cid("raw", data))
        corpus.append(encode(Message(
            Wantlist(tuple(Entry(bytes(make_cid("raw", bytes([i, j]))), rng.randint(-5, 5), bool(j & 1),
                                 WantType(j & 1), bool(j & 2)) for j in range(rng.randint(0, 5))),
                     bool(i & 1)),
            (BlockPayload(cid, data),) if i % 3 else (),
            (BlockPresence(cid, PresenceType(i & 1)),) if i % 2 else (), i)))
    ok = errors = 0
    for _ in range(20000):
        raw = bytearray(rng.choice(corpus))
        for _ in range(rng.randint(1, 4)):
            op = rng.randrange(4)
            if op == 0 and raw:
                raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
            elif op == 1 and raw:
                del raw[rng.randrange(len(raw)):]
            elif op == 2:
                raw[rng.randrange(len(raw) + 1):0] = rng.randbytes(rng.randint(1, 12))
            else:
                raw += rng.choice(corpus)[: rng.randint(0, 50)]
        try:
            decode(bytes(raw))
            ok += 1
        except ProtocolError as exc:
            assert isinstance(exc, BitswapError)
            errors += 1
    assert ok > 100 and errors > 1000  # both paths really exercised
