"""One stream's throughput: Shoal's current framing vs a yamux stream, both over loopback Noise.

    .venv/bin/python bench/libp2p_stream.py [--size 256M] [--runs 3]

For each run and each stack, a receiver child process listens on
127.0.0.1, this process dials it and sends `--size` bytes in 1 MiB pieces;
the receiver reads to EOF and reports bytes, seconds and its CPU time.
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

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import cpu_seconds, machine_line, machine_info  # noqa: E402

from shoal.p2p.libp2p.connection import YamuxStream
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.secure_stream import secure_accept, secure_dial
from shoal.p2p.wire.framing import FrameDecoder, encode_frame_parts

PROTO = "/shoal-bench/blob/1.0.0"
PIECE = 1 << 20
WINDOWS = {"yamux": 256 * 1024, "yamux-4m": 4 << 20}
STACKS = ("framing", "yamux", "yamux-4m")


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
        total, start = 0, time.perf_counter()
        while parts := await secure.receive_some_parts():
            for part in parts:
                for payload in decoder.feed(part):
                    total += len(payload)
        decoder.end_of_stream()
        result.update(bytes=total, seconds=time.perf_counter() - start)
        done.set()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, on_conn, 0, host="127.0.0.1"))
        report({"port": listeners[0].socket.getsockname()[1]})
        await done.wait()
        nursery.cancel_scope.cancel()
    report({**result, "cpu_seconds": cpu_seconds(os.getpid())})


async def receive_yamux(window: int) -> None:
    done = trio.Event()
    result: dict[str, object] = {}

    async def sink(stream: YamuxStream) -> None:
        total, start = 0, time.perf_counter()
        while data := await stream.receive_some():
            total += len(data)
        result.update(bytes=total, seconds=time.perf_counter() - start)
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
    report({**result, "cpu_seconds": cpu_seconds(os.getpid())})


async def send_framing(port: int, data: bytes) -> None:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    secure = await secure_dial(tcp, Identity.generate())
    view = memoryview(data)
    for pos in range(0, len(data), PIECE):
        await secure.send_all_parts(encode_frame_parts([view[pos : pos + PIECE]]))
    await secure.aclose()


async def send_yamux(addr: str, data: bytes, window: int) -> None:
    async with trio.open_nursery() as nursery:
        host = Libp2pHost(Identity.generate(), nursery, receive_window=window)
        conn = await host.dial(Multiaddr.parse(addr))
        stream = await conn.open_stream(PROTO)
        view = memoryview(data)
        for pos in range(0, len(data), PIECE):
            await stream.send_all(view[pos : pos + PIECE])
        await stream.send_eof()
        while await stream.receive_some():
            pass
        await conn.aclose()
        nursery.cancel_scope.cancel()


def one_run(stack: str, data: bytes) -> dict[str, object]:
    child = subprocess.Popen([sys.executable, __file__, "--receive", stack],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        hello = json.loads(child.stdout.readline())
        cpu_before = cpu_seconds(os.getpid())
        if stack == "framing":
            trio.run(send_framing, int(hello["port"]), data)
        else:
            trio.run(send_yamux, str(hello["addr"]), data, WINDOWS[stack])
        send_cpu = cpu_seconds(os.getpid()) - cpu_before
        result = json.loads(child.stdout.readline())
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert result["bytes"] == len(data), result
    seconds = float(result["seconds"])
    return {"stack": stack, "bytes": len(data), "seconds": round(seconds, 3),
            "MB_s": round(len(data) / seconds / 1e6, 1),
            "send_cpu_s": round(send_cpu, 2), "recv_cpu_s": round(float(result["cpu_seconds"]), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--receive", choices=STACKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receive:
        if args.receive == "framing":
            trio.run(receive_framing)
        else:
            trio.run(receive_yamux, WINDOWS[args.receive])
        return
    data = os.urandom(parse_size(args.size))
    print(machine_line(machine_info()), flush=True)
    speeds: dict[str, list[float]] = {stack: [] for stack in STACKS}
    for _ in range(args.runs):
        for stack in STACKS:
            row = one_run(stack, data)
            speeds[stack].append(float(row["MB_s"]))  # type: ignore[arg-type]
            report(row)
    med = {k: statistics.median(v) for k, v in speeds.items()}
    report({"median_MB_s": med,
            "yamux_over_framing": round(med["yamux"] / med["framing"], 2),
            "yamux_4m_over_framing": round(med["yamux-4m"] / med["framing"], 2)})


if __name__ == "__main__":
    main()
