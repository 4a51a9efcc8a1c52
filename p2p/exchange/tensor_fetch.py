"""Lazy safetensors reads from the swarm: header first, then one tensor at a time.

Why: a user (or the node's cat route) asking for one tensor of a checkpoint
held elsewhere should receive the header and that tensor's blocks, not the
whole file. `RemoteSafetensors.open` range-fetches the 8-byte length prefix
and then the JSON header (`shoal.p2p.exchange.range_fetch`), validates it with
`shoal.store.chunking.safetensors.parse_header`, and `read_tensor` range-fetches exactly
the tensor's bytes. Everything fetched is verified and cached in the node's
blockstore, so the reads themselves are local (`shoal.store.dag.tensor_ranges`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from shoal.store.dag import exporter
from shoal.store.ipld.cid import CID
from shoal.store.errors import InvalidInput
from shoal.store.chunking.safetensors import LEN_PREFIX, SafetensorsHeader, TensorInfo
from shoal.store.dag.tensor_ranges import NotSafetensors, header_span, read_header, window

from shoal.p2p.secure.identity import PeerId
from shoal.p2p.exchange.range_fetch import fetch_range

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node

__all__ = ["RemoteSafetensors", "ensure_cat_range"]


@dataclass
class RemoteSafetensors:
    """A safetensors object on the swarm, opened by CID through a node."""

    node: "Node"
    cid: CID
    header: SafetensorsHeader
    holders: list[PeerId] = field(default_factory=list)
    fetched_bytes: int = 0

    @classmethod
    async def open(cls, node: "Node", cid: CID, holders: list[PeerId] | None = None) -> "RemoteSafetensors":
        """Fetch and validate only the header (root, prefix and JSON blocks).

        `holders` skips asking the connected peers who has `cid`.
        """
        header, found, fetched = await _fetch_header(node, cid, holders)
        return cls(node, cid, header, found, fetched)

    @property
    def tensors(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.header.tensors}

    @property
    def metadata(self) -> dict[str, str]:
        return dict(self.header.metadata)

    async def fetch_tensor(self, name: str, offset: int = 0, length: int | None = None) -> tuple[int, int]:
        """Make a tensor's blocks (or a window's) local; return its (file offset, length)."""
        start, n = window(self.header, name, offset, length)
        result = await fetch_range(self.node, self.cid, start, n, holders=self.holders or None)
        self.holders = result.holders
        self.fetched_bytes += result.fetched_bytes
        return start, n

    async def read_tensor(self, name: str) -> bytes:
        """All bytes of tensor `name`, moving only the blocks that cover it."""
        start, n = await self.fetch_tensor(name)
        store = self.node.repo.blockstore
        return await trio.to_thread.run_sync(
            lambda: b"".join(exporter.read_file(store, self.cid, start, n)))


async def _fetch_header(node: "Node", cid: CID, holders: list[PeerId] | None
                        ) -> tuple[SafetensorsHeader, list[PeerId], int]:
    store = node.repo.blockstore
    first = await fetch_range(node, cid, 0, LEN_PREFIX, holders=holders)
    prefix = await trio.to_thread.run_sync(
        lambda: b"".join(exporter.read_file(store, cid, 0, LEN_PREFIX)))
    try:
        span = header_span(prefix)
    except InvalidInput as exc:  # as shoal.store.dag.tensor_ranges.read_header says it, offline
        raise NotSafetensors(f"{cid} is not a safetensors file ({exc})") from None
    rest = await fetch_range(node, cid, LEN_PREFIX, span - LEN_PREFIX, holders=first.holders or None)
    header = await trio.to_thread.run_sync(read_header, store, cid)
    return header, rest.holders or first.holders, first.fetched_bytes + rest.fetched_bytes


async def ensure_cat_range(node: "Node", cid: CID, offset: int = 0, length: int | None = None,
                           tensor: str | None = None) -> None:
    """Make local what `cat` (with an optional `--tensor`) will read, and nothing more."""
    if tensor is None:
        await fetch_range(node, cid, offset, length)
        return
    remote = await RemoteSafetensors.open(node, cid)
    await remote.fetch_tensor(tensor, offset, length)
