"""Gateways as a block source (issue 14 item 8): real node processes on 127.0.0.1.

Node G runs `--gateway 127.0.0.1:0` and holds a multi-block file and a
directory. The fetching nodes have NO peers (they are never connected to
G): everything they get comes over HTTP from G's trustless gateway, by
`shoal get --gateway URL` (through a running node, and offline with no node),
or by `[fetch] gateways` in config.toml. A lying gateway (a stdlib HTTP proxy
in front of G that flips a byte of raw blocks) is dropped: alone, the get
fails with one line and nothing wrong is stored; given before G, the get
completes from G.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from tests.helpers import run_shoal, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm

__all__ = ["swarm"]


def gateway_url(node: NodeProc) -> str:
    url = node.json("id").get("gateway")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), url
    return url


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def holder(swarm: Swarm, tmp_path: Path) -> tuple[NodeProc, str, bytes, str, dict[str, bytes]]:
    """Node G with its gateway on: (G, file CID, file bytes, dir CID, dir files)."""
    data = write_random(tmp_path / "model.bin", 9 * 1024 * 1024 + 4321, seed=81)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    write_random(tree / "a.txt", 3000, seed=82)
    write_random(tree / "sub" / "b.bin", 1_700_000, seed=83)
    g = swarm.add("g", extra_args=["--gateway", "127.0.0.1:0"])
    return g, g.put(tmp_path / "model.bin"), data, g.put(tree), tree_bytes(tree)


def assert_clean(node: NodeProc) -> None:
    """Every stored block matches its CID and nothing was pinned by a get."""
    verify = node.json("verify")
    assert verify["ok"] and not verify["corrupt_blocks"], verify
    assert node.api("GET", "/v1/pins").json() == []


def test_get_from_a_gateway_with_no_peers(swarm: Swarm, tmp_path: Path) -> None:
    g, file_cid, data, dir_cid, files = holder(swarm, tmp_path)
    url = gateway_url(g)
    n = swarm.add("n")  # no bootstrap: never connected to anyone
    assert n.peers() == []

    # Without a gateway there is nobody to ask.
    r = n.shoal("get", file_cid, "-o", str(tmp_path / "none.bin"))
    assert r.code != 0 and "no connected peer" in r.err

    doc = n.json("get", file_cid, "--gateway", url, "-o", str(tmp_path / "n.bin"))
    assert (tmp_path / "n.bin").read_bytes() == data
    assert doc["fetched_blocks"] >= 9 and doc["holders"] == 1, doc
    r = n.shoal("get", dir_cid, "--gateway", url + "/", "-o", str(tmp_path / "n-tree"))
    assert r.code == 0, r.err
    assert tree_bytes(tmp_path / "n-tree") == files
    assert n.peers() == []  # it all came over HTTP
    assert_clean(n)

    # Offline: no node runs on this repo; the CLI fetches into it itself.
    o = swarm.add("o", start=False)
    r = run_shoal(o.repo, "get", file_cid, "--gateway", url, "-o", str(tmp_path / "o.bin"))
    assert r.code == 0, r.err
    assert (tmp_path / "o.bin").read_bytes() == data
    r = run_shoal(o.repo, "get", dir_cid, "--gateway", url, "-o", str(tmp_path / "o-tree"))
    assert r.code == 0, r.err
    assert tree_bytes(tmp_path / "o-tree") == files
    r = run_shoal(o.repo, "verify", "--json")
    assert r.code == 0 and '"ok": true' in r.text, (r.text, r.err)

    # `[fetch] gateways` in config.toml instead of the flag.
    c = swarm.add("c", start=False)
    with open(c.repo / "config.toml", "a") as f:
        f.write(f'\n[fetch]\ngateways = ["{url}"]\n')
    c.start()
    assert c.peers() == []
    r = c.shoal("get", dir_cid, "-o", str(tmp_path / "c-tree"))
    assert r.code == 0, r.err
    assert tree_bytes(tmp_path / "c-tree") == files
    r = c.shoal("get", file_cid, "-o", str(tmp_path / "c.bin"))
    assert r.code == 0, r.err
    assert (tmp_path / "c.bin").read_bytes() == data
    assert_clean(c)


class Liar:
    """A gateway that relays G's but flips one byte of every raw leaf block
    (the dag-pb root it passes on intact, so the walk reaches the leaves)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.lies = 0
        liar = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                resp = httpx.get(liar.upstream + self.path, headers={"Accept": self.headers.get("Accept", "")},
                                 timeout=30)
                body = resp.content
                if resp.status_code == 200 and self.path.startswith("/ipfs/bafkrei") and body:
                    body = bytes([body[0] ^ 1]) + body[1:]  # same length: only the hash tells
                    liar.lies += 1
                self.send_response(resp.status_code)
                self.send_header("Content-Type", resp.headers.get("content-type", "application/octet-stream"))
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def liar_factory() -> Iterator[list[Liar]]:
    liars: list[Liar] = []
    yield liars
    for liar in liars:
        liar.server.shutdown()
        liar.server.server_close()


def test_lying_gateway_is_dropped(swarm: Swarm, tmp_path: Path, liar_factory: list[Liar]) -> None:
    g, file_cid, data, _dir_cid, _files = holder(swarm, tmp_path)
    url = gateway_url(g)
    liar = Liar(url)
    liar_factory.append(liar)
    threading.Thread(target=liar.server.serve_forever, daemon=True).start()
    n = swarm.add("n")

    # The liar alone: the get fails with one line naming it; nothing wrong is stored.
    out = tmp_path / "bad.bin"
    r = n.shoal("get", file_cid, "--gateway", liar.url, "-o", str(out))
    assert r.code != 0
    assert liar.lies >= 1
    lines = r.err.strip().splitlines()
    assert lines[0].startswith("shoal: error: could not fetch") and liar.url in lines[0], r.err
    assert "dropped" in lines[0] and "Traceback" not in r.err
    assert not out.exists()
    assert_clean(n)

    # The liar first, G second: the liar is dropped, G completes the object.
    before = liar.lies
    r = n.shoal("get", file_cid, "--gateway", liar.url, "--gateway", url, "-o", str(tmp_path / "good.bin"))
    assert r.code == 0, r.err
    assert (tmp_path / "good.bin").read_bytes() == data
    assert liar.lies > before
    assert f"gateway {liar.url} was dropped" in r.err, r.err
    assert_clean(n)
