"""The one harness that runs real `shoal node start` processes on this machine.

`shoal demo`, the integration tests (tests/integration/swarm.py adds a thin
pytest layer) and the benchmarks (bench/transfer.py) all start their nodes
here, so a node is started, awaited, talked to and stopped the same way
everywhere, and a fix to any of that reaches all three.

Each node has its own repo, listens on an ephemeral loopback port (or a fixed
`listen` address to keep it across restarts) with its API on an ephemeral
port, and runs as a separate process, exactly as a user starts one. A node is
ready when its `<repo>/api` file names an API that answers `/v1/id`; every
wait is bounded and fails with a message that says what was awaited and where
the node's log is. Stopping sends SIGTERM, then SIGKILL after a grace period;
`LocalSwarm` is a context manager whose exit stops every node even on Ctrl-C
or an exception, and never raises itself.

Why here and not in tests/: the demo ships with the package and the package
must not import tests/; tests and benchmarks may import the package.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Iterable

from shoal.cli.errors import CliError
from shoal.cli.node_client import NodeClient, read_api_file

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
LOG_TAIL_LINES = 60
POLL_S = 0.05
ANSWER_TIMEOUT_S = 2.0  # one readiness probe: a node that hangs must not hang the wait
EPHEMERAL_LISTEN = "/ip4/127.0.0.1/tcp/0"
EPHEMERAL_API = "127.0.0.1:0"


class NodeStartError(CliError):
    """A node could not be initialised, exited before it was ready, or did not get ready in time."""


def shoal_cmd(python: str | None = None) -> list[str]:
    """How to run `shoal` with this interpreter (or `python`), wherever the package lives."""
    return [python or sys.executable, "-m", "shoal.cli.main"]


def node_env() -> dict[str, str]:
    """The environment a node runs in: ours, less $SHOAL_REPO (each node gets --repo)."""
    env = dict(os.environ)
    env.pop("SHOAL_REPO", None)
    return env


@dataclass
class NodeProcess:
    """One `shoal node start` process and its repo."""

    name: str
    repo: Path
    log_path: Path
    bootstrap: list[str] = field(default_factory=list)
    extra_args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    # None leaves the flag out, so config.toml decides; a fixed port keeps the address across restarts.
    listen: str | None = EPHEMERAL_LISTEN
    api_listen: str | None = EPHEMERAL_API
    preexec_fn: Callable[[], None] | None = None  # run in the child before exec (e.g. setrlimit)
    python: str | None = None  # interpreter; default: this one
    env: dict[str, str] | None = None  # default: node_env()
    cwd: Path | None = None
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    api_url: str = ""
    api_token: str = ""
    _log_file: IO[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------

    def command(self) -> list[str]:
        """The `shoal node start` command line this node runs."""
        cmd = shoal_cmd(self.python) + ["--repo", str(self.repo), "node", "start"]
        if self.listen is not None:
            cmd += ["--listen", self.listen]
        if self.api_listen is not None:
            cmd += ["--api", self.api_listen]
        for b in self.bootstrap:
            cmd += ["--bootstrap", b]
        return cmd + self.extra_args

    def init(self) -> None:
        """`shoal init` the repo (changes nothing in an existing one)."""
        try:
            proc = subprocess.run(shoal_cmd(self.python) + ["--repo", str(self.repo), "init"],
                                  capture_output=True, text=True, env=self.env or node_env(), cwd=self.cwd,
                                  stdin=subprocess.DEVNULL, timeout=READY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise NodeStartError(f"init {self.name}: no answer after {READY_TIMEOUT_S:g}s") from None
        if proc.returncode != 0:
            raise NodeStartError(f"init {self.name} failed ({proc.returncode}): {proc.stderr.strip()}")

    def start(self, wait: bool = True, timeout: float = READY_TIMEOUT_S) -> "NodeProcess":
        """Spawn the node; with `wait`, block until its API answers and its id is known."""
        if self.running:
            raise NodeStartError(f"node {self.name} is already running")
        cmd = self.command()
        self._close_log()
        self._log_file = open(self.log_path, "ab")
        self._log_file.write(f"\n===== {self.name}: {' '.join(cmd[2:])}\n".encode())
        self._log_file.flush()
        # The api file of a previous (killed) run would make us think the new
        # process is ready before it is; the node rewrites it when ready.
        (self.repo / "api").unlink(missing_ok=True)
        self.peer_id, self.addrs, self.api_url, self.api_token = "", [], "", ""
        # Its own session: a Ctrl-C in the terminal reaches us, and we stop the nodes in order.
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self._log_file,
                                     stderr=self._log_file, env=self.env or node_env(), cwd=self.cwd,
                                     preexec_fn=self.preexec_fn, start_new_session=True)
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Until the api file names an API that answers `/v1/id`; then peer id and addresses are known."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise NodeStartError(f"node {self.name} exited with {self.proc.returncode} before it was "
                                     f"ready; see {self.log_path}")
            ident = self._identity()
            if ident is not None:
                self.peer_id, self.addrs = str(ident["peer_id"]), [str(a) for a in ident["addrs"]]
                if not self.addrs:
                    raise NodeStartError(f"node {self.name} reports no listen address: {ident}")
                return
            if time.monotonic() >= deadline:
                raise NodeStartError(f"timed out after {timeout:g}s waiting for node {self.name} to write "
                                     f"its api file and answer; see {self.log_path}")
            time.sleep(POLL_S)

    def _identity(self) -> dict[str, Any] | None:
        """The node's `/v1/id` answer, if its api file is there and the API answers in time."""
        import httpx

        doc = read_api_file(self.repo)
        if doc is None:
            return None
        url = doc["url"].rstrip("/")
        try:
            resp = httpx.get(url + "/v1/id", headers={"Authorization": f"Bearer {doc['token']}"},
                             timeout=ANSWER_TIMEOUT_S)
            ident = resp.json() if resp.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None
        if not isinstance(ident, dict) or "peer_id" not in ident or not isinstance(ident.get("addrs"), list):
            return None
        self.api_url, self.api_token = url, doc["token"]
        return ident

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    alive = running

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise NodeStartError(f"node {self.name} was never started")
        return self.proc.pid

    def signal_stop(self) -> None:
        """Send SIGTERM (without waiting): the first half of `stop`, for stopping many at once."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait up to `timeout`, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()  # first: a note that cannot be written must not spare it
                    self.proc.wait(timeout=STOP_TIMEOUT_S)
                    self.note(f"did not stop within {timeout:g}s of SIGTERM: SIGKILL")
        finally:
            self._close_log()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9: no clean-up at all, as in a crash or power loss (the api file stays behind)."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=STOP_TIMEOUT_S)
                self.note("killed with SIGKILL")
        finally:
            self._close_log()

    def note(self, text: str) -> None:
        """A line in the node's log from the harness (what it did to the node)."""
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

    def client(self) -> NodeClient:
        if not self.api_url:
            raise CliError(f"node {self.name} is not running")
        return NodeClient(self.api_url, self.api_token)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        """One control-API request; the node's errors become CliError with its message."""
        client = self.client()
        try:
            return client.call(method, path, body, **query)
        finally:
            client.close()

    def connected_ids(self) -> set[str]:
        """Peer ids this node is connected to (cheap enough to poll)."""
        return {str(p["peer_id"]) for p in self.call("GET", "/v1/peers") if p["connected"]}


