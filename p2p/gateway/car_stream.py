"""Which blocks a trustless-gateway response carries, in order, and their CAR framing.

Pure and synchronous: `select_blocks` walks the DAG through any block
getter (the node's store, or a hand-off from a fetch still running) and
yields verified (CID, bytes) pairs one at a time, so the driver streams a
CAR of any size in the memory of one block. The order is depth-first
pre-order (`order=dfs`), what @ipld/car readers and kubo produce.

- dag-scope=block: the root block only.
- dag-scope=entity: the root and, for a UnixFS file, every block needed to
  read the file's bytes in `entity-bytes` (all of it without a range); for a
  directory, symlink or raw block: the root block only (a HAMT-sharded
  directory's inner shards are not included; docs/GATEWAY.md).
- dag-scope=all: every block reachable from the root.
- car-dups=n: each block once; y: a block every time the walk reaches it.

Bounded: a walk hands out at most `MAX_CAR_BLOCKS` blocks, so a small DAG
whose links repeat one block (cheap to build, huge with dups=y) cannot make
the gateway stream without end.
"""

from __future__ import annotations

from typing import Callable, Iterator

from multiformats import CID as _MfCID

from shoal.store.dag.exporter import iter_links, stat
from shoal.store.dag.walk import DagWalk, WalkBudgetExceeded, block_identity
from shoal.store.errors import InvalidCID, MalformedBlock
from shoal.store.ipld import dagpb, unixfs, varint
from shoal.store.ipld.car import encode_header
from shoal.store.ipld.cid import CID, DAG_PB, RAW, cid_from_bytes, multihash_digest, parse_cid

from shoal.p2p.gateway.params import EntityBytes

MAX_CAR_BLOCKS = 4_000_000
MAX_INLINE_BYTES = 128  # an identity CID carries its block; longer ones are refused

Getter = Callable[[CID], bytes]

__all__ = ["MAX_CAR_BLOCKS", "car_header", "car_section", "gateway_cid", "select_blocks", "file_window"]


def gateway_cid(text: str) -> tuple[CID, bytes | None]:
    """(CID, inline block) for `/ipfs/{text}`: a supported CID (inline None), or a
    raw identity CID such as the `bafkqaaa` probe, whose block is its digest.
    InvalidCID (HTTP 400) for anything else."""
    try:
        return parse_cid(text), None
    except InvalidCID:
        if len(text) > 512:
            raise
        try:
            cid = _MfCID.decode(text)
        except Exception:
            raise InvalidCID(f"not a CID: {text[:80]!r}") from None
        if cid.hashfun.name != "identity" or cid.codec.name != RAW or cid.version != 1:
            raise
        data = multihash_digest(cid)
        if len(data) > MAX_INLINE_BYTES:
            raise InvalidCID(f"identity CID over {MAX_INLINE_BYTES} bytes") from None
        return cid.set(base="base32"), data


def car_header(root: CID) -> bytes:
    """The CARv1 header (its length prefix included) naming one root."""
    header = encode_header([root])
    return varint.encode(len(header)) + header


def car_section(cid: CID, data: bytes) -> bytes:
    """One CARv1 section: varint length, binary CID, block bytes."""
    raw = bytes(cid)
    return varint.encode(len(raw) + len(data)) + raw + data


def _decode_file(cid: CID, block: bytes) -> tuple[list[CID], list[int], int, int]:
    """(children, their sizes, own data length, content size) of a UnixFS file node."""
    node = dagpb.decode(block)
    if node.data is None:
        raise MalformedBlock(f"{cid}: dag-pb node without UnixFS data")
    fs = unixfs.decode(node.data)
    if len(fs.blocksizes) != len(node.links):
        raise MalformedBlock(f"{cid}: {len(node.links)} links but {len(fs.blocksizes)} blocksizes")
    children = [cid_from_bytes(link.hash) for link in node.links]
    return children, list(fs.blocksizes), len(fs.data or b""), fs.content_size()


def file_window(get: Getter, root: CID, entity: EntityBytes | None) -> tuple[int, int] | None:
    """(offset, length) of the entity-bytes range for a file root, None if the root is no file."""
    info = stat(get, root)
    if info.kind not in ("file", "raw") or info.size is None:
        return None
    if entity is None:
        return 0, info.size
    return entity.window(info.size)


def _file_blocks(get: Getter, root: CID, offset: int, length: int, dups: bool) -> Iterator[tuple[CID, bytes]]:
    """The blocks of a file DAG that a reader of [offset, offset+length) needs, DFS.

    A block reached again (deduplicated leaves, or an inner node shared by
    two spans) is expanded for each span it covers, but with dups=n sent once.
    """
    end = offset + length
    stack: list[tuple[CID, int]] = [(root, 0)]
    seen: set[object] = set()
    visits = 0
    while stack:
        cid, start = stack.pop()
        visits += 1
        if visits > MAX_CAR_BLOCKS:
            raise WalkBudgetExceeded(f"walk of more than {MAX_CAR_BLOCKS} blocks")
        data = get(cid)
        key = block_identity(cid)
        if dups or key not in seen:
            seen.add(key)
            yield cid, data
        if cid.codec.name == RAW:
            continue
        if cid.codec.name != DAG_PB:
            raise MalformedBlock(f"{cid}: codec {cid.codec.name} is not UnixFS")
        children, sizes, own, _ = _decode_file(cid, data)
        child_start = start + own
        wanted: list[tuple[CID, int]] = []
        for child, size in zip(children, sizes):
            if child_start + size > offset and child_start < end:
                wanted.append((child, child_start))
            child_start += size
        stack.extend(reversed(wanted))


def select_blocks(get: Getter, root: CID, scope: str, entity: EntityBytes | None,
                  dups: bool) -> Iterator[tuple[CID, bytes]]:
    """The (CID, block) pairs of a CAR response, in DFS order (see the module doc)."""
    if scope == "block" or root.codec.name == RAW or root.hashfun.name == "identity":
        yield root, get(root)
        return
    if scope == "entity":
        window = file_window(get, root, entity)
        if window is None:  # a directory or symlink: its root block is the entity
            yield root, get(root)
            return
        if window[1] == 0 and entity is not None:
            yield root, get(root)
            return
        yield from _file_blocks(get, root, window[0], window[1], dups)
        return
    walk = DagWalk([root], key=None if dups else block_identity, budget=MAX_CAR_BLOCKS)
    for cid in walk:
        data = get(cid)
        yield cid, data
        walk.push(iter_links(cid, data))
