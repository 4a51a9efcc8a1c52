"""Commands about the running peer: node start, id, peers (and the demo)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.repo import Repo, resolve_repo_path

from .errors import CliError
from .node_client import connect
from .output import print_json

if TYPE_CHECKING:
    from p2p.identity import PeerId
    from p2p.pnet import SwarmKey


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="run a peer")
    node_sub = node.add_subparsers(dest="node_command", metavar="start", required=True)
    p = node_sub.add_parser("start", help="run a peer in the foreground until Ctrl-C / SIGTERM")
    p.add_argument("--listen", action="append", metavar="MADDR",
                   help="peer address to listen on (default /ip4/127.0.0.1/tcp/0); repeatable")
    p.add_argument("--bootstrap", action="append", metavar="MADDR", default=[],
                   help="peer to dial at start, /ip4/H/tcp/P/p2p/ID; repeatable")
    p.add_argument("--api", metavar="HOST:PORT", default="127.0.0.1:0",
                   help="control API address, loopback only (default %(default)s)")
    p.add_argument("--quota", metavar="SIZE", help="most bytes to hold for other peers (e.g. 10G)")
    p.add_argument("--audit-interval", type=float, metavar="SECONDS",
                   help="seconds between audit rounds of this node's objects")
    p.add_argument("--swarm-key", metavar="FILE",
                   help="run a private swarm: only peers with this libp2p swarm.key (PSK) can connect "
                        "(default: config [node] swarm_key, else <repo>/swarm.key if it exists, else public)")
    p.add_argument("--allow-peers", metavar="FILE",
                   help="keep connections only with the peer ids in FILE, one per line, # comments "
                        "(default: config [node] allow_peers, else anyone)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once if another shoal process is writing the repo (default: wait for it)")
    p.set_defaults(handler=cmd_node_start)

    p = sub.add_parser("id", help="this node's peer id and addresses")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_id)

    p = sub.add_parser("peers", help="peers this node knows")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_peers)


def parse_size(text: str) -> int:
    """'10G', '512M', '1.5T', '1000' -> bytes (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in units else ""
    number = t[: len(t) - len(unit)] if unit else t
    try:
        value = float(number)
    except ValueError:
        raise CliError(f"not a size: {text!r}", hint="use e.g. 500M, 10G, 2T") from None
    if value < 0:
        raise CliError(f"size must not be negative: {text!r}")
    return int(value * units[unit])


def cmd_node_start(args: argparse.Namespace) -> int:
    import trio

    from p2p.multiaddr import Multiaddr
    from p2p.node import NodeLimits, NodeOptions
    from p2p.service import parse_api_bind, run_node

    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    listen = [Multiaddr.parse(a) for a in (args.listen or ["/ip4/127.0.0.1/tcp/0"])]
    bootstrap = [Multiaddr.parse(a) for a in args.bootstrap]
    api_bind = parse_api_bind(args.api)
    def waiting(who: str) -> None:
        print(f"shoal: waiting for {who} to finish with the repo (--no-wait to fail instead)",
              file=sys.stderr, flush=True)

    with Repo.open(resolve_repo_path(args.repo), node=True, wait=not args.no_wait, on_wait=waiting) as repo:
        node_cfg = repo.config.get("node", {}) if isinstance(repo.config.get("node"), dict) else {}
        quota_text = args.quota or node_cfg.get("quota")
        swarm_key, allow_peers = _membership(args, node_cfg, repo.path)
        options = NodeOptions(
            listen=listen,
            bootstrap=bootstrap,
            quota_bytes=parse_size(str(quota_text)) if quota_text else None,
            extra={"audit_interval": args.audit_interval or node_cfg.get("audit_interval")},
            swarm_key=swarm_key,
            allow_peers=allow_peers,
            limits=NodeLimits.from_config(node_cfg.get("limits")),
        )

        def ready(node: Any) -> None:
            print(f"node {node.peer_id} ready", file=sys.stderr, flush=True)
            for addr in node.addrs_with_id():
                print(f"listening on {addr}", file=sys.stderr, flush=True)
            if swarm_key is not None:
                print(f"private swarm: only peers with the swarm key {swarm_key.fingerprint()} can connect",
                      file=sys.stderr, flush=True)
            if allow_peers is not None:
                print(f"allowlist: only {len(allow_peers)} listed peer(s) may connect", file=sys.stderr, flush=True)

        trio.run(lambda: run_node(repo, options, api_bind, on_ready=ready, setup=_setup_extensions))
    print("node stopped", file=sys.stderr)
    return 0


SWARM_KEY_FILE = "swarm.key"
"""Read from the repo when neither flag nor config names a key, as kubo reads
$IPFS_PATH/swarm.key: the same file makes either one private."""


def _membership(args: argparse.Namespace, node_cfg: dict[str, Any],
                repo_path: Path) -> "tuple[SwarmKey | None, frozenset[PeerId] | None]":
    """(swarm key or None, allowlist or None): flag, else config, else the repo's swarm.key.

    Paths in config.toml are relative to the repo; paths on the command line
    to the current directory.
    """
    from p2p.allowlist import load_allowlist
    from p2p.pnet import load_swarm_key

    key_path = _config_path(args.swarm_key, node_cfg, "swarm_key", repo_path)
    if key_path is None and (repo_path / SWARM_KEY_FILE).exists():
        key_path = repo_path / SWARM_KEY_FILE
    allow_path = _config_path(args.allow_peers, node_cfg, "allow_peers", repo_path)
    swarm_key = load_swarm_key(key_path) if key_path is not None else None
    if key_path is not None and key_path.stat().st_mode & 0o077:
        # Not refused (a key copied by hand is often 0644), but whoever reads it joins the swarm.
        print(f"warning: swarm key {key_path} is readable by other users, who could join the private "
              f"swarm with it (chmod 600 it)", file=sys.stderr, flush=True)
    return swarm_key, load_allowlist(allow_path) if allow_path is not None else None


def _config_path(flag: str | None, node_cfg: dict[str, Any], key: str, repo_path: Path) -> Path | None:
    if flag is not None:
        return Path(flag).expanduser().resolve()
    value = node_cfg.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise CliError(f"config [node] {key} must be a file path, not {value!r}")
    return (repo_path / Path(value).expanduser()).resolve()


def _setup_extensions(node: Any) -> None:
    """Attach the optional services (replication, audits, energy) if present."""
    try:
        from p2p.extensions import install
    except ImportError:
        return
    install(node)
    from p2p.energy_service import install as install_energy  # energy (issue 5): last, wraps the above
    install_energy(node)


def cmd_id(args: argparse.Namespace) -> int:
    from p2p.identity import Identity  # cryptography: only for the commands that need it

    path = resolve_repo_path(args.repo)
    client = connect(path)
    if client is not None:
        doc = client.call("GET", "/v1/id")
    else:
        with Repo.open(path, lock=False) as repo:
            identity = Identity.load_or_create(repo.identity_path)
        doc = {"peer_id": str(identity.peer_id), "addrs": []}
    if args.json:
        print_json(doc)
    else:
        print(doc["peer_id"])
        for a in doc["addrs"]:
            print(a)
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    client = connect(resolve_repo_path(args.repo))
    if client is None:
        raise CliError("no running node for this repo", hint="start one with `shoal node start`")
    peers = client.call("GET", "/v1/peers")
    if args.json:
        print_json(peers)
    else:
        for p in peers:
            state = "connected" if p["connected"] else "known"
            print(f"{p['peer_id']}\t{state}\t{' '.join(p['addrs'])}")
    return 0
