"""Fetch a whole DAG over Bitswap into a blockstore: the root, then its links, level by level.

Bitswap moves blocks, not DAGs: this walks the dag-pb links of what it
fetches (raw blocks are leaves) and asks for the next level, in batches of
at most `batch` CIDs (one session each), skipping blocks the store already
has. Every block is verified twice: by the session against the wanted CID,
and by `Blockstore.put`. Stops at the first level with missing blocks and
reports them (and dag-pb blocks that do not decode): a DAG with holes
cannot be read anyway.

Only the codecs Shoal stores (raw, dag-pb; sha2-256) can be walked; any
other CID in a link is reported missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable

import trio

from shoal.p2p.bitswap.driver import Bitswap
from shoal.store.errors import StoreError
from shoal.store.ipld import dagpb
from shoal.store.ipld.cid import CID, cid_from_bytes
from shoal.store.persist.blockstore import Blockstore

__all__ = ["DagFetch", "fetch_dag"]

DEFAULT_BATCH = 256
"""CIDs per session: four sessions' worth of in-flight wants (64 each)."""


@dataclass
class DagFetch:
    """What `fetch_dag` did: blocks fetched and stored, already present, still missing."""

    fetched: int = 0
    fetched_bytes: int = 0
    present: int = 0
    missing: list[bytes] = field(default_factory=list)
    malformed: list[bytes] = field(default_factory=list)
    """dag-pb blocks that match their CID but do not decode: their links are unknown."""
    bad_peers: list[Hashable] = field(default_factory=list)


def _links(cid: CID, data: bytes, out: DagFetch) -> list[bytes]:
    if cid.codec.name != "dag-pb":
        return []
    try:
        return [link.hash for link in dagpb.decode(data).links]
    except StoreError:  # MalformedBlock
        out.malformed.append(bytes(cid))
        return []


async def fetch_dag(bitswap: Bitswap, root: CID, store: Blockstore,
                    peers: Iterable[Hashable] | None = None, *, batch: int = DEFAULT_BATCH) -> DagFetch:
    """Fetch every block of the DAG under `root` that `store` lacks, from `peers` (default: all)."""
    peer_list = None if peers is None else list(peers)
    out = DagFetch()
    level: list[bytes] = [bytes(root)]
    while level:
        following: list[bytes] = []
        for start in range(0, len(level), batch):
            chunk = level[start:start + batch]
            wanted: list[bytes] = []
            for raw in chunk:
                try:
                    cid = cid_from_bytes(raw)
                except StoreError:
                    out.missing.append(raw)
                    continue
                data = await trio.to_thread.run_sync(_read_present, store, cid)
                if data is None:
                    wanted.append(raw)
                else:
                    out.present += 1
                    following += _links(cid, data, out)
            if not wanted:
                continue
            result = await bitswap.fetch(wanted, peer_list)
            out.bad_peers += [p for p in result.bad_peers if p not in out.bad_peers]
            out.missing += result.missing
            for raw, data in result.blocks.items():
                cid = cid_from_bytes(raw)
                await trio.to_thread.run_sync(store.put, cid, data)
                out.fetched += 1
                out.fetched_bytes += len(data)
                following += _links(cid, data, out)
        if out.missing or out.malformed:
            break
        level = list(dict.fromkeys(following))
    return out


def _read_present(store: Blockstore, cid: CID) -> bytes | None:
    """Worker thread: the block if the store has it (verified), else None."""
    if not store.has(cid):
        return None
    try:
        return store.get(cid)
    except StoreError:  # corrupt or gone meanwhile: fetch it again
        return None
