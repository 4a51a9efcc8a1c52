"""A Hugging Face client through a Shoal gateway against a static HF mirror and `shoal get`, same run.

Measured (default a 1 GiB model: `--shards` safetensors shards plus small
config/tokenizer files; `--size` to change):

1. static: `snapshot_download` (huggingface_hub, the version pinned in the
   test extra, Xet off, its default 8 workers) against bench/hf_static.py —
   a stdlib threading HTTP server with the Hub's routes serving the model
   folder from disk (the ceiling of a plain HTTP mirror on one machine);
2. shoal gateway: the same client against `--gateway` of a fresh node C
   that holds nothing: two holders A and B (A ran `shoal hf import`, B
   `shoal put` of the same folder) and C, bootstrapped to both, trusting the
   swarm's names (`[names] trust = "swarm"`); every block C serves it fetches
   on demand from A and B and hash-checks;
3. `shoal get CID -o OUT` of the model's directory CID into a fresh node D
   bootstrapped to A and B (the swarm's own client, for scale);
4. time to first byte of `GET /{repo}/resolve/main/{shard}` on a fresh
   gateway node E that holds nothing (name resolution, root, directory and
   file blocks fetched before the first byte), for every shard in turn
   (the first also fetches the directory), and the same against the static
   server.

Every client run is a fresh process with an empty HF cache; its wall time
is taken around the process and inside it (`inner`, without the
interpreter and import start); the ratio uses the inner times. The bytes
are checked against the import's sha256s afterwards. CPU seconds (utime +
stime from /proc) of the servers and holders, peak RSS (VmHWM) of each.
`--repeats N` runs static and gateway N times interleaved (a fresh gateway
node each time).

5. The floor (after the runs, same machine): what any gateway that follows
   DESIGN.md's rules must spend per GiB on the swarm's side, measured with
   bench/transfer.py's probes: SHA-256 at the holder (verify on read) and
   at the gateway (verify on receipt), one AEAD seal and open (the one the nodes negotiate: AES-GCM with AES instructions),
   a raw loopback TCP copy's CPU (both ends) and the durable write of the
   fetched blocks, one file per block as DESIGN.md lays out the repo
   (O_DIRECT, one syncfs per 64 files, renames); the HTTP leg to the client is priced at what the
   static server spent. With the Hub client's own CPU (its least over all
   runs) that gives the least time any such gateway could take on these
   cores, and how close to the floor the swarm's processes must run for the
   1.5x target (`floor` in the JSON, and the report). `--lanes N` starts every node with `--lanes N` (issue 15:
N lane processes move the block bytes; 1 = none, all in the node's
process); the CPU of a node's lanes (found in its /v1/node/status) is
sampled beside its main process and both are given per GiB served. Writes bench/results/gateway.json (unless --no-write) and
prints a table; RESULTS.md is written by hand from it.

    .venv/bin/python bench/gateway.py                      # 1 GiB
    .venv/bin/python bench/gateway.py --size 64M --no-write
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import httpx  # noqa: E402

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
    mb_per_s,
    peak_rss,
    reset_peak_rss,
    system_load,
    wait_for,
    wait_quiet,
    write_json,
    write_pseudorandom,
)

SHOAL_PY = PROJECT_ROOT / ".venv" / "bin" / "python"
RESULTS_JSON = BENCH_DIR / "results" / "gateway.json"
REPO_ID = "bench/model"
NODE_READY_S = 60.0
TARGETS = {"gateway_vs_static_max": 1.5, "ttfb_seconds_max": 0.5}

# The client reports its own CPU (all its threads) over the download: on 2 cores the Hub client's
# reading, writing and hashing share the machine with the server's processes, so the time the
# whole download needs at least is everybody's CPU over the cores (the "CPU-bound" column).
CLIENT = """
import json, os, resource, time
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
t0 = time.perf_counter()
from huggingface_hub import snapshot_download, __version__
t1, c1 = time.perf_counter(), cpu()
p = snapshot_download(os.environ["BENCH_REPO"], cache_dir=os.environ["HF_HUB_CACHE"])
t2, c2 = time.perf_counter(), cpu()
print(json.dumps({"path": p, "import_s": t1 - t0, "inner_s": t2 - t1, "client_cpu_s": c2 - c1,
                  "version": __version__}))
