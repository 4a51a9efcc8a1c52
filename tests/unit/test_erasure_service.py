"""The erasure-coded placement's pure parts and handlers, without sockets:
the scheme syntax, the signed shard map (bounds, canonical form, forgery),
which shards to place (lazy repair below the threshold), the holder's
EcMapPush/EcMapGet handlers, the per-holder failure-rate estimate, and the
owner's encoding into pinned shard objects that rebuild the original."""

from __future__ import annotations

import hashlib
import io
import math
from pathlib import Path
from typing import Iterator

import msgpack
import pytest

from shoal.p2p.errors import ProtocolError
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions, parse_ec_scheme
from shoal.p2p.replication.ec_map import EcMap, ShardEntry
from shoal.p2p.replication.erasure import (
    FROM_LOCAL, FROM_SHARDS, PRIOR_AFR, _encode_shards, _rebuild_shards_local, _reconstruct_object, holder_afr,
    repair_source, shards_to_place,
)
from shoal.p2p.replication.owner import ReplicationOwner
from shoal.p2p.replication.repair_policy import Replica, State
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire.messages import EcMapGet, EcMapPush, EcMapReply, Error, ErrorCode
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.dag import exporter
from shoal.store.dag.importer import import_file
from shoal.store.ipld.cid import RAW, cid_for_digest, parse_cid
from shoal.store.errors import StoreError
from shoal.store.persist.repo import Repo
from tests.helpers import random_bytes

OWNER = Identity.from_seed(hashlib.sha256(b"ec-owner").digest())
HOLDER = Identity.from_seed(hashlib.sha256(b"ec-holder").digest())
STRANGER = Identity.from_seed(hashlib.sha256(b"ec-stranger").digest())
SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=4096, max_links=4)


class FakeConn:
    def __init__(self, peer: PeerId) -> None:
        self.remote_peer = peer


def raw_cid(n: int) -> bytes:
    return bytes(cid_for_digest(RAW, hashlib.sha256(bytes([n])).digest()))


def a_map(holders: list[bytes] | None = None, k: int = 4, m: int = 2) -> EcMap:
    holders = holders if holders is not None else [b""] * (k + m)
    shards = tuple(ShardEntry(raw_cid(i), h) for i, h in enumerate(holders))
    return EcMap(raw_cid(200), k, m, b"\x07" * 32, shards, OWNER.peer_id.to_bytes()).signed(123, OWNER.sign)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


@pytest.mark.parametrize("text, want", [("4+2", (4, 2)), (" 10+6 ", (10, 6)), ("1+1", (1, 1)), ("16+16", (16, 16))])
def test_scheme_accepted(text: str, want: tuple[int, int]) -> None:
    assert parse_ec_scheme(text) == want


@pytest.mark.parametrize("text, why", [
    ("0+2", "K >= 1"), ("4+0", "M >= 1"), ("30+3", "at most 32"), ("4", "K+M"), ("4+2+1", "K+M"),
    ("a+b", "K+M"), ("-1+2", "K+M"), ("", "K+M"),
])
def test_scheme_refused_with_one_line(text: str, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("+", r"\+")) as exc:
        parse_ec_scheme(text)
    assert "\n" not in str(exc.value)


def test_map_round_trip_and_signature() -> None:
    ecmap = a_map([HOLDER.peer_id.to_bytes()] * 6)
    back = EcMap.decode(ecmap.encode())
    assert back == ecmap and back.verify()
    assert back.holder(0) == HOLDER.peer_id and bytes(back.shard_cid(3)) == raw_cid(3)
    # Any change to what was signed breaks the signature: a holder cannot be swapped in.
    forged = EcMap(back.object_cid, 4, 2, back.layout_id,
                   (ShardEntry(raw_cid(0), STRANGER.peer_id.to_bytes()),) + back.shards[1:],
                   back.owner, back.issued, back.sig)
    assert not forged.verify()
    # ...nor re-signed by someone else under the owner's name.
    assert not EcMap(**{**forged.__dict__, "sig": STRANGER.sign(forged.signing_bytes())}).verify()


