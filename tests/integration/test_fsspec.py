"""`shoal://` for fsspec (issue 14 item 7) against a real node's gateway.

One `shoal node start --gateway 127.0.0.1:0` holds a model folder whose
safetensors file spans many blocks. Everything is read the way a user
reads it: `fsspec.open`, `fsspec.filesystem("shoal")`, a safetensors
tensor by byte ranges, and `simplecache::shoal://...` handed to
`safetensors.safe_open`. The filesystem class is found through the
`fsspec.specs` entry point, never imported by hand.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

import fsspec
import numpy as np
import pytest
from safetensors import safe_open

from tests.helpers import write_random
from tests.helpers_safetensors import layout, model_shapes, write_safetensors
from tests.integration.swarm import NodeProc, Swarm, swarm

__all__ = ["swarm"]

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

SHAPES = model_shapes(layers=2, hidden=256, vocab=1000)


def gateway_url(node: NodeProc) -> str:
    url = node.json("id").get("gateway")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), url
    return url


@pytest.fixture
def model(swarm: Swarm, tmp_path: Path) -> Iterator[tuple[NodeProc, str, Path]]:
    """(node with a gateway, CID of the model folder, the folder on disk)."""
    folder = tmp_path / "model"
    (folder / "extra").mkdir(parents=True)
    size = write_safetensors(folder / "model.safetensors", SHAPES, seed=7)
    assert size > 3 * 1024 * 1024
    (folder / "config.json").write_text(json.dumps({"hidden": 256, "layers": 2}))
    write_random(folder / "extra" / "notes bin#1.dat", 300_000, seed=2)  # a name that needs quoting
    node = swarm.add("a", extra_args=["--gateway", "127.0.0.1:0"])
    yield node, node.put(folder), folder


def test_fsspec_open_ls_info_cat(model: tuple[NodeProc, str, Path], tmp_path: Path) -> None:
    node, cid, folder = model
    url = gateway_url(node)
    data = (folder / "model.safetensors").read_bytes()

    with fsspec.open(f"shoal://{cid}/model.safetensors", "rb", gateway=url) as f:
        assert f.read() == data
    fs = fsspec.filesystem("shoal", gateway=url)
    assert type(fs).__module__ == "shoal.p2p.gateway.fsspec_fs"

    assert sorted(fs.ls(f"shoal://{cid}", detail=False)) == sorted(
        f"{cid}/{n}" for n in ("model.safetensors", "config.json", "extra"))
    listing = {e["name"]: e for e in fs.ls(cid, detail=True)}
    assert listing[f"{cid}/model.safetensors"]["type"] == "file"
    assert listing[f"{cid}/model.safetensors"]["size"] == len(data)
    assert listing[f"{cid}/model.safetensors"]["cid"].startswith("bafybei")  # dag-pb: many blocks
    assert listing[f"{cid}/config.json"]["size"] == (folder / "config.json").stat().st_size
    assert listing[f"{cid}/extra"]["type"] == "directory"
    assert all(isinstance(e["cid"], str) and e["cid"].startswith("baf") for e in listing.values())
    assert fs.ls(f"{cid}/extra", detail=False) == [f"{cid}/extra/notes bin#1.dat"]

    info = fs.info(f"shoal://{cid}/model.safetensors")
    assert (info["type"], info["size"], info["name"]) == ("file", len(data), f"{cid}/model.safetensors")
    assert info["cid"] == listing[f"{cid}/model.safetensors"]["cid"] == fs.ukey(f"{cid}/model.safetensors")
    assert fs.info(cid)["type"] == "directory" and fs.info(cid)["cid"] == cid
    assert fs.isdir(f"{cid}/extra") and not fs.isfile(f"{cid}/extra")
    assert fs.isfile(f"{cid}/config.json") and fs.exists(f"shoal://{cid}/config.json")
    assert not fs.exists(f"{cid}/nope.bin") and not fs.exists(f"{cid}/config.json/below")

    notes = (folder / "extra" / "notes bin#1.dat").read_bytes()
    assert fs.cat_file(f"{cid}/extra/notes bin#1.dat") == notes
    assert fs.cat_file(f"{cid}/model.safetensors", start=1_000_000, end=1_300_001) == data[1_000_000:1_300_001]
    assert fs.cat_file(f"{cid}/model.safetensors", start=-100) == data[-100:]
    assert fs.cat_file(f"{cid}/model.safetensors", start=10, end=-10) == data[10:-10]
    assert fs.cat_file(f"{cid}/model.safetensors", start=len(data) + 5) == b""
    with fs.open(f"{cid}/model.safetensors", block_size=256 * 1024) as f:
        f.seek(3_000_000)
        assert f.read(70_000) == data[3_000_000:3_070_000]
        f.seek(-5, os.SEEK_END)
        assert f.read() == data[-5:]

    fs.get(f"shoal://{cid}/extra", str(tmp_path / "got"), recursive=True)
    assert (tmp_path / "got" / "notes bin#1.dat").read_bytes() == notes
    assert fs.find(cid) == sorted(f"{cid}/{n}" for n in ("config.json", "extra/notes bin#1.dat",
                                                          "model.safetensors"))

    # Range reads share one pooled connection (httpx's documented "trace" extension sees each connect)
    connects: list[str] = []

    def trace(event: str, info: dict[str, Any]) -> None:
        if event == "connection.connect_tcp.complete":
            connects.append(event)

    fresh = fsspec.filesystem("shoal", gateway=url, skip_instance_cache=True)
    fresh._http().event_hooks["request"].append(lambda request: request.extensions.update(trace=trace))
    for i in range(20):
        assert fresh.cat_file(f"{cid}/model.safetensors", i * 1000, i * 1000 + 999) == data[i * 1000:i * 1000 + 999]
    assert fresh.info(f"{cid}/extra/notes bin#1.dat")["size"] == len(notes)
    assert len(fresh.ls(cid)) == 3 and fresh.ls(f"{cid}/config.json")[0]["type"] == "file"
    assert fresh.cat_file(f"{cid}/config.json") == (folder / "config.json").read_bytes()
    assert len(connects) == 1, connects

    with pytest.raises(FileNotFoundError):
        fs.cat_file(f"{cid}/missing.safetensors")
    with pytest.raises(FileNotFoundError):
        fs.info(f"{cid}/extra/missing")
    with pytest.raises(IsADirectoryError):
        fs.cat_file(f"{cid}/extra")
    with pytest.raises(PermissionError, match="read-only"):
        fs.open(f"{cid}/new.bin", "wb")
    with pytest.raises(PermissionError, match="read-only"):
        fs.rm(f"{cid}/config.json")


def test_one_tensor_by_ranges(model: tuple[NodeProc, str, Path]) -> None:
    """The safetensors layout read the way a lazy loader does: 8-byte header
    length, the header, then only the tensor's byte window."""
    node, cid, folder = model
    fs = fsspec.filesystem("shoal", gateway=gateway_url(node))
    path = f"shoal://{cid}/model.safetensors"
    n = int.from_bytes(fs.cat_file(path, start=0, end=8), "little")
    header = json.loads(fs.cat_file(path, start=8, end=8 + n))
    assert header == layout(SHAPES)
    name = "layers.1.mlp.up.weight"
    begin, end = header[name]["data_offsets"]
    window = fs.cat_file(path, start=8 + n + begin, end=8 + n + end)
    got = np.frombuffer(window, dtype=np.float16).reshape(header[name]["shape"])
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as original:
        assert np.array_equal(got, original.get_tensor(name))


