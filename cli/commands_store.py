"""Commands that work on the repo's content: init, put, get, cat, ls, pin, gc,
verify, car, repair-index.

Readers (ls, pin ls, cat, get, car export) open the repo without its lock
and the index read-only, so they never wait for a writer and work on a
read-only repo. Writers wait for another writer (saying so on stderr) unless
given `--no-wait`.

Each handler takes the parsed arguments and returns an exit code. A handler
says what its command does through the repo's running node and what it does
offline, with which lock; shoal.cli.dispatch picks the path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from shoal.store.chunking.choice import CHUNKER_NAMES, DEFAULT_CHUNKER, chunker_for
from shoal.store.ipld.cid import parse_cid
from shoal.store.energy.accounting import gc_measured, put_measured  # energy (issue 5): records put/gc
from shoal.store.persist.config import DEFAULT_LISTEN
from shoal.store.chunking.profiles import DEFAULT_PROFILE, PROFILES
from shoal.store.persist.repo import Repo, resolve_repo_path

from shoal.cli.args import positive_int, size
from shoal.cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError
from shoal.cli.dispatch import Access, open_repo, run
from shoal.cli.node_client import NodeClient
from shoal.cli.output import human_size, plural, print_json, progress_bar



def register(sub: Any) -> None:
    """Add this module's subcommands to the top-level parser."""
    p = sub.add_parser("init", help="create a repo (in --repo, $SHOAL_REPO or ~/.shoal)",
                       description="Create a repo. Refuses a non-empty directory that is not a repo; "
                                   "run again on an existing repo, it changes nothing.")
    p.add_argument("--listen", action="append", metavar="MADDR",
                   help="peer address the node listens on, written to config.toml "
                        f"(default {DEFAULT_LISTEN}; give /ip4/0.0.0.0/tcp/4101 to accept other machines); "
                        "repeatable")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("put", help="add a file or directory; print its CID")
    p.add_argument("path", help="file or directory to add")
    p.add_argument("--replicas", type=positive_int, default=None, metavar="N",
                   help="copies to keep in the swarm, this node's included (needs a running node; "
                        "default: [replication] replicas in config.toml, 1); "
                        "given again for a stored object, it raises or lowers the count")
    p.add_argument("--ec", default=None, metavar="K+M",
                   help="store the object erasure-coded instead: K data + M parity shards, each on a "
                        "distinct peer (needs a running node; K, M >= 1, K + M <= 32; "
                        "default: [replication] ec in config.toml, none)")
    p.add_argument("--ec-threshold", type=positive_int, default=None, metavar="N",
                   help="with --ec: repair once fewer than N shards are healthy (K..K+M; default K+1)")
    p.add_argument("--ec-drop-local", action="store_true",
                   help="with --ec: drop this node's whole copy once every shard has a holder")
    p.add_argument("--chunker", choices=CHUNKER_NAMES, default=DEFAULT_CHUNKER,
                   help="how files are cut into blocks: auto (default) uses the tensor-aware "
                        "safetensors chunker for each file that parses as safetensors and the "
                        "profile's fixed-size chunks (the IPFS CIDs) for every other file; "
                        "it applies per file in a directory")
    p.add_argument("--no-follow", action="store_true",
                   help="refuse symlinks inside a directory instead of importing what they "
                        "point to (by default they are followed, loop-safe, like kubo's "
                        "--dereference-symlinks; Hugging Face cache snapshots are symlinks)")
    p.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE.name,
                   help="CID profile: CID version, block size, DAG shape (default: %(default)s)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the root CID")
    _add_no_wait(p)
    p.set_defaults(handler=cmd_put)

    p = sub.add_parser("get", help="write an object (file or directory) to a path")
    p.add_argument("cid", help="CID of the object")
    p.add_argument("-o", "--output", metavar="PATH",
                   help="where to write it (default: ./CID); - writes a file's bytes to stdout")
    p.add_argument("--force", "-f", action="store_true",
                   help="write over an existing file, or into a non-empty directory")
    p.add_argument("--max-size", type=size, default=None, metavar="SIZE",
                   help="refuse an object declaring more bytes than this (suffixes K, M, G, T: "
                        "powers of 1024; default: no limit but the destination's free space)")
    p.add_argument("--gateway", action="append", default=[], metavar="URL",
                   help="an IPFS trustless gateway (http://HOST:PORT) to fetch blocks from, beside the "
                        "node's peers; every block is hash-checked; repeatable; adds to [fetch] gateways "
                        "in config.toml (default: only [fetch] gateways). Works without a running node too")
    p.set_defaults(handler=cmd_get)

    p = sub.add_parser("cat", help="print a file's bytes (or a range of them)")
    p.add_argument("cid", help="CID of a file")
    p.add_argument("--offset", type=size, default=0, metavar="SIZE",
                   help="first byte to print, in bytes or with a suffix (512K, 1M) (default: 0)")
    p.add_argument("--length", type=size, default=None, metavar="SIZE",
                   help="most bytes to print, in bytes or with a suffix (default: to the end)")
    p.add_argument("--tensor", metavar="NAME",
                   help="print one tensor of a safetensors file; --offset/--length then count within it "
                        "(default: the whole file)")
    p.set_defaults(handler=cmd_cat, json_unsupported=True)

    p = sub.add_parser("ls", help="list stored objects, or a directory's entries")
    p.add_argument("cid", nargs="?", help="a directory's CID (default: list the repo's objects)")
    p.set_defaults(handler=cmd_ls)

    pin = sub.add_parser("pin", help="keep objects from garbage collection")
    pin_sub = pin.add_subparsers(dest="pin_command", metavar="add|rm|ls", required=True)
    p = pin_sub.add_parser("add", help="pin an object (fetching what is missing through a running node)")
    p.add_argument("cid", help="CID of the object")
    _add_no_wait(p)
    p.set_defaults(handler=cmd_pin_add)
    p = pin_sub.add_parser("rm", help="unpin an object (its blocks go at the next gc)")
    p.add_argument("cid", help="CID of the object")
    _add_no_wait(p)
    p.set_defaults(handler=cmd_pin_rm)
    p = pin_sub.add_parser("ls", help="list pinned CIDs")
    p.add_argument("cid", nargs="?", help="only this CID (exit 1 if it is not pinned)")
    p.set_defaults(handler=cmd_pin_ls)

    p = sub.add_parser("gc", help="delete blocks no pin reaches")
    p.add_argument("--force", action="store_true",
                   help="run even when the index holds no pin and never held one "
                        "(by default gc then refuses: the index may have been lost)")
    _add_no_wait(p)
    p.set_defaults(handler=cmd_gc)

    p = sub.add_parser("verify", help="re-hash every block and check every pinned DAG")
    p.add_argument("--repair", action="store_true",
                   help="move corrupt blocks to <repo>/quarantine/ so a re-put or a fetch restores "
                        "them; with a running node, fetch good copies from peers at once")
    _add_no_wait(p)
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("repair-index",
                       help="rebuild a lost or damaged index from the blocks: every root block "
                            "nobody links to becomes a pinned object (nothing is deleted)")
    _add_no_wait(p)
    p.set_defaults(handler=cmd_repair_index)

    car = sub.add_parser("car", help="CARv1 import/export")
    car_sub = car.add_subparsers(dest="car_command", metavar="export|import", required=True)
    p = car_sub.add_parser("export", help="write an object's whole DAG to a CAR file")
    p.add_argument("cid", help="CID of the root")
    p.add_argument("-o", "--output", metavar="FILE", required=True, help="CAR file to write")
    p.set_defaults(handler=cmd_car_export)
    p = car_sub.add_parser("import", help="add the blocks of a CAR file and pin its roots")
    p.add_argument("file", help="CAR file to read")
    _add_no_wait(p)
    p.set_defaults(handler=cmd_car_import)




