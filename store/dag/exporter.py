"""Read UnixFS DAGs back: stat, byte ranges, directory listings, walks.

Every block is read through a `BlockGetter` (a blockstore's `get`, or later a
network fetcher), which must return hash-verified bytes or raise
BlockNotFound. Range reads use the parents' blocksizes to skip subtrees, so
`read_file(cid, offset, length)` fetches only the blocks covering the range.

The exporter trusts nothing in a DAG: blocksizes must match the children's
real sizes and each File node's filesize, names must be safe path
components, links must be CIDs. Violations raise MalformedBlock; missing
blocks BlockNotFound; nothing else escapes on bad input. Traversals use
explicit stacks, so a deep hostile DAG cannot exhaust the Python stack.

Decompression bombs: a few KB of blocks can declare a tree of 2^30 entries
or a file of a PiB. Listings stream (`iter_dir`) under an entry budget
(ExportRefused past it); a directory that contains itself, a HAMT that
links the same sub-shard twice, and a flat directory with a duplicate name
are malformed. Writing a DAG out as files and directories (planned first,
refused before anything is written) is shoal.store.dag.disk_export.

Not here: HAMT writing (reading sharded directories is supported), symlink
export (refused with InvalidInput, for the same reason import refuses them).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Union

from shoal.store.ipld import dagpb, unixfs
from shoal.store.persist.blockstore import Blockstore
from shoal.store.cancel import CancelFlag
from shoal.store.ipld.cid import CID, DAG_PB, RAW, cid_from_bytes
from shoal.store.errors import InvalidCID, InvalidInput, MalformedBlock, StoreError
from shoal.store.dag.walk import DagWalk, block_identity
from shoal.store.ipld.unixfs import DataType, UnixFSData, valid_hamt_fanout

__all__ = [
    "BlockGetter", "Stat", "DirEntry", "stat", "read_file", "list_dir", "iter_dir",
    "ExportRefused", "walk_dag", "iter_links", "DEFAULT_MAX_ENTRIES", "Leaf", "Inline", "file_layout",
    "is_file_node", "links_of",
]

# Entries (files and directories) one export or listing may produce unless
# the caller sets its own budget: well above real datasets (ImageNet's
# training set is 1.3 M files), far below what a few KB of repeated
# directory blocks can declare.
DEFAULT_MAX_ENTRIES = 10_000_000


# Blocks a whole-file export reads ahead (see _Prefetcher): enough to keep
# both cores and the disk busy, few enough to bound memory (1 MiB each).
PREFETCH_BLOCKS = 8
PREFETCH_THREADS = 4


class BlockGetter(Protocol):
    """Returns verified bytes for a CID, or raises BlockNotFound."""

    def __call__(self, cid: CID) -> bytes: ...


class BlockSource(Protocol):
    """Anything with a thread-safe `get` (a blockstore, shoal.p2p.exchange.handoff.ArrivingBlocks)."""

    def get(self, cid: CID) -> bytes: ...


Source = Union[Blockstore, BlockSource, BlockGetter, Callable[[CID], bytes]]


def _getter(source: Source) -> Callable[[CID], bytes]:
    get = getattr(source, "get", None)
    if callable(get):
        return get  # type: ignore[no-any-return]
    return source  # type: ignore[return-value]


@dataclass(frozen=True)
class Stat:
    """What a CID is. `size` is file bytes (None for directories)."""

    cid: CID
    kind: str  # "file", "dir", "raw" (a raw block) or "symlink"
    size: int | None
    block_size: int
    mode: int | None = None  # UnixFS mode bits, when the root node records them


class ExportRefused(StoreError):
    """An export or listing over its budget (entries, `max_size`): nothing was written."""

    hint = "check the CID; if the object is really this large, raise the limit (get --max-size)"


@dataclass(frozen=True)
class DirEntry:
    name: str
    cid: CID
    size: int | None  # file bytes; None for directories or when not resolved
    kind: str  # as in Stat, or "unknown" when not resolved


def _child_cid(raw: bytes) -> CID:
    try:
        return cid_from_bytes(raw)
    except InvalidCID as exc:
        raise MalformedBlock(f"link to an unsupported CID: {exc}") from None


def _decode_pb(cid: CID, block: bytes) -> tuple[dagpb.PBNode, UnixFSData]:
    node = dagpb.decode(block)
    if node.data is None:
        raise MalformedBlock(f"{cid}: dag-pb node without UnixFS data")
    return node, unixfs.decode(node.data)


def _file_size(cid: CID, node: dagpb.PBNode, fs: UnixFSData) -> int:
    """Check a File/Raw node's bookkeeping and return its content size."""
    if len(fs.blocksizes) != len(node.links):
        raise MalformedBlock(f"{cid}: {len(node.links)} links but {len(fs.blocksizes)} blocksizes")
    size = fs.content_size()
    if fs.filesize is not None and fs.filesize != size:
        raise MalformedBlock(f"{cid}: filesize {fs.filesize} != data + blocksizes {size}")
    return size