class LocalSwarm:
    """A set of nodes under one directory; leaving the `with` block (or `close`) stops them all."""

    def __init__(self, root: Path, extra_args: list[str] | None = None, *, repo_prefix: str = "",
                 python: str | None = None, env: dict[str, str] | None = None, cwd: Path | None = None,
                 node_class: type[NodeProcess] = NodeProcess) -> None:
        self.root = root
        self.nodes: list[NodeProcess] = []
        self.extra_args = list(extra_args or [])  # given to every node
        self.repo_prefix = repo_prefix
        self.python, self.env, self.cwd = python, env, cwd
        self.node_class = node_class

    def __enter__(self) -> "LocalSwarm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node(self, name: str, bootstrap: Iterable[str] = (), extra_args: Iterable[str] = (),
             **fields: Any) -> NodeProcess:
        """A node of this swarm, its repo initialised, not started (`fields`: listen, api_listen, preexec_fn)."""
        self.root.mkdir(parents=True, exist_ok=True)
        node = self.node_class(name, self.root / f"{self.repo_prefix}{name}", self.root / f"{name}.log",
                               list(bootstrap), self.extra_args + list(extra_args), python=self.python,
                               env=self.env, cwd=self.cwd, **fields)
        self.nodes.append(node)  # before init: close() covers it whatever happens next
        node.init()
        return node

    def add(self, name: str, bootstrap: Iterable[str] = (), extra_args: Iterable[str] = (),
            start: bool = True, timeout: float = READY_TIMEOUT_S) -> NodeProcess:
        """Init a fresh repo for `name` and (by default) start its node and wait until it is ready."""
        node = self.node(name, bootstrap, extra_args)
        if start:
            node.start(timeout=timeout)
        return node

    def wait_connected(self, node: NodeProcess, want: int | Iterable[str],
                       timeout: float = 15.0) -> set[str]:
        """Until `node` is connected to `want` peers (a count, or these peer ids); returns their ids."""
        wanted = want if isinstance(want, int) else set(want)
        deadline = time.monotonic() + timeout
        while True:
            ids = node.connected_ids()
            if (len(ids) >= wanted) if isinstance(wanted, int) else wanted <= ids:
                return ids
            if time.monotonic() >= deadline:
                what = f"{wanted} peers" if isinstance(wanted, int) else f"peers {sorted(wanted)}"
                raise CliError(f"node {node.name} is connected to {len(ids)} peer(s) after {timeout:g}s, "
                               f"wanted {what}")
            time.sleep(0.1)

    def close(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Stop every node (SIGTERM to all, then SIGKILL to stragglers) and close their logs. Never raises."""
        for node in self.nodes:
            try:
                node.signal_stop()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            # The escalation sits inside the try: an error while escalating
            # (the log's folder gone, a kill that does not finish) must not
            # leave this node running nor skip the others.
            try:
                if node.proc is not None and node.proc.poll() is None:
                    try:
                        node.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
                    except subprocess.TimeoutExpired:
                        node.proc.kill()
                        node.proc.wait(timeout=STOP_TIMEOUT_S)
                        node.note("did not stop after SIGTERM: SIGKILL")
            except Exception as exc:  # keep stopping the others
                print(f"shoal: could not stop node {node.name}: {exc}", file=sys.stderr)
            finally:
                node._close_log()

    def logs(self) -> str:
        return "\n".join(n.log_tail() for n in self.nodes)