def _add_no_wait(p: argparse.ArgumentParser) -> None:
    """`--no-wait` on a command that writes the repo."""
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once if another shoal process is writing the repo "
                        "(default: wait for it)")


def absolute(path: Path) -> str:
    """`path` made absolute here, where the user typed it, for the node's API.

    The node has its own working directory (and refuses relative paths), so
    the CLI resolves them. `abspath`, not `resolve()`: a symlink keeps its
    own name, as on the offline path (`put link` records "link").
    """
    return os.path.abspath(path)


def _input_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:
                pass
    return total


def cmd_init(args: argparse.Namespace) -> int:
    path = resolve_repo_path(args.repo)
    config: dict[str, Any] = {}
    if args.listen:
        from shoal.p2p.secure.multiaddr import Multiaddr

        for text in args.listen:
            Multiaddr.parse(text)  # a typo fails here, not at the first `node start`
        config = {"node": {"listen": list(args.listen)}}
    from shoal.p2p.secure.identity import Identity

    with Repo.init(path, config=config) as repo:
        identity = Identity.load_or_create(repo.identity_path)
    if args.json:
        print_json({"repo": str(path), "peer_id": str(identity.peer_id)})
    print(f"initialized shoal repo in {path}", file=sys.stderr)
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise CliError(f"no such file or directory: {args.path}")

    def node(client: NodeClient) -> int:
        body = {"path": absolute(path), "profile": args.profile, "chunker": args.chunker,
                "follow_symlinks": not args.no_follow}
        if args.replicas is not None:
            body["replicas"] = args.replicas
        if args.ec is not None:
            body["ec"] = args.ec
        if args.ec_drop_local:
            body["ec_drop_local"] = True
        if args.ec_threshold is not None:
            body["ec_threshold"] = args.ec_threshold
        doc = client.call("POST", "/v1/put", body)
        extra = {k: v for k, v in doc.items() if k not in ("cid", "size", "name")}
        return print_put_result(args, doc["cid"], doc["size"], doc["name"], extra)

    def offline(repo: Repo) -> int:
        chunker = chunker_for(args.chunker, profile, path)
        with progress_bar(f"put {path.name}", _input_size(path), enabled=not args.quiet) as advance:
            result = put_measured(repo, path, profile=profile, chunker=chunker, progress=advance,
                                  follow_symlinks=not args.no_follow)
        return print_put_result(args, str(result.cid), result.size, path.name)

    profile = PROFILES[args.profile]
    needs_node = None
    if args.ec is not None:
        from shoal.p2p.net.node_config import parse_ec_scheme  # only then: every put pays its imports

        try:
            k, m = parse_ec_scheme(args.ec)
        except ValueError as exc:
            raise CliError(f"--ec: {exc}") from None
        if args.replicas is not None and args.replicas > 1:
            raise CliError("choose --replicas or --ec, not both")
        if args.ec_threshold is not None and not k <= args.ec_threshold <= k + m:
            raise CliError(f"--ec-threshold must be between K ({k}) and K + M ({k + m})")
    elif args.ec_drop_local or args.ec_threshold is not None:
        flag = "--ec-drop-local" if args.ec_drop_local else "--ec-threshold"
        raise CliError(f"{flag} needs --ec K+M")
    if args.replicas is not None and args.replicas > 1:
        needs_node = CliError("--replicas needs a running node", hint="start one with `shoal node start`")
    if args.ec is not None:
        needs_node = CliError("--ec needs a running node", hint="start one with `shoal node start`")
    return run(args, node=node, offline=offline, access=Access.WRITE, needs_node=needs_node)


