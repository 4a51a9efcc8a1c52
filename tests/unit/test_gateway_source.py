"""Gateways as a block source (issue 14 item 8): the sans-IO rules
(shoal.p2p.exchange.gateway_source) and the httpx driver
(shoal.p2p.exchange.gateway_client) over httpx's MockTransport, on trio."""

from __future__ import annotations

import hashlib
from typing import AsyncIterator, Callable, Iterable, Iterator

import httpx
import pytest
import trio
from multiformats import CID, multihash

from shoal.store.errors import HashMismatch
from shoal.store.ipld.cid import RAW, make_cid
from shoal.p2p.errors import P2PError
from shoal.p2p.exchange.gateway_client import GatewayClient
from shoal.p2p.exchange.gateway_source import (
    MAX_GATEWAY_BLOCK_BYTES, MAX_RETRY_AFTER_S, BadGateway, BodyReader, Gateway, GatewayUrlError, block_url, check_head,
    parse_gateway_url, request_headers, verify_gateway_block,
)
from shoal.p2p.net.node_config import MAX_GATEWAYS, FetchConfig, parse_gateways

BLOCK = b"a block of bytes" * 100
CID_ = make_cid(RAW, BLOCK)


# -- URLs ---------------------------------------------------------------------

@pytest.mark.parametrize("text, url", [
    ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
    ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
    ("  https://Gateway.Example/  ", "https://gateway.example"),
    ("https://gw.example/prefix/", "https://gw.example/prefix"),
    ("http://gw.example/ipfs/", "http://gw.example"),
    ("http://[::1]:8080", "http://[::1]:8080"),
])
def test_gateway_url_normalised(text: str, url: str) -> None:
    assert parse_gateway_url(text) == Gateway(url)


@pytest.mark.parametrize("text", [
    "", "ftp://gw.example", "127.0.0.1:8080", "http://", "http://user:pw@gw.example",
    "http://gw.example/?a=1", "http://gw.example/#x", "http://gw.example:99999", "http://" + "a" * 2000,
])
def test_bad_gateway_url_refused(text: str) -> None:
    with pytest.raises(GatewayUrlError):
        parse_gateway_url(text)


def test_block_url_and_headers() -> None:
    gw = parse_gateway_url("http://127.0.0.1:8080/")
    assert block_url(gw, CID_) == f"http://127.0.0.1:8080/ipfs/{CID_}?format=raw"
    v0 = make_cid("dag-pb", b"x", version=0)
    assert block_url(Gateway("https://gw.example/p"), v0) == f"https://gw.example/p/ipfs/{v0}?format=raw"
    assert str(v0).startswith("Qm")
    assert request_headers() == {"Accept": "application/vnd.ipld.raw", "Accept-Encoding": "identity"}


def test_gateway_lists_from_config_and_flags() -> None:
    assert FetchConfig.from_config(None).gateways == ()
    cfg = FetchConfig.from_config({"gateways": ["http://a:1", "http://a:1/", "http://b:2"]})
    assert cfg.gateways == (Gateway("http://a:1"), Gateway("http://b:2"))  # deduplicated
    for bad in ({"gateways": "http://a:1"}, {"gateways": [1]}, {"gateway": []}, {"gateways": ["ftp://a"]}, []):
        with pytest.raises(P2PError):
            FetchConfig.from_config(bad)
    with pytest.raises(P2PError, match="at most"):
        parse_gateways([f"http://h{i}:1" for i in range(MAX_GATEWAYS + 1)], "--gateway")


# -- the response's head ------------------------------------------------------

@pytest.mark.parametrize("status, kind", [(404, "missing"), (410, "missing"), (500, "fail"), (429, "busy"),
                                          (302, "fail"), (206, "fail")])
def test_status_other_than_200_is_no_block(status: int, kind: str) -> None:
    with pytest.raises(BadGateway) as info:
        check_head(CID_, status, {"Content-Type": "application/vnd.ipld.raw"})
    assert info.value.kind == kind


@pytest.mark.parametrize("ctype", ["application/vnd.ipld.raw", "application/octet-stream",
                                   "text/plain; charset=utf-8", "", None])
def test_content_type_is_tolerated(ctype: str | None) -> None:
    """The hash decides: a raw block labelled loosely (or not at all) is read."""
    headers = {"Content-Length": str(len(BLOCK))}
    if ctype is not None:
        headers["Content-Type"] = ctype
    assert check_head(CID_, 200, headers) == len(BLOCK)


@pytest.mark.parametrize("ctype", ["application/vnd.ipld.car; version=1", "text/html; charset=utf-8",
                                   "application/vnd.ipld.dag-json"])
def test_another_format_is_refused_unread(ctype: str) -> None:
    with pytest.raises(BadGateway) as info:
        check_head(CID_, 200, {"content-type": ctype})
    assert info.value.kind == "fail"


def test_declared_length_bounds() -> None:
    assert check_head(CID_, 200, {}) is None
    assert check_head(CID_, 200, {"content-length": str(MAX_GATEWAY_BLOCK_BYTES)}) == MAX_GATEWAY_BLOCK_BYTES
    with pytest.raises(BadGateway) as info:  # over the biggest block we take: refused before reading
        check_head(CID_, 200, {"content-length": str(MAX_GATEWAY_BLOCK_BYTES + 1)})
    assert info.value.kind == "fail"
    for bad in ("-1", "12x", "1e9", "9" * 40):
        with pytest.raises(BadGateway) as info:
            check_head(CID_, 200, {"content-length": bad})
        assert info.value.kind == "corrupt"
    with pytest.raises(BadGateway):
        check_head(CID_, 200, {"content-encoding": "gzip"})


