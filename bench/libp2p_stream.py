"""One stream's throughput: Shoal's current framing vs a yamux stream, both over loopback Noise.

    .venv/bin/python bench/libp2p_stream.py [--size 256M] [--runs 3]

For each run and each stack, a receiver child process listens on
127.0.0.1, this process dials it and sends `--size` bytes in 1 MiB pieces;
the receiver reads to EOF and reports bytes, seconds and its CPU time
(`time.process_time()` of the data phase on each side: not the start-up,
imports or handshake).
The two stacks, alternated run by run so drift hits both alike:

- `framing`: what Shoal's connections do today below the message codec:
  Noise (`secure_dial`/`secure_accept`) and 4-byte length-prefixed 1 MiB
  frames (`shoal.p2p.wire.framing`), decoded by the receiver's FrameDecoder.
  The msgpack Block envelope, the store and the request logic are left out
  on purpose: they are the same on both stacks.
- `yamux`: the libp2p layer being adopted (`shoal.p2p.libp2p`): mss /noise,
  Noise, mss /yamux/1.0.0, one yamux stream negotiated by multistream-select
  (the spec's 256 KiB window), written with `send_all` in 1 MiB pieces.
- `yamux-4m`: the same with a 4 MiB receive window granted on open (what
  a path with more than 256 KiB in flight needs; loopback barely does).
- `shoal`: what a node-to-node `shoal get` does with a block's bytes on
  the libp2p stack: the `/shoal/1.0.0` stream's 16 MiB window, each 1 MiB
  piece sent as one Shoal frame (`encode_frame_parts`, `send_all_parts`,
  the frame's header and the block's bytes as separate parts, as
  PeerConnection sends a Block), received with `receive_some_parts` into
  the frame decoder. `framing` is the same bytes path before the switch.

`--stacks` picks a subset (e.g. `--stacks framing,shoal` for the A/B that
matters for a get). Every row reports CPU seconds per GiB of each side
(sender: this process; receiver: the child); the summary gives
medians and each stack's ratio to `framing` of the same run (CPU per GiB is
the steadier figure on a shared machine: wall-clock varies with the load).
Run the script of one checkout with another checkout's interpreter to
compare two versions of the code on the same benchmark. `--profile DIR`
writes a cProfile of each side of each run there.

`--no-socket`: the same two paths (`framing` and `shoal` only) with no
kernel and no other side, in this process, each side timed alone: the
sender writes into a transport that drops the bytes (its window granted up
front), the receiver reads the sender's recorded wire back from memory in
1 MiB reads. What is left is exactly the Python and crypto work of the code
under test, so version-to-version differences of a few percent show up,
which loopback runs on a shared machine drown in noise.

Prints one JSON line per run and a median summary; the lead decides what to
record in bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable, TypeVar

import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, machine_info  # noqa: E402

from shoal.p2p.libp2p import multistream as mss
from shoal.p2p.libp2p.connection import Libp2pConnection, YamuxStream
from shoal.p2p.libp2p.yamux import Flag, FrameType, encode_header
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.secure_stream import SecureStream, secure_accept, secure_dial
from shoal.p2p.wire.framing import FrameDecoder, encode_frame_parts

PROTO = "/shoal-bench/blob/1.0.0"
PIECE = 1 << 20
GIB = 1 << 30
WINDOWS = {"yamux": 256 * 1024, "yamux-4m": 4 << 20, "shoal": 16 << 20}
STACKS = ("framing", "yamux", "yamux-4m", "shoal")
T = TypeVar("T")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


def report(obj: dict[str, object]) -> None:
    print(json.dumps(obj), flush=True)


async def receive_framing() -> None:
    done = trio.Event()
    result: dict[str, object] = {}

    async def on_conn(tcp: trio.SocketStream) -> None:
        secure = await secure_accept(tcp, Identity.generate())
        decoder = FrameDecoder()
        total, start, cpu = 0, time.perf_counter(), time.process_time()
        while parts := await secure.receive_some_parts():
            for part in parts:
                for payload in decoder.feed(part):
                    total += len(payload)
        decoder.end_of_stream()
        result.update(bytes=total, seconds=time.perf_counter() - start,
                      cpu_seconds=time.process_time() - cpu)
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, on_conn, 0, host="127.0.0.1"))
        report({"port": listeners[0].socket.getsockname()[1]})
        await done.wait()
        nursery.cancel_scope.cancel()
    report(result)


async def receive_yamux(window: int, framed: bool) -> None:
    done = trio.Event()
    result: dict[str, object] = {}

    async def sink(stream: YamuxStream) -> None:
        total, start, cpu = 0, time.perf_counter(), time.process_time()
        if framed:  # as PeerConnection reads the /shoal stream
            stream.grow_window(window)
            decoder = FrameDecoder()
            # Woken once the frame in progress can be complete, where the
            # checkout can (as its PeerConnection then reads).
            wanted = hasattr(decoder, "wanted")
            while parts := await (stream.receive_some_parts(decoder.wanted) if wanted
                                  else stream.receive_some_parts()):
                for part in parts:
                    for payload in decoder.feed(part):
                        total += len(payload)
            decoder.end_of_stream()
        else:
            while data := await stream.receive_some():
                total += len(data)
        result.update(bytes=total, seconds=time.perf_counter() - start,
                      cpu_seconds=time.process_time() - cpu)
        done.set()

    async with trio.open_nursery() as nursery:
        host = Libp2pHost(Identity.generate(), nursery, receive_window=window)
        host.handlers[PROTO] = sink
        (addr,) = await nursery.start(host.serve)
        report({"addr": str(addr)})
        await done.wait()
        with trio.move_on_after(10):  # let the sender read our FIN and hang up first
            while host.connections:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    report(result)


async def send_framing(port: int, data: bytes) -> float:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    secure = await secure_dial(tcp, Identity.generate())
    cpu = time.process_time()
    view = memoryview(data)
    for pos in range(0, len(data), PIECE):
        await secure.send_all_parts(encode_frame_parts([view[pos : pos + PIECE]]))
    await secure.aclose()
    return time.process_time() - cpu


async def send_yamux(addr: str, data: bytes, window: int, framed: bool) -> float:
    async with trio.open_nursery() as nursery:
        host = Libp2pHost(Identity.generate(), nursery, receive_window=window)
        conn = await host.dial(Multiaddr.parse(addr))
        stream = await conn.open_stream(PROTO)
        cpu = time.process_time()
        view = memoryview(data)
        for pos in range(0, len(data), PIECE):
            if framed:  # as PeerConnection.send writes a Block (shielded: a frame goes out whole)
                with trio.CancelScope(shield=True):
                    await stream.send_all_parts(encode_frame_parts([view[pos : pos + PIECE]]))
            else:
                await stream.send_all(view[pos : pos + PIECE])
        await stream.send_eof()
        while await stream.receive_some():
            pass
        await conn.aclose()
        cpu = time.process_time() - cpu
        nursery.cancel_scope.cancel()
    return cpu


def profiled(path: str | None, fn: Callable[[], T]) -> T:
    """Run `fn`, under cProfile written to `path` when there is one."""
    if path is None:
        return fn()
    import cProfile
    prof = cProfile.Profile(time.process_time)  # CPU, not wall-clock: waiting is not cost
    try:
        return prof.runcall(fn)
    finally:
        prof.dump_stats(path)


def one_run(stack: str, data: bytes, profile_dir: str | None = None, run: int = 0) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--receive", stack]
    if profile_dir:
        cmd += ["--profile", str(Path(profile_dir) / f"{stack}-{run}-receiver.prof")]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        hello = json.loads(child.stdout.readline())
        out = str(Path(profile_dir) / f"{stack}-{run}-sender.prof") if profile_dir else None
        if stack == "framing":
            send_cpu = profiled(out, partial(trio.run, send_framing, int(hello["port"]), data))
        else:
            send_cpu = profiled(out, partial(trio.run, send_yamux, str(hello["addr"]), data,
                                             WINDOWS[stack], stack == "shoal"))
        result = json.loads(child.stdout.readline())
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert result["bytes"] == len(data), result
    seconds = float(result["seconds"])
    recv_cpu = float(result["cpu_seconds"])
    gib = len(data) / GIB
    return {"stack": stack, "bytes": len(data), "seconds": round(seconds, 3),
            "MB_s": round(len(data) / seconds / 1e6, 1),
            "send_cpu_s": round(send_cpu, 3), "recv_cpu_s": round(recv_cpu, 3),
            "send_cpu_s_per_gib": round(send_cpu / gib, 3),
            "recv_cpu_s_per_gib": round(recv_cpu / gib, 3)}


def summary(rows: list[dict[str, object]], stacks: list[str],
            keys: tuple[str, ...] | None = None) -> dict[str, object]:
    """Medians per stack, and each stack's ratio to `framing` (when it ran)."""
    keys = keys or ("MB_s", "send_cpu_s_per_gib", "recv_cpu_s_per_gib")
    med = {stack: {k: round(statistics.median(float(r[k]) for r in rows  # type: ignore[arg-type]
                                                if r["stack"] == stack), 3) for k in keys}
           for stack in stacks}
    out: dict[str, object] = {"median": med}
    if "framing" in med:
        base = med["framing"]
        out["ratio_to_framing"] = {
            stack: {k: round(v[k] / base[k], 3) for k in keys} for stack, v in med.items()
            if stack != "framing"}
    return out


