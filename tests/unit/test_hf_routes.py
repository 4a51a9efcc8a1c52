"""The Hugging Face Hub routes (issue 14 item 6): sans-IO rules, then the real
`huggingface_hub` client (pinned in the test extra, and an old 0.20 client) against the
gateway's ASGI app served in-process over a local store (no peers: the peer-fetching
path is tests/integration/test_hf_mirror.py)."""

from __future__ import annotations

import dataclasses
import json
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from shoal.store.dag import exporter
from shoal.store.dag.importer import import_path
from shoal.store.errors import StoreError
from shoal.store.persist.repo import Repo

from shoal.p2p.gateway import app as app_module
from shoal.p2p.gateway.app import GatewayApp, GatewayOptions
from shoal.p2p.gateway.hf_routes import (
    GatewayRequestError,
    HfRequest,
    etag_of,
    is_lfs,
    parse_hf_request,
    tree_page,
)
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.secure.identity import Identity
from tests.hf_helpers import FileRow, Record, Resolver, make_model, make_record, run_client


# ------------------------------------------------------------------ sans-IO


def test_routes_parse_as_the_client_sends_them() -> None:
    r = parse_hf_request("GET", "/api/models/org/name/revision/main", b"blobs=True")
    assert r == HfRequest("info", "model", "org/name", "main", blobs=True)
    r = parse_hf_request("GET", "/api/datasets/solo/revision/refs%2Fpr%2F1", b"")
    assert r is not None and (r.kind, r.repo, r.revision) == ("dataset", "solo", "refs/pr/1")
    r = parse_hf_request("GET", "/api/models/org/name", b"")
    assert r is not None and (r.action, r.revision) == ("info", "main")
    r = parse_hf_request("GET", "/api/models/org/name/tree/main/sub%2Fdir", b"recursive=True&expand=False&cursor=5")
    assert r == HfRequest("tree", "model", "org/name", "main", "sub/dir", recursive=True, cursor=5)
    r = parse_hf_request("HEAD", "/org/name/resolve/abc/sub/model.safetensors", b"")
    assert r == HfRequest("resolve", "model", "org/name", "abc", "sub/model.safetensors", head=True)
    r = parse_hf_request("GET", "/datasets/org/name/resolve/main/data/train%20a.parquet", b"")
    assert r is not None and (r.kind, r.path) == ("dataset", "data/train a.parquet")
    r = parse_hf_request("GET", "/gpt2/resolve/main/config.json", b"")
    assert r is not None and r.repo == "gpt2"
    for not_hf in ("/", "/favicon.ico", "/api/spaces/a/b/revision/main", "/org/name/blob/main/x"):
        assert parse_hf_request("GET", not_hf, b"") is None, not_hf


@pytest.mark.parametrize("method,path,status", [
    ("POST", "/api/models/org/name/revision/main", 405),
    ("GET", "/org/name/resolve/main/a/../../etc/passwd", 400),
    ("GET", "/org/name/resolve/main/a//b", 400),
    ("GET", "/org/name/resolve/ma%00in/x", 400),
    ("GET", "/org/name/resolve/" + "r" * 300 + "/x", 400),
    ("GET", "/org/name/resolve/main/" + "x" * 5000, 414),
])
def test_malformed_hub_routes_are_refused(method: str, path: str, status: int) -> None:
    with pytest.raises(GatewayRequestError) as info:
        parse_hf_request(method, path, b"")
    assert info.value.status == status


def _row(path: str, size: int) -> FileRow:
    return FileRow(path, size, "a" * 64, "b" * 40, "bafy" + path)


def test_lfs_rule_matches_the_hubs_default_gitattributes() -> None:
    assert is_lfs(_row("model.safetensors", 10)) and is_lfs(_row("sub/pytorch_model.bin", 10))
    assert is_lfs(_row("data.tar.gz", 10)) and is_lfs(_row("big.json", 10 * 1024 * 1024 + 1))
    assert not is_lfs(_row("config.json", 10 * 1024 * 1024))
    assert etag_of(_row("config.json", 3)) == "b" * 40 and etag_of(_row("m.safetensors", 3)) == "a" * 64


