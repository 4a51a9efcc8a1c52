"""`node start` honours config.toml (listen, api, bootstrap, replicas) and
each flag overrides its setting; `init` writes a loopback listen address on
a fixed port (issue 12, item 21). Real node processes on 127.0.0.1.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from tests.helpers import free_port, run_shoal, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def set_config(repo: Path, **node: object) -> None:
    """Rewrite `[node]` keys (and `replicas=` of [replication]) the way a user edits the file."""
    path = repo / "config.toml"
    lines = path.read_text().splitlines()
    table = ""
    out = []
    for line in lines:
        if line.startswith("["):
            table = line
        key = line.split("=", 1)[0].strip()
        full = "replication.replicas" if table == "[replication]" and key == "replicas" else key
        if table in ("[node]", "[replication]") and full in node:
            line = f"{key} = {json.dumps(node[full])}"
        out.append(line)
    path.write_text("\n".join(out) + "\n")


def config_node(swarm: Swarm, name: str, *flags: str) -> NodeProc:
    """A node started with only the flags a test gives, so config.toml decides the rest."""
    node = swarm.node(name, extra_args=flags, listen=None, api_listen=None)
    assert isinstance(node, NodeProc)
    return node


def test_init_writes_a_loopback_listen_address_on_a_fixed_port(tmp_path: Path) -> None:
    assert run_shoal(tmp_path / "r", "init").code == 0
    config = tomllib.loads((tmp_path / "r" / "config.toml").read_text())
    assert config["node"]["listen"] == ["/ip4/127.0.0.1/tcp/4101"]
    assert config["node"]["api"] == "127.0.0.1:5101"
    assert run_shoal(tmp_path / "s", "init", "--listen", "/ip4/0.0.0.0/tcp/4200").code == 0
    config = tomllib.loads((tmp_path / "s" / "config.toml").read_text())
    assert config["node"]["listen"] == ["/ip4/0.0.0.0/tcp/4200"]


@pytest.mark.timeout(180)
def test_node_start_uses_config_and_keeps_its_addresses_across_restarts(swarm: Swarm, tmp_path: Path) -> None:
    a = config_node(swarm, "A")
    a_port, a_api = free_port(), free_port()
    set_config(a.repo, listen=[f"/ip4/127.0.0.1/tcp/{a_port}"], api=f"127.0.0.1:{a_api}")
    a.start()
    assert a.addrs == [f"/ip4/127.0.0.1/tcp/{a_port}/p2p/{a.peer_id}"], a.addrs
    assert a.api_url == f"http://127.0.0.1:{a_api}", a.api_url

    # B knows A only from its config's bootstrap list, and wants 2 copies of
    # every put that does not say otherwise.
    b = config_node(swarm, "B", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0")
    set_config(b.repo, bootstrap=[a.addrs[0]], **{"replication.replicas": 2})
    b.start()
    wait_until(lambda: a.peer_id in b.connected_ids(), 30, "B to dial A from its config's bootstrap")
    write_random(tmp_path / "f.bin", 200_000, seed=4)
    put = b.json("put", str(tmp_path / "f.bin"))
    assert put["placement"] is not None and put["placement"]["wanted"] == 2, put
    assert put["placement"]["planned"] == [a.peer_id], put

    # A restarted node is at the same address, and B finds it there again.
    a.stop()
    wait_until(lambda: a.peer_id not in b.connected_ids(), 30, "B to see A go")
    a.start()
    assert a.addrs == [f"/ip4/127.0.0.1/tcp/{a_port}/p2p/{a.peer_id}"], a.addrs
    wait_until(lambda: a.peer_id in b.connected_ids(), 60, "B to reconnect to A at its saved address")

    # Flags override the config.
    a.stop()
    a.extra_args = ["--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0"]
    a.start()
    assert a.addrs[0] != f"/ip4/127.0.0.1/tcp/{a_port}/p2p/{a.peer_id}", a.addrs
    assert a.api_url != f"http://127.0.0.1:{a_api}", a.api_url
