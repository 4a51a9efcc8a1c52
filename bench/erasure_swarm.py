"""`put --ec 4+2` against `put --replicas 3` end to end on a loopback swarm, same run.

The network half of issue 18 item 6 (bench/erasure.py measures the codec in
one process; this file starts real `shoal node start` processes, so it lives
beside it rather than in it: a codec run must not need a swarm, and the
swarm run shares transfer.py's process harness, not erasure.py's zfec).

For each of `--repeats` rounds, both schemes, the order alternating per round
(so a noisy moment hits both), each on a FRESH swarm of fresh repos (nothing
is deduplicated, no block is already anywhere), with the same `--size` file
(default 256 MiB of pseudorandom bytes):

1. put: the owner and `--peers` (6) other nodes, every node auditing each
   second; `shoal put FILE --ec 4+2 --json` (or `--replicas 3`) on the owner
   through the CLI, timed until the owner's status (what `shoal status
   --json` prints) shows every shard / replica on a distinct live peer in
   state `ok`, that is stored and agreed. Measured over that span: CPU
   seconds of every node process (utime+stime, /proc/PID/stat) and of the
   CLI; bytes the owner served and the holders received (each node's
   `/v1/stats` block counters, before/after); after one energy flush
   interval, each node's ledger rows (its index.sqlite, read-only): joules by
   kind and the meter they came from (RAPL or the CPU-time estimate); then
   `shoal gc` on the owner (its shard copies from the encoding go; the
   object stays pinned) and the bytes stored across the swarm (every repo's
   blocks/ folder, file sizes).
2. repair: spare peers join (so EC has a free peer for each lost shard:
   no peer ever holds two shards of an object), then the fewest holders
   whose loss starts a repair are killed with SIGKILL: one replica holder;
   for EC, with the bench's default `put --ec-threshold 6` (repair below
   K + M healthy shards: eager), one shard holder (shard 0). With the
   node's own default (`--ec-threshold 5`, K + 1: lazy, as Storj repairs)
   one lost shard of 4+2 starts no repair, by design, so the bench kills
   K + M - threshold + 1 shard holders (shards 0, K, ...: data and parity).
   Timed until status shows every shard / replica ok on live peers again.
   The same counters over that span, also per lost holder: the owner keeps
   its copy (no --ec-drop-local), so an EC repair re-encodes the lost
   shards from it (its shard copies went with the gc), receives nothing
   and sends only the rebuilt ones; a replica repair sends one whole copy.

Ratios EC / replicas are paired per round, then the median of the rounds.

    .venv/bin/python bench/erasure_swarm.py                        # 256 MiB, 3 rounds
    .venv/bin/python bench/erasure_swarm.py --size 8M --repeats 1  # quick check
    .venv/bin/python bench/erasure_swarm.py --json bench/results/erasure_swarm.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from bench.common import (  # noqa: E402
    make_log,
    wait_for,
    MIB, Cleanup, ProcSample, format_table, human_bytes, machine_info, machine_line, write_json,
    write_pseudorandom,
)
from shoal.cli.swarm import LocalSwarm, NodeProcess  # noqa: E402
from shoal.store.energy import ledger  # noqa: E402

K, M = 4, 2
REPLICAS = 3
SCHEMES = ("ec", "replicas")
FLUSH_WAIT_S = 6.5  # the energy service writes aggregated serve rows every 5 s
PY = os.environ.get("SHOAL_BENCH_PYTHON") or sys.executable


log = make_log("erasure_swarm")


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": MIB, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    return int(float(t[:-1]) * units[t[-1]]) if t and t[-1] in units else int(t)


# -- what the nodes say ---------------------------------------------------------------


def traffic(nodes: list[NodeProcess]) -> dict[str, dict[str, int]]:
    """Block bytes each live node served and received since it started (/v1/stats)."""
    out = {}
    for n in nodes:
        if n.running:
            s = n.call("GET", "/v1/stats")
            out[n.name] = {"sent": int(s["served_bytes"]), "received": int(s["received_bytes"])}
    return out


def traffic_delta(before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {name: {k: v - before.get(name, {}).get(k, 0) for k, v in a.items()} for name, a in after.items()}


def ledger_of(node: NodeProcess) -> dict[str, Any]:
    """This node's ledger totals by kind, read-only from its index (WAL: the node keeps writing)."""
    db = sqlite3.connect(f"file:{node.repo / 'index.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return dict(ledger.summary(db))
    except sqlite3.OperationalError:  # no ledger table yet
        return {}
    finally:
        db.close()


def ledger_delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Swarm totals of the rows written between two snapshots: joules and bytes by kind, methods."""
    kinds: dict[str, dict[str, Any]] = {}
    for name, summary in after.items():
        for kind, t in summary.items():
            b = before.get(name, {}).get(kind, {})
            k = kinds.setdefault(kind, {"count": 0, "joules": 0.0, "methods": {},
                                        **{f: 0 for f in ledger.BYTE_FIELDS}})
            k["count"] += t["count"] - b.get("count", 0)
            k["joules"] += t["joules"] - b.get("joules", 0.0)
            for f in ledger.BYTE_FIELDS:
                k[f] += t[f] - b.get(f, 0)
            for m, n in t["methods"].items():
                d = n - b.get("methods", {}).get(m, 0)
                if d:
                    k["methods"][m] = k["methods"].get(m, 0) + d
    kinds = {kind: k for kind, k in kinds.items() if k["count"]}
    methods: dict[str, int] = {}
    for k in kinds.values():
        for m, n in k["methods"].items():
            methods[m] = methods.get(m, 0) + n
    # Audits run every second on every node whatever the scheme, and the span
    # includes the flush wait: their joules are kept apart from the transfer's.
    audit = sum(k["joules"] for kind, k in kinds.items() if kind.startswith("audit"))
    return {"joules": sum(k["joules"] for kind, k in kinds.items() if not kind.startswith("audit")),
            "audit_joules": audit, "methods": methods, "kinds": kinds}


def stored_bytes(node: NodeProcess) -> int:
    """Bytes of the files under the repo's blocks/ folder (what the disk holds, headers and all)."""
    total = 0
    for dirpath, _, files in os.walk(node.repo / "blocks"):
        for f in files:
            if f != "SHARDING":
                try:
                    total += os.stat(os.path.join(dirpath, f)).st_size
                except FileNotFoundError:  # a gc or a staging rename in between
                    pass
    return total


class Span:
    """CPU of every given node and the counters, from now until `end`."""

    def __init__(self, nodes: list[NodeProcess]) -> None:
        self.nodes = [n for n in nodes if n.running]
        self.cpu = ProcSample.take(n.pid for n in self.nodes)
        self.traffic = traffic(self.nodes)
        self.ledger = {n.name: ledger_of(n) for n in self.nodes}
        self.t0 = time.perf_counter()

    def end(self, cli_cpu: float = 0.0) -> dict[str, Any]:
        seconds = time.perf_counter() - self.t0
        live = [n for n in self.nodes if n.running]
        after = ProcSample.take(n.pid for n in live)
        cpu = {n.name: round(after.cpu[n.pid] - self.cpu.cpu[n.pid], 3) for n in live}
        moved = traffic_delta(self.traffic, traffic(live))
        return {"seconds": round(seconds, 3), "cpu_s": cpu, "cpu_total_s": round(sum(cpu.values()) + cli_cpu, 3),
                "cli_cpu_s": round(cli_cpu, 3), "traffic": moved}

    def energy(self) -> dict[str, Any]:
        """After the flush interval: the ledger rows of this span (call once the span has ended)."""
        time.sleep(FLUSH_WAIT_S)
        return ledger_delta(self.ledger, {n.name: ledger_of(n) for n in self.nodes})


# -- placement as the owner sees it -------------------------------------------------------


def placed(owner: NodeProcess, cid: str, scheme: str, alive: set[str]) -> dict[str, Any] | None:
    """The owner's status once every shard / replica is ok on a distinct live peer, else None."""
    doc: dict[str, Any] = owner.call("GET", "/v1/status", cid=cid)
    if scheme == "ec":
        good = [s for s in doc.get("shards", []) if s["state"] == "ok" and s["holder"] in alive]
        ok = len(good) == K + M and len({s["holder"] for s in good}) == K + M
    else:
        good = [h for h in doc.get("holders", [])
                if h["state"] == "ok" and h["peer_id"] in alive and h["peer_id"] != owner.peer_id]
        ok = len(good) >= REPLICAS - 1  # `--replicas 3` counts the owner's own copy
    return doc if ok else None


def holders_of(doc: dict[str, Any], scheme: str, owner: str) -> list[str]:
    """The peers holding a shard (by index) or a replica; never the owner (its own copy is listed too)."""
    if scheme == "ec":
        return [s["holder"] for s in sorted(doc["shards"], key=lambda s: s["index"])]
    return [h["peer_id"] for h in doc["holders"] if h["state"] == "ok" and h["peer_id"] != owner]


def why(owner: NodeProcess, cid: str, swarm: LocalSwarm) -> str:
    """The owner's status (its shards or holders) and the nodes' log tails, for a timeout's message."""
    doc = owner.call("GET", "/v1/status", cid=cid)
    brief = {k: doc.get(k) for k in ("role", "scheme", "shards", "holders", "shards_healthy", "replicas_ok")}
    return json.dumps(brief, indent=1)[:6000] + "\n" + "\n".join(n.log_tail(15) for n in swarm.nodes)


def shoal_cli(repo: Path, *args: str, timeout: float) -> tuple[str, float]:
    """Run the CLI; its stdout and its CPU seconds (children's rusage delta)."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([PY, "-m", "shoal.cli.main", "--repo", str(repo), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=PROJECT_ROOT, stdin=subprocess.DEVNULL,
                          env={k: v for k, v in os.environ.items() if k != "SHOAL_REPO"})
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"shoal {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return proc.stdout, (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)


# -- one scheme on one fresh swarm ---------------------------------------------------------


def start_nodes(swarm: LocalSwarm, names: list[str], bootstrap: list[str]) -> list[NodeProcess]:
    nodes = [swarm.add(n, bootstrap, start=False, timeout=60) for n in names]
    for n in nodes:
        n.start(wait=False)
    for n in nodes:
        n.wait_ready(60)
    return nodes


def ec_victims(threshold: int) -> int:
    """Shard holders to kill so that fewer than `threshold` shards stay healthy."""
    return K + M - threshold + 1


def run_scheme(cl: Cleanup, work: Path, data: Path, scheme: str, peers: int, size: int,
               round_no: int, threshold: int) -> dict[str, Any]:
    root = work / f"r{round_no}-{scheme}"
    swarm = LocalSwarm(root, ["--log-level", "WARNING", "--audit-interval", "1"], python=PY, cwd=PROJECT_ROOT)
    cl.on_close(swarm.close)
    try:
        owner = swarm.add("owner", timeout=60)
        nodes = [owner] + start_nodes(swarm, [f"p{i}" for i in range(1, peers + 1)], [owner.addr])
        for n in nodes:
            swarm.wait_connected(n, {o.peer_id for o in nodes if o is not n}, 30)
        budget = 120 + 2 * size / MIB  # bounded, generous for a shared 2-core machine
        flags = (["--ec", f"{K}+{M}", "--ec-threshold", str(threshold)] if scheme == "ec"
                 else ["--replicas", str(REPLICAS)])
        ids = {n.peer_id for n in nodes}

        span = Span(nodes)
        out, cli_cpu = shoal_cli(owner.repo, "put", str(data), *flags, "--json", timeout=budget)
        cid = str(json.loads(out)["cid"])
        doc = wait_for(lambda: placed(owner, cid, scheme, ids), budget, f"{scheme} placement of {cid}",
                       interval=0.1, details=lambda: why(owner, cid, swarm))
        put = span.end(cli_cpu)
        put["energy"] = span.energy()
        holders = holders_of(doc, scheme, owner.peer_id)
        by_id = {n.peer_id: n for n in nodes}
        put["owner_sent"] = put["traffic"]["owner"]["sent"]
        put["holders_received"] = sum(put["traffic"][by_id[h].name]["received"] for h in holders)
        put["stored_before_gc"] = {n.name: stored_bytes(n) for n in nodes}
        shoal_cli(owner.repo, "gc", timeout=budget)
        put["stored"] = {n.name: stored_bytes(n) for n in nodes}
        put["stored_total"] = sum(put["stored"].values())
        put["stored_holders"] = sum(put["stored"][by_id[h].name] for h in holders)
        put["holders"] = len(holders)
        log(f"round {round_no} {scheme}: placed in {put['seconds']:.1f}s, owner sent "
            f"{human_bytes(put['owner_sent'])}, stored {human_bytes(put['stored_total'])}")

        kills = ec_victims(threshold)  # as many spares in both swarms, so they stay alike
        spares = start_nodes(swarm, [f"spare{i + 1}" for i in range(kills)], [owner.addr])
        nodes += spares
        for n in nodes:
            swarm.wait_connected(n, {o.peer_id for o in nodes if o is not n}, 30)
        by_id.update({n.peer_id: n for n in spares})
        # The fewest losses that start a repair: one replica; for EC enough
        # shards to fall below the threshold (shard 0, then K, K + 1, ...).
        victims = ([by_id[holders[i]] for i in [0, *range(K, K + M)][:kills]] if scheme == "ec"
                   else [by_id[holders[0]]])
        lost = sum(stored_bytes(v) for v in victims)
        span = Span(nodes)
        for v in victims:
            v.kill()
        alive = {n.peer_id for n in nodes if n.running}
        doc = wait_for(lambda: placed(owner, cid, scheme, alive), budget, f"{scheme} repair of {cid}",
                       interval=0.1, details=lambda: why(owner, cid, swarm))
        rep = span.end()
        rep["energy"] = span.energy()
        new = [h for h in holders_of(doc, scheme, owner.peer_id) if h not in holders]
        rep["victims"], rep["lost_holders"], rep["victims_stored"] = [v.name for v in victims], len(victims), lost
        rep["new_holders"] = [by_id[h].name for h in new]
        rep["sent_total"] = sum(t["sent"] for t in rep["traffic"].values())
        rep["received_total"] = sum(t["received"] for t in rep["traffic"].values())
        rep["sent_per_lost_holder"] = rep["sent_total"] / len(victims)
        rep["owner_sent"] = rep["traffic"]["owner"]["sent"]
        rep["owner_received"] = rep["traffic"]["owner"]["received"]
        if scheme == "ec":
            rep["shards_rebuilt"] = doc.get("shards_rebuilt")
        log(f"round {round_no} {scheme}: healthy again {rep['seconds']:.1f}s after {len(victims)} kill(s), "
            f"{human_bytes(rep['sent_total'])} moved")
        return {"scheme": scheme, "round": round_no, "cid": cid, "put": put, "repair": rep,
                "nodes": len(nodes)}
    finally:
        swarm.close()


# -- the run and its report ------------------------------------------------------------------

PAIRED = [  # (label, phase, field)
    ("put wall s", "put", "seconds"),
    ("owner sent", "put", "owner_sent"),
    ("holders received", "put", "holders_received"),
    ("stored (swarm)", "put", "stored_total"),
    ("put CPU s (all)", "put", "cpu_total_s"),
    ("put joules", "put", "joules"),
    ("repair wall s", "repair", "seconds"),
    ("repair bytes sent", "repair", "sent_total"),
    ("repair sent / lost holder", "repair", "sent_per_lost_holder"),
    ("repair CPU s (all)", "repair", "cpu_total_s"),
    ("repair joules", "repair", "joules"),
]


def field(run: dict[str, Any], phase: str, name: str) -> float:
    p = run[phase]
    return float(p["energy"]["joules"] if name == "joules" else p[name])


def run(size: int, repeats: int, peers: int, seed: int, threshold: int = K + M) -> dict[str, Any]:
    if peers < K + M:
        raise SystemExit(f"--peers must be at least {K + M} (one peer per shard of EC {K}+{M})")
    if not K < threshold <= K + M:
        raise SystemExit(f"--ec-threshold must be from {K + 1} to {K + M} (at K no loss is ever repaired)")
    runs: list[dict[str, Any]] = []
    with Cleanup() as cl:
        work = cl.tempdir("shoal-ecswarm-")
        data = work / "object.bin"
        write_pseudorandom(data, size, seed)
        for r in range(repeats):
            order = SCHEMES if r % 2 == 0 else SCHEMES[::-1]
            for scheme in order:
                runs.append(run_scheme(cl, work, data, scheme, peers, size, r, threshold))
    pairs = []
    for r in range(repeats):
        ec = next(x for x in runs if x["round"] == r and x["scheme"] == "ec")
        rp = next(x for x in runs if x["round"] == r and x["scheme"] == "replicas")
        pairs.append({label: (field(ec, ph, f) / field(rp, ph, f)) if field(rp, ph, f) else None
                      for label, ph, f in PAIRED})
    ratios = {label: statistics.median(v for p in pairs if (v := p[label]) is not None)
              if any(p[label] is not None for p in pairs) else None for label, _, _ in PAIRED}
    methods: dict[str, int] = {}
    for x in runs:
        for ph in ("put", "repair"):
            for m, n in x[ph]["energy"]["methods"].items():
                methods[m] = methods.get(m, 0) + n
    return {"machine": machine_info(), "size": size, "repeats": repeats, "peers": peers, "k": K, "m": M,
            "ec_threshold": threshold, "ec_killed": ec_victims(threshold),
            "replicas": REPLICAS, "runs": runs, "paired_ratios": pairs, "median_ratios": ratios,
            "meters": methods}


def _fmt(label: str, v: float) -> str:
    if label.endswith(" s") or "s (" in label:
        return f"{v:.1f}"
    if "joules" in label:
        return f"{v:.0f}"
    return human_bytes(v)


def render(doc: dict[str, Any]) -> str:
    size = doc["size"]
    out = [machine_line(doc["machine"]),
           f"object {human_bytes(size)}; owner + {doc['peers']} peers (+{doc['ec_killed']} spare(s) for the repair; it kills 1 replica holder, {doc['ec_killed']} EC shard holder(s): put --ec-threshold {doc['ec_threshold']}), fresh swarm per "
           f"scheme and round; EC {doc['k']}+{doc['m']} vs replicas {doc['replicas']}; {doc['repeats']} round(s); "
           f"meter: {', '.join(f'{m} ({n} rows)' for m, n in sorted(doc['meters'].items())) or 'no ledger rows'}", ""]
    rows = []
    for x in doc["runs"]:
        p, r = x["put"], x["repair"]
        rows.append([x["round"], "EC 4+2" if x["scheme"] == "ec" else f"replicas {doc['replicas']}",
                     f"{p['seconds']:.1f}", human_bytes(p["owner_sent"]), human_bytes(p["holders_received"]),
                     human_bytes(p["stored_total"]), f"{p['stored_total'] / size:.2f}x", f"{p['cpu_total_s']:.1f}",
                     f"{p['energy']['joules']:.0f}",
                     f"{r['seconds']:.1f}", human_bytes(r["sent_total"]), human_bytes(r["owner_received"]),
                     f"{r['cpu_total_s']:.1f}", f"{r['energy']['joules']:.0f}"])
    out.append(format_table(
        ["round", "scheme", "put s", "owner sent", "holders recv", "stored", "stored/obj", "put CPU s", "put J (no audits)",
         "repair s", "repair sent", "owner recv", "repair CPU s", "repair J (no audits)"], rows))
    out.append("")
    head = ["ratio EC/replicas"] + [f"round {i}" for i in range(len(doc["paired_ratios"]))] + ["median"]
    out.append(format_table(head, [[label] + [("" if p[label] is None else f"{p[label]:.2f}")
                                              for p in doc["paired_ratios"]]
                                   + ["" if doc["median_ratios"][label] is None else f"{doc['median_ratios'][label]:.2f}"]
                                   for label, _, _ in PAIRED]))
    out.append("")
    for x in doc["runs"]:
        kinds = {**{f"put {k}": v for k, v in x["put"]["energy"]["kinds"].items()},
                 **{f"repair {k}": v for k, v in x["repair"]["energy"]["kinds"].items()}}
        out.append(f"round {x['round']} {x['scheme']}: " + "; ".join(
            f"{k} {v['joules']:.1f} J ({'/'.join(v['methods'])})" for k, v in sorted(kinds.items())))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--size", type=parse_size, default=256 * MIB)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--peers", type=int, default=K + M, help="peers besides the owner (default 6)")
    ap.add_argument("--ec-threshold", type=int, default=K + M,
                    help=f"put --ec-threshold: repair below N healthy shards (default {K + M}: one lost shard "
                         f"is repaired at once; {K + 1}, the node's default, waits for two)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    doc = run(args.size, args.repeats, args.peers, args.seed, args.ec_threshold)
    print(render(doc), flush=True)
    if args.json:
        write_json(args.json, doc)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