"""


log = make_log("gateway")


def shoal_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SHOAL_REPO", None)
    return env


def shoal(repo: Path, *args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(SHOAL_PY), "-m", "shoal.cli.main", "--repo", str(repo), *args],
                          capture_output=True, text=True, timeout=timeout, env=shoal_env(), cwd=PROJECT_ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"shoal {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc


def make_model(folder: Path, size: int, shards: int) -> None:
    """An HF-shaped model: `shards` safetensors-named shards of pseudo-random bytes, and small files."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "bench", "hidden_size": 4096}))
    (folder / "generation_config.json").write_text(json.dumps({"max_length": 4096}))
    (folder / "tokenizer.json").write_text(json.dumps({"vocab": {f"t{i}": i for i in range(50_000)}}))
    index = {"metadata": {"total_size": size}, "weight_map": {}}
    per = size // shards
    for i in range(shards):
        name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        write_pseudorandom(folder / name, per if i < shards - 1 else size - per * (shards - 1), seed=i)
        index["weight_map"][f"layer.{i}.weight"] = name
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))


def node_swarm(cl: Cleanup, root: Path) -> LocalSwarm:
    swarm = LocalSwarm(root, ["--log-level", "WARNING"], python=str(SHOAL_PY), env=shoal_env(), cwd=PROJECT_ROOT)
    cl.on_close(swarm.close)
    return swarm


def lane_args(lanes: int | None) -> list[str]:
    return [] if lanes is None else ["--lanes", str(lanes)]


def lane_pids(node: NodeProc) -> list[int]:
    """The pids of `node`'s lane processes (none with --lanes 1)."""
    status = node.call("GET", "/v1/node/status")
    return [int(lane["pid"]) for lane in status.get("lanes", [])]


def gateway_node(swarm: LocalSwarm, name: str, holders: list[NodeProc],
                 lanes: int | None = None) -> tuple[NodeProc, str]:
    """A fresh node with `--gateway`, trusting the swarm's names, connected to the holders; its URL."""
    node = swarm.add(name, [h.addr for h in holders], ["--gateway", "127.0.0.1:0", *lane_args(lanes)], start=False)
    with open(node.repo / "config.toml", "a") as fh:
        fh.write('\n[names]\ntrust = "swarm"\n')
    node.start(timeout=NODE_READY_S)
    swarm.wait_connected(node, [h.peer_id for h in holders], 30)
    url = json.loads(shoal(node.repo, "id", "--json").stdout)["gateway"]
    wait_for(lambda: httpx.get(f"{url}/api/models/{REPO_ID}/revision/main", timeout=10).status_code == 200,
             60, f"{name} to resolve {REPO_ID}")
    return node, url


def run_client(endpoint: str, cache: Path) -> dict[str, Any]:
    env = dict(os.environ, HF_ENDPOINT=endpoint, HF_HUB_CACHE=str(cache), HF_HOME=str(cache / "home"),
               HF_HUB_DISABLE_XET="1", HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_HUB_ETAG_TIMEOUT="60", HF_HUB_DOWNLOAD_TIMEOUT="60", BENCH_REPO=REPO_ID)
    t0 = time.perf_counter()
    proc = subprocess.run([str(SHOAL_PY), "-c", CLIENT], capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"snapshot_download against {endpoint} failed: {proc.stderr[-3000:]}")
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["wall_s"] = wall
    return out


def check_snapshot(path: Path, files: list[dict[str, Any]]) -> bool:
    for f in files:
        h = hashlib.sha256()
        with open(path / f["path"], "rb") as fh:
            while chunk := fh.read(8 * MIB):
                h.update(chunk)
        if h.hexdigest() != f["sha256"]:
            return False
    return True


