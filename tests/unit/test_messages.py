"""Messages and codec: every type round-trips; invalid ones never get built."""

from __future__ import annotations

import math

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.p2p.wire import limits as L
from shoal.p2p.wire.codec import decode, encode, error_code, error_request_id
from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError
from shoal.p2p.wire.messages import (
    MESSAGE_TYPES, RESPONSES, AuditChallenge, AuditProof, Block, BlockMissing, DontHave, Error,
    ErrorCode, GetLanes, GetPeers, Have, Lanes, Hello, LedgerEntry, LedgerSummary, LedgerSummaryRequest, Message,
    EcMapGet, EcMapPush, EcMapReply, NameAck, NamePublish, PeerInfo, Peers, Ping, Pong, ReleaseRequest, ReleaseResponse, StoreRequest, StoreResponse,
    WantBlock, WantHave,
)

# --- strategies ---------------------------------------------------------------

req_ids = st.integers(1, L.MAX_REQUEST_ID)
any_ids = st.integers(0, L.MAX_REQUEST_ID)
cids = st.binary(min_size=L.MIN_CID_BYTES, max_size=L.MAX_CID_BYTES)
sigs = st.binary(min_size=L.SIGNATURE_BYTES, max_size=L.SIGNATURE_BYTES)
nonces = st.binary(min_size=L.NONCE_BYTES, max_size=L.NONCE_BYTES)
printable = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
addrs = st.text(printable, max_size=L.MAX_ADDR_BYTES - 1).map(lambda s: "/" + s)
u64 = st.integers(0, L.MAX_UINT64)


def tuples(elem: st.SearchStrategy, lo: int, hi: int, unique: bool = False) -> st.SearchStrategy:
    return st.lists(elem, min_size=lo, max_size=hi, unique=unique).map(tuple)


@st.composite
def hellos(draw: st.DrawFn) -> Hello:
    cap = draw(u64)
    return Hello(
        0, draw(tuples(st.integers(1, 0xFFFF), 1, L.MAX_VERSIONS, unique=True)),
        draw(tuples(addrs, 0, 4)), draw(st.text(printable, max_size=L.MAX_AGENT_BYTES)),
        cap, draw(st.integers(0, cap)),
    )


peer_infos = st.builds(
    PeerInfo, st.binary(min_size=L.MIN_PEER_ID_BYTES, max_size=L.MAX_PEER_ID_BYTES),
    tuples(addrs, 1, L.MAX_ADDRS_PER_PEER),
)
ledger_entries = st.builds(
    LedgerEntry, st.text(printable, min_size=1, max_size=L.MAX_LEDGER_KIND_BYTES),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False), u64,
)

MESSAGES: dict[type[Message], st.SearchStrategy] = {
    Error: st.builds(Error, any_ids, st.integers(1, 0xFFFF), st.text(max_size=200)),
    Hello: hellos(),
    Ping: st.builds(Ping, req_ids, st.binary(max_size=L.MAX_PING_BYTES)),
    Pong: st.builds(Pong, req_ids, st.binary(max_size=L.MAX_PING_BYTES)),
    GetPeers: st.builds(GetPeers, req_ids, st.integers(1, L.MAX_PEERS_PER_REPLY)),
    GetLanes: st.builds(GetLanes, req_ids),
    Lanes: st.builds(Lanes, req_ids, tuples(addrs, 0, L.MAX_LANE_ADDRS, unique=True)),
    Peers: st.builds(
        Peers, req_ids,
        st.lists(peer_infos, max_size=6, unique_by=lambda p: p.peer_id).map(tuple),
    ),
    WantHave: st.builds(WantHave, req_ids, tuples(cids, 1, 20, unique=True)),
    Have: st.builds(Have, any_ids, tuples(cids, 1, 20)),
    DontHave: st.builds(DontHave, req_ids, tuples(cids, 1, 20)),
    WantBlock: st.builds(WantBlock, req_ids, tuples(cids, 1, L.MAX_CIDS_PER_WANT_BLOCK, unique=True)),
    Block: st.builds(Block, req_ids, cids, st.binary(max_size=4096)),
    BlockMissing: st.builds(BlockMissing, req_ids, cids),
    StoreRequest: st.builds(StoreRequest, req_ids, cids, u64, st.binary(min_size=1, max_size=512), sigs),
    StoreResponse: st.one_of(
        st.builds(StoreResponse, req_ids, st.just(True), st.text(max_size=50), sigs),
        st.builds(StoreResponse, req_ids, st.just(False), st.text(max_size=50), st.just(b"")),
    ),
    ReleaseRequest: st.builds(ReleaseRequest, req_ids, cids, sigs),
    ReleaseResponse: st.builds(ReleaseResponse, req_ids, cids, st.booleans()),
    AuditChallenge: st.builds(
        AuditChallenge, req_ids, cids, nonces, st.integers(1, L.MAX_AUDIT_CHALLENGES),
        st.integers(1, L.MAX_AUDIT_DEADLINE_MS),
    ),
    AuditProof: st.builds(AuditProof, req_ids, cids, nonces, st.binary(min_size=1, max_size=512), sigs),
    LedgerSummaryRequest: st.builds(LedgerSummaryRequest, req_ids),
    LedgerSummary: st.builds(
        LedgerSummary, req_ids,
        st.lists(ledger_entries, max_size=8, unique_by=lambda e: e.kind).map(tuple),
    ),
    NamePublish: st.builds(NamePublish, req_ids, st.binary(min_size=1, max_size=2048)),
    NameAck: st.builds(NameAck, req_ids, st.booleans()),
    EcMapGet: st.builds(EcMapGet, req_ids, cids),
    EcMapPush: st.builds(EcMapPush, req_ids, st.binary(min_size=1, max_size=2048), st.binary(max_size=2048)),
    EcMapReply: st.builds(EcMapReply, req_ids, st.binary(max_size=2048)),
}
any_message = st.one_of(*MESSAGES.values())


