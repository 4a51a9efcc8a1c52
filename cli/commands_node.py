"""Commands about the running peer: node start, id, peers (and the demo)."""

from __future__ import annotations

import argparse
import errno
import logging
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from shoal.store.persist.config import DEFAULT_API, DEFAULT_LISTEN
from shoal.store.persist.repo import Repo, resolve_repo_path

from shoal.cli.args import SIZE_HINT, positive_int, seconds_at_least, size
from shoal.cli.args import parse_size as _parse_size
from shoal.cli.errors import CliError
from shoal.cli.dispatch import Access, run
from shoal.cli.output import print_json

if TYPE_CHECKING:
    from shoal.p2p.net.node import Node
    from shoal.p2p.gateway.app import GatewayOptions
    from shoal.p2p.secure.identity import PeerId
    from shoal.p2p.secure.pnet import SwarmKey


def register(sub: Any) -> None:
    node = sub.add_parser("node", help="run a peer")
    node_sub = node.add_subparsers(dest="node_command", metavar="start|status", required=True)
    p = node_sub.add_parser(
        "start", help="run a peer in the foreground until Ctrl-C / SIGTERM",
        description="Run a peer in the foreground until Ctrl-C / SIGTERM. Settings come from the "
                    "repo's config.toml ([node] listen, api, bootstrap, quota, audit_interval; "
                    "[replication] replicas); a flag given here overrides its setting.")
    p.add_argument("--listen", action="append", metavar="MADDR",
                   help="peer address to listen on; repeatable (default: [node] listen in config.toml, "
                        f"{DEFAULT_LISTEN}; /ip4/127.0.0.1/tcp/0 picks a free port)")
    p.add_argument("--bootstrap", action="append", metavar="MADDR",
                   help="peer to dial at start, /ip4/H/tcp/P/p2p/ID or /dnsaddr/HOST[/p2p/ID]; repeatable "
                        "(default: [node] bootstrap in config.toml, none)")
    p.add_argument("--api", metavar="HOST:PORT",
                   help=f"control API address, loopback only (default: [node] api in config.toml, {DEFAULT_API}; "
                        "port 0 picks a free one)")
    p.add_argument("--quota", type=size, metavar="SIZE",
                   help="most bytes to hold for other peers, e.g. 10G (default: [node] quota, no limit)")
    p.add_argument("--audit-interval", type=seconds_at_least(MIN_AUDIT_INTERVAL_S), metavar="SECONDS",
                   help=f"seconds between audit rounds of this node's objects, at least {MIN_AUDIT_INTERVAL_S:g} "
                        f"(default: [node] audit_interval, {DEFAULT_AUDIT_INTERVAL_S:g})")
    p.add_argument("--replicas", type=positive_int, metavar="N",
                   help="copies a put through this node keeps when it does not give --replicas "
                        "(default: [replication] replicas in config.toml, 1)")
    p.add_argument("--swarm-key", metavar="FILE",
                   help="run a private swarm: only peers with this libp2p swarm.key (PSK) can connect "
                        "(default: config [node] swarm_key, else <repo>/swarm.key if it exists, else public)")
    p.add_argument("--allow-peers", metavar="FILE",
                   help="keep connections only with the peer ids in FILE, one per line, # comments "
                        "(default: config [node] allow_peers, else anyone)")
    p.add_argument("--gateway", metavar="HOST:PORT",
                   help="also serve the read-only HTTP gateway (/ipfs/{cid}, trustless: raw blocks and CARs) "
                        "on HOST:PORT, e.g. 127.0.0.1:8080 (0.0.0.0:8080 serves the LAN; default: [gateway] "
                        "listen in config.toml, else off)")
    p.add_argument("--gateway-cache-pin", action="store_true", default=None,
                   help="pin what the gateway fetched from peers once a whole DAG is here "
                        "(default: [gateway] cache_pin, else cached unpinned: gc may evict it)")
    p.add_argument("--routing", choices=["auto", "server", "client", "off"], default=None,
                   help="DHT mode: server answers lookups, client only asks, off runs no DHT (default: "
                        "[routing] mode in config.toml, else auto: server in a private swarm or on "
                        "loopback/private addresses only, client otherwise)")
    p.add_argument("--provide", choices=["roots", "all"], default=None,
                   help="what the node announces in the DHT: the roots it holds, or every block of them "
                        "(default: [routing] provide in config.toml, roots)")
    p.add_argument("--lanes", type=positive_int, metavar="N",
                   help="processes that move block bytes (fetch and serve), one per core: 1 runs everything "
                        f"in the node's own process (default: [node] lanes in config.toml, else the number of "
                        f"cores, at most {MAX_DEFAULT_LANES}, and 1 below {MIN_CORES_FOR_LANES} cores)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                   help="least severe log messages to print on stderr (default: %(default)s)")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once if another shoal process is writing the repo (default: wait for it)")
    p.set_defaults(handler=cmd_node_start, json_unsupported=True)
    p = node_sub.add_parser("status", help="the running node's uptime, peers and event-loop health "
                                           "(needs a running node)")
    p.set_defaults(handler=cmd_node_status)

    p = sub.add_parser("id", help="this node's peer id and addresses")
    p.set_defaults(handler=cmd_id)

    p = sub.add_parser("peers", help="peers this node knows (needs a running node)")
    p.set_defaults(handler=cmd_peers)


