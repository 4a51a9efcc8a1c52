"""The HTTP gateway (issue 14 items 1-4): real node processes on 127.0.0.1, httpx clients.

Node B runs `--gateway 127.0.0.1:0` and holds nothing; node A holds a
multi-block file and a directory. Everything B serves it fetches from A on
demand; every CAR is parsed with Shoal's own reader (which checks each
block's hash) and read back with the exporter.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx

from shoal.store.dag import exporter
from shoal.store.ipld.car import read_car
from shoal.store.ipld.cid import RAW, make_cid, parse_cid
from shoal.store.persist.blockstore import MemoryBlockstore
from tests.helpers import write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

__all__ = ["swarm"]

CAR_ALL = "application/vnd.ipld.car; version=1; order=dfs; dups=n"


def gateway_url(node: NodeProc) -> str:
    doc = node.json("id")
    url = doc.get("gateway")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:"), doc
    return url


def car_blocks(body: bytes) -> tuple[list[str], MemoryBlockstore, list[str]]:
    """(roots, a store of the blocks, CIDs in CAR order); the reader hash-checks every block."""
    reader = read_car(io.BytesIO(body))
    store = MemoryBlockstore()
    order = []
    for cid, data in reader:
        store.put(cid, bytes(data))
        order.append(str(cid))
    return [str(r) for r in reader.roots], store, order


def pins(node: NodeProc) -> list[str]:
    resp = node.api("GET", "/v1/pins")
    assert resp.status_code == 200, resp.text
    return list(resp.json())


def two_nodes(swarm: Swarm, *gateway_args: str) -> tuple[NodeProc, NodeProc]:
    a = swarm.add("a")
    b = swarm.add("b", bootstrap=[a.addr], extra_args=["--gateway", "127.0.0.1:0", *gateway_args])
    swarm.wait_connected(b, 1)
    return a, b


def test_gateway_trustless_routes(swarm: Swarm, tmp_path: Path) -> None:
    data = write_random(tmp_path / "model.bin", 3 * 1024 * 1024 + 12345, seed=3)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    small = write_random(tree / "a.txt", 5000, seed=4)
    nested = write_random(tree / "sub" / "b.bin", 600_000, seed=5)
    a, b = two_nodes(swarm)
    file_cid = a.put(tmp_path / "model.bin")
    dir_cid = a.put(tree)
    gw = gateway_url(b)
    client = httpx.Client(base_url=gw, timeout=60)

    # The probe: an identity CID of no bytes, answered without any store.
    r = client.get("/ipfs/bafkqaaa", params={"format": "raw"})
    assert r.status_code == 200 and r.content == b"", (r.status_code, r.text)
    r = client.get("/ipfs/bafkqaaa", headers={"Accept": "application/vnd.ipld.car"})
    assert r.status_code == 200, r.text
    # (Shoal's CAR reader refuses identity CIDs; the one section is the CID's 4 bytes, no data)
    assert r.headers["content-type"] == CAR_ALL and r.content.endswith(b"\x04\x01\x55\x00\x00"), r.content

    # Refusals.
    assert client.get("/ipfs/not-a-cid", params={"format": "raw"}).status_code == 400
    assert client.get(f"/ipfs/{file_cid}", params={"format": "car", "dag-scope": "most"}).status_code == 400
    assert client.get(f"/ipfs/{file_cid}", params={"format": "car", "car-version": "2"}).status_code == 400
    assert client.get(f"/ipfs/{file_cid}", params={"format": "car", "entity-bytes": "9:1",
                                                   "dag-scope": "entity"}).status_code == 400
    assert client.get(f"/ipfs/{file_cid}", params={"format": "zip"}).status_code == 400
    assert client.post(f"/ipfs/{file_cid}", params={"format": "raw"}).status_code == 405
    nobody = make_cid(RAW, b"held by nobody")
    r = client.get(f"/ipfs/{nobody}", params={"format": "raw"})
    assert r.status_code == 404, r.text
    r = client.get(f"/ipfs/{file_cid}", params={"format": "raw"}, headers={"Cache-Control": "only-if-cached"})
    assert r.status_code == 412, r.text

    # A raw block fetched on demand: the block whose hash is the CID.
    r = client.get(f"/ipfs/{file_cid}", headers={"Accept": "application/vnd.ipld.raw"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.ipld.raw"
    assert hashlib.sha256(r.content).digest() == bytes(parse_cid(file_cid).raw_digest)
    assert r.headers["cache-control"] == "public, max-age=29030400, immutable"
    assert r.headers["content-disposition"] == f'attachment; filename="{file_cid}.bin"'
    assert r.headers["x-content-type-options"] == "nosniff"
    assert int(r.headers["content-length"]) == len(r.content)
    raw_etag = r.headers["etag"]
    r = client.head(f"/ipfs/{file_cid}", params={"format": "raw"})
    assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0
    assert client.get(f"/ipfs/{file_cid}", params={"format": "raw"},
                      headers={"If-None-Match": raw_etag}).status_code == 304

    # A byte range of the file: only the blocks that cover it.
    r = client.get(f"/ipfs/{file_cid}", params={"format": "car", "dag-scope": "entity",
                                                "entity-bytes": "1048000:1049999"})
    assert r.status_code == 200, r.text
    roots, store, order = car_blocks(r.content)
    assert roots == [file_cid] and order[0] == file_cid
    assert b"".join(exporter.read_file(store, parse_cid(file_cid), 1048000, 2000)) == data[1048000:1050000]
    range_etag = r.headers["etag"]
    r = client.get(f"/ipfs/{file_cid}", params={"format": "car", "dag-scope": "entity", "entity-bytes": "-100:*"})
    _, tail_store, _ = car_blocks(r.content)
    assert b"".join(exporter.read_file(tail_store, parse_cid(file_cid), len(data) - 100)) == data[-100:]
    r = client.get(f"/ipfs/{file_cid}", params={"format": "car", "dag-scope": "block"})
    assert car_blocks(r.content)[2] == [file_cid]

    # The whole file, streamed while B fetches it from A.
    r = client.get(f"/ipfs/{file_cid}", headers={"Accept": "application/vnd.ipld.car; version=1; dups=n"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == CAR_ALL
    assert r.headers["content-disposition"] == f'attachment; filename="{file_cid}.car"'
    assert r.headers["etag"] not in (raw_etag, range_etag)
    roots, store, order = car_blocks(r.content)
    assert roots == [file_cid] and len(order) == len(set(order)) > 3
    assert b"".join(exporter.read_file(store, parse_cid(file_cid))) == data

    # What B fetched stays cached (only-if-cached now succeeds) but unpinned.
    r = client.get(f"/ipfs/{file_cid}", params={"format": "car"}, headers={"Cache-Control": "only-if-cached"})
    assert r.status_code == 200 and car_blocks(r.content)[2] == order
    assert file_cid not in pins(b)

    # A directory, as a CAR of the whole DAG.
    r = client.get(f"/ipfs/{dir_cid}", params={"format": "car", "dag-scope": "all"})
    assert r.status_code == 200, r.text
    roots, store, _ = car_blocks(r.content)
    entries = {e.name: e for e in exporter.list_dir(store, parse_cid(dir_cid))}
    assert b"".join(exporter.read_file(store, entries["a.txt"].cid)) == small
    sub = {e.name: e for e in exporter.list_dir(store, entries["sub"].cid)}
    assert b"".join(exporter.read_file(store, sub["b.bin"].cid)) == nested
    r = client.get(f"/ipfs/{dir_cid}", params={"format": "car", "dag-scope": "entity"})
    assert car_blocks(r.content)[2] == [dir_cid]

    # Cached, not pinned: gc evicts it.
    assert b.api("POST", "/v1/gc", {"force": True}).status_code == 200
    r = client.get(f"/ipfs/{file_cid}", params={"format": "raw"}, headers={"Cache-Control": "only-if-cached"})
    assert r.status_code == 412, r.text
    client.close()


def test_gateway_cache_pin(swarm: Swarm, tmp_path: Path) -> None:
    data = write_random(tmp_path / "w.bin", 1_500_000, seed=9)
    a, b = two_nodes(swarm, "--gateway-cache-pin")
    cid = a.put(tmp_path / "w.bin")
    r = httpx.get(f"{gateway_url(b)}/ipfs/{cid}", params={"format": "car"}, timeout=60)
    assert r.status_code == 200, r.text
    _, store, _ = car_blocks(r.content)
    assert b"".join(exporter.read_file(store, parse_cid(cid))) == data
    wait_until(lambda: cid in pins(b), 20, "the gateway's fetch to be pinned")
    b.api("POST", "/v1/gc", {"force": True})
    r = httpx.get(f"{gateway_url(b)}/ipfs/{cid}", params={"format": "raw"},
                  headers={"Cache-Control": "only-if-cached"}, timeout=60)
    assert r.status_code == 200, r.text  # pinned: gc kept it


def test_gateway_off_by_default(swarm: Swarm) -> None:
    node = swarm.add("plain")
    doc: dict[str, Any] = node.json("id")
    assert "gateway" not in doc


def test_gateway_client_disconnect_cancels_the_request(swarm: Swarm, tmp_path: Path) -> None:
    """A client that reads a little of a large CAR and hangs up cancels the
    node's work for it (logged), and the gateway keeps serving."""
    write_random(tmp_path / "big.bin", 48 * 1024 * 1024, seed=11)
    a, b = two_nodes(swarm)
    cid = a.put(tmp_path / "big.bin")
    url = gateway_url(b)
    with httpx.stream("GET", f"{url}/ipfs/{cid}", params={"format": "car"}, timeout=60) as resp:
        assert resp.status_code == 200
        first = next(resp.iter_raw())
        assert first  # the response started streaming
    wait_until(lambda: "client went away, request cancelled" in b.log_text(), 30,
               "the node to cancel the abandoned request", on_timeout=b.log_tail)
    r = httpx.get(f"{url}/ipfs/bafkqaaa", params={"format": "raw"}, timeout=30)
    assert r.status_code == 200
    assert "Error in ASGI" not in b.log_text(), b.log_tail()  # cancelled, not failed


