"""Sans-IO gateway request parsing (shoal.p2p.gateway.params) and block selection
(shoal.p2p.gateway.car_stream): every rule without sockets, plus fuzzing."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.dag import exporter
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.dag.importer import import_bytes
from shoal.store.ipld.car import read_car
from shoal.store.persist.blockstore import MemoryBlockstore

from tests.helpers import random_bytes
from shoal.p2p.gateway.car_stream import car_header, car_section, gateway_cid, select_blocks
from shoal.p2p.gateway.params import (
    ByteRange, EntityBytes, GatewayRequestError, parse_entity_bytes, parse_media_ranges, parse_range,
    parse_request,
)

SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=64 * 1024, raw_leaves=True)
CID = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"


def req(query: bytes = b"", accept: str | None = None, path: str = "/ipfs/" + CID, method: str = "GET",
        **headers: str):
    h = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
    if accept is not None:
        h.append((b"accept", accept.encode()))
    return parse_request(method, path, query, h)


def status_of(**kw) -> int:
    with pytest.raises(GatewayRequestError) as info:
        req(**kw)
    return info.value.status


def test_format_from_query_wins_over_accept() -> None:
    assert req(b"format=raw", accept="application/vnd.ipld.car").format == "raw"
    assert req(accept="application/vnd.ipld.car").format == "car"
    assert req(accept="text/html, application/vnd.ipld.raw;q=0.9").format == "raw"
    assert req(accept="application/vnd.ipld.raw;q=0, application/vnd.ipld.car").format == "car"
    assert req().format is None


def test_car_parameters_from_accept_and_query() -> None:
    r = req(accept="application/vnd.ipld.car; version=1; order=dfs; dups=y")
    assert r.dups and r.content_type() == "application/vnd.ipld.car; version=1; order=dfs; dups=y"
    r = req(b"format=car&car-dups=n&car-order=unk&car-version=1")
    assert not r.dups and r.content_type().endswith("dups=n")
    assert status_of(query=b"format=car&car-version=2") == 400
    assert status_of(accept="application/vnd.ipld.car; version=2") == 400
    assert status_of(query=b"format=car&car-order=bfs") == 400
    assert status_of(query=b"format=car&car-dups=maybe") == 400


def test_scope_and_entity_bytes() -> None:
    r = req(b"format=car&dag-scope=entity&entity-bytes=10:-5")
    assert r.scope == "entity" and r.entity_bytes == EntityBytes(10, -5)
    assert status_of(query=b"format=car&dag-scope=tree") == 400
    assert status_of(query=b"format=car&entity-bytes=1:2") == 400  # needs dag-scope=entity
    assert status_of(query=b"format=raw&dag-scope=block") == 400  # CAR parameters on a raw request
    assert status_of(query=b"format=car&dag-scope=all&dag-scope=block") == 400  # given twice, differently


@pytest.mark.parametrize("text,size,window", [
    ("0:*", 100, (0, 100)), ("10:19", 100, (10, 10)), ("-10:*", 100, (90, 10)),
    ("90:500", 100, (90, 10)), ("200:*", 100, (100, 0)), ("0:-1", 100, (0, 100)),
    ("-500:*", 100, (0, 100)), ("-20:-11", 100, (80, 10)),
])
def test_entity_window(text: str, size: int, window: tuple[int, int]) -> None:
    assert parse_entity_bytes(text).window(size) == window


@pytest.mark.parametrize("text", ["", "5", "a:b", "1:", ":1", "5:4", "1.5:2", "99999999999999999999:*", "-1:-2",
                                  "+1:2", "١:2"])
def test_bad_entity_bytes(text: str) -> None:
    with pytest.raises(GatewayRequestError):
        parse_entity_bytes(text)


def test_refusals_carry_their_status() -> None:
    assert status_of(method="POST") == 405
    assert status_of(path="/ipns/x") == 404
    assert status_of(path="/ipfs/") == 400
    assert status_of(path="/ipfs/" + CID + "/../x") == 400
    assert status_of(path="/ipfs/" + "a" * 5000) == 414
    assert status_of(query=b"format=car&" + b"x=1&" * 600) == 414
    assert status_of(query=b"&".join(b"k%d=1" % i for i in range(40))) == 400
    assert status_of(accept=",".join(["text/plain"] * 40)) == 400
    assert status_of(query=b"format=tar") == 400


def test_headers_and_etags() -> None:
    raw = req(b"format=raw")
    car = req(b"format=car")
    ranged = req(b"format=car&dag-scope=entity&entity-bytes=0:9")
    tags = {raw.etag(CID), car.etag(CID), ranged.etag(CID), req(b"format=car&car-dups=y").etag(CID)}
    assert len(tags) == 4
    headers = dict(car.headers(CID))
    assert headers[b"cache-control"] == b"public, max-age=29030400, immutable"
    assert headers[b"content-disposition"] == f'attachment; filename="{CID}.car"'.encode()
    cached = req(b"format=raw", cache_control="max-age=0, only-if-cached", if_none_match=raw.etag(CID))
    assert cached.only_if_cached and cached.not_modified(CID)
    assert not req(b"format=raw").not_modified(CID)


def test_media_ranges_order_by_quality() -> None:
    assert [m for m, _ in parse_media_ranges("a/b;q=0.1, c/d, e/f;q=0.5")] == ["c/d", "e/f", "a/b"]


def test_identity_probe_cid() -> None:
    cid, inline = gateway_cid("bafkqaaa")
    assert inline == b"" and str(cid) == "bafkqaaa"
    cid, inline = gateway_cid(CID)
    assert inline is None


def _car(root, blocks) -> bytes:
    return car_header(root) + b"".join(car_section(c, d) for c, d in blocks)


def test_select_blocks_scopes() -> None:
    store = MemoryBlockstore()
    data = random_bytes(1024 * 1024, seed=1)  # 1 MiB: sixteen leaves
    root = import_bytes(data, store, SMALL).cid
    everything = list(select_blocks(store.get, root, "all", None, False))
    assert len(everything) > 4 and everything[0][0] == root
    back = MemoryBlockstore()
    reader = read_car(io.BytesIO(_car(root, everything)))
    for c, d in reader:
        back.put(c, bytes(d))
    assert b"".join(exporter.read_file(back, root)) == data
    assert [c for c, _ in select_blocks(store.get, root, "block", None, False)] == [root]
    part = list(select_blocks(store.get, root, "entity", EntityBytes(70_000, 70_010), False))
    assert len(part) == 2  # the root and the one leaf holding bytes 70000..70010
    sub = MemoryBlockstore()
    for c, d in part:
        sub.put(c, d)
    assert b"".join(exporter.read_file(sub, root, 70_000, 11)) == data[70_000:70_011]


def test_select_blocks_dups() -> None:
    store = MemoryBlockstore()
    root = import_bytes(b"\0" * (256 * 1024), store, SMALL).cid  # four identical leaves
    once = list(select_blocks(store.get, root, "all", None, False))
    every = list(select_blocks(store.get, root, "all", None, True))
    assert len(once) == 2 and len(every) == 5


@settings(max_examples=300, deadline=None)
@given(path=st.text(max_size=80), query=st.binary(max_size=200), accept=st.text(max_size=120),
       cache=st.text(max_size=40), method=st.sampled_from(["GET", "HEAD", "PUT", "get"]))
def test_fuzz_parse_request_only_refuses_with_a_status(path: str, query: bytes, accept: str, cache: str,
                                                       method: str) -> None:
    headers = [(b"accept", accept.encode("utf-8", "surrogateescape")),
               (b"cache-control", cache.encode("utf-8", "surrogateescape"))]
    for candidate in ("/ipfs/" + path, path):
        try:
            r = parse_request(method, candidate, query, headers)
        except GatewayRequestError as exc:
            assert 400 <= exc.status < 500
            continue
        assert r.format in (None, "raw", "car") and r.scope in ("block", "entity", "all")
        r.headers(r.cid_text)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=40), size=st.integers(0, 2**40))
def test_fuzz_entity_bytes_window_inside_entity(text: str, size: int) -> None:
    try:
        entity = parse_entity_bytes(text)
    except GatewayRequestError:
        return
    offset, length = entity.window(size)
    assert 0 <= offset <= size and 0 <= length and offset + length <= size


@pytest.mark.parametrize("header,size,expected", [
    (None, 10, None), ("bytes=0-4", 10, ByteRange(0, 4)), ("bytes=5-", 10, ByteRange(5, 9)),
    ("bytes=-3", 10, ByteRange(7, 9)), ("bytes=-30", 10, ByteRange(0, 9)), ("bytes=8-100", 10, ByteRange(8, 9)),
    ("bytes=0-1,3-4", 10, None), ("items=0-1", 10, None), ("bytes=5-2", 10, None), ("bytes=x-1", 10, None),
    ("bytes=-", 10, None),
])
def test_parse_range(header, size, expected) -> None:
    assert parse_range(header, size) == expected


@pytest.mark.parametrize("header,size", [("bytes=10-", 10), ("bytes=10-12", 10), ("bytes=-0", 10), ("bytes=-5", 0)])
def test_unsatisfiable_range(header: str, size: int) -> None:
    with pytest.raises(GatewayRequestError) as info:
        parse_range(header, size)
    assert info.value.status == 416


@settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=40), size=st.integers(0, 2**50))
def test_fuzz_range_inside_entity(header: str, size: int) -> None:
    try:
        got = parse_range(header, size)
    except GatewayRequestError as exc:
        assert exc.status == 416
        return
    if got is not None:
        assert 0 <= got.start <= got.end < size and got.length >= 1
