"""A local swarm of real `shoal node` processes, for the demo and benchmarks.

Each node gets its own repo under one temporary directory, listens on an
ephemeral loopback port, and is started as a separate process (the same
`shoal node start` a user runs). Stopping sends SIGTERM, then SIGKILL after
a grace period; `LocalSwarm` is a context manager so processes and files go
away even on Ctrl-C or an exception.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.cli.errors import CliError
from shoal.cli.node_client import NodeClient, read_api_file

READY_TIMEOUT_S = 30.0


def shoal_cmd() -> list[str]:
    """How to run `shoal` with this interpreter, wherever the package lives."""
    return [sys.executable, "-m", "shoal.cli.main"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return env


@dataclass
class NodeProcess:
    name: str
    repo: Path
    proc: subprocess.Popen[bytes] | None = None
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)
    log_path: Path | None = None

    def client(self) -> NodeClient:
        doc = read_api_file(self.repo)
        if doc is None:
            raise CliError(f"node {self.name} is not running")
        return NodeClient(doc["url"], doc["token"])

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        client = self.client()
        try:
            return client.call(method, path, body, **query)
        finally:
            client.close()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class LocalSwarm:
    def __init__(self, root: Path, extra_args: list[str] | None = None) -> None:
        self.root = root
        self.nodes: list[NodeProcess] = []
        self.extra_args = extra_args or []

    def __enter__(self) -> "LocalSwarm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def add_node(self, name: str, bootstrap: list[str] | None = None, args: list[str] | None = None) -> NodeProcess:
        repo = self.root / name
        if not (repo / "config.toml").exists():
            subprocess.run(shoal_cmd() + ["--repo", str(repo), "init"], check=True, env=_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = NodeProcess(name, repo)
        self.nodes.append(node)
        self.start(node, bootstrap or [], args or [])
        return node

    def start(self, node: NodeProcess, bootstrap: list[str], args: list[str] | None = None) -> None:
        cmd = shoal_cmd() + ["--repo", str(node.repo), "node", "start",
                             "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"]
        for b in bootstrap:
            cmd += ["--bootstrap", b]
        cmd += self.extra_args + (args or [])
        node.log_path = self.root / f"{node.name}.log"
        log = open(node.log_path, "ab")
        (node.repo / "api").unlink(missing_ok=True)
        node.proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=_env(), stdin=subprocess.DEVNULL,
                                     start_new_session=True)  # Ctrl-C reaches us, we stop them
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if node.proc.poll() is not None:
                raise CliError(f"node {node.name} exited at start; see {node.log_path}")
            if read_api_file(node.repo) is not None:
                try:
                    ident = node.call("GET", "/v1/id")
                except CliError:
                    time.sleep(0.05)
                    continue
                node.peer_id, node.addrs = ident["peer_id"], ident["addrs"]
                return
            time.sleep(0.05)
        raise CliError(f"node {node.name} not ready after {READY_TIMEOUT_S:g}s; see {node.log_path}")

    def kill(self, node: NodeProcess) -> None:
        """kill -9: no clean shutdown, the api file stays behind."""
        if node.alive:
            assert node.proc is not None
            node.proc.send_signal(signal.SIGKILL)
            node.proc.wait()

    def stop(self, node: NodeProcess, grace: float = 10.0) -> int | None:
        if node.proc is None:
            return None
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
            try:
                node.proc.wait(grace)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
        return node.proc.returncode

    def stop_all(self) -> None:
        for node in self.nodes:
            if node.alive:
                assert node.proc is not None
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            self.stop(node)

    def wait_connected(self, node: NodeProcess, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        peers: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            peers = [p for p in node.call("GET", "/v1/peers") if p["connected"]]
            if len(peers) >= count:
                return peers
            time.sleep(0.1)
        raise CliError(f"node {node.name} has {len(peers)} connected peers, wanted {count}")


def dump(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)
