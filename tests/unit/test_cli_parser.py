"""The argument parser as a whole: help text, global options, size suffixes,
the one-line error format, and how `node start` merges config.toml and flags.

These walk the whole parser tree, so a flag added later by any command is
held to the same rules (issue 12, items 18, 21 and 26).
"""

from __future__ import annotations

import argparse
from typing import Any, Iterator

import pytest

from shoal.cli.args import parse_size
from shoal.cli.commands_node import DEFAULT_AUDIT_INTERVAL_S, NodeSettings, default_lanes, node_settings
from shoal.cli.errors import CliError
from shoal.cli.main import build_parser, main
from shoal.store.persist.config import DEFAULTS, DEFAULT_LISTEN


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _walk(child, path + (name,))


def _commands() -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    return list(_walk(build_parser()))


def test_every_argument_and_option_has_help_text() -> None:
    missing = []
    for path, parser in _commands():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                subhelp = {a.dest: a.help for a in action._choices_actions}
                missing += [f"shoal {' '.join(path + (n,))}" for n in action.choices if not subhelp.get(n)]
                continue
            if not (action.help and action.help.strip()) or action.help == argparse.SUPPRESS:
                missing.append(f"shoal {' '.join(path)} {'/'.join(action.option_strings) or action.dest}")
    assert missing == [], f"arguments without help text: {missing}"


def test_options_with_a_default_say_it_in_their_help() -> None:
    """A user reading --help learns what happens when the option is left out."""
    silent = []
    for path, parser in _commands():
        for action in parser._actions:
            if (not action.option_strings or action.nargs == 0 or action.required
                    or isinstance(action, argparse._HelpAction)):
                continue  # positional arguments, switches and required options have no default
            if "default" not in (action.help or ""):
                silent.append(f"shoal {' '.join(path)} {action.option_strings[-1]}")
    assert silent == [], f"options whose help does not state the default: {silent}"


def test_every_command_takes_repo_and_json_after_the_command_name() -> None:
    for path, parser in _commands():
        if not path:
            continue
        opts = parser._option_string_actions
        assert "--repo" in opts, f"shoal {' '.join(path)} lacks --repo"
        if not parser.get_default("json_unsupported"):
            assert "--json" in opts, f"shoal {' '.join(path)} lacks --json"


def test_global_options_parse_before_and_after_the_command() -> None:
    parser = build_parser()
    for argv in (["--repo", "/r", "--json", "ls"], ["ls", "--repo", "/r", "--json"],
                 ["--json", "ls", "--repo", "/r"], ["--repo", "/r", "pin", "ls", "--json"]):
        args = parser.parse_args(argv)
        assert (args.repo, args.json) == ("/r", True), argv
    args = parser.parse_args(["ls"])
    assert (args.repo, args.json) == (None, False)


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("shoal ") and out.split()[1][0].isdigit(), out


@pytest.mark.parametrize("text, expected", [
    ("0", 0), ("4096", 4096), ("1K", 1024), ("1k", 1024), ("1M", 1 << 20), ("1MiB", 1 << 20),
    ("1MB", 1 << 20), ("1.5G", 3 << 29), ("2T", 2 << 40), (" 8 M ", 8 << 20),
])
def test_sizes_take_binary_suffixes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


def test_sizes_are_exact_past_float_precision() -> None:
    """A byte count is an integer: 2^53 + 1 went through a float and came back as 2^53."""
    assert parse_size(str((1 << 53) + 1)) == (1 << 53) + 1
    assert parse_size("8388609.5K") == 8388609 * 1024 + 512
    assert parse_size("99999999999999999999999") == 99999999999999999999999


@pytest.mark.parametrize("text", ["", "M", "-1", "1X", "1.5", "0.1K", "1e400", "nan", "1..2M", "inf"])
def test_bad_sizes_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize("argv, dest, value", [
    (["cat", "bafy", "--offset", "1M"], "offset", 1 << 20),
    (["cat", "bafy", "--length", "4K"], "length", 4096),
    (["node", "start", "--quota", "10G"], "quota", 10 << 30),
    (["demo", "--size", "2M"], "size", 2 << 20),
])
def test_size_options_accept_suffixes(argv: list[str], dest: str, value: int) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == value


@pytest.mark.parametrize("argv", [
    ["cat", "bafy", "--offset", "lots"],
    ["cat", "bafy", "--offset", "-5"],
    ["node", "start", "--audit-interval", "-5"],
    ["node", "start", "--audit-interval", "0"],
    ["node", "start", "--audit-interval", "nan"],
    ["node", "start", "--audit-interval", "1e-320"],
    ["node", "start", "--replicas", "0"],
    ["put", "x", "--replicas", "two"],
    ["energy", "--plot", "file.txt"],
    ["demo", "--size", "0"],
    ["frobnicate"],
    [],
])
def test_parser_errors_are_one_line_and_a_hint(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 2 and err[0].startswith("shoal: error: ") and err[1].startswith("hint: "), err


# -- node start: config.toml honoured, flags override ----------------------------


def _start_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["node", "start", *argv])


def test_defaults_listen_on_loopback_on_fixed_ports() -> None:
    assert DEFAULT_LISTEN == "/ip4/127.0.0.1/tcp/4101"
    s = node_settings(DEFAULTS, _start_args())
    assert s == NodeSettings([DEFAULT_LISTEN], [], "127.0.0.1:5101", None, None, 1, lanes=default_lanes())