def test_map_decoding_is_bounded_and_strict() -> None:
    good = a_map().encode()
    fields = msgpack.unpackb(good, raw=False)
    for bad in (
        b"\xc1", msgpack.packb([2] + fields[1:]), msgpack.packb(fields[:-1]),
        msgpack.packb(fields[:2] + [0, 2] + fields[4:]),  # K = 0
        msgpack.packb(fields[:2] + [30, 3] + fields[4:]),  # K + M > 32
        msgpack.packb(fields[:5] + [fields[5][:5]] + fields[6:]),  # 5 entries for 4+2
        msgpack.packb(fields[:4] + [b"short"] + fields[5:]),  # layout id not 32 bytes
        msgpack.packb(fields[:5] + [[[b"not a cid", b""]] * 6] + fields[6:]),
        msgpack.packb(fields[:7] + [0, fields[8]]),  # issued 0
        msgpack.packb(fields[:5] + [[[raw_cid(1), b""]] * 40] + fields[6:]),  # over the array bound
        good + b"\x00",
    ):
        with pytest.raises(ProtocolError):
            EcMap.decode(bad)


def ok() -> Replica:
    return Replica(State.OK)


def lost() -> Replica:
    return Replica(State.LOST)


def test_shards_to_place_repairs_lazily_below_the_threshold() -> None:
    six_ok = {i: [ok()] for i in range(6)}
    assert shards_to_place(six_ok, 5) == []
    one_lost = {**six_ok, 2: [lost()]}
    assert shards_to_place(one_lost, 5) == []  # 5 healthy: not below K + 1
    two_lost = {**one_lost, 4: [lost()]}
    assert shards_to_place(two_lost, 5) == [2, 4]  # 4 healthy < 5: both lost ones at once
    assert shards_to_place(one_lost, 6) == [2]  # a stricter threshold repairs the first loss
    # Never placed (no row, or only a refusal) is placed at once, whatever the threshold.
    refused = Replica(State.FAILED, 0, False, True)
    fresh = {0: [], 1: [refused], 2: [ok()], 3: [ok()], 4: [ok()], 5: [lost()]}
    assert shards_to_place(fresh, 3) == [0, 1]
    # A suspect (missed an audit or two) still counts: no repair yet.
    assert shards_to_place({**two_lost, 4: [Replica(State.FAILED, 2)]}, 5) == []
    # A lost shard re-held elsewhere is healthy again.
    assert shards_to_place({**two_lost, 2: [lost(), ok()], 4: [lost(), Replica(State.PENDING)]}, 5) == []


def test_holder_afr_moves_with_observed_losses() -> None:
    assert holder_afr(0, 0.0) == pytest.approx(-math.expm1(-PRIOR_AFR))
    assert holder_afr(0, 10.0) < holder_afr(0, 0.0) < holder_afr(1, 0.1)
    assert 0.0 < holder_afr(0, 1000.0) and holder_afr(1000, 0.0) <= 0.99