def test_simplecache_gives_safe_open_a_local_path(model: tuple[NodeProc, str, Path], tmp_path: Path) -> None:
    node, cid, folder = model
    local = fsspec.open_local(f"simplecache::shoal://{cid}/model.safetensors",
                              shoal={"gateway": gateway_url(node)},
                              simplecache={"cache_storage": str(tmp_path / "cache")})
    assert isinstance(local, str) and local.startswith(str(tmp_path / "cache"))
    with safe_open(local, framework="numpy") as got, \
            safe_open(str(folder / "model.safetensors"), framework="numpy") as original:
        assert sorted(got.keys()) == sorted(SHAPES)
        for name in SHAPES:
            assert np.array_equal(got.get_tensor(name), original.get_tensor(name)), name


def test_reads_through_a_node_that_fetches_on_demand(swarm: Swarm, tmp_path: Path) -> None:
    """The node behind the gateway holds nothing: every range it serves it
    fetches from its peer first (verified), and fsspec cannot tell."""
    folder = tmp_path / "model"
    folder.mkdir()
    write_safetensors(folder / "model.safetensors", SHAPES, seed=11)
    a = swarm.add("a")
    b = swarm.add("b", bootstrap=[a.addr], extra_args=["--gateway", "127.0.0.1:0"])
    swarm.wait_connected(b, 1)
    cid = a.put(folder)
    fs = fsspec.filesystem("shoal", gateway=gateway_url(b), skip_instance_cache=True)
    assert fs.ls(cid, detail=False) == [f"{cid}/model.safetensors"]
    path = f"{cid}/model.safetensors"
    with fs.open(path, block_size=64 * 1024) as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
        name = "layers.0.attn.out.weight"
        begin, end = header[name]["data_offsets"]
        f.seek(8 + n + begin)
        got = np.frombuffer(f.read(end - begin), dtype=np.float16).reshape(header[name]["shape"])
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as original:
        assert np.array_equal(got, original.get_tensor(name))


def test_gateway_found_through_the_repo(swarm: Swarm, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No gateway option: $SHOAL_GATEWAY, else the node running on $SHOAL_REPO;
    a node without a gateway, or no node, is an error that says what to start."""
    write_random(tmp_path / "w.bin", 600_000, seed=9)
    with_gw = swarm.add("gw", extra_args=["--gateway", "127.0.0.1:0"])
    cid = with_gw.put(tmp_path / "w.bin")
    plain = swarm.add("plain")
    monkeypatch.delenv("SHOAL_GATEWAY", raising=False)

    monkeypatch.setenv("SHOAL_REPO", str(with_gw.repo))
    fs = fsspec.filesystem("shoal", skip_instance_cache=True)
    assert fs.cat_file(f"shoal://{cid}") == (tmp_path / "w.bin").read_bytes()
    assert fs.gateway == gateway_url(with_gw)

    monkeypatch.setenv("SHOAL_REPO", str(plain.repo))
    fs = fsspec.filesystem("shoal", skip_instance_cache=True)
    with pytest.raises(ConnectionError, match="--gateway"):
        fs.info(f"shoal://{cid}")

    monkeypatch.setenv("SHOAL_GATEWAY", gateway_url(with_gw))
    fs = fsspec.filesystem("shoal", skip_instance_cache=True)
    assert fs.info(cid)["size"] == 600_000

    monkeypatch.delenv("SHOAL_GATEWAY")
    empty = tmp_path / "no-node"
    empty.mkdir()
    fs = fsspec.filesystem("shoal", repo=str(empty), skip_instance_cache=True)
    with pytest.raises(ConnectionError, match="no node is running"):
        fs.ls(f"shoal://{cid}")
