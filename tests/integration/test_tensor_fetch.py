"""`shoal cat CID --tensor NAME`: offline, and lazily through a node from a remote peer.

The remote case runs two real node processes (shoal.cli.swarm.LocalSwarm): a ~50
MB checkpoint is put on A with the safetensors chunker; B, which has none
of it, prints one tensor. B must receive only the root, the header and that
tensor's blocks: its received-bytes counter (GET /v1/stats) is bounded by
1.2 x tensor + header + every DAG node of the file, and the bytes printed
must be exactly the tensor's.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli.swarm import LocalSwarm
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.dag.exporter import walk_dag
from shoal.store.dag.importer import import_path
from shoal.store.chunking.profiles import UNIXFS_V1_2025
from shoal.store.chunking.safetensors import SafetensorsChunker, parse_header
from tests.helpers import assert_one_line_error, run_shoal
from tests.helpers_safetensors import model_shapes, write_safetensors

pytestmark = pytest.mark.integration

TENSOR = "layers.3.mlp.up.weight"


def _model(tmp_path: Path, layers: int, hidden: int) -> tuple[Path, bytes]:
    path = tmp_path / "model.safetensors"
    write_safetensors(path, model_shapes(layers=layers, hidden=hidden), seed=11,
                      metadata={"format": "pt"})
    return path, path.read_bytes()


def _tensor(data: bytes, name: str) -> bytes:
    header = parse_header(data)
    info = header.tensor(name)
    return data[header.data_start + info.begin:header.data_start + info.end]


@pytest.mark.parametrize("chunker", ["safetensors", "fixed"])
def test_cat_tensor_offline(tmp_path: Path, chunker: str) -> None:
    path, data = _model(tmp_path, layers=4, hidden=128)
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    put = run_shoal(repo, "put", str(path), "--chunker", chunker, "--quiet")
    assert put.code == 0, put.err
    cid = put.text.strip()
    for name in ("embed.weight", TENSOR, "head.weight", "layers.0.norm1.weight"):
        out = run_shoal(repo, "cat", cid, "--tensor", name)
        assert out.code == 0, out.err
        assert out.out == _tensor(data, name), name
    window = run_shoal(repo, "cat", cid, "--tensor", TENSOR, "--offset", "100", "--length", "50")
    assert window.out == _tensor(data, TENSOR)[100:150]
    assert_one_line_error(run_shoal(repo, "cat", cid, "--tensor", "no.such.tensor"))


def test_cat_tensor_from_remote_peer_moves_only_that_tensor(tmp_path: Path) -> None:
    path, data = _model(tmp_path, layers=8, hidden=512)  # ~50 MB, 2 MiB MLP tensors
    assert 40e6 < len(data) < 60e6
    header = parse_header(data)
    tensor = _tensor(data, TENSOR)
    # The DAG's interior nodes, computed from the same import in memory.
    bs = MemoryBlockstore()
    expected_cid = import_path(path, bs, UNIXFS_V1_2025, SafetensorsChunker()).cid
    node_bytes = sum(len(block) for c, block in walk_dag(bs, expected_cid) if c.codec.name == "dag-pb")

    with LocalSwarm(tmp_path / "swarm") as swarm:
        a = swarm.add("a")
        b = swarm.add("b", bootstrap=a.addrs)
        swarm.wait_connected(b, 1)
        put = run_shoal(a.repo, "put", str(path), "--chunker", "safetensors", "--quiet")
        assert put.code == 0, put.err
        cid = put.text.strip()
        assert cid == str(expected_cid)
        before = b.call("GET", "/v1/stats")["received_bytes"]

        out = run_shoal(b.repo, "cat", cid, "--tensor", TENSOR)
        assert out.code == 0, out.err
        assert out.out == tensor
        received = b.call("GET", "/v1/stats")["received_bytes"] - before
        served = a.call("GET", "/v1/stats")["served_bytes"]
        bound = 1.2 * len(tensor) + header.data_start + node_bytes
        print(f"tensor {len(tensor)} B, header {header.data_start} B, DAG nodes {node_bytes} B, "
              f"file {len(data)} B: B received {received} B (bound {bound:.0f}), A served {served} B")
        assert len(tensor) <= received <= bound
        assert served == received

        # Cached: the same tensor again moves nothing; another one moves only itself.
        again = run_shoal(b.repo, "cat", cid, "--tensor", TENSOR)
        assert again.out == tensor
        assert b.call("GET", "/v1/stats")["received_bytes"] - before == received
        other = run_shoal(b.repo, "cat", cid, "--tensor", "layers.6.attn.out.weight")
        assert other.out == _tensor(data, "layers.6.attn.out.weight")
        grew = b.call("GET", "/v1/stats")["received_bytes"] - before - received
        assert grew == len(other.out)


def test_cat_byte_range_from_remote_peer_fixed_chunks(tmp_path: Path) -> None:
    """Plain `cat --offset/--length` through a node also fetches only the covering blocks."""
    from tests.helpers import write_random

    src = tmp_path / "blob.bin"
    data = write_random(src, 20 * 1024 * 1024 + 123, seed=5)
    with LocalSwarm(tmp_path / "swarm") as swarm:
        a = swarm.add("a")
        b = swarm.add("b", bootstrap=a.addrs)
        swarm.wait_connected(b, 1)
        cid = run_shoal(a.repo, "put", str(src), "--quiet").text.strip()
        out = run_shoal(b.repo, "cat", cid, "--offset", str(5 * 1024 * 1024 - 10), "--length", "20")
        assert out.code == 0, out.err
        assert out.out == data[5 * 1024 * 1024 - 10:5 * 1024 * 1024 + 10]
        received = b.call("GET", "/v1/stats")["received_bytes"]
        # Two 1 MiB leaves straddle the offset, plus the root node (21 links).
        assert 2 * 1024 * 1024 < received < 2 * 1024 * 1024 + 4096


async def test_remote_safetensors_api_in_process(tmp_path: Path) -> None:
    """The Python API: open by CID on a node, read one tensor lazily; a lying holder is caught."""
    import trio

    from shoal.p2p.secure.identity import Identity
    from shoal.p2p.net.node import Node
    from shoal.p2p.net.node_config import NodeOptions
    from shoal.p2p.exchange.range_fetch import fetch_range
    from shoal.p2p.exchange.fetch import FetchFailed
    from shoal.p2p.exchange.tensor_fetch import RemoteSafetensors
    from shoal.store.persist.repo import Repo

    path, data = _model(tmp_path, layers=3, hidden=256)
    header = parse_header(data)
    repo_a, repo_b = Repo.init(tmp_path / "ra"), Repo.init(tmp_path / "rb")
    cid = repo_a.add(path, chunker=SafetensorsChunker()).cid
    a = Node(repo_a, Identity.generate(), NodeOptions())
    b = Node(repo_b, Identity.generate(), NodeOptions())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            await b.connect(a.listen_addrs[0].with_peer(a.peer_id))

            remote = await RemoteSafetensors.open(b, cid, holders=[a.peer_id])
            assert list(remote.tensors) == [t.name for t in header.tensors]
            assert remote.fetched_bytes < header.data_start + 8192
            name = "layers.1.attn.qkv.weight"
            got = await remote.read_tensor(name)
            assert got == _tensor(data, name)
            assert b.received_bytes <= len(got) + header.data_start + 8192

            # A holder that sends wrong bytes is dropped, and nothing unverified is stored.
            real_get = repo_a.blockstore.get

            def lying_get(c):  # type: ignore[no-untyped-def]
                block = real_get(c)
                return block if c.codec.name != "raw" else bytes([block[0] ^ 1]) + block[1:]

            repo_a.blockstore.get = lying_get  # type: ignore[method-assign]
            info = header.tensor("head.weight")
            with pytest.raises(FetchFailed):
                await fetch_range(b, cid, header.data_start + info.begin, info.nbytes, holders=[a.peer_id])
            assert b.peers.ensure(a.peer_id).reputation.corrupt >= 1

            # A hash-valid but malformed DAG (blocksizes lie) fails cleanly, as FetchFailed.
            from shoal.store.ipld import dagpb, unixfs
            from shoal.store.ipld.cid import make_cid

            repo_a.blockstore.get = real_get  # type: ignore[method-assign]
            leaf = b"y" * 10
            fs = unixfs.UnixFSData(unixfs.DataType.FILE, blocksizes=(11,))
            block = dagpb.encode(dagpb.PBNode((dagpb.PBLink(bytes(make_cid("raw", leaf)), "", 10),),
                                              unixfs.encode(fs)))
            bad_root = make_cid("dag-pb", block)
            repo_a.blockstore.put(make_cid("raw", leaf), leaf)
            repo_a.blockstore.put(bad_root, block)
            c = Node(Repo.init(tmp_path / "rc"), Identity.generate(), NodeOptions())
            await nursery.start(c.run)
            await c.connect(a.listen_addrs[0].with_peer(a.peer_id))
            with pytest.raises(FetchFailed, match="malformed"):
                await fetch_range(c, bad_root, 0, None, holders=[a.peer_id])
            c.repo.close()
            nursery.cancel_scope.cancel()
    finally:
        repo_a.close()
        repo_b.close()
