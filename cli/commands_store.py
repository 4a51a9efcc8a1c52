"""Commands that work on the repo's content: init, put, get, cat, ls, pin, gc,
verify, car.

Each handler takes the parsed arguments and returns an exit code. With a
running node for the repo the node-aware front (`cli.via_node`) serves the
command instead; these handlers are the offline path.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

from store import exporter
from store.cid import parse_cid
from store.profiles import DEFAULT_PROFILE, PROFILES, Profile
from store.repo import Repo, resolve_repo_path

from .errors import EXIT_FAILURE, CliError
from .output import human_size, print_json, progress_bar

CHUNKERS = ("fixed", "cdc", "safetensors")


def register(sub: Any) -> None:
    """Add this module's subcommands to the top-level parser."""
    p = sub.add_parser("init", help="create a repo")
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser("put", help="add a file or directory; print its CID")
    p.add_argument("path")
    p.add_argument("--replicas", type=_positive_int, default=1, metavar="N",
                   help="copies to keep in the swarm, this node's included (needs a running node)")
    p.add_argument("--chunker", choices=CHUNKERS, default="fixed")
    p.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE.name,
                   help="CID profile (default: %(default)s)")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the root CID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_put)

    p = sub.add_parser("get", help="write an object (file or directory) to a path")
    p.add_argument("cid")
    p.add_argument("-o", "--output", metavar="PATH")
    p.set_defaults(handler=cmd_get)

    p = sub.add_parser("cat", help="print a file's bytes (or a range of them)")
    p.add_argument("cid")
    p.add_argument("--offset", type=_non_negative_int, default=0)
    p.add_argument("--length", type=_non_negative_int, default=None)
    p.add_argument("--tensor", metavar="NAME", help="print one tensor of a safetensors file")
    p.set_defaults(handler=cmd_cat)

    p = sub.add_parser("ls", help="list stored objects, or a directory's entries")
    p.add_argument("cid", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_ls)

    pin = sub.add_parser("pin", help="keep objects from garbage collection")
    pin_sub = pin.add_subparsers(dest="pin_command", metavar="add|rm|ls", required=True)
    p = pin_sub.add_parser("add")
    p.add_argument("cid")
    p.set_defaults(handler=cmd_pin_add)
    p = pin_sub.add_parser("rm")
    p.add_argument("cid")
    p.set_defaults(handler=cmd_pin_rm)
    p = pin_sub.add_parser("ls")
    p.add_argument("cid", nargs="?")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_pin_ls)

    p = sub.add_parser("gc", help="delete blocks no pin reaches")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_gc)

    p = sub.add_parser("verify", help="re-hash every block and check every pinned DAG")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_verify)

    car = sub.add_parser("car", help="CARv1 import/export")
    car_sub = car.add_subparsers(dest="car_command", metavar="export|import", required=True)
    p = car_sub.add_parser("export")
    p.add_argument("cid")
    p.add_argument("-o", "--output", metavar="FILE", required=True)
    p.set_defaults(handler=cmd_car_export)
    p = car_sub.add_parser("import")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_car_import)


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def open_repo(args: argparse.Namespace) -> Repo:
    """Open (and lock) the repo named by --repo / $SHOAL_REPO / ~/.shoal."""
    return Repo.open(resolve_repo_path(args.repo))


def make_chunker(name: str, profile: Profile, path: Path) -> Any:
    """The chunker object for --chunker NAME (None means the profile's fixed size)."""
    if name == "fixed":
        return None
    if path.is_dir():
        raise CliError(f"--chunker {name} works on single files, not directories")
    if name == "cdc":
        from store.cdc import FastCDCChunker

        return FastCDCChunker()
    from store.safetensors import SafetensorsChunker

    return SafetensorsChunker(tensor_chunk_size=profile.chunk_size)


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
    repo = Repo.init(path)
    repo.close()
    print(f"initialized shoal repo in {path}", file=sys.stderr)
    return 0