def test_every_type_has_a_strategy_and_a_unique_code() -> None:
    assert set(MESSAGES) == set(MESSAGE_TYPES.values())
    assert len(MESSAGE_TYPES) == len({c.TYPE for c in MESSAGE_TYPES.values()})
    for request, answers in RESPONSES.items():
        assert request.ROLE == "request" and Error in answers


@settings(max_examples=400)
@given(any_message)
def test_round_trip(msg: Message) -> None:
    wire = encode(msg)
    assert len(wire) <= L.MAX_FRAME_BYTES
    assert decode(wire) == msg
    assert encode(decode(wire)) == wire


def test_envelope_layout() -> None:
    assert msgpack.unpackb(encode(Ping(7, b"hi"))) == [L.PROTOCOL_VERSION, Ping.TYPE, 7, b"hi"]


def test_largest_messages_fit_a_frame() -> None:
    cid = b"\x01\x55\x12\x20" + bytes(32) + bytes(L.MAX_CID_BYTES - 36)
    biggest = [
        Block(L.MAX_REQUEST_ID, cid, bytes(L.MAX_BLOCK_BYTES)),
        AuditProof(L.MAX_REQUEST_ID, cid, bytes(32), bytes(L.MAX_PROOF_BYTES), bytes(64)),
        StoreRequest(L.MAX_REQUEST_ID, cid, L.MAX_UINT64, bytes(L.MAX_MANIFEST_BYTES), bytes(64)),
        Peers(1, tuple(
            PeerInfo(i.to_bytes(L.MAX_PEER_ID_BYTES, "big"), ("/" + "a" * (L.MAX_ADDR_BYTES - 1),) * L.MAX_ADDRS_PER_PEER)
            for i in range(L.MAX_PEERS_PER_REPLY)
        )),
        WantHave(1, tuple(i.to_bytes(L.MAX_CID_BYTES, "big") for i in range(L.MAX_CIDS_PER_WANT_HAVE))),
        LedgerSummary(1, tuple(LedgerEntry(f"k{i}", 1.5, L.MAX_UINT64) for i in range(L.MAX_LEDGER_KINDS))),
    ]
    for msg in biggest:
        wire = encode(msg)
        assert len(wire) <= L.MAX_FRAME_BYTES, type(msg).__name__
        assert decode(wire) == msg


CID = bytes(36)


