"""Run a small swarm of real `shoal node` processes for integration tests.

Each node is a subprocess on 127.0.0.1 with ephemeral ports (`--listen
/ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0`) and its own temp repo. A node is
ready when its `<repo>/api` file exists and the API answers; its peer id and
addresses then come from `shoal id --json`, exactly as a user would get them.

Every wait is bounded and fails with a message that says what was awaited.
Teardown always runs (the `swarm` fixture's finally): SIGTERM, then SIGKILL
after a grace period, so no test leaves a process behind even when it fails.
Each node's stderr goes to `<tmp>/<name>.log`; the fixture prints the tail of
every log at teardown, which pytest shows only for a failing test.

Import the fixture into a test module with `from tests.integration.swarm
import swarm` (pytest finds fixtures imported into the module).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import httpx
import pytest

from shoal.store.persist.index import LOOP_WRITE
from tests.helpers import PROJECT_ROOT, SHOAL, Result, run_shoal, shoal_env

T = TypeVar("T")

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 60


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


@dataclass
class NodeProc:
    """One `shoal node start` process and its repo."""

    name: str
    repo: Path
    log_path: Path
    bootstrap: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    listen: str = "/ip4/127.0.0.1/tcp/0"  # a fixed port keeps the address across restarts
    preexec_fn: Callable[[], None] | None = None  # run in the child before exec (e.g. setrlimit)
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    api_url: str = ""
    api_token: str = ""
    _log_file: Any = None

    # -- lifecycle ----------------------------------------------------------

    def start(self, wait: bool = True) -> "NodeProc":
        """Spawn the node; with `wait`, block until its API answers and its id is known."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is already running"
        cmd = SHOAL + ["--repo", str(self.repo), "node", "start",
                       "--listen", self.listen, "--api", "127.0.0.1:0"]
        for b in self.bootstrap:
            cmd += ["--bootstrap", b]
        cmd += self.extra_args
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n===== {self.name}: {' '.join(cmd[2:])}\n".encode())
        self._log_file.flush()
        # The api file of a previous (killed) run would make us think the new
        # process is ready before it is; the node rewrites it when ready.
        (self.repo / "api").unlink(missing_ok=True)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=self._log_file, env=shoal_env(), cwd=PROJECT_ROOT,
                                     preexec_fn=self.preexec_fn)
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                pytest.fail(f"node {self.name} exited with {self.proc.returncode} before it was ready:\n"
                            + self.log_tail())
            return self._api_answers()

        wait_until(ready, timeout, f"node {self.name} to write its api file and answer",
                   on_timeout=lambda: "\n" + self.log_tail())
        doc = self.json("id")
        self.peer_id = doc["peer_id"]
        self.addrs = list(doc["addrs"])
        assert self.addrs, f"node {self.name} reports no listen address: {doc}"

    def _api_answers(self) -> bool:
        try:
            doc = json.loads((self.repo / "api").read_text())
            resp = httpx.get(doc["url"] + "/v1/id", headers={"Authorization": f"Bearer {doc['token']}"},
                             timeout=2.0)
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            return False
        if resp.status_code != 200:
            return False
        self.api_url, self.api_token = doc["url"].rstrip("/"), doc["token"]
        return True

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._note(f"did not stop within {timeout:g}s of SIGTERM: SIGKILL")
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no clean-up at all, as in a crash or power loss."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            self._note("killed with SIGKILL by the test")
        self._close_log()

    def _note(self, text: str) -> None:
        with open(self.log_path, "ab") as f:
            f.write(f"===== {self.name}: {text}\n".encode())

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return f"----- {self.name} log ({self.log_path}) -----\n" + "\n".join(tail)

    # -- talking to it --------------------------------------------------------

    @property
    def addr(self) -> str:
        """The first listen multiaddr, with /p2p/<id>."""
        return self.addrs[0]

    @property
    def host_port(self) -> str:
        """`/ip4/H/tcp/P` without the peer id."""
        return self.addr.split("/p2p/")[0]

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

    def connected_ids(self) -> set[str]:
        """Peer ids this node is connected to, via the API (cheap enough to poll;
        `peers()` goes through the real `shoal peers --json`)."""
        resp = self.api("GET", "/v1/peers")
        assert resp.status_code == 200, resp.text
        return {p["peer_id"] for p in resp.json() if p["connected"]}

    def put(self, path: Path) -> str:
        r = self.shoal("put", str(path), "--quiet")
        assert r.code == 0, f"put on {self.name} failed: {r.err}"
        return r.text.strip()

    def block_count(self) -> int:
        """Block files on disk (cheap to poll while a fetch runs)."""
        return sum(1 for _ in (self.repo / "blocks").rglob("*.data"))


class Swarm:
    """A set of nodes under one temp dir; `close` stops them all."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[NodeProc] = []

    def add(self, name: str, bootstrap: list[str] | None = None, extra_args: list[str] | None = None,
            start: bool = True) -> NodeProc:
        """Init a fresh repo for `name` and (by default) start its node."""
        repo = self.root / f"repo-{name}"
        r = run_shoal(repo, "init")
        assert r.code == 0, f"init {name}: {r.err}"
        node = NodeProc(name, repo, self.root / f"{name}.log", list(bootstrap or []), list(extra_args or []))
        self.nodes.append(node)
        if start:
            node.start()
        return node

    def chain(self, names: list[str]) -> list[NodeProc]:
        """Start nodes where each one bootstraps to the one before it."""
        out: list[NodeProc] = []
        for name in names:
            out.append(self.add(name, bootstrap=[out[-1].addr] if out else []))
        return out

    def close(self) -> None:
        """Stop every node (SIGTERM then SIGKILL) and close their logs. Never raises."""
        for node in self.nodes:
            if node.running and node.proc is not None:
                node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node in self.nodes:
            try:
                if node.proc is not None and node.proc.poll() is None:
                    node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                node._note("did not stop after SIGTERM: SIGKILL")
                assert node.proc is not None
                node.proc.kill()
                node.proc.wait()
            finally:
                node._close_log()

    def logs(self) -> str:
        return "\n".join(n.log_tail() for n in self.nodes)


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

