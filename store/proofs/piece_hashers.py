"""A put's block hashing and storage commitment, in helper processes, one pass.

Why: `Repo.add(..., commit=True)` (a node's put with replicas) needs each
1 MiB block's SHA-256 (its CID) and the commitment's leaves over the same
bytes (store/proofs/commitment.py). The leaves are the states one SHA-256 of each piece
passes through, so hashing each piece once gives both (store/proofs/sha256_chain.py).
That hashing is ~1.1 CPU-s per GiB, ~0.9 of it in 2 KiB steps; done in the
put's threads it would hold the GIL for every step, so it runs in helper
processes instead, which read the pieces straight out of the put's own read
buffers: the importer reads each chunk into a slot of a ring that lives in a
memfd both sides map, and sends a helper only (index, offset, length).

Protocol (pipes, fixed-size records; one request at a time per helper):
request `>QQI` (piece index, offset in the ring, length); reply 108 bytes:
`>QI` echoing the index and length, the piece's SHA-256, and its
`proofs.piece_nodes` (two level-4 nodes for a whole piece; one, then 32
zero bytes, for a last piece of <= 256 segments). The helper writes
the piece's leaves into the leaf file at index * 512 * 32 itself (pwrite),
so leaves never cross a pipe. The caller folds those nodes into the
commitment (`proofs.commitment_from_pieces`) and fsyncs the leaf file.

Failure: a helper that cannot start, dies, answers short or not within
`REPLY_TIMEOUT_S` makes every later digest come from hashlib in this process and `finish` return None (no
commitment; the node builds it later in a pass of its own). The put itself
never fails because of the helpers.

Trust: a helper is this project's code run by the same user on the same
bytes, with the same OpenSSL SHA-256 that hashlib uses (self-tested against
hashlib when it loads; a helper without it exits rather than hash in pure
Python). Still, the digest names a block, so the echo is checked on every
reply and the digest itself, with hashlib, on each helper's first piece and
every 64th: a mismatch is a bug, and fails the put loudly (PieceHashError)
rather than store a block under a wrong name.
"""

from __future__ import annotations

import collections
import hashlib
import mmap
import os
import logging
import struct
import subprocess
import sys
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import IO

from shoal.store.errors import StoreError
from shoal.store.proofs.commitment import Commitment, commitment_from_pieces, piece_size
from shoal.store.proofs.tree_shape import ARITY, PIECE_LEVEL

log = logging.getLogger("shoal.put")

__all__ = ["PieceHashers", "PieceHashError", "default_helpers"]


class PieceHashError(StoreError):
    """A helper's digest disagreed with hashlib's: a bug, never a slow disk."""

_REQUEST = struct.Struct(">QQI")
# A piece takes ~1.5 ms; a helper that has not answered in this long is
# stuck (stopped, or out of step with the protocol), and the put goes on
# without it rather than wait forever.
REPLY_TIMEOUT_S = 30.0
_ECHO = struct.Struct(">QI")
_REPLY = _ECHO.size + 96
_CHECK_EVERY = 64
_PIECE_NODE_SPAN = ARITY**PIECE_LEVEL  # leaves under one of a piece's nodes

_CHILD = r"""
import gc, os, struct, sys, types
gc.disable()  # nothing here makes cycles; collections only cost time
store_dir, cffi_dir = sys.argv[1].split(os.pathsep)
sys.path[:0] = [cffi_dir]
# -S skips site (and so the editable install's finder): the two packages
# above the modules used here are made by hand, pointing at the real store/.
for name, path in (("shoal", []), ("shoal.store", [store_dir])):
    package = types.ModuleType(name)
    package.__path__ = path
    sys.modules[name] = package
import mmap
from shoal.store.proofs.sha256_chain import BufferChain, available
if not available():
    sys.exit(4)  # no libcrypto states: the put hashes in-process instead
from shoal.store.proofs.tree_shape import PIECE_SEGMENTS, piece_nodes
ring_fd, leaves_fd, seg = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
ring = mmap.mmap(ring_fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
chain = BufferChain(ring, seg)
request = struct.Struct(">QQI")
stride = PIECE_SEGMENTS * 32
stdin = sys.stdin.buffer.raw
while True:
    head = stdin.read(request.size)
    while head and len(head) < request.size:
        more = stdin.read(request.size - len(head))
        if not more:
            sys.exit(3)
        head += more
    if not head:
        break
    index, offset, length = request.unpack(head)
    leaves = chain.leaves(offset, length)
    view = memoryview(leaves)
    at = index * stride
    while view:
        done = os.pwrite(leaves_fd, view, at)
        view, at = view[done:], at + done
    os.write(1, head[:8] + head[16:] + leaves[-32:] + piece_nodes(leaves).ljust(64, b"\0"))
"""


