"""Durable file writes: temp file -> fsync -> rename -> fsync of the directory.

The one way Shoal replaces or creates a whole file that must survive a
crash (config.toml, the API file, the reserve, proof files, exported files
and CARs, the identity key, the blockstore's SHARDING file). After a crash
the path holds the old content or the new, never a torn mix, and once the
call returns the new name itself is on disk: the rename is only durable
when the directory holding it is fsync'd, which is the step ad-hoc copies
of this sequence used to forget.

Block files are the exception (shoal.store.persist.flatfs): a put writes
thousands of them, so they share syncfs rounds and per-shard directory
fsyncs batched at `flush()`; this module is for single files.

Not here: what goes into the file, error wording (callers map OSError to
their own exceptions).
"""

from __future__ import annotations

import errno
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

__all__ = ["durable_file", "durable_temp", "write_durably", "publish", "fsync_dir", "make_dirs"]


def fsync_dir(path: str | Path) -> None:
    """fsync the directory `path`, so the names in it (a rename, a create) are durable.

    EINVAL is ignored: some filesystems (several network and FUSE ones)
    cannot fsync a directory at all, and there is nothing more to do there.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def make_dirs(path: str | Path) -> None:
    """`mkdir -p path`, each directory it creates made durable (its parent fsync'd).

    A file published into a directory that a crash can take back with it is
    not durable either: the first commitment file of a repo creates
    `<repo>/proofs/`, whose name lives in `<repo>`.
    """
    path = Path(path)
    missing: list[Path] = []
    while not path.is_dir() and path.parent != path:
        missing.append(path)
        path = path.parent
    for directory in reversed(missing):
        directory.mkdir(exist_ok=True)
        fsync_dir(directory.parent)


def publish(tmp: str | Path, path: str | Path, *, overwrite: bool = True, sync_dir: bool = True) -> None:
    """Give the already-fsync'd temp file `tmp` its real name `path`, then fsync the directory.

    `overwrite=False` never replaces an existing `path`: the temp file is
    hard-linked into place (FileExistsError if `path` appeared meanwhile,
    and `tmp` is left for the caller to remove); a filesystem without hard
    links falls back to a rename after checking that `path` is still
    absent (there only a writer racing in the same instant can lose its
    file). `sync_dir=False` leaves the directory
    fsync to the caller, for several files published into one directory.
    """
    if overwrite:
        os.replace(tmp, path)
    else:
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise
        except OSError:  # no hard links here
            if os.path.lexists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
            os.replace(tmp, path)
        else:
            os.unlink(tmp)
    if sync_dir:
        fsync_dir(Path(path).parent)


@contextmanager
def durable_file(path: str | Path, *, mode: int = 0o600, overwrite: bool = True, sync_dir: bool = True,
                 prefix: str | None = None, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Write `path` through a temp file in its directory; durable when the block exits.

    Yields the temp file opened for binary writing (write through it, or
    through its `fileno()`). A clean exit flushes and fsyncs it, renames it
    onto `path` (see `publish` for `overwrite=False`) and fsyncs the
    directory. Any exception, including one from those steps, removes the
    temp file and propagates: `path` keeps its old content (or stays absent).
    `sync_dir=False`: the caller fsyncs the directory itself, once for many
    files written into it (an exported tree).

    The temp name is `<prefix><random><suffix>`, by default `<name>.<random>.tmp`
    beside `path`, so repo code that recognises its own leftovers (gc,
    verify, init's check for foreign files) still does; `mode` is applied
    whatever the umask.
    """
    with durable_temp(path, mode=mode, overwrite=overwrite, sync_dir=sync_dir, prefix=prefix,
                      suffix=suffix) as (f, _tmp):
        yield f


@contextmanager
def durable_temp(path: str | Path, *, mode: int = 0o600, overwrite: bool = True, sync_dir: bool = True,
                 prefix: str | None = None, suffix: str = ".tmp") -> Iterator[tuple[BinaryIO, Path]]:
    """`durable_file` that also yields the temp file's path, for writers that
    open it themselves (another process filling it: shoal.store.dag.disk_export's filler)."""
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(prefix=path.name + "." if prefix is None else prefix, suffix=suffix,
                                    dir=path.parent)
    except OSError as exc:  # name what the caller asked for, not the hidden temp name
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            yield f, tmp
            f.flush()
            os.fsync(f.fileno())
        publish(tmp, path, overwrite=overwrite, sync_dir=sync_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_durably(path: str | Path, data: bytes, *, mode: int = 0o600, overwrite: bool = True) -> None:
    """Replace (or create) `path` with `data` durably: `durable_file` for a whole buffer."""
    with durable_file(path, mode=mode, overwrite=overwrite) as f:
        f.write(data)
