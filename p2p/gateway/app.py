"""The gateway's ASGI application: `/ipfs/{cid}` routes over a running node.

Served by hypercorn on trio next to the control API (shoal.p2p.net.service),
on its own address (`--gateway HOST:PORT`, loopback by default), without a
token: it only reads. Request parsing and header rules live in
`shoal.p2p.gateway.params` (sans-IO); block selection and CAR framing in
`shoal.p2p.gateway.car_stream`; this module is the driver.

Content the node does not hold is fetched from peers on demand: the root
block first (so a CID nobody has is a 404 before any header is sent), then,
for a CAR of the whole DAG, `fetch_dag` runs while the response streams,
handing each verified block straight to the response
(shoal.p2p.exchange.handoff): the first bytes go out before the object is
complete. A byte range of a file (`dag-scope=entity&entity-bytes=`) fetches
only its blocks (shoal.p2p.exchange.range_fetch). Fetched blocks stay in the
store unpinned (gc may evict them) unless the node runs with
`--gateway-cache-pin`, which pins a DAG once it is complete.

Bounded: at most `max_requests` requests run at once (more get 503 with
Retry-After); a response is streamed in chunks of about `CHUNK_BYTES` plus
one block; the fetch behind it has the exchange's own memory bound. A client
that disconnects cancels its request: the fetch stops, the walk's thread
ends at its next block.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

import trio

from shoal.store.errors import BlockNotFound, HashMismatch, InvalidCID, StoreError
from shoal.store.ipld.cid import CID

from shoal.p2p.errors import NoPeers, P2PError
from shoal.p2p.exchange.fetch import FetchFailed, FetchResult, PlannedFetch, fetch_dag
from shoal.p2p.exchange.handoff import ArrivingBlocks
from shoal.p2p.exchange.range_fetch import fetch_range
from shoal.p2p.gateway.car_stream import car_header, car_section, file_window, gateway_cid, select_blocks
from shoal.p2p.gateway.files import serve_path
from shoal.p2p.gateway.hf_app import serve_hf
from shoal.p2p.gateway.hf_routes import DEFAULT_PAGE_SIZE, HfRequest, parse_hf_request
from shoal.p2p.gateway.params import IMMUTABLE_CACHE, GatewayRequest, GatewayRequestError, parse_request
from shoal.p2p.names.service import resolver_of
from shoal.p2p.net.api import run_until_client_leaves, serve_lifespan

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

log = logging.getLogger("shoal.gateway")

CHUNK_BYTES = 256 * 1024
DEFAULT_MAX_REQUESTS = 8
ROOT_FETCH_TIMEOUT_S = 20.0
HUB_SLOT_WAIT_S = 10.0  # how long a Hugging Face route request waits for a free slot before a 503

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class GatewayOptions:
    """`--gateway` settings: where it listens, whether fetched DAGs are pinned, how many requests run."""

    host: str = "127.0.0.1"
    port: int = 0
    cache_pin: bool = False
    max_requests: int = DEFAULT_MAX_REQUESTS
    hf_page_size: int = DEFAULT_PAGE_SIZE  # entries per page of a Hub tree listing


class _RootFetch(PlannedFetch):
    """Fetch one block (a DAG's root) from whichever connected peer has it."""

    def __init__(self, node: "Node", cid: CID) -> None:
        super().__init__(node, ROOT_FETCH_TIMEOUT_S, 4, FetchResult(cid))
        self.cid = cid

    def _cid_for(self, key: bytes) -> CID:
        return self.cid

    async def _on_block(self, key: bytes, cid: CID, data: bytes) -> None:
        return None

    async def run(self) -> None:
        async with self.node.store_guard.shared():
            if self.store.has(self.cid):
                return
            self.planner.want([bytes(self.cid)])
            await self._drive(self.cid, None)


class GatewayApp:
    """The ASGI callable. `node` is a running `shoal.p2p.net.node.Node`."""

    def __init__(self, node: "Node", options: GatewayOptions) -> None:
        self.node = node
        self.options = options
        self.active = 0  # requests running now
        self._freed: trio.Event | None = None  # set (and replaced) each time a request ends

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if self.active >= self.options.max_requests and not (
                _is_hub_path(scope) and await self._wait_for_slot(HUB_SLOT_WAIT_S)):
            await _send_text(send, 503, "gateway busy: too many requests at once", [(b"retry-after", b"1")])
            return
        self.active += 1  # (one event loop: no lock needed between the check and this)
        try:
            if await run_until_client_leaves(receive, send, lambda s: self._serve(scope, s)):
                log.info("%s %s: client went away, request cancelled", scope["method"], scope["path"])
        finally:
            self.active -= 1
            if self._freed is not None:
                self._freed.set()
                self._freed = None

    async def _wait_for_slot(self, timeout: float) -> bool:
        """Wait up to `timeout` s for a free request slot (True if one is free).

        For the Hugging Face routes only: a Hub client downloads with 8 workers (the default
        `max_requests`) and sends a worker's next request the moment a body ends, which can be
        before that request's handler has returned (a whole-file fetch finishes storing its last
        blocks): refusing at once would fail a download that stays within the limit, and the
        client does not retry a 503. Trustless and path requests keep the 503-at-once rule.
        """
        with trio.move_on_after(timeout):
            while self.active >= self.options.max_requests:
                if self._freed is None:
                    self._freed = trio.Event()
                await self._freed.wait()
            return True
        return False

    async def _serve(self, scope: Scope, send: Send) -> None:
        try:
            raw_path = scope.get("raw_path")
            path = raw_path.decode("latin-1") if isinstance(raw_path, bytes) else scope["path"]
            path = path.split("?", 1)[0]
            if not (path == "/ipfs" or path.startswith("/ipfs/")):
                hf = parse_hf_request(scope["method"], path, scope.get("query_string", b""))
                if hf is not None:
                    await self._serve_hf(scope, hf, path, send)
                    return
            request = parse_request(scope["method"], path, scope.get("query_string", b""), scope.get("headers", []))
            cid, inline = gateway_cid(request.cid_text)
            if request.path and request.format is not None:
                raise GatewayRequestError(400, "raw and CAR responses are served for /ipfs/{cid} without a path")
        except GatewayRequestError as exc:
            await _send_text(send, exc.status, str(exc))
            return
        except InvalidCID as exc:
            await _send_text(send, 400, str(exc))
            return
        text = str(cid)
        if request.not_modified(text):
            await send({"type": "http.response.start", "status": 304, "headers": request.headers(text)})
            await send({"type": "http.response.body", "body": b""})
            return
        if request.format is None:
            await self._serve_path(request, cid, inline, send)
            return
        try:
            if inline is None:
                await self._ensure_root(request, cid)
            if request.format == "raw":
                await self._send_raw(request, cid, inline, send)
            else:
                await self._send_car(request, cid, inline, send)
        except _Refused as exc:
            await _send_text(send, exc.status, exc.message)

    async def _serve_hf(self, scope: Scope, request: HfRequest, path: str, send: Send) -> None:
        """The Hugging Face Hub routes (shoal.p2p.gateway.hf_app), names resolved by the node's records."""

        async def fetch_one(block: CID) -> None:
            await _RootFetch(self.node, block).run()

        server = scope.get("server") or ("127.0.0.1", self.options.port)
        fallback = f"http://{server[0]}:{server[1]}"
        try:
            resolver = resolver_of(self.node)
        except P2PError as exc:
            await _send_text(send, 503, f"names are not served here: {exc}")
            return
        await serve_hf(self.node, resolver, request, path, list(scope.get("headers", [])),
                       fetch_one, send, page_size=self.options.hf_page_size, fallback_url=fallback,
                       cache_pin=self.options.cache_pin)

    async def _serve_path(self, request: GatewayRequest, cid: CID, inline: bytes | None, send: Send) -> None:
        """The path gateway (shoal.p2p.gateway.files): plain bytes, ranges, listings."""
        if inline is not None:
            if request.path:
                await _send_text(send, 404, f"{cid} is a raw block: it has no {'/'.join(request.path)}")
                return
            headers = [(b"content-type", b"application/octet-stream"),
                       (b"content-length", str(len(inline)).encode()),
                       (b"cache-control", IMMUTABLE_CACHE.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b"" if request.head else inline})
            return

        async def fetch_one(block: CID) -> None:
            await _RootFetch(self.node, block).run()

        try:
            await serve_path(self.node, request, cid, fetch_one, send)
        except GatewayRequestError as exc:
            await _send_text(send, exc.status, str(exc))

    async def _ensure_root(self, request: GatewayRequest, cid: CID) -> None:
        if self.node.repo.blockstore.has(cid):
            return
        if request.only_if_cached:
            raise _Refused(412, f"{cid} is not in this node's cache (Cache-Control: only-if-cached)")
        try:
            await _RootFetch(self.node, cid).run()
        except NoPeers:
            raise _Refused(404, f"{cid}: no connected peer has it") from None
        except (FetchFailed, P2PError, StoreError) as exc:
            raise _Refused(502, f"{cid}: could not be fetched: {exc}") from None

    async def _send_raw(self, request: GatewayRequest, cid: CID, inline: bytes | None, send: Send) -> None:
        if inline is not None:
            data = inline
        else:
            try:
                data = await trio.to_thread.run_sync(self.node.repo.blockstore.get, cid)
            except (BlockNotFound, HashMismatch) as exc:  # gc'd or corrupt since the check
                raise _Refused(404 if isinstance(exc, BlockNotFound) else 502, str(exc)) from None
        headers = request.headers(str(cid)) + [(b"content-length", str(len(data)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if request.head else data})

    async def _send_car(self, request: GatewayRequest, cid: CID, inline: bytes | None, send: Send) -> None:
        headers = request.headers(str(cid))
        if request.head:
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        if inline is not None:
            body = car_header(cid) + car_section(cid, inline)
            await send({"type": "http.response.start", "status": 200,
                        "headers": headers + [(b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        store = self.node.repo.blockstore
        whole = request.scope == "all"
        if request.scope == "entity":
            window = await trio.to_thread.run_sync(_entity_window, store, cid, request)
            if window is not None and request.entity_bytes is None:
                whole = True  # the entity of a file is its whole DAG
            elif window is not None and window[1] > 0:
                await self._fetch_range(cid, *window)
        if not whole:
            await _stream(send, 200, headers, select_blocks(store.get, cid, request.scope, request.entity_bytes,
                                                            request.dups), cid)
            return
        await self._stream_fetching(request, cid, headers, send)

    async def _fetch_range(self, cid: CID, offset: int, length: int) -> None:
        try:
            await fetch_range(self.node, cid, offset, length)
        except (P2PError, StoreError) as exc:
            raise _Refused(502, f"{cid} [{offset}, +{length}): could not be fetched: {exc}") from None

    async def _stream_fetching(self, request: GatewayRequest, cid: CID, headers: list[tuple[bytes, bytes]],
                               send: Send) -> None:
        """Stream the whole DAG while `fetch_dag` makes it local (nothing to fetch: it only walks)."""
        blocks = ArrivingBlocks(self.node.repo.blockstore)
        failure: list[BaseException] = []

        async def stored(_cid: CID, _data: bytes) -> None:
            blocks.arrived()

        async def fetch_all() -> None:
            try:
                await fetch_dag(self.node, cid, on_stored=stored, on_verified=blocks.verified,
                                on_wanted=blocks.expect)
                if self.options.cache_pin:
                    async with self.node.store_guard.shared():
                        await trio.to_thread.run_sync(self.node.repo.pin_add, cid)
            except (P2PError, StoreError) as exc:
                failure.append(exc)
                log.warning("gateway fetch of %s failed: %s", cid, exc)
            finally:
                blocks.finish()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch_all)
            try:
                await _stream(send, 200, headers,
                              select_blocks(blocks.get, cid, "all", None, request.dups), cid)
            finally:
                blocks.export_over()


def _is_hub_path(scope: Scope) -> bool:
    path = scope.get("path", "")
    return isinstance(path, str) and not (path == "/ipfs" or path.startswith("/ipfs/"))


class _Refused(Exception):
    """An answer other than 200, decided before the response started."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _entity_window(store: Any, cid: CID, request: GatewayRequest) -> tuple[int, int] | None:
    return file_window(store.get, cid, request.entity_bytes)


def _batches(cid: CID, blocks: Iterator[tuple[CID, bytes]]) -> Iterator[bytes]:
    """CAR bytes in chunks of about CHUNK_BYTES (one block may make a chunk larger)."""
    buf = [car_header(cid)]
    size = len(buf[0])
    for block_cid, data in blocks:
        section = car_section(block_cid, data)
        buf.append(section)
        size += len(section)
        if size >= CHUNK_BYTES:
            yield b"".join(buf)
            buf, size = [], 0
    if buf:
        yield b"".join(buf)


async def _stream(send: Send, status: int, headers: list[tuple[bytes, bytes]],
                  blocks: Iterator[tuple[CID, bytes]], cid: CID) -> None:
    """Send a CAR response chunk by chunk; each chunk is made in a worker thread.

    The first chunk is made before the response starts, so a DAG whose root
    is malformed is a 502, not a broken 200. A failure later can only cut the
    response short: the exception propagates and hypercorn closes the
    connection without the last chunk, which a client sees as a truncated
    body (never as a complete but wrong CAR).
    """
    chunks = _batches(cid, blocks)
    try:
        first = await trio.to_thread.run_sync(next, chunks, None)
    except (StoreError, P2PError) as exc:
        await _send_text(send, 502, f"{cid}: {exc}")
        return
    await send({"type": "http.response.start", "status": status, "headers": headers})
    chunk = first
    while chunk is not None:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
        try:
            chunk = await trio.to_thread.run_sync(next, chunks, None)
        except (StoreError, P2PError):
            # Cancelled meanwhile (the client left, so the fetch stopped and the
            # walk found its next block missing): end as cancelled, quietly.
            await trio.lowlevel.checkpoint()
            raise
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _send_text(send: Send, status: int, message: str,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (message + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff"), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})
