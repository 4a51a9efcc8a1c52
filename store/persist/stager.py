"""Staging: flatfs block writes that do not wait for their sync round.

What the importer uses (`FlatfsBlockstore.stager()`). The durability rule is
flatfs's own (a block gets its name only after its data is durable, see
shoal.store.persist.group_sync), but the writer does not wait for its round:
`FlatfsStager.stage` writes and closes the temp file and queues it; one
namer thread (`StagingQueue`) takes everything queued, syncs once (which
covers every queued file, all closed before the call), then renames them;
the session's `close()` waits until each of its blocks has its name and
raises if its round failed. So the disk keeps receiving new blocks while
the previous round syncs, and eight writer threads (each hashing, then
writing) keep about the four writes in flight this VM's disk likes best,
with fewer GIL hand-offs than sixteen blocking puts had (bench/put.py
measures it). A crash leaves only unnamed temp files, as before.

Not here: the files themselves (how a temp file is written, deduplicated
or renamed is the store's business, reached through `StagingStore`).
"""

from __future__ import annotations

import threading
from typing import Protocol

from shoal.store.errors import RepoError, StorageFull
from shoal.store.ipld.cid import CID, block_key

__all__ = ["FlatfsStager", "StagingQueue", "StagingStore", "STAGE_CONCURRENCY", "MAX_STAGED", "NAMER_IDLE_S"]

# Writer threads that never wait for a sync round; at most MAX_STAGED blocks
# are being written or wait for the namer before stage() blocks.
STAGE_CONCURRENCY = 8
MAX_STAGED = 256
NAMER_IDLE_S = 0.5


class StagingStore(Protocol):
    """What the namer needs from the store (shoal.store.persist.flatfs.FlatfsBlockstore).

    Each method raises RepoError or StorageFull, never a bare OSError.
    """

    def shard_for(self, key: str) -> str: ...

    def write_staged(self, cid: CID, key: str, shard: str, data: bytes | memoryview) -> "tuple[str, bool, bool] | None":
        """Write the block's temp file: (its path, replaces a corrupt copy, fsync'd on its own);
        None if the block is stored already (nothing written)."""
        ...

    def sync_staged(self) -> None:
        """Make every temp file closed before this call durable."""
        ...

    def name_staged(self, tmp: str, key: str, shard: str, replace: bool) -> None:
        """Give a durable temp file its real name."""
        ...

    def discard_temp(self, tmp: str) -> None: ...


class _Staged:
    """A staged block: its temp file, and the sessions waiting for its name."""

    __slots__ = ("key", "shard", "tmp", "fsynced", "sessions", "replace")

    def __init__(self, key: str, shard: str, sessions: list["FlatfsStager"]) -> None:
        self.key, self.shard, self.sessions = key, shard, sessions
        self.replace = False  # the stored copy is corrupt: the staged one overwrites it
        self.tmp = ""  # set once written
        self.fsynced = False  # True: made durable by its own fsync, needs no round


