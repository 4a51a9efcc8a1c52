"""The path gateway: `GET|HEAD /ipfs/{cid}[/{path}]` as plain files and listings.

For clients that do not verify (curl, fsspec's HTTPFileSystem, a
safetensors reader over HTTP ranges): a file's bytes, with a single
`Range` (206 + Content-Range, 416 past the end), Content-Length and
Accept-Ranges; a directory as a JSON (or, for a client that prefers it,
HTML) listing streamed entry by entry. The
node still verifies every block it reads or fetches; the client trusts the
node.

Blocks the node lacks are fetched one by one as the read reaches them
(`OnDemandBlocks`), with the exporter's read-ahead asking for the next
few at once, so the first bytes go out while the rest is still coming. On a
node with lanes, a file's blocks are fetched by the lanes instead and handed
back verified (shoal.p2p.gateway.lane_blocks).
"""

from __future__ import annotations

import mimetypes
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator

import trio

from shoal.store.dag import exporter
from shoal.store.errors import BlockNotFound, InvalidInput, StoreError
from shoal.store.ipld.cid import CID

from shoal.p2p.errors import NoPeers, P2PError
from shoal.p2p.gateway import listing
from shoal.p2p.gateway.lane_blocks import lane_blocks
from shoal.p2p.gateway.params import IMMUTABLE_CACHE, GatewayRequest, GatewayRequestError, parse_range

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

Send = Callable[[dict[str, Any]], Awaitable[None]]
LISTING_BATCH = 256  # directory entries per thread hop
# File bytes per thread hop once a body has started (stream_file): 4 blocks. Bounds what one
# response holds besides the exporter's read-ahead; the first piece goes alone (first byte).
HOP_BYTES = 4 * 1024 * 1024
MAX_LISTING_ENTRIES = 100_000


class OnDemandBlocks:
    """A thread-safe block source: the node's store, and for a block it lacks,
    a fetch from a connected peer (on the event loop) before the read."""

    def __init__(self, node: "Node", fetch_one: Callable[[CID], Awaitable[None]]) -> None:
        self._store = node.repo.blockstore
        self._fetch_one = fetch_one
        self._token = trio.lowlevel.current_trio_token()
        self.only_local = False

    def get(self, cid: CID) -> bytes:
        try:
            return self._store.get(cid)
        except BlockNotFound:
            if self.only_local:
                raise
        trio.from_thread.run(self._fetch_one, cid, trio_token=self._token)
        return self._store.get(cid)


def resolve_path(source: OnDemandBlocks, root: CID, path: tuple[str, ...]) -> CID:
    """Follow `path` from `root` through directories (flat or HAMT). Worker thread."""
    current = root
    for depth, name in enumerate(path):
        found = None
        for entry in exporter.iter_dir(source, current, resolve=False):
            if entry.name == name:
                found = entry.cid
                break
        if found is None:
            raise GatewayRequestError(404, f"no {'/'.join(path[:depth + 1])} under {root}")
        current = found
    return current


async def serve_path(node: "Node", request: GatewayRequest, root: CID,
                     fetch_one: Callable[[CID], Awaitable[None]], send: Send) -> None:
    """Answer a path-gateway request (a GatewayRequestError for 4xx before the response starts)."""
    source = OnDemandBlocks(node, fetch_one)
    source.only_local = request.only_if_cached
    try:
        target = await trio.to_thread.run_sync(resolve_path, source, root, request.path)
        info = await trio.to_thread.run_sync(exporter.stat, source, target)
    except GatewayRequestError:
        raise
    except InvalidInput as exc:  # a path through a file
        raise GatewayRequestError(404, str(exc)) from None
    except BlockNotFound as exc:
        raise GatewayRequestError(412 if request.only_if_cached else 404, str(exc)) from None
    except NoPeers as exc:
        raise GatewayRequestError(404, str(exc)) from None
    except (StoreError, P2PError) as exc:
        raise GatewayRequestError(502, str(exc)) from None
    base = [(b"etag", f'"{target}"'.encode()), (b"cache-control", IMMUTABLE_CACHE.encode()),
            (b"x-content-type-options", b"nosniff"), (b"x-ipfs-path", _ipfs_path(root, request).encode())]
    if info.kind == "dir":
        await _send_listing(source, target, _ipfs_path(root, request), request, base, send)
        return
    if info.kind == "symlink" or info.size is None:
        raise GatewayRequestError(501, f"{target} is a {info.kind}: not served by the path gateway")
    size = info.size
    wanted = parse_range(request.range_header, size)
    status, offset, length = (200, 0, size) if wanted is None else (206, wanted.start, wanted.length)
    mime = mimetypes.guess_type(request.path[-1] if request.path else "")[0] or "application/octet-stream"
    headers = base + [(b"content-type", mime.encode()), (b"accept-ranges", b"bytes"),
                      (b"content-length", str(length).encode())]
    if wanted is not None:
        headers.append((b"content-range", wanted.content_range(size).encode()))
    if request.head or length == 0:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    async with lane_blocks(node, target, fetch_one) as laned:
        if laned is None:
            await stream_file(source, target, offset, length, status, headers, send)
        else:  # the node's lanes move the file's blocks (shoal.p2p.gateway.lane_blocks)
            laned.only_local = request.only_if_cached
            await stream_file(laned, target, offset, length, status, headers, send)


