"""Simulate the real sans-IO Kademlia code (shoal.p2p.dht) on 1,000-10,000 nodes.

Every node owns a real `RoutingTable` and `ProviderStore`; every lookup is a
real `Lookup` state machine; every response is a real kad `Message`, encoded
and decoded through the protobuf codec (`--no-wire` skips that to save time).
Only the network is simulated: an event queue (heapq) on a virtual clock, a
one-way delay per pair of nodes drawn once from a log-normal distribution
(median 50 ms, sigma 0.6, clipped to 10-200 ms), a request costing one round
trip plus `--dial-rtts` extra round trips the first time two nodes talk
(TCP + Noise handshakes; multistream and yamux pipelined), and silently dead
nodes that never answer (the lookup marks them slow after 2 s and
the requester's 5 s timeout evicts them from its table).

Routing tables (justification of the fast join): a Kademlia network in
steady state -- every node joined through a bootstrap peer, did its
self-lookup and refreshed each bucket with a lookup of a random key in that
bucket's range -- has in bucket i of node x up to k peers drawn from all
peers whose key shares exactly i bits with x's (the keep-old-peers rule
keeps whichever arrived first, which is unrelated to their keys). We build
exactly that directly: sort the keys, find each bucket's key range by
bisection and offer a random sample of it to the node's real
`RoutingTable.add` (so the diversity limit applies). `--join lookup` builds
the tables the slow way instead (each node joins through a bootstrap node
with a self-lookup and one refresh lookup per bucket) to check the two give
the same lookup statistics.

Experiments:
1. lookups: for each N, FIND_NODE of a random live node from a random live
   node with 0 %, 10 % and 30 % of the nodes silently dead (dead after the
   tables were built, so the tables still list them); success = the target
   answered. Reports median/p95 hops (referral depth of the target), messages
   per lookup, virtual latency; the log fit of hops and latency against N.
2. churn: 48 virtual hours; uptime and downtime per node Weibull (shape 0.6,
   heavy tail); a node coming back does a self-lookup (which puts it back in
   the tables of the peers it asks); providers announce P keys to the k
   closest (lookup with follow-up, then ADD_PROVIDER) every 22 h while online
   and at once when they come back overdue; records expire after 48 h; every
   hour a random online node looks each key up (GET_PROVIDERS).

Not modelled: bandwidth and CPU, NAT and client-mode nodes, packet loss, the
connection manager closing idle connections, periodic bucket refresh during
the churn run (tables only heal by eviction on timeout and by rejoin
self-lookups: conservative), malicious nodes.

Usage: python bench/dht_sim.py [--quick] [--sizes 1000,2000] [--plot out.png] [--json out.json]
"""

from __future__ import annotations

import argparse
import bisect
import heapq
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.p2p.dht import K
from shoal.p2p.dht.keys import KEY_BITS, common_prefix_len, kad_key
from shoal.p2p.dht.messages import Message, MessageType, PeerInfo, decode, encode
from shoal.p2p.dht.providers import ProvideSchedule, ProviderStore
from shoal.p2p.dht.query import REQUEST_TIMEOUT, SLOW_AFTER, Done, Lookup, SendRequest
from shoal.p2p.dht.routing_table import RoutingTable

HOUR = 3600.0


@dataclass
class Params:
    seed: int = 1
    k: int = K
    alpha: int = 10
    beta: int = 3
    timeout: float = REQUEST_TIMEOUT
    dial_rtts: int = 2
    wire: bool = True
    window: bool = True
    slow_after: float | None = SLOW_AFTER
    latency_median: float = 0.050
    latency_sigma: float = 0.6


@dataclass
class SimNode:
    idx: int
    peer_id: bytes
    key: int
    ip: str
    info: PeerInfo
    table: RoutingTable
    providers: ProviderStore
    alive: bool = True
    contacts: set[int] = field(default_factory=set)


@dataclass
class LookupResult:
    done: Done
    latency: float


