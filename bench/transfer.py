"""Block transfer over loopback: Shoal against raw TCP and py-libp2p, same run.

Measured (default 1 GiB of incompressible bytes; --size to change):

1. Shoal: two real `shoal node start` processes in temp repos. The file is
   put on A (not timed); B is bootstrapped to A; then `shoal --repo B get
   CID -o OUT` is timed end to end (CLI start, fetch over Noise, hash check
   of every block, store, export to OUT). Also: CPU seconds per GiB of each
   node (utime+stime from /proc/PID/stat, before/after) and each node's
   peak RSS (VmHWM). The output is compared with the input afterwards.
2. Raw TCP: a Python sender (file -> socket, 1 MiB buffers, 4 MiB socket
   buffers) and receiver in two processes, receiver discarding the bytes
   (the loopback ceiling) and, second, writing them to a file.
3. py-libp2p (PyPI `libp2p`, pinned in requirements-bench.txt, installed
   into bench/.venv-libp2p): two hosts in two processes, TCP + Noise +
   yamux, one stream, the same bytes (bench/libp2p_baseline.py).
4. Two holders vs one, each rate-limited: every holder is reached only
   through its own throttling TCP proxy (`_proxy` below, one process per
   holder, a byte-rate limit per direction). The fetching node dials the
   proxy's address with the holder's /p2p/ id, so the Noise handshake passes
   through unchanged and Shoal is not modified. The proxies count the bytes
   they forward, so the run proves the data really went through them.

Writes bench/results/transfer.json and the "## transfer" section of
bench/RESULTS.md (unless --no-write). Every child process and temp dir is
removed at the end, also on an error or Ctrl-C.

    .venv/bin/python bench/transfer.py                 # the full run, 1 GiB
    .venv/bin/python bench/transfer.py --size 64M --no-write   # quick check
    .venv/bin/python bench/transfer.py --profile       # + py-spy of both nodes
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from shoal.cli.swarm import LocalSwarm  # noqa: E402
from shoal.cli.swarm import NodeProcess as NodeProc  # noqa: E402

from common import (  # noqa: E402
    make_log,
    parse_size,
    BENCH_DIR,
    GIB,
    MIB,
    PROJECT_ROOT,
    Cleanup,
    ProcSample,
    format_table,
    human_bytes,
    machine_info,
    machine_line,
    markdown_table,
    mb_per_s,
    peak_rss,
    reset_peak_rss,
    system_load,
    update_results_section,
    wait_for,
    write_json,
    write_pseudorandom,
)

SHOAL_PY = PROJECT_ROOT / ".venv" / "bin" / "python"
LIBP2P_VENV = BENCH_DIR / ".venv-libp2p"
LIBP2P_PY = LIBP2P_VENV / "bin" / "python"
REQUIREMENTS = BENCH_DIR / "requirements-bench.txt"
RESULTS_JSON = BENCH_DIR / "results" / "transfer.json"
TCP_BUF = 1 * MIB
SOCK_BUF = 4 * MIB

TARGETS = {
    "shoal_vs_libp2p_min": 5.0,
    "shoal_vs_raw_tcp_min": 0.25,
}


log = make_log("transfer")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


# =====================================================================================
# Shoal nodes as real processes
# =====================================================================================


def shoal_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SHOAL_REPO", None)
    return env


def shoal(repo: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(SHOAL_PY), "-m", "shoal.cli.main", "--repo", str(repo), *args],
                          capture_output=True, text=True, timeout=timeout, env=shoal_env(), cwd=PROJECT_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"shoal {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


NODE_READY_S = 60.0
STOP_S = 15.0  # as Cleanup.stop


def node_swarm(cl: Cleanup, root: Path) -> LocalSwarm:
    """Nodes under `root`, started by the shared harness (shoal.cli.swarm, as for the demo and the
    tests); `cl` stops them on any exit, before it removes the temp dirs."""
    swarm = LocalSwarm(root, ["--log-level", "WARNING"], python=str(SHOAL_PY), env=shoal_env(), cwd=PROJECT_ROOT)
    cl.on_close(swarm.close)
    return swarm


def start_node(swarm: LocalSwarm, name: str, bootstrap: list[str] = ()) -> NodeProc:
    return swarm.add(name, bootstrap, timeout=NODE_READY_S)


def wait_connected(swarm: LocalSwarm, node: NodeProc, peer_ids: list[str], timeout: float = 30) -> None:
    swarm.wait_connected(node, peer_ids, timeout)


def put(node: NodeProc, path: Path) -> str:
    return shoal(node.repo, "put", str(path), "--quiet").stdout.strip().splitlines()[-1]


def timed_get(node: NodeProc, cid: str, out: Path, watch: list[NodeProc]) -> dict[str, Any]:
    pids = [n.pid for n in watch]
    for pid in pids:
        reset_peak_rss(pid)  # so VmHWM covers this get, not the put before it
    before = ProcSample.take(pids)
    t0 = time.perf_counter()
    proc = shoal(node.repo, "get", cid, "-o", str(out), "--json")
    elapsed = time.perf_counter() - t0
    cpu = before.delta(ProcSample.take(pids))
    try:
        stats = json.loads(proc.stdout)
    except ValueError:
        stats = {}
    return {"seconds": elapsed, "cpu": {n.name: cpu[n.pid] for n in watch}, "stats": stats}


def api_fetch(node: NodeProc, cid: str) -> dict[str, Any]:
    """Time POST /v1/fetch on the node's control API: network fetch + verify + store, no CLI, no export."""
    import httpx

    doc = json.loads((node.repo / "api").read_text())
    with httpx.Client(base_url=doc["url"], headers={"Authorization": f"Bearer {doc['token']}"},
                      timeout=httpx.Timeout(None, connect=10)) as client:
        t0 = time.perf_counter()
        resp = client.post("/v1/fetch", json={"cid": cid})
        elapsed = time.perf_counter() - t0
    resp.raise_for_status()
    return {"seconds": elapsed, "stats": resp.json()}


