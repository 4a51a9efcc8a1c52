"""The put route decides its chunker in a worker thread: "auto" parses a
single file's safetensors header (megabytes of JSON for a large model), and
that ran on the event loop, stalling every peer and API call meanwhile."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.net import node_api
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.secure.identity import Identity
from shoal.store.errors import InvalidInput
from shoal.store.persist.repo import Repo

pytestmark = pytest.mark.timeout(30)


async def test_put_chooses_its_chunker_off_the_loop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Repo.init(tmp_path / "r")
    try:
        node = Node(repo, Identity.generate(), NodeOptions())
        api = node_api.build_api(node, "token")
        put = api._json_routes[("POST", "/v1/put")]
        threads: list[int] = []
        real = node_api.chunker_for

        def recording(*args: Any) -> Any:
            threads.append(threading.get_ident())
            return real(*args)

        monkeypatch.setattr(node_api, "chunker_for", recording)
        (tmp_path / "w.bin").write_bytes(b"not safetensors" * 100)
        doc = await put({"path": str(tmp_path / "w.bin")})
        assert doc["size"] == 1500
        assert threads and threading.get_ident() not in threads
        with pytest.raises(InvalidInput, match="no such file"):
            await put({"path": str(tmp_path / "absent.bin")})
    finally:
        repo.close()


async def test_want_have_looks_blocks_up_off_the_loop(tmp_path: Path) -> None:
    """A peer's WANT_HAVE (up to 256 CIDs) was answered with a `has` per CID
    on the event loop."""
    from shoal.p2p.net.block_server import BlockServer
    from shoal.p2p.wire.messages import DontHave, Have
    from shoal.store.ipld.cid import make_cid

    repo = Repo.init(tmp_path / "r")
    try:
        here = make_cid("raw", b"here")
        repo.blockstore.put(here, b"here")
        absent = make_cid("raw", b"absent")
        threads: list[int] = []
        real_has = repo.blockstore.has

        def has(cid: Any) -> bool:
            threads.append(threading.get_ident())
            return bool(real_has(cid))

        repo.blockstore.has = has  # type: ignore[method-assign]
        out = await BlockServer(repo, []).want_have(9, (bytes(here), bytes(absent)))
        assert out == [Have(9, (bytes(here),)), DontHave(9, (bytes(absent),))]
        assert len(threads) == 2 and threading.get_ident() not in threads
    finally:
        repo.close()


async def test_no_block_is_read_for_a_connection_already_closed(tmp_path: Path) -> None:
    """Requests of a peer that stopped reading wait for send budget; when the
    stalled connection is closed the budget comes back, and each waiting
    request read one more block (up to 64 x 2 MiB) for nobody."""
    from shoal.p2p.net.block_server import BlockServer
    from shoal.p2p.net.connection import SendBudget
    from shoal.p2p.wire import limits as L
    from shoal.store.ipld.cid import make_cid

    repo = Repo.init(tmp_path / "r")
    try:
        cid = make_cid("raw", b"block")
        repo.blockstore.put(cid, b"block")
        reads: list[Any] = []
        real_get = repo.blockstore.get

        def get(c: Any) -> bytes:
            reads.append(c)
            return bytes(real_get(c))

        repo.blockstore.get = get  # type: ignore[method-assign]

        class ClosedConn:
            closed = True
            remote_peer = Identity.generate().peer_id
            send_budget = SendBudget(L.MAX_FRAME_BYTES)

            async def reply(self, msg: Any) -> bool:
                return False

        sent = await BlockServer(repo, [])._send(ClosedConn(), 3, (bytes(cid),) * 4, [])  # type: ignore[arg-type]
        assert sent == 0 and reads == []
        assert ClosedConn.send_budget.used == 0
    finally:
        repo.close()
