"""The node<->lane control codec (shoal.p2p.lanes.control): round trips of every
message in any split, and bad input (truncated, garbage, oversized, nested,
out of bounds) refused with ControlProtocolError only, before allocation."""

from __future__ import annotations

import hashlib
import random

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.ipld.cid import CID, RAW, cid_for_digest

from shoal.p2p.errors import ControlProtocolError
from shoal.p2p.lanes import control as C
from shoal.p2p.lanes.api import LaneJob, LaneResult, Outcome, Sink
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.wire.framing import encode_frame

PEER = Identity.generate().peer_id


def _cid(seed: bytes) -> CID:
    return cid_for_digest(RAW, hashlib.sha256(seed).digest())


cids = st.binary(max_size=8).map(_cid)
paths = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40).map(lambda s: "/tmp/" + s)
sinks = st.tuples(paths, st.integers(0, 2**62)).map(lambda t: Sink(*t))
addrs = st.tuples(st.integers(1, 65535)).map(lambda t: Multiaddr("127.0.0.1", t[0], PEER))
timeouts = st.floats(0.001, 86400.0, allow_nan=False)


@st.composite
def jobs(draw: st.DrawFn) -> LaneJob:
    holder = draw(st.booleans())
    return LaneJob(
        draw(cids), PEER if holder else None,
        tuple(draw(st.lists(addrs, max_size=C.MAX_HOLDER_ADDRS))) if holder else (),
        tuple(draw(st.lists(sinks, max_size=C.MAX_SINKS))),
        draw(st.booleans()), draw(st.booleans()), draw(timeouts),
    )


results = st.builds(
    LaneResult, st.sampled_from(list(Outcome)), st.integers(0, 2**21),
    st.one_of(st.none(), st.binary(max_size=2000)), st.text(max_size=100),
)
ids = st.integers(1, C.MAX_ID)
messages = st.one_of(
    st.builds(C.Config, paths, st.sampled_from(["127.0.0.1", "::1", "0.0.0.0"]), st.integers(0, 65535),
              st.just(PEER.multihash),
              st.one_of(st.none(), st.binary(min_size=32, max_size=32)), st.integers(2**22, 2**40),
              timeouts, st.integers(0, 1023)),
    st.builds(C.Ready, addrs.map(str), st.integers(1, 2**31)),
    st.builds(C.Job.from_job, ids, jobs()),
    st.builds(C.Result.from_result, ids, results),
    st.builds(C.AdmitRequest, ids, st.just(PEER.multihash)),
    st.builds(C.AdmitAnswer, ids, st.booleans()),
    st.builds(C.CpuStats, st.floats(0, 1e9, allow_nan=False), st.integers(0, 2**63), st.integers(0, 2**63)),
    st.just(C.Stop()),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(messages, min_size=1, max_size=6), st.randoms(use_true_random=False))
def test_round_trip_in_any_split(msgs: list[C.ControlMessage], rnd: random.Random) -> None:
    wire = b"".join(C.encode(m) for m in msgs)
    decoder = C.ControlDecoder()
    out: list[C.ControlMessage] = []
    pos = 0
    while pos < len(wire):
        n = rnd.randint(1, 64)
        out += decoder.feed(wire[pos : pos + n])
        pos += n
    decoder.end_of_stream()
    assert out == msgs


@settings(max_examples=100, deadline=None)
@given(jobs())
def test_job_round_trips_to_the_same_lane_job(job: LaneJob) -> None:
    msg = C.decode(C.encode(C.Job.from_job(7, job))[4:])
    assert isinstance(msg, C.Job)
    assert msg.to_job() == job


@settings(max_examples=100, deadline=None)
@given(results)
def test_result_round_trips(result: LaneResult) -> None:
    msg = C.decode(C.encode(C.Result.from_result(9, result))[4:])
    assert isinstance(msg, C.Result)
    back = msg.to_result()
    assert (back.outcome, back.size, back.data) == (result.outcome, result.size, result.data)


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_truncated_frames_give_nothing_and_fail_at_eof(msg: C.ControlMessage, data: st.DataObject) -> None:
    wire = C.encode(msg)
    cut = data.draw(st.integers(1, len(wire) - 1))
    decoder = C.ControlDecoder()
    assert decoder.feed(wire[:cut]) == []
    with pytest.raises(ControlProtocolError):
        decoder.end_of_stream()


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_a_truncated_payload_in_a_whole_frame_is_refused(msg: C.ControlMessage, data: st.DataObject) -> None:
    payload = C.encode(msg)[4:]
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(ControlProtocolError):
        C.decode(payload[:cut])


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_raises_only_control_protocol_error(junk: bytes) -> None:
    try:
        C.ControlDecoder().feed(junk)
    except ControlProtocolError:
        pass
    try:
        C.decode(junk)
    except ControlProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(messages, st.data())
