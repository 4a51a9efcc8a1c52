"""Root CID parity with the real `ipfs-unixfs-importer` (17.1.1) from npm.

Each test writes its inputs to a temp dir, asks `cid_parity.mjs` (one node
process per test) for the importer's root CIDs and compares them with
Shoal's. Cases cover every size class around chunk boundaries for both
profiles, 3- and 4-level trees (small chunks, few links), the other leaf
and CID-version combinations, and nested directories with empty entries.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from shoal.store.ipld import dagpb, unixfs
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import parse_cid
from shoal.store.dag.disk_export import export_to_path
from shoal.store.dag.exporter import list_dir, read_file
from shoal.store.dag.dag_writer import DagWriter
from shoal.store.dag.importer import import_path
from shoal.store.dag.tree_import import estimated_directory_size
from shoal.store.chunking.profiles import KUBO_LEGACY, UNIXFS_V1_2025, Profile

pytestmark = pytest.mark.interop

INTEROP_DIR = Path(__file__).resolve().parent
MIB = 1024 * 1024
KIB256 = 256 * 1024


def payload(n: int, seed: str) -> bytes:
    """Deterministic incompressible bytes (sha256 in counter mode)."""
    out = bytearray()
    block = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}:{block}".encode()).digest()
        block += 1
    return bytes(out[:n])


def js_cids(cases: list[dict[str, Any]]) -> list[str]:
    proc = subprocess.run(["node", "cid_parity.mjs"], cwd=INTEROP_DIR, input=json.dumps(cases).encode(),
                          capture_output=True, timeout=240)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    return json.loads(proc.stdout)


def shoal_profile(case: dict[str, Any]) -> Profile:
    profile = UNIXFS_V1_2025 if case["profile"] == "unixfs-v1-2025" else KUBO_LEGACY
    overrides: dict[str, int | bool] = {}
    if "chunkSize" in case:
        overrides["chunk_size"] = case["chunkSize"]
    if "maxChildrenPerNode" in case:
        overrides["max_links"] = case["maxChildrenPerNode"]
    if "rawLeaves" in case:
        overrides["raw_leaves"] = case["rawLeaves"]
    if "cidVersion" in case:
        overrides["cid_version"] = case["cidVersion"]
    return profile.with_overrides(**overrides) if overrides else profile


def check(cases: list[dict[str, Any]]) -> None:
    expected = js_cids(cases)
    got = [str(import_path(Path(c["path"]), MemoryBlockstore(), shoal_profile(c)).cid) for c in cases]
    mismatches = [(Path(c["path"]).name, c, e, g) for c, e, g in zip(cases, expected, got) if e != g]
    assert not mismatches, mismatches


def write(dirpath: Path, name: str, n: int) -> str:
    p = dirpath / name
    p.write_bytes(payload(n, name))
    return str(p)


@pytest.mark.parametrize("profile,chunk", [("unixfs-v1-2025", MIB), ("unixfs-v0-2015", KIB256)])
def test_size_classes(tmp_path: Path, profile: str, chunk: int) -> None:
    sizes = [0, 1, chunk - 1, chunk, chunk + 1, 2 * chunk, 3 * chunk + 1]
    check([{"path": write(tmp_path, f"f{n}", n), "profile": profile} for n in sizes])


@pytest.mark.parametrize("profile", ["unixfs-v1-2025", "unixfs-v0-2015"])
def test_multi_level_trees(tmp_path: Path, profile: str) -> None:
    # chunk 1 KiB, 4 links: 16 leaves fill 2 levels, 17 need 3, 65 need 4.
    shapes = [(1024, 4, n) for n in (1024 * 4, 1024 * 16, 1024 * 16 + 1, 1024 * 17 - 1, 1024 * 64 + 1)]
    shapes += [(1000, 174, 1000 * 175), (4096, 2, 4096 * 9 + 5)]
    check([{"path": write(tmp_path, f"t{c}-{k}-{n}", n), "profile": profile,
            "chunkSize": c, "maxChildrenPerNode": k} for c, k, n in shapes])


def test_leaf_and_version_combinations(tmp_path: Path) -> None:
    f = write(tmp_path, "combo", 10_000)
    e = write(tmp_path, "empty", 0)
    cases = []
    for raw in (True, False):
        for version in (0, 1):
            # raw + CIDv0: leaves are CIDv1 raw (v0 is dag-pb only), parents CIDv0.
            for path in (f, e):
                cases.append({"path": path, "profile": "unixfs-v1-2025", "rawLeaves": raw,
                              "cidVersion": version, "chunkSize": 1024, "maxChildrenPerNode": 3})
    check(cases)


def make_tree(root: Path) -> None:
    (root / "models" / "empty-dir").mkdir(parents=True)
    (root / "models" / "weights.bin").write_bytes(payload(3 * KIB256 + 17, "w"))
    (root / "models" / "config.json").write_bytes(b'{"layers": 2}\n')
    (root / "models" / "deep" / "er").mkdir(parents=True)
    (root / "models" / "deep" / "er" / "x").write_bytes(b"x")
    (root / "empty.txt").write_bytes(b"")
    (root / "README").write_bytes(b"readme")
    (root / "caf\u00e9-\u00fc").write_bytes(b"utf-8 name")
    (root / "Zeta").write_bytes(b"Z")
    (root / "a b").mkdir()


@pytest.mark.parametrize("profile", ["unixfs-v1-2025", "unixfs-v0-2015"])
def test_nested_directory(tmp_path: Path, profile: str) -> None:
    make_tree(tmp_path / "tree")
    (tmp_path / "lonely").mkdir()
    check([
        {"path": str(tmp_path / "tree"), "profile": profile},
        {"path": str(tmp_path / "tree"), "profile": profile, "chunkSize": 1000, "maxChildrenPerNode": 3},
        {"path": str(tmp_path / "lonely"), "profile": profile},
    ])


@pytest.mark.parametrize("late_dir", [True, False])
@pytest.mark.parametrize("profile", ["unixfs-v1-2025", "unixfs-v0-2015"])
def test_shard_threshold_decision(tmp_path: Path, profile: str, late_dir: bool) -> None:
    """Shoal's size estimate flips exactly where the JS importer starts to shard.

    The tree has files, an empty dir and non-empty dirs (which the JS running
    estimate counts as empty-dir links only while they are placeholders);
    the threshold is set at Shoal's estimate and one byte below it.
    """
    d = tmp_path / "d"
    (d / "a-sub").mkdir(parents=True)
    (d / "a-sub" / "y").write_bytes(b"y")
    if late_dir:
        (d / "full").mkdir()
        (d / "full" / "x").write_bytes(b"x" * 100)
    (d / "empty").mkdir()
    for i in range(6):
        (d / f"file-{i}").write_bytes(payload(10 * i, str(i)))
    base = shoal_profile({"profile": profile})
    estimate = _estimate(d, base)
    at, below = ({"path": str(d), "profile": profile, "shardSplitThresholdBytes": t}
                 for t in (estimate, estimate - 1))
    js_at, js_below = js_cids([at, below])
    assert js_at != js_below  # the JS importer shards one byte below the estimate
    ours = import_path(d, MemoryBlockstore(), base.with_overrides(hamt_threshold_bytes=estimate))
    assert str(ours.cid) == js_at
    sharded = import_path(d, MemoryBlockstore(), base.with_overrides(hamt_threshold_bytes=estimate - 1))
    assert str(sharded.cid) == js_below  # and shards it the same way (shoal.store.ipld.hamt)


def _estimate(d: Path, profile: Profile) -> int:
    """Shoal's estimate for the top directory, read off the directory builder."""
    import shoal.store.dag.tree_import as tree_import

    seen: list[int] = []
    original = tree_import.build_directory

    def spy(writer: DagWriter, entries: list) -> object:  # type: ignore[type-arg]
        seen.append(estimated_directory_size(entries, writer.profile))
        return original(writer, entries)

    tree_import.build_directory = spy  # type: ignore[assignment]
    try:
        import_path(d, MemoryBlockstore(), profile)
    finally:
        tree_import.build_directory = original  # type: ignore[assignment]
    return seen[-1]


