"""The integration tests' layer on the node harness (shoal.cli.swarm).

Nodes are started, awaited and stopped by shoal.cli.swarm, the same harness
`shoal demo` and the benchmarks use: real `shoal node start` processes on
127.0.0.1 with ephemeral ports and their own temp repos. This module adds
only what tests need: a failure to start fails the test with the tail of the
node's log; a node's id is checked against `shoal id --json`, as a user gets
it; running `shoal` commands against a node's repo; and the `swarm` fixture,
which always tears the swarm down (SIGTERM, then SIGKILL after a grace
period), prints every node's log tail (pytest shows it only for a failing
test) and fails any test whose nodes wrote the index on the event loop.

Every wait is bounded and fails with a message that says what was awaited.
Import the fixture into a test module with `from tests.integration.swarm
import swarm` (pytest finds fixtures imported into the module).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar, cast

import httpx
import pytest

from shoal.cli.swarm import READY_TIMEOUT_S, STOP_TIMEOUT_S, LocalSwarm, NodeProcess, NodeStartError
from shoal.store.persist.index import LOOP_WRITE
from tests.helpers import PROJECT_ROOT, SHOAL, Result, run_shoal, shoal_env

__all__ = ["NodeProc", "PROJECT_ROOT", "READY_TIMEOUT_S", "SHOAL", "STOP_TIMEOUT_S", "Swarm", "swarm",
           "wait_until"]

T = TypeVar("T")


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1,
               on_timeout: Callable[[], str] | None = None) -> T:
    """Poll `predicate` until it returns something truthy; fail the test after `timeout`.

    Returns the truthy value so callers can poll and fetch in one step.
    """
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            extra = on_timeout() if on_timeout is not None else ""
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}; last value {last!r}{extra}")
        time.sleep(interval)


class NodeProc(NodeProcess):
    """A harness node with the tests' failure reports and `shoal` helpers."""

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        try:
            super().wait_ready(timeout)
        except NodeStartError as exc:
            pytest.fail(f"{exc}\n{self.log_tail()}")
        doc = self.json("id")  # what a user sees must be what the API said
        assert doc["peer_id"] == self.peer_id, (doc, self.peer_id)
        self.addrs = list(doc["addrs"])
        assert self.addrs, f"node {self.name} reports no listen address: {doc}"

    def shoal(self, *args: str, timeout: float = 120) -> Result:
        """Run a `shoal` command against this node's repo (goes through the API when it runs)."""
        return run_shoal(self.repo, *args, timeout=timeout)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a `shoal` command without waiting (for kill-mid-transfer tests)."""
        return subprocess.Popen(SHOAL + ["--repo", str(self.repo), *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=shoal_env(), cwd=PROJECT_ROOT)

    def json(self, *args: str, timeout: float = 120) -> Any:
        r = self.shoal(*args, "--json", timeout=timeout)
        assert r.code == 0, f"shoal {' '.join(args)} on {self.name} failed ({r.code}): {r.err}"
        return json.loads(r.text)

    def api(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None,
            timeout: float = 30) -> httpx.Response:
        """A raw HTTP call to the control API (token defaults to the node's own)."""
        headers = {} if token == "" else {"Authorization": f"Bearer {token or self.api_token}"}
        return httpx.request(method, self.api_url + path, json=body, headers=headers, timeout=timeout)

    def stats(self) -> dict[str, Any]:
        resp = self.api("GET", "/v1/stats")
        assert resp.status_code == 200, resp.text
        doc: dict[str, Any] = resp.json()
        return doc

    def peers(self) -> list[dict[str, Any]]:
        doc: list[dict[str, Any]] = self.json("peers")
        return doc

    def put(self, path: Path) -> str:
        r = self.shoal("put", str(path), "--quiet")
        assert r.code == 0, f"put on {self.name} failed: {r.err}"
        return r.text.strip()

    def block_count(self) -> int:
        """Block files on disk (cheap to poll while a fetch runs)."""
        return sum(1 for _ in (self.repo / "blocks").rglob("*.data"))


class Swarm(LocalSwarm):
    """The harness's swarm with `NodeProc` nodes in `<tmp>/repo-<name>`."""

    nodes: list[NodeProc]  # type: ignore[assignment]

    def __init__(self, root: Path) -> None:
        super().__init__(root, repo_prefix="repo-", env=shoal_env(), cwd=PROJECT_ROOT, node_class=NodeProc)

    def node(self, name: str, bootstrap: Any = (), extra_args: Any = (), **fields: Any) -> NodeProc:
        try:
            return cast(NodeProc, super().node(name, bootstrap, extra_args, **fields))
        except NodeStartError as exc:
            pytest.fail(str(exc))

    def add(self, name: str, bootstrap: Any = (), extra_args: Any = (), start: bool = True,
            timeout: float = READY_TIMEOUT_S) -> NodeProc:
        return cast(NodeProc, super().add(name, bootstrap, extra_args, start, timeout))

    def chain(self, names: list[str]) -> list[NodeProc]:
        """Start nodes where each one bootstraps to the one before it."""
        out: list[NodeProc] = []
        for name in names:
            out.append(self.add(name, bootstrap=[out[-1].addr] if out else []))
        return out


@pytest.fixture
def swarm(tmp_path: Path) -> Iterator[Swarm]:
    """A swarm that is always torn down; node logs are printed (shown on failure)."""
    s = Swarm(tmp_path)
    try:
        yield s
    finally:
        s.close()
        print(s.logs())
    # No node may write its index on the event loop's thread (issue 12 item 15;
    # shoal.store.persist.index logs such a write with this marker and a stack).
    offenders = [n.name for n in s.nodes if LOOP_WRITE in n.log_text()]
    assert not offenders, f"index writes on the event loop in {offenders}:\n{s.logs()}"