class StagingQueue:
    """The staged blocks of one store and the namer thread that names them."""

    def __init__(self, store: StagingStore) -> None:
        self._store = store
        self._cond = threading.Condition()
        self._staged: list[_Staged] = []  # written, waiting for the namer's next round
        self._backlog = 0  # entries being written or in _staged: at most MAX_STAGED
        self._staging: dict[str, _Staged] = {}  # key -> its entry, until it is named (or failed)
        self._naming = False  # the namer is in a round
        self._namer: threading.Thread | None = None

    def stage(self, session: "FlatfsStager", cid: CID, data: bytes | memoryview) -> bool:
        key = block_key(cid)
        shard = self._store.shard_for(key)
        cond = self._cond
        with cond:
            while True:
                entry = self._staging.get(key)
                if entry is not None:  # staged already (by anyone): share its outcome
                    entry.sessions.append(session)
                    session._pending += 1
                    return False
                if self._backlog < MAX_STAGED:
                    break
                cond.wait()  # the namer is behind: bounded backlog
            entry = _Staged(key, shard, [session])
            self._staging[key] = entry  # reserved: a concurrent stage of it waits for ours
            self._backlog += 1
            session._pending += 1
        try:
            written = self._store.write_staged(cid, key, shard, data)
        except BaseException as exc:
            error = exc if isinstance(exc, (RepoError, StorageFull)) else RepoError(f"cannot write block {cid}")
            self._settle([entry], error, unqueued=True)
            raise
        if written is None:
            self._settle([entry], None, unqueued=True)
            return False
        entry.tmp, entry.replace, entry.fsynced = written
        with cond:
            self._staged.append(entry)
            if self._namer is None:
                self._namer = threading.Thread(target=self._name_staged, name="shoal-flatfs-namer",
                                               daemon=True)
                self._namer.start()
            cond.notify_all()
        return True

    def _name_staged(self) -> None:
        """The namer thread: one sync round for everything staged so far, then
        the renames; exits after `NAMER_IDLE_S` with nothing to do."""
        cond = self._cond
        while True:
            with cond:
                if not self._staged:
                    cond.wait(NAMER_IDLE_S)
                    if not self._staged:
                        self._namer = None
                        cond.notify_all()
                        return
                batch = list(self._staged)
                self._staged.clear()
                self._backlog -= len(batch)
                self._naming = True
                cond.notify_all()  # stagers waiting for backlog room
            error: RepoError | StorageFull | None = None
            try:
                # Every file in `batch` was closed before this call. (Decided per
                # file, not from the store's current state: close() may have
                # dropped the sync fd since; the round then falls back to sync.)
                if not all(entry.fsynced for entry in batch):
                    self._store.sync_staged()
            except (RepoError, StorageFull) as exc:
                error = exc
            for entry in batch:
                if error is None:
                    try:
                        self._store.name_staged(entry.tmp, entry.key, entry.shard, entry.replace)
                        continue
                    except (RepoError, StorageFull) as exc:
                        error = exc
                self._store.discard_temp(entry.tmp)
            # A failed round fails the whole batch; entries named before a
            # rename error are in place and harmless (unreferenced blocks).
            self._settle(batch, error)
            with cond:
                self._naming = False
                cond.notify_all()

    def _settle(self, entries: list[_Staged], error: RepoError | StorageFull | None,
                unqueued: bool = False) -> None:
        """Report each entry's outcome to every session waiting on it
        (`unqueued`: entries that never reached the namer's queue)."""
        with self._cond:
            if unqueued:
                self._backlog -= len(entries)
            for entry in entries:
                if self._staging.get(entry.key) is entry:
                    del self._staging[entry.key]
                for session in entry.sessions:
                    session._pending -= 1
                    if error is not None and session._error is None:
                        session._error = error
            self._cond.notify_all()

    def wait(self, session: "FlatfsStager | None" = None) -> None:
        """Until `session`'s blocks (or, with None, every staged block) are settled.

        The store's `flush` does not wait here: a staged block counts as put
        only once its session's `close` returned, and by then it is in place
        (and its shard marked dirty), so the next flush covers it like any put."""
        with self._cond:
            if session is None:
                self._cond.wait_for(lambda: not self._staging and not self._naming)
            else:
                self._cond.wait_for(lambda: session._pending == 0)


class FlatfsStager:
    """Writes for one bulk writer that do not wait for their sync round.

    `stage(cid, data)` writes the block's temp file (O_DIRECT where the
    buffer allows, see shoal.store.persist.direct_io) and returns; the store's namer
    thread gives it its real name after the next sync round that covers it,
    exactly as `put_trusted` would, so a crash still never leaves a partial
    block under a real name. A writer thread therefore never sleeps through
    a syncfs: the disk keeps receiving data while the previous round syncs,
    and a few threads do what `write_concurrency` blocking puts did
    (bench/put.py). `close()` waits until each of this session's blocks is
    in place (visible to `get`/`has`) and raises the first failure of any
    of them (StorageFull or RepoError), so a writer learns of a failed
    round before it records anything. A block staged by two sessions at once
    is written once, and both learn its outcome. Until `close()` a staged
    block may not be visible yet. Thread-safe.
    """

    #: Concurrent `stage` calls worth keeping in flight. 1 GiB `Repo.add`
    #: here: 4 -> 0.9-1.14 s, 8 -> 0.91, 12 -> 0.88-1.0 (an O_DIRECT disk
    #: write is fastest with ~4 in flight, and a writer hashes part of the time).
    concurrency = STAGE_CONCURRENCY

    def __init__(self, queue: StagingQueue) -> None:
        self._queue = queue
        self._pending = 0  # guarded by the queue's condition
        self._error: RepoError | StorageFull | None = None

    def stage(self, cid: CID, data: bytes | memoryview) -> bool:
        """Write a block the caller just hashed; True if it was not stored or staged yet."""
        return self._queue.stage(self, cid, data)

    def close(self) -> None:
        """Wait for this session's blocks to be in place; raise the first failure."""
        self._queue.wait(self)
        if self._error is not None:
            error, self._error = self._error, None
            raise error
