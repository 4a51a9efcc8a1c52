"""`shoal hf import|ls`: Hugging Face style names for folders and cache snapshots.

`hf import DIR --repo ORG/NAME` imports DIR as one directory CID (pinned)
and records a signed name record (shoal.store.names, shoal.p2p.names):
through the running node when there is one (the node signs it and spreads
it to its peers), else offline with the repo's identity key (the record
spreads when the node next starts and peers connect). `hf ls` lists the
names this node resolves (its trust policy applies through a node; offline,
only the repo's own records are listed, the default trust without a node).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from shoal.store.chunking.choice import DEFAULT_CHUNKER, chunker_for
from shoal.store.names.records import validate_repo, validate_revision
from shoal.store.persist.repo import Repo

from shoal.cli.commands_store import absolute
from shoal.cli.dispatch import Access, run
from shoal.cli.errors import CliError
from shoal.cli.node_client import NodeClient
from shoal.cli.output import human_size, plural, print_json, progress_bar

IMPORT_FIELDS = ("repo", "revision", "commit", "cid", "files")
LS_FIELDS = ("repo", "type", "revision", "commit", "cid", "publisher", "files")


def register(sub: Any) -> None:
    """Add `hf import` and `hf ls` to the top-level parser."""
    hf = sub.add_parser("hf", help="Hugging Face style repository names (org/name@revision -> CID)")
    hf_sub = hf.add_subparsers(dest="hf_command", metavar="import|ls", required=True)
    p = hf_sub.add_parser("import", help="import a folder or an HF cache snapshot under a repository name",
                          description="Import DIR (a plain folder, or a Hugging Face cache snapshot "
                                      ".../models--org--name/snapshots/<commit>/ whose symlinks are followed) "
                                      "as one directory CID, and record a signed name record for it.")
    p.add_argument("dir", metavar="DIR", help="the folder to import")
    p.add_argument("--repo", dest="hf_repo", metavar="ORG/NAME", required=True,
                   help="repository name, as on the Hub (letters, digits, '_', '.', '-')")
    p.add_argument("--revision", default="main", metavar="REV",
                   help="branch or tag name the record gives (default: main)")
    p.add_argument("--type", dest="kind", choices=("model", "dataset"), default=None,
                   help="repository type (default: dataset for a datasets--... snapshot, else model)")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once if another shoal process is writing the repo (default: wait for it)")
    p.set_defaults(handler=cmd_hf_import)
    p = hf_sub.add_parser("ls", help="list the repository names this node resolves")
    p.set_defaults(handler=cmd_hf_ls)


def _check_dir(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise CliError(f"no such directory: {text}")
    if not path.is_dir():
        raise CliError(f"{text} is not a directory", hint="hf import takes the folder of a model or dataset")
    return path


def cmd_hf_import(args: argparse.Namespace) -> int:
    name = validate_repo(args.hf_repo)
    revision = validate_revision(args.revision)
    path = _check_dir(args.dir)

    def node(client: NodeClient) -> dict[str, Any]:
        body = {"path": absolute(path), "repo": name, "revision": revision, "type": args.kind}
        doc: dict[str, Any] = client.call("POST", "/v1/hf/import", body)
        return doc

    def offline(repo: Repo) -> dict[str, Any]:
        from shoal.p2p.names.publish import publish_folder, record_json
        from shoal.p2p.secure.identity import Identity

        identity = Identity.load_or_create(repo.identity_path)
        chunker = chunker_for(DEFAULT_CHUNKER, repo.default_profile(), path)
        total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        with progress_bar(f"hf import {name}", total, enabled=not args.json) as advance:
            record = publish_folder(repo, identity, path, name, kind=args.kind, revision=revision,
                                    chunker=chunker, progress=advance)
        return {**record_json(record), "type": record.kind, "seq": record.seq}

    doc = run(args, node=node, offline=offline, access=Access.WRITE)
    if args.json:
        print_json({k: doc[k] for k in IMPORT_FIELDS})
    else:
        size = sum(int(f["size"]) for f in doc["files"])
        print(f"{doc['type']} {doc['repo']}@{doc['revision']} -> {doc['cid']} "
              f"(commit {doc['commit']}, {plural(len(doc['files']), 'file')}, {human_size(size)}, seq {doc['seq']})")
    return 0


def cmd_hf_ls(args: argparse.Namespace) -> int:
    def node(client: NodeClient) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = client.call("GET", "/v1/hf/ls")
        return rows

    def offline(repo: Repo) -> list[dict[str, Any]]:
        from shoal.p2p.names.publish import listing_json
        from shoal.p2p.names.trust import TrustPolicy
        from shoal.p2p.secure.identity import Identity

        if not repo.identity_path.exists():
            return []
        me = Identity.load_or_create(repo.identity_path).peer_id
        node_cfg = repo.config.get("node", {})
        private = bool(node_cfg.get("swarm_key")) or (repo.path / "swarm.key").exists()
        trust = TrustPolicy.from_config(repo.config.get("names"), me, private)
        return [listing_json(r) for r in repo.names.repos(trusted=trust)]

    rows = run(args, node=node, offline=offline, access=Access.READ)
    if args.json:
        print_json([{k: r[k] for k in LS_FIELDS} for r in rows])
    elif not rows:
        print("no repositories known (add one with `shoal hf import DIR --repo ORG/NAME`)")
    else:
        for r in rows:
            print(f"{r['type']:<7} {r['repo']}@{r['revision']}  {r['cid']}  commit {r['commit'][:12]}  "
                  f"{plural(int(r['files']), 'file')}  by {r['publisher']}")
    return 0