@pytest.mark.parametrize(
    "build",
    [
        lambda: Ping(0, b""),  # requests need a non-zero id
        lambda: Ping(L.MAX_REQUEST_ID + 1, b""),
        lambda: Ping(True, b""),  # bool is not an int
        lambda: Ping(1, "text"),  # type: ignore[arg-type]  # str is not bytes
        lambda: Ping(1, bytes(L.MAX_PING_BYTES + 1)),
        lambda: Pong(0, b""),  # responses echo a real id
        lambda: Hello(1, (1,), (), "a", 1, 1),  # Hello id is always 0
        lambda: Hello(0, (), (), "a", 1, 1),
        lambda: Hello(0, (1, 1), (), "a", 1, 1),
        lambda: Hello(0, (1,), ("no-slash",), "a", 1, 1),
        lambda: Hello(0, (1,), ["/ip4"], "a", 1, 1),  # type: ignore[arg-type]  # list is not tuple
        lambda: Hello(0, (1,), (), "a\n", 1, 1),
        lambda: Hello(0, (1,), (), "a", 1, 2),  # free > capacity
        lambda: Hello(0, (1,), (), "a", -1, 0),
        lambda: Hello(0, (1,), (), "a", L.MAX_UINT64 + 1, 0),
        lambda: Error(1, 0, "zero code"),
        lambda: Error(1, 1, "x" * (L.MAX_ERROR_MESSAGE_BYTES + 1)),
        lambda: Error(1, 1, "é" * (L.MAX_ERROR_MESSAGE_BYTES // 2 + 1)),  # capped in UTF-8 bytes
        lambda: GetPeers(1, 0),
        lambda: GetPeers(1, L.MAX_PEERS_PER_REPLY + 1),
        lambda: Peers(1, (("x", ()),)),  # type: ignore[arg-type]
        lambda: Peers(1, (PeerInfo(b"ab", ("/a",)),) * 2),
        lambda: PeerInfo(b"a", ("/a",)),
        lambda: PeerInfo(b"ab", ()),
        lambda: WantHave(1, ()),
        lambda: WantHave(1, (CID, CID)),
        lambda: WantHave(1, (bytes(L.MIN_CID_BYTES - 1),)),
        lambda: WantHave(1, (bytes(L.MAX_CID_BYTES + 1),)),
        lambda: WantHave(1, tuple(i.to_bytes(36, "big") for i in range(L.MAX_CIDS_PER_WANT_HAVE + 1))),
        lambda: WantBlock(1, tuple(i.to_bytes(36, "big") for i in range(L.MAX_CIDS_PER_WANT_BLOCK + 1))),
        lambda: Block(1, CID, bytes(L.MAX_BLOCK_BYTES + 1)),
        lambda: Block(1, CID, bytearray(3)),  # type: ignore[arg-type]
        lambda: StoreRequest(1, CID, 1, b"", bytes(64)),
        lambda: StoreRequest(1, CID, 1, b"m", bytes(63)),
        lambda: StoreResponse(1, 1, "", bytes(64)),  # type: ignore[arg-type]  # int is not bool
        lambda: StoreResponse(1, True, "", b""),
        lambda: StoreResponse(1, False, "no", bytes(64)),
        lambda: AuditChallenge(1, CID, bytes(31), 1, 1),
        lambda: AuditChallenge(1, CID, bytes(32), 0, 1),
        lambda: AuditChallenge(1, CID, bytes(32), L.MAX_AUDIT_CHALLENGES + 1, 1),
        lambda: AuditChallenge(1, CID, bytes(32), 1, 0),
        lambda: AuditChallenge(1, CID, bytes(32), 1, L.MAX_AUDIT_DEADLINE_MS + 1),
        lambda: AuditProof(1, CID, bytes(32), b"", bytes(64)),
        lambda: AuditProof(1, CID, bytes(32), bytes(L.MAX_PROOF_BYTES + 1), bytes(64)),
        lambda: LedgerEntry("", 1.0, 1),
        lambda: LedgerEntry("put", math.nan, 1),
        lambda: LedgerEntry("put", math.inf, 1),
        lambda: LedgerEntry("put", -1.0, 1),
        lambda: LedgerEntry("put", 1, 1),  # int joules: floats only
        lambda: LedgerSummary(1, (LedgerEntry("a", 1.0, 1),) * 2),
        lambda: LedgerSummary(1, ({"a": 1},)),  # type: ignore[arg-type]
    ],
)
def test_invalid_messages_are_never_built(build: object) -> None:
    with pytest.raises(LocalProtocolError):
        build()  # type: ignore[operator]


def test_messages_are_frozen() -> None:
    msg = Ping(1, b"")
    with pytest.raises(AttributeError):
        msg.payload = b"x"  # type: ignore[misc]


def test_encode_refuses_non_messages() -> None:
    with pytest.raises(LocalProtocolError):
        encode(PeerInfo(b"ab", ("/a",)))  # type: ignore[arg-type]


def wire(*items: object) -> bytes:
    out: bytes = msgpack.packb(list(items), use_bin_type=True)
    return out


def test_unsupported_version_has_its_own_code_and_echoes_the_id() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(wire(2, Ping.TYPE, 41, b"", {"new": "field"}))
    assert error_code(info.value) == ErrorCode.UNSUPPORTED_VERSION
    assert error_request_id(info.value) == 41


@pytest.mark.parametrize("head", [(True, Ping.TYPE, 5), (1.0, Ping.TYPE, 5), (1, True, 5), (1, Ping.TYPE, True)])
def test_envelope_fields_must_be_ints_not_bools_or_floats(head: tuple[object, object, object]) -> None:
    """msgpack's true equals 1 in Python: a bool version, type or id must not pass for one."""
    ping = msgpack.unpackb(encode(Ping(5, b"x")), raw=False)
    with pytest.raises(RemoteProtocolError) as info:
        decode(wire(*head, *ping[3:]))
    assert error_code(info.value) == ErrorCode.MALFORMED


def test_unknown_type_has_its_own_code_and_echoes_the_id() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(wire(1, 0x7F, 9, {"future": [1, 2]}))
    assert error_code(info.value) == ErrorCode.UNKNOWN_TYPE
    assert error_request_id(info.value) == 9


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xc1",  # reserved type byte
        wire(1, Ping.TYPE, 5),  # too few fields
        wire(1, Ping.TYPE, 5, b"", b""),  # too many
        wire(1, Ping.TYPE, 5, "str-not-bin"),
        wire(1, Ping.TYPE, "5", b""),
        wire(1, Ping.TYPE, 5, b"") + b"\x00",  # trailing bytes
        wire(1, Ping.TYPE, 5, b"")[:-1],  # truncated
        msgpack.packb({"v": 1, "t": 3}),  # maps are never on the wire
        wire(1, Ping.TYPE, 5, msgpack.ExtType(1, b"x")),
        wire(1, StoreResponse.TYPE, 5, 1, "", b""),  # 1 is not a bool
        wire(1, Peers.TYPE, 5, [[b"ab", ["/a"], b"extra"]]),
        wire(1, Peers.TYPE, 5, [b"ab"]),
        wire(1, Peers.TYPE, 5, 7),
        wire(1, LedgerSummary.TYPE, 5, [["put", 1, 2]]),
        wire(1, Error.TYPE, 1, 5, b"\xff"),
        b"\x94\x01\x01\x01\xa2\xff\xfe",  # invalid UTF-8 in a str
        b"\xdd\xff\xff\xff\xff",  # array claiming 4 billion items
        b"\x94\x01\x24\x01\xc6\xff\xff\xff\xff",  # bin claiming 4 GiB
        b"\x91" * 64,  # deep nesting
        wire(1, WantHave.TYPE, 1, [[[[b"x"]]]]),
        wire(1, WantHave.TYPE, 1, [b"\x00" * 36] * (L.MAX_CIDS_PER_WANT_HAVE + 1)),
        wire(1, WantHave.TYPE, 1, [[0] * 10] * 200),  # 2,200 objects: over MAX_WIRE_OBJECTS
    ],
)
def test_malformed_payloads_raise_remote_protocol_error(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(payload)
    assert error_code(info.value) == ErrorCode.MALFORMED


def test_malformed_request_echoes_its_id() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(wire(1, GetPeers.TYPE, 77, 0))
    assert error_request_id(info.value) == 77


def test_ledger_summary_as_dict() -> None:
    msg = LedgerSummary(1, (LedgerEntry("put", 2.5, 10), LedgerEntry("audit", 0.0, 0)))
    assert msg.as_dict() == {"put": (2.5, 10), "audit": (0.0, 0)}


def test_error_accepts_error_code_enum_and_unknown_codes() -> None:
    assert decode(encode(Error(3, ErrorCode.BUSY, "busy"))) == Error(3, 5, "busy")
    msg = decode(encode(Error(3, 4000, "future code")))
    assert isinstance(msg, Error) and msg.code == 4000