# A mirror of shoal.p2p.replication.owner.DEFAULT_AUDIT_INTERVAL_S for the help text:
# building the parser must not import p2p (tests/unit/test_cli_imports.py);
# tests/unit/test_cli_parser.py checks that the two agree.
DEFAULT_AUDIT_INTERVAL_S = 3600.0
MAX_DEFAULT_LANES = 8
MIN_CORES_FOR_LANES = 4
"""Below this many cores a node runs no lane processes by default. Measured on
2 cores (bench/RESULTS.md "transfer", "transfer: model directory", "gateway";
Shoal ed79579): with the holder and the fetcher sharing the cores, a laned get
of one file ran at 1.05x the in-process one (both nodes 6.8 against 6.4
CPU-s/GiB: every block pays the control channel's hop), the gateway through
lanes at 2.87x a static server against 2.43x without (its HTTP streaming stays
in the main process); a model directory 1.07x (8501ca5: the in-process get
exports a directory while it arrives). With 4 or more cores the lanes'
parallelism is the point; on 2 cores they gain little and cost the gateway."""
MAX_LANES = 64  # mirrors shoal.p2p.lanes.api.MAX_LANES (tests/unit/test_cli_parser.py checks)


def default_lanes() -> int:
    """One lane per core, at most MAX_DEFAULT_LANES; none (1) below MIN_CORES_FOR_LANES cores."""
    cores = os.cpu_count() or 1
    if cores < MIN_CORES_FOR_LANES:
        return 1
    return min(MAX_DEFAULT_LANES, cores)
MIN_AUDIT_INTERVAL_S = 0.1  # mirrors shoal.p2p.replication.owner.MIN_AUDIT_INTERVAL_S likewise


@dataclass(frozen=True)
class NodeSettings:
    """What `node start` runs with: config.toml's [node] and [replication]
    settings, each overridden by its flag when one was given."""

    listen: list[str]
    bootstrap: list[str]
    api: str
    quota_bytes: int | None
    audit_interval: float | None
    replicas: int
    ec: str | None = None  # [replication] ec = "K+M": the default scheme of a put instead of replicas
    lanes: int = 1


