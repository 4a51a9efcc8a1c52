"""Where a command runs: through the repo's running node, or offline on the repo.

Every command that can reach a node decides it here, in one way: if the
repo's api file names a node that answers, the command's node side runs with
a client for it (and the client is closed after); otherwise its offline side
runs on the repo, opened with the lock mode the command declares. A command
without an offline side needs a node and says so; one without a node side
refuses to run beside a node. The command modules only say what each side
does, so the two paths cannot drift apart in how they are chosen, and the
JSON each prints is built by the command from either side's answer.
"""

from __future__ import annotations

import argparse
import enum
import sys
from pathlib import Path
from typing import Callable, TypeVar

from shoal.store.persist.repo import Repo, resolve_repo_path

from shoal.cli.errors import CliError
from shoal.cli.node_client import NodeClient, connect
from shoal.cli.output import human_size

T = TypeVar("T")


class Access(enum.Enum):
    """How the offline side opens the repo."""

    READ = "read"  # no lock and the index read-only: never waits, works on a read-only repo
    WRITE = "write"  # the writer lock: waits for another writer (saying so) unless --no-wait
    FREES_SPACE = "frees-space"  # WRITE; on a full disk the repo gives back its emergency reserve
    REPAIR = "repair"  # Repo.open_for_repair: the index may be missing or unreadable


def no_node() -> CliError:
    return CliError("no running node for this repo", hint="start one with `shoal node start`")


def node_running() -> CliError:
    return CliError("a node is running on this repo", hint="stop it (`shoal node stop`), then repair")


def run(args: argparse.Namespace, *, node: Callable[[NodeClient], T] | None,
        offline: Callable[[Repo], T] | None, access: Access = Access.READ,
        needs_node: CliError | None = None) -> T:
    """Run the command's node side if the repo's node answers, else its offline side.

    `node=None`: offline only; a running node is refused (`node_running`).
    `offline=None`, or `needs_node` given: the command needs a node; without
    one it fails with `needs_node` (default `no_node()`), before touching the repo.
    """
    path = resolve_repo_path(args.repo)
    client = connect(path)
    if client is not None:
        try:
            if node is None:
                raise node_running()
            return node(client)
        finally:
            client.close()
    if offline is None or needs_node is not None:
        raise needs_node or no_node()
    with open_repo(path, access, wait=not getattr(args, "no_wait", False)) as repo:
        return offline(repo)


def open_repo(path: Path, access: Access, *, wait: bool = True) -> Repo:
    """Open the repo at `path` as `access` says (see Access)."""
    if access is Access.READ:
        return Repo.open(path, lock=False)

    def waiting(who: str) -> None:
        print(f"shoal: waiting for {who} to finish with the repo (--no-wait to fail instead)",
              file=sys.stderr, flush=True)

    if access is Access.REPAIR:
        return Repo.open_for_repair(path, wait=wait, on_wait=waiting)
    repo = Repo.open(path, wait=wait, on_wait=waiting, frees_space=access is Access.FREES_SPACE)
    if repo.reserve_released:
        print(f"shoal: disk full: released the {human_size(repo.reserve_released)} emergency reserve "
              f"so this command can run", file=sys.stderr)
    return repo
