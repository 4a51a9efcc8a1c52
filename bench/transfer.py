"""Block transfer over loopback: Shoal's get by holders x lanes, against raw TCP and py-libp2p, same run.

Measured (default 1 GiB of incompressible bytes; --size to change):

1. Shoal rows (`--rows 1x1,2x2,4x4`: HOLDERSxLANES): N holder nodes hold the
   same object (put on each from the same bytes; the CIDs must match), every
   node started with `--lanes M` (if this build has the option; `--lanes 1`
   is today's in-process data plane), and a fresh fetching node B
   bootstrapped to the N holders runs the timed `shoal --repo B get CID -o
   OUT` end to end (CLI start, fetch, hash check of every block, durable
   store, export to OUT). CPU: utime+stime of EVERY process of both sides,
   each node's main process and everything it started (its lanes), found in
   /proc by parent chain and session and sampled every 0.1 s during the get,
   so a lane that dies or is started mid-way is counted (bench/transfer_rows.py
   TreeCpu). Reported per row: MB/s, CPU s/GiB of holders' and fetcher's main
   processes and lanes, both nodes' total against the floor, and the share of
   the fetching node's main process (the control plane). The output is
   compared with the input after every get. `--repeat K` runs the rows K
   times interleaved (ABBA order) and reports medians and paired ratios
   (each row over the first row of the same round).
2. Raw TCP: a Python sender (file -> socket, 1 MiB buffers, 4 MiB socket
   buffers) and receiver in two processes, receiver discarding the bytes
   (the loopback ceiling; once per round) and, once, writing them to a file.
3. py-libp2p (PyPI `libp2p`, pinned in requirements-bench.txt, installed
   into bench/.venv-libp2p): two hosts in two processes, TCP + Noise +
   yamux, one stream, the same bytes (bench/libp2p_baseline.py).
4. Two holders vs one, each rate-limited: every holder is reached only
   through its own throttling TCP proxy (`_proxy` below, one process per
   holder, a byte-rate limit per direction). The fetching node dials the
   proxy's address with the holder's /p2p/ id, so the Noise handshake passes
   through unchanged and Shoal is not modified. The proxies count the bytes
   they forward, so the run proves the data really went through them.
5. Probes: the CPU floor (SHA-256 on read and on receipt, ChaCha20-Poly1305
   seal and open, the raw socket copies, the durable write) per GiB.

`--model`: the object is a directory of 8 safetensors shards (real headers,
so the tensor-aware chunker cuts them) totalling --size (default 2 GiB),
fetched with `shoal get` the same way; raw TCP sends the same files.

`--lane-probe` also times the lanes' data plane alone (every block through a
fresh node's lanes with `POST /v1/lanes/fetch`, no export) at the last row
with lanes > 1. `--taskset CPUS` pins the whole run (this process and every child) to those
CPUs, e.g. to show scaling per core. Writes bench/results/transfer.json and
the "## transfer" section of bench/RESULTS.md (with --model:
results/transfer_model.json and "## transfer: model directory") unless
--no-write. Every child process and temp dir is removed at the end, also on
an error or Ctrl-C.

    .venv/bin/python bench/transfer.py                 # the full run, 1 GiB
    .venv/bin/python bench/transfer.py --size 64M --no-write   # quick check
    .venv/bin/python bench/transfer.py --rows 1x1,2x2,4x4 --repeat 3 --skip-libp2p --skip-rate
    .venv/bin/python bench/transfer.py --model --rows 1x1,2x2
    .venv/bin/python bench/transfer.py --profile       # + py-spy of main processes and a lane
    .venv/bin/python bench/transfer.py --taskset 0 --rows 1x1,2x2   # everything on one core
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
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
    wait_quiet,
    write_json,
    write_pseudorandom,
)
from transfer_rows import (  # noqa: E402
    TARGET_CPU_VS_FLOOR,
    TARGET_GET_VS_RAW_TCP,
    TARGET_MAIN_CPU_PER_GIB,
    TARGET_SCALING,
    ProcStat,
    TreeCpu,
    cpu_ticks_per_second,
    median,
    paired_ratios,
    parse_cpu_list,
    parse_rows,
    parse_stat,
    row_label,
    row_targets,
    scaling_target,
    tree_bytes,
    write_model,
)

SHOAL_PY = PROJECT_ROOT / ".venv" / "bin" / "python"
LIBP2P_VENV = BENCH_DIR / ".venv-libp2p"
LIBP2P_PY = LIBP2P_VENV / "bin" / "python"
REQUIREMENTS = BENCH_DIR / "requirements-bench.txt"
RESULTS_JSON = BENCH_DIR / "results" / "transfer.json"
RESULTS_MODEL_JSON = BENCH_DIR / "results" / "transfer_model.json"
SECTION, SECTION_MODEL = "transfer", "transfer: model directory"
TCP_BUF = 1 * MIB
SOCK_BUF = 4 * MIB
SAMPLE_S = 0.1  # process-tree CPU sampling period during a get (a full /proc scan costs ~1 ms)
TICKS = cpu_ticks_per_second()

TARGETS = {
    "shoal_vs_libp2p_min": 5.0,
    "shoal_vs_raw_tcp_min": TARGET_GET_VS_RAW_TCP,
    "cpu_both_nodes_vs_floor_max": TARGET_CPU_VS_FLOOR,
    "fetcher_main_cpu_s_per_GiB_max": TARGET_MAIN_CPU_PER_GIB,
    "scaling_4x4_vs_1x1_min": TARGET_SCALING,
}


log = make_log("transfer")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def digest(path: Path) -> dict[str, str]:
    """sha256 of a file, or of every file of a directory by relative path: what a get must reproduce."""
    if path.is_file():
        return {"": sha256_file(path)}
    return {str(p.relative_to(path)): sha256_file(p) for p in sorted(path.rglob("*")) if p.is_file()}


def data_files(path: Path) -> list[Path]:
    """The files whose bytes the raw baselines send: the file, or a directory's files in order."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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


NODE_READY_S = 90.0  # a node with lanes waits for every lane to listen; the machine is shared
STOP_S = 15.0  # as Cleanup.stop


def lanes_supported() -> bool:
    """Whether this build's `shoal node start` has --lanes (issue 15); rows then run without it."""
    proc = subprocess.run([str(SHOAL_PY), "-m", "shoal.cli.main", "node", "start", "--help"],
                          capture_output=True, text=True, timeout=120, env=shoal_env(), cwd=PROJECT_ROOT)
    return "--lanes" in proc.stdout


def lane_args(lanes: int, supported: bool) -> list[str]:
    return ["--lanes", str(lanes)] if supported else []


def node_swarm(cl: Cleanup, root: Path, extra: list[str] = ()) -> LocalSwarm:
    """Nodes under `root`, started by the shared harness (shoal.cli.swarm, as for the demo and the
    tests); `cl` stops them on any exit, before it removes the temp dirs."""
    swarm = LocalSwarm(root, ["--log-level", "WARNING", *extra], python=str(SHOAL_PY), env=shoal_env(),
                       cwd=PROJECT_ROOT)
    cl.on_close(swarm.close)
    return swarm


def start_node(swarm: LocalSwarm, name: str, bootstrap: list[str] = (), extra: list[str] = ()) -> NodeProc:
    return swarm.add(name, bootstrap, extra, timeout=NODE_READY_S)


def wait_connected(swarm: LocalSwarm, node: NodeProc, peer_ids: list[str], timeout: float = 30) -> None:
    swarm.wait_connected(node, peer_ids, timeout)


def put(node: NodeProc, path: Path) -> str:
    return shoal(node.repo, "put", str(path), "--quiet").stdout.strip().splitlines()[-1]