def timed_download(cl: Cleanup, work: Path, label: str, endpoint: str, watch: dict[str, list[int]],
                   files: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """One client run; `watch`: name -> the processes whose CPU (summed) and peak RSS (summed) to report."""
    cache = cl.tempdir(f"hf-{label}-", parent=str(work))
    pids = [pid for group in watch.values() for pid in group]
    for pid in pids:
        reset_peak_rss(pid)
    before = ProcSample.take(pids)
    out = run_client(endpoint, cache)
    delta = before.delta(ProcSample.take(pids))
    cpu = {k: sum(delta[pid] for pid in group) for k, group in watch.items()}
    cpu["client"] = float(out["client_cpu_s"])
    ok = check_snapshot(Path(out["path"]), files)
    if not ok:
        raise RuntimeError(f"{label}: the snapshot's bytes differ from the model's")
    log(f"{label}: {out['inner_s']:.2f} s inside the client ({out['wall_s']:.2f} s wall), "
        f"{mb_per_s(size, out['inner_s']):.0f} MB/s, verified")
    return {"inner_seconds": round(out["inner_s"], 3), "wall_seconds": round(out["wall_s"], 3),
            "client_import_seconds": round(out["import_s"], 3),
            "throughput_MBps": round(mb_per_s(size, out["inner_s"]), 1), "verified": ok,
            "client_version": out["version"],
            "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
            "cpu_seconds_per_GiB": {k: round(v / (size / GIB), 2) for k, v in cpu.items()},
            "peak_rss_MiB": {k: round(sum(peak_rss(pid) for pid in group) / MIB, 1) for k, group in watch.items()},
            "cpu_bound_seconds": round(sum(cpu.values()) / len(os.sched_getaffinity(0)), 3)}


def ttfb(url: str) -> float:
    """Seconds from sending a resolve GET to its first body byte."""
    with httpx.Client(timeout=60) as client:
        t0 = time.perf_counter()
        with client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise RuntimeError(f"{url}: {resp.status_code} {resp.read().decode(errors='replace')}")
            for _chunk in resp.iter_raw():
                return time.perf_counter() - t0
    raise RuntimeError(f"{url}: empty body")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="model bytes in shards (default 1G; e.g. 64M)")
    ap.add_argument("--shards", type=int, default=4, help="safetensors shards (default 4)")
    ap.add_argument("--repeats", type=int, default=1, help="static and gateway runs, interleaved (default 1)")
    ap.add_argument("--workdir", default=None, help="where temp files go (default: system temp dir)")
    ap.add_argument("--no-write", action="store_true", help="do not write results/gateway.json")
    ap.add_argument("--lanes", type=int, default=None, metavar="N",
                    help="start every node with --lanes N (default: the node's own default, one per core)")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the machine's CPUs to be under 25%% busy with other work")
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    wait_quiet(args.wait_quiet, log)
    lanes = lane_args(args.lanes)
    doc: dict[str, Any] = {"benchmark": "gateway", "bytes": size, "shards": args.shards, "lanes": args.lanes,
                           "machine": machine_info(), "load_before": system_load()}
    with Cleanup() as cl:
        work = cl.tempdir("shoal-bench-gateway-", parent=args.workdir)
        folder = work / "model"
        log(f"writing a {human_bytes(size)} model in {args.shards} shards")
        make_model(folder, size, args.shards)
        swarm = node_swarm(cl, work / "nodes")
        a = swarm.add("A", [], lanes, timeout=NODE_READY_S)
        b = swarm.add("B", [a.addr], lanes, timeout=NODE_READY_S)
        swarm.wait_connected(b, [a.peer_id], 30)
        log("A: shoal hf import (not timed); B: shoal put of the same folder")
        rec = json.loads(shoal(a.repo, "hf", "import", str(folder), "--repo", REPO_ID, "--json").stdout)
        cid_b = shoal(b.repo, "put", str(folder), "--quiet").stdout.strip().splitlines()[-1]
        if cid_b != rec["cid"]:
            raise RuntimeError(f"A and B disagree on the folder's CID: {rec['cid']} vs {cid_b}")
        files = rec["files"]
        records = work / "records.json"
        records.write_text(json.dumps([{"repo": REPO_ID, "kind": "model", "revision": "main", "cid": rec["cid"],
                                        "commit": rec["commit"], "files": files}]))
        # Untimed warm-up: one full fetch out of A and B, so every timed run finds the holders'
        # blocks in the page cache (the first reader of O_DIRECT-written blocks pays for filling it).
        log("warm-up (not timed): shoal get into a throwaway node W")
        w = swarm.add("W", [a.addr, b.addr], lanes, timeout=NODE_READY_S)
        swarm.wait_connected(w, [a.peer_id, b.peer_id], 30)
        shoal(w.repo, "get", rec["cid"], "-o", str(work / "warm"))
        w.stop(15)
        shutil.rmtree(work / "warm")
        static = cl.popen([str(SHOAL_PY), str(BENCH_DIR / "hf_static.py"), str(folder), str(records)],
                          stdout=subprocess.PIPE, text=True, env=shoal_env())
        assert static.stdout is not None
        static_url = static.stdout.readline().strip()
        doc["files"] = [{"path": f["path"], "size": f["size"]} for f in files]
        runs: dict[str, list[dict[str, Any]]] = {"static": [], "gateway": []}
        for i in range(args.repeats):
            log(f"run {i + 1}/{args.repeats}: static server")
            runs["static"].append(timed_download(cl, work, "static", static_url, {"server": [static.pid]},
                                                 files, size))
            c, url = gateway_node(swarm, f"C{i}", [a, b], args.lanes)
            log(f"run {i + 1}/{args.repeats}: shoal gateway (node {c.name} holds nothing)")
            runs["gateway"].append(timed_download(cl, work, "gateway", url,
                                                  {"gateway_C": [c.pid], "gateway_C_lanes": lane_pids(c),
                                                   "holder_A": [a.pid], "holder_A_lanes": lane_pids(a),
                                                   "holder_B": [b.pid], "holder_B_lanes": lane_pids(b)},
                                                  files, size))
            c.stop(15)
        doc["static"], doc["gateway"] = runs["static"], runs["gateway"]

        log("shoal get of the directory CID into a fresh node D")
        d = swarm.add("D", [a.addr, b.addr], lanes, timeout=NODE_READY_S)
        swarm.wait_connected(d, [a.peer_id, b.peer_id], 30)
        d_lanes, a_lanes, b_lanes = lane_pids(d), lane_pids(a), lane_pids(b)
        before = ProcSample.take([d.pid, a.pid, b.pid, *d_lanes, *a_lanes, *b_lanes])
        t0 = time.perf_counter()
        shoal(d.repo, "get", rec["cid"], "-o", str(work / "got"))
        get_s = time.perf_counter() - t0
        cpu = before.delta(ProcSample.take([d.pid, a.pid, b.pid, *d_lanes, *a_lanes, *b_lanes]))
        if not check_snapshot(work / "got", files):
            raise RuntimeError("shoal get produced different bytes")
        doc["shoal_get"] = {"seconds": round(get_s, 3), "throughput_MBps": round(mb_per_s(size, get_s), 1),
                            "verified": True, "cpu_seconds": {"node_D": round(cpu[d.pid], 2),
                                                              "node_D_lanes": round(sum(cpu[p] for p in d_lanes), 2),
                                                              "holder_A": round(cpu[a.pid], 2),
                                                              "holder_A_lanes": round(sum(cpu[p] for p in a_lanes), 2),
                                                              "holder_B": round(cpu[b.pid], 2),
                                                              "holder_B_lanes": round(sum(cpu[p] for p in b_lanes), 2)}}
        d.stop(15)

        log("time to first byte on a fresh gateway node E (nothing local), then on the static server")
        e, url = gateway_node(swarm, "E", [a, b], args.lanes)
        shards = [f["path"] for f in files if f["path"].endswith(".safetensors")]
        cold = [ttfb(f"{url}/{REPO_ID}/resolve/main/{p}") for p in shards]
        warm_static = [ttfb(f"{static_url}/{REPO_ID}/resolve/main/{p}") for p in shards]
        doc["ttfb"] = {"gateway_nothing_local_seconds": [round(x, 4) for x in cold],
                       "static_seconds": [round(x, 4) for x in warm_static],
                       "note": "the gateway's first shard also fetches the directory's blocks"}
        e.stop(15)

        log("the floor: crypto, loopback TCP and durable-write probes (bench/transfer.py)")
        doc["floor"] = floor_probe(cl, work, folder, size, doc)

    doc["load_after"] = system_load()
    g = statistics.median(r["inner_seconds"] for r in doc["gateway"])
    s = statistics.median(r["inner_seconds"] for r in doc["static"])
    doc["ratios"] = {"gateway_vs_static_time": round(g / s, 2),
                     "shoal_get_vs_static_time": round(doc["shoal_get"]["seconds"] / s, 2)}
    doc["targets"] = TARGETS
    doc["targets_met"] = {"gateway_vs_static": g / s <= TARGETS["gateway_vs_static_max"],
                          "ttfb": max(doc["ttfb"]["gateway_nothing_local_seconds"]) < TARGETS["ttfb_seconds_max"]}
    print(report(doc))
    if not args.no_write:
        write_json(RESULTS_JSON, doc)
        log(f"wrote {RESULTS_JSON.relative_to(PROJECT_ROOT)}")
    return 0