async def stream_file(source: exporter.Source, target: CID, offset: int, length: int, status: int,
                      headers: list[tuple[bytes, bytes]], send: Send) -> None:
    """Send `length` bytes of file `target` from `offset` as the body of a `status` response.

    The first piece is read before the response starts, so a file whose first
    block cannot be had is an error the caller still answers with a status;
    a failure later cuts the body short (the client sees a truncated body).
    Shared by the path gateway and the Hugging Face routes.

    The exporter runs in worker threads; after the first piece, each hop to a
    thread brings back up to `HOP_BYTES` of pieces (`PieceBatches`), not one:
    a hop per 1 MiB block cost the gateway node ~0.35 CPU-s per GiB in thread
    wake-ups and GIL hand-overs (py-spy/perf on bench/gateway.py).
    """
    batches = PieceBatches(exporter.read_file(source, target, offset, length, prefetch=exporter.PREFETCH_BLOCKS))
    batch = await batches.next(1)  # alone, so the first byte waits for one block only
    await send({"type": "http.response.start", "status": status, "headers": headers})
    while batch:
        for piece in batch:
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        batch = await batches.next(HOP_BYTES)
    await send({"type": "http.response.body", "body": b"", "more_body": False})


class PieceBatches:
    """An exporter's pieces taken a batch per worker-thread hop.

    A failure after some pieces of a batch were read is kept and raised by
    the next `next`, so every byte read before it is still sent (the body is
    cut exactly where it would have been piece by piece).
    """

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._failure: BaseException | None = None

    async def next(self, budget: int) -> list[bytes]:
        """The next pieces, at least `budget` bytes unless the file ends first; [] at the end."""
        try:
            batch = await trio.to_thread.run_sync(self._take, budget)
        except (StoreError, P2PError):
            await trio.lowlevel.checkpoint()  # cancelled meanwhile: end as cancelled
            raise
        return batch

    def _take(self, budget: int) -> list[bytes]:
        """(A worker thread.)"""
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        out: list[bytes] = []
        taken = 0
        try:
            for piece in self._pieces:
                out.append(piece)
                taken += len(piece)
                if taken >= budget:
                    break
        except (StoreError, P2PError) as exc:
            if not out:
                raise
            self._failure = exc
        return out


def _ipfs_path(root: CID, request: GatewayRequest) -> str:
    return "/ipfs/" + str(root) + "".join("/" + p for p in request.path)


def _take(entries: Iterator[exporter.DirEntry], n: int) -> list[exporter.DirEntry]:
    out = []
    for entry in entries:
        out.append(entry)
        if len(out) >= n:
            break
    return out


async def _send_listing(source: OnDemandBlocks, cid: CID, ipfs_path: str, request: GatewayRequest,
                        base: list[tuple[bytes, bytes]], send: Send) -> None:
    """The directory's entries, streamed in batches: JSON, or HTML if the client prefers it
    (shoal.p2p.gateway.listing renders both; names are escaped in HTML).

    Entries are not resolved (no block read per entry): a raw child is a
    "file" with its size, a dag-pb child "unknown" without one.
    """
    if request.html:  # another representation: its own Etag
        base = [(k, f'"{cid}.html"'.encode()) if k == b"etag" else (k, v) for k, v in base]
        headers = base + [(b"content-type", listing.HTML_TYPE.encode()),
                          (b"content-security-policy", listing.HTML_CSP.encode())]
    else:
        headers = base + [(b"content-type", listing.JSON_TYPE.encode())]
    headers.append((b"vary", b"Accept"))
    if request.head:
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    entries = exporter.iter_dir(source, cid, resolve=False, max_entries=MAX_LISTING_ENTRIES)
    batch = await trio.to_thread.run_sync(_take, entries, LISTING_BATCH)
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    if request.html:
        head, tail = listing.html_head(ipfs_path, str(cid)), listing.HTML_TAIL
    else:
        head, tail = listing.json_head(ipfs_path, str(cid)), listing.JSON_TAIL
    first = True
    await send({"type": "http.response.body", "body": head.encode(), "more_body": True})
    while batch:
        rows = []
        for e in batch:
            rows.append(listing.html_row(ipfs_path, e) if request.html else listing.json_row(e, first))
            first = False
        await send({"type": "http.response.body", "body": "".join(rows).encode(), "more_body": True})
        if len(batch) < LISTING_BATCH:
            break
        batch = await trio.to_thread.run_sync(_take, entries, LISTING_BATCH)
    await send({"type": "http.response.body", "body": tail.encode(), "more_body": False})
