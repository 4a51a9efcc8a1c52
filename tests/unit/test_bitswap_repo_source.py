"""A repo served over Bitswap (RepoSource + driver): verified reads, quarantine, odd CIDs."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import trio
from trio.testing import memory_stream_one_way_pair

from shoal.p2p.bitswap.driver import Bitswap
from shoal.p2p.bitswap.message import PROTOCOL_1_2_0
from shoal.p2p.bitswap.repo_source import RepoSource
from shoal.store.ipld.cid import block_key, make_cid
from shoal.store.persist.flatfs import shard_of
from shoal.store.persist.repo import QUARANTINE_DIR, Repo


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


def _flip(repo: Repo, key: str) -> None:
    path = repo.path / "blocks" / shard_of(key) / f"{key}.data"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


def test_repo_source_answers_and_quarantines(repo: Repo) -> None:
    good, bad = b"a good block" * 100, b"a block that rots" * 100
    good_cid, bad_cid = make_cid("raw", good), make_cid("raw", bad)
    repo.blockstore.put(good_cid, good)
    repo.blockstore.put(bad_cid, bad)
    repo.blockstore.flush()
    _flip(repo, block_key(bad_cid))
    source = RepoSource(repo)
    assert source.has(bytes(good_cid)) and source.size(bytes(good_cid)) == len(good)
    assert source.get(bytes(good_cid)) == good
    assert source.has(bytes(bad_cid))  # looks present until read...
    assert source.get(bytes(bad_cid)) is None  # ...then refused and moved aside
    assert not source.has(bytes(bad_cid))
    assert any((repo.path / QUARANTINE_DIR).rglob("*"))
    for odd in (bytes([0x01, 0x71, 0x12, 0x20]) + bytes(32),   # dag-cbor: not a codec Shoal holds
                bytes([0x01, 0x55, 0x00, 0x03]) + b"abc",      # identity
                b"\x01"):                                      # not a CID at all
        assert not source.has(odd) and source.size(odd) is None and source.get(odd) is None


async def test_a_repo_serves_over_bitswap_and_never_sends_a_rotten_block(repo: Repo) -> None:
    blocks = [bytes([i]) * (50_000 + i) for i in range(8)]
    cids = [make_cid("raw", b) for b in blocks]
    for cid, data in zip(cids, blocks):
        repo.blockstore.put(cid, data)
    repo.blockstore.flush()
    _flip(repo, block_key(cids[3]))
    server, client = Bitswap(RepoSource(repo)), Bitswap(RepoSource(repo))
    s_to_c, c_from_s = memory_stream_one_way_pair()
    c_to_s, s_from_c = memory_stream_one_way_pair()
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run_peer, "client", PROTOCOL_1_2_0, s_to_c, s_from_c)
        await nursery.start(client.run_peer, "server", PROTOCOL_1_2_0, c_to_s, c_from_s)
        with trio.fail_after(10):
            result = await client.fetch([bytes(c) for c in cids])
        nursery.cancel_scope.cancel()
    assert result.blocks == {bytes(c): b for c, b in zip(cids, blocks) if c != cids[3]}
    assert result.missing == (bytes(cids[3]),)