def test_path_gateway(swarm: Swarm, tmp_path: Path) -> None:
    """Item 4: plain files by path with single ranges, and JSON listings, fetched on demand."""
    tree = tmp_path / "repo"
    (tree / "sub").mkdir(parents=True)
    weights = write_random(tree / "sub" / "model.safetensors", 2 * 1024 * 1024 + 777, seed=21)
    readme = write_random(tree / "README.md", 300, seed=22)
    a, b = two_nodes(swarm)
    root = a.put(tree)
    client = httpx.Client(base_url=gateway_url(b), timeout=60)
    path = f"/ipfs/{root}/sub/model.safetensors"

    r = client.get(path, headers={"Cache-Control": "only-if-cached"})
    assert r.status_code == 412, r.text  # nothing is here yet
    r = client.head(path)
    assert r.status_code == 200 and r.content == b"", r.text
    assert int(r.headers["content-length"]) == len(weights) and r.headers["accept-ranges"] == "bytes"
    r = client.get(path, headers={"Range": "bytes=1048570-1048600"})
    assert r.status_code == 206, r.text
    assert r.content == weights[1048570:1048601]
    assert r.headers["content-range"] == f"bytes 1048570-1048600/{len(weights)}"
    assert int(r.headers["content-length"]) == 31
    r = client.get(path, headers={"Range": "bytes=-100"})
    assert r.status_code == 206 and r.content == weights[-100:]
    r = client.get(path, headers={"Range": f"bytes={len(weights)}-"})
    assert r.status_code == 416, r.text
    r = client.get(path)
    assert r.status_code == 200 and r.content == weights
    assert r.headers["etag"].strip('"') and r.headers["cache-control"].endswith("immutable")
    assert client.get(f"/ipfs/{root}/README.md").content == readme
    if shutil.which("curl"):  # a plain HTTP client: a range, then the whole file to disk
        out = tmp_path / "curl.bin"
        got = subprocess.run(["curl", "-sf", "-r", "100-199", gateway_url(b) + path], capture_output=True,
                             timeout=60)
        assert got.returncode == 0 and got.stdout == weights[100:200], got.stderr
        got = subprocess.run(["curl", "-sf", "-o", str(out), gateway_url(b) + path], capture_output=True, timeout=60)
        assert got.returncode == 0 and out.read_bytes() == weights, got.stderr
    assert client.get(f"/ipfs/{root}/nope.txt").status_code == 404
    assert client.get(f"/ipfs/{root}/README.md/x").status_code == 404

    r = client.get(f"/ipfs/{root}")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
    listing = r.json()
    assert {e["name"] for e in listing["entries"]} == {"README.md", "sub"}
    r = client.get(f"/ipfs/{root}/sub/")
    assert [e["name"] for e in r.json()["entries"]] == ["model.safetensors"]
    client.close()


