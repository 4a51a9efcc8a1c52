"""Entry point of the `shoal` command: argument parsing and error mapping.

The command names and flags are a contract (DESIGN.md, "Command line
contract"): add, never rename. Handlers live in `cli.commands_*`.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .errors import EXIT_FAILURE, CliError, describe, fail


def build_parser() -> argparse.ArgumentParser:
    from . import commands_demo, commands_energy, commands_node, commands_replication, commands_store

    parser = argparse.ArgumentParser(
        prog="shoal",
        description="Peer-to-peer, content-addressed storage for model weights and datasets.",
    )
    parser.add_argument("--repo", metavar="DIR", help="repo directory (default: $SHOAL_REPO or ~/.shoal)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (commands_store, commands_node, commands_replication, commands_energy, commands_demo):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except KeyboardInterrupt:
        print("shoal: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `shoal cat CID | head` closes our stdout early: not an error. Point
        # stdout at /dev/null so the interpreter's final flush stays quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except SystemExit:
        raise
    except BaseException as exc:  # noqa: BLE001 - mapped or re-raised below
        described = describe(exc)
        if described is None:
            raise
        message, hint = described
        fail(message, hint, exc.code if isinstance(exc, CliError) else EXIT_FAILURE)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
