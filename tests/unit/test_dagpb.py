"""dag-pb codec: canonical encoding, strict bounded decoding."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.ipld import dagpb
from shoal.store.ipld.dagpb import PBLink, PBNode
from shoal.store.errors import MalformedBlock

V0 = b"\x12\x20" + hashlib.sha256(b"a").digest()
V1 = b"\x01\x55\x12\x20" + hashlib.sha256(b"b").digest()


def test_empty_file_leaf_vector() -> None:
    # QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH: the empty UnixFS file.
    block = bytes.fromhex("0a0408021800")
    node = dagpb.decode(block)
    assert node == PBNode((), b"\x08\x02\x18\x00")
    assert dagpb.encode(node) == block


def test_links_before_data_and_empty_name_written() -> None:
    node = PBNode((PBLink(V0, "", 5), PBLink(V1, None, None)), b"\x08\x01")
    enc = dagpb.encode(node)
    assert enc == (b"\x12\x28\x0a\x22" + V0 + b"\x12\x00\x18\x05"
                   + b"\x12\x26\x0a\x24" + V1 + b"\x0a\x02\x08\x01")
    assert dagpb.decode(enc) == node


def test_empty_node_and_empty_data() -> None:
    assert dagpb.encode(PBNode()) == b""
    assert dagpb.decode(b"") == PBNode()
    assert dagpb.encode(PBNode((), b"")) == b"\x0a\x00"
    assert dagpb.decode(b"\x0a\x00") == PBNode((), b"")


def test_data_first_accepted_and_reencoded_canonically() -> None:
    link = dagpb.encode_link(PBLink(V0, "x", 1))
    block = b"\x0a\x01Z" + b"\x12" + bytes([len(link)]) + link
    node = dagpb.decode(block)
    assert node == PBNode((PBLink(V0, "x", 1),), b"Z")
    assert dagpb.encode(node) != block


def test_non_utf8_names_round_trip() -> None:
    name = b"\xff\xfeok".decode("utf-8", "surrogateescape")
    node = PBNode((PBLink(V0, name, 0),))
    enc = dagpb.encode(node)
    assert b"\xff\xfeok" in enc
    assert dagpb.decode(enc) == node


def test_link_size_matches_encoding() -> None:
    for name, tsize in (("", 0), ("a" * 200, 2**40), ("é", 127)):
        link = PBLink(V1, name, tsize)
        assert dagpb.link_size(len(name.encode()), len(V1), tsize) == len(dagpb.encode(PBNode((link,))))


def _link(body: bytes) -> bytes:
    return b"\x12" + bytes([len(body)]) + body


BAD = {
    "unknown node field": b"\x1a\x00",
    "wrong node wire type": b"\x08\x01",
    "truncated data": b"\x0a\x05abc",
    "truncated key": b"\x80",
    "overlong length": b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
    "non-minimal varint": b"\x0a\x80\x00",
    "duplicate data": b"\x0a\x00\x0a\x00",
    "interleaved": _link(b"\x0a\x22" + V0) + b"\x0a\x00" + _link(b"\x0a\x22" + V0),
    "link without hash": _link(b"\x12\x00"),
    "link fields out of order": _link(b"\x12\x00\x0a\x22" + V0),
    "duplicate hash": _link(b"\x0a\x22" + V0 + b"\x0a\x22" + V0),
    "unknown link field": _link(b"\x0a\x22" + V0 + b"\x20\x00"),
    "tsize wrong wire type": _link(b"\x0a\x22" + V0 + b"\x1a\x00"),
    "hash not a CID": _link(b"\x0a\x03abc"),
    "cid version 2": _link(b"\x0a\x05\x02\x55\x12\x01\x00"),
    "cid digest length": _link(b"\x0a\x05\x01\x55\x12\x05\x00"),
    "link body past end": b"\x12\x05\x0a",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_rejects(name: str) -> None:
    with pytest.raises(MalformedBlock):
        dagpb.decode(BAD[name])


def test_rejects_oversized_block() -> None:
    with pytest.raises(MalformedBlock):
        dagpb.decode(b"\x0a\x00" * (dagpb.MAX_BLOCK_SIZE // 2 + 1))


def test_rejects_too_many_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dagpb, "MAX_LINKS", 3)
    link = _link(b"\x0a\x22" + V0)
    dagpb.decode(link * 3)
    with pytest.raises(MalformedBlock):
        dagpb.decode(link * 4)


cids = st.one_of(
    st.binary(min_size=32, max_size=32).map(lambda d: b"\x12\x20" + d),
    st.tuples(st.sampled_from([0x55, 0x70, 0x71]), st.binary(min_size=32, max_size=32)).map(
        lambda t: b"\x01" + bytes([t[0]]) + b"\x12\x20" + t[1]),
)
links = st.builds(PBLink, cids, st.none() | st.text(max_size=20),
                  st.none() | st.integers(0, 2**63 - 1))
nodes = st.builds(PBNode, st.lists(links, max_size=6).map(tuple), st.none() | st.binary(max_size=64))


@given(nodes)
def test_round_trip(node: PBNode) -> None:
    enc = dagpb.encode(node)
    assert dagpb.decode(enc) == node
    assert dagpb.encode(dagpb.decode(enc)) == enc


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes(data: bytes) -> None:
    try:
        dagpb.decode(data)
    except MalformedBlock:
        pass


@settings(max_examples=300)
@given(nodes, st.data())
def test_fuzz_mutations(node: PBNode, data: st.DataObject) -> None:
    enc = bytearray(dagpb.encode(node))
    if not enc:
        return
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        i = data.draw(st.integers(0, max(0, len(enc) - 1)))
        if op == "flip" and enc:
            enc[i] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del enc[i:]
        else:
            enc[i:i] = data.draw(st.binary(min_size=1, max_size=4))
    try:
        decoded = dagpb.decode(bytes(enc))
    except MalformedBlock:
        return
    dagpb.encode(decoded)  # whatever decodes must re-encode without error
