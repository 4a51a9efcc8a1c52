"""The blocks of a UnixFS DAG, as the importer writes them, and the balanced layout.

`DagWriter` encodes, hashes and stores (through the store's staging
session) leaves, file parents, flat and HAMT-sharded directories, exactly
as `ipfs-unixfs-importer` 17.1.1 builds them (the layout rules are in
shoal.store.dag.importer); `BalancedLayout` is the streaming form of its
balanced file layout; `DagNode` is what a parent needs to link to a
finished subtree. Also the two shapes a same-pass commitment builder may
take (`ByteSink`, `PieceHasher`).

Not here: reading files or directories (shoal.store.dag.file_stream,
shoal.store.dag.tree_import).
"""

from __future__ import annotations

import base64
import hashlib
import mmap
from typing import Callable, NamedTuple, Protocol, runtime_checkable

from shoal.store.errors import InvalidInput
from shoal.store.ipld import dagpb, unixfs, varint
from shoal.store.ipld.cid import CID, DAG_PB, DAG_PB_CODE, RAW, RAW_CODE, cid_for_digest, cid_from_bytes
from shoal.store.persist.blockstore import Blockstore
from shoal.store.chunking.profiles import Profile

__all__ = ["DagNode", "DagWriter", "BalancedLayout", "ByteSink", "PieceHasher", "file_leaf_block", "DIR_DATA",
           "EMPTY_DIR_BLOCK"]

DIR_DATA = unixfs.encode(unixfs.UnixFSData(unixfs.DataType.DIRECTORY))
EMPTY_DIR_BLOCK = dagpb.encode(dagpb.PBNode((), DIR_DATA))


class ByteSink(Protocol):
    """What a same-pass commitment builder needs from the importer."""

    def update(self, data: bytes | memoryview) -> object: ...


@runtime_checkable
class PieceHasher(Protocol):
    """Hashes whole chunks read into its own buffer (see the module docstring)."""

    piece_size: int

    def ring(self, slots: int) -> mmap.mmap: ...

    def digest(self, index: int, chunk: memoryview) -> bytes: ...


class DagNode(NamedTuple):
    """A finished subtree, all its parent needs to link to it.

    A tuple of plain values, not a dataclass holding a CID object: an import
    of 100k files keeps one per file (and a block key per block) until the
    end. The garbage collector stops tracking a tuple of atomic values (so
    full collections skip it) but never an object like a CID; tracked, they
    made every full collection walk all of them while holding the GIL: 0.3 s pauses that stalled a node's event loop
    during a large put (issue 12 item 15).
    """

    cid_bytes: bytes
    tsize: int  # cumulative block bytes below and including this node
    content: int  # file bytes below (a parent's blocksize for it)
    blocks: int
    kind: str = "file"  # "file", "dir" (has entries) or "emptydir"

    @property
    def cid(self) -> CID:
        return cid_from_bytes(self.cid_bytes)


def _key_of(digest: bytes) -> str:
    """`block_key` of a sha2-256 CID, from its digest (no CID object needed)."""
    return base64.b32encode(b"\x12\x20" + digest).decode().rstrip("=")


def _maker(codec: str, version: int) -> Callable[[bytes], CID]:
    return lambda digest: cid_for_digest(codec, digest, version)


def _cid_bytes(codec_code: int, version: int, digest: bytes) -> bytes:
    if version == 0:
        return b"\x12\x20" + digest
    return b"\x01" + varint.encode(codec_code) + b"\x12\x20" + digest


def file_leaf_block(chunk: bytes | memoryview) -> bytes:
    """dag-pb leaf holding `chunk` as a UnixFS File, built with one copy.

    Equal to dagpb.encode(PBNode(data=unixfs.encode(File, data=chunk))),
    which the unit tests check.
    """
    n = len(chunk)
    if n == 0:
        inner_head, inner_tail = b"\x08\x02", b"\x18\x00"
    else:
        inner_head = b"\x08\x02\x12" + varint.encode(n)
        inner_tail = b"\x18" + varint.encode(n)
    inner_len = len(inner_head) + n + len(inner_tail)
    return b"".join((b"\x0a", varint.encode(inner_len), inner_head, chunk, inner_tail))


