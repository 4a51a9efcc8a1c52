"""The gateway as a Hugging Face mirror (issue 14 item 6), real node processes on 127.0.0.1 and
the real `huggingface_hub` client: two peers hold a model, a third node runs `--gateway` and
holds nothing; the client downloads through it (every block fetched from the peers on demand,
hash-checked) and gets the exact bytes in the HF cache layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from tests.hf_helpers import OLD_HF, make_model, run_client
from tests.helpers import MANY_NODES, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

pytestmark = MANY_NODES

__all__ = ["swarm"]

BIG = 40 * 1024 * 1024


def gateway_url(node: NodeProc) -> str:
    url = node.json("id").get("gateway")
    assert isinstance(url, str) and url.startswith("http://127.0.0.1:")
    return url


def mirror(swarm: Swarm, tmp: Path) -> tuple[NodeProc, NodeProc, NodeProc, Path, dict[str, bytes]]:
    """Holders a (`shoal hf import` of the folder as model org/tiny and dataset org/tiny-data) and b
    (`shoal put` of the same folder); gateway c, bootstrapped to both, trusting the swarm's names,
    holding no block."""
    folder = tmp / "tiny"
    files = make_model(folder)
    (folder / "weights").mkdir()
    files["weights/big.bin"] = write_random(folder / "weights" / "big.bin", BIG, seed=21)
    files["weights/big2.bin"] = write_random(folder / "weights" / "big2.bin", BIG, seed=22)
    a = swarm.add("a")
    b = swarm.add("b", bootstrap=[a.addr])
    model = hf_import(a, folder, "org/tiny")
    data = hf_import(a, folder, "org/tiny-data", "--type", "dataset")
    assert b.put(folder) == model["cid"] == data["cid"]
    c = swarm.add("c", bootstrap=[a.addr, b.addr], extra_args=["--gateway", "127.0.0.1:0"], start=False)
    config = c.repo / "config.toml"
    config.write_text(config.read_text() + '\n[names]\ntrust = "swarm"\n')  # believe a's records
    c.start()
    swarm.wait_connected(c, 2)
    url = gateway_url(c)
    for route in ("/api/models/org/tiny/revision/main", "/api/datasets/org/tiny-data/revision/main"):
        wait_until(lambda: httpx.get(url + route, timeout=10).status_code == 200, 30, f"c to resolve {route}")
    assert c.block_count() == 0
    return a, b, c, folder, files


def hf_import(node: NodeProc, folder: Path, repo: str, *args: str) -> dict[str, Any]:
    r = node.shoal("hf", "import", str(folder), "--repo", repo, *args, "--json")
    assert r.code == 0, r.err
    doc: dict[str, Any] = json.loads(r.out)
    return doc


SNAPSHOT = """
import json, os
from huggingface_hub import snapshot_download, hf_hub_download
cache = os.environ["HF_HUB_CACHE"]
p = snapshot_download("org/tiny", cache_dir=cache, allow_patterns=["*.json", "*.md", "*.safetensors", "tokenizer/*"])
one = hf_hub_download("org/tiny-data", "tokenizer/vocab.txt", repo_type="dataset", cache_dir=cache)
print(json.dumps({"snapshot": p, "one": one}))
"""

ERRORS = """
import json, os
from huggingface_hub import hf_hub_download
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError
out = {}
for name, kw in [("entry", dict(repo_id="org/tiny", filename="missing.safetensors")),
                 ("repo", dict(repo_id="org/nobody", filename="config.json")),
                 ("dataset-entry", dict(repo_id="org/tiny-data", filename="nope.csv", repo_type="dataset"))]:
    try:
        hf_hub_download(cache_dir=os.environ["HF_HUB_CACHE"], **kw)
        out[name] = "downloaded"
    except EntryNotFoundError:
        out[name] = "EntryNotFoundError"
    except RepositoryNotFoundError:
        out[name] = "RepositoryNotFoundError"