def _is_dir(fs: UnixFSData) -> bool:
    return fs.type in (DataType.DIRECTORY, DataType.HAMT_SHARD)


def _kind(fs: UnixFSData) -> str:
    if _is_dir(fs):
        return "dir"
    if fs.type == DataType.SYMLINK:
        return "symlink"
    if fs.type in (DataType.FILE, DataType.RAW):
        return "file"
    raise MalformedBlock(f"unsupported UnixFS type {fs.type.name}")


def _stat_block(cid: CID, block: bytes) -> Stat:
    codec = cid.codec.name
    if codec == RAW:
        return Stat(cid, "raw", len(block), len(block))
    if codec != DAG_PB:
        raise MalformedBlock(f"{cid}: codec {codec} is not UnixFS")
    node, fs = _decode_pb(cid, block)
    kind = _kind(fs)
    if kind == "dir":
        size = None
    elif kind == "symlink":
        size = len(fs.data or b"")
    else:
        size = _file_size(cid, node, fs)
    return Stat(cid, kind, size, len(block), fs.mode)


def stat(source: Source, cid: CID) -> Stat:
    """Kind and size of the object at `cid`, from its root block only."""
    return _stat_block(cid, _getter(source)(cid))


class _Prefetcher:
    """Gets the next few blocks of a walk in worker threads, handed out in order.

    Why: a serial export waits for each block's read (a disk round trip:
    blocks are written past the page cache) and then hashes it (every get
    re-verifies) on one core; reading and verifying the next `depth` blocks
    concurrently overlaps the waits and uses the second core (bench/transfer.py
    breakdown: the local get). Memory: at most `depth` blocks ahead. An error
    of a prefetched get surfaces only when the walk reaches that block, as
    it would have without prefetching. `get` must be thread-safe (the
    blockstores are) and should not wait for blocks still on their way: a
    get that overlaps a fetch takes them from p2p/exchange/handoff.py instead.
    """

    def __init__(self, get: Callable[[CID], bytes], depth: int) -> None:
        self._get = get
        self.depth = depth
        self._pool: ThreadPoolExecutor | None = None
        self._ahead: dict[tuple[int, bytes], Future[bytes]] = {}

    def get(self, cid: CID) -> bytes:
        fut = self._ahead.pop((int(cid.codec.code), bytes(cid)), None)
        return fut.result() if fut is not None else self._get(cid)

    def hint(self, upcoming: list[CID]) -> None:
        """`upcoming`: the next blocks of the walk, nearest first."""
        if self.depth <= 0:
            return
        for cid in upcoming[: self.depth]:
            key = (int(cid.codec.code), bytes(cid))
            if key in self._ahead or len(self._ahead) >= self.depth:
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(min(self.depth, PREFETCH_THREADS),
                                                thread_name_prefix="shoal-export")
            self._ahead[key] = self._pool.submit(self._get, cid)

    def close(self) -> None:
        for fut in self._ahead.values():
            fut.cancel()
        self._ahead.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)  # a running get finishes on its own
            self._pool = None