# -- CPU of every process of a node ------------------------------------------------------------


def read_proc_table() -> list[ProcStat]:
    """Every process's /proc/PID/stat (this kernel has no /proc/PID/task/*/children: parents are
    found from the ppid field of the whole table)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    text = f.read()
            except OSError:
                continue  # exited between listdir and open
            out.append(parse_stat(int(name), text))
    return out


def ticks_since_boot() -> int:
    return int(float(Path("/proc/uptime").read_text().split()[0]) * TICKS)


class TreeSampler:
    """CPU of node process trees over a `with` block, sampled from a thread every SAMPLE_S."""

    def __init__(self, roots: dict[str, int], interval: float = SAMPLE_S) -> None:
        self.tree = TreeCpu(roots, ticks_since_boot())
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)

    def __enter__(self) -> "TreeSampler":
        self.tree.observe(read_proc_table())
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.tree.observe(read_proc_table())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.tree.observe(read_proc_table())

    def result(self) -> dict[str, dict[str, Any]]:
        return self.tree.result(TICKS)


def children_of(pid: int) -> list[int]:
    return sorted(p.pid for p in read_proc_table() if p.ppid == pid)


def node_lane_cpu(node: NodeProc) -> float | None:
    """The node's own account of its lanes' CPU, if /v1/node/status reports one: a cross-check of the
    sampled figure (the lanes report getrusage now and then, so it lags; a dict may carry the
    total over dead lanes too, a list of live lanes each its own `cpu_s`)."""
    try:
        status = node.call("GET", "/v1/node/status")
    except Exception:
        return None
    lanes = status.get("lanes") if isinstance(status, dict) else None
    if isinstance(lanes, dict):
        value = lanes.get("cpu_seconds")
        return float(value) if isinstance(value, (int, float)) else None
    if isinstance(lanes, list) and lanes and all(isinstance(x, dict) for x in lanes):
        values = [x.get("cpu_s", x.get("cpu_seconds")) for x in lanes]
        if all(isinstance(v, (int, float)) for v in values):
            return float(sum(values))
    return None


def timed_get(node: NodeProc, cid: str, out: Path, watch: list[NodeProc]) -> dict[str, Any]:
    """`shoal get` of `cid` into `out`, timed; CPU of every process of the `watch` nodes over it."""
    for n in watch:
        reset_peak_rss(n.pid)  # so VmHWM covers this get, not the put before it
    lane_cpu0 = {n.name: node_lane_cpu(n) for n in watch}
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    with TreeSampler({n.name: n.pid for n in watch}) as sampler:
        t0 = time.perf_counter()
        proc = shoal(node.repo, "get", cid, "-o", str(out), "--json")
        elapsed = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    trees = sampler.result()
    lane_cpu_node: dict[str, float] = {}
    for n in watch:
        after = node_lane_cpu(n)
        if after is not None and lane_cpu0[n.name] is not None:
            lane_cpu_node[n.name] = round(after - lane_cpu0[n.name], 3)
    try:
        stats = json.loads(proc.stdout)
    except ValueError:
        stats = {}
    return {"seconds": elapsed,
            "cpu": {name: t["main_cpu_seconds"] + t["children_cpu_seconds"] for name, t in trees.items()},
            "trees": trees,
            "lanes_cpu_by_node_accounting": lane_cpu_node,
            "cli_cpu_seconds": (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime),
            "peak_rss_MiB": {n.name: round(peak_rss(n.pid) / MIB, 1) for n in watch},
            "stats": stats}


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
    return shutil.which("py-spy")


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
# 1. Shoal rows: N holders x M lanes -> a fresh fetching node
# =====================================================================================


@dataclass
class HolderSet:
    """Holder repos H1..Hn, each holding the object (put from the same bytes), started per row."""

    swarm: LocalSwarm
    nodes: list[NodeProc]
    cid: str
    put_seconds: float


def prepare_holders(cl: Cleanup, work: Path, data: Path, n: int) -> HolderSet:
    root = cl.tempdir("shoal-rows-", parent=str(work))
    swarm = node_swarm(cl, root)
    nodes: list[NodeProc] = []
    cid, put_s = "", 0.0
    for i in range(n):
        node = swarm.node(f"H{i + 1}")  # init only: the put goes straight into the repo
        t0 = time.perf_counter()
        got = shoal(node.repo, "put", str(data), "--quiet").stdout.strip().splitlines()[-1]
        if i == 0:
            put_s = time.perf_counter() - t0
            log(f"shoal: put {human_bytes(tree_bytes(data) if data.is_dir() else data.stat().st_size)} "
                f"on H1 took {put_s:.1f} s (not timed in the get), cid {got}")
        elif got != cid:
            raise RuntimeError(f"holder {node.name} computed CID {got} for the same bytes, H1 {cid}")
        cid = got
        nodes.append(node)
    return HolderSet(swarm, nodes, cid, put_s)


def start_holders(holders: list[NodeProc], extra: list[str], swarm: LocalSwarm) -> None:
    """Start holders at once (each with `extra`, e.g. --lanes M), then wait until every one answers."""
    for h in holders:
        h.extra_args = swarm.extra_args + extra
        h.start(wait=False)
    for h in holders:
        h.wait_ready(NODE_READY_S)


def stop_nodes(nodes: list[NodeProc]) -> None:
    for n in nodes:
        n.signal_stop()
    for n in nodes:
        n.stop(STOP_S)


def run_row(hs: HolderSet, h: int, lanes: int, rep: int, size: int, expect: dict[str, str],
            lanes_ok: bool, measure_cli: bool = False) -> dict[str, Any]:
    """One timed get into a fresh node B from the first `h` holders, every node with `--lanes lanes`."""
    label = row_label(h, lanes)
    holders = hs.nodes[:h]
    extra = lane_args(lanes, lanes_ok)
    start_holders(holders, extra, hs.swarm)
    b: NodeProc | None = None
    out = hs.swarm.root / f"out-{label}-{rep}"
    try:
        b = start_node(hs.swarm, f"B{label}-{rep}", [x.addr for x in holders], extra)
        wait_connected(hs.swarm, b, [x.peer_id for x in holders])
        overhead = cli_overhead(b) if measure_cli else None
        log(f"row {label} (round {rep + 1}): timing `shoal get` from {h} holder(s)")
        run = timed_get(b, hs.cid, out, holders + [b])
        if digest(out) != expect:
            raise RuntimeError(f"row {label}: shoal get produced different bytes")
        trees = run["trees"]
        gib = size / GIB
        fetcher = trees[b.name]
        cpu = {"holders_main": sum(trees[x.name]["main_cpu_seconds"] for x in holders),
               "holders_lanes": sum(trees[x.name]["children_cpu_seconds"] for x in holders),
               "fetcher_main": fetcher["main_cpu_seconds"],
               "fetcher_lanes": fetcher["children_cpu_seconds"]}
        both = sum(cpu.values())
        fetcher_cpu = cpu["fetcher_main"] + cpu["fetcher_lanes"]
        lanes_seen = {name: sum(1 for p in t["processes"] if not p["gone_by_end"]) for name, t in trees.items()}
        mbps = mb_per_s(size, run["seconds"])
        log(f"row {label}: {run['seconds']:.2f} s = {mbps:.1f} MB/s, both nodes {both / gib:.2f} CPU s/GiB, "
            f"fetcher main {cpu['fetcher_main'] / gib:.2f}")
        return {
            "row": label, "holders": h, "lanes": lanes, "round": rep, "bytes": size,
            "seconds": round(run["seconds"], 3), "MBps": round(mbps, 1),
            "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
            "cpu_s_per_GiB": {k: round(v / gib, 3) for k, v in cpu.items()},
            "both_nodes_cpu_s_per_GiB": round(both / gib, 3),
            "cli_cpu_seconds": round(run["cli_cpu_seconds"], 3),
            "fetcher_main_share_of_fetcher": round(cpu["fetcher_main"] / fetcher_cpu, 3) if fetcher_cpu else None,
            "fetcher_main_share_of_both": round(cpu["fetcher_main"] / both, 3) if both else None,
            "child_processes_alive_at_end": lanes_seen,
            "lanes_cpu_by_node_accounting": run["lanes_cpu_by_node_accounting"],
            "processes": trees,
            "peak_rss_MiB": run["peak_rss_MiB"],
            "get_stats": run["stats"],
            **({"cli_call_overhead_seconds": overhead} if overhead is not None else {}),
        }
    finally:
        remove(out)
        if b is not None:
            b.stop(STOP_S)
            remove(b.repo)  # a fetched copy per run would fill the disk
        stop_nodes(holders)


def bench_rows(cl: Cleanup, work: Path, data: Path, size: int, rows: list[tuple[int, int]], repeat: int,
               lanes_ok: bool) -> dict[str, Any]:
    """Every row `repeat` times, interleaved: rounds alternate the row order (ABBA) so a drift in the
    machine's load hits every row alike, and each round has its own raw TCP run to compare with."""
    expect = digest(data)
    hs = prepare_holders(cl, work, data, max(h for h, _ in rows))
    runs: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    for rep in range(repeat):
        raw.append(bench_raw_tcp(cl, work, data, size, to_file=False))
        for h, lanes in (rows if rep % 2 == 0 else list(reversed(rows))):
            runs.append(run_row(hs, h, lanes, rep, size, expect, lanes_ok, measure_cli=not runs))
    overhead = next((r.pop("cli_call_overhead_seconds") for r in runs if "cli_call_overhead_seconds" in r), None)
    return {"holders": hs, "runs": runs, "raw_tcp_rounds": raw, "cli_call_overhead_seconds": overhead}