def node_settings(config: dict[str, Any], args: argparse.Namespace) -> NodeSettings:
    """Merge config and flags; CliError naming the config key for a bad value.

    Pure (no sockets, no p2p imports), so unit tests cover every rule.
    """
    node = config.get("node", {})
    if not isinstance(node, dict):
        raise CliError("config.toml: [node] must be a table", hint=CONFIG_HINT)
    repl = config.get("replication", {})
    if not isinstance(repl, dict):
        raise CliError("config.toml: [replication] must be a table", hint=CONFIG_HINT)

    def strings(key: str, flag: list[str] | None, default: list[str]) -> list[str]:
        if flag:
            return list(flag)
        value = node.get(key, default)
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise CliError(f"config.toml: [node] {key} must be a list of multiaddrs", hint=CONFIG_HINT)
        return list(value)

    listen = strings("listen", args.listen, [DEFAULT_LISTEN])
    if not listen:
        raise CliError("config.toml: [node] listen is empty: the node would be unreachable", hint=CONFIG_HINT)
    bootstrap = strings("bootstrap", args.bootstrap, [])
    api = args.api if args.api is not None else node.get("api", DEFAULT_API)
    if not isinstance(api, str):
        raise CliError("config.toml: [node] api must be \"HOST:PORT\"", hint=CONFIG_HINT)

    quota: int | None = args.quota
    if quota is None and node.get("quota") not in (None, ""):
        raw = node["quota"]
        try:
            quota = raw if isinstance(raw, int) and not isinstance(raw, bool) and raw >= 0 else _parse_size(str(raw))
        except ValueError as exc:
            raise CliError(f"config.toml: [node] quota: {exc}", hint=SIZE_HINT) from None

    interval: float | None = args.audit_interval
    if interval is None and node.get("audit_interval") is not None:
        raw = node["audit_interval"]
        if (isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw)
                or raw < MIN_AUDIT_INTERVAL_S):
            raise CliError(f"config.toml: [node] audit_interval must be a number of seconds, at least "
                           f"{MIN_AUDIT_INTERVAL_S:g}, not {raw!r}",
                           hint=CONFIG_HINT)
        interval = float(raw)

    replicas = args.replicas
    if replicas is None:
        raw = repl.get("replicas", 1)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            raise CliError(f"config.toml: [replication] replicas must be a whole number from 1, not {raw!r}",
                           hint=CONFIG_HINT)
        replicas = raw
    ec = repl.get("ec")
    if ec in (None, ""):
        ec = None
    else:
        from shoal.p2p.net.node_config import parse_ec_scheme  # pure: no sockets, no trio

        try:
            parse_ec_scheme(ec if isinstance(ec, str) else repr(ec))
        except ValueError as exc:
            raise CliError(f"config.toml: [replication] ec: {exc}", hint=CONFIG_HINT) from None
    lanes = getattr(args, "lanes", None)
    if lanes is None:
        raw = node.get("lanes")
        if raw is None:
            lanes = default_lanes()
        elif isinstance(raw, bool) or not isinstance(raw, int) or not 1 <= raw <= MAX_LANES:
            raise CliError(f"config.toml: [node] lanes must be a whole number from 1 to {MAX_LANES}, not {raw!r}",
                           hint=CONFIG_HINT)
        else:
            lanes = raw
    elif lanes > MAX_LANES:
        raise CliError(f"--lanes {lanes}: at most {MAX_LANES}", hint="one lane per core is the default")
    return NodeSettings(listen, bootstrap, api, quota, interval, replicas, ec, lanes)


def gateway_settings(config: dict[str, Any], args: argparse.Namespace) -> "GatewayOptions | None":
    """`--gateway`/`--gateway-cache-pin` over `[gateway] listen`/`cache_pin`; None: no gateway."""
    from shoal.p2p.errors import P2PError
    from shoal.p2p.gateway.app import GatewayOptions
    from shoal.p2p.net.service import parse_gateway_bind

    table = config.get("gateway", {})
    if not isinstance(table, dict):
        raise CliError("config.toml: [gateway] must be a table", hint=CONFIG_HINT)
    listen = args.gateway if args.gateway is not None else table.get("listen")
    if listen is None or listen == "":
        return None
    if not isinstance(listen, str):
        raise CliError("config.toml: [gateway] listen must be \"HOST:PORT\"", hint=CONFIG_HINT)
    pin = args.gateway_cache_pin if args.gateway_cache_pin is not None else table.get("cache_pin", False)
    if not isinstance(pin, bool):
        raise CliError("config.toml: [gateway] cache_pin must be true or false", hint=CONFIG_HINT)
    most = table.get("max_requests", DEFAULT_GATEWAY_REQUESTS)
    if isinstance(most, bool) or not isinstance(most, int) or not 1 <= most <= 1024:
        raise CliError(f"config.toml: [gateway] max_requests must be a whole number from 1 to 1024, not {most!r}",
                       hint=CONFIG_HINT)
    try:
        host, port = parse_gateway_bind(listen)
    except P2PError as exc:
        raise CliError(str(exc), hint="for example --gateway 127.0.0.1:8080") from None
    return GatewayOptions(host=host, port=port, cache_pin=pin, max_requests=most)