def print_put_result(args: argparse.Namespace, cid: str, size: int, name: str, extra: dict[str, Any] | None = None) -> int:
    """Shared by the offline and node paths so both print the same thing.

    JSON schema (docs/CLI.md): cid, name, size, placement (null unless the
    put asked for replicas through a node).
    """
    placement = (extra or {}).get("placement")
    if args.quiet:
        print(cid)
    elif args.json:
        print_json({"cid": cid, "size": size, "name": name,
                    "placement": placement if isinstance(placement, dict) else None})
    else:
        print(f"added {cid} {name} ({human_size(size)})")
    if isinstance(placement, dict) and not args.quiet:
        for line in placement_lines(cid, placement):
            print(line, file=sys.stderr)
    return 0


def placement_lines(cid: str, placement: dict[str, Any]) -> list[str]:
    """What a put with --replicas tells the user (stderr): the plan, and a
    warning when there are too few peers to reach the count."""
    scheme = placement.get("scheme")
    if isinstance(scheme, dict) and "ec" in scheme:
        k, m = scheme["ec"]
        return [f"encoding {k}+{m} shards, each placed on a distinct peer in the background; "
                f"see `shoal status {cid}`"]
    wanted = int(placement.get("wanted") or 1)
    planned = placement.get("planned") or []
    released = placement.get("released") or []
    if released:
        return [f"keeping {plural(wanted, 'copy', 'copies')}: releasing {plural(len(released), 'holder')}; "
                f"see `shoal status {cid}`"]
    lines = [f"placing {plural(wanted, 'copy', 'copies')} in the background "
             f"({plural(len(planned), 'peer')} chosen); see `shoal status {cid}`"]
    if len(planned) < wanted - 1:
        lines.append(f"warning: only {plural(len(planned), 'peer')} can take a copy now, so {cid} will be "
                     f"under-replicated ({len(planned) + 1} of {wanted} copies) until more peers connect")
    return lines


