"""DAGs built with `--chunker safetensors` and `--chunker cdc` read back exactly in the JS stack.

Shoal writes the DAG to a CAR (shoal.store.ipld.car.export_car); the real
`ipfs-unixfs-exporter` (via @ipld/car) reads the whole file and byte ranges
(one tensor, ranges across leaf boundaries) and must return the original
bytes. Different chunkers give different CIDs but must stay plain UnixFS.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.car import export_car
from shoal.store.chunking.cdc import FastCDCChunker
from shoal.store.chunking.chunker import Chunker
from shoal.store.dag.importer import import_path
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025, Profile
from shoal.store.chunking.safetensors import SafetensorsChunker, parse_header
from tests.helpers import random_bytes
from tests.helpers_safetensors import model_shapes, write_safetensors

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")


def js_read(car: Path, ranges: list[tuple[int, int]]) -> dict[str, Any]:
    proc = subprocess.run([NODE or "node", "range_tool.mjs", str(car), json.dumps(ranges)], cwd=HERE,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def roundtrip(tmp_path: Path, src: Path, chunker: Chunker, profile: Profile,
              ranges: list[tuple[int, int]]) -> None:
    data = src.read_bytes()
    bs = MemoryBlockstore()
    root = import_path(src, bs, profile, chunker).cid
    car = tmp_path / f"{src.name}.{chunker.name}.{profile.name}.car"
    with open(car, "wb") as out:
        export_car(bs, root, out)
    got = js_read(car, ranges)
    assert (got["size"], got["sha256"]) == (len(data), sha(data))
    assert got["ranges"] == [sha(data[o:o + n]) for o, n in ranges]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("st") / "model.safetensors"
    write_safetensors(path, model_shapes(layers=4, hidden=384), seed=2, metadata={"step": "100"})
    return path


def _tensor_ranges(path: Path) -> list[tuple[int, int]]:
    header = parse_header(path.read_bytes())
    picks = [header.tensors[0], header.tensors[len(header.tensors) // 2], header.tensors[-1]]
    return [(header.data_start + t.begin, t.nbytes) for t in picks] + [(0, header.data_start), (1000, 3_000_000)]


@pytest.mark.parametrize("profile", [UNIXFS_V1_2025, KUBO_LEGACY,
                                     UNIXFS_V1_2025.with_overrides(chunk_size=64 * 1024, max_links=7)],
                         ids=["2025", "legacy", "deep-tree"])
def test_safetensors_chunker_dag_reads_back_in_js(tmp_path: Path, model: Path, profile: Profile) -> None:
    chunker = SafetensorsChunker(tensor_chunk_size=profile.chunk_size)
    roundtrip(tmp_path, model, chunker, profile, _tensor_ranges(model))


@pytest.mark.parametrize("profile", [UNIXFS_V1_2025, KUBO_LEGACY,
                                     UNIXFS_V1_2025.with_overrides(max_links=5)],
                         ids=["2025", "legacy", "deep-tree"])
def test_cdc_chunker_dag_reads_back_in_js(tmp_path: Path, profile: Profile) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(random_bytes(6 * 1024 * 1024 + 777, seed=9))
    ranges = [(0, 1), (123_457, 2_000_000), (6 * 1024 * 1024, 777), (4_000_000, 10)]
    roundtrip(tmp_path, src, FastCDCChunker(), profile, ranges)
