"""A replica's blocks are unpinned between the end of its pull and its pin:
a gc that was waiting for the store guard (gc goes first, writer-preferring)
used to run in that gap, delete every block just pulled, and make the
holder refuse the offer. The holder now keeps the guard shared from the pull
to the pin, so the gc runs after and keeps them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.replication import holder as holder_module
from shoal.p2p.replication.owner import ReplicationOwner
from shoal.p2p.wire.messages import StoreResponse
from shoal.store.persist.repo import Repo
from tests.unit.test_release import H1, OWNER, FakeConn, add_object, signed_manifest, store_request

pytestmark = pytest.mark.timeout(60)


async def test_gc_waiting_at_the_end_of_the_pull_does_not_delete_the_replica(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = Repo.init(tmp_path / "h1")
    try:
        cid = add_object(repo, tmp_path)
        manifest = signed_manifest(repo, cid)
        repo.pin_rm(cid)  # the blocks are here, unpinned, as a pull leaves them
        node = Node(repo, H1, NodeOptions())
        service = ReplicationOwner(node)
        real_fetch = holder_module.fetch_dag
        gc_done: list[int] = []

        async with trio.open_nursery() as nursery:
            async def gc() -> None:
                async with node.store_guard.exclusive():
                    result = await trio.to_thread.run_sync(lambda: repo.gc(force=True))
                gc_done.append(result.removed_blocks)

            async def fetch_then_gc(*args: Any, **kwargs: Any) -> Any:
                result = await real_fetch(*args, **kwargs)
                nursery.start_soon(gc)  # a user's `shoal gc` arrives as the pull ends
                await trio.testing.wait_all_tasks_blocked()
                return result

            monkeypatch.setattr(holder_module, "fetch_dag", fetch_then_gc)
            [reply] = await service.holder.on_store_request(
                FakeConn(OWNER.peer_id),  # type: ignore[arg-type]
                store_request(manifest, cid, (H1.peer_id.to_bytes(),)))
        assert isinstance(reply, StoreResponse) and reply.accepted, reply
        assert gc_done == [0]
        assert repo.index.is_pinned(str(cid))
        assert len(repo.dag_keys(cid)) > 1
    finally:
        repo.close()


async def test_car_export_of_fetched_blocks_is_not_cut_by_a_waiting_gc(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same gap in `car export` through a node: the DAG is fetched (not
    pinned), then exported; a gc waiting at the end of the fetch deleted it
    before the export read it."""
    from shoal.p2p.net import node_api
    from shoal.p2p.secure.identity import Identity

    repo = Repo.init(tmp_path / "r")
    try:
        cid = add_object(repo, tmp_path)
        repo.pin_rm(cid)  # here, as a fetch leaves it: not pinned
        node = Node(repo, Identity.generate(), NodeOptions())
        api = node_api.build_api(node, "token")
        export = api._json_routes[("POST", "/v1/car/export")]
        real_fetch = node_api.fetch_dag
        gc_done: list[int] = []

        async with trio.open_nursery() as nursery:
            async def gc() -> None:
                async with node.store_guard.exclusive():
                    result = await trio.to_thread.run_sync(lambda: repo.gc(force=True))
                gc_done.append(result.removed_blocks)

            async def fetch_then_gc(*args: Any, **kwargs: Any) -> Any:
                result = await real_fetch(*args, **kwargs)
                nursery.start_soon(gc)
                for _ in range(100):  # let the gc finish, if the guard lets it in now
                    if gc_done:
                        break
                    await trio.sleep(0.01)
                return result

            monkeypatch.setattr(node_api, "fetch_dag", fetch_then_gc)
            doc = await export({"cid": str(cid), "output": str(tmp_path / "out.car")})
        assert doc["bytes"] > 40_000 and (tmp_path / "out.car").stat().st_size == doc["bytes"]
        assert gc_done and gc_done[0] > 0  # the gc ran, after the export
    finally:
        repo.close()