class _Switchable(trio.abc.Stream):
    """A transport that runs the handshake over `inner`, then is pointed at a
    null sink (sends dropped, or recorded) or an in-memory source of wire."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner: trio.abc.Stream | None = inner
        self.record: list[bytes] | None = None
        self.source = memoryview(b"")
        self.pos = 0
        self.read_size = PIECE

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.inner is not None:
            await self.inner.send_all(data)
            return
        if self.record is not None:
            self.record.append(bytes(data))
        await trio.lowlevel.checkpoint()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self.inner is not None:
            return await self.inner.receive_some(max_bytes)
        if self.pos >= len(self.source):
            await trio.sleep_forever()  # no EOF: the receiver is stopped by its reader
        n = min(max_bytes or self.read_size, self.read_size)
        out = bytes(self.source[self.pos : self.pos + n])
        self.pos += len(out)
        await trio.lowlevel.checkpoint()
        return out

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def _secure_pair() -> tuple[SecureStream, _Switchable, SecureStream, _Switchable]:
    left, right = trio.testing.memory_stream_pair()
    a, b = _Switchable(left), _Switchable(right)
    out: dict[str, SecureStream] = {}

    async def accept() -> None:
        out["b"] = await secure_accept(b, Identity.generate())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept)
        out["a"] = await secure_dial(a, Identity.generate())
    a.inner = b.inner = None
    return out["a"], a, out["b"], b


async def _send_no_socket(stack: str, data: bytes, record: bool) -> tuple[float, SecureStream, bytes]:
    """Sender CPU for `data` as Shoal frames of PIECE bytes; the peer's SecureStream and,
    with `record`, the wire it would have read."""
    secure, transport, peer, _ = await _secure_pair()
    wire: list[bytes] = []
    transport.record = wire if record else None
    view = memoryview(data)
    if stack == "framing":
        cpu = time.process_time()
        for pos in range(0, len(data), PIECE):
            await secure.send_all_parts(encode_frame_parts([view[pos : pos + PIECE]]))
        return time.process_time() - cpu, peer, b"".join(wire)
    conn = Libp2pConnection(secure, is_client=True, handlers={}, receive_window=WINDOWS["shoal"])
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        sid = conn.session.open_stream()
        stream = YamuxStream(conn, sid, inbound=False)
        conn._streams[sid] = stream
        # The peer's ACK with a window for everything: the sender never waits for one.
        conn.session.receive_data(encode_header(FrameType.WINDOW_UPDATE, Flag.ACK, sid, 2 * len(data)))
        # multistream-select sent ahead of the data, as lazy dialers do.
        await stream.send_all(mss.encode_message(mss.HEADER) + mss.encode_message(PROTO))
        cpu = time.process_time()
        for pos in range(0, len(data), PIECE):
            await stream.send_all_parts(encode_frame_parts([view[pos : pos + PIECE]]))
        cpu = time.process_time() - cpu
        nursery.cancel_scope.cancel()
    return cpu, peer, b"".join(wire)


async def _receive_no_socket(stack: str, secure: SecureStream, wire: bytes, size: int,
                             lone: bool = False, read_size: int = PIECE) -> float:
    """Receiver CPU from the first read until `size` payload bytes are decoded.

    `shoal` (unless `lone`): the connection also has what a node's has
    waiting while blocks come in on the exchange stream: the session
    stream's reader (idle during a get) and the Bitswap service's watcher of
    the connection's end (`wait_closed` where the checkout has it, else its
    old loop on `wait_change`), so their wake-ups, if any, are counted.
    """
    transport = secure.transport
    assert isinstance(transport, _Switchable)
    transport.source = memoryview(wire)
    transport.read_size = read_size
    done = trio.Event()
    total = 0

    async def sink(stream: trio.abc.ReceiveStream) -> None:
        nonlocal total
        decoder = FrameDecoder()
        receive = getattr(stream, "receive_some_parts")
        # As PeerConnection reads a yamux stream where the checkout can: woken
        # once the frame in progress can be complete.
        if isinstance(stream, YamuxStream) and hasattr(decoder, "wanted"):
            receive = lambda: stream.receive_some_parts(decoder.wanted)  # noqa: E731
        while parts := await receive():
            for part in parts:
                for payload in decoder.feed(part):
                    total += len(payload)
            if total >= size:
                break
        done.set()

    cpu = time.process_time()
    if stack == "framing":
        await sink(secure)
        return time.process_time() - cpu

    async def handler(stream: YamuxStream) -> None:
        stream.grow_window(WINDOWS["shoal"])
        await sink(stream)
        await trio.sleep_forever()

    conn = Libp2pConnection(secure, is_client=False, handlers={PROTO: handler},
                            receive_window=WINDOWS["shoal"])
    async def watch() -> None:
        wait_closed = getattr(conn, "wait_closed", None)
        if wait_closed is not None:
            await wait_closed()
        while not conn.closed:
            await conn.wait_change()

    async with trio.open_nursery() as nursery:
        await nursery.start(conn.run)
        if not lone:
            sid = conn.session.open_stream()
            session_stream = YamuxStream(conn, sid, inbound=False)
            conn._streams[sid] = session_stream
            nursery.start_soon(session_stream.receive_some)
            nursery.start_soon(watch)
        await done.wait()
        cpu = time.process_time() - cpu
        nursery.cancel_scope.cancel()
    return cpu


def no_socket_run(stack: str, data: bytes, lone: bool = False, read_size: int = PIECE) -> dict[str, object]:
    send_cpu, _, _ = trio.run(_send_no_socket, stack, data, False)
    _, peer, wire = trio.run(_send_no_socket, stack, data, True)  # the wire, not timed
    recv_cpu = trio.run(_receive_no_socket, stack, peer, wire, len(data), lone, read_size)
    gib = len(data) / GIB
    return {"stack": stack, "no_socket": True, "bytes": len(data),
            "send_cpu_s_per_gib": round(send_cpu / gib, 3),
            "recv_cpu_s_per_gib": round(recv_cpu / gib, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--stacks", default=",".join(STACKS),
                        help=f"comma-separated subset of {','.join(STACKS)}")
    parser.add_argument("--profile", metavar="DIR", help="write a cProfile of each side of each run")
    parser.add_argument("--no-socket", action="store_true",
                        help="framing and shoal only, in-process, no kernel: CPU of the code alone")
    parser.add_argument("--lone-stream", action="store_true",
                        help="with --no-socket: the shoal receiver's connection has only the "
                             "block stream (no idle session reader, no Bitswap watcher)")
    parser.add_argument("--read-size", default="1M",
                        help="with --no-socket: the receiver's transport reads at most this much "
                             "at a time (a kernel often hands over less than a whole block)")
    parser.add_argument("--receive", choices=STACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        if args.receive == "framing":
            profiled(args.profile, partial(trio.run, receive_framing))
        else:
            profiled(args.profile, partial(trio.run, receive_yamux, WINDOWS[args.receive],
                                           args.receive == "shoal"))
        return
    stacks = [s for s in args.stacks.split(",") if s]
    unknown = set(stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stacks: {sorted(unknown)}")
    if args.no_socket:
        stacks = [s for s in stacks if s in ("framing", "shoal")] or ["framing", "shoal"]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    data = os.urandom(parse_size(args.size))
    print(machine_line(machine_info()), flush=True)
    rows: list[dict[str, object]] = []
    for run in range(args.runs):
        for stack in stacks:
            row = (no_socket_run(stack, data, args.lone_stream, parse_size(args.read_size)) if args.no_socket
                   else one_run(stack, data, args.profile, run))
            rows.append(row)
            report(row)
    report(summary(rows, stacks, ("send_cpu_s_per_gib", "recv_cpu_s_per_gib") if args.no_socket else None))


if __name__ == "__main__":
    main()