def summarize_rows(rows: list[tuple[int, int]], runs: list[dict[str, Any]], raw_rounds: list[dict[str, Any]],
                   floor_cpu: float | None, lanes_ok: bool) -> dict[str, Any]:
    """Medians per row, paired ratios against the first row, and the targets."""
    labels = [row_label(*r) for r in rows]
    per_round: list[dict[str, float]] = []
    for rep in sorted({r["round"] for r in runs}):
        per_round.append({r["row"]: r["MBps"] for r in runs if r["round"] == rep})
    ratios = paired_ratios(per_round, labels[0])
    raw_by_round = {i: t["throughput_MBps"] for i, t in enumerate(raw_rounds)}
    raw_median = median(list(raw_by_round.values()))
    out: list[dict[str, Any]] = []
    for (h, lanes), label in zip(rows, labels):
        mine = [r for r in runs if r["row"] == label]
        cpu = {k: median([r["cpu_s_per_GiB"][k] for r in mine]) for k in mine[0]["cpu_s_per_GiB"]}
        both = median([r["both_nodes_cpu_s_per_GiB"] for r in mine]) or 0.0
        mbps = median([r["MBps"] for r in mine]) or 0.0
        vs_tcp = median([r["MBps"] / raw_by_round[r["round"]] for r in mine if raw_by_round.get(r["round"])])
        targets = row_targets(mbps, mbps / vs_tcp if vs_tcp else raw_median, both, floor_cpu,
                              cpu["fetcher_main"] or 0.0)
        out.append({
            "row": label, "holders": h, "lanes": lanes, "lanes_applied": lanes_ok or lanes == 1, "runs": len(mine),
            "seconds_median": median([r["seconds"] for r in mine]), "MBps_median": mbps,
            "MBps_all": [r["MBps"] for r in mine],
            "vs_raw_tcp_paired_median": None if vs_tcp is None else round(vs_tcp, 3),
            "cpu_s_per_GiB_median": cpu, "both_nodes_cpu_s_per_GiB_median": both,
            "x_floor": round(both / floor_cpu, 2) if floor_cpu else None,
            "fetcher_main_share_of_fetcher_median": median([r["fetcher_main_share_of_fetcher"] for r in mine]),
            "fetcher_main_share_of_both_median": median([r["fetcher_main_share_of_both"] for r in mine]),
            "cli_cpu_seconds_median": median([r["cli_cpu_seconds"] for r in mine]),
            "fetcher_child_processes": median([r["child_processes_alive_at_end"].get(f"B{label}-{r['round']}", 0)
                                               for r in mine]),
            "fetcher_lanes_cpu_s_per_GiB_by_node_median": median(
                [r["lanes_cpu_by_node_accounting"][f"B{label}-{r['round']}"] * GIB / r["bytes"] for r in mine
                 if f"B{label}-{r['round']}" in r["lanes_cpu_by_node_accounting"]]),
            "paired_ratio_vs_first_row": ratios.get(label, []),
            "paired_ratio_vs_first_row_median": median(ratios.get(label, [])),
            "targets": targets,
        })
    return {"rows": out, "raw_tcp_MBps_median": raw_median,
            "scaling": scaling_target(ratios, {r["row"]: r["MBps_median"] for r in out})}


def legacy_summary(hs: HolderSet, first: list[dict[str, Any]], overhead: float | None, size: int) -> dict[str, Any]:
    """The single "Shoal get" figures of earlier versions of this report, from the first row."""
    secs = median([r["seconds"] for r in first]) or 0.0
    mbps = mb_per_s(size, secs)
    holders = median([r["cpu_s_per_GiB"]["holders_main"] + r["cpu_s_per_GiB"]["holders_lanes"] for r in first])
    fetcher = median([r["cpu_s_per_GiB"]["fetcher_main"] + r["cpu_s_per_GiB"]["fetcher_lanes"] for r in first])
    return {
        "row": first[0]["row"], "cid": hs.cid, "bytes": size,
        "put_seconds_not_timed_in_get": round(hs.put_seconds, 3),
        "get_seconds": round(secs, 3), "throughput_MBps": round(mbps, 1),
        "throughput_MBps_excluding_cli_start": (round(mb_per_s(size, max(1e-9, secs - overhead)), 1)
                                                if overhead is not None else None),
        "cli_call_overhead_seconds": None if overhead is None else round(overhead, 3),
        "output_verified": True,
        "sender_A": {"cpu_seconds_per_GiB": round(holders or 0.0, 2)},
        "receiver_B": {"cpu_seconds_per_GiB": round(fetcher or 0.0, 2)},
        "get_stats": first[0]["get_stats"],
    }


def breakdown(hs: HolderSet, lanes: int, lanes_ok: bool, size: int) -> dict[str, Any]:
    """Into a fresh node F from H1: time the network fetch alone (API), then `shoal get` with every block local."""
    a = hs.nodes[0]
    extra = lane_args(lanes, lanes_ok)
    start_holders([a], extra, hs.swarm)
    f: NodeProc | None = None
    try:
        f = start_node(hs.swarm, "F", [a.addr], extra)
        wait_connected(hs.swarm, f, [a.peer_id])
        log(f"shoal: breakdown ({row_label(1, lanes)}): fetch only (POST /v1/fetch) into fresh node F")
        with TreeSampler({"A": a.pid, "F": f.pid}) as sampler:
            fetch = api_fetch(f, hs.cid)
        cpu = {k: v["main_cpu_seconds"] + v["children_cpu_seconds"] for k, v in sampler.result().items()}
        out = hs.swarm.root / "out-local"
        t0 = time.perf_counter()
        shoal(f.repo, "get", hs.cid, "-o", str(out))
        export_s = time.perf_counter() - t0
        remove(out)
    finally:
        if f is not None:
            f.stop(STOP_S)
            remove(f.repo)
        stop_nodes([a])
    return {"row": row_label(1, lanes),
            "fetch_only_seconds": round(fetch["seconds"], 3),
            "fetch_only_MBps": round(mb_per_s(size, fetch["seconds"]), 1),
            "fetch_only_cpu_seconds_per_GiB": {"sender_A": round(cpu["A"] * GIB / size, 2),
                                               "receiver_F": round(cpu["F"] * GIB / size, 2)},
            "local_get_seconds (CLI + export of local blocks to OUT, fsync)": round(export_s, 3)}


