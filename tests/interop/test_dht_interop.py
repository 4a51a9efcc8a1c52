"""A mixed DHT: 3 Shoal hosts and 3 js-libp2p nodes with @libp2p/kad-dht (dht_peer.mjs).

The six are bootstrapped as a sparse chain S0 - J0 - S1 - J1 - S2 - J2 (each
knows only its left neighbour), on 127.0.0.1. Shoal S0 provides a CID that
js J2, at the other end, finds; js J2 provides one that Shoal S0 finds, with
an address it can dial. Both sides speak `/ipfs/kad/1.0.0` to each other for
the lookups in between.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from shoal.p2p.dht.service import DHTConfig, DHTService
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.store.ipld.cid import RAW, make_cid
from tests.interop.js_process import JsProcess, run_js

pytestmark = [pytest.mark.interop, pytest.mark.timeout(150)]

HERE = Path(__file__).parent


class JsDHT(JsProcess):
    """A running dht_peer.mjs; `peer` and `addr` from its ready line."""

    peer = ""
    addr = ""


@asynccontextmanager
async def js_dht(node22: Path, tmp_path: Path, name: str) -> AsyncIterator[JsDHT]:
    async with run_js(node22, "dht_peer.mjs", [], tmp_path / f"dht_peer_{name}.stderr", JsDHT,
                      stdin=True, env={**os.environ, "DEBUG": ""}) as node:
        ready = await node.expect("ready")
        node.peer, node.addr = ready["peer"], ready["addrs"][0]
        yield node


async def shoal(nursery: trio.Nursery) -> tuple[DHTService, Multiaddr]:
    host = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5)
    (addr,) = await nursery.start(host.serve)
    dht = DHTService(host, mode="server", config=DHTConfig(request_timeout=5.0, dial_timeout=5.0))
    await nursery.start(dht.run)
    return dht, addr


async def test_mixed_dht_finds_providers_both_ways(node22: Path, tmp_path: Path) -> None:
    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            s0, s0_addr = await shoal(nursery)
            s1, _ = await shoal(nursery)
            s2, _ = await shoal(nursery)
            async with js_dht(node22, tmp_path, "j0") as j0, \
                    js_dht(node22, tmp_path, "j1") as j1, \
                    js_dht(node22, tmp_path, "j2") as j2:
                # The chain S0 - J0 - S1 - J1 - S2 - J2.
                assert (await j0.call("dialed", cmd="dial", addr=str(s0_addr)))["peer"] == str(s0.host.peer_id)
                await s1.bootstrap([j0.addr])
                assert PeerId.from_string(j0.peer).to_bytes() in s1.table  # js serves kad
                await j1.call("dialed", cmd="dial", addr=str(s1.host.listen_addrs[0].with_peer(s1.host.peer_id)))
                await s2.bootstrap([j1.addr])
                await j2.call("dialed", cmd="dial", addr=str(s2.host.listen_addrs[0].with_peer(s2.host.peer_id)))
                # Let js's own self-queries (every second at start) and identify settle.
                await trio.sleep(2)
                await s0.lookup_peers(s0.local_id)

                # Shoal provides, js at the other end finds it.
                shoal_cid = make_cid(RAW, b"held by shoal S0")
                assert await s0.provide(bytes(shoal_cid.digest)) >= 1
                found = await j2.call("providers", cmd="findprovs", cid=str(shoal_cid))
                assert [p["peer"] for p in found["providers"]] == [str(s0.host.peer_id)], j2.stderr()

                # js provides, Shoal at the other end finds it, with an address it can dial.
                js_cid = make_cid(RAW, b"held by js J2")
                await j2.call("provided", cmd="provide", cid=str(js_cid))
                provs = await s0.find_providers(bytes(js_cid.digest))
                assert [str(p.peer_id) for p in provs] == [j2.peer]
                assert str(provs[0].addrs[0]) == str(Multiaddr.parse(j2.addr).with_peer(None))
                conn = await s0.connect(PeerId.from_string(j2.peer).to_bytes(), provs[0].addrs)
                assert str(conn.remote_peer) == j2.peer
            nursery.cancel_scope.cancel()
