"""The Hugging Face Hub routes over a running node (the driver of `hf_routes`).

A name (kind, repo, revision) resolves through the node's name records
(`shoal.p2p.names.service.resolver_of(node)`, which applies the node's trust
policy) to a signed record: the repo's directory CID, its commit and its
file list. Repo info and tree listings are answered from the record alone;
a file's bytes come from the directory DAG: the path is walked from the
record's directory CID (so the bytes served are the ones the directory
names, whatever the record's file list says), the file's size and CID must
agree with the record's entry (else 502), and blocks the node lacks are
fetched from peers, hash-checked: a whole file by `fetch_dag` from every
holder at once while the response streams (each verified block handed to
the reader), a Range on demand as the path gateway does
(`shoal.p2p.gateway.files`), moving only the blocks it covers. On a node
with lanes whose holders advertise lanes, both read through the lanes
instead (shoal.p2p.gateway.lane_blocks): the exporter reads ahead a few
blocks and each missing one is a lane's job, handed back verified.
"""

from __future__ import annotations

import logging
import mimetypes
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Protocol, Sequence

import trio

from shoal.store.dag import exporter
from shoal.store.errors import BlockNotFound, InvalidCID, InvalidInput, StoreError
from shoal.store.ipld.cid import CID, parse_cid

from shoal.p2p.errors import NoPeers, P2PError
from shoal.p2p.exchange.fetch import fetch_dag
from shoal.p2p.exchange.handoff import ArrivingBlocks
from shoal.p2p.gateway.files import OnDemandBlocks, resolve_path, stream_file
from shoal.p2p.gateway.lane_blocks import LaneBlocks, lane_blocks, lane_holders
from shoal.p2p.gateway.hf_routes import (
    DEFAULT_PAGE_SIZE,
    HfError,
    HfRequest,
    NameRecordLike,
    base_url,
    find_file,
    is_commit,
    json_headers,
    next_link,
    repo_info,
    resolve_headers,
    tree_page,
    url_path,
)
from shoal.p2p.gateway.params import GatewayRequestError, parse_range

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

Send = Callable[[dict[str, Any]], Awaitable[None]]
log = logging.getLogger("shoal.gateway")
# Block requests in flight per holder for one file served whole. The exchange's default (16)
# put the reader's first block behind up to 31 others (1 MiB each) from two holders: the first
# byte of a resolve waited for ~32 MiB (0.26-0.56 s here under load); with 4 it waits for ~8 MiB
# (0.03-0.1 s), and a Hub client downloads several files at once, which adds up to the
# default again (bench/gateway.py: the gateway's time stays within ~10 % of `shoal get`).
FILE_INFLIGHT_PER_PEER = 4


class NameResolverLike(Protocol):
    """What the routes need of `shoal.p2p.names.service.resolver_of(node)` (trust already applied;
    both methods block on the name book)."""

    def resolve(self, kind: str, repo: str, revision: str) -> NameRecordLike | None: ...

    def repos(self) -> Sequence[NameRecordLike]: ...


def lookup(resolver: NameResolverLike, request: HfRequest) -> NameRecordLike:
    """The record a request names, or the Hub's RepoNotFound / RevisionNotFound. Blocking (the
    name book is SQLite): called in a worker thread."""
    record = resolver.resolve(request.kind, request.repo, request.revision)
    if record is not None:
        return record
    if any(r.kind == request.kind and r.repo == request.repo for r in resolver.repos()):
        raise HfError(404, "RevisionNotFound", f"{request.kind} {request.repo}: no revision {request.revision!r}")
    raise HfError(404, "RepoNotFound", f"{request.kind} {request.repo}: no such repository is known to this node")