# -- the body -----------------------------------------------------------------

def test_body_within_declared_length() -> None:
    body = BodyReader(CID_, len(BLOCK))
    for i in range(0, len(BLOCK), 7):
        body.feed(BLOCK[i:i + 7])
    assert body.finish() == BLOCK


def test_body_longer_than_declared_is_a_lie() -> None:
    body = BodyReader(CID_, 10)
    body.feed(b"x" * 10)
    with pytest.raises(BadGateway) as info:
        body.feed(b"y")
    assert info.value.kind == "corrupt"


def test_body_shorter_than_declared_fails() -> None:
    body = BodyReader(CID_, 10)
    body.feed(b"x" * 9)
    with pytest.raises(BadGateway) as info:
        body.finish()
    assert info.value.kind == "fail"


def test_undeclared_body_stops_at_the_cap() -> None:
    body = BodyReader(CID_, None, max_bytes=100)
    body.feed(b"x" * 100)
    with pytest.raises(BadGateway) as info:
        body.feed(b"x")
    assert info.value.kind == "fail" and body.received == 101


# -- the hash -----------------------------------------------------------------

def test_hash_checked() -> None:
    verify_gateway_block(CID_, BLOCK)
    with pytest.raises(HashMismatch):
        verify_gateway_block(CID_, BLOCK[:-1] + b"!")
    with pytest.raises(HashMismatch):
        verify_gateway_block(CID_, b"")


def test_identity_hash_checked_and_others_refused() -> None:
    ident = CID("base32", 1, "raw", multihash.wrap(b"hello", "identity"))
    verify_gateway_block(ident, b"hello")
    verify_gateway_block(CID.decode("bafkqaaa"), b"")
    with pytest.raises(HashMismatch):
        verify_gateway_block(ident, b"hellO")
    sha512 = CID("base32", 1, "raw", multihash.wrap(hashlib.sha512(BLOCK).digest(), "sha2-512"))
    with pytest.raises(BadGateway, match="not supported"):
        verify_gateway_block(sha512, BLOCK)


# -- the driver, over a mock transport -----------------------------------------

class _Body(httpx.AsyncByteStream):
    """A response body that streams in pieces, as from a socket."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> GatewayClient:
    return GatewayClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), timeout=5)


GW = Gateway("http://gw.test")


async def test_driver_fetches_a_verified_block() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, stream=_Body([BLOCK[:100], BLOCK[100:]]), headers={"Content-Type": "application/vnd.ipld.raw"})

    assert await _client(handler).fetch_block(GW, CID_) == ("block", BLOCK, "")
    assert str(seen[0].url) == f"http://gw.test/ipfs/{CID_}?format=raw"
    assert seen[0].headers["accept"] == "application/vnd.ipld.raw"


async def test_driver_reports_wrong_bytes_as_corrupt() -> None:
    answer = await _client(lambda r: httpx.Response(200, stream=_Body([BLOCK + b"!"]))).fetch_block(GW, CID_)
    assert answer[0] == "corrupt" and answer[1] is None and "do not match" in answer[2]


async def test_driver_stops_reading_an_endless_body() -> None:
    """A body with no Content-Length that never ends: read only up to the cap."""
    produced = 0

    def endless() -> Iterator[bytes]:
        nonlocal produced
        while True:
            produced += 65536
            yield b"z" * 65536

    answer = await _client(lambda r: httpx.Response(200, stream=_Body(endless()))).fetch_block(GW, CID_)
    assert answer[0] == "fail" and "more than any block" in answer[2]
    assert produced <= MAX_GATEWAY_BLOCK_BYTES + 2 * 65536


async def test_driver_missing_and_errors() -> None:
    assert (await _client(lambda r: httpx.Response(404)).fetch_block(GW, CID_))[0] == "missing"

    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    answer = await _client(broken).fetch_block(GW, CID_)
    assert answer[0] == "fail" and "refused" in answer[2]

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    assert (await _client(slow).fetch_block(GW, CID_))[0] == "timeout"


def test_busy_gateway_waits_as_told() -> None:
    with pytest.raises(BadGateway) as info:
        check_head(CID_, 503, {"Retry-After": "1"})
    assert info.value.kind == "busy" and info.value.retry_after == 1.0
    with pytest.raises(BadGateway) as info:
        check_head(CID_, 429, {"Retry-After": "86400"})  # bounded: a gateway cannot park the fetch
    assert info.value.kind == "busy" and info.value.retry_after == MAX_RETRY_AFTER_S
    with pytest.raises(BadGateway) as info:
        check_head(CID_, 503, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert 0 < info.value.retry_after <= MAX_RETRY_AFTER_S


async def test_driver_retries_a_busy_gateway_and_caps_concurrency() -> None:
    """503 past a gateway's request cap is asked again; no more than
    `per_gateway` requests are ever on the wire to it."""
    calls = 0
    running = 0
    most = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls, running, most
        calls += 1
        busy = calls <= 3
        running += 1
        most = max(most, running)
        await trio.sleep(0.01)
        running -= 1
        if busy:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(200, stream=_Body([BLOCK]))

    client = GatewayClient(httpx.AsyncClient(transport=httpx.MockTransport(handler)), timeout=5, per_gateway=2)
    answers: list[object] = []

    async def one() -> None:
        answers.append(await client.fetch_block(GW, CID_))

    async with trio.open_nursery() as nursery:
        for _ in range(6):
            nursery.start_soon(one)
    assert answers == [("block", BLOCK, "")] * 6
    assert calls == 9 and most <= 2
