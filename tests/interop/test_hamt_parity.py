"""HAMT-sharded directories: root CID parity with the real npm importer (17.1.1).

`hamt_tool.mjs` imports the same trees with `ipfs-unixfs-importer` and also
hashes byte strings with `@multiformats/murmur3`, so both the hash and the
whole shard layout (slots, link names, bitfields, Tsizes) are checked
against the packages themselves, for both profiles.
"""

from __future__ import annotations

import json
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.dag.exporter import list_dir
from shoal.store.dag.importer import import_path
from shoal.store.ipld.murmur3 import murmur3_x64_128
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025, Profile

pytestmark = pytest.mark.interop

HERE = Path(__file__).resolve().parent
PROFILES = {"unixfs-v1-2025": UNIXFS_V1_2025, "unixfs-v0-2015": KUBO_LEGACY}


def run_tool(doc: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run(["node", "hamt_tool.mjs"], cwd=HERE, input=json.dumps(doc).encode(),
                          capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def ours(case: dict[str, Any]) -> str:
    profile: Profile = PROFILES[case["profile"]]
    if "shardSplitThresholdBytes" in case:
        profile = profile.with_overrides(hamt_threshold_bytes=case["shardSplitThresholdBytes"])
    if "shardFanoutBits" in case:
        profile = profile.with_overrides(hamt_fanout=1 << case["shardFanoutBits"])
    return str(import_path(Path(case["path"]), MemoryBlockstore(), profile).cid)


def check(cases: list[dict[str, Any]]) -> None:
    expected = run_tool({"cases": cases})["roots"]
    got = [ours(c) for c in cases]
    assert got == expected, [(c, e, g) for c, e, g in zip(cases, expected, got) if e != g]


def test_murmur3_matches_npm_package() -> None:
    rng = random.Random(7)
    inputs = [rng.randbytes(n) for n in range(0, 70)] + [rng.randbytes(rng.randrange(1, 300)) for _ in range(100)]
    out = run_tool({"murmur": [b.hex() for b in inputs]})["murmur"]
    assert out == [murmur3_x64_128(b).hex() for b in inputs]


@pytest.fixture(scope="module")
def big_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5,000 entries with long names: over the default 256 KiB threshold in both profiles."""
    d = tmp_path_factory.mktemp("hamt") / "dataset"
    d.mkdir()
    for i in range(5000):
        (d / f"shard-{i:05d}-of-05000.tokenized.arrow.json").write_bytes(f"{i}\n".encode())
    return d


@pytest.mark.parametrize("profile", ["unixfs-v1-2025", "unixfs-v0-2015"])
def test_directory_above_default_threshold(big_dir: Path, profile: str) -> None:
    case = {"path": str(big_dir), "profile": profile}
    bs = MemoryBlockstore()
    result = import_path(big_dir, bs, PROFILES[profile])
    assert str(result.cid) == run_tool({"cases": [case]})["roots"][0]
    assert len(list_dir(bs, result.cid, resolve=False)) == 5000


def make_nested(root: Path) -> None:
    """Sharded root with file, empty-dir and non-empty-dir entries, a sharded
    subdirectory under a flat one, and non-ASCII names."""
    (root / "empty").mkdir(parents=True)
    (root / "flat" / "big").mkdir(parents=True)
    for i in range(60):
        (root / f"f{i:02d}-\u00e9\u00e8").write_bytes(bytes([i]) * (i * 37))
        (root / "flat" / "big" / f"row-{i}").write_bytes(b"r" * i)
    (root / "flat" / "readme").write_bytes(b"hello")
    (root / "z-sub").mkdir()
    (root / "z-sub" / "x").write_bytes(b"x" * 3000)


@pytest.mark.parametrize("profile", ["unixfs-v1-2025", "unixfs-v0-2015"])
def test_nested_and_small_thresholds(tmp_path: Path, profile: str) -> None:
    make_nested(tmp_path / "tree")
    path = str(tmp_path / "tree")
    check([{"path": path, "profile": profile, "shardSplitThresholdBytes": t} for t in (300, 1000, 2000)]
          + [{"path": path, "profile": profile, "shardSplitThresholdBytes": 500, "shardFanoutBits": b}
             for b in (3, 4, 5)])  # fanouts 8..32: IPFS accepts 8..1024