async def serve_hf(node: "Node", resolver: NameResolverLike, request: HfRequest, raw_path: str,
                   headers: list[tuple[bytes, bytes]], fetch_one: Callable[[CID], Awaitable[None]],
                   send: Send, page_size: int = DEFAULT_PAGE_SIZE, fallback_url: str = "",
                   cache_pin: bool = False) -> None:
    """Answer one Hub request; refusals are sent here (HfError with X-Error-Code, others as text)."""
    try:
        try:
            record = await trio.to_thread.run_sync(lookup, resolver, request)
        except HfError:
            raise
        except (StoreError, P2PError) as exc:  # the name book could not be read
            raise GatewayRequestError(503, f"names cannot be resolved now: {exc}") from None
        if request.action == "info":
            await _send_json(send, request, repo_info(request, record), record.commit)
        elif request.action == "tree":
            page = tree_page(request, record, page_size)
            extra = []
            if page.next_cursor is not None:
                host = next((v.decode("latin-1") for k, v in headers if k.lower() == b"host"), None)
                link = next_link(base_url(host, fallback_url), url_path(request), request, page.next_cursor)
                extra.append((b"link", link.encode()))
            await _send_json(send, request, page.body, record.commit, extra)
        else:
            await _serve_file(node, request, record, headers, fetch_one, send, cache_pin)
    except HfError as exc:
        body = exc.body()
        await send({"type": "http.response.start", "status": exc.status,
                    "headers": json_headers(len(body)) + exc.headers()})
        await send({"type": "http.response.body", "body": b"" if request.head else body})
    except GatewayRequestError as exc:
        text = (str(exc) + "\n").encode()
        await send({"type": "http.response.start", "status": exc.status,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                (b"content-length", str(len(text)).encode())]})
        await send({"type": "http.response.body", "body": b"" if request.head else text})


