"""CARv1 interop with the real JS stack: @ipld/car, ipfs-unixfs-importer/exporter.

(a) CARs written by Shoal are read by @ipld/car's CarReader (same roots, same
    block CIDs and bytes) and unpacked by ipfs-unixfs-exporter.
(b) CARs written by the JS importer + CarWriter import into Shoal with the same
    root, and the bytes read back equal the source.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal.store.dag import exporter, importer
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.car import export_car, import_car, read_car

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent
NODE = shutil.which("node")
if NODE is None or not (HERE / "node_modules" / "@ipld" / "car").is_dir():
    pytest.skip("node or tests/interop/node_modules missing", allow_module_level=True)


def car_tool(*args: str) -> Any:
    proc = subprocess.run([NODE, "car_tool.mjs", *args], cwd=HERE, capture_output=True,  # type: ignore[list-item]
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A multi-block file (several 1 MiB chunks, ragged tail) and a small directory."""
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(3 * 1024 * 1024 + 12345))
    (src / "config.json").write_bytes(b'{"dim": 4096}\n')
    (src / "sub" / "empty").write_bytes(b"")
    (src / "sub" / "tokenizer.txt").write_bytes(b"hello " * 1000)
    return src


def expected_files(src: Path) -> dict[str, dict[str, Any]]:
    if src.is_file():
        data = src.read_bytes()
        return {"": {"type": "file", "size": len(data), "sha256": sha(data)}}
    out: dict[str, dict[str, Any]] = {"": {"type": "directory"}}
    for p in sorted(src.rglob("*")):
        rel = "/" + p.relative_to(src).as_posix()
        if p.is_dir():
            out[rel] = {"type": "directory"}
        else:
            data = p.read_bytes()
            out[rel] = {"type": "file", "size": len(data), "sha256": sha(data)}
    return out


# --- (a) Shoal writes, JS reads ---

@pytest.mark.parametrize("which", ["file", "dir"])
def test_shoal_car_read_by_js(tree: Path, tmp_path: Path, which: str) -> None:
    from shoal.store.chunking.profiles import DEFAULT_PROFILE

    src = tree / "weights.bin" if which == "file" else tree
    bs = MemoryBlockstore()
    result = importer.import_path(src, bs, DEFAULT_PROFILE)
    car_path = tmp_path / "shoal.car"
    with open(car_path, "wb") as out:
        written = export_car(bs, result.cid, out)
    assert written == car_path.stat().st_size

    js = car_tool("read", str(car_path))
    assert js["roots"] == [str(result.cid)]
    with open(car_path, "rb") as f:
        ours = [[str(c), sha(d), len(d), True] for c, d in read_car(f)]
    assert js["blocks"] == ours
    assert len({c for c, *_ in ours}) == len(ours), "each block once"
    assert ours[0][0] == str(result.cid), "depth-first pre-order starts at the root"
    assert len(ours) == len(list(bs.keys()))
    assert js["files"] == expected_files(src)


# --- (b) JS writes, Shoal reads ---

@pytest.mark.parametrize("which, profile", [("file", "2025"), ("file", "default"), ("dir", "2025")])
def test_js_car_imported_by_shoal(tree: Path, tmp_path: Path, which: str, profile: str) -> None:
    src = tree / "weights.bin" if which == "file" else tree
    car_path = tmp_path / "js.car"
    js = car_tool("write", str(src), str(car_path), profile)

    bs = MemoryBlockstore()
    with open(car_path, "rb") as f:
        result = import_car(f, bs, require_complete=True)
    assert [str(r) for r in result.roots] == [js["root"]]
    assert result.blocks == result.new_blocks == js["blocks"] == len(list(bs.keys()))

    # From a pipe (not seekable, so spooled): same result, nothing new the second time.
    with subprocess.Popen(["cat", str(car_path)], stdout=subprocess.PIPE) as cat:
        assert cat.stdout is not None and not cat.stdout.seekable()
        again = import_car(cat.stdout, bs)
    assert (again.roots, again.blocks, again.new_blocks) == (result.roots, js["blocks"], 0)

    if profile == "2025":
        from shoal.store.chunking.profiles import DEFAULT_PROFILE

        assert str(importer.import_path(src, MemoryBlockstore(), DEFAULT_PROFILE).cid) == js["root"]

    if which == "file":
        assert b"".join(exporter.read_file(bs, result.roots[0])) == src.read_bytes()

    # And back out: Shoal re-exports the JS DAG; JS reads it and unpacks the same files.
    out_path = tmp_path / "roundtrip.car"
    with open(out_path, "wb") as out:
        export_car(bs, result.roots[0], out)
    back = car_tool("read", str(out_path))
    assert back["roots"] == [js["root"]]
    assert len(back["blocks"]) == js["blocks"] and all(ok for *_, ok in back["blocks"])
    assert back["files"] == expected_files(src)