def floor_probe(cl: Cleanup, work: Path, folder: Path, size: int, doc: dict[str, Any]) -> dict[str, Any]:
    """The least CPU the gateway path needs here (see the module doc, 5), and what it implies for the target."""
    from transfer import bench_raw_tcp, crypto_probe, floor_write_cpu, storage_probe

    cores = len(os.sched_getaffinity(0))
    crypto = crypto_probe(cores)
    storage = storage_probe(work)
    folder_bytes = sum(p.stat().st_size for p in folder.iterdir())
    tcp = bench_raw_tcp(cl, work, folder, folder_bytes, to_file=False)
    swarm_per_gib = (crypto["mandatory_crypto_cpu_seconds_per_GiB_both_nodes"] + tcp["sender_cpu_seconds_per_GiB"]
                     + tcp["receiver_cpu_seconds_per_GiB"] + floor_write_cpu(storage))
    gib = size / GIB
    client = min(r["cpu_seconds"]["client"] for r in doc["static"] + doc["gateway"])
    http_leg = statistics.median(r["cpu_seconds"]["server"] for r in doc["static"])
    static_s = statistics.median(r["inner_seconds"] for r in doc["static"])
    least_s = (client + http_leg + swarm_per_gib * gib) / cores
    swarm_cpu = statistics.median(sum(v for k, v in r["cpu_seconds"].items() if k != "client") for r in doc["gateway"])
    room = TARGETS["gateway_vs_static_max"] * static_s * cores - client - http_leg  # CPU s the swarm may use
    return {"cores": cores, "crypto": crypto, "raw_tcp": tcp,
            "direct_write_cpu_seconds_per_GiB": storage["direct_write_cpu_seconds_per_GiB"],
            "blockfile_write_cpu_seconds_per_GiB": floor_write_cpu(storage),
            "swarm_floor_cpu_seconds_per_GiB": round(swarm_per_gib, 2),
            "client_cpu_seconds_least": round(client, 2), "http_leg_cpu_seconds": round(http_leg, 2),
            "least_seconds": round(least_s, 2), "least_vs_static": round(least_s / static_s, 2),
            "swarm_cpu_seconds": round(swarm_cpu, 2),
            "swarm_vs_floor": round(swarm_cpu / (swarm_per_gib * gib), 2),
            "swarm_vs_floor_allowed_for_target": round(room / (swarm_per_gib * gib), 2)}


