"""The repo: one directory holding a node's blocks, index, config and lock.

```
<repo>/config.toml     settings (shoal.store.persist.config), written last by init
<repo>/index.sqlite    objects, pins, pin membership (shoal.store.persist.index)
<repo>/names.sqlite    name records: org/name@revision -> CID (shoal.store.names.book)
<repo>/blocks/         block files (shoal.store.persist.flatfs)
<repo>/repo.lock       flock'd by whoever writes: an offline command or the node;
                       holds the holder's pid (and "node" for a node)
<repo>/reserve         emergency space, given back on a full disk (shoal.store.persist.reserve)
<repo>/identity.key    created by p2p/, not here (see `Repo.identity_path`)
<repo>/quarantine/     corrupt block files moved aside by `verify --repair` or a
                       read that found them bad (`<key>.data`), kept for
                       inspection; a re-put or a fetch writes good copies
<repo>/proofs/         storage-commitment files, per object CID: `<cid>.leaves`
                       (the leaf-hash layer, 32 B per segment) and
                       `<cid>.commitment` (the 45-byte `shoal.store.proofs.commitment.Commitment`);
                       written by `add(..., commit=True)` or shoal.store.proofs.commit_files
```

Crash rules (details in docs/ARCHITECTURE.md): blocks are written and made
durable before the single index transaction that references them, so the
index never points at a block that may not exist; `gc` deletes only blocks
outside the committed pin set, so stopping it at any moment loses nothing
pinned; anything a crash leaves behind (unreferenced blocks, `*.tmp` files)
is garbage that `gc` or `verify` removes.

Who waits for whom: writers (put, pin, gc, verify, a node) take the lock,
and a writer that finds it held waits for it if asked to (`wait=True`),
except behind a node, which holds it for its whole life. Readers
(`lock=False`) take no lock and open the index read-only: SQLite's WAL
lets them read beside a writer, and they work on a read-only repo.

The index is never created by `open`: a lost or emptied `index.sqlite`
raises IndexMissing, `repair_index` rebuilds it from the blocks, and `gc`
refuses to delete every block when the index never held a pin.

This module: opening, creating and closing a repo, and what writes objects
and pins (add, pin, adopt, CAR import). Beside it: the lock file
(shoal.store.persist.repo_lock), gc / verify / index repair
(shoal.store.persist.maintenance), the commitment files of a put
(shoal.store.proofs.commit_files).

Not here: the network, the node's API, identity keys, CAR files.
"""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

from shoal.store.ipld.cid import CID, RAW, block_key, parse_cid
from shoal.store.persist.config import default_config, load_config, merge, save_config
from shoal.store.errors import (
    BlockNotFound, HashMismatch, IndexCorrupt, IndexMissing, InvalidInput, NotPinned,
    RepoError, RepoNotEmpty, RepoNotInitialized, StorageFull,
)
from shoal.store.persist.durable import publish
from shoal.store.persist.flatfs import FlatfsBlockstore
from shoal.store.persist.index import Index, ObjectRecord, PinRecord
from shoal.store.chunking.profiles import DEFAULT_PROFILE, PROFILES, Profile
from shoal.store.persist.reserve import RESERVE_FILE, Reserve
from shoal.store.persist import maintenance
from shoal.store.persist.maintenance import GcResult, RepairReport, VerifyReport
from shoal.store.persist.repo_lock import LOCK_FILE, acquire_lock
from shoal.store.persist.shared_exclusive import SharedExclusive
from shoal.store.proofs.commit_files import PROOFS_DIR, PutProofFiles

if TYPE_CHECKING:
    from shoal.store.chunking.chunker import Chunker
    from shoal.store.chunking.choice import PerFileChunker
    from shoal.store.ipld.car import CarImportResult
    from shoal.store.dag.importer import ImportResult
    from shoal.store.names.book import NameBook

__all__ = ["Repo", "resolve_repo_path", "ENV_VAR", "QUARANTINE_DIR"]

ENV_VAR = "SHOAL_REPO"
CONFIG_FILE = "config.toml"
INDEX_FILE = "index.sqlite"
BLOCKS_DIR = "blocks"
QUARANTINE_DIR = "quarantine"


