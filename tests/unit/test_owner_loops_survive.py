"""The replication service's background loops run in the node's nursery:
a failure in one round must be logged and the next round run, never end
the node. The audit loop's own listing of objects (an index read) was
outside the guard that covers each audit."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.replication.owner import ReplicationOwner
from shoal.store.persist.repo import Repo
from tests.unit.test_release import H1

pytestmark = pytest.mark.timeout(30)


async def test_a_failing_index_read_does_not_end_the_audit_loop(
        tmp_path: Path, autojump_clock: trio.abc.Clock) -> None:
    repo = Repo.init(tmp_path / "r")
    try:
        service = ReplicationOwner(Node(repo, H1, NodeOptions()), audit_interval=10.0)
        calls: list[int] = []
        real = service.db.objects

        def objects(*args: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise sqlite3.OperationalError("database is locked")
            return real(*args)

        service.db.objects = objects  # type: ignore[method-assign]
        with trio.move_on_after(35.0):
            await service._audit_loop()
        assert len(calls) >= 3  # rounds at 10, 20 and 30 s: the first failure ended nothing
    finally:
        repo.close()