class Network:
    """N simulated nodes, each running the real routing table, provider store and lookups."""

    def __init__(self, n: int, params: Params, *, expiry: float = 48 * HOUR) -> None:
        self.p = params
        self.rng = random.Random(params.seed * 1_000_003 + n)
        self.nodes: list[SimNode] = []
        self.by_id: dict[bytes, int] = {}
        lat = random.Random(params.seed)
        mu = math.log(params.latency_median)
        self._lat = [
            min(0.200, max(0.010, lat.lognormvariate(mu, params.latency_sigma))) for _ in range(1 << 16)
        ]
        for i in range(n):
            pid = b"\x12\x20" + self.rng.randbytes(32)  # a sha256 multihash peer id
            ip = f"{self.rng.randrange(1, 224)}.{self.rng.randrange(256)}.{self.rng.randrange(256)}.{self.rng.randrange(1, 255)}"
            node = SimNode(
                i, pid, kad_key(pid), ip, PeerInfo(pid, (f"/ip4/{ip}/tcp/4001".encode(),)),
                RoutingTable(pid, k=params.k), ProviderStore(expiry=expiry),
            )
            self.nodes.append(node)
            self.by_id[pid] = i
        self.messages = 0

    # -- network ---------------------------------------------------------------

    def one_way(self, a: int, b: int) -> float:
        lo, hi = (a, b) if a < b else (b, a)
        return self._lat[(lo * 2_654_435_761 ^ hi * 40_503) & 0xFFFF]

    def _checks(self, node: SimNode, now: float) -> None:
        # Liveness checks are answered from the ground truth at once: their
        # timing does not affect what the lookups measure.
        for pid in node.table.liveness_checks():
            node.table.liveness_result(pid, self.nodes[self.by_id[pid]].alive, now)

    # -- tables ----------------------------------------------------------------

    def populate_fast(self) -> None:
        """Converged tables: bucket i of x holds a random sample of the peers at cpl i (see module doc)."""
        order = sorted(range(len(self.nodes)), key=lambda i: self.nodes[i].key)
        keys = [self.nodes[i].key for i in order]
        for pos, idx in enumerate(order):
            node = self.nodes[idx]
            # The deepest non-empty bucket is the one of the nearest key in sorted order.
            near = [keys[q] for q in (pos - 1, pos + 1) if 0 <= q < len(keys)]
            deepest = max((common_prefix_len(node.key, x) for x in near), default=-1)
            for cpl in range(deepest + 1):
                shift = KEY_BITS - 1 - cpl
                prefix = (node.key >> shift) ^ 1
                lo = bisect.bisect_left(keys, prefix << shift)
                hi = bisect.bisect_left(keys, (prefix + 1) << shift)
                span = range(lo, hi)
                for q in self.rng.sample(span, min(len(span), self.p.k + 5)):
                    if len(node.table.bucket(cpl)) >= self.p.k:
                        break
                    peer = self.nodes[order[q]]
                    node.table.add(peer.peer_id, 0.0, ip=peer.ip)

    def populate_join(self) -> None:
        """Tables built by real joins: bootstrap peer, self-lookup, one refresh lookup per bucket."""
        now = 0.0
        for node in self.nodes[1:]:
            boot = self.nodes[self.rng.randrange(node.idx)]
            node.table.add(boot.peer_id, now, ip=boot.ip)
            res = self.lookup(node, MessageType.FIND_NODE, node.peer_id, now, followup=True)
            now += res.latency
            for cpl in node.table.stale_buckets(now + node.table.refresh_interval):
                target = node.table.refresh_id(cpl, self.rng.randbytes)
                res = self.lookup(node, MessageType.FIND_NODE, target, now)
                now += res.latency

    # -- lookups ---------------------------------------------------------------

    def lookup(
        self, origin: SimNode, kind: MessageType, key: bytes, now: float, *,
        followup: bool = False, want_providers: int = K,
    ) -> LookupResult:
        """Run one real `Lookup` from `origin` to completion on the virtual clock."""
        target = kad_key(key)
        seeds = [self.nodes[self.by_id[e.peer_id]].info for e in origin.table.closest(target, self.p.k)]
        lk = Lookup(
            origin.peer_id, kind, key, seeds, alpha=self.p.alpha, beta=self.p.beta, k=self.p.k,
            request_timeout=self.p.timeout, want_providers=want_providers, followup=followup,
            window=self.p.window, slow_after=self.p.slow_after,
        )
        # (time, seq, peer index, kind): 0 = answer arrives, 1 = a dead peer's timeout, 2 = clock tick
        heap: list[tuple[float, int, int, int]] = []
        seq = 0
        start = now

        def dispatch(events: list[SendRequest | Done], t: float) -> None:
            nonlocal seq
            for ev in events:
                if isinstance(ev, Done):
                    return
                j = self.by_id[ev.peer.id]
                peer = self.nodes[j]
                rtt = 2 * self.one_way(origin.idx, j)
                if j not in origin.contacts:
                    rtt *= 1 + self.p.dial_rtts
                    origin.contacts.add(j)
                    peer.contacts.add(origin.idx)
                self.messages += 1
                seq += 1
                if peer.alive:
                    heapq.heappush(heap, (t + rtt, seq, j, 0))
                else:
                    heapq.heappush(heap, (t + self.p.timeout, seq, j, 1))
            deadline = lk.next_deadline()
            if deadline is not None:
                seq += 1
                heapq.heappush(heap, (deadline, seq, -1, 2))

        dispatch(lk.start(now), now)
        while lk.done is None and heap:
            t, _, j, what = heapq.heappop(heap)
            now = t
            if what == 2:
                dispatch(lk.on_tick(t), t)
                continue
            peer = self.nodes[j]
            if what == 0:
                resp = self.serve(peer, origin, lk.kind, key, t)
                if self.p.wire:
                    resp = decode(encode(resp))
                origin.table.add(peer.peer_id, t, ip=peer.ip)
                self._checks(origin, t)
                dispatch(lk.on_response(peer.peer_id, resp, t), t)
            else:
                origin.table.remove(peer.peer_id, t)
                dispatch(lk.on_tick(t), t)
        assert lk.done is not None, "lookup neither finished nor has events pending"
        # The driver lets dials to dead peers run out after the lookup and evicts them then.
        for _, _, j, what in heap:
            if what == 1:
                origin.table.remove(self.nodes[j].peer_id, now)
        origin.table.mark_refreshed(target, now)
        return LookupResult(lk.done, now - start)

    def serve(self, server: SimNode, requester: SimNode, kind: MessageType, key: bytes, now: float) -> Message:
        """What `server` answers: its k closest (minus the requester), plus providers."""
        server.table.add(requester.peer_id, now, ip=requester.ip)
        self._checks(server, now)
        closer = [
            self.nodes[self.by_id[e.peer_id]].info
            for e in server.table.closest(kad_key(key), self.p.k + 1)
            if e.peer_id != requester.peer_id
        ][: self.p.k]
        providers: tuple[PeerInfo, ...] = ()
        if kind is MessageType.GET_PROVIDERS:
            providers = tuple(
                PeerInfo(r.peer_id, r.addrs) for r in server.providers.get(key, now)
            )
        return Message(kind, key=key, closer_peers=tuple(closer), provider_peers=providers)

    def provide(self, origin: SimNode, mh: bytes, now: float) -> int:
        """Announce `origin` as provider of `mh` to the k closest it can find; returns how many stored it."""
        res = self.lookup(origin, MessageType.FIND_NODE, mh, now, followup=True)
        msg = Message(MessageType.ADD_PROVIDER, key=mh, provider_peers=(origin.info,))
        stored = 0
        for info in res.done.closest:
            holder = self.nodes[self.by_id[info.id]]
            self.messages += 1
            if holder.alive:
                got = decode(encode(msg)) if self.p.wire else msg
                # As go does, a server only records the sender itself as provider.
                for prov in got.provider_peers:
                    if prov.id == origin.peer_id and holder.providers.add(got.key, prov.id, prov.addrs, now):
                        stored += 1
        return stored


