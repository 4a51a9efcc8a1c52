"""Repo maintenance: gc, verify (and its repair), rebuilding a lost index.

The jobs that run alone (`Repo._guard` exclusive) and look at every block:
`gc` deletes what no pin protects, `verify` re-hashes everything and checks
every pinned DAG is complete (moving corrupt blocks to quarantine on
`repair`), `repair_index` rebuilds objects and pins from the blocks
present. `Repo.gc`, `Repo.verify` and `Repo.repair_index` are the entry
points; these functions work on the repo's internals (its guard, its DAG
walk), so they live beside it and nowhere else calls them.

Crash rules: gc deletes only blocks outside the committed pin set, so
stopping it at any moment loses nothing pinned; repair never removes
anything.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shoal.store.errors import BlockNotFound, GcRefused, HashMismatch, RepoError, StoreError
from shoal.store.ipld.cid import CID, block_key, cid_from_bytes, parse_cid
from shoal.store.persist.flatfs import cid_for_key
from shoal.store.persist.index import ObjectRecord
from shoal.store.proofs.commit_files import PROOFS_DIR

if TYPE_CHECKING:
    from shoal.store.persist.repo import Repo

__all__ = ["GcResult", "VerifyReport", "RepairReport", "gc", "verify", "repair_index", "remove_orphan_proof_files",
           "blocks_an_index_never_knew", "cleanup_proof_temps", "STALE_TEMP_AGE_S"]

STALE_TEMP_AGE_S = 600.0  # a commitment temp file older than this belongs to no live writer


@dataclass(frozen=True)
class GcResult:
    removed_blocks: int
    freed_bytes: int
    temp_files_removed: int = 0


@dataclass(frozen=True)
class VerifyReport:
    """`ok` only if no block is corrupt and every pinned DAG is complete."""

    ok: bool
    # CIDs, as a pinned DAG links to them (else the raw CIDv1 of the multihash:
    # a block no pin reaches has no other name)
    corrupt_blocks: list[str] = field(default_factory=list)
    incomplete_pins: list[tuple[str, str]] = field(default_factory=list)  # (pin, missing or bad CID)
    blocks_checked: int = 0
    temp_files_removed: int = 0
    quarantined: list[str] = field(default_factory=list)  # CIDs moved to quarantine/ (repair)
    # Sound blocks no pin protects: what the next `gc` deletes (no problem in
    # itself, but a user who unpinned things wants to know the space is there).
    orphan_blocks: int = 0
    orphan_bytes: int = 0

    def as_json(self, incomplete: list[tuple[str, str]] | None = None,
                repaired: list[str] | None = None) -> dict[str, Any]:
        """`shoal verify --json`, the same offline and through a node.

        After a repair, `incomplete` is what is still missing (a node
        fetched the rest: `repaired`, the pins restored from peers); `ok`
        then says the repo is whole again: every corrupt block moved aside
        and every pin complete.
        """
        remaining = self.incomplete_pins if incomplete is None else incomplete
        cleared = set(self.quarantined) == set(self.corrupt_blocks)
        return {"ok": not remaining and (self.ok or cleared),
                "corrupt_blocks": list(self.corrupt_blocks), "quarantined": list(self.quarantined),
                "repaired_pins": list(repaired or []),
                "incomplete_pins": [{"pin": str(a), "missing": str(b)} for a, b in remaining],
                "orphan_blocks": self.orphan_blocks, "orphan_bytes": self.orphan_bytes}


@dataclass(frozen=True)
class RepairReport:
    """What `repair_index` found and recorded."""

    blocks_scanned: int
    objects: list[ObjectRecord]  # the roots it pinned and listed
    corrupt_blocks: int = 0  # skipped: their links cannot be trusted
    moved_aside: str | None = None  # where an unreadable index was moved


def gc(repo: Repo, force: bool = False) -> GcResult:
    """Delete every block no pin protects; forget objects whose root went with them.

    GcRefused, unless `force`, when the index holds no pin and never
    held one while blocks are stored: that is what a lost index
    recreated (or replaced by a fresh one) looks like, and gc would
    delete every object. (An index whose pins were all removed on
    purpose has held one, so gc proceeds.) Afterwards the emergency
    reserve is recreated if there is room again.
    """
    repo._check_writable()
    with repo._guard.exclusive():
        if not force:
            stored = blocks_an_index_never_knew(repo)
            if stored:
                raise GcRefused(
                    f"the index holds no pin and never held one, but {stored} block(s) are "
                    f"stored: gc would delete them all")
        live = repo.index.live_keys()
        removed = freed = 0
        for key in list(repo.blockstore.keys()):
            if key in live:
                continue
            freed += repo.blockstore.size_of_key(key)
            repo.blockstore.delete_key(key)
            removed += 1
        temps = repo.blockstore.cleanup_temp() + cleanup_proof_temps(repo.path)
        gone = [o.cid for o in repo.index.objects() if not repo.blockstore.has(parse_cid(o.cid))]
        if gone:
            repo.index.forget_objects(gone)
        remove_orphan_proof_files(repo)
    repo.reserve.ensure()
    return GcResult(removed, freed, temps)


PROOF_SUFFIXES = (".leaves", ".commitment")


def remove_orphan_proof_files(repo: Repo) -> int:
    """Remove `<repo>/proofs/<cid>.leaves` / `.commitment` of objects gone (unpinned, root collected); how many.

    Why: they are 1/64 of the object's size and nothing else ever removes
    them once gc collected the object. Without its root nobody can prove
    or audit from them, and a fetch of the object again rebuilds them
    (shoal.store.proofs.commit_files.build_commitment). Run under gc's
    exclusive hold: a commitment being built for a pinned object has its
    root stored, so it is never touched.
    """
    directory = repo.path / PROOFS_DIR
    if not directory.is_dir():
        return 0
    # A pinned object keeps its files even while its root is missing (a
    # quarantined root that a fetch will restore): rebuilding them is a pass
    # over the whole object.
    pinned = {str(parse_cid(p.cid)) for p in repo.index.pins()}
    removed = 0
    for entry in directory.iterdir():
        suffix = next((s for s in PROOF_SUFFIXES if entry.name.endswith(s)), None)
        if suffix is None:
            continue
        try:
            cid = parse_cid(entry.name[: -len(suffix)])
        except StoreError:
            continue  # not ours: leave it
        if str(cid) in pinned or repo.blockstore.has(cid):
            continue
        try:
            entry.unlink()
            removed += 1
        except FileNotFoundError:
            continue
    return removed


def blocks_an_index_never_knew(repo: Repo) -> int:
    """How many blocks are stored while the index holds no pin and never
    held one (0 otherwise): the mark of a lost or replaced index."""
    if repo.index.has_pins() or repo.index.ever_pinned():
        return 0
    return sum(1 for _ in repo.blockstore.keys())


def repair_index(repo: Repo) -> RepairReport:
    """Rebuild objects and pins from the blocks present; never removes anything.

    Every block is read (hence hash-checked; a corrupt one is skipped,
    since its links cannot be trusted). A block that decodes as a UnixFS
    dag-pb node is read as one, any other as a raw block. Each block
    that no other block links to is a root: unless a pin already covers
    it, it is pinned (with whatever of its DAG is present, so an
    incomplete DAG keeps its blocks and `verify` names what is missing)
    and listed as an object named by its CID. A stray raw leaf of a
    crashed put also becomes an object that way: keeping garbage is
    the price of losing nothing.
    """
    from shoal.store.dag.exporter import stat  # not at the top: every command loads the repo

    repo._check_writable()
    with repo._guard.exclusive():
        linked: set[str] = set()
        roots: dict[str, CID] = {}
        scanned = corrupt = 0
        for key in list(repo.blockstore.keys()):
            scanned += 1
            try:
                data = repo.blockstore.get(cid_for_key(key))
            except HashMismatch:
                corrupt += 1
                continue
            except (BlockNotFound, RepoError):
                continue
            cid, links = _read_as_unixfs(key, data)
            linked.update(links)
            roots[key] = cid
        live = repo.index.live_keys()
        added: list[ObjectRecord] = []
        for key, cid in roots.items():
            if key in linked or key in live:
                continue
            keys = {block_key(c) for c, problem in repo._walk(cid) if problem is None}
            kind, size = "file", 0
            try:
                info = stat(repo.blockstore, cid)
                kind = "directory" if info.kind == "dir" else "file"
                size = info.size or 0
            except StoreError:
                pass
            record = ObjectRecord(
                cid=str(cid), name=str(cid), kind=kind, size=size,
                tsize=sum(repo.blockstore.size_of_key(k) for k in keys), blocks=len(keys),
                profile="unknown", chunker="unknown",
            )
            repo.index.record_put(record, keys)
            live |= keys
            added.append(record)
    moved = str(repo.index_moved_aside) if repo.index_moved_aside else None
    return RepairReport(scanned, added, corrupt, moved)


def cleanup_proof_temps(repo_path: Path, min_age_s: float = STALE_TEMP_AGE_S) -> int:
    """Remove temp files a crash left in `<repo>/proofs/`.

    Only old ones: a node may be writing a commitment file right now
    (the replication layer builds them in the background, outside the
    gc guard), and a fresh temp file may be that one.
    """
    directory = repo_path / PROOFS_DIR
    if not directory.is_dir():
        return 0
    removed = 0
    cutoff = time.time() - min_age_s
    for entry in directory.iterdir():
        if not entry.name.endswith(".tmp"):
            continue
        try:
            if entry.stat().st_mtime < cutoff:
                entry.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def verify(repo: Repo, repair: bool = False) -> VerifyReport:
    """Re-hash every block, check every pinned DAG is complete, drop stale temp files.

    `repair`: move every corrupt block to `<repo>/quarantine/` first, so
    a re-put or a fetch of its object restores a good copy (nothing
    dedupes against, serves or exports the bad one any more). The pins
    it leaves incomplete are reported as such: a node then fetches them.
    """
    repo._check_writable()
    with repo._guard.exclusive():
        temps = repo.blockstore.cleanup_temp()
        corrupt_keys: list[str] = []
        checked = 0
        live = repo.index.live_keys()
        orphans: list[str] = []
        for key, ok in repo.blockstore.verify_all():
            checked += 1
            if not ok:
                corrupt_keys.append(key)
            elif key not in live:
                orphans.append(key)
        orphan_bytes = sum(repo.blockstore.size_of_key(k) for k in orphans)
        quarantined = [k for k in corrupt_keys if repair and repo._quarantine_key(k)]
        names: dict[str, CID] = {}  # block key -> the CID a pinned DAG links to it by
        incomplete: list[tuple[str, str]] = []
        for pin in repo.index.pins():
            pin_cid = parse_cid(pin.cid)
            if pin.recursive:
                bad = []
                for c, problem in repo._walk(pin_cid):
                    names.setdefault(block_key(c), c)
                    if problem is not None:
                        bad.append((pin.cid, str(c)))
            elif not repo.blockstore.has(pin_cid):
                bad = [(pin.cid, pin.cid)]
            else:
                bad = []
            incomplete.extend(bad)

    def name(key: str) -> str:
        cid = names.get(key)
        if cid is not None:
            return str(cid)
        try:
            return str(cid_for_key(key))
        except RepoError:
            return key  # not a multihash at all: a foreign file, shown as found
    ok = not corrupt_keys and not incomplete
    return VerifyReport(ok, sorted(name(k) for k in corrupt_keys), incomplete, checked, temps,
                        sorted(name(k) for k in quarantined), len(orphans), orphan_bytes)


def _read_as_unixfs(key: str, data: bytes) -> tuple[CID, list[str]]:
    """(the CID a stored block is best read under, the keys it links to).

    dag-pb if it decodes as a dag-pb node carrying UnixFS data with valid
    link CIDs (CIDv0 if its links are CIDv0, as a kubo-legacy DAG's are),
    else raw.
    """
    from shoal.store.ipld import dagpb, unixfs

    raw = cid_for_key(key)
    try:
        node = dagpb.decode(data)
        if node.data is None:
            return raw, []
        unixfs.decode(node.data)
        links = [cid_from_bytes(link.hash) for link in node.links]
    except (StoreError, ValueError):
        return raw, []
    version = 0 if links and all(c.version == 0 for c in links) else 1
    cid = CID("base58btc" if version == 0 else "base32", version, "dag-pb", raw.digest)
    return cid, [block_key(c) for c in links]
