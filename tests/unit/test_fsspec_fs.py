"""`shoal://` paths, gateway discovery and error mapping, without a node.

The filesystem's HTTP client is given an httpx MockTransport that plays the
gateway (including a broken one: truncated bodies, wrong Content-Range, a
malformed listing, a busy 503), so every error path is exercised without
sockets. tests/integration/test_fsspec.py reads through a real node.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Callable

import httpx
import pytest

from shoal.p2p.gateway.fsspec_fs import (GatewayError, GatewayNotFound, ShoalFileSystem, gateway_of_repo,
                                         normalize_gateway, split_path, url_path)
from tests.helpers import PROJECT_ROOT

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"  # raw "hello"
DIR = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
Handler = Callable[[httpx.Request], httpx.Response]


def make_fs(handler: Handler) -> tuple[ShoalFileSystem, list[httpx.Request]]:
    """A filesystem whose gateway is `handler`; the list records every request."""
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return handler(request)

    fs = ShoalFileSystem(gateway="http://gw.test", skip_instance_cache=True)
    fs._client = httpx.Client(base_url="http://gw.test", transport=httpx.MockTransport(record))
    fs._pid = os.getpid()
    return fs, seen


FILE_HEADERS = {"accept-ranges": "bytes", "etag": f'"{CID}"'}


def serve_bytes(body: bytes, honour_range: bool = True) -> Handler:
    """A path gateway for one file, answering Range as files.py does (or ignoring it)."""

    def handler(request: httpx.Request) -> httpx.Response:
        rng = request.headers.get("range")
        if request.method == "HEAD" or rng is None or not honour_range:
            content = b"" if request.method == "HEAD" else body
            return httpx.Response(200, headers={**FILE_HEADERS, "content-length": str(len(body))},
                                  content=content)
        first_text, last_text = rng.removeprefix("bytes=").split("-")
        first = int(first_text)
        if first >= len(body):
            return httpx.Response(416, text="range not satisfiable")
        last = min(int(last_text), len(body) - 1) if last_text else len(body) - 1
        return httpx.Response(206, content=body[first:last + 1], headers={
            **FILE_HEADERS, "content-range": f"bytes {first}-{last}/{len(body)}"})

    return handler


# -- paths --------------------------------------------------------------------

@pytest.mark.parametrize("given", [f"shoal://{CID}/a/b", f"shoal::{CID}/a/b", f"/{CID}/a/b/",
                                   f"{CID}/a/b", f"{CID}//a///b", f"shoal://{CID}/a/b/"])
def test_strip_protocol(given: str) -> None:
    assert ShoalFileSystem._strip_protocol(given) == f"{CID}/a/b"


def test_strip_protocol_list_and_root() -> None:
    assert ShoalFileSystem._strip_protocol([f"shoal://{CID}", CID + "/"]) == [CID, CID]
    assert ShoalFileSystem._strip_protocol("shoal://") == ""


def test_split_path_and_url() -> None:
    assert split_path(f"{CID}/a/b c") == (CID, ("a", "b c"))
    assert split_path(DIR) == (DIR, ())
    assert url_path(DIR, ("sub dir", "x#1?.bin", "100%")) == f"/ipfs/{DIR}/sub%20dir/x%231%3F.bin/100%25"


@pytest.mark.parametrize("bad, match", [("notacid/a", "not a CID"), ("", "needs a CID"),
                                        (f"{CID}/../x", "not allowed"), (f"{CID}/./x", "not allowed"),
                                        ("Qm" + "1" * 44, "not a CID")])
def test_bad_paths_are_clear_errors_before_any_request(bad: str, match: str) -> None:
    fs, seen = make_fs(serve_bytes(b"x"))
    with pytest.raises(ValueError, match=match):
        fs.info(f"shoal://{bad}")
    with pytest.raises(ValueError, match=match):
        fs.cat_file(bad)
    assert not fs.exists(f"shoal://{bad}")
    assert seen == []


def test_normalize_gateway() -> None:
    assert normalize_gateway("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert normalize_gateway(" http://[::1]:8080/ ") == "http://[::1]:8080"
    assert normalize_gateway("https://gw.lan") == "https://gw.lan"
    for bad in ("ftp://gw.lan", "http://"):
        with pytest.raises(ValueError, match="gateway must be"):
            normalize_gateway(bad)


# -- reads and the errors a gateway can answer ----------------------------------

def test_ranges_are_what_cat_file_asks_for() -> None:
    body = bytes(range(256)) * 40
    fs, seen = make_fs(serve_bytes(body))
    assert fs.cat_file(CID, 100, 300) == body[100:300]
    assert seen[-1].headers["range"] == "bytes=100-299"
    assert fs.cat_file(CID, 5000) == body[5000:]
    assert seen[-1].headers["range"] == "bytes=5000-"
    assert fs.cat_file(CID) == body and "range" not in seen[-1].headers
    assert fs.cat_file(CID, -10) == body[-10:]
    assert fs.cat_file(CID, 20, -20) == body[20:-20]
    assert fs.cat_file(CID, 50, 50) == b"" and fs.cat_file(CID, len(body) + 1) == b""
    with fs.open(f"shoal://{CID}", block_size=1000) as f:
        f.seek(1234)
        assert f.read(3000) == body[1234:4234]
    assert fs.info(CID) == {"name": CID, "size": len(body), "type": "file", "cid": CID}


def test_a_gateway_that_ignores_range_is_read_only_as_far_as_needed() -> None:
    body = os.urandom(100_000)
    fs, _ = make_fs(serve_bytes(body, honour_range=False))
    assert fs.cat_file(CID, 70_000, 70_100) == body[70_000:70_100]
    assert fs.cat_file(CID, 99_990, 200_000) == body[99_990:]


@pytest.mark.parametrize("status, error, text", [
    (404, FileNotFoundError, "no model.bin under"), (400, ValueError, "bad CID"),
    (502, GatewayError, "malformed block"), (500, GatewayError, "HTTP 500")])
def test_statuses_become_errors(status: int, error: type[Exception], text: str) -> None:
    fs, _ = make_fs(lambda r: httpx.Response(status, text="" if status == 500 else text))
    for call in (lambda: fs.info(f"{CID}/model.bin"), lambda: fs.cat_file(f"{CID}/model.bin", 0, 10),
                 lambda: fs.ls(CID)):
        with pytest.raises(error, match=text):
            call()


def test_file_not_found_names_the_path() -> None:
    fs, _ = make_fs(lambda r: httpx.Response(404, text="no a under it"))
    with pytest.raises(FileNotFoundError) as caught:
        fs.open(f"shoal://{CID}/a")
    assert caught.value.errno == errno.ENOENT and caught.value.filename == f"{CID}/a"


def test_busy_gateway_is_retried() -> None:
    answers = [httpx.Response(503, headers={"retry-after": "0"}, text="busy")] * 2
    inner = serve_bytes(b"hello")

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop() if answers else inner(request)

    fs, seen = make_fs(handler)
    assert fs.cat_file(CID, 1, 3) == b"el" and len(seen) == 3


def test_truncated_or_misplaced_range_is_an_error() -> None:
    fs, _ = make_fs(lambda r: httpx.Response(206, content=b"x" * 50, headers={
        **FILE_HEADERS, "content-range": "bytes 0-99/1000"}))
    with pytest.raises(GatewayError, match="50 of 100 bytes"):
        fs.cat_file(CID, 0, 100)
    fs, _ = make_fs(lambda r: httpx.Response(206, content=b"x" * 100, headers={
        **FILE_HEADERS, "content-range": "bytes 0-99/1000"}))
    with pytest.raises(GatewayError, match="asked for"):
        fs.cat_file(CID, 500, 600)


def test_listing_skips_hostile_names_and_refuses_malformed_ones() -> None:
    entries = [{"name": n, "cid": CID, "kind": "file", "size": 5} for n in ("ok.bin", "..", "a/b", "", ".")]
    listing = json.dumps({"cid": DIR, "entries": entries}).encode()
    fs, _ = make_fs(lambda r: httpx.Response(200, content=listing, headers={"content-type": "application/json"}))
    assert fs.ls(DIR, detail=False) == [f"{DIR}/ok.bin"]
    assert fs.ls(DIR) == [{"name": f"{DIR}/ok.bin", "size": 5, "type": "file", "cid": CID}]
    fs, _ = make_fs(lambda r: httpx.Response(200, content=b'{"entries": 7}'))
    with pytest.raises(GatewayError, match="malformed listing"):
        fs.ls(DIR)


def test_listing_of_unresolved_entries_costs_one_head_each_and_is_cached() -> None:
    listing = json.dumps({"cid": DIR, "entries": [
        {"name": "big.bin", "cid": DIR, "kind": "unknown", "size": None}]}).encode()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "HEAD":
            return httpx.Response(200, headers={**FILE_HEADERS, "content-length": "123456"})
        return httpx.Response(200, content=listing, headers={"content-type": "application/json"})

    fs, seen = make_fs(handler)
    expected = [{"name": f"{DIR}/sub/big.bin", "size": 123456, "type": "file", "cid": CID}]
    assert fs.ls(f"shoal://{DIR}/sub") == expected
    assert [r.method for r in seen] == ["GET", "HEAD"] and seen[1].url.path == f"/ipfs/{DIR}"
    assert fs.ls(f"{DIR}/sub") == expected and fs.info(f"{DIR}/sub/big.bin") == expected[0]
    assert len(seen) == 2


def test_ls_of_a_file_is_the_file_and_asks_one_byte() -> None:
    body = os.urandom(70_000)
    fs, seen = make_fs(serve_bytes(body))
    assert fs.ls(f"{CID}/") == [{"name": CID, "size": len(body), "type": "file", "cid": CID}]
    assert fs.ls(CID, detail=False) == [CID]
    assert [(r.method, r.headers.get("range")) for r in seen] == [("GET", "bytes=0-0")]
    fs, seen = make_fs(serve_bytes(b""))  # an empty file answers the one-byte Range with 416
    assert fs.ls(CID) == [{"name": CID, "size": 0, "type": "file", "cid": CID}]


def test_a_range_answer_longer_than_asked_is_an_error() -> None:
    fs, _ = make_fs(lambda r: httpx.Response(206, content=b"x" * 200, headers={
        **FILE_HEADERS, "content-range": "bytes 0-99/1000"}))
    with pytest.raises(GatewayError, match="more than the 100 bytes"):
        fs.cat_file(CID, 0, 100)
    fs, _ = make_fs(lambda r: httpx.Response(206, content=b"x" * 200, headers={
        **FILE_HEADERS, "content-range": "bytes 0-199/1000"}))
    with pytest.raises(GatewayError, match="asked for"):
        fs.cat_file(CID, 0, 100)


def test_writes_are_refused() -> None:
    fs, seen = make_fs(serve_bytes(b"x"))
    for mode in ("wb", "ab", "xb", "w"):
        with pytest.raises(PermissionError, match="read-only") as caught:
            fs.open(f"{CID}/new", mode)
        assert caught.value.errno == errno.EROFS
    for call in (lambda: fs.mkdir(f"{CID}/d"), lambda: fs.rm(CID), lambda: fs.pipe_file(f"{CID}/x", b"1"),
                 lambda: fs.put_file("/etc/hostname", f"{CID}/h"), lambda: fs.mv(CID, CID + "/x"),
                 lambda: fs.touch(f"{CID}/t")):
        with pytest.raises(PermissionError, match="read-only"):
            call()
    assert seen == []


# -- finding the gateway --------------------------------------------------------

def test_no_node_on_the_repo_says_what_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_GATEWAY", raising=False)
    with pytest.raises(GatewayNotFound, match="--gateway") as caught:
        gateway_of_repo(tmp_path)
    assert "no node is running" in str(caught.value) and isinstance(caught.value, ConnectionError)
    # an api file naming a node that is gone (nothing listens on port 9 of loopback)
    (tmp_path / "api").write_text(json.dumps({"url": "http://127.0.0.1:9", "token": "t"}))
    with pytest.raises(GatewayNotFound, match="does not answer"):
        gateway_of_repo(tmp_path)
    monkeypatch.setenv("SHOAL_REPO", str(tmp_path))
    fs = ShoalFileSystem(skip_instance_cache=True)
    with pytest.raises(GatewayNotFound, match="SHOAL_GATEWAY"):
        fs.info(CID)
    monkeypatch.setenv("SHOAL_GATEWAY", "127.0.0.1:4321")
    assert ShoalFileSystem(skip_instance_cache=True).gateway == "http://127.0.0.1:4321"


def test_exists_does_not_hide_an_unreachable_gateway() -> None:
    fs, _ = make_fs(lambda r: httpx.Response(404, text="no such path"))
    assert not fs.exists(f"{CID}/a") and not fs.exists("shoal://not-a-cid")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    fs, _ = make_fs(refuse)
    with pytest.raises(GatewayError, match="refused the connection"):
        fs.exists(f"{CID}/a")


def test_pickles_by_its_options() -> None:
    """fsspec ships filesystems to worker processes by pickling: the options
    travel, the connection pool does not."""
    fs = ShoalFileSystem(gateway="http://127.0.0.1:8080", timeout=12, skip_instance_cache=True)
    fs._http()
    again = pickle.loads(pickle.dumps(fs))
    assert again.gateway == "http://127.0.0.1:8080" and again._timeout == 12.0 and again._client is None


# -- packaging ------------------------------------------------------------------

def test_entry_point_registers_the_protocol_without_importing_shoal() -> None:
    """After `pip install -e .`, fsspec finds `shoal` by its entry point alone;
    and Shoal itself never imports fsspec (it is an optional extra)."""
    code = (
        "import sys, fsspec\n"
        "assert not [m for m in sys.modules if m.startswith('shoal')], 'shoal imported early'\n"
        "cls = fsspec.get_filesystem_class('shoal')\n"
        "print(cls.__module__ + '.' + cls.__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd="/", check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "shoal.p2p.gateway.fsspec_fs.ShoalFileSystem"
    code = ("import sys, shoal.cli.main, shoal.p2p.gateway.app, shoal.p2p.net.service\n"
            "assert 'fsspec' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=PROJECT_ROOT, check=False)
    assert out.returncode == 0, out.stderr
