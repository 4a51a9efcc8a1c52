"""HealingBlocks (shoal.p2p.exchange.heal) without a network: a block that
went missing since it was fetched (a gc between `cat`'s fetch and its
stream) is fetched again when the reader asks for that, and only then."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import trio

from shoal.p2p.exchange import fetch as fetch_module
from shoal.p2p.exchange.heal import HealingBlocks
from shoal.store.errors import BlockNotFound

DATA = b"a cached block"


class EvictedStore:
    """A store whose one block was evicted; a fetch puts it back."""

    def __init__(self) -> None:
        self.blocks: dict[Any, bytes] = {}

    def get(self, cid: Any) -> bytes:
        try:
            return self.blocks[cid]
        except KeyError:
            raise BlockNotFound(cid) from None


async def test_a_missing_block_is_fetched_again_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    store = EvictedStore()
    fetched: list[Any] = []
    cid = "bafk-test"

    async def fake_fetch_dag(node: Any, root: Any, **kwargs: Any) -> None:
        fetched.append((root, kwargs.get("guard")))
        store.blocks[root] = DATA

    monkeypatch.setattr(fetch_module, "fetch_dag", fake_fetch_dag)
    node = SimpleNamespace(repo=SimpleNamespace(blockstore=store))

    strict = HealingBlocks(node)  # type: ignore[arg-type]
    with pytest.raises(BlockNotFound):
        await trio.to_thread.run_sync(strict.get, cid)
    assert fetched == []

    refetching = HealingBlocks(node, refetch_missing=True)  # type: ignore[arg-type]
    assert await trio.to_thread.run_sync(refetching.get, cid) == DATA
    # Fetched without taking the store guard: the reader already holds it.
    assert fetched == [(cid, False)]