GET_FIELDS = ("cid", "output", "fetched_blocks", "fetched_bytes", "local_blocks", "holders")


def check_output(dest: Path, force: bool) -> None:
    """Refuse to overwrite a file or to write into a non-empty directory
    unless --force: a mistyped -o must not destroy anything."""
    if force:
        return
    if dest.is_symlink() or (dest.exists() and not dest.is_dir()):
        raise CliError(f"{dest} already exists", hint="pass --force to replace it, or choose another -o PATH")
    if dest.is_dir():
        try:
            non_empty = any(dest.iterdir())
        except OSError as exc:
            raise CliError(f"cannot read {dest}: {exc.strerror}") from None
        if non_empty:
            raise CliError(f"{dest} is a directory and not empty",
                           hint="pass --force to write into it, or choose another -o PATH")


def cmd_get(args: argparse.Namespace) -> int:
    from shoal.store.dag import disk_export, exporter  # here, not at the top: put never needs them

    cid = parse_cid(args.cid)
    if args.output == "-":
        if args.gateway:
            raise CliError("--gateway needs -o PATH: -o - reads only what the node and its peers have",
                           hint="fetch with `shoal get CID --gateway URL -o PATH` first", code=EXIT_USAGE)
        if args.json:
            raise CliError("-o - writes the object's bytes to stdout, which --json would share",
                           hint="drop --json, or give -o PATH", code=EXIT_USAGE)
        return _cat(args, cid, 0, None, None)
    dest = Path(args.output) if args.output else Path(args.cid)
    check_output(dest, args.force)

    flag_gateways = _gateway_flags(args.gateway)

    def node(client: NodeClient) -> dict[str, Any]:
        # The node writes the files: it applies this process's umask, not its own.
        body = {"cid": str(cid), "output": absolute(dest), "umask": disk_export.current_umask(),
                "max_size": args.max_size, "gateways": flag_gateways or None}
        return dict(client.call("POST", "/v1/get", {k: v for k, v in body.items() if v is not None}))

    def offline(repo: Repo) -> dict[str, Any]:
        fetched: dict[str, Any] = {"fetched_blocks": 0, "fetched_bytes": 0, "holders": 0}
        gateways = _offline_gateways(repo, flag_gateways)
        if gateways:
            fetched = _fetch_offline(repo, cid, gateways)
        disk_export.export_to_path(repo.blockstore, cid, dest, prefetch=exporter.PREFETCH_BLOCKS,
                                   max_size=args.max_size)
        local = len(repo.dag_keys(cid)) if args.json else 0
        return {"local_blocks": local, **fetched}

    # Gateways offline: this process fetches into the repo, so it takes the writer lock.
    access = Access.WRITE if flag_gateways or _config_has_gateways(args) else Access.READ
    doc = run(args, node=node, offline=offline, access=access)
    for url, why in dict(doc.get("gateways_dropped") or {}).items():
        print(f"shoal: gateway {url} was dropped: {why}", file=sys.stderr)
    doc.update(cid=str(cid), output=absolute(dest))
    if args.json:
        shown = {k: doc.get(k) for k in GET_FIELDS}
        shown.update({k: v for k, v in doc.items() if k.startswith("rebuilt_")})  # read from EC shards
        print_json(shown)
    print(f"saved {cid} to {dest}", file=sys.stderr)
    return 0


