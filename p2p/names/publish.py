"""Make and check signed name records: a folder in, a record signed by this node out.

Used the same way by the node's API (in a worker thread) and by the offline
CLI (with the repo's identity key), so both give the same record. The seq is
the publisher's previous seq for the same (kind, repo, revision) plus one,
read and written under one lock so two imports at once cannot share a seq.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from shoal.store.names.folder import hf_snapshot, import_folder
from shoal.store.names.records import InvalidNameRecord, NameRecord, validate_repo, validate_revision

from shoal.p2p.errors import P2PError
from shoal.p2p.secure.identity import Identity, PeerId

if TYPE_CHECKING:
    from shoal.store.chunking.chunker import Chunker
    from shoal.store.chunking.choice import PerFileChunker
    from shoal.store.persist.repo import Repo

__all__ = ["sign", "verify", "publish_folder", "record_json", "listing_json"]

_seq_lock = threading.Lock()


def sign(record: NameRecord, identity: Identity) -> NameRecord:
    """`record` published and signed by `identity`."""
    unsigned = replace(record, publisher=str(identity.peer_id), signature=b"")
    return replace(unsigned, signature=identity.sign(unsigned.signing_bytes()))


def verify(record: NameRecord) -> bool:
    """True if the publisher's key (in its peer id) signed exactly this record."""
    try:
        publisher = PeerId.from_string(record.publisher)
    except (P2PError, ValueError):
        return False
    return len(record.signature) == 64 and publisher.verify(record.signature, record.signing_bytes())


def publish_folder(repo: "Repo", identity: Identity, path: Path, name: str, *, kind: str | None = None,
                   revision: str = "main", chunker: "Chunker | PerFileChunker | None" = None,
                   progress: Callable[[int], None] | None = None) -> NameRecord:
    """Import `path` (pinned), sign its record with the next seq and put it in the book."""
    validate_repo(name)
    validate_revision(revision)
    if kind is None:
        snapshot = hf_snapshot(path)
        kind = snapshot.kind if snapshot is not None else "model"
    if kind not in ("model", "dataset"):
        raise InvalidNameRecord(f"bad repository type {kind!r}: expected model or dataset")
    imported = import_folder(repo, path, chunker=chunker, progress=progress)
    me = str(identity.peer_id)
    with _seq_lock:
        previous = repo.names.latest_seq(me, kind, name, revision)
        record = sign(NameRecord(name, kind, revision, imported.cid, imported.commit, imported.files,
                                 me, 1 if previous is None else previous + 1), identity)
        repo.names.put(record)
    return record


def record_json(record: NameRecord) -> dict[str, Any]:
    """`shoal hf import --json`: exactly repo, revision, commit, cid, files."""
    return {"repo": record.repo, "revision": record.revision, "commit": record.commit, "cid": record.cid,
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "git_sha1": f.git_sha1,
                       "cid": f.cid} for f in record.files]}


def listing_json(record: NameRecord) -> dict[str, Any]:
    """One row of `shoal hf ls --json`."""
    return {"repo": record.repo, "type": record.kind, "revision": record.revision, "commit": record.commit,
            "cid": record.cid, "publisher": record.publisher, "seq": record.seq, "files": len(record.files)}