def default_helpers() -> int:
    """One helper more than there are cores, at most 4.

    The put's own threads block on the disk now and then; a spare runnable
    helper fills that time (1 GiB on 2 cores: 3 helpers beat 2 by ~7 %,
    4 were no better than 3).
    """
    return max(1, min(4, (os.cpu_count() or 1) + 1))


class _Helper:
    """One helper process; requests are queued, replies read by a thread.

    A helper always has the next request waiting in its pipe (the importer
    keeps up to ~2 x workers chunks in flight), so it never sleeps between
    pieces; on this VM a sleep and wake-up per piece cost ~0.1 CPU-s per
    GiB. Replies come back in request order, so each one completes the
    oldest waiting request.
    """

    def __init__(self, args: list[str], fds: tuple[int, ...]) -> None:
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     bufsize=0, pass_fds=fds)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._send: IO[bytes] = self.proc.stdin
        self._recv: IO[bytes] = self.proc.stdout
        self._lock = threading.Lock()
        self._waiting: collections.deque[Future[bytes]] = collections.deque()
        self._broken = False
        self._reader = threading.Thread(target=self._read_replies, name="shoal-piece-replies", daemon=True)
        self._reader.start()

    def ask(self, request: bytes) -> "Future[bytes]":
        """Queue one request; the future gets its reply (OSError if the helper broke)."""
        reply: Future[bytes] = Future()
        with self._lock:
            if self._broken:
                reply.set_exception(OSError("piece helper gone"))
                return reply
            self._waiting.append(reply)
            try:
                self._send.write(request)
            except (OSError, ValueError) as exc:
                self._waiting.remove(reply)
                self._broken = True
                reply.set_exception(OSError(str(exc)))
        return reply

    def _read_replies(self) -> None:
        recv = self._recv
        while True:
            reply = b""
            while len(reply) < _REPLY:
                try:
                    more = recv.read(_REPLY - len(reply))
                except (OSError, ValueError):
                    more = b""
                if not more:
                    self._break()
                    return
                reply += more
            with self._lock:
                waiter = self._waiting.popleft() if self._waiting else None
            if waiter is None:
                self._break()  # a reply nobody asked for: the protocol is off
                return
            waiter.set_result(reply)

    def _break(self) -> None:
        with self._lock:
            self._broken = True
            waiting, self._waiting = list(self._waiting), collections.deque()
        for waiter in waiting:
            waiter.set_exception(OSError("piece helper closed its pipe"))

    def close(self) -> int:
        with self._lock:
            self._broken = True
            try:
                self._send.close()
            except OSError:
                pass
        code = self.proc.wait()
        self._reader.join()
        self._recv.close()
        return code

    def kill(self) -> None:
        self.proc.kill()
        self.close()