def cli_overhead(node: NodeProc, runs: int = 3) -> float:
    """Wall time of a trivial CLI call through the node (interpreter start + one API call)."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        shoal(node.repo, "id", "--json")
        times.append(time.perf_counter() - t0)
    return min(times)


# =====================================================================================
# py-spy (optional)
# =====================================================================================


def pyspy_bin() -> str | None:
    for cand in (PROJECT_ROOT / ".venv" / "bin" / "py-spy", LIBP2P_VENV / "bin" / "py-spy"):
        if cand.exists():
            return str(cand)
    from shutil import which

    return which("py-spy")


IDLE_LEAVES = {
    "WorkerThread._work (_core/_thread_cache.py)",
    "EpollIOManager.get_events (_core/_io_epoll.py)",
    "Condition.wait (threading.py)",
}


def summarize_collapsed(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample counts per function from py-spy's collapsed (--format raw) output."""
    self_counts: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = idle = 0
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": []}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f for f in stack.split(";") if f]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        if _short(frames[-1]) in IDLE_LEAVES:  # a thread parked waiting for work or I/O
            idle += n
            continue
        self_counts[_short(frames[-1])] += n
        for f in {_short(f) for f in frames}:
            incl[f] += n
    busy = total - idle
    pct = lambda c: round(100.0 * c / busy, 1) if busy else 0.0  # noqa: E731
    return {
        "samples": total,
        "busy_samples": busy,
        "note": "percent of busy samples (leaf not a parked wait: " + ", ".join(sorted(IDLE_LEAVES)) + ")",
        "self": [(f, pct(c)) for f, c in self_counts.most_common(top)],
        "inclusive": [(f, pct(c)) for f, c in incl.most_common(top + 10)],
    }


def _short(frame: str) -> str:
    # "func (path/to/file.py:123)" -> "func (file.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    file = where.rsplit(":", 1)[0]
    parts = Path(file).parts
    file = "/".join(parts[-2:]) if len(parts) >= 2 else file
    return f"{name} ({file})"


# =====================================================================================
# 1. Shoal A -> B
# =====================================================================================


def bench_shoal(cl: Cleanup, work: Path, data: Path, size: int, profile: bool) -> dict[str, Any]:
    root = cl.tempdir("shoal-xfer-", parent=str(work))
    swarm = node_swarm(cl, root)
    log("shoal: starting node A")
    a = start_node(swarm, "A")
    log(f"shoal: put {human_bytes(size)} on A (not timed)")
    t0 = time.perf_counter()
    cid = put(a, data)
    put_s = time.perf_counter() - t0
    log(f"shoal: put took {put_s:.1f} s, cid {cid}; starting B bootstrapped to A")
    b = start_node(swarm, "B", [a.addr])
    wait_connected(swarm, b, [a.peer_id])
    overhead = cli_overhead(b)
    out = root / "out.bin"
    log("shoal: timing `shoal --repo B get`")
    run = timed_get(b, cid, out, [a, b])
    mbps = mb_per_s(size, run["seconds"])
    log(f"shoal: get {run['seconds']:.2f} s = {mbps:.1f} MB/s; verifying output")
    ok = out.stat().st_size == size and sha256_file(out) == sha256_file(data)
    if not ok:
        raise RuntimeError("shoal get produced different bytes")
    result: dict[str, Any] = {
        "cid": cid,
        "bytes": size,
        "put_seconds_not_timed_in_get": round(put_s, 3),
        "get_seconds": round(run["seconds"], 3),
        "throughput_MBps": round(mbps, 1),
        "throughput_MBps_excluding_cli_start": round(mb_per_s(size, max(1e-9, run["seconds"] - overhead)), 1),
        "cli_call_overhead_seconds": round(overhead, 3),
        "output_verified": ok,
        "sender_A": {"cpu_seconds": round(run["cpu"]["A"], 2),
                     "cpu_seconds_per_GiB": round(run["cpu"]["A"] * GIB / size, 2),
                     "peak_rss_MiB": round(peak_rss(a.pid) / MIB, 1)},
        "receiver_B": {"cpu_seconds": round(run["cpu"]["B"], 2),
                       "cpu_seconds_per_GiB": round(run["cpu"]["B"] * GIB / size, 2),
                       "peak_rss_MiB": round(peak_rss(b.pid) / MIB, 1)},
        "get_stats": run["stats"],
    }
    out.unlink()
    b.stop(STOP_S)
    result["breakdown"] = breakdown(swarm, a, cid, size)
    if profile:
        result["profile"] = profile_get(cl, swarm, a, cid, size)
    a.stop(STOP_S)
    return result


def breakdown(swarm: LocalSwarm, a: NodeProc, cid: str, size: int) -> dict[str, Any]:
    """Into a fresh node F: time the network fetch alone (API), then `shoal get` with every block local."""
    root = swarm.root
    f = start_node(swarm, "F", [a.addr])
    wait_connected(swarm, f, [a.peer_id])
    log("shoal: breakdown: fetch only (POST /v1/fetch) into fresh node F")
    before = ProcSample.take([a.pid, f.pid])
    fetch = api_fetch(f, cid)
    cpu = before.delta(ProcSample.take([a.pid, f.pid]))
    out = root / "out-local.bin"
    t0 = time.perf_counter()
    shoal(f.repo, "get", cid, "-o", str(out))
    export_s = time.perf_counter() - t0
    out.unlink()
    f.stop(STOP_S)
    return {"fetch_only_seconds": round(fetch["seconds"], 3),
            "fetch_only_MBps": round(mb_per_s(size, fetch["seconds"]), 1),
            "fetch_only_cpu_seconds_per_GiB": {"sender_A": round(cpu[a.pid] * GIB / size, 2),
                                               "receiver_F": round(cpu[f.pid] * GIB / size, 2)},
            "local_get_seconds (CLI + export of local blocks to OUT, fsync)": round(export_s, 3)}