def _gateway_flags(urls: list[str]) -> list[str]:
    """`--gateway` URLs, checked here so a typo fails before any work."""
    from shoal.p2p.errors import P2PError
    from shoal.p2p.net.node_config import parse_gateways

    try:
        return [g.url for g in parse_gateways(urls, "--gateway")]
    except P2PError as exc:
        raise CliError(str(exc), hint="for example --gateway http://127.0.0.1:8080") from None


def _config_has_gateways(args: argparse.Namespace) -> bool:
    """Whether the repo's config.toml names `[fetch] gateways` (read before the
    repo is opened: an offline get that fetches needs the writer lock)."""
    from shoal.store.persist.config import load_config
    from shoal.store.persist.repo import CONFIG_FILE

    path = resolve_repo_path(args.repo) / CONFIG_FILE
    try:
        fetch = load_config(path).get("fetch") if path.is_file() else None
    except Exception:  # noqa: BLE001 - a broken config is reported when the repo opens
        return False
    return isinstance(fetch, dict) and bool(fetch.get("gateways"))


def _offline_gateways(repo: Repo, flags: list[str]) -> "tuple[Any, ...]":
    """`[fetch] gateways` of the repo, then the flags', deduplicated."""
    from shoal.p2p.errors import P2PError
    from shoal.p2p.net.node_config import FetchConfig, parse_gateways

    try:
        configured = FetchConfig.from_config(repo.config.get("fetch")).gateways
        return parse_gateways([g.url for g in configured] + flags, "gateways")
    except P2PError as exc:
        raise CliError(str(exc), hint="fix [fetch] gateways in the repo's config.toml") from None


def _fetch_offline(repo: Repo, cid: Any, gateways: "tuple[Any, ...]") -> dict[str, Any]:
    """No node runs: this process fetches the DAG from the gateways into the
    repo with the swarm's own fetch (a Node object that never listens or
    dials, so it has no peers), every block hash-checked before it is stored."""
    import trio

    from shoal.p2p.exchange.fetch import fetch_dag
    from shoal.p2p.net.node import Node
    from shoal.p2p.net.node_config import NodeOptions
    from shoal.p2p.secure.identity import Identity

    async def fetch() -> dict[str, Any]:
        node = Node(repo, Identity.load_or_create(repo.identity_path), NodeOptions(listen=[]))
        result = await fetch_dag(node, cid, gateways=gateways)
        return {"fetched_blocks": result.fetched_blocks, "fetched_bytes": result.fetched_bytes,
                "holders": result.holders, "gateways_dropped": result.gateways_dropped}

    return trio.run(fetch)


def cmd_cat(args: argparse.Namespace) -> int:
    return _cat(args, parse_cid(args.cid), args.offset, args.length, args.tensor)


def _cat(args: argparse.Namespace, cid: Any, offset: int, length: int | None, tensor: str | None) -> int:
    from shoal.store.dag import exporter  # here, not at the top: put never needs it

    def node(client: NodeClient) -> int:
        _write_stdout(client.stream("/v1/cat", cid=str(cid), offset=offset, length=length, tensor=tensor))
        return 0

    def offline(repo: Repo) -> int:
        start, count = offset, length
        if tensor is not None:
            from shoal.store.dag.tensor_ranges import tensor_window

            start, count = tensor_window(repo.blockstore, cid, tensor, offset, length)
        _write_stdout(exporter.read_file(repo.blockstore, cid, start, count, prefetch=exporter.PREFETCH_BLOCKS))
        return 0

    return run(args, node=node, offline=offline, access=Access.READ)


def _write_stdout(chunks: Any) -> None:
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
    out.flush()


def cmd_ls(args: argparse.Namespace) -> int:
    from shoal.store.dag import exporter  # here, not at the top: put never needs it

    def node(client: NodeClient) -> int:
        _print_rows(args, client.lines("/v1/ls", cid=args.cid))
        return 0

    def offline(repo: Repo) -> int:
        if args.cid is None:
            _print_rows(args, (_object_row(o) for o in repo.objects()))
            return 0
        cid = parse_cid(args.cid)
        entries = exporter.iter_dir(repo.blockstore, cid)
        _print_rows(args, ({"name": e.name, "cid": str(e.cid), "size": e.size, "kind": e.kind} for e in entries))
        return 0

    return run(args, node=node, offline=offline, access=Access.READ)