def _foreign_entries(path: Path) -> list[str]:
    """Names in `path` that no repo (nor an init a crash interrupted) puts there.

    `init` refuses a directory holding any: turning someone's project folder
    into a repo (and its gc later deciding what lives there) is never meant.
    """
    try:
        names = sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except NotADirectoryError:
        return [path.name]
    except OSError as exc:
        raise RepoError(f"cannot read {path}: {exc.strerror}") from exc
    ours = (CONFIG_FILE, INDEX_FILE, BLOCKS_DIR, LOCK_FILE, PROOFS_DIR, RESERVE_FILE, "identity", "api", "names")
    return [n for n in names if not any(n == o or n.startswith(o + ".") or n.startswith(o + "-") for o in ours)]


def resolve_repo_path(cli_value: str | None) -> Path:
    """`--repo DIR`, else `$SHOAL_REPO`, else `~/.shoal`."""
    if cli_value:
        return Path(cli_value).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".shoal"


class Repo:
    """An open repo. Use `Repo.init` or `Repo.open`; close it (or use `with`)."""

    def __init__(self, path: Path, lock_fd: int | None, *, create_index: bool = False) -> None:
        self.path = path
        self._lock_fd = lock_fd
        self._guard = SharedExclusive()
        self.reserve = Reserve(path)
        #: Bytes of the emergency reserve this open gave back (a full disk).
        self.reserve_released = 0
        #: Where `open_for_repair` moved an unreadable index, if it did.
        self.index_moved_aside: Path | None = None
        self.config: dict[str, Any] = load_config(path / CONFIG_FILE)
        read_only = lock_fd is None
        self.index = Index(path / INDEX_FILE, migrate=not read_only, create=create_index,
                           read_only=read_only)
        try:
            self.blockstore = FlatfsBlockstore(path / BLOCKS_DIR)
        except BaseException:
            self.index.close()
            raise
        self._names: "NameBook | None" = None

    # -- lifecycle -----------------------------------------------------------

    @classmethod
    def init(cls, path: Path, *, config: dict[str, Any] | None = None) -> "Repo":
        """Create a repo at `path` and return it open and locked.

        config.toml is written last: a crash mid-init leaves a directory that
        `open` calls uninitialized and `init` can complete.
        """
        path = Path(path)
        foreign = _foreign_entries(path)
        if foreign and not (path / CONFIG_FILE).exists():
            raise RepoNotEmpty(f"{path} is not empty and not a shoal repo (it holds {foreign[0]!r})")
        try:
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise RepoError(f"cannot create repo {path}: {exc.strerror}") from exc
        fd = acquire_lock(path)
        try:
            if (path / CONFIG_FILE).exists():
                raise RepoError(f"{path} is already a shoal repo")
            FlatfsBlockstore(path / BLOCKS_DIR)
            Index(path / INDEX_FILE).close()
            Reserve(path).ensure()
            save_config(path / CONFIG_FILE, merge(default_config(), config or {}))
            return cls(path, fd, create_index=True)
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        lock: bool = True,
        wait: bool = False,
        on_wait: Callable[[str], None] | None = None,
        node: bool = False,
        frees_space: bool = False,
    ) -> "Repo":
        """Open an existing repo; RepoNotInitialized, RepoLocked or IndexMissing otherwise.

        `lock=False` opens for reading: no lock (so it never waits for a
        writer), the index read-only (so a read-only repo works); every
        method that writes then raises RepoError. With the lock, `wait=True`
        waits for another writer to finish (calling `on_wait(who)` once
        first) instead of raising RepoLocked, but never behind a node.
        `node=True` marks the lock as a node's. `frees_space=True` (pin rm,
        gc): on a full disk, give back the emergency reserve first so the
        index can be opened at all (`reserve_released` says how much);
        other writers recreate the reserve first if it is missing and there
        is room, so they cannot eat into it.
        """
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise RepoNotInitialized(f"no shoal repo at {path}")
        fd = acquire_lock(path, wait=wait, on_wait=on_wait, node=node) if lock else None
        released = 0
        try:
            if fd is not None:
                reserve = Reserve(path)
                if frees_space and reserve.disk_full():
                    released = reserve.release()
                elif not frees_space:
                    reserve.ensure()
            repo = cls(path, fd)
        except BaseException:
            if fd is not None:
                os.close(fd)
            raise
        repo.reserve_released = released
        return repo

    @classmethod
    def open_for_repair(
        cls, path: Path, *, wait: bool = False, on_wait: Callable[[str], None] | None = None
    ) -> "Repo":
        """Open with the lock for `repair_index`, whatever state the index is in.

        A missing or empty index is created afresh; an unreadable one is
        moved aside (`index.sqlite.damaged-<time>`, with its -wal and -shm)
        and replaced; a readable one is kept (the repair only adds to it).
        """
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise RepoNotInitialized(f"no shoal repo at {path}")
        fd = acquire_lock(path, wait=wait, on_wait=on_wait)
        moved: Path | None = None
        try:
            Reserve(path).release()  # the repair's own index needs room more than the reserve
            index_path = path / INDEX_FILE
            stamp = time.strftime("%Y%m%dT%H%M%S")
            try:
                Index(index_path, create=False).close()
            except IndexMissing:
                # A -wal left by the lost file must not be replayed into the new one.
                for suffix in ("-wal", "-shm"):
                    side = index_path.with_name(INDEX_FILE + suffix)
                    if side.exists():
                        publish(side, side.with_name(f"{side.name}.orphan-{stamp}"))
            except IndexCorrupt:
                moved = index_path.with_name(f"{INDEX_FILE}.damaged-{stamp}")
                for suffix in ("", "-wal", "-shm"):
                    side = index_path.with_name(INDEX_FILE + suffix)
                    if side.exists():
                        publish(side, moved.with_name(moved.name + suffix))
            repo = cls(path, fd, create_index=True)
        except BaseException:
            os.close(fd)
            raise
        repo.index_moved_aside = moved
        repo.reserve.ensure()
        return repo

    def close(self) -> None:
        """Close the name book, the index and the blockstore, then release the lock, whatever fails on the way."""
        try:
            if self._names is not None:
                self._names.close()
                self._names = None
            self.index.close()
        finally:
            try:
                self.blockstore.close()
            finally:
                if self._lock_fd is not None:
                    os.close(self._lock_fd)  # releases the flock
                    self._lock_fd = None

    def __enter__(self) -> "Repo":
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def identity_path(self) -> Path:
        """Where p2p/ keeps the node's Ed25519 key (mode 0600); not created here."""
        return self.path / "identity.key"

    @property
    def names(self) -> "NameBook":
        """The name book (`<repo>/names.sqlite`, shoal.store.names.book), opened on first use;
        read-only (and empty if absent) when the repo was opened without its lock."""
        if self._names is None:
            from shoal.store.names.book import BOOK_FILE, NameBook

            self._names = NameBook(self.path / BOOK_FILE, read_only=self._lock_fd is None)
        return self._names

    @property
    def api_path(self) -> Path:
        """Where a running node writes its API address and token."""
        return self.path / "api"

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold while writing blocks that will be pinned later (e.g. a fetch): gc waits."""
        self._check_writable()
        with self._guard.shared():
            yield

    def _check_writable(self) -> None:
        if self._lock_fd is None:
            raise RepoError(f"repo {self.path} was opened without its lock (read-only)")

    # -- objects and pins -----------------------------------------------------

    def default_profile(self) -> Profile:
        name = str(self.config.get("store", {}).get("profile", DEFAULT_PROFILE.name))
        try:
            return PROFILES[name]
        except KeyError:
            raise RepoError(f"unknown profile {name!r} in {self.path / CONFIG_FILE}") from None

    def add(
        self,
        path: Path,
        profile: Profile | None = None,
        chunker: "Chunker | PerFileChunker | None" = None,
        progress: Callable[[int], None] | None = None,
        commit: bool = False,
        follow_symlinks: bool = True,
    ) -> "ImportResult":
        """Import a file or directory and pin it.

        Blocks are written (and flushed) first; then one transaction records
        the object, its recursive pin and the pin's block set. Adding the
        same bytes again stores nothing new.

        `commit=True` (a regular file; ignored for a directory, whose
        commitment covers its DAG blocks and is built by shoal.store.proofs.commit_files):
        also build the proof-of-storage commitment in the same pass (in
        helper processes that also give the blocks' digests, if
        `COMMIT_PROCESS_ABOVE` says so and the chunks are whole pieces; else
        on the reading thread) and save `<repo>/proofs/<cid>.leaves` and
        `<cid>.commitment` durably before the index transaction; the
        result's `commitment` is set (left None if the helpers failed: the
        put still succeeds, and
        shoal.store.proofs.commit_files.build_commitment makes its own pass later). For a
        node that will replicate the object: build_commitment then skips
        its pass over the bytes.

        `follow_symlinks`: symlinks inside a directory are imported as what
        they point to (default), or refused (shoal.store.dag.importer).
        """
        from shoal.store.chunking.choice import PerFileChunker
        from shoal.store.dag.importer import import_path, pieces_apply
        from shoal.store.proofs.commitment import DEFAULT_SEGMENT_SIZE, piece_size

        path = Path(path)
        if not path.exists():
            raise InvalidInput(f"no such file or directory: {path}")
        if isinstance(chunker, PerFileChunker) and path.is_file():
            chunker = chunker.for_file(path)  # decided once, so piece hashing still applies
        profile = profile or self.default_profile()
        with self.writing():
            files = None
            if commit and path.is_file():
                one_file = None if isinstance(chunker, PerFileChunker) else chunker
                pieces = pieces_apply(profile, one_file, piece_size(DEFAULT_SEGMENT_SIZE))
                files = PutProofFiles(self.path, path.stat().st_size, pieces)
            try:
                result = import_path(path, self.blockstore, profile=profile, chunker=chunker,
                                     progress=progress, builder=files.sink if files else None,
                                     follow_symlinks=follow_symlinks)
                if files is not None:
                    commitment = files.finish()
                    if commitment is not None and commitment.length == result.size:
                        files.save(result.cid, commitment)
                        result = dataclasses.replace(result, commitment=commitment)
            finally:
                if files is not None:
                    files.discard()
            # The importer reports every block it stored (or found stored),
            # which is the DAG's block set (tests/unit/test_importer.py
            # checks it against dag_keys): no second walk over 1,000s of files.
            keys = set(result.keys) if result.keys else self.dag_keys(result.cid)
            self.blockstore.flush()
            record = ObjectRecord(
                cid=str(result.cid),
                name=path.resolve().name,
                kind="directory" if path.is_dir() else "file",
                size=result.size,
                tsize=result.tsize,
                blocks=result.blocks,
                profile=profile.name,
                chunker=getattr(chunker, "name", "fixed"),
            )
            self.index.record_put(record, keys)
        return result

    def pin_add(self, cid: CID | str, recursive: bool = True) -> None:
        """Pin a DAG already in the blockstore; BlockNotFound if any block is missing."""
        cid = _as_cid(cid)
        with self.writing():
            if recursive:
                keys = self.dag_keys(cid)
            else:
                if not self.blockstore.has(cid):
                    raise BlockNotFound(cid)
                keys = {block_key(cid)}
            self.blockstore.flush()
            self.index.add_pin(str(cid), recursive, keys)

    def pin_rm(self, cid: CID | str, created: float | None = None) -> None:
        """Unpin; its blocks are removed at the next gc unless another pin holds them.

        `created`: remove the pin only if it is the one made at that time
        (shoal.p2p.replication.holder releases its own pin, never one its user made since).
        """
        cid = _as_cid(cid)
        self._check_writable()
        try:
            removed = self.index.remove_pin(str(cid), created)
        except StorageFull:
            # Unpinning is how the user gets out of a full disk: a node (or an
            # open that did not see the disk full) spends the reserve on it.
            released = self.reserve.release()
            if not released:
                raise
            self.reserve_released += released
            removed = self.index.remove_pin(str(cid), created)
        if not removed:
            raise NotPinned(f"not pinned: {cid}" if created is None else f"not pinned by that pin: {cid}")

    def pins(self) -> list[PinRecord]:
        return self.index.pins()

    def objects(self) -> list[ObjectRecord]:
        return self.index.objects()

    def dag_keys(self, root: CID) -> set[str]:
        """Every block key of the DAG under `root`; BlockNotFound if one is absent.

        Raw leaves (the bulk of the bytes) are only checked for presence:
        they have no links, and re-hashing them is verify's job. dag-pb nodes
        are read (hence hash-checked) to follow their links.
        """
        keys: set[str] = set()
        for cid, problem in self._walk(root):
            if problem is not None:
                raise problem
            keys.add(block_key(cid))
        return keys

    def _walk(self, root: CID) -> Iterator[tuple[CID, BlockNotFound | HashMismatch | None]]:
        """Yield (cid, None) per present block, (cid, error) per missing or bad one."""
        from shoal.store.dag.exporter import iter_links
        from shoal.store.dag.walk import DagWalk, block_identity

        # The codec is part of the visit key: raw and dag-pb readings of
        # the same bytes differ in links.
        walk = DagWalk([root], key=block_identity)
        for cid in walk:
            if cid.codec.name == RAW:
                if self.blockstore.has(cid):
                    yield cid, None
                else:
                    yield cid, BlockNotFound(cid)
                continue
            try:
                data = self.blockstore.get(cid)
            except (BlockNotFound, HashMismatch) as exc:
                yield cid, exc
                continue
            yield cid, None
            walk.push(iter_links(cid, data))

    def adopt(self, cid: CID | str, name: str | None = None) -> ObjectRecord:
        """Pin a complete DAG that arrived by other means (a CAR, the network)
        and list it as an object, in one transaction."""
        from shoal.store.dag.exporter import stat

        cid = _as_cid(cid)
        with self.writing():
            keys = self.dag_keys(cid)
            info = stat(self.blockstore, cid)
            self.blockstore.flush()
            record = ObjectRecord(
                cid=str(cid),
                name=name or str(cid),
                kind="directory" if info.kind == "dir" else "file",
                size=info.size or 0,
                tsize=sum(self.blockstore.size_of_key(k) for k in keys),
                blocks=len(keys),
                profile="unknown",
                chunker="unknown",
            )
            self.index.record_put(record, keys)
        return record

    def import_car(self, stream: "IO[bytes]") -> "CarImportResult":
        """Import a CARv1 all-or-nothing, then pin and list each root whose DAG is complete.

        Only roots the CAR itself carries are pinned: a header naming a root
        that is not in the file (`absent_roots`) claims content it does not
        hold, so it pins nothing even if a block of that CID happens to be
        stored already (the caller warns about it).
        """
        from shoal.store.ipld.car import import_car

        self._check_writable()
        # One shared hold for the blocks and their pins: between the two a
        # gc would delete the fresh, still unpinned blocks.
        with self.writing():
            result = import_car(stream, self.blockstore)
            self.blockstore.flush()
            absent = {str(r) for r in result.absent_roots}
            pinned = []
            for root in result.roots:
                if str(root) in absent:
                    continue
                try:
                    self.adopt(root)
                except BlockNotFound:
                    continue  # a partial CAR: its blocks stay unpinned until completed
                pinned.append(root)
        return dataclasses.replace(result, pinned=pinned)

    # -- maintenance ---------------------------------------------------------

    def gc(self, force: bool = False) -> GcResult:
        """Delete every block no pin protects (shoal.store.persist.maintenance.gc)."""
        return maintenance.gc(self, force)

    def blocks_an_index_never_knew(self) -> int:
        """Blocks stored while the index never held a pin: the mark of a lost index."""
        return maintenance.blocks_an_index_never_knew(self)

    def repair_index(self) -> RepairReport:
        """Rebuild objects and pins from the blocks present (shoal.store.persist.maintenance.repair_index)."""
        return maintenance.repair_index(self)

    def verify(self, repair: bool = False) -> VerifyReport:
        """Re-hash every block, check every pin is complete (shoal.store.persist.maintenance.verify)."""
        return maintenance.verify(self, repair)

    def quarantine(self, cid: CID | str) -> bool:
        """Move the block of `cid` to `<repo>/quarantine/` if it is corrupt.

        For a reader that found the block bad (HashMismatch): the block then
        counts as missing, so a fetch (p2p/) or a re-put writes a good copy.
        False if the block is absent or good (healed meanwhile)."""
        self._check_writable()
        return self._quarantine_key(block_key(_as_cid(cid)))

    def _quarantine_key(self, key: str) -> bool:
        return self.blockstore.quarantine(key, self.path / QUARANTINE_DIR) is not None


def _as_cid(cid: CID | str) -> CID:
    return parse_cid(cid) if isinstance(cid, str) else cid
