"""A Shoal repo (or any blockstore) as a Bitswap block source: binary CIDs in, verified blocks out.

The driver's `BlockSource` takes CIDs straight off the wire, of any kind;
the repo holds sha2-256 raw and dag-pb blocks. This adapter answers "absent"
for everything else (other codecs, other hashes, identity CIDs), never
raises, and keeps the repo's promise that a block is re-hashed on every
read: a block whose bytes no longer match its CID is moved aside
(quarantined, as the block server does) and answered as absent, so a peer
is sent DONT_HAVE rather than bad bytes.

Every method does disk I/O: call them from a worker thread (the driver does).
"""

from __future__ import annotations

import logging

from typing import Callable

from shoal.store.errors import HashMismatch, StoreError
from shoal.store.ipld.cid import CID, cid_from_bytes
from shoal.store.persist.blockstore import Blockstore
from shoal.store.persist.repo import Repo

__all__ = ["StoreSource", "RepoSource"]

log = logging.getLogger("shoal.bitswap")


class StoreSource:
    """`has` / `size` / `get` of a blockstore, by binary CID.

    `quarantine(cid)` moves a block that failed its hash check aside (a
    repo's `quarantine`); without it a corrupt block is only answered absent.
    """

    def __init__(self, blockstore: Blockstore,
                 quarantine: Callable[[CID], object] | None = None) -> None:
        self.blockstore = blockstore
        self._quarantine = quarantine

    @staticmethod
    def _cid(raw: bytes) -> CID | None:
        try:
            return cid_from_bytes(raw)
        except StoreError:  # InvalidCID: not a CID this store can hold
            return None

    def has(self, cid: bytes) -> bool:
        parsed = self._cid(cid)
        if parsed is None:
            return False
        try:
            return self.blockstore.has(parsed)
        except (StoreError, OSError):
            return False

    def size(self, cid: bytes) -> int | None:
        parsed = self._cid(cid)
        if parsed is None:
            return None
        try:
            return self.blockstore.size(parsed)
        except (StoreError, OSError):
            return None

    def get(self, cid: bytes) -> bytes | None:
        """The verified block, or None (absent, unreadable, or corrupt and now quarantined)."""
        parsed = self._cid(cid)
        if parsed is None:
            return None
        try:
            return self.blockstore.get(parsed)
        except HashMismatch:
            if self._quarantine is not None:
                try:
                    self._quarantine(parsed)
                except (StoreError, OSError) as exc:
                    log.warning("cannot quarantine corrupt block %s: %s", parsed, exc)
            return None
        except (StoreError, OSError):
            return None


class RepoSource(StoreSource):
    """A repo's blockstore; corrupt blocks are quarantined in the repo."""

    def __init__(self, repo: Repo) -> None:
        super().__init__(repo.blockstore, repo.quarantine)
        self.repo = repo