def cmd_put(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if not path.exists():
        raise CliError(f"no such file or directory: {args.path}")
    if args.replicas > 1:
        raise CliError("--replicas needs a running node", hint="start one with `shoal node start`")
    profile = PROFILES[args.profile]
    chunker = make_chunker(args.chunker, profile, path)
    with open_repo(args) as repo:
        with progress_bar(f"put {path.name}", _input_size(path), enabled=not args.quiet) as advance:
            result = repo.add(path, profile=profile, chunker=chunker, progress=advance)
    return print_put_result(args, str(result.cid), result.size, path.name)


def print_put_result(args: argparse.Namespace, cid: str, size: int, name: str, extra: dict[str, Any] | None = None) -> int:
    """Shared by the offline and node paths so both print the same thing."""
    if args.quiet:
        print(cid)
    elif args.json:
        print_json({"cid": cid, "size": size, "name": name, **(extra or {})})
    else:
        print(f"added {cid} {name} ({human_size(size)})")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    cid = parse_cid(args.cid)
    dest = Path(args.output) if args.output else Path(args.cid)
    with open_repo(args) as repo:
        info = exporter.stat(repo.blockstore, cid)
        with progress_bar(f"get {cid}", info.size) as advance:
            exporter.export_to_path(repo.blockstore, cid, dest, progress=advance)
    print(f"saved {cid} to {dest}", file=sys.stderr)
    return 0


def cmd_cat(args: argparse.Namespace) -> int:
    cid = parse_cid(args.cid)
    with open_repo(args) as repo:
        offset, length = args.offset, args.length
        if args.tensor is not None:
            offset, length = _tensor_range(repo, cid, args.tensor, offset, length)
        _write_stdout(exporter.read_file(repo.blockstore, cid, offset, length))
    return 0


def _tensor_range(repo: Repo, cid: Any, name: str, offset: int, length: int | None) -> tuple[int, int]:
    from store.safetensors_reader import tensor_range

    start, size = tensor_range(repo.blockstore, cid, name)
    if offset > size:
        offset = size
    size -= offset
    return start + offset, size if length is None else min(size, length)


def _write_stdout(chunks: Any) -> None:
    out = sys.stdout.buffer
    for chunk in chunks:
        out.write(chunk)
    out.flush()


def cmd_ls(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        if args.cid is None:
            rows = [_object_row(o) for o in repo.objects()]
            if args.json:
                print_json(rows)
            else:
                for r in rows:
                    print(f"{r['cid']}\t{r['kind']}\t{human_size(r['size'])}\t{r['name']}")
            return 0
        cid = parse_cid(args.cid)
        entries = exporter.list_dir(repo.blockstore, cid)
        rows = [{"name": e.name, "cid": str(e.cid), "size": e.size, "kind": e.kind} for e in entries]
    if args.json:
        print_json(rows)
    else:
        for r in rows:
            size = "-" if r["size"] is None else human_size(r["size"])
            print(f"{r['cid']}\t{r['kind']}\t{size}\t{r['name']}")
    return 0


def _object_row(obj: Any) -> dict[str, Any]:
    return {"cid": str(obj.cid), "name": obj.name, "size": obj.size, "kind": obj.kind}


def cmd_pin_add(args: argparse.Namespace) -> int:
    cid = parse_cid(args.cid)
    with open_repo(args) as repo:
        repo.pin_add(cid)
    print(f"pinned {cid}")
    return 0


def cmd_pin_rm(args: argparse.Namespace) -> int:
    cid = parse_cid(args.cid)
    with open_repo(args) as repo:
        repo.pin_rm(cid)
    print(f"unpinned {cid}")
    return 0


def cmd_pin_ls(args: argparse.Namespace) -> int:
    wanted = parse_cid(args.cid) if args.cid else None
    with open_repo(args) as repo:
        pins = [str(c) for c in repo.pins() if wanted is None or c == wanted]
    if wanted is not None and not pins:
        raise CliError(f"not pinned: {wanted}")
    if args.json:
        print_json(pins)
    else:
        for p in pins:
            print(p)
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        result = repo.gc()
    if args.json:
        print_json({"removed_blocks": result.removed_blocks, "freed_bytes": result.freed_bytes})
    else:
        print(f"removed {result.removed_blocks} blocks, freed {human_size(result.freed_bytes)}")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        report = repo.verify()
    corrupt = [str(k) for k in report.corrupt_blocks]
    incomplete = [{"pin": str(p), "missing": str(m)} for p, m in report.incomplete_pins]
    if args.json:
        print_json({"ok": report.ok, "corrupt_blocks": corrupt, "incomplete_pins": incomplete})
    else:
        for key in corrupt:
            print(f"corrupt block: {key}")
        for row in incomplete:
            print(f"incomplete pin: {row['pin']} (missing {row['missing']})")
        print("repo ok" if report.ok else "repo has problems", file=sys.stderr)
    return 0 if report.ok else EXIT_FAILURE


def cmd_car_export(args: argparse.Namespace) -> int:
    from store.car import export_car

    cid = parse_cid(args.cid)
    dest = Path(args.output)
    tmp = dest.with_name(dest.name + ".partial")
    with open_repo(args) as repo:
        try:
            with open(tmp, "wb") as out:
                written = export_car(repo.blockstore, cid, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    print(f"wrote {dest} ({human_size(written)})", file=sys.stderr)
    return 0


def cmd_car_import(args: argparse.Namespace) -> int:
    from store.car import import_car

    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {args.file}")
    with open_repo(args) as repo, open(path, "rb") as src:
        result = repo.import_car(src)
    roots = [str(r) for r in result.roots]
    if args.json:
        print_json({"roots": roots, "blocks": result.blocks, "new_blocks": result.new_blocks})
    else:
        for r in roots:
            print(r)
        print(f"imported {result.blocks} blocks ({result.new_blocks} new)", file=sys.stderr)
    return 0


Handler = Callable[[argparse.Namespace], int]