def floor_lines(f: dict[str, Any]) -> list[str]:
    return [f"floor of the swarm's side (holders + gateway node, DESIGN.md's mandatory work: 2x SHA-256, seal + open, "
            f"loopback copy, durable block files): {f['swarm_floor_cpu_seconds_per_GiB']} CPU s/GiB; with the Hub client's "
            f"{f['client_cpu_seconds_least']} CPU s and the HTTP leg's {f['http_leg_cpu_seconds']} (the static server's), "
            f"no gateway could take less than {f['least_seconds']} s on {f['cores']} cores = "
            f"{f['least_vs_static']}x the static server",
            f"the 1.5x target leaves the swarm's processes {f['swarm_vs_floor_allowed_for_target']}x their floor; "
            f"they used {f['swarm_vs_floor']}x ({f['swarm_cpu_seconds']} CPU s)"]


def report(doc: dict[str, Any]) -> str:
    size = doc["bytes"]
    rows = []
    for label, key in (("snapshot_download, static HF-shaped server", "static"),
                       ("snapshot_download, Shoal gateway (fetching from 2 peers)", "gateway")):
        for r in doc[key]:
            cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_seconds"].items())
            rss = ", ".join(f"{k} {v}" for k, v in r["peak_rss_MiB"].items())
            rows.append([label, f"{r['inner_seconds']:.2f}", f"{r['wall_seconds']:.2f}",
                         f"{r['throughput_MBps']:.0f}", cpu, rss])
    sg = doc["shoal_get"]
    rows.append(["shoal get CID -o OUT (fresh node, 2 peers)", f"{sg['seconds']:.2f}", f"{sg['seconds']:.2f}",
                 f"{sg['throughput_MBps']:.0f}", ", ".join(f"{k} {v}" for k, v in sg["cpu_seconds"].items()), ""])
    table = format_table(["run", "inner s", "wall s", "MB/s", "CPU s", "peak RSS MiB"], rows)
    bound = [f"{key} {r['cpu_bound_seconds']:.2f} s" for key in ("static", "gateway") for r in doc[key]
             if "cpu_bound_seconds" in r]
    per_gib = []
    for r in doc["gateway"]:
        per_gib.append(", ".join(f"{k} {v}" for k, v in r.get("cpu_seconds_per_GiB", {}).items()))
    t = doc["ttfb"]
    load = doc.get("load_before", {})
    lines = [f"gateway bench: {human_bytes(size)} in {doc['shards']} shards + {len(doc['files']) - doc['shards']} "
             f"small files; {machine_line(doc['machine'])}",
             f"load before: {load}; nodes' lanes: {doc.get('lanes') or 'their default'}", table, "",
             *[f"gateway run {i + 1}, CPU s per GiB: {line}" for i, line in enumerate(per_gib)],
             f"CPU-bound time (the client's and the servers' CPU seconds over {len(os.sched_getaffinity(0))} cores, the least "
             f"any run could take here): {', '.join(bound)}",
             f"time ratio gateway / static: {doc['ratios']['gateway_vs_static_time']} "
             f"(target <= {TARGETS['gateway_vs_static_max']}: {'met' if doc['targets_met']['gateway_vs_static'] else 'NOT met'})",
             f"time ratio shoal get / static: {doc['ratios']['shoal_get_vs_static_time']}",
             f"TTFB of a resolve GET, nothing local (per shard): {t['gateway_nothing_local_seconds']} s "
             f"(target < {TARGETS['ttfb_seconds_max']}: {'met' if doc['targets_met']['ttfb'] else 'NOT met'}); "
             f"static: {t['static_seconds']} s",
             *(floor_lines(doc["floor"]) if doc.get("floor") else [])]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted; cleaned up", file=sys.stderr)
        sys.exit(130)
