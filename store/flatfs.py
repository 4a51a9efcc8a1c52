"""On-disk blockstore: one file per block, laid out like kubo's flatfs.

Layout: `<root>/<shard>/<key>.data`, where `key` is `cid.block_key` (base32 of
the multihash) and `shard` is the two characters before the key's last one
(`next-to-last/2`, kubo's default). The rule is written to `<root>/SHARDING`
in kubo's wording, so a kubo user recognises the tree and a Shoal built with
a different rule refuses to misread it.

Write ordering, per block: write a unique `*.tmp` file in the shard directory,
fsync it, `os.replace` it onto its real name. A crash therefore never leaves
a partial block under a real name, only a stray `*.tmp` (ignored by `keys()`
and removed by `cleanup_temp()`). Directory fsyncs (which make the *names*
durable) are batched: a new shard directory is synced into `<root>` at once,
but renamed entries are synced by `flush()`. Callers that are about to
reference blocks from the index (the repo) call `flush()` first, so an index
row never points at a block whose name could vanish in a power cut; blocks
put but not yet flushed can be lost, and nothing refers to them yet.

Not here: reference counting, pinning, garbage collection (see store.repo),
and any caching: the OS page cache does that job.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import tempfile
import threading
from pathlib import Path
from typing import Iterator

from .cid import CID, block_key, verify_block
from .errors import BlockNotFound, RepoError, StorageFull

SHARDING_RULE = "/repo/flatfs/shard/v1/next-to-last/2"
SUFFIX = ".data"
TEMP_SUFFIX = ".tmp"
_SHA2_256_PREFIX = b"\x12\x20"
_LOCK_STRIPES = 64
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})

__all__ = ["FlatfsBlockstore", "SHARDING_RULE", "shard_of", "cid_for_key"]


def shard_of(key: str) -> str:
    """The shard directory for a key: the two characters before the last."""
    padded = key.rjust(3, "_")  # kubo pads short keys the same way
    return padded[-3:-1]


def cid_for_key(key: str) -> CID:
    """A CID (raw, v1) that maps back to `key`: enough to get/has/delete by key.

    The blockstore is keyed by multihash, so any codec yields the same file.
    """
    pad = "=" * (-len(key) % 8)
    try:
        mh = base64.b32decode(key + pad)
    except ValueError as exc:
        raise RepoError(f"not a block key: {key!r}") from exc
    return CID("base32", 1, "raw", mh)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


class FlatfsBlockstore:
    """A durable, thread-safe blockstore in a directory (see module docstring).

    `sync=False` skips every fsync: only for throwaway stores and benchmarks
    of the non-durable path; a crash may then leave torn blocks (which `get`
    still rejects, since it always re-hashes).
    """

    def __init__(self, root: Path, *, sync: bool = True) -> None:
        self.root = Path(root)
        self.sync = sync
        self._known_shards: set[str] = set()
        self._dirty_shards: set[str] = set()
        self._state_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._open_layout()

    # -- layout -------------------------------------------------------------

    def _open_layout(self) -> None:
        sharding = self.root / "SHARDING"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            if sharding.exists():
                rule = sharding.read_text().strip()
                if rule != SHARDING_RULE:
                    raise RepoError(f"{self.root} uses shard rule {rule!r}; Shoal needs {SHARDING_RULE!r}")
                return
            tmp = sharding.with_name("SHARDING.tmp")
            tmp.write_text(SHARDING_RULE + "\n")
            os.replace(tmp, sharding)
            if self.sync:
                _fsync_dir(self.root)
        except OSError as exc:
            raise _storage_error(exc, f"cannot set up blockstore at {self.root}") from exc

    def _path(self, key: str) -> Path:
        return self.root / shard_of(key) / (key + SUFFIX)

    def _shard_dir(self, shard: str) -> Path:
        path = self.root / shard
        if shard in self._known_shards:
            return path
        with self._state_lock:
            if shard not in self._known_shards:
                created = not path.is_dir()
                path.mkdir(exist_ok=True)
                if created and self.sync:
                    # A new shard must survive a crash before files in it can.
                    _fsync_dir(self.root)
                self._known_shards.add(shard)
        return path

    # -- Blockstore protocol ----------------------------------------------

    def put(self, cid: CID, data: bytes) -> bool:
        """Verify `data` against `cid`, then store it; True if newly stored."""
        verify_block(cid, data)
        return self.put_trusted(cid, data)

    def put_trusted(self, cid: CID, data: bytes) -> bool:
        """Store `data` without re-hashing; True if the block was not there yet."""
        key = block_key(cid)
        final = self._path(key)
        if final.exists():
            return False
        shard = shard_of(key)
        try:
            shard_dir = self._shard_dir(shard)
            fd, tmp_name = tempfile.mkstemp(prefix=key + ".", suffix=TEMP_SUFFIX, dir=shard_dir)
        except OSError as exc:
            raise _storage_error(exc, f"cannot write block {cid}") from exc
        try:
            try:
                _write_all(fd, data)
                if self.sync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            with self._stripes[hash(key) % _LOCK_STRIPES]:
                if final.exists():
                    os.unlink(tmp_name)
                    return False
                os.replace(tmp_name, final)
        except OSError as exc:
            _unlink_quietly(tmp_name)
            raise _storage_error(exc, f"cannot write block {cid}") from exc
        except BaseException:
            _unlink_quietly(tmp_name)
            raise
        if self.sync:
            with self._state_lock:
                self._dirty_shards.add(shard)
        return True

    def get(self, cid: CID) -> bytes:
        """Read and re-hash the block; BlockNotFound or HashMismatch otherwise."""
        try:
            with open(self._path(block_key(cid)), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BlockNotFound(cid) from None
        except OSError as exc:
            raise RepoError(f"cannot read block {cid}: {exc.strerror}") from exc
        verify_block(cid, data)
        return data

    def has(self, cid: CID) -> bool:
        return self._path(block_key(cid)).exists()

    def delete(self, cid: CID) -> None:
        """Remove the block if present. Not synced: a resurrected block is harmless."""
        try:
            os.unlink(self._path(block_key(cid)))
        except FileNotFoundError:
            pass

    def size(self, cid: CID) -> int:
        try:
            return os.stat(self._path(block_key(cid))).st_size
        except FileNotFoundError:
            raise BlockNotFound(cid) from None

    def keys(self) -> Iterator[str]:
        """Every stored key; temp files and foreign files are skipped."""
        for shard_dir in self._shard_dirs():
            try:
                entries = list(os.scandir(shard_dir))
            except FileNotFoundError:
                continue
            for entry in entries:
                if entry.name.endswith(SUFFIX):
                    yield entry.name[: -len(SUFFIX)]

    # -- durability and maintenance ----------------------------------------

    def flush(self) -> None:
        """Make every block put so far durable under its name (fsync dirty shard dirs)."""
        with self._state_lock:
            dirty, self._dirty_shards = self._dirty_shards, set()
        try:
            for shard in sorted(dirty):
                _fsync_dir(self.root / shard)
        except OSError as exc:
            with self._state_lock:
                self._dirty_shards |= dirty
            raise _storage_error(exc, "cannot sync blockstore directories") from exc

    def size_of_key(self, key: str) -> int:
        """Stored size of a block by key; 0 if it is gone (gc uses this)."""
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            return 0

    def delete_key(self, key: str) -> None:
        """Remove a block by key (gc works on keys, not CIDs)."""
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass

    def verify_all(self) -> Iterator[tuple[str, bool]]:
        """Re-hash every block file against the digest in its name; yield (key, ok).

        A key that is not a sha2-256 multihash is reported as not ok: this
        store never writes one, so it is foreign or damaged.
        """
        for key in self.keys():
            yield key, self._file_matches_key(key)

    def _file_matches_key(self, key: str) -> bool:
        try:
            mh = base64.b32decode(key + "=" * (-len(key) % 8))
        except ValueError:
            return False
        if len(mh) != 34 or not mh.startswith(_SHA2_256_PREFIX):
            return False
        h = hashlib.sha256()
        try:
            with open(self._path(key), "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        except FileNotFoundError:
            return True  # deleted meanwhile: not corrupt
        except OSError:
            return False
        return h.digest() == mh[2:]

    def cleanup_temp(self) -> int:
        """Remove leftover `*.tmp` files (from a crash); return how many.

        Only call this while nothing writes to the store (the repo lock
        guarantees that across processes; the repo's own lock within one):
        it would delete an in-flight write's temp file.
        """
        removed = 0
        for shard_dir in self._shard_dirs():
            for entry in os.scandir(shard_dir):
                if entry.name.endswith(TEMP_SUFFIX):
                    _unlink_quietly(entry.path)
                    removed += 1
        tmp = self.root / "SHARDING.tmp"
        if tmp.exists():
            _unlink_quietly(str(tmp))
            removed += 1
        return removed

    def _shard_dirs(self) -> list[Path]:
        return [Path(e.path) for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _storage_error(exc: OSError, what: str) -> RepoError | StorageFull:
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(f"{what}: disk full")
    return RepoError(f"{what}: {exc.strerror or exc}")