class PieceHashers:
    """The importer's `PieceHasher` for one file: a shared ring and its helpers.

    `ring(slots)` gives the buffer the importer reads chunks into; `digest`
    is called from the import's worker threads with a chunk (a view of the
    ring) and its index, and returns its SHA-256. `finish` gives the
    commitment (or None), `abort` stops everything. Piece i goes to helper
    i mod count: pieces are all the same size, so that balances them.
    """

    def __init__(self, leaves_fd: int, segment_size: int, helpers: int | None = None) -> None:
        self.segment_size = segment_size
        self.piece_size = piece_size(segment_size)
        self._leaves_fd = leaves_fd
        self._count = helpers or default_helpers()
        self._helpers: list[_Helper] = []
        self._nodes: dict[int, list[bytes]] = {}
        self._lengths: dict[int, int] = {}
        self._failed = False
        self.failure: str | None = None
        """Why the helpers were given up, if they were (logged once)."""
        self._lock = threading.Lock()
        self._ring: mmap.mmap | None = None
        self._ring_fd = -1
        self._base = 0

    def ring(self, slots: int) -> mmap.mmap:
        """A shared buffer of `slots` pieces; the helpers start once it exists."""
        if self._ring is not None:
            raise RuntimeError("one ring per file")
        size = slots * self.piece_size
        self._ring_fd = os.memfd_create("shoal-put-ring", os.MFD_CLOEXEC)
        os.ftruncate(self._ring_fd, size)
        self._ring = mmap.mmap(self._ring_fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._base = _address(memoryview(self._ring))
        try:
            self._start()
        except (OSError, ImportError) as exc:
            self._fail(f"could not start: {exc}")
        return self._ring

    def _start(self) -> None:
        import _cffi_backend  # the helper's one dependency outside the project

        # The shoal.store package's folder (store/ in a checkout, shoal/store/
        # in an installed wheel) and cffi's: all the helper imports.
        paths = os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                 str(Path(_cffi_backend.__file__).resolve().parent)])
        args = [sys.executable, "-I", "-S", "-c", _CHILD, paths,
                str(self._ring_fd), str(self._leaves_fd), str(self.segment_size)]
        for _ in range(self._count):
            self._helpers.append(_Helper(args, (self._ring_fd, self._leaves_fd)))

    def digest(self, index: int, chunk: memoryview) -> bytes:
        """SHA-256 of piece `index` (a view into the ring); its leaves go to the file."""
        offset = _address(chunk) - self._base
        length = len(chunk)
        if self._failed or self._ring is None or not 0 <= offset <= len(self._ring) - length:
            self._fail("a piece outside the shared ring")
            return hashlib.sha256(chunk).digest()
        helper = self._helpers[index % len(self._helpers)]
        try:
            reply = helper.ask(_REQUEST.pack(index, offset, length)).result(REPLY_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            self._fail(f"no reply ({exc.__class__.__name__})")
            return hashlib.sha256(chunk).digest()
        if _ECHO.unpack_from(reply) != (index, length):
            self._fail("a helper fell out of step")  # nothing it says can be used
            return hashlib.sha256(chunk).digest()
        digest = reply[_ECHO.size : _ECHO.size + 32]
        if (index < len(self._helpers) or index % _CHECK_EVERY == 0) and hashlib.sha256(chunk).digest() != digest:
            self._fail("a helper gave a wrong SHA-256")
            raise PieceHashError(f"piece helper gave a wrong SHA-256 for piece {index}")
        segments = -(-length // self.segment_size)
        at = _ECHO.size + 32
        self._nodes[index] = [reply[at + 32 * i : at + 32 + 32 * i] for i in range(-(-segments // _PIECE_NODE_SPAN))]
        self._lengths[index] = length
        return digest

    def _fail(self, reason: str | None = None) -> None:
        """Hash in-process from now on; say why once (a put with replicas then
        has no commitment from the put, and placement builds it afterwards)."""
        with self._lock:
            first = not self._failed and reason is not None
            self._failed = True
            if first:
                self.failure = reason
        if first:
            log.warning("piece-hashing helpers failed (%s): the put goes on without them and "
                        "its proof-of-storage commitment is built after it", reason)

    def finish(self) -> Commitment | None:
        """Stop the helpers; the commitment of the pieces digested, or None.

        None also if the pieces are not 0..m-1 with every one but the last
        full, since then the leaf file's layout would not be the tree's.
        """
        codes = [h.close() for h in self._helpers]
        self._helpers.clear()
        self._release()
        if any(codes) and not self._failed:
            self._fail(f"a helper exited with status {max(codes, key=abs)}")
        if self._failed:
            return None
        count = len(self._nodes)
        if sorted(self._nodes) != list(range(count)):
            return None
        if any(self._lengths[i] != self.piece_size for i in range(count - 1)):
            return None
        length = sum(self._lengths.values())
        if count and self._lengths[count - 1] == 0:
            return None
        nodes = [node for i in range(count) for node in self._nodes[i]]
        return commitment_from_pieces(nodes, length, self.segment_size)

    def abort(self) -> None:
        self._fail()
        for helper in self._helpers:
            helper.kill()
        self._helpers.clear()
        self._release()

    def _release(self) -> None:
        if self._ring is not None:
            try:
                self._ring.close()
            except BufferError:
                pass  # a view still exported by the importer; freed with it
            self._ring = None
        if self._ring_fd >= 0:
            os.close(self._ring_fd)
            self._ring_fd = -1


def _address(view: memoryview) -> int:
    """Address of a writable buffer's first byte."""
    import ctypes

    return ctypes.addressof(ctypes.c_char.from_buffer(view))