def test_tree_lists_folders_and_pages() -> None:
    rec = Record("o/n", "model", "main", "bafyroot", "c" * 40,
                 tuple(_row(p, 5) for p in ("a.txt", "d/x.bin", "d/e/y.txt", "z.json")))
    req = HfRequest("tree", "model", "o/n", "main")
    top = json.loads(tree_page(req, rec).body)
    assert [(e["type"], e["path"]) for e in top] == [("directory", "d"), ("file", "a.txt"), ("file", "z.json")]
    deep = json.loads(tree_page(HfRequest("tree", "model", "o/n", "main", recursive=True), rec).body)
    assert [e["path"] for e in deep] == ["d", "d/e", "a.txt", "d/e/y.txt", "d/x.bin", "z.json"]
    assert [e for e in deep if e["path"] == "d/x.bin"][0]["lfs"] == {"oid": "a" * 64, "size": 5, "pointerSize": 134}
    sub = json.loads(tree_page(HfRequest("tree", "model", "o/n", "main", "d"), rec).body)
    assert [e["path"] for e in sub] == ["d/e", "d/x.bin"]
    page = tree_page(HfRequest("tree", "model", "o/n", "main", recursive=True, cursor=2), rec, page_size=3)
    assert [e["path"] for e in json.loads(page.body)] == ["a.txt", "d/e/y.txt", "d/x.bin"] and page.next_cursor == 5
    with pytest.raises(GatewayRequestError) as info:
        tree_page(HfRequest("tree", "model", "o/n", "main", "nope"), rec)
    assert info.value.status == 404


# ------------------------------------------------------------------ the real clients, in-process server


@asynccontextmanager
async def serve_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                    options: GatewayOptions) -> AsyncIterator[tuple[str, Path, dict[str, bytes], Repo]]:
    """A gateway app over a local store holding a model and a dataset, served by hypercorn on 127.0.0.1."""
    folder = tmp_path / "model"
    files = make_model(folder)
    repo = Repo.init(tmp_path / "repo")
    store = repo.blockstore
    root = import_path(folder, store).cid
    cids = {}
    for rel in files:
        target = root
        for part in rel.split("/"):
            target = next(e.cid for e in exporter.iter_dir(store, target, resolve=False) if e.name == part)
        cids[rel] = str(target)
    records = [make_record("org/tiny", "model", folder, str(root), cids),
               make_record("org/tiny-data", "dataset", folder, str(root), cids)]
    # A record whose file list disagrees with its directory: config.json named by README.md's CID,
    # the safetensors file with a size one byte short.
    honest = make_record("org/liar", "model", folder, str(root), cids)
    lies = tuple(dataclasses.replace(f, cid=cids["README.md"]) if f.path == "config.json" else
                 dataclasses.replace(f, size=f.size - 1) if f.path == "model.safetensors" else f
                 for f in honest.files)
    records.append(dataclasses.replace(honest, files=lies))
    monkeypatch.setattr(app_module, "resolver_of", lambda node: Resolver(records))
    node = Node(repo, Identity.generate(), NodeOptions())  # not started: everything is local
    app: Any = GatewayApp(node, options)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    stop = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(lambda task_status: serve(app, config, shutdown_trigger=stop.wait,
                                                                  task_status=task_status))
            try:
                yield binds[0], tmp_path, files, repo
            finally:
                stop.set()
    finally:
        repo.close()


@pytest.fixture
async def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[str, Path, dict[str, bytes]]]:
    async with serve_hub(tmp_path, monkeypatch, GatewayOptions(hf_page_size=2)) as (url, tmp, files, _repo):
        yield url, tmp, files


async def test_cache_pin_pins_a_file_served_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with serve_hub(tmp_path, monkeypatch, GatewayOptions(cache_pin=True)) as (url, _, files, repo):
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            r = await c.get("/org/tiny/resolve/main/model.safetensors", headers={"Range": "bytes=0-9"})
            assert r.status_code == 206
            assert not repo.pins()  # a range is not the whole file: nothing pinned
            r = await c.get("/org/tiny/resolve/main/model.safetensors")
            assert r.status_code == 200 and r.content == files["model.safetensors"]
            with trio.fail_after(10):  # pinned once the fetch behind the response has ended
                while not repo.pins():
                    await trio.sleep(0.02)
            assert [str(p.cid) for p in repo.pins()] == [r.headers["x-shoal-cid"]]