# -- experiments ---------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(math.ceil(q * len(s))) - 1)] if s else float("nan")


def lookup_experiment(n: int, dead_frac: float, lookups: int, params: Params, net: Network) -> dict[str, Any]:
    rng = random.Random(params.seed * 7 + int(dead_frac * 100))
    for node in net.nodes:
        node.alive = True
    dead = rng.sample(range(n), int(dead_frac * n))
    for i in dead:
        net.nodes[i].alive = False
    live = [node for node in net.nodes if node.alive]
    hops: list[float] = []
    msgs: list[float] = []
    lats: list[float] = []
    ok = 0
    now = 1000.0
    for _ in range(lookups):
        origin, target = rng.sample(live, 2)
        res = net.lookup(origin, MessageType.FIND_NODE, target.peer_id, now)
        now += 60.0
        found = any(p.id == target.peer_id for p in res.done.closest)
        ok += found
        msgs.append(res.done.messages)
        lats.append(res.latency)
        if found:
            hops.append(res.done.hops)
    return {
        "n": n, "dead": dead_frac, "lookups": lookups, "success": ok / lookups,
        "hops_median": statistics.median(hops) if hops else float("nan"),
        "hops_mean": statistics.fmean(hops) if hops else float("nan"),
        "hops_p95": pct(hops, 0.95),
        "msgs_median": statistics.median(msgs), "msgs_mean": statistics.fmean(msgs), "msgs_p95": pct(msgs, 0.95),
        "latency_median": statistics.median(lats), "latency_p95": pct(lats, 0.95),
    }