def test_js_dags_read_back(tmp_path: Path) -> None:
    """Shoal's exporter reads DAGs the JS importer wrote, HAMT-sharded ones included."""
    d = tmp_path / "d"
    (d / "sub").mkdir(parents=True)
    (d / "sub" / "deep").write_bytes(payload(5000, "deep"))
    names = [f"entry-{i:02d}" for i in range(40)]
    for name in names:
        (d / name).write_bytes(payload(len(name) * 3, name))
    blocks = tmp_path / "blocks"
    blocks.mkdir()
    cases = [{"path": str(d), "profile": p, "shardSplitThresholdBytes": 200, "chunkSize": 1024,
              "maxChildrenPerNode": 3, "dumpBlocks": str(blocks)} for p in ("unixfs-v1-2025", "unixfs-v0-2015")]
    roots = js_cids(cases)
    bs = MemoryBlockstore()
    for f in blocks.iterdir():
        bs.put(parse_cid(f.name), f.read_bytes())
    for root in map(parse_cid, roots):
        root_data = dagpb.decode(bs.get(root)).data or b""
        assert unixfs.decode(root_data).type == unixfs.DataType.HAMT_SHARD
        listing = {e.name: e for e in list_dir(bs, root)}
        assert sorted(listing) == sorted(names + ["sub"])
        assert listing["sub"].kind == "dir"
        assert b"".join(read_file(bs, listing["entry-07"].cid)) == payload(24, "entry-07")
        out = tmp_path / f"out-{root}"
        export_to_path(bs, root, out)
        assert (out / "sub" / "deep").read_bytes() == payload(5000, "deep")
        assert b"".join(read_file(bs, (list_dir(bs, listing["sub"].cid)[0]).cid, 1000, 30)) == \
            payload(5000, "deep")[1000:1030]


def test_cli_default_put_keeps_parity(tmp_path: Path) -> None:
    """`shoal put` with no options (--chunker auto) gives the JS importer's CIDs for
    files that are not safetensors, alone and in a directory (issue 12, item 24)."""
    from tests.helpers import run_shoal

    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    make_tree(tmp_path / "tree")
    big = write(tmp_path, "big.bin", 3 * MIB + 5)
    cases = [{"path": big, "profile": "unixfs-v1-2025"},
             {"path": str(tmp_path / "tree"), "profile": "unixfs-v1-2025"}]
    expected = js_cids(cases)
    got = []
    for c in cases:
        r = run_shoal(repo, "put", c["path"], "--quiet")
        assert r.code == 0, r.err
        got.append(r.text.strip())
    assert got == expected
