"""`--json`: one schema per command, the same offline and through a node, and
the one docs/CLI.md documents (issue 12, item 25).

Each command runs on the same repo twice, first offline, then with its node
running (so the command goes through the control API); the two documents
must have the same shape (keys and value types), and that shape must be the
one of the command's example in docs/CLI.md.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import PROJECT_ROOT, run_shoal, write_random
from tests.integration.swarm import Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration

CLI_MD = PROJECT_ROOT / "docs" / "CLI.md"


def shape(value: Any) -> Any:
    """Keys and value types, not values: what a schema promises."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if value is None:
        return "null"
    return type(value).__name__


def same_shape(a: Any, b: Any) -> bool:
    """Equal shapes, where an empty list or a null matches anything of its
    place (an offline `verify` finds no corrupt blocks to show a row of)."""
    if a in ([], "null") or b in ([], "null"):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_shape(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return same_shape(a[0], b[0])
    return bool(a == b)


def covers(documented: Any, actual: Any) -> bool:
    """Every field the docs show is there, with its type; the output may
    have more (a field may be added to a schema, never removed)."""
    if documented in ([], "null") or actual in ([], "null"):
        return True
    if isinstance(documented, dict) and isinstance(actual, dict):
        return all(k in actual and covers(v, actual[k]) for k, v in documented.items())
    if isinstance(documented, list) and isinstance(actual, list):
        return covers(documented[0], actual[0])
    return bool(documented == actual)


def documented() -> dict[str, Any]:
    """command -> the JSON example under its `### shoal COMMAND` heading."""
    text = CLI_MD.read_text()
    out: dict[str, Any] = {}
    for m in re.finditer(r"^### `shoal ([a-z][a-z -]*?)(?: [A-Z\[-].*?)?`\n(.*?)(?=^### |\Z)", text, re.M | re.S):
        block = re.search(r"```json\n(.*?)```", m.group(2), re.S)
        if block:
            out[m.group(1).strip()] = json.loads(block.group(1))
    return out


def run_json(repo: Path, *args: str) -> Any:
    r = run_shoal(repo, *args, "--json", timeout=180)
    assert r.code == 0, f"shoal {' '.join(args)} --json: {r.err}"
    return json.loads(r.text)


@pytest.mark.timeout(300)
def test_json_is_the_same_offline_and_through_a_node_and_documented(swarm: Swarm, tmp_path: Path) -> None:
    docs = documented()
    write_random(tmp_path / "f.bin", 1_300_000, seed=1)
    (tmp_path / "d").mkdir()
    write_random(tmp_path / "d" / "x.bin", 1000, seed=2)
    (tmp_path / "d" / "sub").mkdir()
    write_random(tmp_path / "d" / "sub" / "y.bin", 10, seed=3)

    a = swarm.add("A", start=False)
    repo = a.repo
    # (name in docs/CLI.md, arguments) in an order that works both times.
    init_doc = run_json(tmp_path / "fresh", "init")
    steps: list[tuple[str, list[str]]] = [
        ("put", ["put", str(tmp_path / "f.bin")]),
        ("put", ["put", str(tmp_path / "d")]),
        ("ls", ["ls"]),
        ("ls", ["ls", "{dir}"]),
        ("get", ["get", "{file}", "-o", str(tmp_path / "out-{run}.bin")]),
        ("pin ls", ["pin", "ls"]),
        ("pin rm", ["pin", "rm", "{dir}"]),
        ("pin add", ["pin", "add", "{dir}"]),
        ("gc", ["gc"]),
        ("verify", ["verify"]),
        ("car export", ["car", "export", "{dir}", "-o", str(tmp_path / "d-{run}.car")]),
        ("car import", ["car", "import", str(tmp_path / "d-{run}.car")]),
        ("id", ["id"]),
        ("hf import", ["hf", "import", str(tmp_path / "d"), "--repo", "org/d"]),
        ("hf ls", ["hf", "ls"]),
        ("energy", ["energy"]),
    ]
    ids: dict[str, str] = {}
    results: dict[str, list[Any]] = {"offline": [], "node": []}
    for run in ("offline", "node"):
        if run == "node":
            a.start()
        for name, args in steps:
            doc = run_json(repo, *[x.format(run=run, **ids) for x in args])
            if name == "put" and not ids.get("file"):
                ids["file"] = doc["cid"]
            elif name == "put":
                ids["dir"] = doc["cid"]
            results[run].append((name, doc))

    for (name, offline), (_, online) in zip(results["offline"], results["node"]):
        if name == "energy":  # its maps are keyed by operation kind and peer: compare the fields
            assert offline.keys() == online.keys(), (sorted(offline), sorted(online))
            continue
        assert same_shape(shape(offline), shape(online)), (name, offline, online)
        assert name in docs, f"docs/CLI.md has no JSON example for `shoal {name}`"
        assert covers(shape(docs[name]), shape(offline)), (name, docs[name], offline)
    assert covers(shape(docs["init"]), shape(init_doc)), init_doc

    # The kinds in listings: one vocabulary in both places (issue 12).
    listing = dict(results["node"])["ls"]
    assert {row["kind"] for row in listing} == {"file", "directory"}, listing
    entries = run_json(repo, "ls", ids["dir"])
    assert {row["name"]: row["kind"] for row in entries} == {"x.bin": "file", "sub": "directory"}
    offline_get = next(doc for name, doc in results["offline"] if name == "get")
    node_get = next(doc for name, doc in results["node"] if name == "get")
    assert offline_get["local_blocks"] == node_get["local_blocks"] == 3, (offline_get, node_get)
    assert offline_get["fetched_blocks"] == node_get["fetched_blocks"] == 0, (offline_get, node_get)

    # The commands that exist only with a node: peers, status, audit.
    b = swarm.add("B", bootstrap=[a.addr])
    wait_until(lambda: b.peer_id in a.connected_ids(), 20, "A and B to connect")
    placed = run_json(repo, "put", str(tmp_path / "f.bin"), "--replicas", "2")
    assert placed["placement"]["wanted"] == 2, placed
    assert covers(shape(docs["put"]), shape(placed)), placed

    def holder_ok() -> bool:
        status = run_json(repo, "status", ids["file"])
        return any(h["state"] == "ok" and h["peer_id"] == b.peer_id for h in status["holders"])

    wait_until(holder_ok, 60, "B to hold a copy")
    for name, args in (("peers", ["peers"]), ("status", ["status", ids["file"]]), ("audit", ["audit", ids["file"]]),
                       ("node status", ["node", "status"])):
        doc = run_json(repo, *args)
        assert name in docs, f"docs/CLI.md has no JSON example for `shoal {name}`"
        assert covers(shape(docs[name]), shape(doc)), (name, docs[name], doc)


def test_every_json_command_is_documented() -> None:
    """Each command that takes --json has an example in docs/CLI.md."""
    import argparse

    from shoal.cli.main import build_parser

    docs = documented()
    missing = []

    def walk(parser: argparse.ArgumentParser, path: tuple[str, ...]) -> None:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            if "--json" in parser._option_string_actions and " ".join(path) not in docs:
                missing.append(" ".join(path))
            return
        for action in subs:
            for name, child in action.choices.items():
                walk(child, path + (name,))

    walk(build_parser(), ())
    assert missing == [], f"commands with --json but no example in docs/CLI.md: {missing}"


def test_repair_index_json_is_documented(tmp_path: Path) -> None:
    """repair-index runs offline only (a node must be stopped), so on its own."""
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    write_random(tmp_path / "f.bin", 300_000, seed=9)
    assert run_shoal(repo, "put", "-q", str(tmp_path / "f.bin")).code == 0
    doc = run_json(repo, "repair-index")
    assert covers(shape(documented()["repair-index"]), shape(doc)), doc