def churn_experiment(n: int, keys: int, hours: int, every: float, params: Params) -> dict[str, Any]:
    """Provider-record availability over `hours` virtual hours with heavy-tailed churn."""
    net = Network(n, params)
    net.populate_fast()
    rng = random.Random(params.seed * 13)
    shape, up_scale, down_scale = 0.6, 4 * HOUR, 4 * HOUR
    mean_up = up_scale * math.gamma(1 + 1 / shape)
    mean_down = down_scale * math.gamma(1 + 1 / shape)
    events: list[tuple[float, int, str, int]] = []
    seq = 0
    for node in net.nodes:
        node.alive = rng.random() < mean_up / (mean_up + mean_down)
        # A residual first session (heavy-tailed too), then alternating sessions.
        first = rng.weibullvariate(up_scale if node.alive else down_scale, shape) * rng.random()
        seq += 1
        events.append((first, seq, "flip", node.idx))
    schedules: dict[int, ProvideSchedule] = {}
    key_owner: list[tuple[bytes, int]] = []
    online = [node for node in net.nodes if node.alive]
    for _ in range(keys):
        mh = b"\x12\x20" + rng.randbytes(32)
        owner = rng.choice(online)
        schedules.setdefault(owner.idx, ProvideSchedule(republish=22 * HOUR)).provide(mh, 0.0)
        key_owner.append((mh, owner.idx))
    for owner_idx in schedules:
        seq += 1
        events.append((0.0, seq, "provide", owner_idx))
    t = every
    while t <= hours * HOUR + 1e-6:
        seq += 1
        events.append((t, seq, "measure", 0))
        t += every
    heapq.heapify(events)
    series: list[dict[str, float]] = []
    rejoins = provides = 0
    while events:
        now, _, kind, idx = heapq.heappop(events)
        if now > hours * HOUR + 1e-6:
            break
        node = net.nodes[idx]
        if kind == "flip":
            node.alive = not node.alive
            nxt = rng.weibullvariate(up_scale if node.alive else down_scale, shape)
            seq += 1
            heapq.heappush(events, (now + nxt, seq, "flip", idx))
            if node.alive:
                rejoins += 1
                net.lookup(node, MessageType.FIND_NODE, node.peer_id, now)
                if idx in schedules:
                    seq += 1
                    heapq.heappush(events, (now, seq, "provide", idx))
        elif kind == "provide":
            sched = schedules[idx]
            if node.alive:
                for mh in sched.due(now):
                    net.provide(node, mh, now)
                    provides += 1
                due = sched.next_due()
                if due is not None:
                    seq += 1
                    heapq.heappush(events, (due, seq, "provide", idx))
        else:
            online = [x for x in net.nodes if x.alive]
            found = found_owner_up = owner_up = 0
            for mh, owner_idx in key_owner:
                asker = rng.choice(online)
                res = net.lookup(asker, MessageType.GET_PROVIDERS, mh, now, want_providers=1)
                hit = any(p.id == net.nodes[owner_idx].peer_id for p in res.done.providers)
                found += hit
                if net.nodes[owner_idx].alive:
                    owner_up += 1
                    found_owner_up += hit
            series.append({
                "hour": now / HOUR, "online": len(online) / n, "available": found / keys,
                "available_owner_online": found_owner_up / owner_up if owner_up else float("nan"),
            })
    avail = [s["available"] for s in series]
    avail_up = [s["available_owner_online"] for s in series if not math.isnan(s["available_owner_online"])]
    return {
        "n": n, "keys": keys, "hours": hours, "rejoins": rejoins, "provides": provides,
        "online_mean": statistics.fmean(s["online"] for s in series),
        "available_mean": statistics.fmean(avail), "available_min": min(avail),
        "available_owner_online_mean": statistics.fmean(avail_up) if avail_up else float("nan"),
        "available_owner_online_min": min(avail_up) if avail_up else float("nan"),
        "series": series,
    }