def read_file(source: Source, cid: CID, offset: int = 0,
              length: int | None = None, *, prefetch: int = 0) -> Iterator[bytes]:
    """Yield the bytes [offset, offset+length) of a file, in order.

    Only blocks overlapping the range are fetched. A range past the end
    yields nothing; a range running past the end is cut at the end.
    `prefetch` > 0 reads (and verifies) up to that many upcoming blocks in
    worker threads while the caller consumes the current one; the source
    must then be thread-safe.
    """
    if offset < 0 or (length is not None and length < 0):
        raise InvalidInput("offset and length must be non-negative")
    end = None if length is None else offset + length
    if end is not None and end <= offset:
        return
    ahead = _Prefetcher(_getter(source), prefetch)
    try:
        yield from _read_range(ahead, cid, offset, end)
    finally:
        ahead.close()


def _read_range(ahead: _Prefetcher, cid: CID, offset: int, end: int | None) -> Iterator[bytes]:
    # Stack entries: (cid, absolute start of its content, size its parent promised).
    stack: list[tuple[CID, int, int | None]] = [(cid, 0, None)]
    while stack:
        if ahead.depth:  # the block about to be popped and the next ones after it
            ahead.hint([c for c, _, _ in reversed(stack[-ahead.depth:])])
        node_cid, start, promised = stack.pop()
        block = ahead.get(node_cid)
        if node_cid.codec.name == RAW:
            if promised is not None and len(block) != promised:
                raise MalformedBlock(f"{node_cid}: raw leaf of {len(block)} bytes, parent says {promised}")
            yield from _slice(block, start, offset, end)
            continue
        if node_cid.codec.name != DAG_PB:
            raise MalformedBlock(f"{node_cid}: codec {node_cid.codec.name} is not UnixFS")
        node, fs = _decode_pb(node_cid, block)
        if fs.type not in (DataType.FILE, DataType.RAW):
            raise InvalidInput(f"{node_cid} is a {_kind(fs)}, not a file")
        size = _file_size(node_cid, node, fs)
        if promised is not None and size != promised:
            raise MalformedBlock(f"{node_cid}: holds {size} bytes, parent says {promised}")
        if fs.data:
            yield from _slice(fs.data, start, offset, end)
        child_start = start + len(fs.data or b"")
        wanted: list[tuple[CID, int, int | None]] = []
        for link, bs in zip(node.links, fs.blocksizes):
            if child_start + bs > offset and (end is None or child_start < end):
                wanted.append((_child_cid(link.hash), child_start, bs))
            child_start += bs
        stack.extend(reversed(wanted))


@dataclass(frozen=True)
class Leaf:
    """A raw leaf of a file: its bytes belong at `offset`, and its parent says it holds `size` bytes."""

    cid: CID
    offset: int
    size: int


@dataclass(frozen=True)
class Inline:
    """Bytes a file's dag-pb node carries itself (its UnixFS data), at `offset` of the file."""

    offset: int
    data: bytes


