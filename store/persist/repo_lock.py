"""The repo's lock file, `<repo>/repo.lock`: who may write, and who waits for whom.

Writers (put, pin, gc, verify, a node) take an exclusive flock(2) on it; a
writer that finds it held waits if asked to (`wait=True`), except behind a
node, which holds it for its whole life. The file holds the holder's pid
(and "node" for a node), only so the refusal can say who holds it. Readers
take no lock (shoal.store.persist.repo).
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import Callable

from shoal.store.errors import RepoError, RepoLocked, StorageFull

__all__ = ["LOCK_FILE", "acquire_lock"]

LOCK_FILE = "repo.lock"


def acquire_lock(path: Path, *, wait: bool = False, on_wait: Callable[[str], None] | None = None,
                  node: bool = False) -> int:
    """Take `<repo>/repo.lock` exclusively; RepoLocked if held and not `wait`ing.

    Waiting blocks in flock(2) (Ctrl-C still interrupts it), but never
    behind a node: a node holds the lock until it stops.
    """
    lock_path = path / LOCK_FILE
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull(f"cannot create {lock_path}: disk full") from exc
        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
            raise RepoError(f"repo {path} is read-only ({exc.strerror}): only reading "
                            f"commands (ls, cat, get, pin ls) work on it") from exc
        raise RepoError(f"cannot open {lock_path}: {exc.strerror}") from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fields = os.pread(fd, 64, 0).decode(errors="replace").split()
            pid = fields[0] if fields and fields[0].isdigit() else ""
            if len(fields) > 1 and fields[1] == "node":
                err = RepoLocked(f"repo {path} is in use by a shoal node (pid {pid})")
                err.hint = "its API is not answering (yet): wait until it is ready, or stop it"
                raise err from None
            who = f"another shoal process (pid {pid})" if pid else "another shoal process"
            if not wait:
                raise RepoLocked(f"repo {path} is in use by {who}") from None
            if on_wait is not None:
                on_wait(who)
            fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError as exc:
        os.close(fd)
        raise RepoError(f"cannot lock {lock_path}: {exc.strerror}") from exc
    except BaseException:
        os.close(fd)
        raise
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}{' node' if node else ''}\n".encode(), 0)
    except OSError:
        pass  # the pid is only a diagnostic; the flock is what counts
    return fd
