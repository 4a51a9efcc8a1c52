"""A folder, or a Hugging Face cache snapshot, imported as one named repository snapshot.

`import_folder(repo, DIR)` imports DIR with the tree importer (the same DAG
and CID `shoal put DIR` gives, pinned), and describes every regular file as
a RepoFile: its path in the tree, size, sha256 (what HF clients use as the
ETag of an LFS file), git blob sha1 and its own CID inside the DAG.

Hashes: a second read pass per file, run in worker threads *while* the
importer reads the same files (so the page cache serves one of the two
reads); each file is read once for both of its hashes. The sizes the
hashing pass saw are then checked against the sizes in the DAG: a file that
changed during the import is refused rather than published with hashes of
other bytes.

Hugging Face cache snapshots (`<cache>/models--org--name/snapshots/<commit>/`,
`datasets--org--name` for datasets) are recognised by their path: their
files are symlinks into `../../blobs/`, which are followed, and the
snapshot's 40-hex commit is taken as the record's commit. Any other folder
gets a commit derived from its directory CID (`derived_commit`), so the
same content always has the same commit.

Symlinks: a link whose target lies outside the folder (outside the
`models--org--name` directory for a snapshot) is refused, so an import
never publishes files the user did not put in the folder (a stray link to
~/.ssh would otherwise be served to the whole swarm).
"""

from __future__ import annotations

import hashlib
import os
import re
import stat as stat_mod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from shoal.store.dag.exporter import iter_dir
from shoal.store.errors import InvalidInput
from shoal.store.ipld.cid import parse_cid
from shoal.store.names.records import MAX_FILES, MAX_PATH_BYTES, RepoFile

if TYPE_CHECKING:
    from shoal.store.chunking.chunker import Chunker
    from shoal.store.chunking.choice import PerFileChunker
    from shoal.store.persist.repo import Repo

__all__ = ["FolderImport", "HfSnapshot", "hf_snapshot", "derived_commit", "import_folder", "scan_folder",
           "hash_file"]

_SNAPSHOT_REPO = re.compile(r"^(models|datasets)--([\w.-]+)--([\w.-]+)$", re.ASCII)
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_COMMIT_DOMAIN = b"shoal/hf-commit/v1\x00"
_READ = 1 << 20


@dataclass(frozen=True)
class HfSnapshot:
    """What the path of a Hugging Face cache snapshot says."""

    kind: str    # "model" | "dataset"
    repo: str    # "org/name"
    commit: str  # 40 lowercase hex
    root: Path   # the resolved `models--org--name` directory: symlinks may point anywhere inside


@dataclass(frozen=True)
class FolderImport:
    """The result of `import_folder`."""

    cid: str
    commit: str
    files: tuple[RepoFile, ...]
    snapshot: HfSnapshot | None
    size: int


def hf_snapshot(path: Path) -> HfSnapshot | None:
    """The snapshot `path` is (`.../models--org--name/snapshots/<40-hex>`), or None."""
    path = Path(os.path.abspath(path))
    if not _HEX40.match(path.name) or path.parent.name != "snapshots":
        return None
    m = _SNAPSHOT_REPO.match(path.parent.parent.name)
    if m is None:
        return None
    kind = "model" if m.group(1) == "models" else "dataset"
    return HfSnapshot(kind, f"{m.group(2)}/{m.group(3)}", path.name, path.parent.parent.resolve())


def derived_commit(cid: str) -> str:
    """A 40-hex commit id for a plain folder: sha1 of a domain tag and the CID text."""
    return hashlib.sha1(_COMMIT_DOMAIN + str(parse_cid(cid)).encode()).hexdigest()


def hash_file(path: Path) -> tuple[int, str, str]:
    """(size, sha256 hex, git blob sha1 hex) of a file, in one read pass."""
    sha256 = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as f:
            # git's blob id needs the size up front: fstat gives it, and the
            # count of bytes read must agree (else the file changed under us).
            declared = os.fstat(f.fileno()).st_size
            sha1 = hashlib.sha1(b"blob %d\0" % declared)
            while True:
                chunk = f.read(_READ)
                if not chunk:
                    break
                size += len(chunk)
                sha256.update(chunk)
                sha1.update(chunk)
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    if size != declared:
        raise InvalidInput(f"{path} changed while it was read ({declared} bytes, then {size})")
    return size, sha256.hexdigest(), sha1.hexdigest()