def file_layout(source: Source, cid: CID, cancel: CancelFlag | None = None, *,
                root_block: bytes | None = None) -> Iterator[Union[Leaf, Inline]]:
    """Where each piece of the file at `cid` (a dag-pb File node) goes, in file order,
    without reading a raw leaf.

    Why: a laned export (shoal.store.dag.disk_export's `filler`) has each raw
    leaf written into the output by another process; only the inner nodes
    (small: links and blocksizes) are read here, through `source`. They are
    checked as `read_file` checks them (blocksizes against each child's
    filesize, types, codecs); a raw leaf's size can only be checked by whoever
    reads it, against `Leaf.size`. `root_block`: the root's bytes if the
    caller has them already.
    """
    fetch = _getter(source)
    root_key = _key(cid)

    def get(c: CID) -> bytes:
        return root_block if root_block is not None and _key(c) == root_key else fetch(c)

    stack: list[tuple[CID, int, int | None]] = [(cid, 0, None)]
    while stack:
        if cancel is not None:
            cancel.check()
        node_cid, start, promised = stack.pop()
        if node_cid.codec.name == RAW:
            if promised is None:
                raise InvalidInput(f"{node_cid} is a raw block, not a dag-pb file")
            yield Leaf(node_cid, start, promised)
            continue
        if node_cid.codec.name != DAG_PB:
            raise MalformedBlock(f"{node_cid}: codec {node_cid.codec.name} is not UnixFS")
        node, fs = _decode_pb(node_cid, get(node_cid))
        if fs.type not in (DataType.FILE, DataType.RAW):
            raise InvalidInput(f"{node_cid} is a {_kind(fs)}, not a file")
        size = _file_size(node_cid, node, fs)
        if promised is not None and size != promised:
            raise MalformedBlock(f"{node_cid}: holds {size} bytes, parent says {promised}")
        if fs.data:
            yield Inline(start, fs.data)
        child_start = start + len(fs.data or b"")
        children: list[tuple[CID, int, int | None]] = []
        for link, bs in zip(node.links, fs.blocksizes):
            children.append((_child_cid(link.hash), child_start, bs))
            child_start += bs
        stack.extend(reversed(children))


def is_file_node(cid: CID, data: bytes) -> bool:
    """Whether a verified block is a UnixFS File (or Raw) dag-pb node: its raw
    links are file leaves, not directory entries. MalformedBlock if undecodable."""
    return links_of(cid, data)[1]


def links_of(cid: CID, data: bytes) -> tuple[list[CID], bool]:
    """`iter_links` and `is_file_node` from one decode of the block (a 1,024-link
    root is tens of KB of protobuf, decoded in Python)."""
    codec = cid.codec.name
    if codec == RAW:
        return [], False
    if codec != DAG_PB:
        raise MalformedBlock(f"{cid}: cannot follow links of codec {codec}")
    node = dagpb.decode(data)
    links = [_child_cid(link.hash) for link in node.links]
    is_file = False
    if links and node.data is not None:
        is_file = unixfs.decode(node.data).type in (DataType.FILE, DataType.RAW)
    return links, is_file


def _slice(data: bytes, start: int, offset: int, end: int | None) -> Iterator[bytes]:
    lo = max(0, offset - start)
    hi = len(data) if end is None else min(len(data), end - start)
    if hi > lo:
        yield data[lo:hi] if (lo or hi != len(data)) else data


def _check_name(name: str | None, parent: CID) -> str:
    if not name or name in (".", "..") or "/" in name or "\x00" in name:
        raise MalformedBlock(f"{parent}: unsafe directory entry name {name!r}")
    return name


def _key(cid: CID) -> tuple[int, bytes]:
    """A block's identity: CIDv0 and CIDv1 of one dag-pb block are the same block."""
    return int(cid.codec.code), bytes(cid.digest)


