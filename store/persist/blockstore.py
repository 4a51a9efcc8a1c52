"""The blockstore interface and its in-memory implementation.

A blockstore maps CIDs to block bytes. It is keyed by multihash
(`cid.block_key`), so one stored copy serves every CID of the same bytes.
Every `get` re-hashes the bytes: a block is never handed out unverified, on
disk or in memory. The on-disk implementation is `shoal.store.persist.flatfs`.
"""

from __future__ import annotations

import threading
from typing import Iterator, Protocol

from shoal.store.ipld.cid import CID, block_key, verify_block
from shoal.store.errors import BlockNotFound


class Blockstore(Protocol):
    """What the importer, exporter, repo and network layers need of a store."""

    def put(self, cid: CID, data: bytes) -> bool:
        """Verify `data` against `cid`, store it; True if it was not there yet."""

    def put_trusted(self, cid: CID, data: bytes | memoryview) -> bool:
        """Store without re-hashing: only for callers that just hashed `data`.

        Keeps no reference to `data` after returning (callers reuse buffers)."""

    def stager(self) -> "BlockStager":
        """A session for bulk writes of just-hashed blocks (see BlockStager)."""

    def get(self, cid: CID) -> bytes:
        """Return verified bytes; BlockNotFound or HashMismatch otherwise."""

    def has(self, cid: CID) -> bool: ...

    def delete(self, cid: CID) -> None: ...

    def size(self, cid: CID) -> int:
        """Stored size in bytes; BlockNotFound if absent."""

    def keys(self) -> Iterator[str]:
        """Every stored block's key (base32 multihash), in no set order."""

    def flush(self) -> None:
        """Make every block stored so far durable (before the index refers to it)."""


class BlockStager(Protocol):
    """Bulk writes that may finish in the background (the importer's path).

    `stage` stores a block the caller just hashed (like `put_trusted`, and
    like it keeping no reference to `data`: the importer reuses its read
    buffers) but may return before the block is in place; `close` returns once every
    block this session staged is stored and visible, or raises the first
    failure among them. A store without background writes stores at once.
    """

    #: How many `stage` calls are worth running concurrently (0: no preference).
    concurrency: int

    def stage(self, cid: CID, data: bytes | memoryview) -> bool:
        """Store or queue the block; True if it was not stored yet."""

    def close(self) -> None: ...


class ImmediateStager:
    """A BlockStager that is `put_trusted`: every block stored before `stage` returns."""

    concurrency = 0

    def __init__(self, store: Blockstore) -> None:
        self._store = store

    def stage(self, cid: CID, data: bytes | memoryview) -> bool:
        return self._store.put_trusted(cid, data)

    def close(self) -> None:
        pass


class MemoryBlockstore:
    """A dict-backed blockstore for tests and for transient work. Thread-safe."""

    def __init__(self) -> None:
        self._blocks: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def put(self, cid: CID, data: bytes) -> bool:
        verify_block(cid, data)
        return self.put_trusted(cid, data)

    def put_trusted(self, cid: CID, data: bytes | memoryview) -> bool:
        key = block_key(cid)
        with self._lock:
            held = self._blocks.get(key)
            if held is not None and held == data:
                return False  # a corrupt copy (raw_put) is overwritten, never deduped against
            self._blocks[key] = bytes(data)
            return True

    def stager(self) -> ImmediateStager:
        return ImmediateStager(self)

    def get(self, cid: CID) -> bytes:
        try:
            data = self._blocks[block_key(cid)]
        except KeyError:
            raise BlockNotFound(cid) from None
        verify_block(cid, data)
        return data

    def has(self, cid: CID) -> bool:
        return block_key(cid) in self._blocks

    def delete(self, cid: CID) -> None:
        with self._lock:
            self._blocks.pop(block_key(cid), None)

    def size(self, cid: CID) -> int:
        try:
            return len(self._blocks[block_key(cid)])
        except KeyError:
            raise BlockNotFound(cid) from None

    def keys(self) -> Iterator[str]:
        with self._lock:
            snapshot = list(self._blocks)
        return iter(snapshot)

    def flush(self) -> None:
        """Nothing to do: memory is as durable as it gets."""

    def raw_put(self, key: str, data: bytes) -> None:
        """Tests only: place arbitrary bytes under a key (to simulate corruption)."""
        with self._lock:
            self._blocks[key] = data