async def test_map_push_kept_only_from_its_owner_listing_us(repo: Repo) -> None:
    service = ReplicationOwner(Node(repo, HOLDER, NodeOptions()))
    ec = service.erasure
    listed = a_map([HOLDER.peer_id.to_bytes()] + [b""] * 5)
    obj = bytes(listed.object_cid)
    # Listed as a holder but holding nothing: refused.
    [r] = await ec.on_map_push(FakeConn(OWNER.peer_id), EcMapPush(9, listed.encode()))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.REFUSED
    service.db.put_object(str(listed.shard_cid(0)), "holder", b"", str(OWNER.peer_id), 1, 0)
    [miss] = await ec.on_map_get(FakeConn(STRANGER.peer_id), EcMapGet(1, obj))  # type: ignore[arg-type]
    assert isinstance(miss, Error) and miss.code == ErrorCode.NOT_FOUND
    # From someone else than the owner the map names: refused, not kept.
    [r] = await ec.on_map_push(FakeConn(STRANGER.peer_id), EcMapPush(2, listed.encode()))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.REFUSED
    # The owner's map that does not list us: refused (no storage for strangers' maps).
    [r] = await ec.on_map_push(FakeConn(OWNER.peer_id), EcMapPush(3, a_map().encode()))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.REFUSED
    # Garbage: malformed.
    [r] = await ec.on_map_push(FakeConn(OWNER.peer_id), EcMapPush(4, b"\x93\x01"))  # type: ignore[arg-type]
    assert isinstance(r, Error) and r.code == ErrorCode.MALFORMED
    [r] = await ec.on_map_push(FakeConn(OWNER.peer_id), EcMapPush(5, listed.encode()))  # type: ignore[arg-type]
    assert isinstance(r, EcMapReply)
    [got] = await ec.on_map_get(FakeConn(STRANGER.peer_id), EcMapGet(6, obj))  # type: ignore[arg-type]
    assert isinstance(got, EcMapReply) and got.ec_map == listed.encode()
    # The map names who may audit our shard besides its owner: the object's shard holders.
    assert ec.co_holders(str(listed.shard_cid(3))) == {HOLDER.peer_id.to_bytes()}
    assert ec.co_holders(str(parse_cid("bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"))) == set()
    # An older map from the same owner does not replace the newer one.
    older = EcMap(**{**listed.__dict__, "sig": b""}).signed(100, OWNER.sign)
    [r] = await ec.on_map_push(FakeConn(OWNER.peer_id), EcMapPush(7, older.encode()))  # type: ignore[arg-type]
    [got] = await ec.on_map_get(FakeConn(STRANGER.peer_id), EcMapGet(8, obj))  # type: ignore[arg-type]
    assert isinstance(got, EcMapReply) and EcMap.decode(got.ec_map).issued == 123


def test_owner_encoding_gives_pinned_shard_objects_that_rebuild_the_object(repo: Repo, tmp_path: Path) -> None:
    data = random_bytes(300_000, 18)
    (tmp_path / "f.bin").write_bytes(data)
    root = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    layout_id, shards, object_bytes = _encode_shards(repo, root, 4, 2)
    assert object_bytes >= len(data)  # the whole DAG: leaves and the nodes above them
    assert [i for i, _, _ in shards] == list(range(6)) and len({c for _, c, _ in shards}) == 6
    assert all(repo.index.is_pinned(c) for _, c, _ in shards)
    # The same bytes encode to the same shard CIDs (what lets a rebuilt shard keep its CID).
    assert _encode_shards(repo, root, 4, 2) == (layout_id, shards, object_bytes)
    # A second repo that has only shards 1, 2, 4, 5 rebuilds the object, block by block.
    with Repo.init(tmp_path / "other") as other:
        picked = []
        for i, cid_text, _ in shards:
            if i in (1, 2, 4, 5):
                cid = parse_cid(cid_text)
                other_bytes = b"".join(exporter.read_file(repo.blockstore, cid))
                with other.writing():
                    assert import_file(io.BytesIO(other_bytes), other.blockstore).cid == cid
                    other.blockstore.flush()
                picked.append(cid)
        blocks, total = _reconstruct_object(other, root, picked, layout_id)
        assert blocks > 1 and b"".join(exporter.read_file(other.blockstore, root)) == data