print(json.dumps(out))
"""

BIG_DOWNLOAD = """
import json, os, sys
from huggingface_hub import hf_hub_download
p = hf_hub_download("org/tiny", sys.argv[1], cache_dir=os.environ["HF_HUB_CACHE"])
print(json.dumps({"path": p}))
"""
# 0.x clients resume only when asked (later ones always do)
OLD_BIG_DOWNLOAD = BIG_DOWNLOAD.replace('cache_dir=os.environ["HF_HUB_CACHE"])',
                                        'cache_dir=os.environ["HF_HUB_CACHE"], resume_download=True)')


def test_hf_client_through_a_gateway_that_holds_nothing(swarm: Swarm, tmp_path: Path) -> None:
    a, b, c, folder, files = mirror(swarm, tmp_path)
    url = gateway_url(c)
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    out = run_client(SNAPSHOT, url, cache)
    snap = Path(out["snapshot"])
    assert snap.parent.name == "snapshots" and snap.parent.parent.name == "models--org--tiny"
    assert len(snap.name) == 40 and (snap.parent.parent / "refs" / "main").read_text() == snap.name
    got = sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file())
    assert got == sorted(r for r in files if not r.startswith("weights/"))
    for rel in got:
        assert (snap / rel).read_bytes() == files[rel], rel
    assert Path(out["one"]).read_bytes() == files["tokenizer/vocab.txt"]
    assert "datasets--org--tiny-data" in out["one"]
    assert c.block_count() > 0  # what it served it fetched from a and b

    # the old 0.x client lists the files from `siblings` of the revision info
    old_cache = tmp_path / "hf-old"
    old_cache.mkdir()
    out = run_client(SNAPSHOT, url, old_cache, old=True)
    old_snap = Path(out["snapshot"])
    assert old_snap.name == snap.name
    for rel in got:
        assert (old_snap / rel).read_bytes() == files[rel], rel

    errors = run_client(ERRORS, url, cache)
    assert errors == {"entry": "EntryNotFoundError", "repo": "RepositoryNotFoundError",
                      "dataset-entry": "EntryNotFoundError"}, errors


def kill_mid_file(code: str, name: str, env: dict[str, str], cwd: Path, blobs: Path) -> int:
    """Start a client downloading a big file; as soon as its `.incomplete` file has bytes, freeze
    the client (SIGSTOP: it writes nothing more), note the size, and kill it. Returns the bytes
    it had written (-1 if the download finished before it could be frozen)."""
    log = (cwd / "client.log").open("wb")
    client = subprocess.Popen([sys.executable, "-c", code, name], env=env, cwd=str(cwd),
                              stdout=log, stderr=subprocess.STDOUT)
    partial = 0
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and client.poll() is None:
            incomplete = list(blobs.glob("*.incomplete")) if blobs.exists() else []
            if incomplete and _size(incomplete[0]) > 0:
                os.kill(client.pid, signal.SIGSTOP)
                partial = _size(incomplete[0])
                break
            time.sleep(0.002)
    finally:
        client.kill()
        client.wait(timeout=30)
        log.close()
    print((cwd / "client.log").read_text(errors="replace")[-3000:])
    return partial


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed: that download is complete
        return -1


def client_env(url: str, cache: Path, old: bool) -> dict[str, str]:
    env = dict(os.environ, HF_ENDPOINT=url, HF_HUB_CACHE=str(cache), HF_HUB_DISABLE_XET="1",
               HF_HUB_DISABLE_TELEMETRY="1", HF_HOME=str(cache / "home"))
    if old:
        env["PYTHONPATH"] = str(OLD_HF)
    return env


def test_hf_download_resumes_after_the_client_is_killed(swarm: Swarm, tmp_path: Path) -> None:
    a, b, c, folder, files = mirror(swarm, tmp_path)
    url = gateway_url(c)
    # The 0.x client keeps `blobs/<etag>.incomplete` and resumes it with `Range: bytes=N-`.
    cache = tmp_path / "hf-old"
    cache.mkdir()
    blobs = cache / "models--org--tiny" / "blobs"
    partial = kill_mid_file(OLD_BIG_DOWNLOAD, "weights/big.bin", client_env(url, cache, old=True), cache, blobs)
    assert 0 < partial < BIG, partial
    (left,) = list(blobs.glob("*.incomplete"))
    inode = left.stat().st_ino
    out = run_client(OLD_BIG_DOWNLOAD, url, cache, old=True, args=["weights/big.bin"])
    final = Path(out["path"])
    # the same file, continued (a 200 instead of the 206 would have appended the whole file again)
    assert final.read_bytes() == files["weights/big.bin"] and final.resolve().stat().st_ino == inode
    assert not list(blobs.glob("*.incomplete"))
    # The current client writes a process-unique temporary file (huggingface_hub PR 4228): a
    # killed download is started over, and must still end byte-identical.
    cache = tmp_path / "hf-new"
    cache.mkdir()
    blobs = cache / "models--org--tiny" / "blobs"
    partial = kill_mid_file(BIG_DOWNLOAD, "weights/big2.bin", client_env(url, cache, old=False), cache, blobs)
    assert 0 < partial < BIG, partial
    out = run_client(BIG_DOWNLOAD, url, cache, args=["weights/big2.bin"])
    assert Path(out["path"]).read_bytes() == files["weights/big2.bin"]