SNAPSHOT = """
import json, os
from huggingface_hub import snapshot_download, hf_hub_download, __version__
out = {"version": __version__}
p = snapshot_download("org/tiny", cache_dir=os.environ["HF_HUB_CACHE"])
out["snapshot"] = p
out["files"] = sorted(os.path.relpath(os.path.join(d, f), p) for d, _, fs in os.walk(p) for f in fs)
out["one"] = hf_hub_download("org/tiny-data", "tokenizer/vocab.txt", repo_type="dataset",
                             cache_dir=os.environ["HF_HUB_CACHE"] + "-ds")
print(json.dumps(out))
"""


async def test_real_clients_download_a_snapshot(hub: tuple[str, Path, dict[str, bytes]]) -> None:
    url, tmp, files = hub
    for old in (False, True):
        cache = tmp / ("old" if old else "new")
        cache.mkdir()
        out = await trio.to_thread.run_sync(lambda: run_client(SNAPSHOT, url, cache, old=old))
        assert out["version"].startswith("0.20." if old else "1."), out
        snap = Path(out["snapshot"])
        commit = snap.name
        assert snap.parent.name == "snapshots" and snap.parent.parent.name == "models--org--tiny"
        assert out["files"] == sorted(files)
        for rel, data in files.items():
            assert (snap / rel).read_bytes() == data, rel
        # blobs named as huggingface.co would name them: sha256 for LFS files, git sha1 otherwise
        blob = (snap / "model.safetensors").resolve()
        import hashlib
        assert blob.name == hashlib.sha256(files["model.safetensors"]).hexdigest()
        cfg = files["config.json"]
        assert (snap / "config.json").resolve().name == hashlib.sha1(b"blob %d\0" % len(cfg) + cfg).hexdigest()
        assert (snap.parent.parent / "refs" / "main").read_text() == commit
        assert Path(out["one"]).read_bytes() == files["tokenizer/vocab.txt"]
        assert "datasets--org--tiny-data" in out["one"]


ERRORS = """
import json, os
from huggingface_hub import hf_hub_download
from huggingface_hub.utils import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
out = {}
for name, kw in [("entry", dict(repo_id="org/tiny", filename="nope.bin")),
                 ("repo", dict(repo_id="org/absent", filename="config.json")),
                 ("revision", dict(repo_id="org/tiny", filename="config.json", revision="v9")),
                 ("dataset-as-model", dict(repo_id="org/tiny-data", filename="config.json"))]:
    try:
        hf_hub_download(cache_dir=os.environ["HF_HUB_CACHE"], **kw)
        out[name] = "no error"
    except (EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


async def test_hub_errors_reach_the_client_as_its_own_exceptions(hub: tuple[str, Path, dict[str, bytes]]) -> None:
    url, tmp, _ = hub
    out = await trio.to_thread.run_sync(lambda: run_client(ERRORS, url, tmp))
    assert out == {"entry": "RemoteEntryNotFoundError", "repo": "RepositoryNotFoundError",
                   "revision": "RevisionNotFoundError", "dataset-as-model": "RepositoryNotFoundError"}, out


async def test_resolve_headers_ranges_and_tree_pages(hub: tuple[str, Path, dict[str, bytes]]) -> None:
    url, _, files = hub
    big = files["model.safetensors"]

    def check() -> None:
        with httpx.Client(base_url=url, timeout=30) as c:
            h = c.head("/org/tiny/resolve/main/model.safetensors")
            assert h.status_code == 200, h.text
            commit = h.headers["x-repo-commit"]
            assert len(commit) == 40 and h.headers["content-length"] == str(len(big))
            assert h.headers["x-linked-size"] == str(len(big)) and h.headers["etag"] == h.headers["x-linked-etag"]
            assert not [k for k in h.headers if k.lower().startswith("x-xet")] and "link" not in h.headers
            r = c.get(f"/org/tiny/resolve/{commit}/model.safetensors", headers={"Range": "bytes=1000000-1000099"})
            assert r.status_code == 206 and r.content == big[1000000:1000100]
            assert r.headers["content-range"] == f"bytes 1000000-1000099/{len(big)}"
            assert "immutable" in r.headers["cache-control"]
            r = c.get("/org/tiny/resolve/main/config.json", headers={"Range": f"bytes={len(big)}-"})
            assert r.status_code == 416, r.text
            r = c.get("/org/tiny/resolve/main/nope.txt")
            assert r.status_code == 404 and r.headers["x-error-code"] == "EntryNotFound"
            assert r.headers["x-repo-commit"] == commit
            # the tree, two entries a page, followed by its Link headers
            seen, nxt = [], "/api/models/org/tiny/tree/main?recursive=true"
            pages = 0
            while nxt:
                r = c.get(nxt)
                assert r.status_code == 200, r.text
                seen += [e["path"] for e in r.json()]
                nxt = r.links.get("next", {}).get("url")
                assert nxt is None or nxt.startswith(url)
                pages += 1
            assert pages == 3 and seen == ["tokenizer", "README.md", "config.json", "model.safetensors",
                                           "tokenizer/vocab.txt"]

    await trio.to_thread.run_sync(check)


LIST = """
import json
from huggingface_hub import HfApi
api = HfApi()
files = sorted(f.path for f in api.list_repo_tree("org/tiny", recursive=True) if hasattr(f, "lfs"))
info = api.model_info("org/tiny", files_metadata=True)
print(json.dumps({"tree": files, "siblings": sorted(s.rfilename for s in info.siblings),
                  "lfs": sorted(s.rfilename for s in info.siblings if s.lfs)}))