def _dir_links(get: Callable[[CID], bytes], cid: CID, node: dagpb.PBNode,
               fs: UnixFSData, cancel: CancelFlag | None = None) -> Iterator[tuple[str, CID]]:
    """(name, cid) of a directory's entries; walks HAMT shards if needed.

    A flat directory naming one entry twice, or a HAMT linking one
    sub-shard twice (both impossible in a DAG an importer wrote, and the
    way a few blocks can declare billions of entries), is malformed.
    """
    if fs.type == DataType.DIRECTORY:
        names: set[str] = set()
        for link in node.links:
            name = _check_name(link.name, cid)
            if name in names:
                raise MalformedBlock(f"{cid}: directory names {name!r} twice")
            names.add(name)
            yield name, _child_cid(link.hash)
        return
    shards = {_key(cid)}
    stack = [(cid, node, fs)]
    while stack:
        if cancel is not None:
            cancel.check()
        shard_cid, shard, sfs = stack.pop()
        if sfs.type != DataType.HAMT_SHARD or sfs.fanout is None or not valid_hamt_fanout(sfs.fanout):
            raise MalformedBlock(f"{shard_cid}: bad HAMT shard")
        width = len(f"{sfs.fanout - 1:X}")
        subs = []
        for link in shard.links:
            name = link.name or ""
            if len(name) < width:
                raise MalformedBlock(f"{shard_cid}: HAMT link name {name!r} too short")
            child = _child_cid(link.hash)
            if len(name) == width:
                if child.codec.name != DAG_PB or _key(child) in shards:
                    raise MalformedBlock(f"{shard_cid}: HAMT links sub-shard {child} twice or wrongly")
                shards.add(_key(child))
                sub_node, sub_fs = _decode_pb(child, get(child))
                subs.append((child, sub_node, sub_fs))
            else:
                yield _check_name(name[width:], shard_cid), child
        stack.extend(reversed(subs))


def iter_dir(source: Source, cid: CID, resolve: bool = True, *,
             max_entries: int = DEFAULT_MAX_ENTRIES, cancel: CancelFlag | None = None) -> Iterator[DirEntry]:
    """Entries of a directory (flat or HAMT), in stored order, one at a time.

    With `resolve`, each entry's root block is fetched to report its kind
    and size; without, raw entries are "file" and dag-pb ones "unknown".
    Holds one shard's links at a time, whatever the directory's width; more
    than `max_entries` entries raise ExportRefused (after those were yielded).
    """
    get = _getter(source)
    if cid.codec.name != DAG_PB:
        raise InvalidInput(f"{cid} is not a directory")
    node, fs = _decode_pb(cid, get(cid))
    if not _is_dir(fs):
        raise InvalidInput(f"{cid} is a {_kind(fs)}, not a directory")
    count = 0
    for name, child in _dir_links(get, cid, node, fs, cancel):
        count += 1
        if count > max_entries:
            raise ExportRefused(f"{cid}: directory has more than {max_entries} entries")
        if cancel is not None:
            cancel.check()
        if resolve:
            st = _stat_block(child, get(child))
            kind = "file" if st.kind == "raw" else st.kind
            yield DirEntry(name, child, st.size, kind)
        elif child.codec.name == RAW:
            yield DirEntry(name, child, None, "file")
        else:
            yield DirEntry(name, child, None, "unknown")


def list_dir(source: Source, cid: CID, resolve: bool = True, *,
             max_entries: int = DEFAULT_MAX_ENTRIES) -> list[DirEntry]:
    """`iter_dir` as a list (small directories; stream big ones with iter_dir)."""
    return list(iter_dir(source, cid, resolve, max_entries=max_entries))


def iter_links(cid: CID, data: bytes) -> list[CID]:
    """The CIDs a block links to: dag-pb links; nothing for raw blocks."""
    codec = cid.codec.name
    if codec == RAW:
        return []
    if codec != DAG_PB:
        raise MalformedBlock(f"{cid}: cannot follow links of codec {codec}")
    return [_child_cid(link.hash) for link in dagpb.decode(data).links]


def walk_dag(source: Source, cid: CID) -> Iterator[tuple[CID, bytes]]:
    """Every block of the DAG once, depth-first pre-order, as verified bytes.

    Blocks are deduplicated by (codec, multihash): CIDv0 and CIDv1 of one
    dag-pb block count once, and a raw CID never hides a dag-pb one's links.
    """
    get = _getter(source)
    walk = DagWalk([cid], key=block_identity)
    for current in walk:
        block = get(current)
        yield current, block
        walk.push(iter_links(current, block))
