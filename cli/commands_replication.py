"""Commands about replicas: `shoal status CID` and `shoal audit CID`.

Both go through the running node (its replication state lives there); the
node answers from its agreements tables (p2p.agreements).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from store.cid import parse_cid
from store.repo import resolve_repo_path

from .errors import CliError
from .node_client import connect
from .output import print_json


def register(sub: Any) -> None:
    p = sub.add_parser("status", help="replicas of an object: holders, their state, last audit")
    p.add_argument("cid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)

    p = sub.add_parser("audit", help="run one proof-of-storage audit round of an object now")
    p.add_argument("cid")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_audit)


def _client(args: argparse.Namespace) -> Any:
    client = connect(resolve_repo_path(args.repo))
    if client is None:
        raise CliError("no running node for this repo", hint="start one with `shoal node start`")
    return client


def _ago(t: float | None) -> str:
    if t is None:
        return "never"
    return f"{max(0.0, time.time() - t):.0f}s ago"


def cmd_status(args: argparse.Namespace) -> int:
    cid = str(parse_cid(args.cid))
    doc = _client(args).call("GET", "/v1/status", cid=cid)
    if args.json:
        print_json(doc)
        return 0
    ok = doc.get("replicas_ok")
    print(f"{doc['cid']}  role {doc.get('role', '?')}  replicas {'?' if ok is None else ok}/{doc['replicas_wanted']} ok")
    for h in doc["holders"]:
        last = h.get("last_audit")
        audit = "never audited" if last is None else f"audit {'passed' if last['ok'] else 'FAILED'} {_ago(last['time'])}"
        print(f"  {h['peer_id']}  {h['state']:<7}  {audit}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    cid = str(parse_cid(args.cid))
    doc = _client(args).call("POST", "/v1/audit", {"cid": cid})
    if args.json:
        print_json(doc)
        return 0
    for r in doc["results"]:
        verdict = "ok" if r["ok"] else f"FAILED ({r['outcome']}: {r['error']})"
        print(f"{r['peer_id']}  {r['challenged']} challenges  {verdict}")
    return 0 if all(r["ok"] for r in doc["results"]) else 1
