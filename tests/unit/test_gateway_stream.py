"""The gateway's file streaming (shoal.p2p.gateway.files.stream_file, PieceBatches):
pieces come back from the exporter's thread a batch per hop, the first alone,
and a failure mid-batch still sends every byte read before it."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from shoal.store.errors import BlockNotFound
from shoal.store.ipld.cid import RAW, make_cid
from shoal.p2p.gateway import files
from shoal.p2p.gateway.files import HOP_BYTES, PieceBatches, stream_file

MIB = 1024 * 1024


def _pieces(n: int, size: int = MIB, fail_after: int | None = None) -> Iterator[bytes]:
    for i in range(n):
        if fail_after is not None and i == fail_after:
            raise BlockNotFound(f"block {i}")
        yield bytes([i % 256]) * size


async def test_batches_fill_the_budget_and_end_empty() -> None:
    batches = PieceBatches(_pieces(10))
    assert len(await batches.next(1)) == 1
    sizes = []
    while batch := await batches.next(HOP_BYTES):
        sizes.append(len(batch))
    assert sizes == [HOP_BYTES // MIB, HOP_BYTES // MIB, 9 - 2 * (HOP_BYTES // MIB)]
    assert await batches.next(HOP_BYTES) == []


async def test_failure_mid_batch_keeps_what_was_read() -> None:
    batches = PieceBatches(_pieces(10, fail_after=2))
    got = await batches.next(HOP_BYTES)
    assert [p[0] for p in got] == [0, 1]  # read before the failure: still handed out
    with pytest.raises(BlockNotFound):
        await batches.next(HOP_BYTES)


async def test_failure_on_the_first_piece_is_raised_at_once() -> None:
    batches = PieceBatches(_pieces(3, fail_after=0))
    with pytest.raises(BlockNotFound):
        await batches.next(1)


async def test_stream_file_sends_every_piece_in_order(monkeypatch: pytest.MonkeyPatch) -> None:
    hops = 0
    take = PieceBatches._take

    def counting(self: PieceBatches, budget: int) -> list[bytes]:
        nonlocal hops
        hops += 1
        return take(self, budget)

    monkeypatch.setattr(PieceBatches, "_take", counting)
    monkeypatch.setattr(files.exporter, "read_file", lambda *a, **k: _pieces(9, size=MIB))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    cid = make_cid(RAW, b"x")
    await stream_file(lambda c: b"", cid, 0, 9 * MIB, 200, [], send)
    assert sent[0]["type"] == "http.response.start"
    bodies = sent[1:]
    assert [m["body"][0] for m in bodies[:-1]] == list(range(9))
    assert all(m["more_body"] for m in bodies[:-1]) and bodies[-1] == {"type": "http.response.body", "body": b"",
                                                                      "more_body": False}
    # 1 piece, then HOP_BYTES a hop, then the empty end: not a hop per piece
    assert hops == 1 + -(-8 * MIB // HOP_BYTES) + 1


async def test_stream_file_cut_short_after_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    monkeypatch.setattr(files.exporter, "read_file", lambda *a, **k: _pieces(9, fail_after=6))
    with pytest.raises(BlockNotFound):
        await stream_file(lambda c: b"", make_cid(RAW, b"x"), 0, 9 * MIB, 200, [], send)
    assert [m["body"][0] for m in sent[1:]] == list(range(6))  # every piece before the failure was sent
