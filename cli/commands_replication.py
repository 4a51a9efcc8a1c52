"""Commands about replicas: `shoal status CID` and `shoal audit CID`.

Both go through the running node (its replication state lives there); the
node answers from its agreements tables (shoal.p2p.replication.agreements).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from shoal.store.ipld.cid import parse_cid
from shoal.cli.dispatch import run
from shoal.cli.node_client import NodeClient
from shoal.cli.output import plural, print_json


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="replicas of an object: holders, their state, last audit (needs a running node)")
    p.add_argument("cid", help="CID of an object this node owns or holds")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("audit", help="run one proof-of-storage audit round of an object now (needs a running node)")
    p.add_argument("cid", help="CID of an object this node owns")
    p.set_defaults(handler=cmd_audit)


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    return f"{max(0.0, time.time() - t):.0f}s ago"


def cmd_status(args: argparse.Namespace) -> int:
    cid = str(parse_cid(args.cid))

    def node(client: NodeClient) -> dict[str, Any]:
        doc = dict(client.call("GET", "/v1/status", cid=cid))
        doc["shortfall"] = shortfall(doc, client.call("GET", "/v1/peers"))
        return doc

    doc = run(args, node=node, offline=None)
    if args.json:
        print_json(doc)
        return 0
    if "ec" in (doc.get("scheme") or {}):
        k, m = doc["scheme"]["ec"]
        print(f"{doc['cid']}  role {doc.get('role', '?')}  erasure-coded {k}+{m}  "
              f"{doc['shards_healthy']} of {k + m} shards healthy, survives {doc['survives_losses']} more losses")
        for s in doc["shards"]:
            last = s.get("last_audit")
            audit = "never audited" if last is None else f"audit {'passed' if last['ok'] else 'FAILED'} {_ago(last['time'])}"
            print(f"  shard {s['index']:>2}  {s['holder'] or '-'}  {s['state']:<8}  {audit}")
        return 0
    ok = doc.get("replicas_ok")
    wanted = int(doc["replicas_wanted"])
    print(f"{doc['cid']}  role {doc.get('role', '?')}  "
          f"{'?' if ok is None else ok} of {plural(wanted, 'copy', 'copies')} ok")
    if doc["shortfall"]:
        print(f"  under-replicated: {doc['shortfall']}")
    for h in doc["holders"]:
        last = h.get("last_audit")
        audit = "never audited" if last is None else f"audit {'passed' if last['ok'] else 'FAILED'} {_ago(last['time'])}"
        print(f"  {h['peer_id']}  {h['state']:<7}  {audit}")
    return 0


def shortfall(status: dict[str, Any], peers: list[dict[str, Any]]) -> str | None:
    """Why an owned object has fewer good copies than wanted, or None.

    The node knows the holder states; which of them (and whether the swarm
    is simply too small) explains the gap is what a user asks next.
    """
    ok, wanted = status.get("replicas_ok"), status.get("replicas_wanted")
    if status.get("role") != "owner" or not isinstance(ok, int) or not isinstance(wanted, int) or ok >= wanted:
        return None
    holders = status.get("holders") or []
    states: dict[str, int] = {}
    for h in holders:
        states[h.get("state", "?")] = states.get(h.get("state", "?"), 0) + 1
    holding = {h.get("peer_id") for h in holders if h.get("state") in ("ok", "pending")}
    free = [p for p in peers if p.get("connected") and p.get("peer_id") not in holding]
    reasons = []
    if states.get("pending"):
        reasons.append(f"{plural(states['pending'], 'copy', 'copies')} still being placed")
    if states.get("failed"):
        reasons.append(f"{plural(states['failed'], 'holder')} refused or missed an audit")
    if states.get("lost"):
        reasons.append(f"{plural(states['lost'], 'holder')} lost its copy")
    missing = wanted - ok - states.get("pending", 0)
    if missing > len(free):
        reasons.append(f"{plural(len(free), 'other connected peer')} can take a copy, "
                       f"{missing} more needed: connect more peers (shoal node start --bootstrap)")
    return f"{ok} of {wanted} copies ok; " + ("; ".join(reasons) if reasons else "placement is retried")


def cmd_audit(args: argparse.Namespace) -> int:
    cid = str(parse_cid(args.cid))
    doc = run(args, node=lambda client: client.call("POST", "/v1/audit", {"cid": cid}), offline=None)
    if args.json:
        print_json(doc)
        return 0
    for r in doc["results"]:
        verdict = "ok" if r["ok"] else f"FAILED ({r['outcome']}: {r['error']})"
        print(f"{r['peer_id']}  {r['challenged']} challenges  {verdict}")
    return 0 if all(r["ok"] for r in doc["results"]) else 1
