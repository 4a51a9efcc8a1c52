"""The node's control API routes: each one a thin async wrapper over store/
and the node, with blocking store work in worker threads.

Long thread work (put, get's export) runs through `run_stoppable`
(shoal.p2p.net.thread_work.run_sync_cancellable): when the request is cancelled (its client disconnected, shoal.p2p.net.api) the store work sees
its CancelFlag at the next block and stops, undoing what it left half done
(an export removes its output; a put's blocks stay unpinned for gc), and
the request ends only once the thread has. `ls` streams its entries
(NDJSON) in bounded batches instead of building the listing in memory.
"""

from __future__ import annotations

import itertools
import json
import functools
import logging
from pathlib import Path
from typing import Any, AsyncGenerator, Callable, Iterator, TypeVar

import trio

from shoal.store.dag import disk_export, exporter
from shoal.store.ipld.car import export_car_file
from shoal.store.chunking.choice import DEFAULT_CHUNKER, chunker_for
from shoal.store.cancel import CancelFlag
from shoal.store.ipld.cid import CID, RAW, parse_cid
from shoal.store.energy.accounting import gc_measured, put_measured  # energy (issue 5): records put/gc
from shoal.store.errors import BlockNotFound, HashMismatch, InvalidInput, MalformedBlock, NotPinned, StoreError
from shoal.store.chunking.profiles import PROFILES

from shoal.p2p.net.api import ApiError, ByteChunks, ControlApi, NdjsonStream, param
from shoal.p2p.errors import P2PError
from shoal.p2p.exchange.fetch import FetchFailed, fetch_dag, find_holders, missing_blocks
from shoal.p2p.exchange.laned import LaneDispatcher
from shoal.p2p.exchange.gateway_source import Gateway
from shoal.p2p.net.node_config import parse_ec_scheme, parse_gateways
from shoal.p2p.exchange.handoff import ArrivingBlocks
from shoal.p2p.exchange.heal import HealingBlocks
from shoal.p2p.net.node import Node
from shoal.p2p.net.thread_work import run_sync_cancellable

log = logging.getLogger("shoal.api")

READ_PIECE = 1024 * 1024
_ARRIVAL_POLL_S = 0.5
LS_BATCH = 512  # directory entries listed per thread hop: one hop per entry costs more than the entry

T = TypeVar("T")


CLIENT_GONE = "the request was cancelled (its client went away)"


async def run_stoppable(fn: Callable[[CancelFlag], T]) -> T:
    """`fn(flag)` in a worker thread, stopped (never abandoned) if the request is cancelled."""
    return await run_sync_cancellable(fn, reason=CLIENT_GONE)


def _gateways_param(p: dict[str, Any], node: Node) -> tuple[Gateway, ...]:
    """The request's `gateways` (URLs) after the node's `[fetch] gateways`, deduplicated."""
    asked = param(p, "gateways", list, [])
    try:
        extra = parse_gateways(asked, "parameter gateways")
        return parse_gateways([g.url for g in (*node.options.fetch.gateways, *extra)], "gateways")
    except P2PError as exc:
        raise ApiError(str(exc)) from None


def _umask_param(p: dict[str, Any]) -> int | None:
    value = param(p, "umask", int, None)
    if value is not None and value > 0o777:
        raise ApiError("parameter umask must be at most 0o777")
    return value  # type: ignore[no-any-return]


def _ls_row(e: exporter.DirEntry) -> dict[str, Any]:
    return {"name": e.name, "cid": str(e.cid), "size": e.size, "kind": e.kind}


def _take(it: Iterator[T], n: int) -> list[T]:
    return list(itertools.islice(it, n))


def _complete_locally(repo: Any, cid: CID) -> int | None:
    """How many blocks the DAG has if every one is in the store, else None."""
    try:
        return len(repo.dag_keys(cid))
    except (BlockNotFound, HashMismatch):
        return None


def _ec_scheme(text: str) -> tuple[int, int]:
    """"K+M" from the API or config -> (K, M); ApiError with one line otherwise."""
    try:
        return parse_ec_scheme(text)
    except ValueError as exc:
        raise ApiError(str(exc)) from None