def log_fit(xs: list[int], ys: list[float]) -> dict[str, float]:
    """Least squares y = a + b*log2(x), with R^2."""
    lx = [math.log2(x) for x in xs]
    mx, my = statistics.fmean(lx), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in lx)
    b = sum((x - mx) * (y - my) for x, y in zip(lx, ys)) / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(lx, ys))
    return {"a": a, "b_per_log2N": b, "r2": 1 - ss_res / ss_tot if ss_tot else 1.0}


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for dead in sorted({r["dead"] for r in rows}):
        sel = sorted((r for r in rows if r["dead"] == dead), key=lambda r: r["n"])
        ns = [r["n"] for r in sel]
        ax1.plot(ns, [r["hops_mean"] for r in sel], marker="o", label=f"mean, {dead:.0%} dead")
        ax1.plot(ns, [r["hops_p95"] for r in sel], marker="x", linestyle="--", label=f"p95, {dead:.0%} dead")
        ax2.plot(ns, [r["latency_median"] for r in sel], marker="o", label=f"median, {dead:.0%} dead")
        ax2.plot(ns, [r["latency_p95"] for r in sel], marker="x", linestyle="--", label=f"p95, {dead:.0%} dead")
    for ax, title, unit in ((ax1, "lookup hops", "hops"), (ax2, "lookup latency (virtual)", "seconds")):
        ax.set_xscale("log")
        ax.set_xlabel("nodes N (log)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Shoal Kademlia (k=20, alpha=10, beta=3), simulated")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI-sized: N up to 1,000, fewer lookups, short churn run")
    ap.add_argument("--sizes", default=None, help="comma-separated N (default 1000,2000,5000,10000)")
    ap.add_argument("--lookups", type=int, default=None, help="lookups per (N, dead fraction)")
    ap.add_argument("--dead", default="0,0.1,0.3", help="dead fractions")
    ap.add_argument("--churn-n", type=int, default=None)
    ap.add_argument("--churn-keys", type=int, default=None)
    ap.add_argument("--no-churn", action="store_true")
    ap.add_argument("--join", choices=("fast", "lookup"), default="fast")
    ap.add_argument("--no-wire", action="store_true", help="skip the protobuf encode/decode of each response")
    ap.add_argument("--no-window", action="store_true", help="go's rule: also ask heard peers beyond the k closest")
    ap.add_argument("--no-slow", action="store_true", help="go's rule: an unanswered request holds its slot until the timeout")
    ap.add_argument("--dial-rtts", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    params = Params(seed=args.seed, wire=not args.no_wire, dial_rtts=args.dial_rtts, window=not args.no_window,
                    slow_after=None if args.no_slow else SLOW_AFTER)
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else (
        [200, 500, 1000] if args.quick else [1000, 2000, 5000, 10000])
    lookups = args.lookups or (100 if args.quick else 500)
    deads = [float(x) for x in args.dead.split(",")]
    rows: list[dict[str, Any]] = []
    print(f"{'N':>6} {'dead':>5} {'ok%':>6} {'hops med':>8} {'p95':>4} {'mean':>5} "
          f"{'msgs med':>8} {'p95':>4} {'lat med s':>9} {'p95 s':>6}  build/run s")
    for n in sizes:
        for dead in deads:
            # A fresh network per dead fraction (same seed, same tables): runs do not share evictions.
            t0 = time.process_time()
            net = Network(n, params)
            if args.join == "fast":
                net.populate_fast()
            else:
                net.populate_join()
            build = time.process_time() - t0
            t1 = time.process_time()
            row = lookup_experiment(n, dead, lookups, params, net)
            row["build_cpu_s"], row["run_cpu_s"] = build, time.process_time() - t1
            row["table_mean"] = statistics.fmean(len(x.table) for x in net.nodes)
            rows.append(row)
            print(f"{n:>6} {dead:>5.0%} {100 * row['success']:>6.1f} {row['hops_median']:>8.1f} "
                  f"{row['hops_p95']:>4.0f} {row['hops_mean']:>5.2f} {row['msgs_median']:>8.0f} "
                  f"{row['msgs_p95']:>4.0f} {row['latency_median']:>9.3f} {row['latency_p95']:>6.3f}"
                  f"  {build:.1f}/{row['run_cpu_s']:.1f}", flush=True)
    fits = {}
    for dead in deads:
        sel = sorted((r for r in rows if r["dead"] == dead), key=lambda r: r["n"])
        if len(sel) >= 2:
            fits[f"{dead:.0%} dead"] = {
                "hops_mean": log_fit([r["n"] for r in sel], [r["hops_mean"] for r in sel]),
                "msgs_mean": log_fit([r["n"] for r in sel], [r["msgs_mean"] for r in sel]),
                "latency_median": log_fit([r["n"] for r in sel], [r["latency_median"] for r in sel]),
            }
    for label, fit in fits.items():
        print(f"log fit ({label}): " + "; ".join(
            f"{name} = {f['a']:.2f} + {f['b_per_log2N']:.3f}*log2(N) (R^2 {f['r2']:.2f})"
            for name, f in fit.items()))
    churn: dict[str, Any] | None = None
    if not args.no_churn:
        cn = args.churn_n or (300 if args.quick else 2000)
        ck = args.churn_keys or (10 if args.quick else 100)
        hours = 12 if args.quick else 48
        t2 = time.process_time()
        churn = churn_experiment(cn, ck, hours, HOUR, params)
        print(f"churn N={cn}, {ck} keys, {hours} h: online {churn['online_mean']:.0%} on average, "
              f"{churn['rejoins']} rejoins, {churn['provides']} provides; record found in "
              f"{churn['available_mean']:.1%} of hourly lookups (worst hour {churn['available_min']:.1%}); "
              f"when the provider is online {churn['available_owner_online_mean']:.1%} "
              f"(worst {churn['available_owner_online_min']:.1%})  [{time.process_time() - t2:.1f} s CPU]")
        print("hour: " + " ".join(f"{s['hour']:.0f}:{s['available']:.0%}" for s in churn["series"]))
    if args.plot:
        plot(rows, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({"lookups": rows, "fits": fits, "churn": churn}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