# One vocabulary for `kind` in every listing (the index says "directory",
# the UnixFS reader "dir" and "raw"): docs/CLI.md documents these four.
_KINDS = {"dir": "directory", "directory": "directory", "raw": "file", "file": "file", "symlink": "symlink"}


def ls_row(row: dict[str, Any]) -> dict[str, Any]:
    """A listing row in the documented schema: cid, name, size, kind."""
    return {"cid": str(row["cid"]), "name": row["name"], "size": row["size"],
            "kind": _KINDS.get(str(row["kind"]), "unknown")}


def _print_rows(args: argparse.Namespace, rows: Iterable[dict[str, Any]]) -> None:
    """Print rows as they come (a huge directory is never held in memory);
    --json writes the same document print_json would, one row at a time."""
    rows = (ls_row(r) for r in rows)
    if args.json:
        out = sys.stdout
        first = True
        for r in rows:
            item = json.dumps(r, sort_keys=True, indent=2).replace("\n", "\n  ")
            out.write(("[\n  " if first else ",\n  ") + item)
            first = False
        out.write("[]\n" if first else "\n]\n")
        return
    for r in rows:
        size = "-" if r["size"] is None else human_size(r["size"])
        print(f"{r['cid']}\t{r['kind']}\t{size}\t{r['name']}")


def _object_row(obj: Any) -> dict[str, Any]:
    return {"cid": str(obj.cid), "name": obj.name, "size": obj.size, "kind": obj.kind}


def cmd_pin_add(args: argparse.Namespace) -> int:
    return _pin_change(args, "add", "pinned")


def cmd_pin_rm(args: argparse.Namespace) -> int:
    return _pin_change(args, "rm", "unpinned")


def _pin_change(args: argparse.Namespace, verb: str, done: str) -> int:
    """pin add / pin rm: through the node if one runs, else on the repo."""
    cid = parse_cid(args.cid)
    run(args, node=lambda client: client.call("POST", f"/v1/pin/{verb}", {"cid": str(cid)}),
        offline=lambda repo: (repo.pin_add if verb == "add" else repo.pin_rm)(cid),
        access=Access.FREES_SPACE if verb == "rm" else Access.WRITE)
    if args.json:
        print_json({"cid": str(cid), "pinned": verb == "add"})
    else:
        print(f"{done} {cid}")
    return 0


