"""Issue 13: the "through the node or offline" choice of every CLI command is made in one place.

shoal.cli.dispatch.run decides: the repo's node answers -> the command's node
side, with a client that is closed after; else its offline side, on the repo
opened with the lock mode the command declares. A stand-in node (a small
HTTP server answering `/v1/id` like the control API) lets this run without
starting a real node; tests/integration/test_cli_json.py compares the JSON of
both paths for every command against docs/CLI.md.
"""

from __future__ import annotations

import argparse
import ast
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest

from shoal.cli.dispatch import Access, run
from shoal.cli.errors import CliError
from shoal.cli.node_client import NodeClient
from shoal.store.errors import RepoLocked
from shoal.store.persist.repo import Repo

ROOT = Path(__file__).resolve().parents[2]


class _FakeApi(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        ok = self.headers.get("Authorization") == "Bearer t0ken"
        body = json.dumps({"peer_id": "12D3KooWfake", "addrs": [], "path": self.path} if ok
                          else {"error": "unauthorized"}).encode()
        self.send_response(200 if ok else 401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    Repo.init(path).close()
    return path


@pytest.fixture
def node(repo: Path) -> Iterator[Path]:
    """A stand-in node for `repo`: an api file naming a server that answers like the control API."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    (repo / "api").write_text(json.dumps({"url": f"http://127.0.0.1:{server.server_port}", "token": "t0ken"}))
    try:
        yield repo
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def _args(repo: Path, **extra: Any) -> argparse.Namespace:
    return argparse.Namespace(repo=str(repo), **extra)


def test_a_node_that_answers_serves_the_command(node: Path) -> None:
    clients: list[NodeClient] = []

    def via_node(client: NodeClient) -> Any:
        clients.append(client)
        return client.call("GET", "/v1/id")

    doc = run(_args(node), node=via_node, offline=lambda repo: pytest.fail("ran offline beside a node"))
    assert doc["peer_id"] == "12D3KooWfake" and doc["path"] == "/v1/id"
    assert clients and clients[0]._client.is_closed  # the client is closed after the command


def test_without_a_node_the_offline_side_runs_on_the_repo(repo: Path) -> None:
    (repo / "api").write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "x"}))  # a stale api file
    seen = run(_args(repo), node=lambda c: pytest.fail("no node answers"), offline=lambda r: r.path)
    assert Path(seen) == repo


@pytest.mark.parametrize("api", [
    {"url": "http://[::1", "token": "x"},  # not a URL (httpx.InvalidURL is no HTTPError)
    {"url": "http://127.0.0.1:1x", "token": "x"},  # a bad port
    {"url": "http://127.0.0.1:9", "token": "t\u00e9"},  # a token that is no header value
])
def test_a_damaged_api_file_means_no_node_not_a_traceback(repo: Path, api: dict[str, str]) -> None:
    """A hand-edited or damaged api file is an api file that names no node:
    the command runs offline (the repo lock still refuses a live node)."""
    (repo / "api").write_text(json.dumps(api))
    seen = run(_args(repo), node=lambda c: pytest.fail("no node answers"), offline=lambda r: r.path)
    assert Path(seen) == repo


def test_the_offline_side_opens_the_repo_with_the_declared_lock(repo: Path) -> None:
    with Repo.open(repo, wait=False):  # another writer holds the repo
        assert run(_args(repo, no_wait=True), node=None, offline=lambda r: "read", access=Access.READ) == "read"
        with pytest.raises(RepoLocked):
            run(_args(repo, no_wait=True), node=None, offline=lambda r: "written", access=Access.WRITE)


def test_a_command_that_needs_a_node_says_so_without_one(repo: Path) -> None:
    with pytest.raises(CliError, match="no running node for this repo") as info:
        run(_args(repo), node=lambda c: c.call("GET", "/v1/peers"), offline=None)
    assert "shoal node start" in info.value.hint
    wanted = CliError("--replicas needs a running node")
    with pytest.raises(CliError) as info:
        run(_args(repo), node=lambda c: None, offline=lambda r: pytest.fail("must not run offline"),
            access=Access.WRITE, needs_node=wanted)
    assert info.value is wanted


def test_an_offline_only_command_refuses_a_running_node(node: Path) -> None:
    with pytest.raises(CliError, match="a node is running on this repo"):
        run(_args(node, no_wait=True), node=None, offline=lambda r: pytest.fail("ran beside a node"),
            access=Access.REPAIR)


def test_no_command_module_chooses_the_path_itself() -> None:
    """Only shoal.cli.dispatch looks for the node (node_client.connect / read_api_file)."""
    offenders = []
    for path in sorted((ROOT / "cli").glob("commands_*.py")):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.ImportFrom) and n.module == "shoal.cli.node_client":
                names = {a.name for a in n.names} & {"connect", "read_api_file"}
                offenders += [f"{path.name}: imports {name}" for name in sorted(names)]
    assert offenders == [], offenders


def test_streamed_gets_check_the_status_and_map_transport_errors(node: Path) -> None:
    """NodeClient.stream (cat) and .lines (ls) share one streamed GET: a node's
    error status is its message, a dead node one line, and data comes through."""
    doc = json.loads((node / "api").read_text())
    good = NodeClient(doc["url"], doc["token"])
    bad = NodeClient(doc["url"], "wrong")
    dead = NodeClient("http://127.0.0.1:9", "x")
    try:
        assert [d["path"] for d in good.lines("/v1/id")] == ["/v1/id"]
        assert json.loads(b"".join(good.stream("/v1/id")))["peer_id"] == "12D3KooWfake"
        with pytest.raises(CliError, match="unauthorized"):
            list(bad.lines("/v1/id"))
        with pytest.raises(CliError, match="unauthorized"):
            list(bad.stream("/v1/id"))
        with pytest.raises(CliError, match="did not answer"):
            list(dead.lines("/v1/ls"))
        with pytest.raises(CliError, match="did not answer"):
            list(dead.stream("/v1/cat"))
    finally:
        for c in (good, bad, dead):
            c.close()