"""


async def test_api_listing_through_paginated_tree(hub: tuple[str, Path, dict[str, bytes]]) -> None:
    url, tmp, files = hub
    out = await trio.to_thread.run_sync(lambda: run_client(LIST, url, tmp))
    assert out["tree"] == sorted(files) and out["siblings"] == sorted(files)
    assert out["lfs"] == ["model.safetensors"]


async def test_a_record_that_disagrees_with_its_directory_serves_nothing(
        hub: tuple[str, Path, dict[str, bytes]]) -> None:
    url, _, _ = hub
    async with httpx.AsyncClient(base_url=url, timeout=30) as c:
        for path in ("config.json", "model.safetensors"):
            for method in ("HEAD", "GET"):
                r = await c.request(method, f"/org/liar/resolve/main/{path}")
                assert r.status_code == 502, (method, path, r.status_code, r.text)
        r = await c.get("/org/liar/resolve/main/README.md")  # the files it lists truly are fine
        assert r.status_code == 200 and r.content == b"# test model\n"


async def test_hub_requests_wait_for_a_slot_instead_of_failing(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """More Hub requests at once than `max_requests`: they wait for a slot (the HF client does
    not retry a 503); each still gets its exact bytes."""
    async with serve_hub(tmp_path, monkeypatch, GatewayOptions(max_requests=1)) as (url, _, files, _repo):
        statuses: list[int] = []

        async def one(c: httpx.AsyncClient, path: str) -> None:
            r = await c.get(f"/org/tiny/resolve/main/{path}")
            statuses.append(r.status_code)
            assert r.status_code != 200 or r.content == files[path]

        async with httpx.AsyncClient(base_url=url, timeout=30) as c, trio.open_nursery() as nursery:
            for path in list(files) * 3:
                nursery.start_soon(one, c, path)
        assert statuses == [200] * len(files) * 3, statuses


async def test_a_name_book_that_cannot_be_read_is_a_503(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        def resolve(self, kind: str, repo: str, revision: str) -> None:
            raise StoreError("database disk image is malformed")

        def repos(self) -> list[Record]:
            raise StoreError("database disk image is malformed")

    async with serve_hub(tmp_path, monkeypatch, GatewayOptions()) as (url, _, _files, _repo):
        monkeypatch.setattr(app_module, "resolver_of", lambda node: Broken())
        async with httpx.AsyncClient(base_url=url, timeout=30) as c:
            r = await c.get("/api/models/org/tiny/revision/main")
            assert r.status_code == 503 and "malformed" in r.text
