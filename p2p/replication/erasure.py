"""Erasure-coded placement on the network: put --ec K+M, reading, repair, status.

How an object becomes shards, and why this path: the owner encodes the
object's whole DAG into K + M shards (shoal.store.erasure.codec, in a
heavy-work thread, one stripe in memory at a time), and imports each shard
file as its own UnixFS file with the default profile, so that a shard has
a CID that anyone importing the same bytes gets again (a rebuilt shard is
byte-identical, so its CID is too). Each shard is then an ordinary object
to the replication machinery: a `repl_objects` row (role owner, one copy
wanted, the owner not counted as a holder), a signed manifest with its own
commitment, a StoreRequest to exactly one holder, which pulls the shard's
DAG from the owner, checks the commitment and signs the agreement, and
audits by the owner's audit loop like any replica. Nothing in holder.py,
audit.py or the offer formats changes: the object being replicated is just
the shard.

What is EC-specific lives here:
- placement of all K + M shards at once with `placement.place` keyed by
  the object's CID, so the holders are K + M distinct peers, distinct
  network prefixes first; a peer that ever held a shard of the object is
  never chosen again for another one;
- the signed shard map (shoal.p2p.replication.ec_map), kept by the owner
  and pushed to every holder (EcMapPush), answered to readers (EcMapGet);
- reading (`recover`): a `get` whose plain fetch found nobody with the DAG
  asks connected peers for the map, fetches the shard DAGs from their
  holders until K are local, and reconstructs the object's blocks, every
  one checked against its CID and the DAG walk, into the blockstore;
- repair: when fewer than `threshold` (default K + 1) shards are healthy
  (a holder row that counts as a copy: ok, pending, or suspect), the owner
  rebuilds the lost ones, imports them (same CIDs), and places them on new
  peers, each placement drawing a token from the repair bucket. An owner
  that still holds the object (pinned and complete) re-encodes it locally
  (codec.rebuild_from_blocks: no traffic but the rebuilt shards); otherwise
  (a deputy, --ec-drop-local, or a local copy gone or corrupt) it fetches K
  healthy shards and decodes (codec.rebuild, each piece checked against the
  layout) — see `repair_source`;
- settling: once every shard has a holder that signed, the owner unpins
  its local shard DAGs (the next gc frees them) and, with
  `--ec-drop-local`, its own copy of the object.

Not here: the codec and shard format (shoal.store.erasure), offers,
agreements and audits (owner.py, holder.py, audit.py).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import msgpack
import trio

from shoal.store.dag import exporter
from shoal.store.dag.importer import import_file
from shoal.store.erasure.codec import encode_object, plan_object, rebuild, rebuild_from_blocks, reconstruct
from shoal.store.erasure.layout import dag_blocks
from shoal.store.erasure.durability import HOURS_PER_YEAR, loss_probability, survivable_losses
from shoal.store.erasure.shard import ShardReader
from shoal.store.energy.ledger import EC_ENCODE, EC_REPAIR
from shoal.store.errors import NotPinned, StoreError
from shoal.store.ipld.cid import CID, cid_from_bytes, parse_cid
from shoal.store.proofs.commitment import ShouldStop, check_stop

from shoal.p2p.errors import NoPeers, P2PError, ProtocolError
from shoal.p2p.exchange.fetch import fetch_dag, missing_blocks
from shoal.p2p.net.api import ApiError
from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.net.energy_service import measuring
from shoal.p2p.replication.agreements import EcRow, EcShardRow, HolderRow
from shoal.p2p.replication.ec_map import MAX_EC_SHARDS, EcMap, ShardEntry, parse_scheme
from shoal.p2p.replication.signed import Offer, unpack_signed
from shoal.store.proofs.manifest import Manifest
from shoal.p2p.replication.repair_policy import OwnerWatch, Replica, State, counts_as_copy, deputy
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.wire.messages import EcMapGet, EcMapPush, EcMapReply, Error, ErrorCode, Message

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node
    from shoal.p2p.replication.owner import ReplicationOwner

log = logging.getLogger("shoal.erasure")

__all__ = ["ErasureService", "holder_afr", "shards_to_place", "repair_source", "PRIOR_AFR", "MAP_TIMEOUT_S",
           "FROM_LOCAL", "FROM_SHARDS"]

MAP_TIMEOUT_S = 5.0
SHARD_FETCH_BASE_S = 60.0
SHARD_FETCH_RATE = 4 << 20  # bytes/s a slow holder still manages
PUSH_TIMEOUT_S = 10.0
PRIOR_AFR = 0.05
"""Annual failure probability assumed for a holder we know nothing about
(a commodity disk's ~2 % plus a volunteer peer leaving for good); observed
proven losses move each holder's estimate from there."""
PRIOR_YEARS = 1.0  # weight of the prior, in holder-years of observation


def holder_afr(proven_losses: int, observed_years: float) -> float:
    """A holder's annual failure probability from what we saw of it: proven
    losses per year observed, smoothed by PRIOR_AFR over PRIOR_YEARS (so one
    loss in a day does not read as certainty, and no record is not zero)."""
    rate = (max(0, proven_losses) + PRIOR_AFR * PRIOR_YEARS) / (max(0.0, observed_years) + PRIOR_YEARS)
    return min(0.99, -math.expm1(-rate))


def shards_to_place(replicas: dict[int, list[Replica]], threshold: int) -> list[int]:
    """Which shards need a new holder now, given every holder row's replica
    state per shard index. Pure.

    A shard is healthy while one of its rows counts as a copy (ok, pending,
    or a suspect that has not missed three audits). A shard that was held
    and then lost (a row in state lost) is repaired only once fewer than
    `threshold` shards are healthy, and then every lost one at once: lazy
    repair, as Storj does, so one flaky holder does not cost a rebuild (K
    shards moved) each time. A shard that never found a holder (none yet,
    or every one refused) is placed at once, whatever the threshold.
    """
    healthy = sum(1 for rows in replicas.values() if any(counts_as_copy(r) for r in rows))
    out = []
    for idx in sorted(replicas):
        rows = replicas[idx]
        if any(counts_as_copy(r) for r in rows):
            continue
        lost = any(r.state is State.LOST for r in rows)
        if not lost or healthy < threshold:
            out.append(idx)
    return out


FROM_LOCAL = "local"
FROM_SHARDS = "shards"


def repair_source(is_deputy: bool, has_layout_id: bool, object_pinned: bool, object_complete: bool) -> str:
    """Where lost shards are rebuilt from. Pure.

    FROM_LOCAL: the owner still holds the whole object (pinned, so it is kept
    on purpose, and every block present), so it encodes the lost shards from
    its own blocks: the repair moves only the rebuilt shards over the
    network, not K shards (one object's worth) to rebuild one. The recorded
    layout id is needed to prove the re-encoding is the placed one.
    FROM_SHARDS otherwise: a deputy never holds the object, and an owner
    whose copy was dropped (--ec-drop-local), collected or is incomplete
    fetches K healthy shards. A local copy found corrupt while encoding also
    ends here (the caller falls back).
    """
    if not is_deputy and has_layout_id and object_pinned and object_complete:
        return FROM_LOCAL
    return FROM_SHARDS


def _complete(store: Any, root: CID) -> bool:
    return not missing_blocks(store, root, limit=1)


def _encode_shards(repo: Any, root: CID, k: int, m: int,
                   should_stop: ShouldStop | None = None) -> tuple[bytes, list[tuple[int, str, int]], int]:
    """Worker thread: encode the DAG under `root` into K + M shard files, import
    each as a UnixFS file (its CID) and pin it until it is placed."""
    store = repo.blockstore
    with tempfile.TemporaryDirectory(prefix=".ec-", dir=repo.path) as tmp:
        paths = [Path(tmp) / f"shard-{i}" for i in range(k + m)]
        files: list[BinaryIO] = [open(p, "wb") for p in paths]
        try:
            layout, infos = encode_object(root, store.get, store.size, files, k, m)
        finally:
            for f in files:
                f.close()
        check_stop(should_stop)
        with open(paths[0], "rb") as f:
            layout_id = ShardReader(f).header.layout_id
        out = []
        for info, p in zip(infos, paths):
            check_stop(should_stop)
            with repo.writing(), open(p, "rb") as f:
                cid = import_file(f, store).cid
                store.flush()
            repo.pin_add(cid)
            out.append((info.index, str(cid), info.length))
    return layout_id, out, layout.data_length


def _shard_files(repo: Any, tmp: Path, shard_cids: list[CID]) -> list[BinaryIO]:
    """Write each (local) shard DAG's bytes to a file in `tmp`; open for reading."""
    out: list[BinaryIO] = []
    for n, cid in enumerate(shard_cids):
        path = tmp / f"in-{n}"
        with open(path, "wb") as f:
            for piece in exporter.read_file(repo.blockstore, cid):
                f.write(piece)
        out.append(open(path, "rb"))
    return out


def _rebuild_shards(repo: Any, healthy: list[CID], lost: list[tuple[int, str]], layout_id: bytes | None,
                    should_stop: ShouldStop | None = None) -> list[str]:
    """Worker thread: rebuild shards `lost` (index, expected CID) from local
    healthy shard DAGs, import and pin them. Raises if a rebuilt shard's CID
    is not the recorded one."""
    store = repo.blockstore
    with tempfile.TemporaryDirectory(prefix=".ec-", dir=repo.path) as tmp:
        inputs = _shard_files(repo, Path(tmp), healthy)
        try:
            readers = [ShardReader(f) for f in inputs]
            outs = [Path(tmp) / f"out-{i}" for i, _ in lost]
            sinks: list[BinaryIO] = [open(p, "wb") for p in outs]
            try:
                rebuild([i for i, _ in lost], readers, sinks, layout_id=layout_id)
            finally:
                for f in sinks:
                    f.close()
        finally:
            for f in inputs:
                f.close()
        return _import_rebuilt(repo, lost, outs, should_stop)


def _import_rebuilt(repo: Any, lost: list[tuple[int, str]], outs: list[Path],
                    should_stop: ShouldStop | None) -> list[str]:
    """Import each rebuilt shard file and pin it; raises if one is not the
    recorded CID (then nothing wrong is ever offered to a new holder)."""
    store = repo.blockstore
    made = []
    for (i, want), p in zip(lost, outs):
        check_stop(should_stop)
        with repo.writing(), open(p, "rb") as f:
            cid = import_file(f, store).cid
            store.flush()
        if str(cid) != want:
            raise StoreError(f"rebuilt shard {i} is {cid}, not the recorded {want}")
        repo.pin_add(cid)
        made.append(want)
    return made


def _rebuild_shards_local(repo: Any, root: CID, k: int, m: int, lost: list[tuple[int, str]], layout_id: bytes,
                          should_stop: ShouldStop | None = None) -> tuple[list[str], int]:
    """Worker thread: rebuild shards `lost` (index, expected CID) by encoding
    the object's local blocks again (the blockstore's `get` verifies each),
    import and pin them. Returns the shard CIDs and the object bytes read."""
    store = repo.blockstore
    layout = plan_object(root, store.get, store.size, k, m)
    with tempfile.TemporaryDirectory(prefix=".ec-", dir=repo.path) as tmp:
        outs = [Path(tmp) / f"out-{i}" for i, _ in lost]
        sinks: list[BinaryIO] = [open(p, "wb") for p in outs]
        try:
            rebuild_from_blocks(layout, dag_blocks(root, store.get), [i for i, _ in lost], sinks,
                                layout_id=layout_id, verify=False)
        finally:
            for f in sinks:
                f.close()
        check_stop(should_stop)
        return _import_rebuilt(repo, lost, outs, should_stop), layout.data_length


def _reconstruct_object(repo: Any, root: CID, shards: list[CID], layout_id: bytes,
                        should_stop: ShouldStop | None = None) -> tuple[int, int]:
    """Worker thread: the object's blocks from local shard DAGs into the
    blockstore, each checked against its CID and the DAG walk."""
    store = repo.blockstore
    blocks = total = 0
    with tempfile.TemporaryDirectory(prefix=".ec-", dir=repo.path) as tmp:
        inputs = _shard_files(repo, Path(tmp), shards)
        try:
            readers = [ShardReader(f) for f in inputs]
            with repo.writing():
                for cid, data in reconstruct(readers, root, layout_id=layout_id):
                    check_stop(should_stop)
                    store.put(cid, data)
                    blocks += 1
                    total += len(data)
                store.flush()
        finally:
            for f in inputs:
                f.close()
    return blocks, total


def _offer_list(packed: bytes) -> list[bytes]:
    if not packed:
        return []
    try:
        v = unpack_signed(packed, "offer list", max_bin_len=64 * 1024, max_array_len=MAX_EC_SHARDS)
    except ProtocolError:
        return []
    return [x for x in v if isinstance(x, bytes)] if isinstance(v, list) else []


def _checked_offers(packed: bytes, ecmap: EcMap) -> bytes:
    """The pushed shard offers worth keeping: each signed by the map's owner,
    for one of the map's shards (anything else is dropped, not stored)."""
    owner = PeerId.from_bytes(ecmap.owner)
    shards = {str(ecmap.shard_cid(i)) for i in range(len(ecmap.shards))}
    keep = []
    for raw in _offer_list(packed):
        try:
            offer = Offer.decode(raw)
            root = Manifest.decode(offer.manifest).root_cid
        except (ProtocolError, StoreError):
            continue
        if root in shards and offer.signed_by(owner):
            keep.append(raw)
    out: bytes = msgpack.packb(keep, use_bin_type=True)
    return out


class ErasureService:
    """The EC side of one node's replication service (owner, holder and reader)."""

    def __init__(self, owner: "ReplicationOwner") -> None:
        self.owner = owner
        self.db = owner.db
        self._busy: set[str] = set()
        self._issued: dict[str, int] = {}
        self._pushed: dict[str, set[str]] = {}  # object -> holders that took the current map
        self.rebuilt: dict[str, int] = {}  # object -> shards rebuilt from others since the node started
        self._watch: dict[str, OwnerWatch] = {}  # object -> its owner's reachability (deputy election)
        self._handed_back: dict[str, EcMap] = {}  # object -> the map a deputy handed back on stepping down

    @property
    def node(self) -> "Node":
        return self.owner.node

    def attach(self, node: "Node") -> None:
        node.add_handler(EcMapGet, self.on_map_get)
        node.add_handler(EcMapPush, self.on_map_push)

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await trio.to_thread.run_sync(fn, *args)

    # -- owner: put --ec ---------------------------------------------------------

    async def place(self, cid: CID, k: int, m: int, drop_local: bool = False,
                    threshold: int | None = None) -> dict[str, Any]:
        """Record that `cid` is to be stored as K + M shards; the work runs in the background."""
        try:
            parse_scheme(f"{k}+{m}")
        except ValueError as exc:
            raise ApiError(str(exc)) from None
        threshold = k + 1 if threshold is None else threshold
        if not k <= threshold <= k + m:
            raise ApiError(f"repair threshold must be between K ({k}) and K + M ({k + m})")
        text = str(cid)
        obj = self.db.get_object(text)
        if obj is not None and obj.role == "owner" and not obj.is_released and obj.replicas_wanted > 1:
            raise ApiError(f"{text} is replicated ({obj.replicas_wanted} copies); "
                           "pin rm it first to store it erasure-coded")
        await self._run(self.db.put_ec, text, k, m, threshold, drop_local)
        self._issued.pop(text, None)
        self.owner._spawn(self.ensure, text)
        return {"scheme": {"ec": [k, m]}, "threshold": threshold, "state": "pending",
                "drop_local": drop_local}

    def check_all(self) -> None:
        """From the repair loop: bring every EC object we own to its wanted state."""
        for ec in self.db.ec_objects():
            if ec.cid not in self._busy:
                self.owner._spawn(self.ensure, ec.cid)

    async def ensure(self, cid: str) -> None:
        """Encode if not yet, place shards without a holder, repair below the
        threshold, publish the map, settle. One run per object at a time."""
        if cid in self._busy:
            return
        self._busy.add(cid)
        try:
            ec = self.db.ec_object(cid)
            if ec is None:
                return
            shards = self.db.ec_shards(cid)
            if not shards:
                shards = await self._encode(ec)
                ec = self.db.ec_object(cid) or ec
            await self._place(ec, shards)
        except (P2PError, StoreError, OSError) as exc:
            log.warning("erasure placement of %s failed: %s", cid, exc)
        finally:
            self._busy.discard(cid)

    async def _encode(self, ec: EcRow) -> list[EcShardRow]:
        root = parse_cid(ec.cid)
        # The ledger's ec-encode row: J per GB of object (store/energy/model.py reads it).
        async with measuring(self.node, EC_ENCODE) as op:
            async with self.node.store_guard.shared():
                layout_id, infos, object_bytes = await self.owner.holder.run_heavy(
                    _encode_shards, self.node.repo, root, ec.k, ec.m)
            op.bytes_hashed += object_bytes
            op.bytes_written += sum(n for _, _, n in infos)
        me = str(self.owner.me)
        for _, shard, _ in infos:
            if self.db.get_object(shard) is None:
                await self._run(self.db.put_object, shard, "owner", b"", me, 1, 0)
        await self._run(self.db.set_ec_shards, ec.cid, layout_id, infos)
        log.info("%s encoded as %d+%d shards", ec.cid, ec.k, ec.m)
        return self.db.ec_shards(ec.cid)

    def _rows(self, shards: list[EcShardRow]) -> dict[int, list[HolderRow]]:
        return {s.idx: self.db.holders(s.shard_cid) for s in shards}

    @staticmethod
    def _live(rows: list[HolderRow]) -> list[HolderRow]:
        return [h for h in rows if counts_as_copy(h.replica)]

    async def _place(self, ec: EcRow, shards: list[EcShardRow]) -> None:
        rows = self._rows(shards)
        wanted = set(shards_to_place({i: [h.replica for h in r] for i, r in rows.items()}, ec.threshold))
        if wanted and ec.deputy_for is None and await self._adopt(ec, shards, rows, wanted):
            rows = self._rows(shards)
            wanted = set(shards_to_place({i: [h.replica for h in r] for i, r in rows.items()}, ec.threshold))
        to_place = [s for s in shards if s.idx in wanted]
        if to_place:
            # Peers and repair tokens first: nothing is fetched or rebuilt for
            # a shard that could not be placed now (a swarm too small would
            # otherwise cost K shards of traffic every repair check).
            pairs: list[tuple[EcShardRow, PeerId]] = []
            for s, peer in zip(to_place, self._pick(ec, shards, rows, to_place)):
                lost_before = any(h.replica.state is State.LOST for h in rows[s.idx])
                if lost_before and not self.owner.bucket.take(time.monotonic()):
                    log.info("%s: repair rate limit reached, retrying later", ec.cid)
                    break
                pairs.append((s, peer))
            if pairs:
                await self._make_local(ec, shards, rows, [s for s, _ in pairs])
                await self._store_shards(pairs, repair=any(
                    h.replica.state is State.LOST for s, _ in pairs for h in rows[s.idx]))
                rows = self._rows(shards)
        await self._publish_map(ec, shards, rows)
        if all(any(h.replica.state is State.OK for h in rows[s.idx]) for s in shards):
            await self._settle(ec, shards)

    async def _adopt(self, ec: EcRow, shards: list[EcShardRow], rows: dict[int, list[HolderRow]],
                     wanted: set[int]) -> bool:
        """Back after a deputy acted for us: holders it placed for shards we
        count as lost are taken back (a StoreRequest they answer as a refresh,
        moving no data, since they hold the shard under our offer) instead of
        rebuilding the shard once more. The deputy's map is only a hint: a
        peer that does not hold the shard refuses, and audits check the rest."""
        maps = [m for m in await self.find_maps(parse_cid(ec.cid)) if m.owner != self.owner.me.to_bytes()]
        if ec.cid in self._handed_back:
            maps.insert(0, self._handed_back[ec.cid])
        connected = set(self.node.connected_peers())
        adopted = False
        for s in shards:
            if s.idx not in wanted:
                continue
            known = {h.peer_id for h in rows[s.idx]}
            for m in maps:
                if s.idx >= len(m.shards) or m.shards[s.idx].cid != bytes(parse_cid(s.shard_cid)):
                    continue
                peer = m.holder(s.idx)
                if peer is None or peer == self.owner.me or str(peer) in known or peer not in connected:
                    continue
                await self._run(self.db.set_holder, s.shard_cid, str(peer), Replica(State.PENDING),
                                "placed by a deputy")
                await self._store_shard(s, peer, "repair")
                adopted = True
                break
        if adopted:
            log.info("%s: took back shard holders a deputy placed", ec.cid)
        return adopted

    async def _make_local(self, ec: EcRow, shards: list[EcShardRow], rows: dict[int, list[HolderRow]],
                          needed: list[EcShardRow]) -> None:
        """Every shard in `needed` complete and pinned here, rebuilt from K others if it is not."""
        repo = self.node.repo
        absent = []
        async with self.node.store_guard.shared():
            for s in needed:
                if await self._run(_complete, repo.blockstore, parse_cid(s.shard_cid)):
                    # Still here from the encoding (no gc since): pinned again
                    # so that no gc takes it while the new holder pulls it.
                    await self._run(repo.pin_add, parse_cid(s.shard_cid))
                else:
                    absent.append(s)
        if absent:
            await self._rebuild(ec, shards, rows, absent)

    async def _rebuild(self, ec: EcRow, shards: list[EcShardRow], rows: dict[int, list[HolderRow]],
                       absent: list[EcShardRow]) -> None:
        """Rebuild `absent` shards: from our own copy of the object if we
        hold it whole, else from K healthy shards fetched from their holders."""
        if await self._rebuild_local(ec, absent):
            return
        await self._rebuild_from_shards(ec, shards, rows, absent)

    async def _rebuild_local(self, ec: EcRow, absent: list[EcShardRow]) -> bool:
        """Encode `absent` from the local object if `repair_source` says so;
        False (nothing made) when it does not, or the copy fails (corrupt
        block, another layout): the caller then fetches shards."""
        repo = self.node.repo
        root = parse_cid(ec.cid)
        async with self.node.store_guard.shared():
            pinned = repo.index.is_pinned(ec.cid)
            complete = pinned and await self._run(_complete, repo.blockstore, root)
            if repair_source(ec.deputy_for is not None, ec.layout_id is not None, pinned,
                             complete) != FROM_LOCAL or ec.layout_id is None:
                return False
            try:
                # The ledger's ec-repair row: CPU per byte read (the object) and written (the shards).
                async with measuring(self.node, EC_REPAIR) as rop:
                    made, object_bytes = await self.owner.holder.run_heavy(
                        _rebuild_shards_local, repo, root, ec.k, ec.m,
                        [(s.idx, s.shard_cid) for s in absent], ec.layout_id)
                    length = max(s.length for s in absent)
                    rop.bytes_hashed += object_bytes + len(made) * length
                    rop.bytes_written += len(made) * length
            except (StoreError, OSError) as exc:
                log.warning("%s: rebuilding from the local copy failed (%s); fetching shards instead", ec.cid, exc)
                return False
        self.rebuilt[ec.cid] = self.rebuilt.get(ec.cid, 0) + len(made)
        log.info("%s: rebuilt %d shard(s) from the local copy", ec.cid, len(made))
        return True

    async def _rebuild_from_shards(self, ec: EcRow, shards: list[EcShardRow], rows: dict[int, list[HolderRow]],
                                   absent: list[EcShardRow]) -> None:
        """Rebuild `absent` shards from K healthy ones fetched from their holders."""
        store = self.node.repo.blockstore
        wanted = {s.idx for s in absent}
        sources: list[CID] = []
        fetched = 0
        async with self.node.store_guard.shared():
            async with measuring(self.node, "repair") as op:  # the shards fetched: repair traffic
                for s in shards:
                    if len(sources) == ec.k:
                        break
                    if s.idx in wanted:
                        continue
                    cid = parse_cid(s.shard_cid)
                    if await self._run(_complete, store, cid):
                        sources.append(cid)
                        continue
                    for h in rows[s.idx]:
                        if h.replica.state is not State.OK:
                            continue
                        if await self._fetch_shard(cid, PeerId.from_string(h.peer_id), s.length):
                            sources.append(cid)
                            fetched += s.length
                            break
                op.bytes_received += fetched
            if len(sources) < ec.k:
                raise P2PError(f"{ec.cid}: only {len(sources)} healthy shards reachable, need {ec.k}")
            # The ledger's ec-repair row: CPU per shard byte read and written.
            async with measuring(self.node, EC_REPAIR) as rop:
                made = await self.owner.holder.run_heavy(
                    _rebuild_shards, self.node.repo, sources, [(s.idx, s.shard_cid) for s in absent], ec.layout_id)
                length = max(s.length for s in shards)
                rop.bytes_hashed += (len(sources) + len(made)) * length
                rop.bytes_written += len(made) * length
        self.rebuilt[ec.cid] = self.rebuilt.get(ec.cid, 0) + len(made)
        log.info("%s: rebuilt %d shard(s) from %d healthy ones", ec.cid, len(made), len(sources))

    async def _fetch_shard(self, cid: CID, peer: PeerId, length: int) -> bool:
        """Make shard `cid` local from `peer`; False if it cannot (the caller holds the store guard)."""
        if peer == self.owner.me:
            return False
        conn = await self.owner._reach(peer)
        if conn is None:
            return False
        with trio.move_on_after(SHARD_FETCH_BASE_S + length / SHARD_FETCH_RATE):
            try:
                await fetch_dag(self.node, cid, holders=[peer], guard=False)
                return True
            except (P2PError, StoreError, OSError) as exc:
                log.info("shard %s from %s: %s", cid, peer, exc)
        return False

    def _pick(self, ec: EcRow, shards: list[EcShardRow], rows: dict[int, list[HolderRow]],
              to_place: list[EcShardRow]) -> list[PeerId]:
        """New holders for `to_place`: rendezvous order keyed by the object,
        distinct network prefixes first, never a peer that holds or held a
        shard of this object (so no peer ever has two)."""
        size = max(s.length for s in to_place)
        picks = self.owner.place_avoiding(bytes(parse_cid(ec.cid)), len(to_place), size,
                                          [h for s in shards for h in rows[s.idx]], {self.owner.me})
        if len(picks) < len(to_place):
            log.info("%s: %d shard(s) to place, %d candidate peer(s)", ec.cid, len(to_place), len(picks))
        return picks

    async def _store_shards(self, pairs: list[tuple[EcShardRow, PeerId]], repair: bool) -> None:
        for s, peer in pairs:
            await self._run(self.db.set_holder, s.shard_cid, str(peer), Replica(State.PENDING), "store requested")
        kind = "repair" if repair else "replicate-out"
        async with trio.open_nursery() as nursery:
            for s, peer in pairs:
                nursery.start_soon(self._store_shard, s, peer, kind)

    async def _store_shard(self, shard: EcShardRow, peer: PeerId, kind: str) -> None:
        try:
            obj, manifest = await self.owner._ensure_manifest(shard.shard_cid)
            await self.owner._store_on(obj, manifest, peer, False, kind)
        except (P2PError, StoreError, OSError) as exc:
            log.warning("shard %d (%s) to %s failed: %s", shard.idx, shard.shard_cid, peer, exc)
            await self._run(self.db.set_holder, shard.shard_cid, str(peer),
                            Replica(State.FAILED, 0, False, True), str(exc)[:200])

    def _current_map(self, ec: EcRow, shards: list[EcShardRow], rows: dict[int, list[HolderRow]]) -> EcMap:
        entries = []
        for s in shards:
            best = b""
            for h in sorted(rows[s.idx], key=lambda r: (r.replica.state is not State.OK, -r.since)):
                if counts_as_copy(h.replica):
                    best = PeerId.from_string(h.peer_id).to_bytes()
                    break
            entries.append(ShardEntry(bytes(parse_cid(s.shard_cid)), best))
        return EcMap(bytes(parse_cid(ec.cid)), ec.k, ec.m, ec.layout_id or bytes(32), tuple(entries),
                     self.owner.me.to_bytes())

    async def _publish_map(self, ec: EcRow, shards: list[EcShardRow], rows: dict[int, list[HolderRow]]) -> None:
        """Sign the map afresh if a holder changed, and push it to every OK holder that lacks it."""
        fresh = self._current_map(ec, shards, rows)
        old = None
        if ec.map:
            try:
                old = EcMap.decode(ec.map)
            except ProtocolError:
                old = None
        if old is None or old.shards != fresh.shards or old.layout_id != fresh.layout_id:
            issued = max(time.time_ns() // 1000, (old.issued if old else 0) + 1, self._issued.get(ec.cid, 0) + 1)
            self._issued[ec.cid] = issued
            signed = fresh.signed(issued, self.node.identity.sign)
            await self._run(self.db.set_ec_map, ec.cid, signed.encode())
            self._pushed[ec.cid] = set()
            current = signed
        else:
            current = old
        if ec.deputy_for is not None:
            return  # holders keep only their owner's maps; a reader finds the deputy's by asking it
        data = current.encode()
        offers = await self._shard_offers(shards, rows)
        done = self._pushed.setdefault(ec.cid, set())
        targets = [current.holder(i) for i in range(len(current.shards))]
        ok_peers = {h.peer_id for s in shards for h in rows[s.idx] if h.replica.state is State.OK}

        async def push(peer: PeerId) -> None:
            conn = await self.owner._reach(peer)
            if conn is None:
                return
            try:
                replies = await conn.request(lambda rid: EcMapPush(rid, data, offers), timeout=PUSH_TIMEOUT_S)
            except RequestFailed as exc:
                log.info("shard map of %s to %s: %s", ec.cid, peer, exc)
                return
            if replies and isinstance(replies[0], EcMapReply):
                done.add(str(peer))

        async with trio.open_nursery() as nursery:
            for peer in targets:
                if peer is not None and str(peer) in ok_peers and str(peer) not in done:
                    nursery.start_soon(push, peer)

    async def _shard_offers(self, shards: list[EcShardRow], rows: dict[int, list[HolderRow]]) -> bytes:
        """Each shard's offer, signed by us as its owner, naming every shard's
        holder: what a deputy re-sends to place a rebuilt shard when we are gone
        (a new holder takes a shard only from the owner or a holder the owner named)."""
        everyone = [PeerId.from_string(h.peer_id) for s in shards for h in rows[s.idx]
                    if h.replica.state is State.OK]
        out = []
        for s in shards:
            obj = self.db.get_object(s.shard_cid)
            if obj is not None and obj.manifest:
                out.append(self.owner._offer(obj, everyone))
        packed: bytes = msgpack.packb(out, use_bin_type=True)
        return packed

    async def _settle(self, ec: EcRow, shards: list[EcShardRow]) -> None:
        """Every shard has a holder that signed: our local shard copies may go
        (unpinned, freed by the next gc), and with --ec-drop-local our copy too.
        A deputy keeps the shard it holds itself under its agreement."""
        repo = self.node.repo
        me = str(self.owner.me)
        drop = [s.shard_cid for s in shards
                if not any(h.peer_id == me for h in self.db.holders(s.shard_cid))]
        if ec.drop_local:
            drop.append(ec.cid)
        for cid in drop:
            if repo.index.is_pinned(cid):
                try:
                    await self._run(repo.pin_rm, parse_cid(cid))
                    log.info("%s: local %s unpinned", ec.cid, "copy" if cid == ec.cid else f"shard {cid}")
                except NotPinned:
                    pass

    async def release(self, cid: CID) -> dict[str, Any]:
        """`pin rm` of an EC object we own: every shard is released as a replica
        is (owed until its holder answers), and the object stops being audited,
        repaired and mapped."""
        text = str(cid)
        shards = self.db.ec_shards(text)
        await self._run(self.db.drop_ec, text)
        self._pushed.pop(text, None)
        holders = 0
        pending: list[str] = []
        repo = self.node.repo
        for s in shards:
            doc = await self.owner.releases.release_object(parse_cid(s.shard_cid))
            if doc is not None:
                holders += int(doc["holders"])
                pending += list(doc["pending"])
            if repo.index.is_pinned(s.shard_cid):
                try:
                    await self._run(repo.pin_rm, parse_cid(s.shard_cid))
                except NotPinned:
                    pass
        log.info("%s: unpinned by its owner; releasing %d shard(s)", text, len(shards))
        return {"state": "released", "new": True, "holders": holders, "pending": sorted(pending),
                "shards": len(shards)}

    # -- holder: shard maps --------------------------------------------------------

    async def on_map_get(self, conn: PeerConnection, msg: Message) -> list[Message]:
        assert isinstance(msg, EcMapGet)
        try:
            cid = cid_from_bytes(msg.root_cid)
        except StoreError:
            return [Error(msg.request_id, ErrorCode.MALFORMED, "bad CID")]
        data = await self._run(self.db.ec_map, str(cid))
        if data is None:
            return [Error(msg.request_id, ErrorCode.NOT_FOUND, "no shard map for this object")]
        return [EcMapReply(msg.request_id, data)]

    async def on_map_push(self, conn: PeerConnection, msg: Message) -> list[Message]:
        """Keep a map only from the owner it names, signed by it, listing us as
        the holder of a shard we hold under an agreement with that owner."""
        assert isinstance(msg, EcMapPush)
        rid = msg.request_id
        try:
            ecmap = EcMap.decode(msg.ec_map)
        except ProtocolError as exc:
            return [Error(rid, ErrorCode.MALFORMED, f"bad shard map: {exc}"[:500])]
        sender = conn.remote_peer.to_bytes()
        if ecmap.owner != sender or not ecmap.verify():
            return [Error(rid, ErrorCode.REFUSED, "shard map is not signed by its sender")]
        own = self.db.ec_object(str(ecmap.object_root))
        if own is not None and own.deputy_for is None:
            # Our own object: a deputy that stepped down hands back the map of
            # what it placed. Only a holder our map names may; it is a hint
            # for `_adopt`, kept in memory, never served to readers.
            if own.map is None or sender not in {s.holder for s in EcMap.decode(own.map).shards}:
                return [Error(rid, ErrorCode.REFUSED, "not a holder of this object")]
            self._handed_back[str(ecmap.object_root)] = ecmap
            self.owner.wake()
            return [EcMapReply(rid, b"")]
        # Only a holder under agreement keeps a map: a peer cannot fill our index
        # with maps of objects we hold nothing of.
        mine = [ecmap.shard_cid(i) for i, s in enumerate(ecmap.shards) if s.holder == self.owner.me.to_bytes()]
        held = [self.db.get_object(str(c)) for c in mine]
        if not any(o is not None and o.role != "owner" and not o.is_released and o.owner == str(conn.remote_peer)
                   for o in held):
            return [Error(rid, ErrorCode.REFUSED, "this node holds no shard of that object for its sender")]
        offers = _checked_offers(msg.offers, ecmap)
        await self._run(self.db.keep_ec_map, str(ecmap.object_root), str(conn.remote_peer), ecmap.issued,
                        msg.ec_map, offers)
        return [EcMapReply(rid, b"")]

    def co_holders(self, shard_cid: str) -> set[bytes]:
        """The holders (and owner) of every shard of the EC object `shard_cid`
        belongs to, per the owner's map we keep: who may audit us as a deputy."""
        out: set[bytes] = set()
        for _, data, _ in self.db.ec_maps_kept():
            try:
                ecmap = EcMap.decode(data)
            except ProtocolError:
                continue
            if any(s.cid == bytes(parse_cid(shard_cid)) for s in ecmap.shards):
                out |= {s.holder for s in ecmap.shards if s.holder}
        return out

    # -- deputy: the owner of an EC object is gone -------------------------------------

    async def check_deputies(self) -> None:
        """One round over the maps pushed to us: once an object's owner has
        missed three checks in a row, the lowest-id live shard holder takes
        over its audits and repairs (as for replicas); it steps down when the
        owner is back."""
        me = self.owner.me
        seen: dict[bytes, bool] = {}
        for cid, data, offers in self.db.ec_maps_kept():
            try:
                ecmap = EcMap.decode(data)
                owner = PeerId.from_bytes(ecmap.owner)
            except (ProtocolError, P2PError):
                continue
            if owner == me:
                continue
            if ecmap.owner not in seen:
                seen[ecmap.owner] = await self.owner._reach(owner) is not None
            reachable = seen[ecmap.owner]
            watch = self._watch.setdefault(cid, OwnerWatch())
            gone = watch.check(reachable)
            ec = self.db.ec_object(cid)
            if ec is not None and ec.deputy_for is not None:
                if reachable:
                    await self._step_down(ec)
                continue
            if ec is not None or not gone:
                continue
            live = [me]
            for i in range(len(ecmap.shards)):
                peer = ecmap.holder(i)
                if peer is not None and peer != me and await self.owner._reach(peer) is not None:
                    live.append(peer)
            if deputy(live) == me:
                await self._take_over(cid, ecmap, data, offers, owner)

    async def _take_over(self, cid: str, ecmap: EcMap, data: bytes, offers: bytes, owner: PeerId) -> None:
        me = str(self.owner.me)
        mine = [i for i, s in enumerate(ecmap.shards) if s.holder == self.owner.me.to_bytes()]
        held = self.db.get_object(str(ecmap.shard_cid(mine[0]))) if mine else None
        if held is None or not held.size:
            return
        by_shard: dict[str, bytes] = {}
        for raw in _offer_list(offers):
            try:
                by_shard[Manifest.decode(Offer.decode(raw).manifest).root_cid] = raw
            except (ProtocolError, StoreError):
                continue
        rows = []
        for i in range(len(ecmap.shards)):
            shard = str(ecmap.shard_cid(i))
            holder = ecmap.holder(i)
            if i in mine:
                await self._run(self.db.set_holder, shard, me, Replica(State.OK), "deputy's own shard")
            else:
                offered = by_shard.get(shard)
                if offered is None:
                    log.info("%s: no offer for shard %d from its owner; cannot act as deputy", cid, i)
                    return
                offer = Offer.decode(offered)
                if self.db.get_object(shard) is None:
                    await self._run(self.db.put_object, shard, "deputy", offer.manifest, str(owner), 1,
                                    held.size, offered)
                if holder is not None:
                    await self._run(self.db.set_holder, shard, str(holder), Replica(State.OK),
                                    "co-holder (deputy's view)")
            rows.append((i, shard, held.size))
        await self._run(self.db.put_ec, cid, ecmap.k, ecmap.m, ecmap.k + 1, False, str(owner))
        await self._run(self.db.set_ec_shards, cid, ecmap.layout_id, rows)
        await self._run(self.db.set_ec_map, cid, data)
        log.info("%s: owner %s gone; taking over its %d+%d shards as deputy", cid, owner, ecmap.k, ecmap.m)
        self.owner.wake()

    async def _step_down(self, ec: EcRow) -> None:
        """The owner is back: forget what we made to act for it (it audits and
        repairs again; shards we placed meanwhile are agreements with it)."""
        me = str(self.owner.me)
        repo = self.node.repo
        for s in self.db.ec_shards(ec.cid):
            obj = self.db.get_object(s.shard_cid)
            if obj is not None and obj.role == "deputy" and not any(
                    h.peer_id == me for h in self.db.holders(s.shard_cid)):
                await self._run(self.db.forget_object, s.shard_cid)
                if repo.index.is_pinned(s.shard_cid):
                    try:
                        await self._run(repo.pin_rm, parse_cid(s.shard_cid))
                    except NotPinned:
                        pass
        if ec.map and ec.deputy_for:
            # Hand our map back: the owner takes over the holders we placed
            # instead of rebuilding their shards once more.
            conn = await self.owner._reach(PeerId.from_string(ec.deputy_for))
            if conn is not None:
                data = ec.map
                try:
                    await conn.request(lambda rid: EcMapPush(rid, data), timeout=PUSH_TIMEOUT_S)
                except RequestFailed as exc:
                    log.info("%s: handing the map back to %s: %s", ec.cid, ec.deputy_for, exc)
        await self._run(self.db.drop_ec, ec.cid)
        log.info("%s: owner %s is back, stepping down as deputy", ec.cid, ec.deputy_for)

    # -- reader ---------------------------------------------------------------------

    async def find_maps(self, cid: CID) -> list[EcMap]:
        """Signed shard maps of `cid` from our tables and every connected peer, newest first."""
        found: dict[bytes, EcMap] = {}

        def take(data: bytes | None) -> None:
            if not data:
                return
            try:
                ecmap = EcMap.decode(data)
            except ProtocolError:
                return
            if ecmap.object_cid == bytes(cid) and ecmap.verify():
                found[data] = ecmap

        take(await self._run(self.db.ec_map, str(cid)))

        async def ask(peer: PeerId) -> None:
            conn = self.node.connection_to(peer)
            if conn is None:
                return
            try:
                replies = await conn.request(lambda rid: EcMapGet(rid, bytes(cid)), timeout=MAP_TIMEOUT_S)
            except RequestFailed:
                return
            if replies and isinstance(replies[0], EcMapReply):
                take(replies[0].ec_map)

        async with trio.open_nursery() as nursery:
            for peer in self.node.connected_peers():
                nursery.start_soon(ask, peer)
        return sorted(found.values(), key=lambda e: e.issued, reverse=True)

    async def recover(self, cid: CID) -> dict[str, Any]:
        """Rebuild `cid` into the blockstore from K shards (NoPeers if no map is found)."""
        maps = await self.find_maps(cid)
        if not maps:
            raise NoPeers(f"no connected peer has {cid}, nor a shard map of it")
        failure: Exception | None = None
        for ecmap in maps:
            try:
                return await self._recover_from(cid, ecmap)
            except (P2PError, StoreError, OSError) as exc:
                failure = exc
                log.info("rebuilding %s from the map of %s failed: %s", cid, ecmap.owner.hex()[:16], exc)
        raise P2PError(f"could not rebuild {cid} from its shards: {failure}")

    async def _recover_from(self, cid: CID, ecmap: EcMap) -> dict[str, Any]:
        store = self.node.repo.blockstore
        got: list[int] = []
        async with self.node.store_guard.shared():
            async with trio.open_nursery() as nursery:

                async def one(i: int) -> None:
                    shard = ecmap.shard_cid(i)
                    if await self._run(_complete, store, shard):
                        ok = True
                    else:
                        peer = ecmap.holder(i)
                        ok = peer is not None and await self._fetch_shard(shard, peer, 0)
                    if ok:
                        got.append(i)
                        if len(got) >= ecmap.k:
                            nursery.cancel_scope.cancel()

                for i in range(len(ecmap.shards)):
                    nursery.start_soon(one, i)
            if len(got) < ecmap.k:
                raise P2PError(f"only {len(got)} of the {ecmap.k} shards needed could be fetched")
            chosen = sorted(got)[:ecmap.k]
            blocks, total = await self.owner.holder.run_heavy(
                _reconstruct_object, self.node.repo, cid, [ecmap.shard_cid(i) for i in chosen], ecmap.layout_id)
        log.info("%s rebuilt from shards %s (%d blocks)", cid, chosen, blocks)
        return {"rebuilt_from_shards": chosen, "rebuilt_blocks": blocks, "rebuilt_bytes": total}

    # -- status -----------------------------------------------------------------------

    def status(self, ec: EcRow) -> dict[str, Any]:
        """The EC part of `shoal status CID --json` on the owner."""
        shards = self.db.ec_shards(ec.cid)
        out = []
        healthy = 0
        holders: list[str] = []
        for s in shards:
            rows = self.db.holders(s.shard_cid)
            live = sorted(self._live(rows), key=lambda r: (r.replica.state is not State.OK, -r.since))
            row = live[0] if live else (max(rows, key=lambda r: r.since) if rows else None)
            doc: dict[str, Any] = {"index": s.idx, "shard_cid": s.shard_cid, "length": s.length,
                                   "kind": "data" if s.idx < ec.k else "parity"}
            if row is None:
                doc.update(holder=None, state="unplaced", last_audit=None)
            else:
                j = row.as_json()
                doc.update(holder=row.peer_id, state=j["state"], last_audit=j["last_audit"], detail=j["detail"])
            if live:
                healthy += 1
                holders.append(live[0].peer_id)
            doc["healthy"] = bool(live)
            out.append(doc)
        placed = bool(shards) and all(d["state"] == "ok" for d in out)
        result: dict[str, Any] = {
            "scheme": {"ec": [ec.k, ec.m]}, "threshold": ec.threshold, "drop_local": ec.drop_local,
            "local_copy": self.node.repo.index.is_pinned(ec.cid), "encoded": bool(shards),
            "placed": placed, "shards": out, "shards_healthy": healthy,
            "survives_losses": survivable_losses(healthy, ec.k) if shards else None,
            "shards_rebuilt": self.rebuilt.get(ec.cid, 0),
        }
        if ec.map:
            try:
                result["map_issued"] = EcMap.decode(ec.map).issued
            except ProtocolError:
                pass
        if shards:
            afr = [self._afr(p) for p in holders]
            repair_hours = (3 * self.owner.audit_interval + 3600.0) / 3600.0
            result["annual_loss_probability"] = loss_probability(afr, healthy - ec.k, repair_hours) \
                if healthy >= ec.k else 1.0
            result["durability_model"] = {
                "holder_afr": afr, "repair_hours": repair_hours, "prior_afr": PRIOR_AFR,
                "note": "docs/DURABILITY.md; per holder: proven losses per observed year, prior-smoothed"}
        return result

    def _afr(self, peer_id: str) -> float:
        try:
            rec = self.node.peers.get(PeerId.from_string(peer_id))
        except P2PError:
            rec = None
        losses = rec.reputation.proven_losses if rec is not None else 0
        first = self.db.first_audit(peer_id)
        years = (time.time() - first) / (HOURS_PER_YEAR * 3600.0) if first is not None else 0.0
        return holder_afr(losses, years)
