"""A hostile replication peer, for tests: real protocol, hostile offers and answers.

`EvilPeer` dials a node (Noise XX with its own Ed25519 identity, real
framing and codec), serves the blocks it holds when the node pulls them
(WantHave / WantBlock, counting the bytes it sent), and lets a test send
the node any StoreRequest or AuditChallenge and wait for the answer. With
`holder_mode` it also plays a holder toward the node: it accepts every
StoreRequest with a valid agreement signature and answers every audit with
ERROR busy (the loss-hiding holder of issue 12, item 11).

The DAG builders make what the attacks need: `file_dag` imports real bytes
(the same CIDs a node computes), `bomb_dag` makes a file whose few blocks
link one leaf over and over until the root declares ~1 EiB.

Test code only; nothing in p2p/ imports it.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import trio

from shoal.p2p.wire import limits as L
from shoal.p2p.replication.signed import Offer, agreement_bytes, offer_signing_bytes
from shoal.p2p.errors import P2PError
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire.messages import (
    AuditChallenge, Block, BlockMissing, DontHave, Error, ErrorCode, GetPeers, Have, Hello,
    Message, Peers, Ping, Pong, StoreRequest, StoreResponse, WantBlock, WantHave,
)
from shoal.store.ipld import dagpb, unixfs
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID, DAG_PB, RAW, cid_from_bytes, make_cid
from shoal.store.dag.importer import import_bytes
from shoal.store.proofs.manifest import Manifest
from shoal.store.proofs.commitment import Commitment, commit
from shoal.p2p.libp2p.connection import YamuxStream
from tests.integration.evil_client import EvilConnection

AGENT = "evil-replication/0.1"
MiB = 1 << 20


@dataclass
class Dag:
    root: CID
    blocks: dict[bytes, bytes]


def file_dag(data: bytes) -> Dag:
    """The default-profile DAG of `data` (what `shoal put` makes of it)."""
    store = MemoryBlockstore()
    root = import_bytes(data, store).cid
    blocks: dict[bytes, bytes] = {}
    stack = [root]
    while stack:
        cid = stack.pop()
        raw = bytes(cid)
        if raw in blocks:
            continue
        block = store.get(cid)
        blocks[raw] = block
        if cid.codec.name != RAW:
            stack.extend(cid_from_bytes(link.hash) for link in dagpb.decode(block).links)
    return Dag(root, blocks)


def bomb_dag(seed: int, levels: int = 4, fanout: int = 1024, leaf_size: int = MiB) -> Dag:
    """A file DAG of `levels` + 1 blocks declaring leaf_size x fanout^levels bytes.

    Each inner node links the node below it `fanout` times: 1 MiB x 1024^4
    = 1 EiB from five blocks that weigh ~1.2 MiB. Every block hashes right.
    """
    leaf = hashlib.sha256(seed.to_bytes(8, "big")).digest() * (leaf_size // 32)
    child = make_cid(RAW, leaf)
    blocks = {bytes(child): leaf}
    size = len(leaf)
    for _ in range(levels):
        data = unixfs.encode(unixfs.UnixFSData(unixfs.DataType.FILE, filesize=size * fanout,
                                               blocksizes=(size,) * fanout))
        node = dagpb.encode(dagpb.PBNode(tuple(dagpb.PBLink(bytes(child), "", size) for _ in range(fanout)), data))
        child = make_cid(DAG_PB, node)
        blocks[bytes(child)] = node
        size *= fanout
    return Dag(child, blocks)


def manifest_for(owner: Identity, root: CID, commitment: Commitment, size: int | None = None) -> Manifest:
    m = Manifest(str(root), commitment.length if size is None else size, "fixed", "unixfs-v1-2025", commitment,
                 owner.peer_id.to_bytes(), int(time.time()))
    return m.with_signature(owner.sign(m.signing_bytes()))


def fake_commitment(length: int, seed: int = 0) -> Commitment:
    """A well-formed commitment for `length` bytes that match nothing real."""
    if length == 0:
        return commit(b"")
    return Commitment(hashlib.sha256(b"fake" + seed.to_bytes(8, "big")).digest(), length, 2048)


def signed_offer(manifest: Manifest, owner: Identity, holders: list[PeerId], replicas: int = 2) -> bytes:
    offer = Offer(manifest.encode(), replicas, tuple(h.to_bytes() for h in holders))
    return offer.with_owner_sig(time.time_ns() // 1000, owner.sign).encode()


@dataclass
class EvilPeer:
    identity: Identity = field(default_factory=Identity.generate)
    blocks: dict[bytes, bytes] = field(default_factory=dict)
    holder_mode: bool = False
    served_bytes: int = 0
    audits_seen: int = 0
    stores_taken: list[str] = field(default_factory=list)
    conn: EvilConnection | None = None
    _next_rid: int = 1
    _waiting: dict[int, tuple[trio.Event, list[Message]]] = field(default_factory=dict)
    _send_lock: trio.Lock | None = None

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    def add(self, dag: Dag) -> None:
        self.blocks.update(dag.blocks)

    async def connect(self, host: str, port: int, peer: PeerId, nursery: trio.Nursery) -> None:
        self.conn = await EvilConnection.open(host, port, peer, self.identity)
        self._send_lock = trio.Lock()
        await self.send(Hello(0, (L.PROTOCOL_VERSION,), (), AGENT, 1 << 40, 1 << 39))
        nursery.start_soon(self._read_loop)

    async def send(self, msg: Message, stream: YamuxStream | None = None) -> None:
        """One message at a time (many tasks send): on `stream` (a reply goes
        on its request's), else on the stream of the message's protocol."""
        assert self.conn is not None and self._send_lock is not None
        async with self._send_lock:
            await self.conn.send(msg, stream)

    async def request(self, make: Callable[[int], Message], timeout: float = 60.0) -> list[Message]:
        """Send make(rid) and return its answer(s) (an Error counts as an answer)."""
        assert self.conn is not None
        rid = self._next_rid
        self._next_rid += 1
        done = trio.Event()
        self._waiting[rid] = (done, [])
        await self.send(make(rid))
        with trio.fail_after(timeout):
            await done.wait()
        return self._waiting.pop(rid)[1]

    async def _read_loop(self) -> None:
        assert self.conn is not None
        conn = self.conn
        try:
            while True:
                got = await conn.next_message()
                if got is None:
                    return
                await self._dispatch(*got)
        except (trio.BrokenResourceError, trio.ClosedResourceError, P2PError):
            return
        finally:
            for done, _ in self._waiting.values():
                done.set()

    async def _dispatch(self, stream: YamuxStream, msg: Message) -> None:
        assert self.conn is not None
        rid = msg.request_id
        send = partial(self.send, stream=stream)
        if rid in self._waiting and msg.ROLE == "response":
            done, replies = self._waiting[rid]
            replies.append(msg)
            done.set()
            return
        if isinstance(msg, Hello):
            return
        if isinstance(msg, Ping):
            await send(Pong(rid, msg.payload))
        elif isinstance(msg, GetPeers):
            await send(Peers(rid, ()))
        elif isinstance(msg, WantHave):
            have = tuple(c for c in msg.cids if c in self.blocks)
            missing = tuple(c for c in msg.cids if c not in self.blocks)
            if have:
                await send(Have(rid, have))
            if missing:
                await send(DontHave(rid, missing))
        elif isinstance(msg, WantBlock):
            for cid in msg.cids:
                data = self.blocks.get(cid)
                if data is None:
                    await send(BlockMissing(rid, cid))
                else:
                    self.served_bytes += len(data)
                    await send(Block(rid, cid, data))
        elif isinstance(msg, StoreRequest) and self.holder_mode:
            sig = self.identity.sign(agreement_bytes(msg.manifest, self._remote().to_bytes(),
                                                     self.peer_id.to_bytes()))
            self.stores_taken.append(msg.root_cid.hex())
            await send(StoreResponse(rid, True, "", sig))
        elif isinstance(msg, AuditChallenge) and self.holder_mode:
            self.audits_seen += 1
            await send(Error(rid, ErrorCode.BUSY, "busy, honestly"))
        elif msg.ROLE == "request":
            await send(Error(rid, ErrorCode.UNKNOWN_TYPE, "not here"))

    def _remote(self) -> PeerId:
        assert self.conn is not None
        return self.conn.secure.remote_peer  # type: ignore[no-any-return]

    async def offer(self, dag_root: CID, manifest: Manifest, offer: bytes, timeout: float = 60.0) -> Message:
        """Send a StoreRequest carrying `offer` (signed by us as requester); the answer."""
        sig = self.identity.sign(offer_signing_bytes(offer))
        replies = await self.request(lambda rid: StoreRequest(rid, bytes(dag_root), manifest.commitment.length,
                                                              offer, sig), timeout=timeout)
        assert replies, "the connection closed before an answer"
        return replies[0]