def test_config_is_honoured() -> None:
    config: dict[str, Any] = {
        "node": {"listen": ["/ip4/127.0.0.1/tcp/4200"], "bootstrap": ["/ip4/127.0.0.1/tcp/4300/p2p/X"],
                 "api": "127.0.0.1:5200", "quota": "2G", "audit_interval": 30},
        "replication": {"replicas": 3},
    }
    s = node_settings(config, _start_args())
    assert s == NodeSettings(["/ip4/127.0.0.1/tcp/4200"], ["/ip4/127.0.0.1/tcp/4300/p2p/X"],
                             "127.0.0.1:5200", 2 << 30, 30.0, 3, lanes=default_lanes())


def test_flags_override_config() -> None:
    config: dict[str, Any] = {
        "node": {"listen": ["/ip4/127.0.0.1/tcp/4200"], "bootstrap": ["/ip4/127.0.0.1/tcp/4300/p2p/X"],
                 "api": "127.0.0.1:5200", "quota": "2G", "audit_interval": 30},
        "replication": {"replicas": 3},
    }
    args = _start_args("--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", "/ip4/127.0.0.1/tcp/1/p2p/Y",
                       "--api", "127.0.0.1:0", "--quota", "1M", "--audit-interval", "5", "--replicas", "2")
    s = node_settings(config, args)
    assert s == NodeSettings(["/ip4/127.0.0.1/tcp/0"], ["/ip4/127.0.0.1/tcp/1/p2p/Y"], "127.0.0.1:0",
                             1 << 20, 5.0, 2, lanes=default_lanes())


@pytest.mark.parametrize("config, word", [
    ({"node": {"listen": 4101}}, "listen"),
    ({"node": {"listen": []}}, "listen"),
    ({"node": {"api": 5101}}, "api"),
    ({"node": {"quota": "lots"}}, "quota"),
    ({"node": {"audit_interval": 0}}, "audit_interval"),
    ({"node": {"audit_interval": -5}}, "audit_interval"),
    ({"node": {"audit_interval": 1e-320}}, "audit_interval"),
    ({"replication": {"replicas": 0}}, "replicas"),
    ({"node": {"lanes": 0}}, "lanes"),
    ({"node": {"lanes": "4"}}, "lanes"),
    ({"node": {"lanes": True}}, "lanes"),
    ({"node": {"lanes": 65}}, "lanes"),
    ({"node": "x"}, "[node]"),
])
def test_bad_config_values_name_their_key(config: dict[str, Any], word: str) -> None:
    with pytest.raises(CliError, match=word.replace("[", r"\[").replace("]", r"\]")):
        node_settings(config, _start_args())


def test_lanes_default_to_the_cores_capped_at_8_none_below_4_config_then_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert node_settings(DEFAULTS, _start_args()).lanes == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert node_settings(DEFAULTS, _start_args()).lanes == 1
    monkeypatch.setattr(os, "cpu_count", lambda: 4)
    assert node_settings(DEFAULTS, _start_args()).lanes == 4
    monkeypatch.setattr(os, "cpu_count", lambda: 96)
    assert node_settings(DEFAULTS, _start_args()).lanes == 8
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert node_settings(DEFAULTS, _start_args()).lanes == 1
    assert node_settings({"node": {"lanes": 3}}, _start_args()).lanes == 3
    assert node_settings({"node": {"lanes": 3}}, _start_args("--lanes", "1")).lanes == 1
    with pytest.raises(CliError, match="--lanes 65"):
        node_settings(DEFAULTS, _start_args("--lanes", "65"))


def test_max_lanes_matches_the_node() -> None:
    from shoal.cli.commands_node import MAX_LANES
    from shoal.p2p.lanes.api import MAX_LANES as node_max

    assert MAX_LANES == node_max


def test_help_default_audit_interval_matches_the_node() -> None:
    from shoal.p2p.replication.owner import DEFAULT_AUDIT_INTERVAL_S as node_default

    assert DEFAULT_AUDIT_INTERVAL_S == node_default


def test_min_audit_interval_matches_the_node() -> None:
    from shoal.cli.commands_node import MIN_AUDIT_INTERVAL_S
    from shoal.p2p.replication.owner import MIN_AUDIT_INTERVAL_S as node_min

    assert MIN_AUDIT_INTERVAL_S == node_min


def test_demo_help_states_no_peer_count_that_could_go_stale() -> None:
    """Issue 12: the help said "5-peer" while the demo said "three peers"
    (and chapters since added more). Neither states a total now; the demo's
    closing line counts the peers it really started."""
    import inspect
    import re

    import shoal.cli.commands_demo as demo

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    help_text = next(a.help for a in sub._choices_actions if a.dest == "demo") or ""
    assert not re.search(r"\d+-peer|\b(three|four|five|six|seven|eight) peers\b", help_text), help_text
    source = inspect.getsource(demo.run_demo)
    assert "len(swarm.nodes)" in source and not re.search(r"\b(five|5)[- ]peer", source)


def test_config_ec_default_scheme() -> None:
    s = node_settings({"replication": {"replicas": 1, "ec": "4+2"}}, _start_args())
    assert s.ec == "4+2" and s.replicas == 1
    assert node_settings({"replication": {"ec": ""}}, _start_args()).ec is None
    for bad in ("4+0", 42, "8+30"):
        with pytest.raises(CliError, match=r"\[replication\] ec"):
            node_settings({"replication": {"ec": bad}}, _start_args())