def _inside(target: str, root: str) -> bool:
    return target == root or target.startswith(root.rstrip(os.sep) + os.sep)


def scan_folder(path: Path, allowed_root: Path) -> list[tuple[str, Path]]:
    """(posix path in the tree, path to read) of every regular file under `path`,
    following symlinks whose targets lie inside `allowed_root`; InvalidInput
    for a symlink leaving it, a symlink loop, a special file, or more than
    MAX_FILES files."""
    root_text = os.path.realpath(allowed_root)
    out: list[tuple[str, Path]] = []
    on_path: set[tuple[int, int]] = set()

    def walk(directory: Path, prefix: str) -> None:
        st = directory.stat()
        key = (st.st_dev, st.st_ino)
        if key in on_path:
            raise InvalidInput(f"{directory} is a symlink loop")
        on_path.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            raise InvalidInput(f"cannot list {directory}: {exc.strerror or exc}") from None
        for ent in entries:
            rel = f"{prefix}{ent.name}"
            child = Path(ent.path)
            if ent.is_symlink():
                target = os.path.realpath(child)
                if not _inside(target, root_text):
                    raise InvalidInput(f"{rel} is a symlink to {target}, outside {allowed_root}: "
                                       "refusing to publish files from outside the folder")
            try:
                cst = child.stat()
            except OSError as exc:
                raise InvalidInput(f"{rel}: broken symlink or unreadable entry ({exc.strerror or exc})") from None
            if stat_mod.S_ISDIR(cst.st_mode):
                walk(child, rel + "/")
            elif stat_mod.S_ISREG(cst.st_mode):
                if len(rel.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
                    raise InvalidInput(f"{rel}: path longer than {MAX_PATH_BYTES} bytes")
                out.append((rel, child))
                if len(out) > MAX_FILES:
                    raise InvalidInput(f"{path} holds more than {MAX_FILES} files: too many for one name record")
            else:
                raise InvalidInput(f"{rel} is not a regular file or directory")
        on_path.discard(key)

    walk(path, "")
    return out


def _dag_files(repo: "Repo", cid: str) -> dict[str, tuple[str, int]]:
    """posix path -> (file CID, size) of every file in the directory DAG at `cid`."""
    found: dict[str, tuple[str, int]] = {}
    stack = [(parse_cid(cid), "")]
    while stack:
        dir_cid, prefix = stack.pop()
        for entry in iter_dir(repo.blockstore, dir_cid, max_entries=MAX_FILES + 1):
            if entry.kind == "dir":
                stack.append((entry.cid, f"{prefix}{entry.name}/"))
            elif entry.kind == "file":
                found[f"{prefix}{entry.name}"] = (str(entry.cid), entry.size or 0)
    return found


def import_folder(repo: "Repo", path: Path, *, chunker: "Chunker | PerFileChunker | None" = None,
                  progress: Callable[[int], None] | None = None) -> FolderImport:
    """Import the folder at `path` into `repo` (pinned) and describe its files."""
    path = Path(path)
    if not path.is_dir():
        raise InvalidInput(f"{path} is not a directory" if path.exists() else f"no such directory: {path}")
    snapshot = hf_snapshot(path)
    listed = scan_folder(path, snapshot.root if snapshot else path)
    with ThreadPoolExecutor(2, thread_name_prefix="shoal-hf-hash") as pool:
        hashes: list[Future[tuple[int, str, str]]] = [pool.submit(hash_file, p) for _, p in listed]
        try:
            result = repo.add(path, chunker=chunker, progress=progress)
        except BaseException:
            for fut in hashes:
                fut.cancel()
            raise
        digests = [fut.result() for fut in hashes]
    cid = str(result.cid)
    in_dag = _dag_files(repo, cid)
    files = []
    for (rel, _), (size, sha256, sha1) in zip(listed, digests):
        file_cid, dag_size = in_dag.get(rel, ("", -1))
        if dag_size != size:
            raise InvalidInput(f"{rel} changed during the import; import again")
        files.append(RepoFile(rel, size, sha256, sha1, file_cid))
    if len(in_dag) != len(files):
        raise InvalidInput(f"{path} changed during the import (files appeared or vanished); import again")
    files.sort(key=lambda f: f.path.encode())
    commit = snapshot.commit if snapshot else derived_commit(cid)
    return FolderImport(cid, commit, tuple(files), snapshot, result.size)