def profile_get(cl: Cleanup, swarm: LocalSwarm, a: NodeProc, cid: str, size: int) -> dict[str, Any]:
    """A second get, into a fresh node C, with py-spy recording A and C (not the timed run)."""
    spy = pyspy_bin()
    if spy is None:
        return {"error": "py-spy not found (pip install py-spy)"}
    root = swarm.root
    c = start_node(swarm, "C", [a.addr])
    wait_connected(swarm, c, [a.peer_id])
    recs = {}
    for node in (a, c):
        outp = root / f"pyspy-{node.name}.txt"
        recs[node.name] = (outp, cl.popen([spy, "record", "--format", "raw", "--rate", "200", "--threads",
                                           "-p", str(node.pid), "-o", str(outp)],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    time.sleep(1.0)  # let py-spy attach
    log("shoal: profiled get into C (py-spy on A and C)")
    run = timed_get(c, cid, root / "out-profiled.bin", [a, c])
    time.sleep(0.5)
    report: dict[str, Any] = {"get_seconds_while_profiled": round(run["seconds"], 3)}
    for name, (outp, proc) in recs.items():
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        summary = summarize_collapsed(outp)
        if not summary["samples"]:
            summary["error"] = err.strip()[-500:]
        report["sender_A" if name == "A" else "receiver_C"] = summary
    (root / "out-profiled.bin").unlink(missing_ok=True)
    c.stop(STOP_S)
    return report


# =====================================================================================
# 2. raw TCP
# =====================================================================================


def tcp_receiver(sink: str) -> None:
    """Child: listen, print the port, receive until EOF, print JSON stats."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCK_BUF)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    print(srv.getsockname()[1], flush=True)
    conn, _ = srv.accept()
    buf = bytearray(TCP_BUF)
    view = memoryview(buf)
    total = 0
    out = open(sink, "wb") if sink != "-" else None
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        n = conn.recv_into(buf)
        if not n:
            break
        total += n
        if out is not None:
            out.write(view[:n])
    if out is not None:
        out.close()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    print(json.dumps({"bytes": total, "seconds": elapsed, "cpu_seconds": cpu}), flush=True)


def tcp_sender(port: int, path: str) -> None:
    """Child: connect, send the file in 1 MiB pieces."""
    cpu0 = time.process_time()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
    buf = bytearray(TCP_BUF)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            sock.sendall(view[:n])
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    sock.close()
    print(json.dumps({"cpu_seconds": time.process_time() - cpu0}), flush=True)


def bench_raw_tcp(cl: Cleanup, work: Path, data: Path, size: int, to_file: bool) -> dict[str, Any]:
    sink = str(work / "tcp-out.bin") if to_file else "-"
    me = [sys.executable, str(Path(__file__).resolve())]
    recv = cl.popen(me + ["_tcp_recv", sink], stdout=subprocess.PIPE, text=True)
    port = int(recv.stdout.readline())
    send = cl.popen(me + ["_tcp_send", str(port), str(data)], stdout=subprocess.PIPE, text=True)
    stats = json.loads(recv.stdout.readline())
    send_stats = json.loads(send.stdout.readline() or "{}")
    recv.wait(30)
    send.wait(30)
    if stats["bytes"] != size:
        raise RuntimeError(f"raw TCP moved {stats['bytes']} bytes, expected {size}")
    if to_file:
        Path(sink).unlink()
    return {"bytes": size, "sink": "file" if to_file else "discard",
            "seconds": round(stats["seconds"], 3),
            "throughput_MBps": round(mb_per_s(size, stats["seconds"]), 1),
            "receiver_cpu_seconds_per_GiB": round(stats["cpu_seconds"] * GIB / size, 2),
            "sender_cpu_seconds_per_GiB": round(send_stats.get("cpu_seconds", float("nan")) * GIB / size, 2)}


# =====================================================================================
# 3. py-libp2p
# =====================================================================================


def ensure_libp2p_venv() -> tuple[bool, str]:
    """Create/update bench/.venv-libp2p from requirements-bench.txt. (ok, version or error)."""
    steps = [[str(LIBP2P_PY), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", str(REQUIREMENTS)]]
    if not LIBP2P_PY.exists():
        log("libp2p: creating bench/.venv-libp2p (pip install -r requirements-bench.txt)")
        steps.insert(0, [sys.executable, "-m", "venv", str(LIBP2P_VENV)])
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            lines = [l for l in (proc.stderr + proc.stdout).splitlines() if "is ignored" not in l]
            return False, f"`{' '.join(cmd[-4:])}` failed: " + "\n".join(lines[-15:])
    probe = subprocess.run([str(LIBP2P_PY), "-c", "import libp2p, importlib.metadata as m; "
                            "print(m.version('libp2p'))"], capture_output=True, text=True)
    if probe.returncode != 0:
        return False, "import libp2p failed: " + probe.stderr.strip()[-1500:]
    return True, probe.stdout.strip()


def bench_libp2p(cl: Cleanup, work: Path, data: Path, size: int) -> dict[str, Any]:
    ok, info = ensure_libp2p_venv()
    if not ok:
        return {"ok": False, "error": info}
    script = str(BENCH_DIR / "libp2p_baseline.py")
    recv = cl.popen([str(LIBP2P_PY), script, "listen", "--bytes", str(size)],
                    stdout=subprocess.PIPE, stderr=open(work / "libp2p-listen.log", "wb"), text=True)
    first = recv.stdout.readline()
    if not first:
        recv.wait(10)
        return {"ok": False, "version": info,
                "error": "listener failed: " + (work / "libp2p-listen.log").read_text()[-2000:]}
    hello = json.loads(first)
    send = cl.popen([str(LIBP2P_PY), script, "send", hello["addr"], str(data)],
                    stdout=subprocess.PIPE, stderr=open(work / "libp2p-send.log", "wb"), text=True)
    timeout = max(120.0, size / 2e6)  # at worst 2 MB/s
    line = ""
    try:
        line = _readline_timeout(recv, timeout)
    finally:
        for p in (send, recv):
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                cl.stop(p)
    if not line:
        return {"ok": False, "version": info, "error": "no result; sender log: "
                + (work / "libp2p-send.log").read_text()[-1500:] + " listener log: "
                + (work / "libp2p-listen.log").read_text()[-1500:]}
    stats = json.loads(line)
    send_out = send.stdout.read() if send.stdout else ""
    send_stats = json.loads(send_out.strip().splitlines()[-1]) if send_out.strip() else {}
    if stats.get("bytes") != size:
        return {"ok": False, "version": info, "error": f"received {stats.get('bytes')} of {size} bytes", **stats}
    return {"ok": True, "version": info, "bytes": size, "seconds": round(stats["seconds"], 3),
            "throughput_MBps": round(mb_per_s(size, stats["seconds"]), 1),
            "stack": stats.get("stack"),
            "receiver_cpu_seconds_per_GiB": round(stats["cpu_seconds"] * GIB / size, 2),
            "sender_cpu_seconds_per_GiB": round(send_stats.get("cpu_seconds", float("nan")) * GIB / size, 2),
            "receiver_peak_rss_MiB": stats.get("peak_rss_MiB"),
            "sender_peak_rss_MiB": send_stats.get("peak_rss_MiB")}


def _readline_timeout(proc: subprocess.Popen, timeout: float) -> str:
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=1.0):
            return proc.stdout.readline()
        if proc.poll() is not None:
            return proc.stdout.readline()
    return ""


# =====================================================================================
# 4. rate-limited holders through throttling proxies
# =====================================================================================


class Pacer:
    """Shared by every connection of one proxy direction: at most `rate` bytes/s on average."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.next_free = 0.0

    async def take(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        start = max(now, self.next_free)
        self.next_free = start + n / self.rate
        delay = self.next_free - now
        if delay > 0:
            await asyncio.sleep(delay)


async def _proxy_main(target_port: int, rate: float, stats_path: str) -> None:
    up, down = Pacer(rate), Pacer(rate)  # up: client -> holder, down: holder -> client
    counts = {"to_holder": 0, "from_holder": 0, "connections": 0}

    def dump() -> None:
        tmp = stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(counts, f)
        os.replace(tmp, stats_path)

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pacer: Pacer, key: str) -> None:
        try:
            while data := await reader.read(64 * 1024):
                await pacer.take(len(data))
                writer.write(data)
                await writer.drain()
                counts[key] += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:
                pass

    async def handle(c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        counts["connections"] += 1
        try:
            h_reader, h_writer = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            c_writer.close()
            return
        await asyncio.gather(pump(c_reader, h_writer, up, "to_holder"),
                             pump(h_reader, c_writer, down, "from_holder"))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            dump()
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
    dump()
    sys.stdout.flush()
    os._exit(0)  # skip asyncio's teardown of the pump tasks: nothing is left to flush


@dataclass
class Proxy:
    proc: subprocess.Popen
    port: int
    stats_path: Path

    def stats(self) -> dict[str, int]:
        try:
            return json.loads(self.stats_path.read_text())
        except (OSError, ValueError):
            return {}


def start_proxy(cl: Cleanup, root: Path, name: str, target_port: int, rate: float) -> Proxy:
    stats = root / f"proxy-{name}.json"
    proc = cl.popen([sys.executable, str(Path(__file__).resolve()), "_proxy", str(target_port), str(rate), str(stats)],
                    stdout=subprocess.PIPE, text=True)
    return Proxy(proc, int(proc.stdout.readline()), stats)


def proxied_addr(holder: NodeProc, proxy: Proxy) -> str:
    return f"/ip4/127.0.0.1/tcp/{proxy.port}/p2p/{holder.peer_id}"


def tcp_port(maddr: str) -> int:
    parts = maddr.strip("/").split("/")
    return int(parts[parts.index("tcp") + 1])


def bench_rate_limited(cl: Cleanup, work: Path, size: int, rate: float) -> dict[str, Any]:
    root = cl.tempdir("shoal-rate-", parent=str(work))
    data = root / "rate.bin"
    write_pseudorandom(data, size, seed=7)
    log(f"rate: two holders H1, H2 with the same {human_bytes(size)} object, {rate / 1e6:g} MB/s each")
    swarm = node_swarm(cl, root)
    h1 = start_node(swarm, "H1")
    h2 = start_node(swarm, "H2")
    cid = put(h1, data)
    if put(h2, data) != cid:
        raise RuntimeError("the two holders computed different CIDs for the same bytes")
    cases: dict[str, Any] = {}
    for label, holders in (("one_holder", [h1]), ("two_holders", [h1, h2])):
        proxies = [start_proxy(cl, root, f"{label}-{h.name}", tcp_port(h.addr), rate) for h in holders]
        c = start_node(swarm, f"C-{label}", [proxied_addr(h, p) for h, p in zip(holders, proxies)])
        wait_connected(swarm, c, [h.peer_id for h in holders])
        out = root / f"out-{label}.bin"
        log(f"rate: timing get on C with {len(holders)} throttled holder(s)")
        run = timed_get(c, cid, out, holders + [c])
        if out.stat().st_size != size or sha256_file(out) != sha256_file(data):
            raise RuntimeError(f"{label}: get produced different bytes")
        time.sleep(0.7)  # let the proxies write their final counts
        via = {h.name: p.stats().get("from_holder", 0) for h, p in zip(holders, proxies)}
        cases[label] = {
            "holders": len(holders),
            "get_seconds": round(run["seconds"], 3),
            "throughput_MBps": round(mb_per_s(size, run["seconds"]), 1),
            "bytes_from_each_holder_via_proxy": via,
            "all_bytes_through_proxies": sum(via.values()) >= size,
        }
        out.unlink()
        c.stop(STOP_S)  # C now holds the object: it must not serve the next case
        for p in proxies:
            cl.stop(p.proc)
    one, two = cases["one_holder"]["get_seconds"], cases["two_holders"]["get_seconds"]
    return {"bytes": size, "rate_limit_bytes_per_s_per_holder": rate,
            "limit_applied_by": "a throttling TCP proxy process in front of each holder (bench/transfer.py "
                                "_proxy), pacing each direction to the rate; the fetcher dials the proxy with "
                                "the holder's /p2p/ id, so Noise runs end to end through it",
            **cases, "speedup_two_vs_one": round(one / two, 2), "two_beat_one": two < one}


# =====================================================================================
# 5. what bounds Shoal here: storage and crypto probes (in this process)
# =====================================================================================


def storage_probe(work: Path, blocks: int = 256) -> dict[str, Any]:
    """FlatfsBlockstore.put of 1 MiB blocks (hash check + write + fsync), serial vs 4 threads.

    The serial number is the ceiling of a fetch loop that stores one block at
    a time; the threaded one shows what overlapping the fsyncs buys on this disk.
    """
    import random
    import shutil
    from concurrent.futures import ThreadPoolExecutor

    sys.path.insert(0, str(PROJECT_ROOT))
    from shoal.store.ipld.cid import make_cid
    from shoal.store.persist.flatfs import FlatfsBlockstore

    rng = random.Random(3)
    data = [rng.randbytes(MIB) for _ in range(blocks)]
    cids = [make_cid("raw", b) for b in data]
    out: dict[str, Any] = {"blocks": blocks, "block_bytes": MIB}
    for sync in (True, False):
        for threads in (1, 4):
            root = Path(work) / f"probe-{sync}-{threads}"
            bs = FlatfsBlockstore(root, sync=sync)
            t0 = time.perf_counter()
            if threads == 1:
                for c, b in zip(cids, data):
                    bs.put(c, b)
            else:
                with ThreadPoolExecutor(threads) as ex:
                    list(ex.map(bs.put, cids, data))
            out[f"put_MBps_sync={sync}_threads={threads}"] = round(mb_per_s(blocks * MIB, time.perf_counter() - t0), 1)
            shutil.rmtree(root, ignore_errors=True)
    # What one pass of bytes into the page cache costs here (a get writes every
    # byte twice on the fetching node: its blockstore and OUT). On a VM whose
    # guest memory is backed lazily, pages never used before cost far more
    # than recycled ones, so this varies with what ran before.
    path = Path(work) / "probe-pagecache.bin"
    c0 = time.process_time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for b in data:
            os.write(fd, b)
    finally:
        os.close(fd)
    out["pagecache_write_cpu_seconds_per_GiB"] = round((time.process_time() - c0) * GIB / (blocks * MIB), 2)
    path.unlink(missing_ok=True)
    # The durable write a fetch cannot skip, as Shoal does it (O_DIRECT, then fsync).
    from shoal.store.persist.direct_io import write_file_bytes

    path = Path(work) / "probe-direct.bin"
    joined = b"".join(data)  # (allocated before the clock starts)
    c0 = time.process_time()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        write_file_bytes(fd, joined)
        os.fsync(fd)
    finally:
        os.close(fd)
    out["direct_write_cpu_seconds_per_GiB"] = round((time.process_time() - c0) * GIB / (blocks * MIB), 2)
    path.unlink(missing_ok=True)
    return out


def crypto_probe(cores: int) -> dict[str, Any]:
    """Single-core SHA-256 and ChaCha20-Poly1305 (64 KiB Noise frames) rates, and the bound they set.

    Per GiB moved, DESIGN.md's rules cost at least: SHA-256 on the sender
    (verify on read) and on the receiver (verify on receive), one AEAD seal
    and one open. Spread perfectly over all cores of one machine running
    both nodes, that bounds loopback throughput from above.
    """
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    buf = os.urandom(MIB)
    n = 256
    t0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        hashlib.sha256(buf).digest()
    sha = n * MIB / (time.process_time() - t0)  # CPU-time rate: what an idle core delivers
    sha_wall = n * MIB / (time.perf_counter() - w0)
    aead = ChaCha20Poly1305(os.urandom(32))
    nonce = bytes(12)
    frame = 65535 - 16
    t0 = time.process_time()
    for _ in range(n // 2):
        for i in range(0, MIB, frame):
            aead.encrypt(nonce, buf[i : i + frame], b"")
    enc = (n // 2) * MIB / (time.process_time() - t0)
    cpu_per_gib = 2 * GIB / sha + 2 * GIB / enc  # decrypt costs about what encrypt does
    return {"sha256_MBps_one_core": round(sha / 1e6), "sha256_MBps_wall_clock_now": round(sha_wall / 1e6),
            "chacha20poly1305_MBps_one_core": round(enc / 1e6),
            "mandatory_crypto_cpu_seconds_per_GiB_both_nodes": round(cpu_per_gib, 2),
            "cores": cores,
            "throughput_bound_MBps": round(GIB / (cpu_per_gib / cores) / 1e6)}


# =====================================================================================
# report
# =====================================================================================


def _full_floor(doc: dict[str, Any]) -> dict[str, Any] | None:
    """The least CPU per GiB any implementation of DESIGN.md's rules needs here, and the bound it sets."""
    cp, sp, t, l, s = (doc.get("crypto_probe"), doc.get("storage_probe"), doc.get("raw_tcp"), doc.get("libp2p", {}),
                       doc.get("shoal", {}))
    if not cp or not sp or not t or "direct_write_cpu_seconds_per_GiB" not in sp:
        return None
    socket_cpu = t["sender_cpu_seconds_per_GiB"] + t["receiver_cpu_seconds_per_GiB"]
    cpu = cp["mandatory_crypto_cpu_seconds_per_GiB_both_nodes"] + socket_cpu + sp["direct_write_cpu_seconds_per_GiB"]
    return {"socket_cpu": round(socket_cpu, 2), "write_cpu": sp["direct_write_cpu_seconds_per_GiB"],
            "cpu": round(cpu, 2), "bound_MBps": round(GIB / (cpu / cp["cores"]) / 1e6),
            "quarter_tcp_MBps": round(0.25 * t["throughput_MBps"]),
            "five_libp2p_MBps": round(5 * l["throughput_MBps"]) if l.get("ok") and l.get("throughput_MBps") else None,
            "shoal_cpu": round(s.get("sender_A", {}).get("cpu_seconds_per_GiB", 0)
                               + s.get("receiver_B", {}).get("cpu_seconds_per_GiB", 0), 2)}


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 2)


def build_report(doc: dict[str, Any]) -> tuple[str, str]:
    """(terminal table, RESULTS.md section)."""
    size = doc["bytes"]
    s, t, tf, l, r = doc["shoal"], doc["raw_tcp"], doc.get("raw_tcp_to_file"), doc["libp2p"], doc.get("rate_limited")
    rows = [["Shoal get (Noise, verify, store, export)", s["get_seconds"], s["throughput_MBps"],
             f"A {s['sender_A']['cpu_seconds_per_GiB']} / B {s['receiver_B']['cpu_seconds_per_GiB']}",
             f"A {s['sender_A']['peak_rss_MiB']} / B {s['receiver_B']['peak_rss_MiB']}"],
            ["raw TCP, receiver discards", t["seconds"], t["throughput_MBps"],
             f"send {t['sender_cpu_seconds_per_GiB']} / recv {t['receiver_cpu_seconds_per_GiB']}", ""]]
    if tf:
        rows.append(["raw TCP, receiver writes a file", tf["seconds"], tf["throughput_MBps"],
                     f"send {tf['sender_cpu_seconds_per_GiB']} / recv {tf['receiver_cpu_seconds_per_GiB']}", ""])
    if l.get("ok"):
        rows.append([f"py-libp2p {l['version']} (TCP + Noise + yamux, one stream)", l["seconds"], l["throughput_MBps"],
                     f"send {l['sender_cpu_seconds_per_GiB']} / recv {l['receiver_cpu_seconds_per_GiB']}",
                     f"send {l.get('sender_peak_rss_MiB')} / recv {l.get('receiver_peak_rss_MiB')}"])
    else:
        rows.append([f"py-libp2p: FAILED ({(l.get('error') or '')[:60]}...)", "-", "-", "-", "-"])
    headers = ["path", "seconds", "MB/s", "CPU s/GiB", "peak RSS MiB"]
    r_tcp, r_lp = doc["ratios"]["shoal_vs_raw_tcp"], doc["ratios"]["shoal_vs_libp2p"]
    lines = [format_table(headers, rows), ""]
    lines.append(f"Shoal / raw TCP   = {r_tcp}  (target >= {TARGETS['shoal_vs_raw_tcp_min']}) "
                 f"{'PASS' if doc['targets_met']['shoal_vs_raw_tcp'] else 'MISS'}")
    lines.append(f"Shoal / py-libp2p = {r_lp}  (target >= {TARGETS['shoal_vs_libp2p_min']}) "
                 f"{'PASS' if doc['targets_met']['shoal_vs_libp2p'] else ('MISS' if r_lp else 'n/a')}")
    if r:
        lines.append(f"rate-limited ({r['rate_limit_bytes_per_s_per_holder'] / 1e6:g} MB/s per holder, "
                     f"{human_bytes(r['bytes'])}): one holder {r['one_holder']['get_seconds']} s, "
                     f"two holders {r['two_holders']['get_seconds']} s, speedup {r['speedup_two_vs_one']}x "
                     f"{'PASS' if r['two_beat_one'] else 'MISS'}")
    term = "\n".join(lines)

    md: list[str] = []
    md.append(f"Written by `bench/transfer.py` (size {human_bytes(size)}, loopback, all rows from the same run). "
              f"Machine: {machine_line(doc['machine'])}.")
    lb, la = doc.get("load_before", {}), doc.get("load_after", {})
    busy = max(lb.get("cpu_busy_fraction_while_idle", 0), la.get("cpu_busy_fraction_while_idle", 0))
    if lb:
        md.append("")
        md.append(f"Background load: CPUs {lb.get('cpu_busy_fraction_while_idle', 0) * 100:.0f} % busy with other "
                  f"work before the run, {la.get('cpu_busy_fraction_while_idle', 0) * 100:.0f} % after (load "
                  f"average {lb.get('loadavg_1min')} / {la.get('loadavg_1min')})."
                  + (" **This run shared the machine with other work: absolute numbers are low and noisy; the "
                     "ratios (all paths in the same run) are less affected. Rerun on an idle machine.**"
                     if busy > 0.2 else ""))
    md.append("")
    md.append(markdown_table(headers, rows))
    md.append("")
    md.append("MB/s are decimal (10^6 bytes/s). The Shoal time is the whole `shoal --repo B get CID -o OUT` "
              f"command (interpreter start ~{s['cli_call_overhead_seconds']} s, fetch of every block over "
              "Noise, SHA-256 check, fsync'd store, and the export to OUT, which runs while the fetch goes on, "
              "taking each block from the fetch right after its hash check (p2p/exchange/handoff.py; in this run "
              f"{s.get('get_stats', {}).get('export_handed_off', '?')} blocks handed over, "
              f"{s.get('get_stats', {}).get('export_store_reads', '?')} read back from the store), then fsyncs "
              "OUT; block files and OUT are written with O_DIRECT, store/persist/direct_io.py); "
              f"without the CLI start it is {s['throughput_MBps_excluding_cli_start']} MB/s. CPU s/GiB of the "
              "Shoal nodes are utime+stime of each node process over the get (/proc/PID/stat); peak RSS is VmHWM over the get (reset via /proc/PID/clear_refs just before it). "
              "The baselines only move bytes (no hashing, no storing), so the comparison favours them.")
    bd = s.get("breakdown")
    if bd:
        md.append("")
        md.append(f"Breakdown (a fresh node F, same holder A): network fetch alone (`POST /v1/fetch` on the control "
                  f"API: request, Noise, SHA-256 check, store with fsync) {bd['fetch_only_seconds']} s = "
                  f"{bd['fetch_only_MBps']} MB/s, CPU s/GiB A {bd['fetch_only_cpu_seconds_per_GiB']['sender_A']} / "
                  f"F {bd['fetch_only_cpu_seconds_per_GiB']['receiver_F']}; then `shoal get` with every block "
                  f"already local (CLI start + export with fsync) "
                  f"{bd['local_get_seconds (CLI + export of local blocks to OUT, fsync)']} s.")
    md.append("")
    md.append("| target | measured | result |")
    md.append("|---|---|---|")
    md.append(f"| Shoal >= 25 % of raw TCP | {r_tcp if r_tcp is None else f'{r_tcp * 100:.0f} %'} | "
              f"{'met' if doc['targets_met']['shoal_vs_raw_tcp'] else 'NOT met'} |")
    lp_txt = f"{r_lp}x" if r_lp else "not measured"
    md.append(f"| Shoal >= 5x py-libp2p | {lp_txt} | "
              f"{'met' if doc['targets_met']['shoal_vs_libp2p'] else ('NOT met' if r_lp else 'unknown')} |")
    if r:
        md.append(f"| two holders beat one, each rate-limited | {r['speedup_two_vs_one']}x faster | "
                  f"{'met' if r['two_beat_one'] else 'NOT met'} |")
    if bd and t.get("throughput_MBps"):
        fo = bd["fetch_only_MBps"]
        lp_part = f", {fo / l['throughput_MBps']:.2f}x py-libp2p" if l.get("ok") and l.get("throughput_MBps") else ""
        md.append("")
        md.append(f"For reference, the network fetch alone (no export; breakdown above) ran at {fo} MB/s = "
                  f"{fo / t['throughput_MBps'] * 100:.0f} % of raw TCP{lp_part}.")
    md.append("")
    if not l.get("ok"):
        md.append(f"py-libp2p could not be measured: {l.get('error')}")
        md.append("")
    else:
        md.append(f"py-libp2p: {l.get('stack')}; one stream, the same bytes, two processes "
                  "(bench/libp2p_baseline.py, package pinned in bench/requirements-bench.txt, separate venv).")
        md.append("")
    if r:
        md.append(f"Rate-limited holders: {human_bytes(r['bytes'])} object on holders H1 and H2, each limited to "
                  f"{r['rate_limit_bytes_per_s_per_holder'] / 1e6:g} MB/s per direction by {r['limit_applied_by']}. "
                  f"One holder: {r['one_holder']['get_seconds']} s ({r['one_holder']['throughput_MBps']} MB/s); "
                  f"two holders: {r['two_holders']['get_seconds']} s ({r['two_holders']['throughput_MBps']} MB/s); "
                  f"bytes per holder through its proxy: {r['two_holders']['bytes_from_each_holder_via_proxy']}.")
        md.append("")
    sp, cp = doc.get("storage_probe"), doc.get("crypto_probe")
    if sp:
        md.append(f"What bounds Shoal here (probes in the same run): `FlatfsBlockstore.put` of 1 MiB blocks "
                  f"(hash check + write + fsync) runs at {sp['put_MBps_sync=True_threads=1']} MB/s one at a time, "
                  f"{sp['put_MBps_sync=True_threads=4']} MB/s with 4 threads, and "
                  f"{sp['put_MBps_sync=False_threads=1']} / {sp['put_MBps_sync=False_threads=4']} MB/s without fsync "
                  f"(1 / 4 threads); the fetch verifies and stores up to {_store_concurrency()} blocks at once "
                  "(p2p/exchange/fetch.py STORE_CONCURRENCY), so the threaded numbers apply."
                  + (f" Writing into new page-cache pages (new file, no fsync) cost "
                     f"{sp['pagecache_write_cpu_seconds_per_GiB']} CPU s/GiB in this run (the raw TCP row "
                     "that writes a file pays it too); Shoal writes blocks and OUT with O_DIRECT instead, but the "
                     "sender's reads of blocks that are not cached still fill new pages."
                     if "pagecache_write_cpu_seconds_per_GiB" in sp else ""))
    if cp:
        md.append(f"Crypto floor: SHA-256 {cp['sha256_MBps_one_core']} MB/s and ChaCha20-Poly1305 "
                  f"{cp['chacha20poly1305_MBps_one_core']} MB/s per core; verify-on-read + verify-on-receive + "
                  f"seal + open cost {cp['mandatory_crypto_cpu_seconds_per_GiB_both_nodes']} CPU s/GiB, so with "
                  f"both nodes on these {cp['cores']} cores no implementation of DESIGN.md's rules can exceed "
                  f"~{cp['throughput_bound_MBps']} MB/s here (5x py-libp2p would need "
                  f"{round(5 * l['throughput_MBps']) if l.get('ok') else '?'} MB/s).")
        floor = _full_floor(doc)
        if floor:
            md.append(f"Adding what moving and keeping the bytes costs at least, measured in this run: the raw TCP "
                      f"copy's own CPU (send + receive, {floor['socket_cpu']} s/GiB) and the durable direct write "
                      f"of the blocks ({floor['write_cpu']} s/GiB), the floor is {floor['cpu']} CPU s/GiB for both "
                      f"nodes, so nothing following DESIGN.md's rules can exceed ~{floor['bound_MBps']} MB/s on "
                      f"these {cp['cores']} cores; 25 % of raw TCP is {floor['quarter_tcp_MBps']} MB/s and 5x "
                      f"py-libp2p {floor['five_libp2p_MBps'] or '?'} MB/s. Shoal itself spends "
                      f"{floor['shoal_cpu']} CPU s/GiB (both nodes).")
    if sp or cp:
        md.append("")
    prof = s.get("profile")
    if prof:
        md.append(f"Profile (py-spy, a second get while sampling; {prof.get('get_seconds_while_profiled')} s):")
        md.append("")
        for side in ("sender_A", "receiver_C"):
            p = prof.get(side) or {}
            top = ", ".join(f"{f} {pct} %" for f, pct in (p.get("self") or [])[:8])
            md.append(f"- {side} self time: {top or p.get('error', 'no samples')}")
        md.append("")
    md.append("Reproduce: `.venv/bin/python bench/transfer.py` (`--size 64M` for a quick run, `--profile` for py-spy).")
    return term, "\n".join(md)


def _store_concurrency() -> Any:
    if str(PROJECT_ROOT) not in sys.path:
        sys.path.insert(0, str(PROJECT_ROOT))
    try:
        from shoal.p2p.exchange.fetch import STORE_CONCURRENCY
        return STORE_CONCURRENCY
    except Exception:  # pragma: no cover - bench run without the project on sys.path
        return "several"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "_tcp_recv":
        tcp_receiver(argv[1])
        return 0
    if argv and argv[0] == "_tcp_send":
        tcp_sender(int(argv[1]), argv[2])
        return 0
    if argv and argv[0] == "_proxy":
        asyncio.run(_proxy_main(int(argv[1]), float(argv[2]), argv[3]))
        return 0

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="bytes to move (default 1G; e.g. 64M)")
    ap.add_argument("--rate-size", default="64M", help="object size for the rate-limited test (default 64M)")
    ap.add_argument("--rate", type=float, default=20e6, help="bytes/s per holder in the rate-limited test (default 20e6)")
    ap.add_argument("--skip-libp2p", action="store_true")
    ap.add_argument("--skip-rate", action="store_true")
    ap.add_argument("--profile", action="store_true", help="also run a py-spy-profiled get and summarize hot spots")
    ap.add_argument("--workdir", default=None, help="where temp files go (default: system temp dir)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the machine's CPUs to be under 25%% busy with other work")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: rebuild the RESULTS.md section from results/transfer.json")
    ap.add_argument("--no-write", action="store_true", help="do not write results/transfer.json or RESULTS.md")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    rate_size = parse_size(args.rate_size)
    if args.report_only:
        term, md = build_report(json.loads(RESULTS_JSON.read_text()))
        print(term)
        update_results_section("transfer", md)
        return 0

    doc: dict[str, Any] = {"benchmark": "transfer", "bytes": size, "machine": machine_info()}
    if args.wait_quiet > 0:
        deadline = time.monotonic() + args.wait_quiet
        while (load := system_load(3.0))["cpu_busy_fraction_while_idle"] > 0.25 and time.monotonic() < deadline:
            log(f"waiting for a quiet machine: {load}")
            time.sleep(7)
    doc["load_before"] = system_load()
    if doc["load_before"]["cpu_busy_fraction_while_idle"] > 0.2:
        log(f"WARNING: the machine is busy before we start ({doc['load_before']}); numbers will be contended")
    with Cleanup() as cl:
        work = cl.tempdir("shoal-bench-transfer-", parent=args.workdir)
        data = work / "data.bin"
        log(f"writing {human_bytes(size)} of pseudo-random bytes")
        write_pseudorandom(data, size)
        doc["shoal"] = bench_shoal(cl, work, data, size, args.profile)
        log("raw TCP")
        doc["raw_tcp"] = bench_raw_tcp(cl, work, data, size, to_file=False)
        doc["raw_tcp_to_file"] = bench_raw_tcp(cl, work, data, size, to_file=True)
        if args.skip_libp2p:
            doc["libp2p"] = {"ok": False, "error": "skipped (--skip-libp2p)"}
        else:
            log("py-libp2p")
            doc["libp2p"] = bench_libp2p(cl, work, data, size)
        data.unlink()
        if not args.skip_rate:
            doc["rate_limited"] = bench_rate_limited(cl, work, rate_size, args.rate)
        log("probes: blockstore put (serial vs threads, fsync on/off) and crypto rates")
        doc["storage_probe"] = storage_probe(work)
        doc["crypto_probe"] = crypto_probe(os.cpu_count() or 1)

    doc["load_after"] = system_load()
    s_mbps = doc["shoal"]["throughput_MBps"]
    lp = doc["libp2p"].get("throughput_MBps") if doc["libp2p"].get("ok") else None
    doc["ratios"] = {"shoal_vs_raw_tcp": ratio(s_mbps, doc["raw_tcp"]["throughput_MBps"]),
                     "shoal_vs_raw_tcp_to_file": ratio(s_mbps, doc["raw_tcp_to_file"]["throughput_MBps"]),
                     "shoal_vs_libp2p": ratio(s_mbps, lp)}
    doc["targets"] = TARGETS
    doc["targets_met"] = {
        "shoal_vs_raw_tcp": (doc["ratios"]["shoal_vs_raw_tcp"] or 0) >= TARGETS["shoal_vs_raw_tcp_min"],
        "shoal_vs_libp2p": (doc["ratios"]["shoal_vs_libp2p"] or 0) >= TARGETS["shoal_vs_libp2p_min"],
        "two_holders_beat_one": bool(doc.get("rate_limited", {}).get("two_beat_one")),
    }
    doc["floor"] = _full_floor(doc)
    term, md = build_report(doc)
    print(term)
    if not args.no_write:
        write_json(RESULTS_JSON, doc)
        update_results_section("transfer", md)
        log(f"wrote {RESULTS_JSON.relative_to(PROJECT_ROOT)} and the transfer section of bench/RESULTS.md")
    else:
        print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
