"""Entry point of the `shoal` command: argument parsing and error mapping.

The command names and flags are a contract (DESIGN.md, "Command line
contract"): add, never rename. Handlers live in `cli.commands_*`.

Rules every command's parser follows (tests/unit/test_cli_parser.py checks
them on the whole tree, so a new flag cannot forget them):

- every argument and option has help text, with its unit and default;
- sizes use `shoal.cli.args.size` (binary suffixes: 512K, 1M, 10G), counts and
  durations the other `shoal.cli.args` types, so bad values fail in the parser;
- `--repo` and `--json` are global: they work before or after the
  subcommand (`shoal --json ls` and `shoal ls --json`). A command whose output
  is not data (cat's bytes, a foreground node) sets `json_unsupported` and
  then refuses `--json` with one line instead of ignoring it;
- a bad invocation prints ONE line (`shoal: error: ...`) and a `hint:` line,
  exit code 2 — never argparse's multi-line usage dump, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, NoReturn, Sequence

from shoal.cli.errors import EXIT_FAILURE, EXIT_USAGE, CliError, describe, fail

REPO_HELP = "repo directory (default: $SHOAL_REPO, else ~/.shoal)"
JSON_HELP = "print the result as one JSON document on stdout (schemas: docs/CLI.md)"


class ShoalArgumentParser(argparse.ArgumentParser):
    """argparse with Shoal's error format: one error line plus a hint line."""

    def error(self, message: str) -> NoReturn:
        fail(message, f"see `{self.prog} --help`", EXIT_USAGE)


class _VersionAction(argparse.Action):
    """`shoal --version`; the version is looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0,
                         help="print Shoal's version and exit")

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        print(f"shoal {shoal_version()}")
        parser.exit(0)


def shoal_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("shoal")
    except metadata.PackageNotFoundError:  # run from a source tree without an install
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    from shoal.cli import (
    commands_demo, commands_energy, commands_hf, commands_node, commands_replication, commands_routing,
    commands_store,
)

    parser = ShoalArgumentParser(
        prog="shoal",
        description="Peer-to-peer, content-addressed storage for model weights and datasets.",
        epilog="Global options (--repo, --json) may also follow the command. "
               "Documentation of every command and its JSON output: docs/CLI.md.",
    )
    parser.add_argument("--version", action=_VersionAction)
    parser.add_argument("--repo", metavar="DIR", default=None, help=REPO_HELP)
    parser.add_argument("--json", action="store_true", default=False, help=JSON_HELP)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (commands_store, commands_node, commands_replication, commands_energy, commands_hf,
                   commands_routing, commands_demo):
        module.register(sub)
    _add_global_options(parser)
    return parser


def _subparsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    out: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            out.extend(dict.fromkeys(action.choices.values()))  # aliases map to one parser
    return out


def _add_global_options(parser: argparse.ArgumentParser) -> None:
    """Give every command parser `--repo` and `--json` (unless it refuses JSON).

    Their defaults are SUPPRESS so that a subcommand that is not given the
    option keeps the value parsed before the subcommand (`shoal --json ls`):
    argparse copies every attribute of the sub-namespace over the parent's.
    """
    for child in _subparsers(parser):
        opts = child._option_string_actions
        if "--repo" not in opts:
            child.add_argument("--repo", metavar="DIR", default=argparse.SUPPRESS, help=REPO_HELP)
        json_ok = not child.get_default("json_unsupported")
        if "--json" in opts:
            opts["--json"].default = argparse.SUPPRESS
        elif json_ok:
            child.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=JSON_HELP)
        _add_global_options(child)


def _command_name(args: argparse.Namespace) -> str:
    parts = [getattr(args, "command", None)]
    for attr in ("pin_command", "car_command", "node_command", "hf_command"):
        if getattr(args, attr, None):
            parts.append(getattr(args, attr))
    return " ".join(p for p in parts if p)


def _describable(exc: BaseException) -> BaseException | None:
    """The one error to report from an exception or a (nested) exception group.

    trio wraps an error raised inside a nursery (a port in use while a node
    starts) in an ExceptionGroup; the user should see the error, not the group.
    A group is reported only if every leaf is an expected error; else None.
    """
    if isinstance(exc, BaseExceptionGroup):
        leaves = [_describable(e) for e in exc.exceptions]
        if not leaves or any(leaf is None for leaf in leaves):
            return None
        return leaves[0]
    if isinstance(exc, KeyboardInterrupt):
        return exc
    return exc if describe(exc) is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.json and args.handler is not None and getattr(args, "json_unsupported", False):
        fail(f"`shoal {_command_name(args)}` has no JSON output", "drop --json", EXIT_USAGE)
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
        leaf = _describable(exc)
        if leaf is None:
            raise
        if isinstance(leaf, KeyboardInterrupt):
            print("shoal: interrupted", file=sys.stderr)
            return 130
        described = describe(leaf)
        assert described is not None
        message, hint = described
        fail(message, hint, leaf.code if isinstance(leaf, CliError) else EXIT_FAILURE)
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