def cmd_pin_ls(args: argparse.Namespace) -> int:
    wanted = parse_cid(args.cid) if args.cid else None
    all_pins: list[str] = run(args, node=lambda client: [str(c) for c in client.call("GET", "/v1/pins")],
                              offline=lambda repo: [p.cid for p in repo.pins()], access=Access.READ)
    pins = [c for c in all_pins if wanted is None or c == str(wanted)]
    if wanted is not None and not pins:
        raise CliError(f"not pinned: {wanted}")
    if args.json:
        print_json(pins)
    else:
        for p in pins:
            print(p)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    def offline(repo: Repo) -> dict[str, Any]:
        result = gc_measured(repo, force=args.force)
        return {"removed_blocks": result.removed_blocks, "freed_bytes": result.freed_bytes}

    doc = run(args, node=lambda client: client.call("POST", "/v1/gc", {"force": True} if args.force else None),
              offline=offline, access=Access.FREES_SPACE)
    if args.json:
        print_json(doc)
    else:
        print(f"removed {plural(int(doc['removed_blocks']), 'block')}, freed {human_size(doc['freed_bytes'])}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    repair = bool(getattr(args, "repair", False))

    def warn_if_index_replaced(repo: Repo) -> None:
        unknown = repo.blocks_an_index_never_knew()
        if unknown:
            print(f"shoal: warning: the index holds no pin and never held one, but {unknown} block(s) "
                  f"are stored; if index.sqlite was lost or replaced, run `shoal repair-index`",
                  file=sys.stderr)

    def node(client: NodeClient) -> tuple[dict[str, Any], bool]:
        doc = client.call("POST", "/v1/verify", {"repair": repair})
        # The node's answer does not carry it; a reader may open the repo beside the node.
        with open_repo(resolve_repo_path(args.repo), Access.READ) as repo:
            warn_if_index_replaced(repo)
        return doc, True

    def offline(repo: Repo) -> tuple[dict[str, Any], bool]:
        doc = repo.verify(repair=repair).as_json()
        warn_if_index_replaced(repo)
        return doc, False

    doc, through_node = run(args, node=node, offline=offline, access=Access.WRITE)
    corrupt, incomplete = doc["corrupt_blocks"], doc["incomplete_pins"]
    quarantined = set(doc.get("quarantined", []))
    ok = bool(doc["ok"])
    if args.json:
        print_json(doc)
    else:
        for cid in corrupt:
            print(f"corrupt block: {cid}" + (" (moved to quarantine)" if cid in quarantined else ""))
        for pin in doc.get("repaired_pins", []):
            print(f"restored from peers: {pin}")
        for row in incomplete:
            print(f"incomplete pin: {row['pin']} (missing {row['missing']})")
        orphans = int(doc.get("orphan_blocks") or 0)
        if orphans:
            print(f"{plural(orphans, 'block')} ({human_size(int(doc.get('orphan_bytes') or 0))}) no pin "
                  f"protects: `shoal gc` frees them", file=sys.stderr)
        if ok:
            print("repo ok" + (" (repaired)" if corrupt else ""), file=sys.stderr)
        elif repair and incomplete and not through_node:
            print("repo has problems: re-put the files, or run `shoal verify --repair` with the "
                  "node running to fetch good copies from peers", file=sys.stderr)
        else:
            hint = "" if repair or not corrupt else " (`shoal verify --repair` moves corrupt blocks aside)"
            print("repo has problems" + hint, file=sys.stderr)
    return 0 if ok else EXIT_FAILURE


def cmd_repair_index(args: argparse.Namespace) -> int:
    """Offline only: the node must be stopped (it could not start without an index anyway)."""
    report = run(args, node=None, offline=lambda repo: repo.repair_index(), access=Access.REPAIR)
    doc = {
        "blocks_scanned": report.blocks_scanned,
        "corrupt_blocks": report.corrupt_blocks,
        "moved_aside": report.moved_aside,
        "objects": [{"cid": o.cid, "kind": o.kind, "size": o.size, "blocks": o.blocks} for o in report.objects],
    }
    if args.json:
        print_json(doc)
        return 0
    if report.moved_aside:
        print(f"moved the unreadable index to {report.moved_aside}", file=sys.stderr)
    for o in report.objects:
        print(f"{o.cid}\t{o.kind}\t{human_size(o.size)}")
    print(f"scanned {report.blocks_scanned} blocks: pinned {len(report.objects)} object(s)"
          + (f", skipped {report.corrupt_blocks} corrupt block(s) (see `shoal verify`)" if report.corrupt_blocks else ""),
          file=sys.stderr)
    return 0


def cmd_car_export(args: argparse.Namespace) -> int:
    from shoal.store.ipld.car import export_car_file

    cid = parse_cid(args.cid)
    written = run(args, node=lambda client: client.call("POST", "/v1/car/export",
                                                        {"cid": str(cid), "output": absolute(Path(args.output))})["bytes"],
                  offline=lambda repo: export_car_file(repo.blockstore, cid, Path(args.output)), access=Access.READ)
    if args.json:
        print_json({"cid": str(cid), "output": absolute(Path(args.output)), "bytes": written})
    print(f"wrote {args.output} ({human_size(written)})", file=sys.stderr)
    return 0


def cmd_car_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {args.file}")
    def offline(repo: Repo) -> dict[str, Any]:
        with open(path, "rb") as src:
            return dict(repo.import_car(src).as_json())

    doc = run(args, node=lambda client: client.call("POST", "/v1/car/import", {"path": absolute(path)}),
              offline=offline, access=Access.WRITE)
    for root in doc.get("absent_roots", []):
        print(f"shoal: warning: the CAR's header names root {root}, which the file does not contain; "
              f"not pinned", file=sys.stderr)
    if args.json:
        print_json(doc)
    else:
        for r in doc["roots"]:
            print(r)
        print(f"imported {plural(int(doc['blocks']), 'block')} ({doc['new_blocks']} new)", file=sys.stderr)
    return 0


Handler = Callable[[argparse.Namespace], int]
