"""`shoal routing findprovs CID | findpeer PEERID | table`: the running node's DHT.

Every subcommand asks the node (its /v1/routing/* routes); the DHT lives in
the node, so there is no offline side. Text output is one line per peer;
`--json` prints the documents of docs/CLI.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from shoal.cli.dispatch import run
from shoal.cli.errors import CliError
from shoal.cli.output import print_json


def register(sub: Any) -> None:
    routing = sub.add_parser("routing", help="content routing: the node's DHT (needs a running node)")
    routing_sub = routing.add_subparsers(dest="routing_command", metavar="findprovs|findpeer|table",
                                         required=True)
    p = routing_sub.add_parser("findprovs", help="peers that provide CID, found in the DHT")
    p.add_argument("cid", metavar="CID", help="the content to find providers of")
    p.add_argument("--count", type=int, default=20, metavar="N",
                   help="stop after N providers, 1..100 (default: %(default)s)")
    p.set_defaults(handler=cmd_findprovs)
    p = routing_sub.add_parser("findpeer", help="the addresses of PEERID, found in the DHT")
    p.add_argument("peer", metavar="PEERID", help="the peer id to look up")
    p.set_defaults(handler=cmd_findpeer)
    p = routing_sub.add_parser("table", help="the node's DHT routing table")
    p.set_defaults(handler=cmd_table)


def _needs_node() -> CliError:
    return CliError("no running node for this repo: the DHT runs in the node",
                    hint="start one with `shoal node start`")


def cmd_findprovs(args: argparse.Namespace) -> int:
    if not 1 <= args.count <= 100:
        raise CliError(f"--count must be 1..100, not {args.count}")
    found: list[dict[str, Any]] = run(
        args, node=lambda c: list(c.call("GET", "/v1/routing/findprovs", cid=args.cid, count=args.count)),
        offline=None, needs_node=_needs_node())
    if args.json:
        print_json(found)
    else:
        for prov in found:
            print(prov["peer_id"], " ".join(prov["addrs"]))
    return 0


def cmd_findpeer(args: argparse.Namespace) -> int:
    found: dict[str, Any] = run(
        args, node=lambda c: dict(c.call("GET", "/v1/routing/findpeer", peer=args.peer)),
        offline=None, needs_node=_needs_node())
    if args.json:
        print_json(found)
    else:
        for addr in found["addrs"]:
            print(addr)
    return 0


def cmd_table(args: argparse.Namespace) -> int:
    table: dict[str, Any] = run(args, node=lambda c: dict(c.call("GET", "/v1/routing/table")),
                                offline=None, needs_node=_needs_node())
    if args.json:
        print_json(table)
    else:
        print(f"mode {table['mode']}, {table['size']} peer(s)")
        for peer in table["peers"]:
            print(f"{peer['bucket']:3d} {peer['peer_id']} {' '.join(peer['addrs'])}")
    return 0
