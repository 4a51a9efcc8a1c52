"""The least a Python gateway pays here: a stripped reference pipeline against the static HF mirror, same run.

Why. bench/gateway.py puts the Hub client through Shoal's gateway at ~2.4x
the static server's time against issue 14's 1.5x target, and prices the
floor (DESIGN.md's per-byte work at C speed, no glue) at ~1.2x. Between
the two lies the question the floor cannot answer: how close can a gateway
written in Python on trio get when it does that work and nothing else? If
such a pipeline misses the target too, no Python gateway that also keeps an
index, speaks Bitswap and resolves names can meet it on this machine; if it
meets it, the gap is Shoal's to close, and this file shows how.

The reference pipeline (three processes on loopback, all Python 3 + trio):

- two holders: for each requested block, read its file into a reused
  buffer, SHA-256 it against its name (DESIGN.md: verify on read), seal it
  in frames of at most 65,535 bytes, AES-256-GCM with a big-endian counter
  nonce around a 12-byte yamux-shaped header (the libp2p Noise + yamux
  framing a Shoal holder sends), with `encrypt_into` into a reused buffer,
  and send;
- a gateway: hypercorn on trio (the HTTP stack the node uses, issue 14 item
  1). A GET of a file of more than one block asks the holders for its
  blocks (alternating, 16 ahead), receives with `recv_into`, opens each
  frame with `decrypt_into` into a cache-hot scratch buffer, assembles the
  block in a pooled page-aligned buffer, SHA-256s it (verify on receipt),
  hands its bytes to the HTTP response and, in a worker thread, writes it
  durably as its own file (O_DIRECT from the pooled buffer, rename, one
  syncfs per 64 files: what bench/transfer.py's floor prices). Everything
  else (the Hub API, HEADs, small files) it proxies to the static server.

Left out, each a per-connection or per-object cost rather than per byte:
the Noise handshake (the driver hands both sides their keys), multistream,
yamux window updates, Bitswap's protobuf, the index, name records and
directory blocks. So the reference is a lower bound for a Python gateway
that follows DESIGN.md.

Measured: the same `snapshot_download` (bench/gateway.py's client: a fresh
process, empty cache, Xet off, 8 workers) against bench/hf_static.py and
against the reference, `--rounds` paired rounds whose order alternates, a
fresh gateway and store each round; bytes checked against the sha256s. Per
round the ratio of the client's inner times; CPU seconds per GiB of every
process and its minor page faults. Writes bench/results/gateway_reference.json
and the RESULTS.md section "Gateway reference pipeline" (unless --no-write).

    .venv/bin/python bench/gateway_reference.py --wait-quiet 60
    .venv/bin/python bench/gateway_reference.py --size 64M --rounds 1 --no-write
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import mmap
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    add_result_options,
    BENCH_DIR,
    GIB,
    MIB,
    Cleanup,
    ProcSample,
    human_bytes,
    machine_info,
    machine_line,
    make_log,
    parse_size,
    system_load,
    update_results_section,
    wait_for,
    wait_quiet,
    write_json,
)

RESULTS_JSON = BENCH_DIR / "results" / "gateway_reference.json"
SECTION = "Gateway reference pipeline"
BLOCK = 1 << 20
DIGEST = 32
TAG = 16
MAX_FRAME = 65535  # a Noise transport message
YAMUX = struct.Struct(">BBHII")  # version, type, flags, stream id, length
MAX_PAYLOAD = MAX_FRAME - TAG - YAMUX.size
AHEAD = 16  # default blocks asked for ahead of the one being served, per file (8 and 32 measured the same)
SYNC_EVERY = 64
KEYS_ENV = "SHOAL_REF_KEYS"  # hex: holder->gateway key, gateway->holder key

log = make_log("gateway-reference")


def nonce(n: int) -> bytes:
    """The Noise AES-GCM nonce: 4 zero bytes and a 64-bit big-endian counter."""
    return b"\0\0\0\0" + n.to_bytes(8, "big")


def keys() -> tuple[bytes, bytes]:
    raw = bytes.fromhex(os.environ[KEYS_ENV])
    return raw[:32], raw[32:64]


class Sealer:
    """Messages (u32 length + body) out as sealed frames, into one reused buffer."""

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._n = 0
        self._out = bytearray(2 * BLOCK + 4096)
        self._plain = bytearray(MAX_PAYLOAD + YAMUX.size)

    def seal(self, body: memoryview) -> memoryview:
        """The frames carrying `body`; valid until the next call."""
        out, plain, size = memoryview(self._out), memoryview(self._plain), len(body)
        if size + 4 > len(self._out) // 2:
            raise ValueError("message too large")
        at = off = 0
        first = True
        while first or off < size:
            if first:  # the length prefix and the start of the body share the first frame
                take = min(size, MAX_PAYLOAD - 4)
                plain[12:16] = size.to_bytes(4, "big")
                plain[16 : 16 + take] = body[:take]
                payload, first = 4 + take, False
            else:
                take = min(size - off, MAX_PAYLOAD)
                plain[12 : 12 + take] = body[off : off + take]
                payload = take
            off += take
            YAMUX.pack_into(plain, 0, 0, 0, 0, 1, payload)
            clen = YAMUX.size + payload + TAG
            out[at : at + 2] = clen.to_bytes(2, "big")
            self._aead.encrypt_into(nonce(self._n), plain[: YAMUX.size + payload], None, out[at + 2 : at + 2 + clen])
            self._n += 1
            at += 2 + clen
        return out[:at]


class Opener:
    """Sealed frames in (the caller `recv_into`s `buf` at `fill`), each frame's payload out to a sink.

    A frame is at most 65,537 bytes with its length, so the 4 MiB buffer never fills without a
    whole frame in it; payloads are views of one scratch buffer, valid only during the sink call.
    """

    def __init__(self, key: bytes) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._n = 0
        self.buf = bytearray(4 * MIB)
        self.fill = 0
        self._scratch = bytearray(MAX_FRAME)

    def open_each(self, sink: Any) -> None:
        """Open every whole buffered frame, calling sink(payload_view) for each in order."""
        buf, scratch = memoryview(self.buf), memoryview(self._scratch)
        pos = 0
        while self.fill - pos >= 2:
            clen = (buf[pos] << 8) | buf[pos + 1]
            if clen < TAG + YAMUX.size:
                raise ValueError("short frame")
            if self.fill - pos - 2 < clen:
                break
            plen = clen - TAG
            self._aead.decrypt_into(nonce(self._n), buf[pos + 2 : pos + 2 + clen], None, scratch[:plen])
            self._n += 1
            pos += 2 + clen
            sink(scratch[YAMUX.size : plen])
        if pos:
            rest = self.fill - pos
            buf[:rest] = buf[pos : self.fill]
            self.fill = rest


# ---------------------------------------------------------------- holder


def read_verified(folder: str, digest: bytes, buf: bytearray) -> memoryview:
    """digest + the block named by it, read into `buf` and checked (verify on read)."""
    view = memoryview(buf)
    view[:DIGEST] = digest
    with open(os.path.join(folder, digest.hex()), "rb", buffering=0) as fh:
        n = fh.readinto(view[DIGEST:])
    if hashlib.sha256(view[DIGEST : DIGEST + n]).digest() != digest:
        raise ValueError(f"block {digest.hex()} fails its hash")
    return view[: DIGEST + n]


def holder_main(folder: str, port: int) -> None:
    import trio

    to_holder, to_gateway = keys()[1], keys()[0]

    async def serve(stream: Any) -> None:
        opener, sealer = Opener(to_holder), Sealer(to_gateway)
        buf = bytearray(BLOCK + DIGEST)
        sock = stream.socket  # a trio socket: recv_into straight into the opener's buffer
        pending: list[bytes] = []

        def on_request(payload: memoryview) -> None:
            # A request is one message in one frame: u32 length, then digests.
            size = int.from_bytes(payload[:4], "big")
            if size % DIGEST or size + 4 != len(payload):
                raise ValueError("bad request")
            pending.extend(bytes(payload[4 + i : 4 + i + DIGEST]) for i in range(0, size, DIGEST))

        while True:
            got = await sock.recv_into(memoryview(opener.buf)[opener.fill :])
            if not got:
                return
            opener.fill += got
            opener.open_each(on_request)
            while pending:
                await stream.send_all(sealer.seal(read_verified(folder, pending.pop(0), buf)))

    async def main() -> None:
        await trio.serve_tcp(serve, port, host="127.0.0.1")

    trio.run(main)


# ---------------------------------------------------------------- gateway


class BufferPool:
    """Page-aligned block buffers, touched once and reused (fresh ones cost page faults)."""

    def __init__(self, count: int) -> None:
        self._free = [self._new() for _ in range(count)]

    @staticmethod
    def _new() -> mmap.mmap:
        buf = mmap.mmap(-1, BLOCK + 4096)
        buf.write(b"\0" * len(buf))
        return buf

    def take(self) -> mmap.mmap:
        return self._free.pop() if self._free else self._new()

    def give(self, buf: mmap.mmap) -> None:
        self._free.append(buf)


def gateway_main(manifest_path: str, holder_ports: str, static_url: str, port: int, store: str,
                 ahead: int = AHEAD) -> None:
    import httpx
    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    manifest: dict[str, list[str]] = json.loads(Path(manifest_path).read_text())
    to_gateway, to_holder = keys()
    pool = BufferPool(4 * ahead)
    libc = ctypes.CDLL(None, use_errno=True)
    written = [0]

    class Slot:
        __slots__ = ("event", "buf", "size")

        def __init__(self) -> None:
            self.event = trio.Event()
            self.buf: mmap.mmap | None = None
            self.size = 0

    slots: dict[bytes, Slot] = {}

    class HolderLink:
        def __init__(self, sock: socket.socket) -> None:
            self.sock, self.sealer, self.opener = sock, Sealer(to_holder), Opener(to_gateway)
            self.lock = trio.Lock()
            self.cur: mmap.mmap | None = None
            self.digest = b""
            self.want = self.have = 0

        async def ask(self, digests: list[bytes]) -> None:
            for d in digests:
                slots[d] = Slot()
            async with self.lock:  # the sealer's nonce and buffer are the connection's: one message at a time
                frames = self.sealer.seal(memoryview(b"".join(digests)))
                while frames:
                    await trio.lowlevel.wait_writable(self.sock)
                    try:
                        frames = frames[self.sock.send(frames) :]
                    except BlockingIOError:
                        pass

        def on_payload(self, payload: memoryview) -> None:
            if self.cur is None:  # a message starts at a frame: u32 length, digest, block bytes
                size = int.from_bytes(payload[:4], "big") - DIGEST
                if not 0 < size <= BLOCK:
                    raise ValueError("bad block size")
                self.digest, self.want, self.have = bytes(payload[4 : 4 + DIGEST]), size, 0
                self.cur = pool.take()
                payload = payload[4 + DIGEST :]
            take = len(payload)
            if self.have + take > self.want:
                raise ValueError("block longer than announced")
            memoryview(self.cur)[self.have : self.have + take] = payload
            self.have += take
            if self.have == self.want:
                if hashlib.sha256(memoryview(self.cur)[: self.want]).digest() != self.digest:
                    raise ValueError("block fails its hash")
                slot = slots[self.digest]
                slot.buf, slot.size = self.cur, self.want
                slot.event.set()
                self.cur = None

        async def run(self) -> None:
            while True:
                await trio.lowlevel.wait_readable(self.sock)
                try:
                    got = self.sock.recv_into(memoryview(self.opener.buf)[self.opener.fill :])
                except BlockingIOError:
                    continue
                if not got:
                    return
                self.opener.fill += got
                self.opener.open_each(self.on_payload)

    links: list[HolderLink] = []

    def write_block(digest: bytes, buf: mmap.mmap, size: int) -> None:
        path = os.path.join(store, digest.hex())
        padded = (size + 4095) & ~4095
        fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        try:
            os.write(fd, memoryview(buf)[:padded])
            if padded != size:
                os.ftruncate(fd, size)
        finally:
            os.close(fd)
        os.rename(path + ".tmp", path)
        written[0] += 1
        if written[0] % SYNC_EVERY == 0:
            dfd = os.open(store, os.O_RDONLY | os.O_DIRECTORY)
            try:
                libc.syncfs(dfd)
            finally:
                os.close(dfd)

    proxy: httpx.AsyncClient

    def passthrough(headers: Any) -> list[tuple[bytes, bytes]]:
        drop = {"connection", "keep-alive", "transfer-encoding", "date", "server", "content-encoding"}
        return [(k.encode(), v.encode()) for k, v in headers.items() if k.lower() not in drop]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        path = scope["path"]
        rel = path.split("/resolve/", 1)[1].split("/", 1)[1] if "/resolve/" in path else None
        if scope["method"] == "GET" and rel in manifest and len(manifest[rel]) > 1:
            head = await proxy.head(static_url + path)
            await send({"type": "http.response.start", "status": 200, "headers": passthrough(head.headers)})
            digests = [bytes.fromhex(h) for h in manifest[rel]]
            asked = 0
            async with trio.open_nursery() as writers:
                for i, digest in enumerate(digests):
                    if i % max(1, ahead // 2) == 0 and asked < len(digests):
                        upto = min(i + ahead, len(digests))
                        for which, link in enumerate(links):
                            batch = [digests[j] for j in range(asked, upto) if j % len(links) == which]
                            if batch:
                                await link.ask(batch)
                        asked = upto
                    slot = slots[digest]
                    await slot.event.wait()
                    del slots[digest]
                    assert slot.buf is not None
                    body = slot.buf[: slot.size]  # the one copy into `bytes`, which hypercorn sends as is

                    async def store_block(digest: bytes = digest, buf: mmap.mmap = slot.buf,
                                          size: int = slot.size) -> None:
                        await trio.to_thread.run_sync(write_block, digest, buf, size)
                        pool.give(buf)

                    writers.start_soon(store_block)
                    await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        query = scope["query_string"].decode()
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k.lower() != b"host"}
        resp = await proxy.request(scope["method"], static_url + path + ("?" + query if query else ""),
                                   headers=headers)
        await send({"type": "http.response.start", "status": resp.status_code, "headers": passthrough(resp.headers)})
        await send({"type": "http.response.body", "body": resp.content if scope["method"] != "HEAD" else b""})

    async def main() -> None:
        nonlocal proxy
        proxy = httpx.AsyncClient(timeout=60)
        async with trio.open_nursery() as nursery:
            for p in holder_ports.split(","):
                sock = socket.create_connection(("127.0.0.1", int(p)))
                sock.setblocking(False)
                links.append(HolderLink(sock))
                nursery.start_soon(links[-1].run)
            config = Config()
            config.bind = [f"127.0.0.1:{port}"]
            config.accesslog = None
            await serve(app, config)  # type: ignore[arg-type]

    trio.run(main)


# ---------------------------------------------------------------- driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def minflt(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def prepare(work: Path, size: int, shards: int) -> tuple[Path, Path, Path, Path, list[dict[str, Any]]]:
    """The model folder, its 1 MiB blocks (one file each, named by SHA-256), the records for the
    static server and the manifest (file -> block digests) for the reference gateway."""
    import gateway as gb  # bench/gateway.py: the same model and client

    folder, blocks = work / "model", work / "blocks"
    gb.make_model(folder, size, shards)
    blocks.mkdir()
    files, manifest = [], {}
    for path in sorted(folder.iterdir()):
        data = path.read_bytes()
        git = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        files.append({"path": path.name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "git_sha1": git, "cid": "ref-" + git})
        digests = []
        for at in range(0, len(data), BLOCK):
            chunk = data[at : at + BLOCK]
            digest = hashlib.sha256(chunk).hexdigest()
            (blocks / digest).write_bytes(chunk)
            digests.append(digest)
        manifest[path.name] = digests
    records, manifest_path = work / "records.json", work / "manifest.json"
    records.write_text(json.dumps([{"repo": gb.REPO_ID, "kind": "model", "revision": "main", "cid": "ref-root",
                                    "commit": hashlib.sha1(b"reference").hexdigest(), "files": files}]))
    manifest_path.write_text(json.dumps(manifest))
    return folder, blocks, records, manifest_path, files


def timed(cl: Cleanup, work: Path, label: str, endpoint: str, watch: dict[str, list[int]],
          files: list[dict[str, Any]], size: int) -> dict[str, Any]:
    import gateway as gb

    cache = cl.tempdir(f"hf-{label}-", parent=str(work))
    pids = [pid for group in watch.values() for pid in group]
    before, faults = ProcSample.take(pids), {pid: minflt(pid) for pid in pids}
    out = gb.run_client(endpoint, cache)
    delta = before.delta(ProcSample.take(pids))
    if not gb.check_snapshot(Path(out["path"]), files):
        raise RuntimeError(f"{label}: the snapshot's bytes differ from the model's")
    shutil.rmtree(cache)
    per_gib = size / GIB
    cpu = {k: sum(delta[p] for p in group) / per_gib for k, group in watch.items()}
    cpu["client"] = float(out["client_cpu_s"]) / per_gib
    log(f"{label}: {out['inner_s']:.2f} s, CPU s/GiB " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items()))
    return {"inner_seconds": round(out["inner_s"], 3),
            "cpu_seconds_per_GiB": {k: round(v, 2) for k, v in cpu.items()},
            "minor_faults_per_GiB": {k: round(sum(minflt(p) - faults[p] for p in group) / per_gib)
                                     for k, group in watch.items()}}


def run(args: argparse.Namespace) -> dict[str, Any]:
    size = parse_size(args.size)
    py = sys.executable
    env = dict(os.environ, **{KEYS_ENV: os.urandom(64).hex()})
    doc: dict[str, Any] = {"benchmark": "gateway_reference", "bytes": size, "shards": args.shards, "ahead": args.ahead,
                           "cpus": len(os.sched_getaffinity(0)),
                           "machine": machine_info(), "load_before": system_load()}
    with Cleanup() as cl:
        work = cl.tempdir("shoal-bench-gwref-", parent=args.workdir)
        log(f"model of {size} bytes in {args.shards} shards, cut into 1 MiB block files")
        folder, blocks, records, manifest, files = prepare(work, size, args.shards)
        static = cl.popen([py, str(BENCH_DIR / "hf_static.py"), str(folder), str(records)],
                          stdout=subprocess.PIPE, text=True, env=env)
        assert static.stdout is not None
        static_url = static.stdout.readline().strip()
        ports = [free_port(), free_port()]
        holders = [cl.popen([py, __file__, "holder", str(blocks), str(p)], env=env) for p in ports]
        for p in ports:
            wait_for(lambda p=p: _accepts(p), 30, f"holder on {p}")
        rounds = []
        for r in range(args.rounds):
            pair: dict[str, Any] = {}
            for label in (("static", "reference") if r % 2 == 0 else ("reference", "static")):
                if label == "static":
                    pair[label] = timed(cl, work, "static", static_url, {"server": [static.pid]}, files, size)
                    continue
                store, port = work / f"store{r}", free_port()
                store.mkdir()
                gw = cl.popen([py, __file__, "gateway", str(manifest), ",".join(map(str, ports)), static_url,
                               str(port), str(store), str(args.ahead)], env=env)
                wait_for(lambda: _accepts(port), 30, "the reference gateway")
                pair[label] = timed(cl, work, "reference", f"http://127.0.0.1:{port}",
                                    {"gateway": [gw.pid], "holders": [h.pid for h in holders]}, files, size)
                cl.stop(gw)
                shutil.rmtree(store)
            pair["ratio"] = round(pair["reference"]["inner_seconds"] / pair["static"]["inner_seconds"], 3)
            log(f"round {r + 1}/{args.rounds}: reference / static = {pair['ratio']:.2f}")
            rounds.append(pair)
    ratios = [p["ratio"] for p in rounds]
    doc["rounds"] = rounds
    doc["ratio"] = {"median": round(statistics.median(ratios), 3), "min": min(ratios), "max": max(ratios),
                    "target_max": 1.5}
    swarm = [p["reference"]["cpu_seconds_per_GiB"]["gateway"] + p["reference"]["cpu_seconds_per_GiB"]["holders"]
             for p in rounds]
    doc["swarm_cpu_seconds_per_GiB_median"] = round(statistics.median(swarm), 2)
    return doc


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def report(doc: dict[str, Any]) -> str:
    med = lambda key, who: statistics.median(p[key]["cpu_seconds_per_GiB"][who] for p in doc["rounds"])  # noqa: E731
    rows = ["| round | static s | reference s | reference / static | gateway CPU s/GiB | holders CPU s/GiB |",
            "|---|---|---|---|---|---|"]
    for i, p in enumerate(doc["rounds"], 1):
        c = p["reference"]["cpu_seconds_per_GiB"]
        rows.append(f"| {i} | {p['static']['inner_seconds']:.2f} | {p['reference']['inner_seconds']:.2f} | "
                    f"{p['ratio']:.2f} | {c['gateway']:.2f} | {c['holders']:.2f} |")
    faults = statistics.median(p["reference"]["minor_faults_per_GiB"]["gateway"] for p in doc["rounds"])
    r = doc["ratio"]
    return "\n".join([
        f"bench/gateway_reference.py: {machine_line(doc['machine'])}; load before {doc['load_before']}.",
        "",
        f"The Hub client's `snapshot_download` of a {human_bytes(doc['bytes'])} model ({doc['shards']} shards) "
        "against bench/hf_static.py and against a stripped Python gateway that does only DESIGN.md's per-byte "
        "work (two trio holders: read, SHA-256, AES-GCM frames in the Noise + yamux framing; a hypercorn-on-trio "
        "gateway: open, SHA-256, durable block files with O_DIRECT, serve), paired rounds in alternating order. "
        "No handshake, index, Bitswap or names: a lower bound for a Python gateway (the module docstring says "
        "what is left out).",
        "",
        *rows,
        "",
        f"Median reference / static **{r['median']:.2f}x** (min {r['min']:.2f}, max {r['max']:.2f}; issue 14's "
        f"target for Shoal's gateway: at most {r['target_max']}x). The reference's swarm side (gateway + holders) "
        f"used a median {doc['swarm_cpu_seconds_per_GiB_median']:.2f} CPU s/GiB (gateway {med('reference', 'gateway'):.2f}, "
        f"holders {med('reference', 'holders'):.2f}; {faults:.0f} minor faults per GiB in the gateway); the Hub client "
        f"{med('reference', 'client'):.2f} through it and {med('static', 'client'):.2f} against the static server.",
    ])


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["holder"]:
        holder_main(argv[1], int(argv[2]))
        return 0
    if argv[:1] == ["gateway"]:
        gateway_main(argv[1], argv[2], argv[3], int(argv[4]), argv[5], int(argv[6]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="model bytes in shards (default 1G)")
    ap.add_argument("--shards", type=int, default=4, help="safetensors shards (default 4)")
    ap.add_argument("--rounds", type=int, default=8, help="paired rounds, order alternating (default 8)")
    ap.add_argument("--ahead", type=int, default=AHEAD, help=f"blocks asked for ahead, per file (default {AHEAD})")
    ap.add_argument("--workdir", default=None, help="where temp files go (default: system temp dir)")
    add_result_options(ap, RESULTS_JSON)
    args = ap.parse_args(argv)
    if args.report_only:
        update_results_section(SECTION, report(json.loads(RESULTS_JSON.read_text())))
        return 0
    wait_quiet(args.wait_quiet, log)
    doc = run(args)
    text = report(doc)
    print(text)
    if not args.no_write:
        write_json(RESULTS_JSON, doc)
        update_results_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
