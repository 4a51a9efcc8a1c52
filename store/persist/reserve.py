"""The repo's emergency space reserve: a file of allocated bytes, given back
when the disk is full so the commands that free space can still run.

On a completely full disk SQLite cannot even open the index (it must
create and size its `-wal` and `-shm` files), so `pin rm` and `gc`, the
commands that would free space, fail like everything else. The repo keeps
`<repo>/reserve` (a few MiB, really allocated) on the same filesystem;
a command that frees space deletes it first when the disk is full, and a
command that consumes space (re)creates it before it starts, only when
there is room, so a put can never eat into it.

Not here: when to release or restore (shoal.store.persist.repo decides per command).
"""

from __future__ import annotations

import os
from pathlib import Path

from shoal.store.persist.durable import durable_file

__all__ = ["Reserve", "RESERVE_BYTES", "RESERVE_FILE", "free_bytes"]

RESERVE_FILE = "reserve"
# Enough for SQLite's -shm (32 KiB) and the WAL of unpinning ~30 GiB (one
# ~240-byte pin_blocks row and index entry per 1 MiB block) and gc's commit.
RESERVE_BYTES = 8 * 1024 * 1024
# Never take more than this fraction of the space free when creating it
# (a tiny test filesystem gets a proportionally small reserve).
MAX_FRACTION = 8


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still allocate on `path`'s filesystem."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


class Reserve:
    """`<repo>/reserve`: allocated space kept back for emergencies."""

    def __init__(self, repo_path: Path, target: int = RESERVE_BYTES) -> None:
        self.path = Path(repo_path) / RESERVE_FILE
        self.target = target

    def size(self) -> int:
        """Bytes held now (0 if released)."""
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def disk_full(self) -> bool:
        """True when less room is left than the reserve would give back:
        the moment a space-freeing command needs it."""
        try:
            free = free_bytes(self.path.parent)
        except OSError:
            return False
        return free < max(self.size(), 1 << 20)

    def release(self) -> int:
        """Delete the reserve; the bytes given back (0 if there was none)."""
        held = self.size()
        try:
            self.path.unlink()
        except FileNotFoundError:
            return 0
        return held

    def ensure(self) -> bool:
        """Create the reserve if it is missing and the disk has room for it
        and as much again; True if a reserve is held afterwards.

        Best effort: a failure (no room, read-only filesystem) leaves no
        partial file and is not an error, since the repo works without one.
        """
        if self.path.exists():
            return True
        try:
            free = free_bytes(self.path.parent)
        except OSError:
            return False
        size = min(self.target, free // MAX_FRACTION)
        if size < 64 * 1024 or free < 2 * size:
            return False
        try:
            with durable_file(self.path) as f:
                # Really allocated (not a sparse file), or the space is not held.
                os.posix_fallocate(f.fileno(), 0, size)
            return True
        except OSError:
            return False