class DagWriter:
    """Encodes, hashes and stores the blocks of one profile's DAGs.

    Blocks go through the store's staging session (`Blockstore.stager`):
    they may still be settling when `leaf` returns; `close` waits for them
    and raises if any failed, so a returned import has every block in place.
    """

    def __init__(self, blockstore: Blockstore, profile: Profile) -> None:
        self.blockstore = blockstore
        self.stager = blockstore.stager()
        self._stage = self.stager.stage
        self.profile = profile
        self.raw_leaves = profile.raw_leaves
        self._raw_cid = _maker(RAW, 1)
        self._pb_cid = _maker(DAG_PB, profile.cid_version)
        self.written: list[str] = []  # key of every block stored (or found stored); appended from worker threads

    def close(self, failed: bool = False) -> None:
        """Wait until every block staged is in place; raise the first failure
        unless the import has `failed` already (then its error is the one to report)."""
        try:
            self.stager.close()
        except Exception:
            if not failed:
                raise

    def leaf(self, chunk: bytes | memoryview, index: int = -1, hasher: PieceHasher | None = None) -> DagNode:
        """Hash and store one chunk's leaf; safe to call from worker threads.

        With a `hasher`, chunk `index` of the file is a view of its ring and
        the hasher gives the digest. Keeps no reference to `chunk` (it may
        be a reused read buffer)."""
        if self.raw_leaves:
            if hasher is not None:
                digest = hasher.digest(index, chunk)  # type: ignore[arg-type]
            else:
                digest = hashlib.sha256(chunk).digest()
            self._stage(self._raw_cid(digest), chunk)
            self.written.append(_key_of(digest))
            return DagNode(_cid_bytes(RAW_CODE, 1, digest), len(chunk), len(chunk), 1)
        block = file_leaf_block(chunk)
        return self._store_pb(block, len(chunk), 0, 1)

    def _store_pb(self, block: bytes, content: int, below: int, blocks: int,
                  kind: str = "file") -> DagNode:
        digest = hashlib.sha256(block).digest()
        self._stage(self._pb_cid(digest), block)
        self.written.append(_key_of(digest))
        version = self.profile.cid_version
        return DagNode(_cid_bytes(DAG_PB_CODE, version, digest),
                     len(block) + below, content, blocks, kind)

    def file_parent(self, children: list[DagNode]) -> DagNode:
        """A UnixFS File node over `children` (zero-byte children dropped, as JS does)."""
        kept = [c for c in children if c.content > 0]
        sizes = tuple(c.content for c in kept)
        data = unixfs.encode(unixfs.UnixFSData(unixfs.DataType.FILE, blocksizes=sizes))
        links = tuple(dagpb.PBLink(c.cid_bytes, "", c.tsize) for c in kept)
        block = dagpb.encode(dagpb.PBNode(links, data))
        return self._store_pb(block, sum(sizes), sum(c.tsize for c in kept),
                              1 + sum(c.blocks for c in kept))

    def directory(self, entries: list[tuple[bytes, DagNode]]) -> DagNode:
        """A flat UnixFS Directory; `entries` must be sorted by name bytes."""
        links = tuple(dagpb.PBLink(c.cid_bytes, name.decode("utf-8", "surrogateescape"), c.tsize)
                      for name, c in entries)
        block = dagpb.encode(dagpb.PBNode(links, DIR_DATA))
        return self._store_pb(block, sum(c.content for _, c in entries),
                              sum(c.tsize for _, c in entries),
                              1 + sum(c.blocks for _, c in entries),
                              "dir" if entries else "emptydir")

    def sharded_directory(self, entries: list[tuple[bytes, DagNode]]) -> DagNode:
        """A UnixFS HAMT-sharded directory (shoal.store.ipld.hamt), as the JS importer shards it."""
        from shoal.store.ipld import hamt

        written: list[DagNode] = []

        def store(block: bytes) -> bytes:
            written.append(self._store_pb(block, 0, 0, 1))
            return written[-1].cid_bytes

        built = hamt.build((hamt.HamtEntry(name, c.cid_bytes, c.tsize) for name, c in entries),
                           store, self.profile.hamt_fanout)
        root = written[-1]  # shards are written children first, the root last
        return DagNode(root.cid_bytes, built.tsize, sum(c.content for _, c in entries),
                     built.nodes + sum(c.blocks for _, c in entries), "dir")


class BalancedLayout:
    """Streaming form of the JS balanced layout: one pending list per level."""

    def __init__(self, max_links: int, make_parent: Callable[[list[DagNode]], DagNode]) -> None:
        if max_links < 2:
            raise InvalidInput("max_links must be at least 2")
        self.max_links = max_links
        self.make_parent = make_parent
        self.levels: list[list[DagNode]] = [[]]

    def add(self, node: DagNode, level: int = 0) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append([])
            pending = self.levels[level]
            pending.append(node)
            if len(pending) < self.max_links:
                return
            node = self.make_parent(pending)
            self.levels[level] = []
            level += 1

    def finish(self) -> DagNode:
        """Close every level; a level that ends with one node and nothing above is the root."""
        level = 0
        while True:
            pending = self.levels[level]
            top = level == len(self.levels) - 1
            if top and len(pending) == 1:
                return pending[0]
            if pending:
                node = self.make_parent(pending)
                self.levels[level] = []
                if top:
                    return node
                self.levels[level + 1].append(node)
            level += 1
