"""Plain HTTP clients against the path gateway (issue 14 item 4).

Node B runs the gateway and holds nothing; node A holds the content, so
every read below is fetched from A on demand. The clients are the real ones:
fsspec's HTTPFileSystem (aiohttp underneath), a safetensors reader doing
header-then-tensor Range requests checked against `safetensors.safe_open`,
and a browser-like client asking for an HTML directory listing.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import fsspec
import httpx
import numpy as np
from safetensors import safe_open

from tests.helpers import write_random
from tests.helpers_safetensors import write_safetensors
from tests.integration.swarm import Swarm, swarm
from tests.integration.test_gateway import gateway_url, two_nodes

__all__ = ["swarm"]

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
HOSTILE = "<script>alert(\"x\") it's.txt"  # (a file name cannot hold '/', so no </script>)


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.links: dict[str, str] = {}  # text -> href
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self._href = dict(attrs).get("href") if tag == "a" else None

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self.links[data] = self._href
            self._href = None


def test_html_listing(swarm: Swarm, tmp_path: Path) -> None:
    """Accept: text/html gets an HTML page whose links lead to the entries;
    a hostile name is text, not markup; JSON stays the default."""
    tree = tmp_path / "site"
    (tree / "sub").mkdir(parents=True)
    hostile = write_random(tree / HOSTILE, 1000, seed=1)
    nested = write_random(tree / "sub" / "w.bin", 1_200_000, seed=2)
    a, b = two_nodes(swarm)
    root = a.put(tree)
    gw = gateway_url(b)
    client = httpx.Client(base_url=gw, timeout=60)

    r = client.get(f"/ipfs/{root}", headers={"Accept": BROWSER_ACCEPT})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    assert r.headers["vary"] == "Accept" and r.headers["etag"] == f'"{root}.html"'
    assert "<script>" not in r.text and "&lt;script&gt;" in r.text
    page = Links()
    page.feed(r.text)
    assert "script" not in page.tags
    assert set(page.links) == {HOSTILE, "sub"}
    assert unquote(page.links[HOSTILE]) == f"/ipfs/{root}/{HOSTILE}"
    assert client.get(page.links[HOSTILE]).content == hostile  # the link works as given

    r = client.get(page.links["sub"], headers={"Accept": "text/html"})  # a nested directory, then its file
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text
    sub = Links()
    sub.feed(r.text)
    assert sub.links[".."] == f"/ipfs/{root}"
    assert client.get(sub.links["w.bin"]).content == nested
    assert client.head(f"/ipfs/{root}/sub", headers={"Accept": "text/html"}).headers["content-type"] \
        == "text/html; charset=utf-8"

    for accept in (None, "*/*", "application/json, text/html;q=0.9"):  # JSON otherwise
        r = client.get(f"/ipfs/{root}", headers={} if accept is None else {"Accept": accept})
        assert r.headers["content-type"] == "application/json" and r.headers["etag"] == f'"{root}"', accept
        assert {e["name"] for e in r.json()["entries"]} == {HOSTILE, "sub"}
    client.close()


def test_fsspec_http_filesystem(swarm: Swarm, tmp_path: Path) -> None:
    """fsspec.filesystem("http"): info (size from HEAD), open + read + seek (ranges
    under the hood), cat_file with start/end, ls over the HTML listing."""
    tree = tmp_path / "model"
    tree.mkdir()
    data = write_random(tree / "weights.bin", 3 * 1024 * 1024 + 4321, seed=7)
    (tree / "config.json").write_bytes(b'{"dim": 8}\n')
    a, b = two_nodes(swarm)
    root = a.put(tree)
    base = f"{gateway_url(b)}/ipfs/{root}"
    url = f"{base}/weights.bin"
    fs = fsspec.filesystem("http", skip_instance_cache=True)

    info = fs.info(url)
    assert info["size"] == len(data) and info["type"] == "file"
    assert fs.cat_file(url, start=1_048_570, end=1_048_600) == data[1_048_570:1_048_600]
    assert fs.cat_file(url, start=-10) == data[-10:]
    with fs.open(url, "rb", block_size=256 * 1024) as f:
        assert f.size == len(data)
        f.seek(2_000_000)
        assert f.read(100_000) == data[2_000_000:2_100_000]
        f.seek(0)
        assert f.read(16) == data[:16]
    with fsspec.open(url, "rb") as f:
        assert f.read() == data
    assert json.loads(fs.cat_file(f"{base}/config.json")) == {"dim": 8}

    html_fs = fsspec.filesystem("http", skip_instance_cache=True, headers={"Accept": "text/html"})
    names = sorted(p.rsplit("/", 1)[1] for p in html_fs.ls(base, detail=False))
    assert names == ["config.json", "weights.bin"]


def test_safetensors_header_then_tensor_over_ranges(swarm: Swarm, tmp_path: Path) -> None:
    """Read a safetensors file as a lazy loader does over HTTP: the 8-byte header
    length, the JSON header, then one tensor's bytes, each a Range request;
    the tensor equals what safetensors.safe_open reads from the original."""
    path = tmp_path / "model.safetensors"
    shapes = {"embed.weight": (1000, 512), "layers.0.mlp.up.weight": (2048, 512), "head.weight": (1000, 512)}
    size = write_safetensors(path, shapes, seed=5)
    a, b = two_nodes(swarm)
    cid = a.put(path)
    url = f"{gateway_url(b)}/ipfs/{cid}"
    client = httpx.Client(timeout=60)

    r = client.get(url, headers={"Range": "bytes=0-7"})
    assert r.status_code == 206 and r.headers["content-range"] == f"bytes 0-7/{size}", r.text
    n = int.from_bytes(r.content, "little")
    r = client.get(url, headers={"Range": f"bytes=8-{8 + n - 1}"})
    assert r.status_code == 206 and len(r.content) == n
    header = json.loads(r.content)
    name = "layers.0.mlp.up.weight"
    begin, end = header[name]["data_offsets"]
    start = 8 + n + begin
    r = client.get(url, headers={"Range": f"bytes={start}-{8 + n + end - 1}"})
    assert r.status_code == 206 and len(r.content) == end - begin
    got = np.frombuffer(r.content, dtype=np.float16).reshape(header[name]["shape"])
    with safe_open(str(path), framework="numpy") as original:
        want = original.get_tensor(name)
    assert got.dtype == want.dtype and np.array_equal(got, want)
    # Only that tensor moved: B holds fewer blocks than the file has.
    assert b.block_count() < a.block_count()
    assert re.fullmatch(r'"[a-z0-9]+"', client.head(url).headers["etag"])
    client.close()
