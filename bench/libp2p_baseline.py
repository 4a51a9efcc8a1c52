"""py-libp2p baseline for bench/transfer.py: one stream, TCP + Noise + yamux.

Runs under bench/.venv-libp2p (PyPI `libp2p`, version pinned in
bench/requirements-bench.txt), never under Shoal's venv. Two processes,
like two Shoal nodes:

    python libp2p_baseline.py listen --bytes N
        prints {"addr": "/ip4/127.0.0.1/tcp/P/p2p/ID"} on one line, accepts
        one stream on /shoal-bench/blob/1.0.0, reads until EOF (or N bytes),
        prints {"bytes", "seconds", "cpu_seconds", "peak_rss_MiB", "stack"}.
    python libp2p_baseline.py send ADDR FILE
        dials ADDR, opens one stream, writes FILE in 1 MiB pieces, closes,
        prints {"cpu_seconds", "peak_rss_MiB"}.

Only Noise is offered as the security protocol and only yamux as the muxer,
so the connection cannot silently fall back to something cheaper; the
listener records what was actually negotiated.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import multiaddr
import trio

from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.x25519 import create_new_key_pair as create_new_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

PROTO = TProtocol("/shoal-bench/blob/1.0.0")
PIECE = 1 << 20
READ = 1 << 20


def make_host():
    key_pair = create_new_key_pair()
    noise = NoiseTransport(key_pair, noise_privkey=create_new_x25519_key_pair().private_key)
    return new_host(key_pair=key_pair,
                    sec_opt={NOISE_PROTOCOL_ID: noise},
                    muxer_opt={YAMUX_PROTOCOL_ID: Yamux})


def peak_rss_mib() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # KiB on Linux


async def listen(expected: int) -> None:
    host = make_host()
    done = trio.Event()
    result: dict = {}

    async def handler(stream) -> None:
        total = 0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        try:
            while expected <= 0 or total < expected:
                try:
                    data = await stream.read(READ)
                except StreamEOF:
                    break
                if not data:
                    break
                total += len(data)
        finally:
            elapsed = time.perf_counter() - t0
            result["cpu_seconds"] = time.process_time() - cpu0
            muxed = stream.muxed_conn
            secured = getattr(muxed, "secured_conn", None)
            result.update(bytes=total, seconds=elapsed,
                          stack=f"TCP + Noise (the only security protocol offered; session "
                                f"{type(secured).__name__}) + {type(muxed).__name__}")
            try:
                await stream.close()
            except Exception:
                pass
            done.set()

    listen_addr = multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")
    async with host.run(listen_addrs=[listen_addr]):
        host.set_stream_handler(PROTO, handler)
        addrs = [str(a) for a in host.get_addrs() if "/tcp/" in str(a)]
        addr = addrs[0] if "/p2p/" in addrs[0] else f"{addrs[0]}/p2p/{host.get_id().to_string()}"
        print(json.dumps({"addr": addr}), flush=True)
        await done.wait()
        result["peak_rss_MiB"] = peak_rss_mib()
        print(json.dumps(result), flush=True)
        await trio.sleep(0.2)


async def send(addr: str, path: str) -> None:
    host = make_host()
    async with host.run(listen_addrs=[multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        cpu0 = time.process_time()
        await host.connect(info)
        stream = await host.new_stream(info.peer_id, [PROTO])
        with open(path, "rb", buffering=0) as f:
            while piece := f.read(PIECE):
                await stream.write(piece)
        await stream.close()
        cpu = time.process_time() - cpu0  # connect + handshake + transfer, not the imports
        await trio.sleep(0.5)  # let the last frames and the FIN drain before the host stops
    print(json.dumps({"cpu_seconds": cpu, "peak_rss_MiB": peak_rss_mib()}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("listen")
    p.add_argument("--bytes", type=int, default=0)
    p = sub.add_parser("send")
    p.add_argument("addr")
    p.add_argument("file")
    args = ap.parse_args()
    if args.cmd == "listen":
        trio.run(listen, args.bytes)
    else:
        trio.run(send, args.addr, args.file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