def test_pushed_offers_kept_only_if_the_owner_signed_them_for_the_maps_shards(repo: Repo, tmp_path: Path) -> None:
    from shoal.p2p.replication.erasure import _checked_offers, _offer_list
    from shoal.p2p.replication.signed import Offer
    from shoal.store.proofs.commit_files import build_commitment
    from shoal.store.proofs.manifest import Manifest

    (tmp_path / "f.bin").write_bytes(random_bytes(50_000, 3))
    root = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    layout_id, shards, _ = _encode_shards(repo, root, 2, 1)
    holders = (OWNER.peer_id.to_bytes(), HOLDER.peer_id.to_bytes(), STRANGER.peer_id.to_bytes())

    def offer(shard: str, signer: Identity) -> bytes:
        c = build_commitment(repo.blockstore, repo.path, parse_cid(shard))
        m = Manifest(shard, c.length, "fixed", "p", c, OWNER.peer_id.to_bytes(), 1)
        m = m.with_signature(OWNER.sign(m.signing_bytes()))
        return Offer(m.encode(), 1, holders).with_owner_sig(5, signer.sign).encode()

    ecmap = EcMap(bytes(root), 2, 1, layout_id, tuple(ShardEntry(bytes(parse_cid(c)), h)
                                                      for (_, c, _), h in zip(shards, holders)),
                  OWNER.peer_id.to_bytes()).signed(9, OWNER.sign)
    good = [offer(c, OWNER) for _, c, _ in shards]
    forged = offer(shards[0][1], STRANGER)  # holder list not signed by the owner
    (tmp_path / "g.bin").write_bytes(random_bytes(9_000, 4))
    other = offer(str(repo.add(tmp_path / "g.bin", profile=SMALL).cid), OWNER)  # not a shard of this map
    packed = msgpack.packb(good + [forged, other, b"junk"], use_bin_type=True)
    assert _offer_list(_checked_offers(packed, ecmap)) == good
    assert _offer_list(b"\xc1") == [] and _checked_offers(b"", ecmap) == msgpack.packb([])


def test_repair_source_is_the_local_copy_only_when_the_owner_holds_it_whole() -> None:
    """The owner with its copy pinned and complete re-encodes (moves no shard in);
    a deputy, a dropped/collected copy, or a missing layout id fetch K shards."""
    assert repair_source(is_deputy=False, has_layout_id=True, object_pinned=True, object_complete=True) == FROM_LOCAL
    for deputy, has_id, pinned, complete in [
        (True, True, True, True),    # a deputy: whatever it has, it is not the owner's copy
        (False, True, False, True),  # blocks still there but unpinned (--ec-drop-local): gc may take them
        (False, True, True, False),  # pinned but some block gone
        (False, False, True, True),  # no recorded layout to prove the re-encoding against
        (False, True, False, False),
    ]:
        assert repair_source(deputy, has_id, pinned, complete) == FROM_SHARDS, (deputy, has_id, pinned, complete)


def test_local_rebuild_gives_the_placed_shards_again(repo: Repo, tmp_path: Path) -> None:
    """After the shards' local copies are collected, the owner's copy alone gives
    the lost shards back byte for byte (same CIDs), reading the object once."""
    data = random_bytes(300_000, 19)
    (tmp_path / "f.bin").write_bytes(data)
    root = repo.add(tmp_path / "f.bin", profile=SMALL).cid
    layout_id, shards, object_bytes = _encode_shards(repo, root, 4, 2)
    for _, c, _ in shards:
        repo.pin_rm(parse_cid(c))
    repo.gc()
    lost = [(1, shards[1][1]), (5, shards[5][1])]
    assert not any(repo.blockstore.has(parse_cid(c)) for _, c in lost)
    made, read = _rebuild_shards_local(repo, root, 4, 2, lost, layout_id)
    assert made == [c for _, c in lost] and read == object_bytes
    assert all(repo.index.is_pinned(c) for c in made)
    for (i, c), length in zip(lost, (shards[1][2], shards[5][2])):
        assert sum(len(p) for p in exporter.read_file(repo.blockstore, parse_cid(c))) == length
    # Another encoding (another scheme) never passes for the placed shards.
    with pytest.raises(StoreError):
        _rebuild_shards_local(repo, root, 3, 3, lost, layout_id)