def dag_cids(repo: Path, root: str) -> list[str]:
    """Every block CID of the DAG under `root` in a stopped node's repo (read without the lock)."""
    from shoal.store.dag.exporter import iter_links
    from shoal.store.dag.walk import DagWalk, block_identity
    from shoal.store.ipld.cid import parse_cid
    from shoal.store.persist.repo import Repo

    out: list[str] = []
    with Repo.open(repo, lock=False) as r:
        walk = DagWalk([parse_cid(root)], key=block_identity)
        for cid in walk:
            out.append(str(cid))
            if cid.codec.name != "raw":
                walk.push(iter_links(cid, r.blockstore.get(cid)))
    return out


def lane_probe(hs: HolderSet, h: int, lanes: int, size: int, in_flight: int = 8) -> dict[str, Any]:
    """The lanes' data plane alone, before (and beside) the laned get: every block of the object
    fetched through a fresh node F's lanes from the holders' lanes with `POST /v1/lanes/fetch`
    (one block per request, `in_flight` at once, holders in turn), verified and stored durably by
    F's lanes; no export. F's main process pays an HTTP request per block here, which the laned
    get does not, so its main share is an upper bound; the lanes' CPU is the point."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    cids = dag_cids(hs.nodes[0].repo, hs.cid)
    holders = hs.nodes[:h]
    extra = lane_args(lanes, True)
    start_holders(holders, extra, hs.swarm)
    f: NodeProc | None = None
    try:
        f = start_node(hs.swarm, "F-lanes", [x.addr for x in holders], extra)
        wait_connected(hs.swarm, f, [x.peer_id for x in holders])
        client = httpx.Client(base_url=f.api_url, headers={"Authorization": f"Bearer {f.api_token}"},
                              timeout=httpx.Timeout(120, connect=10),
                              limits=httpx.Limits(max_connections=in_flight + 2))

        def fetch(i: int) -> dict[str, Any]:
            holder = holders[i % len(holders)].peer_id
            resp = client.post("/v1/lanes/fetch", json={"cid": cids[i], "holder": holder, "timeout": 60.0})
            resp.raise_for_status()
            return dict(resp.json())

        def warm(j: int) -> bool:
            try:
                return fetch(j).get("outcome") == "ok"
            except httpx.HTTPError:
                return False

        # Until F knows every holder's lanes (they are asked for once connected): a block from each.
        for j in range(len(holders)):
            wait_for(lambda: warm(j), 30, f"F to reach holder {j + 1}'s lanes", 0.2)
        log(f"lane probe ({row_label(h, lanes)}): {len(cids)} blocks through F's lanes, {in_flight} in flight")
        with TreeSampler({**{x.name: x.pid for x in holders}, "F": f.pid}) as sampler:
            t0 = time.perf_counter()
            with ThreadPoolExecutor(in_flight) as ex:
                results = list(ex.map(fetch, range(len(cids))))
            elapsed = time.perf_counter() - t0
        client.close()
        trees = sampler.result()
    finally:
        if f is not None:
            f.stop(STOP_S)
            remove(f.repo)
        stop_nodes(holders)
    outcomes = collections.Counter(r.get("outcome") for r in results)
    moved = sum(int(r.get("size") or 0) for r in results)
    gib = max(1, moved) / GIB
    per = lambda v: round(v / gib, 3)  # noqa: E731
    return {"row": row_label(h, lanes), "blocks": len(cids), "in_flight": in_flight, "outcomes": dict(outcomes),
            "bytes": moved, "seconds": round(elapsed, 3), "MBps": round(mb_per_s(moved, elapsed), 1),
            "cpu_s_per_GiB": {"holders_main": per(sum(trees[x.name]["main_cpu_seconds"] for x in holders)),
                              "holders_lanes": per(sum(trees[x.name]["children_cpu_seconds"] for x in holders)),
                              "fetcher_main": per(trees["F"]["main_cpu_seconds"]),
                              "fetcher_lanes": per(trees["F"]["children_cpu_seconds"])},
            "processes": trees}


def profile_get(cl: Cleanup, hs: HolderSet, h: int, lanes: int, lanes_ok: bool, size: int) -> dict[str, Any]:
    """A get (not the timed ones) into a fresh node C with py-spy recording the main process and the
    first lane of H1 and of C: what bounds the laned get."""
    spy = pyspy_bin()
    if spy is None:
        return {"error": "py-spy not found (pip install py-spy, or run once without --skip-libp2p: "
                         "bench/.venv-libp2p installs it)"}
    holders = hs.nodes[:h]
    extra = lane_args(lanes, lanes_ok)
    start_holders(holders, extra, hs.swarm)
    c: NodeProc | None = None
    out = hs.swarm.root / "out-profiled"
    report: dict[str, Any] = {"row": row_label(h, lanes)}
    try:
        c = start_node(hs.swarm, "C", [x.addr for x in holders], extra)
        wait_connected(hs.swarm, c, [x.peer_id for x in holders])
        targets = {"holder_H1_main": holders[0].pid, "fetcher_C_main": c.pid}
        for name, node in (("holder_H1_lane", holders[0]), ("fetcher_C_lane", c)):
            kids = children_of(node.pid)
            if kids:
                targets[name] = kids[0]
        recs = {}
        for name, pid in targets.items():
            outp = hs.swarm.root / f"pyspy-{name}.txt"
            recs[name] = (outp, cl.popen([spy, "record", "--format", "raw", "--rate", "100", "--threads",
                                          "-p", str(pid), "-o", str(outp)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(1.0)  # let py-spy attach
        log(f"shoal: profiled get into C ({row_label(h, lanes)}; py-spy on {', '.join(targets)})")
        run = timed_get(c, hs.cid, out, holders + [c])
        time.sleep(0.5)
        report["get_seconds_while_profiled"] = round(run["seconds"], 3)
        report["cpu_seconds"] = {k: round(v, 2) for k, v in run["cpu"].items()}
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
            report[name] = summary
    finally:
        remove(out)
        if c is not None:
            c.stop(STOP_S)
            remove(c.repo)
        stop_nodes(holders)
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


def tcp_sender(port: int, paths: list[str]) -> None:
    """Child: connect, send the files one after the other in 1 MiB pieces."""
    cpu0 = time.process_time()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCK_BUF)
    buf = bytearray(TCP_BUF)
    view = memoryview(buf)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                sock.sendall(view[:n])
    sock.shutdown(socket.SHUT_WR)
    sock.recv(1)
    sock.close()
    print(json.dumps({"cpu_seconds": time.process_time() - cpu0}), flush=True)


def bench_raw_tcp(cl: Cleanup, work: Path, data: Path, size: int, to_file: bool) -> dict[str, Any]:
    """`data`'s bytes (a file, or a directory's files in order) over one loopback TCP connection."""
    sink = str(work / "tcp-out.bin") if to_file else "-"
    me = [sys.executable, str(Path(__file__).resolve())]
    recv = cl.popen(me + ["_tcp_recv", sink], stdout=subprocess.PIPE, text=True)
    port = int(recv.stdout.readline())
    send = cl.popen(me + ["_tcp_send", str(port), *map(str, data_files(data))], stdout=subprocess.PIPE, text=True)
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
    out["blockfile_write_cpu_seconds_per_GiB"] = min(blockfile_write_cpu(work, data) for _ in range(3))
    return out


def blockfile_write_cpu(work: Path, data: list[bytes]) -> float:
    """CPU s/GiB of the durable write DESIGN.md's repo layout asks for, done the cheapest legal way.

    Every block is its own file under blocks/ (sharded), written as a temp
    file and renamed once durable. Here: O_DIRECT writes (no page-cache
    copy), one syncfs(2) per 64 temp files instead of an fsync each (the same
    durability before the renames; Shoal's store does likewise), then the
    renames. Against one big file this adds the per-file work: inode
    allocation, directory entries, the journal (0.2-0.5 CPU s/GiB here).
    """
    import shutil

    sys.path.insert(0, str(PROJECT_ROOT))
    from shoal.store.persist.direct_io import write_file_bytes
    from shoal.store.persist.group_sync import SYNCFS

    root = Path(work) / "probe-blockfiles"
    shards = [root / f"{i:02x}" for i in range(64)]
    for shard in shards:
        shard.mkdir(parents=True, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY)
    pending: list[tuple[Path, Path]] = []
    try:
        c0 = time.process_time()
        for i, block in enumerate(data):
            shard = shards[i % len(shards)]
            tmp, final = shard / f".{i}.tmp", shard / f"{i}.data"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_file_bytes(fd, block)
                if SYNCFS is None:
                    os.fsync(fd)
            finally:
                os.close(fd)
            pending.append((tmp, final))
            if len(pending) == 64 or i == len(data) - 1:
                if SYNCFS is not None:
                    SYNCFS(root_fd)
                for a, b in pending:
                    os.rename(a, b)
                pending = []
        if SYNCFS is not None:
            SYNCFS(root_fd)  # the renames
        cpu = time.process_time() - c0
    finally:
        os.close(root_fd)
        shutil.rmtree(root, ignore_errors=True)
    return round(cpu * GIB / (len(data) * MIB), 2)


def floor_write_cpu(sp: dict[str, Any]) -> float:
    """The store write the floor counts: block files (DESIGN.md's layout) where measured, else one big file."""
    return float(sp.get("blockfile_write_cpu_seconds_per_GiB", sp["direct_write_cpu_seconds_per_GiB"]))


def crypto_probe(cores: int) -> dict[str, Any]:
    """Single-core SHA-256 and Noise AEAD (64 KiB frames) rates, and the bound they set.

    Per GiB moved, DESIGN.md's rules cost at least: SHA-256 on the sender
    (verify on read) and on the receiver (verify on receive), one AEAD seal
    and one open. DESIGN.md allows ChaCha20-Poly1305 or AES-GCM; the floor
    prices the AEAD two Shoal nodes here negotiate (`aead_used`: AES-GCM on a
    CPU with AES instructions, shoal.p2p.secure.cipher_choice). Spread
    perfectly over all cores of one machine running both nodes, that bounds
    loopback throughput from above.
    """
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

    from shoal.p2p.secure.cipher_choice import NOISE_AESGCM_PROTOCOL, security_protocols

    buf = os.urandom(MIB)
    n = 256
    t0, w0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        hashlib.sha256(buf).digest()
    sha = n * MIB / (time.process_time() - t0)  # CPU-time rate: what an idle core delivers
    sha_wall = n * MIB / (time.perf_counter() - w0)
    nonce = bytes(12)
    frame = 65535 - 16
    rates: dict[str, float] = {}
    for name, aead in (("chacha20poly1305", ChaCha20Poly1305(os.urandom(32))), ("aes256gcm", AESGCM(os.urandom(32)))):
        t0 = time.process_time()
        for _ in range(n // 2):
            for i in range(0, MIB, frame):
                aead.encrypt(nonce, buf[i : i + frame], b"")
        rates[name] = (n // 2) * MIB / (time.process_time() - t0)
    used = "aes256gcm" if security_protocols()[0] == NOISE_AESGCM_PROTOCOL else "chacha20poly1305"
    cpu_per_gib = 2 * GIB / sha + 2 * GIB / rates[used]  # decrypt costs about what encrypt does
    return {"sha256_MBps_one_core": round(sha / 1e6), "sha256_MBps_wall_clock_now": round(sha_wall / 1e6),
            "chacha20poly1305_MBps_one_core": round(rates["chacha20poly1305"] / 1e6),
            "aes256gcm_MBps_one_core": round(rates["aes256gcm"] / 1e6),
            "aead_used": used,
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
    cpu = cp["mandatory_crypto_cpu_seconds_per_GiB_both_nodes"] + socket_cpu + floor_write_cpu(sp)
    return {"socket_cpu": round(socket_cpu, 2), "write_cpu": floor_write_cpu(sp),
            "write_is_block_files": "blockfile_write_cpu_seconds_per_GiB" in sp,
            "cpu": round(cpu, 2), "bound_MBps": round(GIB / (cpu / cp["cores"]) / 1e6),
            "quarter_tcp_MBps": round(0.25 * t["throughput_MBps"]),
            "five_libp2p_MBps": round(5 * l["throughput_MBps"]) if l.get("ok") and l.get("throughput_MBps") else None,
            "shoal_cpu": round(s.get("sender_A", {}).get("cpu_seconds_per_GiB", 0)
                               + s.get("receiver_B", {}).get("cpu_seconds_per_GiB", 0), 2)}


def ratio(a: float | None, b: float | None) -> float | None:
    if not a or not b:
        return None
    return round(a / b, 2)


def _f(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "-" if value is None else f"{value * 100:.0f} %"


def rows_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["holders x lanes", "runs", "get s", "MB/s", "of raw TCP", "holders main", "holders lanes",
               "fetcher main", "fetcher lanes", "both nodes", "x floor", "main share of fetcher",
               "vs first row (paired)", "fetcher's lane processes"]
    rows = []
    for r in summary["rows"]:
        c = r["cpu_s_per_GiB_median"]
        label = r["row"] + ("" if r["lanes_applied"] else " (no --lanes)")
        rows.append([label, r["runs"], _f(r["seconds_median"], 3), _f(r["MBps_median"], 1),
                     _pct(r["vs_raw_tcp_paired_median"]), _f(c["holders_main"]), _f(c["holders_lanes"]),
                     _f(c["fetcher_main"]), _f(c["fetcher_lanes"]), _f(r["both_nodes_cpu_s_per_GiB_median"]),
                     _f(r["x_floor"]), _pct(r["fetcher_main_share_of_fetcher_median"]),
                     _f(r["paired_ratio_vs_first_row_median"]) + "x", _f(r["fetcher_child_processes"], 0)])
    return headers, rows


def targets_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    headers = ["row", f"get >= {TARGET_GET_VS_RAW_TCP * 100:.0f} % of raw TCP",
               f"CPU both nodes <= {TARGET_CPU_VS_FLOOR}x floor",
               f"fetcher main <= {TARGET_MAIN_CPU_PER_GIB} CPU s/GiB"]
    rows = []
    for r in summary["rows"]:
        t = r["targets"]
        rows.append([r["row"],
                     f"{_pct(t['get_vs_raw_tcp']['measured'])} {t['get_vs_raw_tcp']['result']}",
                     f"{_f(t['cpu_both_vs_floor']['measured'])}x {t['cpu_both_vs_floor']['result']}",
                     f"{_f(t['fetcher_main_cpu_s_per_GiB']['measured'], 3)} "
                     f"{t['fetcher_main_cpu_s_per_GiB']['result']}"])
    return headers, rows


def scaling_line(doc: dict[str, Any]) -> str:
    sc = doc["rows_summary"]["scaling"]
    cores = doc.get("cores_used")
    where = f"on {cores} core(s){' (--taskset ' + doc['taskset'] + ')' if doc.get('taskset') else ''}"
    per_core = ""
    if sc["measured"] is not None and cores:
        per_core = f"; the issue states it for >= 8 cores{'' if cores >= 8 else ', this machine has fewer'}"
    return (f"Scaling: row {sc['rows']} = {_f(sc['measured'])}x (median paired ratio; target {sc['target']}) "
            f"{sc['result']}, {where}{per_core}.")


def baselines_table(doc: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    t, tf, l = doc["raw_tcp"], doc.get("raw_tcp_to_file"), doc.get("libp2p", {})
    rows = [[f"raw TCP, receiver discards (median of {doc['raw_tcp'].get('rounds', 1)})", t["seconds"],
             t["throughput_MBps"], f"send {t['sender_cpu_seconds_per_GiB']} / recv {t['receiver_cpu_seconds_per_GiB']}",
             ""]]
    if tf:
        rows.append(["raw TCP, receiver writes a file", tf["seconds"], tf["throughput_MBps"],
                     f"send {tf['sender_cpu_seconds_per_GiB']} / recv {tf['receiver_cpu_seconds_per_GiB']}", ""])
    if l.get("ok"):
        rows.append([f"py-libp2p {l['version']} (TCP + Noise + yamux, one stream)", l["seconds"], l["throughput_MBps"],
                     f"send {l['sender_cpu_seconds_per_GiB']} / recv {l['receiver_cpu_seconds_per_GiB']}",
                     f"send {l.get('sender_peak_rss_MiB')} / recv {l.get('receiver_peak_rss_MiB')}"])
    elif l:
        rows.append([f"py-libp2p: not measured ({(l.get('error') or '')[:60]})", "-", "-", "-", "-"])
    return ["path", "seconds", "MB/s", "CPU s/GiB", "peak RSS MiB"], rows


def build_report(doc: dict[str, Any]) -> tuple[str, str]:
    """(terminal table, RESULTS.md section)."""
    size = doc["bytes"]
    s, l, r = doc["shoal"], doc.get("libp2p", {}), doc.get("rate_limited")
    summary = doc["rows_summary"]
    rh, rr = rows_table(summary)
    th, tr = targets_table(summary)
    bh, br = baselines_table(doc)
    r_lp = doc["ratios"]["shoal_vs_libp2p"]
    what = (f"a directory of {doc['model']['shards']} safetensors shards ({human_bytes(size)})" if doc.get("model")
            else f"one file of {human_bytes(size)}")
    lanes_note = ("" if doc.get("lanes_supported") else
                  " **This build has no `shoal node start --lanes`: every row ran the in-process data plane "
                  "(rows with lanes > 1 are marked \"no --lanes\").**")

    term_lines = [format_table(rh, rr), "", format_table(th, tr), "", scaling_line(doc), "", format_table(bh, br), ""]
    term_lines.append(f"Shoal ({s['row']}) / py-libp2p = {r_lp}  (target >= {TARGETS['shoal_vs_libp2p_min']}) "
                      f"{'met' if doc['targets_met']['shoal_vs_libp2p'] else ('NOT met' if r_lp else 'n/a')}")
    if r:
        term_lines.append(f"rate-limited ({r['rate_limit_bytes_per_s_per_holder'] / 1e6:g} MB/s per holder, "
                          f"{human_bytes(r['bytes'])}): one holder {r['one_holder']['get_seconds']} s, "
                          f"two holders {r['two_holders']['get_seconds']} s, speedup {r['speedup_two_vs_one']}x "
                          f"{'met' if r['two_beat_one'] else 'NOT met'}")
    term = "\n".join(term_lines)

    md: list[str] = []
    md.append(f"Written by `bench/transfer.py` ({what}, loopback, all rows from the same run; "
              f"`{doc.get('command', '')}`). Machine: {machine_line(doc['machine'])}; "
              f"{doc.get('cores_used')} core(s) used"
              f"{' (--taskset ' + doc['taskset'] + ')' if doc.get('taskset') else ''}.{lanes_note}")
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
    md.append("Shoal get, per holders x lanes row (CPU columns in CPU s per GiB moved; medians over the rounds):")
    md.append("")
    md.append(markdown_table(rh, rr))
    md.append("")
    md.append(f"Each row: N holder nodes hold the object (put on each from the same bytes, same CID), every node "
              f"started with `--lanes M`; a fresh node B bootstrapped to the N holders runs the timed "
              f"`shoal --repo B get CID -o OUT` (interpreter start ~{s.get('cli_call_overhead_seconds')} s, "
              f"fetch, SHA-256 check of every block, durable store, export to OUT with fsync); the output is "
              f"compared with the input after every get. \"main\" is a node's own process (for the fetching node: "
              f"the control plane), \"lanes\" every process it started (lanes, and any helper), found in /proc by "
              f"parent and session and sampled every {SAMPLE_S:g} s during the get, so a lane that died or started "
              f"mid-way counts; utime+stime from /proc/PID/stat. \"both nodes\" = holders + fetcher (the `shoal get` "
              f"CLI process is not in it: {_f(median([x['cli_cpu_seconds_median'] for x in summary['rows']]))} CPU s "
              f"per get, a fixed cost). \"x floor\" = both nodes / the floor below; \"of raw TCP\" and \"vs first "
              f"row\" are paired with the same round ({doc.get('repeat', 1)} round(s), row order alternating). "
              f"MB/s are decimal (10^6 bytes/s).")
    md.append("")
    md.append("| row | " + " | ".join(th[1:]) + " |")
    md.append("|---|" + "---|" * (len(th) - 1))
    for row in tr:
        md.append("| " + " | ".join(str(c) for c in row) + " |")
    md.append("")
    md.append(scaling_line(doc))
    cross = [f"{r['row']} {_f(r['cpu_s_per_GiB_median']['fetcher_lanes'])} sampled / "
             f"{_f(r['fetcher_lanes_cpu_s_per_GiB_by_node_median'])} by the node"
             for r in summary["rows"] if r.get("fetcher_lanes_cpu_s_per_GiB_by_node_median") is not None]
    if cross:
        md.append("")
        md.append("Cross-check, the fetching node's lanes in CPU s/GiB, sampled from /proc vs the node's own "
                  "account in /v1/node/status (lanes report getrusage now and then, so it lags): " + "; ".join(cross) + ".")
    md.append("")
    md.append("Baselines, same run:")
    md.append("")
    md.append(markdown_table(bh, br))
    md.append("")
    md.append("The baselines only move bytes (no hashing, no storing), so the comparison favours them.")
    bd = s.get("breakdown")
    if bd:
        md.append("")
        md.append(f"Breakdown (row {bd.get('row', '1x1')}, a fresh node F, holder H1): network fetch alone "
                  f"(`POST /v1/fetch` on the control API: request, transfer, SHA-256 check, store with fsync) "
                  f"{bd['fetch_only_seconds']} s = {bd['fetch_only_MBps']} MB/s, CPU s/GiB (every process) H1 "
                  f"{bd['fetch_only_cpu_seconds_per_GiB']['sender_A']} / "
                  f"F {bd['fetch_only_cpu_seconds_per_GiB']['receiver_F']}; then `shoal get` with every block "
                  f"already local (CLI start + export with fsync) "
                  f"{bd['local_get_seconds (CLI + export of local blocks to OUT, fsync)']} s.")
    lpb = doc.get("lane_probe")
    if lpb:
        c = lpb["cpu_s_per_GiB"]
        md.append("")
        md.append(f"Lanes alone (row {lpb['row']}; every block through a fresh node F's lanes from the holders' "
                  f"lanes with `POST /v1/lanes/fetch`, {lpb['in_flight']} in flight, verified and stored durably, "
                  f"no export): {lpb['blocks']} blocks, {human_bytes(lpb['bytes'])} in {lpb['seconds']} s = "
                  f"{lpb['MBps']} MB/s; CPU s/GiB holders main {c['holders_main']} / lanes {c['holders_lanes']}, "
                  f"F main {c['fetcher_main']} (an HTTP request per block) / lanes {c['fetcher_lanes']}; "
                  f"outcomes {lpb['outcomes']}.")
    if not doc.get("model"):
        md.append("")
        lp_txt = f"{r_lp}x" if r_lp else "not measured"
        md.append(f"Shoal (row {s['row']}) / py-libp2p: {lp_txt} (target >= {TARGETS['shoal_vs_libp2p_min']}x: "
                  f"{'met' if doc['targets_met']['shoal_vs_libp2p'] else ('NOT met' if r_lp else 'unknown')}).")
        if l.get("ok"):
            md.append(f"py-libp2p: {l.get('stack')}; one stream, the same bytes, two processes "
                      "(bench/libp2p_baseline.py, package pinned in bench/requirements-bench.txt, separate venv).")
        elif l:
            md.append(f"py-libp2p could not be measured: {l.get('error')}")
    if r:
        md.append("")
        md.append(f"Rate-limited holders: {human_bytes(r['bytes'])} object on holders H1 and H2, each limited to "
                  f"{r['rate_limit_bytes_per_s_per_holder'] / 1e6:g} MB/s per direction by {r['limit_applied_by']}. "
                  f"One holder: {r['one_holder']['get_seconds']} s ({r['one_holder']['throughput_MBps']} MB/s); "
                  f"two holders: {r['two_holders']['get_seconds']} s ({r['two_holders']['throughput_MBps']} MB/s); "
                  f"bytes per holder through its proxy: {r['two_holders']['bytes_from_each_holder_via_proxy']}; "
                  f"two beat one: {'met' if r['two_beat_one'] else 'NOT met'}.")
    sp, cp = doc.get("storage_probe"), doc.get("crypto_probe")
    md.append("")
    if sp:
        md.append(f"Probes in the same run: `FlatfsBlockstore.put` of 1 MiB blocks "
                  f"(hash check + write + fsync) runs at {sp['put_MBps_sync=True_threads=1']} MB/s one at a time, "
                  f"{sp['put_MBps_sync=True_threads=4']} MB/s with 4 threads, and "
                  f"{sp['put_MBps_sync=False_threads=1']} / {sp['put_MBps_sync=False_threads=4']} MB/s without fsync "
                  f"(1 / 4 threads); the in-process fetch verifies and stores up to {_store_concurrency()} blocks "
                  "at once (p2p/exchange/fetch.py STORE_CONCURRENCY)."
                  + (f" Writing into new page-cache pages (new file, no fsync) cost "
                     f"{sp['pagecache_write_cpu_seconds_per_GiB']} CPU s/GiB."
                     if "pagecache_write_cpu_seconds_per_GiB" in sp else ""))
    if cp:
        aeads = f"ChaCha20-Poly1305 {cp['chacha20poly1305_MBps_one_core']} MB/s" + (
            f", AES-256-GCM {cp['aes256gcm_MBps_one_core']} MB/s (the nodes here negotiate {cp['aead_used']})"
            if "aead_used" in cp else "")
        md.append(f"Crypto: SHA-256 {cp['sha256_MBps_one_core']} MB/s and {aeads} per core; verify-on-read + "
                  f"verify-on-receive + seal + open cost {cp['mandatory_crypto_cpu_seconds_per_GiB_both_nodes']} "
                  f"CPU s/GiB.")
        floor = doc.get("floor")
        if floor:
            md.append(f"The floor: that plus the raw TCP copy's own CPU (send + receive, {floor['socket_cpu']} s/GiB) "
                      f"and the durable write of the blocks ({floor['write_cpu']} s/GiB"
                      f"{', one file per block as DESIGN.md lays out the repo' if floor.get('write_is_block_files') else ''}) is "
                      f"**{floor['cpu']} CPU s/GiB for both nodes**, so nothing following DESIGN.md's rules can "
                      f"exceed ~{floor['bound_MBps']} MB/s on these {cp['cores']} cores; 25 % of raw TCP is "
                      f"{floor['quarter_tcp_MBps']} MB/s.")
    prof = s.get("profile")
    if prof:
        md.append("")
        md.append(f"Profile (py-spy, a separate get of row {prof.get('row')} while sampling; "
                  f"{prof.get('get_seconds_while_profiled')} s; CPU s per process tree "
                  f"{prof.get('cpu_seconds')}):")
        md.append("")
        for side in ("fetcher_C_main", "fetcher_C_lane", "holder_H1_main", "holder_H1_lane"):
            p = prof.get(side)
            if p is None:
                continue
            top = ", ".join(f"{f} {pct} %" for f, pct in (p.get("self") or [])[:8])
            md.append(f"- {side} ({p.get('busy_samples', 0)} busy samples) self time: {top or p.get('error', 'no samples')}")
        if prof.get("error"):
            md.append(f"- {prof['error']}")
    md.append("")
    md.append("Reproduce: `.venv/bin/python bench/transfer.py --rows 1x1,2x2 --repeat 3` (`--size 256M --no-write` "
              "for a trial, `--model` for the safetensors directory, `--taskset 0` to pin to one core, "
              "`--profile` for py-spy).")
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
        tcp_sender(int(argv[1]), argv[2:])
        return 0
    if argv and argv[0] == "_proxy":
        asyncio.run(_proxy_main(int(argv[1]), float(argv[2]), argv[3]))
        return 0

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default=None, help="bytes to move (default 1G, with --model 2G; e.g. 64M)")
    ap.add_argument("--rows", default=None, metavar="HxL,...",
                    help="holders x lanes rows to run, e.g. 1x1,2x2,4x4 (default: 1x1,2x2 if this build has "
                         "--lanes, else 1x1); the first row is the reference for paired ratios")
    ap.add_argument("--holders", type=int, default=None, metavar="N",
                    help="a single row with N holders (with --lanes; ignored if --rows is given)")
    ap.add_argument("--lanes", type=int, default=None, metavar="M",
                    help="a single row with M lanes per node (with --holders; ignored if --rows is given)")
    ap.add_argument("--repeat", type=int, default=1, metavar="K",
                    help="run the rows K times, interleaved (ABBA), and report medians and paired ratios")
    ap.add_argument("--model", action="store_true",
                    help="move a directory of 8 safetensors shards totalling --size instead of one file")
    ap.add_argument("--shards", type=int, default=8, help="with --model: how many shards (default 8)")
    ap.add_argument("--taskset", default=None, metavar="CPUS",
                    help="pin this run and every process it starts to these CPUs (e.g. 0 or 0-1)")
    ap.add_argument("--rate-size", default="64M", help="object size for the rate-limited test (default 64M)")
    ap.add_argument("--rate", type=float, default=20e6, help="bytes/s per holder in the rate-limited test (default 20e6)")
    ap.add_argument("--skip-libp2p", action="store_true")
    ap.add_argument("--skip-rate", action="store_true")
    ap.add_argument("--skip-breakdown", action="store_true", help="skip the fetch-only / local-export breakdown")
    ap.add_argument("--lane-probe", action="store_true",
                    help="also time the lanes alone (POST /v1/lanes/fetch of every block, no export) at the "
                         "last row with lanes > 1")
    ap.add_argument("--profile", action="store_true",
                    help="also run a py-spy-profiled get (main processes and a lane of each side)")
    ap.add_argument("--profile-row", default=None, metavar="HxL", help="the row to profile (default: the last)")
    ap.add_argument("--workdir", default=None, help="where temp files go (default: system temp dir)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the machine's CPUs to be under 25%% busy with other work")
    ap.add_argument("--report-only", action="store_true",
                    help="measure nothing: rebuild the RESULTS.md section from results/transfer.json")
    ap.add_argument("--no-write", action="store_true",
                    help="do not write results/*.json or RESULTS.md (print the RESULTS.md section instead)")
    ap.add_argument("--json-out", default=None, metavar="PATH", help="also write the whole result document here")
    args = ap.parse_args(argv)
    results_json, section = (RESULTS_MODEL_JSON, SECTION_MODEL) if args.model else (RESULTS_JSON, SECTION)
    if args.report_only:
        term, md = build_report(json.loads(results_json.read_text()))
        print(term)
        update_results_section(section, md)
        return 0
    if args.taskset:
        try:
            os.sched_setaffinity(0, parse_cpu_list(args.taskset))  # every child inherits it
        except (ValueError, OSError) as exc:
            ap.error(f"--taskset {args.taskset}: {exc}")
    if args.repeat < 1:
        ap.error("--repeat must be >= 1")
    size = parse_size(args.size or ("2G" if args.model else "1G"))
    rate_size = parse_size(args.rate_size)
    lanes_ok = lanes_supported()
    try:
        if args.rows:
            rows = parse_rows(args.rows)
        elif args.holders or args.lanes:
            rows = parse_rows(f"{args.holders or 1}x{args.lanes or 1}")
        else:
            rows = parse_rows("1x1,2x2" if lanes_ok else "1x1")
        profile_row = parse_rows(args.profile_row)[0] if args.profile_row else rows[-1]
    except ValueError as exc:
        ap.error(str(exc))
    if max(h for h, _ in rows) + 1 > 6:
        ap.error("at most 5 holders: the fetching node makes 6 node processes, this machine's limit")
    if not lanes_ok and any(lanes > 1 for _, lanes in rows):
        log("NOTE: this build's `shoal node start` has no --lanes: rows with lanes > 1 run the in-process "
            "data plane (the report says so)")

    doc: dict[str, Any] = {"benchmark": "transfer", "machine": machine_info(),
                           "command": "bench/transfer.py " + " ".join(argv),
                           "cores_used": len(os.sched_getaffinity(0)), "taskset": args.taskset,
                           "lanes_supported": lanes_ok, "repeat": args.repeat}
    wait_quiet(args.wait_quiet, log)
    doc["load_before"] = system_load()
    if doc["load_before"]["cpu_busy_fraction_while_idle"] > 0.2:
        log(f"WARNING: the machine is busy before we start ({doc['load_before']}); numbers will be contended")
    with Cleanup() as cl:
        work = cl.tempdir("shoal-bench-transfer-", parent=args.workdir)
        if args.model:
            data = work / "model"
            log(f"writing a model directory: {args.shards} safetensors shards, {human_bytes(size)} in all")
            write_model(data, size, args.shards)
            size = tree_bytes(data)  # + the small index JSON beside the shards
            doc["model"] = {"shards": args.shards, "files": len(data_files(data)), "bytes": size}
        else:
            data = work / "data.bin"
            log(f"writing {human_bytes(size)} of pseudo-random bytes")
            write_pseudorandom(data, size)
        doc["bytes"] = size
        rr = bench_rows(cl, work, data, size, rows, args.repeat, lanes_ok)
        hs = rr.pop("holders")
        doc["runs"] = rr["runs"]
        doc["raw_tcp_rounds"] = rr["raw_tcp_rounds"]
        first = [r for r in rr["runs"] if r["row"] == row_label(*rows[0])]
        doc["shoal"] = legacy_summary(hs, first, rr["cli_call_overhead_seconds"], size)
        if not args.skip_breakdown:
            doc["shoal"]["breakdown"] = breakdown(hs, rows[0][1], lanes_ok, size)
        laned_rows = [r for r in rows if r[1] > 1]
        if args.lane_probe and lanes_ok and laned_rows:
            doc["lane_probe"] = lane_probe(hs, *laned_rows[-1], size)
        if args.profile:
            doc["shoal"]["profile"] = profile_get(cl, hs, profile_row[0], profile_row[1], lanes_ok, size)
        log("raw TCP to a file")
        doc["raw_tcp_to_file"] = bench_raw_tcp(cl, work, data, size, to_file=True)
        if args.skip_libp2p or args.model:
            doc["libp2p"] = {"ok": False, "error": "skipped (" + ("--model" if args.model else "--skip-libp2p") + ")"}
        else:
            log("py-libp2p")
            doc["libp2p"] = bench_libp2p(cl, work, data, size)
        remove(data)
        if not args.skip_rate and not args.model:
            doc["rate_limited"] = bench_rate_limited(cl, work, rate_size, args.rate)
        log("probes: blockstore put (serial vs threads, fsync on/off) and crypto rates")
        doc["storage_probe"] = storage_probe(work)
        doc["crypto_probe"] = crypto_probe(doc["cores_used"])

    doc["load_after"] = system_load()
    raws = doc["raw_tcp_rounds"]
    mid = sorted(raws, key=lambda t: t["throughput_MBps"])[len(raws) // 2]
    doc["raw_tcp"] = {**mid, "rounds": len(raws)}
    s_mbps = doc["shoal"]["throughput_MBps"]
    lp = doc["libp2p"].get("throughput_MBps") if doc["libp2p"].get("ok") else None
    doc["ratios"] = {"shoal_vs_raw_tcp": ratio(s_mbps, doc["raw_tcp"]["throughput_MBps"]),
                     "shoal_vs_raw_tcp_to_file": ratio(s_mbps, doc["raw_tcp_to_file"]["throughput_MBps"]),
                     "shoal_vs_libp2p": ratio(s_mbps, lp)}
    doc["floor"] = _full_floor(doc)
    doc["rows_summary"] = summarize_rows(rows, doc["runs"], raws, (doc["floor"] or {}).get("cpu"), lanes_ok)
    doc["targets"] = TARGETS
    doc["targets_met"] = {
        "shoal_vs_raw_tcp": (doc["ratios"]["shoal_vs_raw_tcp"] or 0) >= TARGETS["shoal_vs_raw_tcp_min"],
        "shoal_vs_libp2p": (doc["ratios"]["shoal_vs_libp2p"] or 0) >= TARGETS["shoal_vs_libp2p_min"],
        "two_holders_beat_one": bool(doc.get("rate_limited", {}).get("two_beat_one")),
        "rows": {r["row"]: {k: v["result"] for k, v in r["targets"].items()} for r in doc["rows_summary"]["rows"]},
        "scaling_4x4_vs_1x1": doc["rows_summary"]["scaling"]["result"],
    }
    term, md = build_report(doc)
    print(term)
    if not args.no_write:
        write_json(results_json, doc)
        update_results_section(section, md)
        log(f"wrote {results_json.relative_to(PROJECT_ROOT)} and the {section!r} section of bench/RESULTS.md")
    else:
        print("\n----- the RESULTS.md section this run would write -----\n" + md)
    if args.json_out:
        write_json(Path(args.json_out), doc)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
