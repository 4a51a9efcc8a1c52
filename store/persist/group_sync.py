"""Group sync: concurrent block writers share one syncfs(2) instead of one fsync each.

Why: a durable put costs a journal commit and a device cache flush per
fsync, milliseconds each on a VM disk, so 1,024 fsyncs per GiB dominate a
put (bench/put.py). One syncfs per round amortises that over every block in
flight. The price: syncfs also writes back other dirty data on the same
filesystem, so a blocks directory on a busy shared filesystem makes puts
wait for other programs' writes too (`FlatfsBlockstore(group_sync=False)`
opts out).

The rule: a writer writes and closes its temp file, then `GroupSync.wait()`
joins the open round; the first waiter with no sync running closes that
round (later writers join the next one) and calls syncfs, which covers
every file closed before the call, i.e. every member of the round. Only
then does each member rename its file (shoal.store.persist.flatfs), so, as
with a per-file fsync, a block gets its name only after its data is
durable. A failed syncfs fails every member of its round. The fd syncfs is
called on is opened once, before any write, because syncfs reports
writeback errors only from the moment that fd was opened.

This is a deliberately different mechanism from shoal.store.persist.durable
(one file: fsync it, rename, fsync its directory): blocks come by the
thousand, their directory fsyncs are batched at `FlatfsBlockstore.flush()`.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
import threading
import weakref
from pathlib import Path
from typing import Callable

__all__ = ["GroupSync", "SYNCFS"]


def _load_syncfs() -> Callable[[int], None] | None:
    """libc's syncfs(2) as a function raising OSError, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # dlopen(NULL): the C library already loaded into this process. (find_library
        # would run `ldconfig -p` in a subprocess on every start.)
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.syncfs
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int]
    fn.restype = ctypes.c_int

    def syncfs(fd: int) -> None:
        if fn(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    return syncfs


#: syncfs(2), or None on a platform without it (then blocks are fsync'd one by one).
SYNCFS = _load_syncfs()


class _SyncRound:
    """Writers whose temp files one syncfs call makes durable."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = False
        self.error: OSError | None = None


class GroupSync:
    """Shared syncfs rounds over the filesystem holding `root`. Thread-safe.

    Raises OSError from the constructor if `root` cannot be opened.
    """

    def __init__(self, root: Path) -> None:
        self._cond = threading.Condition()
        self._open_round = _SyncRound()
        self._syncing = False
        #: The fd syncfs is called on; None once closed.
        self.fd: int | None = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._closer = weakref.finalize(self, os.close, self.fd)

    def close(self) -> None:
        """Wait for a running round, then release the fd.

        A writer that was promised a round (its file written unsynced)
        still gets one from `wait()`: sync(2) then stands in for syncfs.
        """
        with self._cond:
            self._cond.wait_for(lambda: not self._syncing)
            self.fd = None
        self._closer()

    def wait(self) -> None:
        """Return once every file closed before this call is durable (OSError if its round failed)."""
        cond = self._cond
        with cond:
            mine = self._open_round
            while not mine.done:
                if self._syncing:
                    cond.wait()
                    continue
                self._syncing = True
                batch, self._open_round = self._open_round, _SyncRound()
                fd = self.fd
                error: OSError | None = None
                cond.release()
                try:
                    if fd is None:  # closed meanwhile: nothing left to syncfs on
                        os.sync()
                    else:
                        assert SYNCFS is not None
                        SYNCFS(fd)
                except OSError as exc:
                    error = exc
                except BaseException:
                    error = OSError(errno.EIO, "block sync interrupted")
                    raise
                finally:
                    cond.acquire()
                    self._syncing = False
                    batch.done, batch.error = True, error
                    cond.notify_all()
            if mine.error is not None:
                raise OSError(mine.error.errno, mine.error.strerror)