def test_gateway_serves_while_downloading(swarm: Swarm, tmp_path: Path) -> None:
    """Item 2: the CAR's first bytes reach the client while B still lacks most
    of the DAG (the client reads nothing more, so the fetch is held back by
    the hand-off's bound), and reading on completes it, byte-exact."""
    data = write_random(tmp_path / "big.bin", 64 * 1024 * 1024, seed=31)
    a, b = two_nodes(swarm)
    cid = a.put(tmp_path / "big.bin")
    total = a.block_count()
    with httpx.stream("GET", f"{gateway_url(b)}/ipfs/{cid}", params={"format": "car"}, timeout=120) as resp:
        assert resp.status_code == 200
        chunks = resp.iter_raw()
        body = bytearray(next(chunks))
        held = b.block_count()
        assert held < total, (held, total)  # first bytes out before the object is complete
        for chunk in chunks:
            body += chunk
    _, store, _ = car_blocks(bytes(body))
    assert b"".join(exporter.read_file(store, parse_cid(cid))) == data


def test_gateway_bounds_concurrent_requests(swarm: Swarm, tmp_path: Path) -> None:
    """`[gateway] max_requests`: past it a request is refused at once (503,
    Retry-After), not queued; a slot frees when its request ends."""
    write_random(tmp_path / "big.bin", 48 * 1024 * 1024, seed=41)
    a = swarm.add("a")
    b = swarm.add("b", bootstrap=[a.addr], extra_args=["--gateway", "127.0.0.1:0"], start=False)
    config = b.repo / "config.toml"
    config.write_text(config.read_text() + "\n[gateway]\nmax_requests = 1\n")
    b.start()
    swarm.wait_connected(b, 1)
    cid = a.put(tmp_path / "big.bin")
    url = gateway_url(b)
    with httpx.stream("GET", f"{url}/ipfs/{cid}", params={"format": "car"}, timeout=60) as resp:
        assert resp.status_code == 200
        chunks = resp.iter_raw()  # kept: a dropped iterator closes the response
        assert next(chunks)  # the one slot is taken by a response still streaming
        r = httpx.get(f"{url}/ipfs/bafkqaaa", params={"format": "raw"}, timeout=30)
        assert r.status_code == 503 and r.headers["retry-after"] == "1", r.text
    wait_until(lambda: httpx.get(f"{url}/ipfs/bafkqaaa", params={"format": "raw"}, timeout=30).status_code == 200,
               30, "the slot to be free again")