def _chunker_for_path(name: str, profile: Any, path: Path) -> Any:
    """Worker thread: the chunker for what `path` is (InvalidInput if it is not there)."""
    if not path.exists():
        raise InvalidInput(f"no such file or directory: {path}")
    return chunker_for(name, profile, path)


def absolute_path(text: str, field: str) -> Path:
    """A path the client sent; it must be absolute.

    The node runs as its own user in its own working directory: a relative
    path would be resolved against that directory, not the one the user
    typed it in, and could silently read or write the wrong file. The CLI
    resolves every path in its own process before sending it.
    """
    path = Path(text)
    if not path.is_absolute():
        error = ApiError(f"{field} must be an absolute path, not {text!r}")
        error.hint = "resolve it where the user typed it (the shoal CLI does)"
        raise error
    return path


def build_api(node: Node, token: str) -> ControlApi:
    api = ControlApi(token)
    repo = node.repo

    async def run(fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    async def ensure_local(cid: CID, guard: bool = True) -> dict[str, Any]:
        """Fetch whatever part of the DAG is not here yet (nothing if complete).
        `guard=False` if the caller holds the store guard already."""
        result = await fetch_dag(node, cid, guard=guard)
        return {"fetched_blocks": result.fetched_blocks, "fetched_bytes": result.fetched_bytes,
                "local_blocks": result.local_blocks, "holders": result.holders}

    async def ident(p: dict[str, Any]) -> Any:
        doc: dict[str, Any] = {"peer_id": str(node.peer_id), "addrs": node.addrs_with_id()}
        gateway_url = node.options.extra.get("gateway_url")
        if gateway_url:
            doc["gateway"] = gateway_url
        return doc

    async def peers(p: dict[str, Any]) -> Any:
        # "lanes": where the peer's lanes listen, once it told us (the laned get uses them).
        return [{**rec.as_json(), "lanes": [str(a) for a in node.peer_lane_addrs(rec.peer_id)]}
                for rec in node.peers.all()]

    async def stats(p: dict[str, Any]) -> Any:
        """Traffic counters, so operators (and tests) can see who served what."""
        return {"served_bytes": node.served_bytes, "received_bytes": node.received_bytes,
                "connected_peers": len(node.connected_peers()),
                "connections": node.connection_stats()}

    async def node_status(p: dict[str, Any]) -> Any:
        """`shoal node status`: uptime, peers and the event loop's worst recent stall."""
        return node.status()

    async def put(p: dict[str, Any]) -> Any:
        path = absolute_path(param(p, "path"), "path")
        profile_name = param(p, "profile", str, None)
        if profile_name is not None and profile_name not in PROFILES:
            raise ApiError(f"unknown profile {profile_name}")
        chunker_name = param(p, "chunker", str, DEFAULT_CHUNKER)
        follow = param(p, "follow_symlinks", bool, True)
        replicas = param(p, "replicas", int, None)  # None: leave the placement as it is
        ec_text = param(p, "ec", str, None)  # "K+M": erasure-coded shards instead of replicas
        ec_drop_local = param(p, "ec_drop_local", bool, False)
        ec_threshold = param(p, "ec_threshold", int, None)  # repair below this many healthy shards
        if ec_text is None and replicas is None:
            ec_text = node.options.extra.get("default_ec") or None
        ec = _ec_scheme(ec_text) if ec_text is not None else None
        if ec is not None and replicas is not None and replicas > 1:
            raise ApiError("choose --replicas or --ec, not both")
        if (ec_drop_local or ec_threshold is not None) and ec is None:
            raise ApiError("--ec-drop-local and --ec-threshold need --ec K+M")
        # ... of an object already placed; a new one gets the node's default
        # (`node start --replicas`, [replication] replicas in config.toml).
        default_replicas = int(node.options.extra.get("default_replicas") or 1)
        profile = PROFILES[profile_name] if profile_name else repo.default_profile()
        # In a worker thread: "auto" parses a single file's safetensors header
        # (megabytes of JSON for a large model), which stalled every peer.
        chunker = await run(_chunker_for_path, chunker_name, profile, path)
        async with node.store_guard.shared():
            # An object to replicate gets its proof-of-storage commitment in the same
            # pass (Repo.add commit=True), so placement need not re-read it.
            wanted = replicas if replicas is not None else default_replicas
            commit = ec is None and wanted > 1 and node.replication is not None
            result = await run_stoppable(lambda flag: put_measured(
                repo, path, profile=profile, chunker=chunker, commit=commit, progress=flag.progress,
                follow_symlinks=follow))
        doc: dict[str, Any] = {"cid": str(result.cid), "size": result.size, "name": path.name}
        placer = node.replication
        if ec is not None:
            if placer is None:
                raise ApiError("replication is not available on this node")
            doc["placement"] = await placer.place_ec(result.cid, ec[0], ec[1], ec_drop_local, ec_threshold)
            return doc
        if replicas is None and default_replicas > 1 and placer is not None and not placer.places(result.cid):
            replicas = default_replicas
        if replicas is not None and replicas > 1:
            if placer is None:
                raise ApiError("replication is not available on this node")
            doc["placement"] = await placer.place(result.cid, replicas)
        elif replicas == 1 and placer is not None and placer.places(result.cid):
            doc["placement"] = await placer.place(result.cid, 1)  # back to the owner's copy only
        return doc

    async def get(p: dict[str, Any]) -> Any:
        """Fetch and export at once: a file is written while its blocks arrive.

        The export (in a worker thread) takes each fetched block as soon as
        the fetch has hash-checked it (p2p/exchange/handoff.py), instead
        of reading the whole DAG back after the fetch. A directory's files
        too: the fetch asks for blocks in the export's (depth-first) order.
        Each file is written to a temp name and renamed only when complete,
        and a failed fetch fails the export, which removes every file and
        directory it made: a failed get leaves no partial tree behind.
        """
        cid = parse_cid(param(p, "cid"))
        output = absolute_path(param(p, "output"), "output")
        limits: dict[str, Any] = {"max_size": param(p, "max_size", int, None), "umask": _umask_param(p)}
        gateways = _gateways_param(p, node)
        async with node.store_guard.shared():
            present = await run(_complete_locally, repo, cid)
            if present is not None:  # nothing to fetch: export from the store, reading ahead
                source = HealingBlocks(node)  # a corrupt local block is replaced from a peer as it is read
                await run_stoppable(lambda flag: disk_export.export_to_path(
                    source, cid, output, prefetch=exporter.PREFETCH_BLOCKS, cancel=flag, **limits))
                return {"cid": str(cid), "output": str(output), "fetched_blocks": 0, "fetched_bytes": 0,
                        "local_blocks": present, "holders": 0}
        found: list[Any] | None = None
        if node.lanes is not None and node.lanes.size > 0 and not gateways and cid.codec.name != RAW:
            # Lanes on both sides: the leaves move lane to lane (laned_get);
            # holders without lanes (older peers, --lanes 1) mean today's path.
            found = await find_holders(node, cid)
            laned = [peer for peer in found if node.peer_lane_addrs(peer)]
            if laned:
                try:
                    return await laned_get(cid, output, limits, found, laned)
                except FetchFailed as exc:
                    if len(laned) == len(found):
                        raise
                    # Some blocks no holder's lanes gave; holders without lanes
                    # may have them. What the lanes stored stays (a resumed get).
                    log.warning("get %s through lanes failed (%s); trying every holder in-process", cid, exc)
        return await plain_get(cid, output, limits, gateways, found or None)

    async def fetch_and_export(cid: CID, output: Path, limits: dict[str, Any], stats: dict[str, Any],
                               filler: disk_export.LeafFiller | None = None,
                               **fetch_args: Any) -> tuple[BaseException | None, BaseException | None]:
        """fetch_dag and the export side by side: the export (in a worker
        thread) takes each block from the fetch's hand-off as it is verified,
        in the fetch's depth-first order, files and directories alike. Fills
        `stats`; returns the fetch's and the export's failures (None if none).
        An export that fails or is refused stops the fetch at once: nobody
        will read what it would still bring."""
        blocks = ArrivingBlocks(HealingBlocks(node))
        fetch_error: BaseException | None = None
        export_error: BaseException | None = None

        async def stored(_cid: CID, _data: bytes) -> None:
            blocks.arrived()

        async def fetch_all() -> None:
            nonlocal fetch_error
            try:
                result = await fetch_dag(node, cid, on_stored=stored, on_verified=blocks.verified,
                                         on_wanted=blocks.expect, **fetch_args)
                stats.update(fetched_blocks=result.fetched_blocks, fetched_bytes=result.fetched_bytes,
                             local_blocks=result.local_blocks, holders=result.holders,
                             gateways_dropped=result.gateways_dropped)
            except Exception as exc:  # the caller raises it, outside the nursery
                fetch_error = exc
            finally:
                blocks.finish()

        def export(flag: CancelFlag) -> None:
            try:
                disk_export.export_to_path(blocks, cid, output, cancel=flag, filler=filler, **limits)
            finally:
                blocks.export_over()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(fetch_all)
            try:
                await run_stoppable(export)
            except Exception as exc:
                export_error = exc
                nursery.cancel_scope.cancel()
        stats.update(export_handed_off=blocks.handed_off, export_store_reads=blocks.store_reads)
        return fetch_error, export_error

    def raise_failure(cid: CID, fetch_error: BaseException | None, export_error: BaseException | None) -> None:
        """The fetch's failure first (it says which block no holder gave); else the export's."""
        if fetch_error is not None:
            raise fetch_error
        if isinstance(export_error, MalformedBlock):
            # The export met the bad block before the (now stopped) fetch
            # could say which object it spoils: say it here, as the fetch would.
            raise MalformedBlock(f"the DAG of {cid} is malformed: {export_error}") from export_error
        if export_error is not None:
            raise export_error

    async def plain_get(cid: CID, output: Path, limits: dict[str, Any], gateways: tuple[Gateway, ...],
                        holders: list[Any] | None) -> dict[str, Any]:
        """The get in the node's own process: every block through its event loop."""
        stats: dict[str, Any] = {}
        fetch_error, export_error = await fetch_and_export(cid, output, limits, stats, gateways=gateways,
                                                           holders=holders)
        if isinstance(fetch_error, P2PError) and not stats.get("fetched_blocks") and node.replication is not None:
            # No peer has the plain DAG: an erasure-coded object is rebuilt from
            # K of its shards (verified block by block), then exported as usual.
            try:
                rebuilt = await node.replication.recover_ec(cid)
            except P2PError as exc:
                raise fetch_error from exc
            async with node.store_guard.shared():
                await run_stoppable(lambda flag: disk_export.export_to_path(
                    repo.blockstore, cid, output, prefetch=exporter.PREFETCH_BLOCKS, cancel=flag, **limits))
            return {"cid": str(cid), "output": str(output), "fetched_blocks": 0, "fetched_bytes": 0,
                    "holders": 0, **rebuilt}
        raise_failure(cid, fetch_error, export_error)
        return {"cid": str(cid), "output": str(output), **stats}

    async def laned_get(cid: CID, output: Path, limits: dict[str, Any], holders: list[Any],
                        laned: list[Any]) -> dict[str, Any]:
        """The get with lanes (shoal.p2p.exchange.laned): the main fetch brings
        directories and inner nodes, handed to the export as in `plain_get`;
        the export has the lanes write every raw leaf of a file straight into
        its temp file. The whole get holds the store guard: the lanes' blocks
        are unpinned until the end check has seen them."""
        assert node.lanes is not None
        dispatcher = LaneDispatcher(node.lanes, laned, lane_addrs=node.peer_lane_addrs, store=repo.blockstore,
                                    peers=node.peers, quarantine=repo.quarantine)
        stats: dict[str, Any] = {}
        async with node.store_guard.shared():
            async with trio.open_nursery() as lanes_nursery:
                await lanes_nursery.start(dispatcher.run)
                fetch_error, export_error = await fetch_and_export(
                    cid, output, limits, stats, filler=dispatcher, holders=holders, guard=False,
                    skip_file_leaves=True)
                lanes_nursery.cancel_scope.cancel()
            raise_failure(cid, fetch_error, export_error)
            # Success is a claim about the store, not about the jobs: check it.
            missing = await run(missing_blocks, repo.blockstore, cid)
        if missing:
            raise FetchFailed(f"get of {cid} ended with {len(missing)} blocks missing, e.g. {missing[0]}")
        lane = dispatcher.stats
        node.received_bytes += lane.fetched_bytes
        stats["fetched_blocks"] = stats.get("fetched_blocks", 0) + lane.fetched_blocks
        stats["fetched_bytes"] = stats.get("fetched_bytes", 0) + lane.fetched_bytes
        stats["local_blocks"] = stats.get("local_blocks", 0) + lane.copied_blocks
        stats["lanes"] = {"fetched_blocks": lane.fetched_blocks, "fetched_bytes": lane.fetched_bytes,
                          "copied_blocks": lane.copied_blocks, "outcomes": dict(lane.outcomes),
                          "holders": len(laned)}
        return {"cid": str(cid), "output": str(output), **stats}

    async def fetch(p: dict[str, Any]) -> Any:
        cid = parse_cid(param(p, "cid"))
        return {"cid": str(cid), **(await ensure_local(cid))}

    async def cat(p: dict[str, Any]) -> ByteChunks:
        cid = parse_cid(param(p, "cid"))
        offset = param(p, "offset", int, 0)
        length = param(p, "length", int, None)
        tensor = param(p, "tensor", str, None)
        from shoal.p2p.exchange.tensor_fetch import ensure_cat_range  # fetch only the blocks this read covers

        await ensure_cat_range(node, cid, offset, length, tensor)
        # A corrupt local block is replaced from a peer as it is read, and one a
        # gc evicted since ensure_cat_range is fetched again.
        source = HealingBlocks(node, refetch_missing=True)
        if tensor is not None:
            from shoal.store.dag.tensor_ranges import tensor_window

            offset, length = await run(tensor_window, source, cid, tensor, offset, length)
        st = await run(exporter.stat, source, cid)  # errors before the response starts
        if st.kind not in ("file", "raw"):  # as the offline read says, and before any byte is sent
            raise InvalidInput(f"{cid} is a {st.kind}, not a file")
        pieces = exporter.read_file(source, cid, offset, length, prefetch=exporter.PREFETCH_BLOCKS)

        async def stream() -> AsyncGenerator[bytes, None]:
            # Under the store guard, as `get` reads: a gc waits for the stream
            # instead of deleting the blocks it is reading. The API closes this
            # generator when the response ends or the client leaves, which
            # releases the guard.
            async with node.store_guard.shared():
                while True:
                    piece = await run(next, pieces, None)
                    if piece is None:
                        return
                    yield piece

        return stream()

    async def ls(p: dict[str, Any]) -> ByteChunks:
        """Stream the rows as NDJSON, LS_BATCH at a time: a 40,000-wide
        directory costs one batch of memory, and a client that leaves stops
        the listing at the next batch. An error after the first batch is a
        last line `{"error": ..., "kind": ...}`."""
        text = param(p, "cid", str, None)
        rows: Iterator[dict[str, Any]]
        if text is None:
            objs = await run(repo.objects)
            rows = iter([{"cid": o.cid, "name": o.name, "size": o.size, "kind": o.kind} for o in objs])
        else:
            cid = parse_cid(text)
            await ensure_local_root(cid)
            rows = map(_ls_row, exporter.iter_dir(repo.blockstore, cid))
        first = await run(_take, rows, LS_BATCH)  # errors before the response starts

        async def stream() -> AsyncGenerator[bytes, None]:
            batch = first
            while batch:
                yield "".join(json.dumps(r) + "\n" for r in batch).encode()
                if len(batch) < LS_BATCH:
                    return
                try:
                    batch = await run(_take, rows, LS_BATCH)
                except (StoreError, P2PError) as exc:
                    yield (json.dumps({"error": str(exc) or type(exc).__name__,
                                       "hint": getattr(exc, "hint", ""), "kind": type(exc).__name__}) + "\n").encode()
                    return

        return NdjsonStream(stream())

    async def ensure_local_root(cid: CID) -> None:
        if not repo.blockstore.has(cid):
            await ensure_local(cid)

    async def pins(p: dict[str, Any]) -> Any:
        return [r.cid for r in await run(repo.pins)]

    async def pin_add(p: dict[str, Any]) -> Any:
        cid = parse_cid(param(p, "cid"))
        async with node.store_guard.shared():
            try:
                await run(repo.pin_add, cid)
            except (BlockNotFound, HashMismatch):
                await ensure_local(cid, guard=False)  # the guard is ours already
                await run(repo.pin_add, cid)
        return {"pinned": str(cid)}

    async def pin_rm(p: dict[str, Any]) -> Any:
        """Unpin; for an object this node owns and replicates, give every replica back.

        The release is recorded first (audits and repairs stop at once, the
        holders are owed a release that the replication loop retries until
        they answer), then the local pin goes. An owned object whose pin is
        already gone (say, removed offline) is still released.
        """
        cid = parse_cid(param(p, "cid"))
        placer = node.replication
        release = await placer.release_object(cid) if placer is not None else None
        try:
            await run(repo.pin_rm, cid)
        except NotPinned:
            if release is None or not release["new"]:
                raise  # a second pin rm of a released object is as wrong as of any unpinned one
        doc: dict[str, Any] = {"unpinned": str(cid)}
        if release is not None:
            doc["release"] = release
        return doc

    async def gc(p: dict[str, Any]) -> Any:
        async with node.store_guard.exclusive():
            result = await run(gc_measured, repo, bool((p or {}).get("force", False)))
        return {"removed_blocks": result.removed_blocks, "freed_bytes": result.freed_bytes}

    async def verify(p: dict[str, Any]) -> Any:
        """Re-hash every block; with `repair`, quarantine the corrupt ones and
        fetch every pinned DAG left incomplete from the swarm."""
        repair = param(p, "repair", bool, False)
        async with node.store_guard.exclusive():
            report = await run(functools.partial(repo.verify, repair=repair))
        incomplete = list(report.incomplete_pins)
        repaired: list[str] = []
        if repair and incomplete:
            for pin in dict.fromkeys(a for a, _ in incomplete):  # each pin once, in order
                try:
                    await fetch_dag(node, parse_cid(pin))
                except (P2PError, StoreError) as exc:
                    log.warning("verify --repair: cannot restore %s from peers: %s", pin, exc)
                    continue
                repaired.append(pin)
            incomplete = [(a, b) for a, b in incomplete if a not in repaired]
        return report.as_json(incomplete, repaired)

    async def car_export(p: dict[str, Any]) -> Any:
        cid = parse_cid(param(p, "cid"))
        output = absolute_path(param(p, "output"), "output")
        # One shared hold from the fetch to the end of the export: fetched
        # blocks are not pinned, and a gc let in between deleted them.
        async with node.store_guard.shared():
            await ensure_local(cid, guard=False)
            written = await run(export_car_file, repo.blockstore, cid, output)
        return {"cid": str(cid), "output": str(output), "bytes": written}

    async def car_import(p: dict[str, Any]) -> Any:
        path = absolute_path(param(p, "path"), "path")
        async with node.store_guard.shared():
            result = await run(_import_car, repo, path)
        return result.as_json()

    api.json_route("GET", "/v1/id", ident)
    api.json_route("GET", "/v1/peers", peers)
    api.json_route("GET", "/v1/stats", stats)
    api.json_route("GET", "/v1/node/status", node_status)
    api.json_route("POST", "/v1/put", put)
    api.json_route("POST", "/v1/get", get)
    api.json_route("POST", "/v1/fetch", fetch)
    api.stream_route("GET", "/v1/cat", cat)
    api.stream_route("GET", "/v1/ls", ls)
    api.json_route("GET", "/v1/pins", pins)
    api.json_route("POST", "/v1/pin/add", pin_add)
    api.json_route("POST", "/v1/pin/rm", pin_rm)
    api.json_route("POST", "/v1/gc", gc)
    api.json_route("POST", "/v1/verify", verify)
    api.json_route("POST", "/v1/car/export", car_export)
    api.json_route("POST", "/v1/car/import", car_import)
    for route in node.routes:
        api.json_route(route.method, route.path, route.handler)
    return api


def _import_car(repo: Any, path: Path) -> Any:
    with open(path, "rb") as src:
        return repo.import_car(src)