def test_flipped_bytes_raise_only_control_protocol_error(msg: C.ControlMessage, data: st.DataObject) -> None:
    payload = bytearray(C.encode(msg)[4:])
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(payload) - 1))
        payload[i] = data.draw(st.integers(0, 255))
    try:
        C.decode(bytes(payload))
    except ControlProtocolError:
        pass


def test_a_huge_declared_frame_is_refused_before_it_is_buffered() -> None:
    decoder = C.ControlDecoder()
    with pytest.raises(ControlProtocolError, match="exceeds"):
        decoder.feed((C.MAX_CONTROL_FRAME + 1).to_bytes(4, "big"))
    with pytest.raises(ControlProtocolError):  # poisoned: the stream position is lost
        decoder.feed(C.encode(C.Stop()))


@pytest.mark.parametrize("payload", [
    msgpack.packb({"t": 1}),                                   # a map
    msgpack.packb([8, [[[[[[]]]]]]]),                          # nested too deeply
    msgpack.packb([7] + [0] * 2000),                           # too many objects
    msgpack.packb([3, 1, b"x" * 40, None, [], [["/a", 0]] * (C.MAX_SINKS + 1), False, True, 1.0]),
    msgpack.packb([4, 1, "ok", 0, b"\0" * (2**21 + 1), ""], use_bin_type=True),   # data over the cap
    msgpack.packb([99]),                                       # unknown tag
    msgpack.packb([8, 1]),                                     # wrong arity
    msgpack.packb([6, 1, 1]),                                  # int where a bool goes
    msgpack.packb([7, float("nan"), 0, 0]),                    # not finite
    msgpack.packb([4, 1, "maybe", 0, None, ""]),               # unknown outcome
    msgpack.packb([2, "/ip4/127.0.0.1/tcp/1", 0]),             # pid 0
    msgpack.packb(["x"]),                                      # tag not an int
    msgpack.packb([8]) + b"\x00",                              # trailing bytes
])
def test_malformed_payloads_are_refused(payload: bytes) -> None:
    with pytest.raises(ControlProtocolError):
        C.decode(payload)


def test_bounds_are_checked_when_a_message_is_built() -> None:
    job = LaneJob(_cid(b"a"), None, (), tuple(Sink("/x", i) for i in range(C.MAX_SINKS + 1)))
    with pytest.raises(ControlProtocolError, match="sinks"):
        C.Job.from_job(1, job)
    with pytest.raises(ControlProtocolError, match="holder_addrs"):
        C.Job(1, bytes(_cid(b"a")), None, ("/ip4/127.0.0.1/tcp/1",), (), False, True, 1.0)
    with pytest.raises(ControlProtocolError, match="repo"):
        C.Config("relative/path", "127.0.0.1", 0, PEER.multihash, None, 2**25, 1.0, 0)
    with pytest.raises(ValueError):
        Sink("relative", 0)


def test_a_job_with_an_unparsable_address_is_refused_on_the_lane_side() -> None:
    msg = C.Job(1, bytes(_cid(b"a")), PEER.multihash, ("/dns4/x/udp/1",), (), False, True, 1.0)
    with pytest.raises(ControlProtocolError, match="job 1"):
        msg.to_job()


def test_a_long_detail_is_cut_to_the_bound() -> None:
    msg = C.Result.from_result(1, LaneResult(Outcome.CORRUPT, detail="é" * 1000))
    assert len(msg.detail.encode()) <= C.MAX_DETAIL_BYTES
    assert C.decode(encode_frame(msgpack.packb([4, 1, "corrupt", 0, None, msg.detail]))[4:]) == msg
