"""On-disk blockstore: one file per block, laid out like kubo's flatfs.

Layout: `<root>/<shard>/<key>.data`, where `key` is `cid.block_key` (base32 of
the multihash) and `shard` is the two characters before the key's last one
(`next-to-last/2`, kubo's default). The rule is written to `<root>/SHARDING`
in kubo's wording, so a kubo user recognises the tree and a Shoal built with
a different rule refuses to misread it.

Write ordering, per block: write a unique `*.tmp` file in the shard directory,
make its data durable (fsync, or a shared syncfs round: see below),
`os.replace` it onto its real name. A crash therefore never leaves
a partial block under a real name, only a stray `*.tmp` (ignored by `keys()`
and removed by `cleanup_temp()`). Directory fsyncs (which make the *names*
durable) are batched: renamed entries and shard directories are only
recorded as dirty, and `flush()` fsyncs every dirty shard directory and, if
this instance touched a shard it had not seen yet, `<root>`. A put that
finds its block already there marks that shard dirty too: the file may have
been renamed by a process that died before its flush, so its name may not
be durable yet. Callers that are about to reference
blocks from the index (the repo) call `flush()` first, so an index row never
points at a block whose name could vanish in a power cut; blocks put but not
yet flushed can be lost, and nothing refers to them yet.

How a block's data is made durable before its rename: on Linux, concurrent
puts share one syncfs(2) round (shoal.store.persist.group_sync); elsewhere,
or with `group_sync=False`, each temp file is fsync'd. Puts overlap because
`put` is thread-safe and `write_concurrency` tells a writer how many to keep
in flight; `flush()` fsyncs its directories from that many threads at once.
The importer writes through `stager()` instead, which does not wait for
its round (shoal.store.persist.stager). This is not shoal.store.persist.durable's
one-file sequence on purpose: blocks come by the thousand, so their data
syncs are shared and their directory fsyncs batched at `flush()`.

Not here: reference counting, pinning, garbage collection (see shoal.store.persist.repo),
and any caching: the OS page cache does that job.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from shoal.store.ipld.cid import CID, block_key, verify_block
from shoal.store.persist.direct_io import create_file
from shoal.store.persist.durable import fsync_dir, publish, write_durably
from shoal.store.errors import BlockNotFound, RepoError, StorageFull
from shoal.store.persist import group_sync as _group_sync
from shoal.store.persist.group_sync import GroupSync
from shoal.store.persist.stager import FlatfsStager, StagingQueue

SHARDING_RULE = "/repo/flatfs/shard/v1/next-to-last/2"
SUFFIX = ".data"
TEMP_SUFFIX = ".tmp"
_SHA2_256_PREFIX = b"\x12\x20"
_LOCK_STRIPES = 64
_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# Puts worth keeping in flight. bench/put.py, 1 GiB on a virtio disk: with
# per-file fsync, 2 -> 16 writers took a put from ~8-10 s to ~3.5-7 s; with
# group sync 8, 16 and 32 were alike (a round then holds ~that many blocks).
WRITE_CONCURRENCY = 16

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


class FlatfsBlockstore:
    """A durable, thread-safe blockstore in a directory (see module docstring).

    `sync=False` skips every fsync: only for throwaway stores and benchmarks
    of the non-durable path; a crash may then leave torn blocks (which `get`
    still rejects, since it always re-hashes). `group_sync` chooses how block
    data is made durable: True/None = shared syncfs rounds where the
    platform has syncfs, False = fsync of each block file.
    """

    #: How many concurrent `put`s a writer should keep in flight (see module docstring).
    write_concurrency = WRITE_CONCURRENCY

    def __init__(self, root: Path, *, sync: bool = True, group_sync: bool | None = None) -> None:
        self.root = Path(root)
        self._root_str = str(self.root)
        self.sync = sync
        self._known_shards: set[str] = set()
        self._dirty_shards: set[str] = set()
        self._root_dirty = False
        self._state_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_LOCK_STRIPES)]
        self._temp_ids = itertools.count()
        self._group: GroupSync | None = None
        self._open_layout()
        if sync and group_sync is not False and _group_sync.SYNCFS is not None:
            try:
                self._group = GroupSync(self.root)
            except OSError as exc:
                raise _storage_error(exc, f"cannot open blockstore {self.root}") from exc
        self._staging = StagingQueue(self)

    def close(self) -> None:
        """Release the sync fd (if any); later puts fall back to per-file fsync.

        Staged blocks are named first."""
        self._staging.wait()
        if self._group is not None:
            self._group.close()

    @property
    def group_sync(self) -> bool:
        """True if block data is made durable by shared syncfs rounds."""
        return self._group is not None and self._group.fd is not None

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
            write_durably(sharding, (SHARDING_RULE + "\n").encode(), mode=0o644)
        except OSError as exc:
            raise _storage_error(exc, f"cannot set up blockstore at {self.root}") from exc

    # Paths are plain strings on the per-block paths: a pathlib join costs
    # ~5 us, and a 1 GiB put makes ~6,000 of them (bench/put.py, yappi).
    def _path(self, key: str) -> str:
        return f"{self._root_str}/{shard_of(key)}/{key}{SUFFIX}"

    def _shard_dir(self, shard: str) -> str:
        path = f"{self._root_str}/{shard}"
        if shard in self._known_shards:
            return path
        # mkdir outside the lock: it can wait on a journal commit, and every
        # put takes this lock to mark its shard dirty. Idempotent: an existing one is fine.
        try:
            os.mkdir(path)
        except FileExistsError:
            pass
        with self._state_lock:
            if shard not in self._known_shards:
                if self.sync:
                    # A shard must survive a crash before files in it can; even
                    # one found on disk may come from a process that died before
                    # its flush. flush() syncs <root> before anything refers to it.
                    self._root_dirty = True
                self._known_shards.add(shard)
        return path

    # -- Blockstore protocol ----------------------------------------------

    def put(self, cid: CID, data: bytes) -> bool:
        """Verify `data` against `cid`, then store it; True if newly stored."""
        verify_block(cid, data)
        return self.put_trusted(cid, data)

    def put_trusted(self, cid: CID, data: bytes | memoryview) -> bool:
        """Store `data` without re-hashing; True if the block was not there yet."""
        key = block_key(cid)
        final = self._path(key)
        shard = shard_of(key)
        replace = False
        if os.path.exists(final):
            if _holds(final, data):
                self._mark_dirty(shard)
                return False
            replace = True  # a corrupt copy: never dedupe against it, overwrite it
        group = self.sync and self.group_sync
        tmp_name = self._write_temp(cid, key, shard, data, fsync=self.sync and not group)
        try:
            if group:
                self._sync_round()
            return self._rename_into_place(tmp_name, key, shard, replace=replace) or replace
        except OSError as exc:
            _unlink_quietly(tmp_name)
            raise _storage_error(exc, f"cannot write block {cid}") from exc
        except BaseException:
            _unlink_quietly(tmp_name)
            raise

    def _write_temp(self, cid: CID, key: str, shard: str, data: bytes | memoryview, *, fsync: bool) -> str:
        """Write `data` to a new temp file in its shard (fsync'd if asked); its path."""
        try:
            shard_dir = self._shard_dir(shard)
            while True:
                # pid + counter: unique among live writers; O_EXCL catches a
                # stale temp file a dead process with the same pid left behind.
                tmp_name = f"{shard_dir}/{key}.{os.getpid()}-{next(self._temp_ids)}{TEMP_SUFFIX}"
                try:
                    create_file(tmp_name, data, fsync=fsync)  # past the page cache where that pays
                    return tmp_name
                except FileExistsError:
                    continue
        except OSError as exc:
            raise _storage_error(exc, f"cannot write block {cid}") from exc

    # -- staging: writes that do not wait for their sync round ----------------

    def stager(self) -> FlatfsStager:
        """A staging session for a bulk writer (the importer); see shoal.store.persist.stager."""
        return FlatfsStager(self._staging)

    def shard_for(self, key: str) -> str:
        return shard_of(key)

    def write_staged(self, cid: CID, key: str, shard: str,
                     data: bytes | memoryview) -> tuple[str, bool, bool] | None:
        """For the stager: write the temp file of a block that is not stored yet
        ((path, replaces a corrupt copy, fsync'd on its own), or None if it is)."""
        final = self._path(key)
        replace = False
        if os.path.exists(final):
            if _holds(final, data):
                self._mark_dirty(shard)
                return None
            replace = True  # a corrupt copy: overwrite it, never dedupe against it
        fsynced = self.sync and not self.group_sync  # no syncfs: this file's own fsync
        return self._write_temp(cid, key, shard, data, fsync=fsynced), replace, fsynced

    def sync_staged(self) -> None:
        """For the stager: make every temp file closed so far durable (a sync round)."""
        if not self.sync:
            return
        try:
            self._sync_round()
        except OSError as exc:
            raise _storage_error(exc, "cannot sync staged blocks") from exc

    def name_staged(self, tmp: str, key: str, shard: str, replace: bool) -> None:
        """For the stager: give a durable temp file its real name."""
        try:
            self._rename_into_place(tmp, key, shard, replace=replace)
        except OSError as exc:
            raise _storage_error(exc, "cannot name a staged block") from exc

    def discard_temp(self, tmp: str) -> None:
        _unlink_quietly(tmp)

    def _rename_into_place(self, tmp_name: str, key: str, shard: str, *, replace: bool = False) -> bool:
        """Give a durable temp file its real name; False (temp removed) if the block is there.

        `replace`: the file under that name was found corrupt; overwrite it
        unless it meanwhile holds the right bytes (another writer healed it)."""
        final = self._path(key)
        with self._stripes[hash(key) % _LOCK_STRIPES]:
            if os.path.exists(final) and not (replace and not self._file_matches_key(key)):
                os.unlink(tmp_name)
                renamed = False
            else:
                os.replace(tmp_name, final)
                renamed = True
        self._mark_dirty(shard)
        return renamed

    def note_written(self, cid: CID) -> None:
        """Another process (a node's lane) renamed `cid`'s block into place:
        have the next `flush()` fsync its shard directory (and `<root>`), as
        for a block put here. The writer made the data durable before the
        rename; the name becomes durable with this store's flush, before an
        index row refers to the block."""
        self._mark_dirty(shard_of(block_key(cid)))  # a shard new to us makes <root> dirty too; no syscall

    def _mark_dirty(self, shard: str) -> None:
        """The shard's entries must be fsynced by the next flush()."""
        if self.sync:
            with self._state_lock:
                if shard not in self._known_shards:  # seen only through an existing block
                    self._known_shards.add(shard)
                    self._root_dirty = True
                self._dirty_shards.add(shard)

    def _sync_round(self) -> None:
        """Every temp file closed before this call is durable (a shared syncfs round).

        Only for files written unsynced while group sync was on; after
        `close()` the round falls back to sync(2) (shoal.store.persist.group_sync).
        """
        assert self._group is not None
        self._group.wait()

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
        return os.path.exists(self._path(block_key(cid)))

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
        """Make every block put so far durable under its name.

        fsyncs each dirty shard directory and, if a shard was created since
        the last flush, `<root>`; concurrently, since each is a wait on the
        disk rather than work. On failure everything stays dirty for the
        next flush.
        """
        with self._state_lock:
            dirty, self._dirty_shards = self._dirty_shards, set()
            root_dirty, self._root_dirty = self._root_dirty, False
        dirs: list[str | Path] = [f"{self._root_str}/{shard}" for shard in sorted(dirty)]
        if root_dirty:
            dirs.append(self.root)
        try:
            if len(dirs) <= 1:
                for path in dirs:
                    fsync_dir(path)
            else:
                with ThreadPoolExecutor(min(len(dirs), WRITE_CONCURRENCY),
                                        thread_name_prefix="shoal-flush") as pool:
                    for _ in pool.map(fsync_dir, dirs):
                        pass
        except OSError as exc:
            with self._state_lock:
                self._dirty_shards |= dirty
                self._root_dirty |= root_dirty
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

    def quarantine(self, key: str, dest: Path) -> Path | None:
        """Move a corrupt block file out of the store into directory `dest`.

        The block then counts as absent: a re-put or a fetch writes a good
        copy, and nothing dedupes against or serves the bad one. The file is
        kept (not deleted) for whoever wants to look at what went wrong.
        Re-checked under the key's lock first: a copy that is good (healed
        meanwhile) or gone stays where it is, and None is returned.
        """
        with self._stripes[hash(key) % _LOCK_STRIPES]:
            if self._file_matches_key(key):
                return None
            try:
                dest.mkdir(parents=True, exist_ok=True)
                target = dest / f"{key}{SUFFIX}"
                n = 0
                while target.exists():  # quarantined before: keep every bad copy
                    n += 1
                    target = dest / f"{key}.{n}{SUFFIX}"
                publish(self._path(key), target)  # the source shard's dir: at flush
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise _storage_error(exc, f"cannot quarantine block {key}") from exc
        self._mark_dirty(shard_of(key))
        return target

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
        for tmp in self.root.glob("SHARDING.*tmp"):  # SHARDING.tmp from older versions too
            _unlink_quietly(str(tmp))
            removed += 1
        return removed

    def _shard_dirs(self) -> list[Path]:
        return [Path(e.path) for e in os.scandir(self.root) if e.is_dir(follow_symlinks=False)]


def _holds(path: str, data: bytes | memoryview) -> bool:
    """True if the file at `path` holds exactly `data` (which the caller has
    hashed to the block's CID): a put that finds its block already stored
    checks the stored copy before it dedupes against it.

    Why a byte comparison and not a re-hash: equal bytes are as good a proof
    as a matching digest (the caller's bytes match the CID), a size check
    settles most corrupt copies (truncation) with one stat, and comparing
    costs a read (usually from the page cache: a re-put just read the same
    bytes) plus a memcmp, several times cheaper than SHA-256. Only the
    dedupe path pays it. A file that cannot be read counts as not holding
    the data, so it is replaced.
    """
    # bytes == bytes is one memcmp; comparing against a memoryview goes
    # element by element (slower than SHA-256), so a view is copied once.
    expected = data if isinstance(data, bytes) else bytes(data)
    try:
        with open(path, "rb", buffering=0) as f:
            if os.fstat(f.fileno()).st_size != len(expected):
                return False
            return f.read(len(expected) + 1) == expected
    except OSError:
        return False


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _storage_error(exc: OSError, what: str) -> RepoError | StorageFull:
    if exc.errno in _FULL_ERRNOS:
        return StorageFull(f"{what}: disk full")
    return RepoError(f"{what}: {exc.strerror or exc}")