async def _send_json(send: Send, request: HfRequest, body: bytes, commit: str,
                     extra: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": json_headers(len(body), commit) + (extra or [])})
    await send({"type": "http.response.body", "body": b"" if request.head else body})


async def _serve_file(node: "Node", request: HfRequest, record: NameRecordLike,
                      headers: list[tuple[bytes, bytes]], fetch_one: Callable[[CID], Awaitable[None]],
                      send: Send, cache_pin: bool) -> None:
    """HEAD or GET of one file: checked against the directory, then streamed.

    A whole-file GET starts fetching the record's file CID from every holder at once (`fetch_dag`,
    verified blocks handed to the reader, p2p/exchange/handoff.py) while the path is still being
    checked against the directory, so the first byte waits for one round of fetches, not for
    each block on the way in turn; if the check fails the fetch is cancelled and the answer is a
    502. A HEAD or a Range reads on demand (`OnDemandBlocks`), moving only the blocks it needs.
    With `--gateway-cache-pin` a file fetched whole is pinned once complete. On a node with lanes
    whose holders of the file advertise lanes, the file's blocks come through the lanes instead
    (shoal.p2p.gateway.lane_blocks), read ahead by the exporter; the path check is unchanged.
    """
    entry = find_file(record, request.path)
    if entry is None:
        raise HfError(404, "EntryNotFound", f"{request.path}: no such file in {record.repo}@{record.commit}",
                      record.commit)
    try:
        root, file_cid = parse_cid(record.cid), parse_cid(entry.cid)
    except InvalidCID as exc:
        raise GatewayRequestError(502, f"the name record of {record.repo} has a bad CID: {exc}") from None
    size = entry.size
    range_header = next((v.decode("latin-1") for k, v in headers if k.lower() == b"range"), None)
    wanted = parse_range(range_header, size)  # a 416 is a GatewayRequestError
    status, offset, length = (200, 0, size) if wanted is None else (206, wanted.start, wanted.length)
    mime = mimetypes.guess_type(request.path.rsplit("/", 1)[-1])[0] or "application/octet-stream"
    out = resolve_headers(record, entry, is_commit(request.revision)) + [
        (b"content-type", mime.encode()), (b"content-length", str(length).encode())]
    if wanted is not None:
        out.append((b"content-range", wanted.content_range(size).encode()))
    source = OnDemandBlocks(node, fetch_one)
    whole = wanted is None and not request.head and size > 0
    # With lanes, the file's blocks come through them (shoal.p2p.gateway.lane_blocks) when
    # its holders have lanes: a whole file then reads ahead through the exporter, not fetch_dag.
    holders = await lane_holders(node, file_cid) if whole and node.lanes is not None else None
    async with lane_blocks(node, file_cid, fetch_one, holders=holders or None) as laned:
        if laned is not None and whole and not holders:
            laned = None  # no holder has lanes: fetch_dag as without them
        await _serve_file_from(node, request, (root, file_cid, size), (status, offset, length), out, source,
                               laned, send, cache_pin)


async def _serve_file_from(node: "Node", request: HfRequest, file: tuple[CID, CID, int],
                           span: tuple[int, int, int], out: list[tuple[bytes, bytes]], source: OnDemandBlocks,
                           laned: LaneBlocks | None, send: Send, cache_pin: bool) -> None:
    """`_serve_file` once the reader is chosen: `laned` if the lanes fetch, else fetch_dag
    (a whole file) or on demand."""
    root, file_cid, size = file
    status, offset, length = span
    whole = status == 200 and not request.head and length > 0
    blocks = ArrivingBlocks(node.repo.blockstore) if whole and laned is None else None
    reader: exporter.Source = blocks if blocks is not None else (laned if laned is not None else source)
    started = False
    failure: GatewayRequestError | None = None

    async def tracked(message: dict[str, Any]) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    async def fetch_all(arriving: ArrivingBlocks) -> None:
        try:
            await fetch_dag(node, file_cid, on_stored=lambda _c, _d: _arrived(arriving),
                            max_inflight_per_peer=FILE_INFLIGHT_PER_PEER,
                            on_verified=arriving.verified, on_wanted=arriving.expect)
            if cache_pin:
                async with node.store_guard.shared():
                    await trio.to_thread.run_sync(node.repo.pin_add, file_cid)
        except (P2PError, StoreError) as exc:  # the reader then finds the block missing
            log.warning("gateway fetch of %s failed: %s", file_cid, exc)
        finally:
            arriving.finish()

    async with trio.open_nursery() as nursery:
        if blocks is not None:
            nursery.start_soon(fetch_all, blocks)
        try:
            await _check_entry(source, reader, root, file_cid, request.path, size)
            if request.head or length == 0:
                await send({"type": "http.response.start", "status": status, "headers": out})
                await send({"type": "http.response.body", "body": b""})
            else:
                await stream_file(reader, file_cid, offset, length, status, out, tracked)
                if laned is not None and whole and cache_pin:
                    await _pin(node, file_cid)
        except GatewayRequestError as exc:
            failure = exc
        except (BlockNotFound, NoPeers) as exc:
            if started:
                raise  # the body is cut short: the client sees a truncated download and resumes it
            failure = GatewayRequestError(503, f"{request.path}: no connected peer has it ({exc})")
        except (StoreError, P2PError) as exc:
            if started:
                raise
            failure = GatewayRequestError(502, f"{request.path}: could not be fetched: {exc}")
        finally:
            if blocks is not None:
                blocks.export_over()
            if failure is not None:
                nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def _pin(node: "Node", cid: CID) -> None:
    """`--gateway-cache-pin` after a file was served whole through the lanes (the body is sent)."""
    try:
        async with node.store_guard.shared():
            await trio.to_thread.run_sync(node.repo.pin_add, cid)
    except StoreError as exc:
        log.warning("gateway: could not pin %s: %s", cid, exc)


async def _arrived(arriving: ArrivingBlocks) -> None:
    arriving.arrived()


async def _check_entry(dir_source: OnDemandBlocks, file_source: exporter.Source, root: CID, file_cid: CID,
                       path: str, size: int) -> None:
    """The directory `root` holds `file_cid` at `path`, a file of `size` bytes; else a 502."""
    try:
        target = await trio.to_thread.run_sync(resolve_path, dir_source, root, tuple(path.split("/")))
    except GatewayRequestError as exc:
        raise GatewayRequestError(502, f"the directory {root} does not hold {path} as its name record "
                                       f"says ({exc})") from None
    except InvalidInput as exc:  # a path through a file
        raise GatewayRequestError(502, f"{path}: {exc}") from None
    if target != file_cid:
        raise GatewayRequestError(502, f"{path}: the directory {root} holds {target}, not the record's {file_cid}")
    try:
        info = await trio.to_thread.run_sync(exporter.stat, file_source, target)
    except InvalidInput as exc:
        raise GatewayRequestError(502, f"{path}: {exc}") from None
    if info.kind not in ("file", "raw") or info.size != size:
        raise GatewayRequestError(502, f"{path}: {target} is a {info.kind} of {info.size} bytes, the record "
                                       f"says a file of {size}")