DEFAULT_GATEWAY_REQUESTS = 8  # shoal.p2p.gateway.app.DEFAULT_MAX_REQUESTS


CONFIG_HINT = "fix the repo's config.toml, or override the setting with its flag (see `shoal node start --help`)"


def _check_bindable(host: str, port: int, what: str, flag: str, ipv6: bool = False) -> None:
    """Fail early, naming the address, if it cannot be bound (port in use, an
    address not on this machine, a privileged port): the alternative is an
    OSError from deep inside the node's start-up. Port 0 always binds."""
    if port == 0:
        return
    family = socket.AF_INET6 if ipv6 or ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        # The same option trio's and hypercorn's listeners set, so a port in
        # TIME_WAIT after a restart does not count as busy.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                hint = f"another process (another node?) uses port {port}; give {flag} another port, or 0 for any free one"
            elif exc.errno == errno.EADDRNOTAVAIL:
                hint = f"{host} is not an address of this machine; give {flag} one of its addresses"
            elif exc.errno == errno.EACCES:
                hint = f"ports below 1024 need privileges; give {flag} a port from 1024"
            else:
                hint = f"give {flag} another address"
            raise CliError(f"cannot listen on {host}:{port} ({what}): {exc.strerror}", hint=hint) from None


def cmd_node_start(args: argparse.Namespace) -> int:
    import trio

    from shoal.p2p.secure.multiaddr import Multiaddr, parse_address
    from shoal.p2p.net.dns_txt import UdpTxtResolver
    from shoal.p2p.net.node_config import FetchConfig, NodeLimits, NodeOptions
    from shoal.p2p.net.service import parse_api_bind, run_node
    from shoal.p2p.dht.node_service import RoutingSettings, is_private_setup
    from shoal.p2p.errors import P2PError

    setup = _load_services()  # before the repo is opened: a broken install fails at once

    def waiting(who: str) -> None:
        print(f"shoal: waiting for {who} to finish with the repo (--no-wait to fail instead)",
              file=sys.stderr, flush=True)

    with Repo.open(resolve_repo_path(args.repo), node=True, wait=not args.no_wait, on_wait=waiting) as repo:
        settings = node_settings(repo.config, args)
        node_cfg = repo.config.get("node", {})
        swarm_key, allow_peers = _membership(args, node_cfg, repo.path)
        listen = [Multiaddr.parse(a) for a in settings.listen]
        bootstrap = [parse_address(a) for a in settings.bootstrap]
        api_bind = parse_api_bind(settings.api)
        for addr in listen:
            _check_bindable(addr.host, addr.port, "peer address",
                            "--listen" if args.listen else "--listen (or [node] listen in config.toml)",
                            addr.family == "ip6")
        _check_bindable(api_bind[0], api_bind[1], "control API",
                        "--api" if args.api is not None else "--api (or [node] api in config.toml)")
        gateway = gateway_settings(repo.config, args)
        if gateway is not None:
            _check_bindable(gateway.host, gateway.port, "gateway",
                            "--gateway" if args.gateway is not None else "--gateway (or [gateway] listen in config.toml)")
        try:
            routing = RoutingSettings.from_config(repo.config.get("routing"), mode=args.routing,
                                                  provide=args.provide,
                                                  private=is_private_setup(listen, swarm_key))
        except P2PError as exc:
            raise CliError(str(exc).replace("config:", "config.toml:", 1), hint=CONFIG_HINT) from None
        peer_exchange = node_cfg.get("peer_exchange", True)
        if not isinstance(peer_exchange, bool):
            raise CliError("config.toml: [node] peer_exchange must be true or false", hint=CONFIG_HINT)
        options = NodeOptions(
            peer_exchange=peer_exchange,
            listen=listen,
            bootstrap=bootstrap,
            quota_bytes=settings.quota_bytes,
            extra={"audit_interval": settings.audit_interval, "default_replicas": settings.replicas,
                   "default_ec": settings.ec,
                   "gateway": gateway, "routing": routing},
            swarm_key=swarm_key,
            allow_peers=allow_peers,
            limits=NodeLimits.from_config(node_cfg.get("limits")),
            fetch=FetchConfig.from_config(repo.config.get("fetch")),
            lanes=settings.lanes,
            # /dnsaddr bootstrap entries use the DNS server [routing] names, if any.
            resolver=UdpTxtResolver(*routing.dns_server) if routing.dns_server else None,
        )
        logging.basicConfig(level=args.log_level, stream=sys.stderr,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")

        def ready(node: "Node") -> None:
            print(f"node {node.peer_id} ready", file=sys.stderr, flush=True)
            for addr in node.addrs_with_id():
                print(f"listening on {addr}", file=sys.stderr, flush=True)
            if swarm_key is not None:
                print(f"private swarm: only peers with the swarm key {swarm_key.fingerprint()} can connect",
                      file=sys.stderr, flush=True)
            if allow_peers is not None:
                print(f"allowlist: only {len(allow_peers)} listed peer(s) may connect", file=sys.stderr, flush=True)

        trio.run(lambda: run_node(repo, options, api_bind, on_ready=ready, setup=setup))
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
    from shoal.p2p.secure.allowlist import load_allowlist
    from shoal.p2p.secure.pnet import load_swarm_key

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


def _load_services() -> "Callable[[Node], None]":
    """The node's services (replication, audits, energy), ready to attach.

    Not optional: they ship with Shoal, and a node started without them would
    accept puts with --replicas, never replicate or audit, and record no
    energy, with nothing said. So an ImportError (a broken or partial
    install, or a bug in those modules) stops `node start` with one line.
    """
    try:
        from shoal.p2p.net.energy_service import install as install_energy
        from shoal.p2p.net.extensions import install
    except ImportError as exc:
        raise CliError(f"cannot start the node: its services failed to load ({exc})",
                       hint="the Shoal installation is broken; reinstall it (pip install -e .)") from exc

    def setup(node: "Node") -> None:
        install(node)
        install_energy(node)  # energy (issue 5): last, wraps the above

    return setup


def cmd_node_status(args: argparse.Namespace) -> int:
    doc = run(args, node=lambda client: client.call("GET", "/v1/node/status"), offline=None)
    if args.json:
        print_json(doc)
        return 0
    loop = doc["loop"]
    print(f"node {doc['peer_id']} up {doc['uptime_s']:.0f}s, "
          f"{doc['connected_peers']} connected / {doc['known_peers']} known peers")
    for addr in doc["addrs"]:
        print(f"listening on {addr}")
    print(f"event loop: worst stall {loop['worst_stall_s'] * 1000:.1f} ms over the last "
          f"{loop['window_s']:.0f}s ({loop['samples']} samples)")
    for lane in doc.get("lanes", []):  # absent from an older node's answer
        print(f"lane {lane['index']}: pid {lane['pid']} at {lane['addr']}, {lane['jobs']} jobs, "
              f"{lane['bytes']} bytes, {lane['cpu_s']:.1f} CPU-s")
    return 0


def cmd_id(args: argparse.Namespace) -> int:
    from shoal.p2p.secure.identity import Identity  # cryptography: only for the commands that need it

    def offline(repo: Repo) -> dict[str, Any]:
        return {"peer_id": str(Identity.load_or_create(repo.identity_path).peer_id), "addrs": []}

    doc = run(args, node=lambda client: client.call("GET", "/v1/id"), offline=offline, access=Access.READ)
    if args.json:
        print_json(doc)
    else:
        print(doc["peer_id"])
        for a in doc["addrs"]:
            print(a)
    return 0


def cmd_peers(args: argparse.Namespace) -> int:
    peers = run(args, node=lambda client: client.call("GET", "/v1/peers"), offline=None)
    if args.json:
        print_json(peers)
    else:
        for p in peers:
            state = "connected" if p["connected"] else "known"
            print(f"{p['peer_id']}\t{state}\t{' '.join(p['addrs'])}")
    return 0
