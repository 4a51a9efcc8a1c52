"""Repo: init/open/lock, config, add, pins, gc, verify, crash and disk-full behaviour."""

from __future__ import annotations

import os
import signal
import threading
import time
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path
from typing import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.store.dag import exporter
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.cid import CID, block_key, make_cid
from shoal.store.persist.config import DEFAULTS, dumps, load_config, merge, save_config
from shoal.store.errors import (
    BlockNotFound, GcRefused, NotPinned, RepoError, RepoLocked, RepoNotInitialized, StorageFull,
)
from shoal.store.persist.flatfs import shard_of
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.persist.maintenance import GcResult
from shoal.store.persist.repo import Repo, resolve_repo_path

# Small chunks and fan-out: multi-level DAGs from a few KiB of data.
SMALL = DEFAULT_PROFILE.with_overrides(chunk_size=1024, max_links=4)


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Repo]:
    with Repo.init(tmp_path / "repo") as r:
        yield r


def _block_path(repo: Repo, key: str) -> Path:
    return repo.path / "blocks" / shard_of(key) / f"{key}.data"


def _raw(repo: Repo, data: bytes) -> CID:
    cid = make_cid("raw", data)
    repo.blockstore.put(cid, data)
    return cid


# -- paths, init, open, lock ------------------------------------------------

def test_resolve_repo_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SHOAL_REPO", str(tmp_path / "env"))
    assert resolve_repo_path(str(tmp_path / "cli")) == tmp_path / "cli"
    assert resolve_repo_path(None) == tmp_path / "env"
    monkeypatch.delenv("SHOAL_REPO")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_repo_path(None) == tmp_path / "home" / ".shoal"
    assert resolve_repo_path("~/x") == tmp_path / "home" / "x"


def test_init_layout(tmp_path: Path) -> None:
    with Repo.init(tmp_path / "r") as r:
        assert (r.path / "config.toml").is_file()
        assert (r.path / "index.sqlite").is_file()
        assert (r.path / "blocks" / "SHARDING").is_file()
        assert not r.identity_path.exists()  # p2p/ creates it
        assert r.config["store"]["profile"] == "unixfs-v1-2025"
        # No setting nothing reads: `chunker = "fixed"` contradicted put's default (auto) and did nothing.
        assert "chunker" not in load_config(r.path / "config.toml")["store"]
    with pytest.raises(RepoError, match="already"):
        Repo.init(tmp_path / "r")


def test_open_missing(tmp_path: Path) -> None:
    with pytest.raises(RepoNotInitialized):
        Repo.open(tmp_path / "nothing")


def test_lock_in_process(repo: Repo) -> None:
    with pytest.raises(RepoLocked, match=f"pid {os.getpid()}"):
        Repo.open(repo.path)
    repo.close()
    with Repo.open(repo.path):
        pass


def test_lock_across_processes(repo: Repo) -> None:
    code = textwrap.dedent(f"""
        import sys
        from shoal.store.persist.repo import Repo
        from shoal.store.errors import RepoLocked
        try:
            Repo.open({str(repo.path)!r})
        except RepoLocked as e:
            print("LOCKED", e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.startswith("LOCKED"), out.stderr
    assert "\n" not in str(out.stdout).strip()  # one-line message


def test_unlocked_open_is_read_only(repo: Repo) -> None:
    cid = _raw(repo, b"x")
    repo.pin_add(cid)
    with Repo.open(repo.path, lock=False) as ro:
        assert [p.cid for p in ro.pins()] == [str(cid)]
        with pytest.raises(RepoError, match="read-only"):
            ro.gc()
        with pytest.raises(RepoError, match="read-only"):
            ro.pin_add(cid)


# -- config -------------------------------------------------------------------

def test_config_roundtrip(tmp_path: Path) -> None:
    cfg = merge(DEFAULTS, {
        "energy": {"pue": 1.2, "disk_w_per_tb": 0.5, "note": 'quote " back\\ \n tab\t \x01 é'},
        "peers": {"bootstrap list": ["/ip4/1.2.3.4/tcp/1"], "on": True, "n": -3},
        "deep": {"a": {"b": {"c": 1}}, "inline": [{"x": 1}]},
    })
    assert tomllib.loads(dumps(cfg)) == cfg
    save_config(tmp_path / "c.toml", cfg)
    assert load_config(tmp_path / "c.toml") == cfg


def test_config_defaults_and_errors(tmp_path: Path) -> None:
    (tmp_path / "c.toml").write_text('[energy]\npue = 1.5\n[store]\nprofile = "kubo-legacy"\n')
    cfg = load_config(tmp_path / "c.toml")
    assert cfg["energy"] == {"pue": 1.5}
    assert cfg["store"] == {"profile": "kubo-legacy"}
    assert cfg["node"] == DEFAULTS["node"]
    (tmp_path / "bad.toml").write_text("not = [toml")
    with pytest.raises(RepoError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


_scalars = st.one_of(
    st.text(st.characters(codec="utf-8")), st.integers(-(2**63), 2**63 - 1),
    st.booleans(), st.floats(allow_nan=False),
)
_tables = st.recursive(
    st.dictionaries(st.text(st.characters(codec="utf-8")), st.one_of(_scalars, st.lists(_scalars, max_size=3)), max_size=4),
    lambda inner: st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(_tables)
def test_config_writer_roundtrips(cfg: dict[str, object]) -> None:
    assert tomllib.loads(dumps(cfg)) == cfg


# -- pins and gc (raw blocks: no importer needed) -----------------------------

def test_pin_gc_raw(repo: Repo) -> None:
    kept, dropped = _raw(repo, b"keep me"), _raw(repo, b"drop me")
    repo.pin_add(kept)
    result = repo.gc()
    assert (result.removed_blocks, result.freed_bytes) == (1, len(b"drop me"))
    assert repo.blockstore.has(kept) and not repo.blockstore.has(dropped)
    repo.pin_rm(kept)
    with pytest.raises(NotPinned):
        repo.pin_rm(kept)
    assert repo.gc().removed_blocks == 1
    assert list(repo.blockstore.keys()) == []


def test_gc_interrupted_loses_nothing_pinned(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    pinned = [_raw(repo, b"pinned %d" % i) for i in range(5)]
    for cid in pinned:
        repo.pin_add(cid)
    for i in range(20):
        _raw(repo, b"garbage %d" % i)
    real, calls = repo.blockstore.delete_key, {"n": 0}

    def flaky_delete(key: str) -> None:
        calls["n"] += 1
        if calls["n"] == 7:
            raise KeyboardInterrupt  # stands in for a crash half-way through
        real(key)

    monkeypatch.setattr(repo.blockstore, "delete_key", flaky_delete)
    with pytest.raises(KeyboardInterrupt):
        repo.gc()
    monkeypatch.undo()
    assert all(repo.blockstore.get(c) for c in pinned)
    assert repo.gc().removed_blocks == 20 - 6
    assert sorted(repo.blockstore.keys()) == sorted(block_key(c) for c in pinned)


def test_gc_waits_for_writers(repo: Repo) -> None:
    """Blocks written under `writing()` and pinned before it ends survive a concurrent gc."""
    started = threading.Event()
    result: dict[str, GcResult] = {}

    def collect() -> None:
        started.set()
        result["gc"] = repo.gc()

    with repo.writing():
        cid = _raw(repo, b"fetched, not yet pinned")
        t = threading.Thread(target=collect)
        t.start()
        started.wait()
        time.sleep(0.05)
        assert "gc" not in result  # gc is blocked by the writer
        repo.pin_add(cid)
    t.join(10)
    assert result["gc"].removed_blocks == 0 and repo.blockstore.has(cid)


def test_pin_missing_refused(repo: Repo) -> None:
    with pytest.raises(BlockNotFound):
        repo.pin_add(make_cid("raw", b"never stored"))
    with pytest.raises(BlockNotFound):
        repo.pin_add(make_cid("raw", b"never stored"), recursive=False)
    assert repo.pins() == []


# -- add, dedup, gc, verify ---------------------------------------------------


def _file(tmp_path: Path, name: str, size: int, seed: int = 0) -> Path:
    p = tmp_path / name
    p.write_bytes(bytes((i * 7 + seed) % 251 for i in range(size)))
    return p


def test_add_records_object_and_pin(repo: Repo, tmp_path: Path) -> None:
    src = _file(tmp_path, "weights.bin", 20_000)
    seen: list[int] = []
    res = repo.add(src, profile=SMALL, progress=seen.append)
    assert sum(seen) == 20_000
    (obj,) = repo.objects()
    assert (obj.cid, obj.name, obj.kind, obj.size, obj.profile) == (str(res.cid), "weights.bin", "file", 20_000, SMALL.name)
    (pin,) = repo.pins()
    assert pin.cid == str(res.cid) and pin.recursive
    assert pin.blocks == len(set(repo.blockstore.keys()))
    assert b"".join(exporter.read_file(repo.blockstore, res.cid)) == src.read_bytes()


def test_same_file_twice_stored_once(repo: Repo, tmp_path: Path) -> None:
    a = _file(tmp_path, "a.bin", 9_000)
    res1 = repo.add(a, profile=SMALL)
    keys1 = sorted(repo.blockstore.keys())
    b = tmp_path / "copy.bin"
    b.write_bytes(a.read_bytes())
    res2 = repo.add(b, profile=SMALL)
    assert res1.cid == res2.cid
    assert sorted(repo.blockstore.keys()) == keys1
    assert len(repo.objects()) == 1 and len(repo.pins()) == 1


def test_directory_and_shared_blocks(repo: Repo, tmp_path: Path) -> None:
    d = tmp_path / "model"
    d.mkdir()
    _file(d, "a.bin", 5_000)
    _file(d, "b.bin", 3_000, seed=1)
    dir_res = repo.add(d, profile=SMALL)
    file_res = repo.add(d / "a.bin", profile=SMALL)
    kinds = {o.name: o.kind for o in repo.objects()}
    assert kinds == {"model": "directory", "a.bin": "file"}
    repo.pin_rm(dir_res.cid)
    removed = repo.gc().removed_blocks
    assert removed > 0  # b.bin and the directory node
    assert b"".join(exporter.read_file(repo.blockstore, file_res.cid)) == (d / "a.bin").read_bytes()
    assert [o.name for o in repo.objects()] == ["a.bin"]  # the directory's root block is gone
    assert repo.verify().ok


def test_gc_keeps_pinned_removes_unpinned(repo: Repo, tmp_path: Path) -> None:
    keep = repo.add(_file(tmp_path, "keep", 6_000), profile=SMALL)
    drop = repo.add(_file(tmp_path, "drop", 6_000, seed=3), profile=SMALL)
    repo.pin_rm(drop.cid)
    repo.gc()
    assert repo.blockstore.has(keep.cid) and not repo.blockstore.has(drop.cid)
    assert b"".join(exporter.read_file(repo.blockstore, keep.cid)) == (tmp_path / "keep").read_bytes()
    assert [o.name for o in repo.objects()] == ["keep"]
    assert repo.verify().ok


def test_pin_add_walks_whole_dag(repo: Repo, tmp_path: Path) -> None:
    res = repo.add(_file(tmp_path, "f", 8_000), profile=SMALL)
    repo.pin_rm(res.cid)
    leaf = next(c for c, _ in exporter.walk_dag(repo.blockstore, res.cid) if c.codec.name == "raw")
    repo.blockstore.delete(leaf)
    with pytest.raises(BlockNotFound):
        repo.pin_add(res.cid)
    assert repo.pins() == []


def test_verify_reports_corruption_missing_and_temp(repo: Repo, tmp_path: Path) -> None:
    res = repo.add(_file(tmp_path, "f", 8_000), profile=SMALL)
    assert repo.verify().ok
    dag = [c for c, _ in exporter.walk_dag(repo.blockstore, res.cid)]
    leaves = [c for c in dag if c.codec.name == "raw"]
    corrupt, missing = leaves[0], leaves[1]
    _block_path(repo, block_key(corrupt)).write_bytes(b"rot")
    repo.blockstore.delete(missing)
    tmp = _block_path(repo, block_key(dag[0])).with_name("leftover.x.tmp")
    tmp.write_bytes(b"partial")
    report = repo.verify()
    assert not report.ok
    assert report.corrupt_blocks == [str(corrupt)]  # the CID, not the flatfs key
    assert report.incomplete_pins == [(str(res.cid), str(missing))]
    assert report.temp_files_removed == 1 and not tmp.exists()


def test_crash_between_blocks_and_index(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a: object) -> None:
        raise RuntimeError("power cut")

    monkeypatch.setattr(repo.index, "record_put", boom)
    with pytest.raises(RuntimeError):
        repo.add(_file(tmp_path, "f", 5_000), profile=SMALL)
    assert repo.objects() == [] and repo.pins() == []
    assert repo.verify().ok  # orphan blocks are not an error…
    # …just garbage, but in a repo that never held a pin gc cannot tell them
    # from the blocks of a lost index: it asks for force (issue 12, A2).
    with pytest.raises(GcRefused):
        repo.gc()
    assert repo.gc(force=True).removed_blocks > 0
    assert list(repo.blockstore.keys()) == []


def test_sigkill_mid_add(tmp_path: Path) -> None:
    """A real SIGKILL during add: the repo reopens, verifies, and lists all or nothing."""
    Repo.init(tmp_path / "r").close()
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(3 * 1024 * 1024))
    code = textwrap.dedent(f"""
        import sys
        from shoal.store.persist.repo import Repo
        from shoal.store.chunking.profiles import DEFAULT_PROFILE
        prof = DEFAULT_PROFILE.with_overrides(chunk_size=65536)
        done = 0
        def progress(n):
            global done
            done += n
            if done >= 1024 * 1024 and done - n < 1024 * 1024:
                print("HALF", flush=True)
                sys.stdin.readline()  # wait to be killed
        with Repo.open({str(tmp_path / "r")!r}) as r:
            r.add({str(src)!r}, profile=prof, progress=progress)
        print("DONE", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "HALF"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    with Repo.open(tmp_path / "r") as r:  # the kernel released the flock
        assert r.objects() == [] and r.pins() == []
        # How many blocks were renamed into place before the kill depends on
        # the staging sync rounds (none is possible); each that was is whole.
        left = len(list(r.blockstore.keys()))
        assert r.verify().ok
        assert r.gc(force=True).removed_blocks == left  # never pinned: see test_crash_between_blocks_and_index
        res = r.add(src)
        assert [o.cid for o in r.objects()] == [str(res.cid)]


def test_disk_full_add(tiny_tmpfs: Path, tmp_path: Path) -> None:
    with Repo.init(tiny_tmpfs / "repo") as r:
        small = r.add(_file(tmp_path, "small", 3_000), profile=SMALL)
        big = tmp_path / "big.bin"
        big.write_bytes(os.urandom(3 * 1024 * 1024))
        with pytest.raises(StorageFull):
            r.add(big)
        assert [o.cid for o in r.objects()] == [str(small.cid)]
        assert list((tiny_tmpfs / "repo" / "blocks").rglob("*.tmp")) == []
        assert r.verify().ok
        r.gc()
        assert b"".join(exporter.read_file(r.blockstore, small.cid)) == (tmp_path / "small").read_bytes()


# -- add(..., commit=True): the storage commitment in the same pass -----------------------

def _leaf_layer(data: bytes) -> bytes:
    from shoal.store.proofs.commitment import DEFAULT_SEGMENT_SIZE, piece_leaves, piece_size

    s = DEFAULT_SEGMENT_SIZE
    p = piece_size(s)
    return b"".join(b"".join(piece_leaves(data[i:i + p], s)) for i in range(0, len(data), p))


# Whole 1 MiB pieces (what the helpers hash) but a short fan-out, so a few
# MiB make a tree of several levels.
PIECES = DEFAULT_PROFILE.with_overrides(max_links=3)


@pytest.mark.parametrize("helpers", [False, True], ids=["in-process", "helpers"])
@pytest.mark.parametrize("n", [0, 5000, 300_000, (1 << 20), 5 * (1 << 20) + 4097])
def test_add_with_commitment(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             helpers: bool, n: int) -> None:
    import shoal.store.proofs.piece_hashers
    from shoal.store.proofs import commit_files
    from shoal.store.dag.importer import import_path
    from shoal.store.proofs.commitment import Commitment, commit
    from shoal.store.proofs.commit_files import commitment_file, leaves_file

    monkeypatch.setattr(commit_files, "COMMIT_PROCESS_ABOVE", 0 if helpers else None)
    used: list[int] = []
    real_ring = shoal.store.proofs.piece_hashers.PieceHashers.ring
    monkeypatch.setattr(shoal.store.proofs.piece_hashers.PieceHashers, "ring",
                        lambda self, slots: used.append(slots) or real_ring(self, slots))
    data = os.urandom(n)
    (tmp_path / "f.bin").write_bytes(data)
    result = repo.add(tmp_path / "f.bin", profile=PIECES, commit=True)
    assert bool(used) == helpers
    assert result.cid == import_path(tmp_path / "f.bin", MemoryBlockstore(), PIECES).cid
    assert result.commitment == commit(data)
    assert leaves_file(repo.path, result.cid).read_bytes() == _leaf_layer(data)
    assert Commitment.decode(commitment_file(repo.path, result.cid).read_bytes()) == result.commitment
    assert not list((repo.path / "proofs").glob("*.tmp"))
    assert repo.verify().ok
    assert repo.add(tmp_path / "f.bin", profile=PIECES).commitment is None  # opt-in only


def test_add_with_commitment_other_chunking(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks that are not whole pieces (here 1 KiB) take the in-process builder."""
    from shoal.store.proofs import commit_files
    from shoal.store.proofs.commitment import commit

    monkeypatch.setattr(commit_files, "COMMIT_PROCESS_ABOVE", 0)
    data = os.urandom(300_000)
    (tmp_path / "f.bin").write_bytes(data)
    result = repo.add(tmp_path / "f.bin", profile=SMALL, commit=True)
    assert result.commitment == commit(data)


def test_add_directory_with_commit_has_no_commitment(repo: Repo, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"abc")
    result = repo.add(tmp_path / "d", commit=True)
    assert result.commitment is None
    assert not (repo.path / "proofs").exists() or not list((repo.path / "proofs").iterdir())


@pytest.mark.parametrize("child", [
    "import sys; sys.exit(3)",  # dies at start
    "import os, sys; sys.stdin.buffer.raw.read(20); sys.exit(0)",  # takes one piece, never answers
    "import os, sys\nwhile sys.stdin.buffer.raw.read(20): os.write(1, bytes(95))\n",  # answers short
    "import os, sys\nwhile sys.stdin.buffer.raw.read(20): os.write(1, bytes([255]) * 108)\n",  # out of step
], ids=["dies", "vanishes", "short-reply", "wrong-echo"])
def test_failed_helpers_still_put(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, child: str) -> None:
    """Helpers that fail in any way: the blocks are hashed here instead, the put
    succeeds with the right CID and leaves no commitment (built later)."""
    import shoal.store.proofs.piece_hashers
    from shoal.store.proofs import commit_files
    from shoal.store.dag.importer import import_path

    monkeypatch.setattr(commit_files, "COMMIT_PROCESS_ABOVE", 0)
    monkeypatch.setattr(shoal.store.proofs.piece_hashers, "_CHILD", child)
    monkeypatch.setattr(shoal.store.proofs.piece_hashers, "REPLY_TIMEOUT_S", 1.0)
    data = os.urandom(4 * (1 << 20) + 5)
    (tmp_path / "f.bin").write_bytes(data)
    result = repo.add(tmp_path / "f.bin", profile=PIECES, commit=True)
    assert result.commitment is None
    assert result.cid == import_path(tmp_path / "f.bin", MemoryBlockstore(), PIECES).cid
    assert [o.cid for o in repo.objects()] == [str(result.cid)]
    assert repo.verify().ok
    assert not list((repo.path / "proofs").iterdir())


def test_a_helper_with_a_wrong_digest_fails_the_put(repo: Repo, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A digest that is not the bytes' SHA-256 is a bug: never a block under a wrong name."""
    import shoal.store.proofs.piece_hashers
    from shoal.store.proofs import commit_files
    from shoal.store.proofs.piece_hashers import PieceHashError

    child = ("import os, struct, sys\n"
             "while h := sys.stdin.buffer.raw.read(20):\n"
             "    os.write(1, h[:8] + h[16:] + bytes(96))\n")
    monkeypatch.setattr(commit_files, "COMMIT_PROCESS_ABOVE", 0)
    monkeypatch.setattr(shoal.store.proofs.piece_hashers, "_CHILD", child)
    (tmp_path / "f.bin").write_bytes(os.urandom(3 * (1 << 20)))
    with pytest.raises(PieceHashError):
        repo.add(tmp_path / "f.bin", profile=PIECES, commit=True)
    assert repo.objects() == []
    assert repo.verify().ok


def test_commit_files_reuse_the_put_commitment(repo: Repo, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """shoal.store.proofs.commit_files.build_commitment skips its pass when the put left both files,
    and rebuilds them when the leaf file no longer folds to the recorded root."""
    from shoal.store.proofs import commit_files
    from shoal.store.proofs.commitment import commit

    data = os.urandom(100_000)
    (tmp_path / "f.bin").write_bytes(data)
    result = repo.add(tmp_path / "f.bin", profile=SMALL, commit=True)
    assert result.commitment is not None
    with monkeypatch.context() as m:
        m.setattr(commit_files, "object_bytes", lambda *a: pytest.fail("read the data again"))
        assert commit_files.build_commitment(repo.blockstore, repo.path, result.cid) == result.commitment
    path = commit_files.leaves_file(repo.path, result.cid)
    raw = bytearray(path.read_bytes())
    raw[40] ^= 1
    path.write_bytes(bytes(raw))
    assert commit_files.recorded_commitment(repo.blockstore, repo.path, result.cid) is None
    assert commit_files.build_commitment(repo.blockstore, repo.path, result.cid) == commit(data)
    assert path.read_bytes() == _leaf_layer(data)


def test_gc_removes_stale_commitment_temp_files_only(tmp_path: Path) -> None:
    repo = Repo.init(tmp_path / "r")
    try:
        proofs = repo.path / "proofs"
        proofs.mkdir(exist_ok=True)
        stale, fresh = proofs / "a.leaves.123.tmp", proofs / "b.leaves.456.tmp"
        keep = proofs / "c.leaves"
        for f in (stale, fresh, keep):
            f.write_bytes(b"x")
        old = time.time() - 3600
        os.utime(stale, (old, old))
        os.utime(keep, (old, old))
        result = repo.gc()
        assert not stale.exists() and fresh.exists() and keep.exists()
        assert result.temp_files_removed >= 1
    finally:
        repo.close()


def test_conditional_unpin_keeps_a_pin_made_again_since(repo: Repo, tmp_path: Path) -> None:
    """pin_rm(cid, created): a holder drops the pin it took, never one its user made after."""
    res = repo.add(_file(tmp_path, "w.bin", 5_000), profile=SMALL)
    (first,) = repo.pins()
    time.sleep(0.002)
    repo.pin_add(res.cid)  # the user pins it again: a fresh `created`
    (again,) = repo.pins()
    assert again.created > first.created
    with pytest.raises(NotPinned):
        repo.pin_rm(res.cid, first.created)
    assert [p.cid for p in repo.pins()] == [str(res.cid)]
    repo.pin_rm(res.cid, again.created)
    assert repo.pins() == []


def test_car_import_pins_before_a_waiting_gc_runs(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    """A CAR's blocks stay under the writer guard until their roots are pinned.

    import_car used to leave `writing()` after storing the blocks and pin
    each root afterwards: a gc in another thread ran in between, deleted
    the fresh unpinned blocks, and the root was silently left unpinned.
    """
    import io

    from shoal.store.ipld.car import write_car

    earlier = _raw(repo, b"pinned once, so gc does not take the index for a lost one")
    repo.pin_add(earlier)
    repo.pin_rm(earlier)
    data = b"a CAR's only block"
    cid = make_cid("raw", data)
    buf = io.BytesIO()
    write_car(buf, [cid], [(cid, data)])
    buf.seek(0)
    result: dict[str, GcResult] = {}
    gc_thread: list[threading.Thread] = []
    adopt = repo.adopt

    def adopt_after_a_gc_came(root: CID | str, name: str | None = None) -> object:
        t = threading.Thread(target=lambda: result.setdefault("gc", repo.gc()))
        gc_thread.append(t)
        t.start()
        # Either gc ran (the old code: nothing held it back) or it waits for the guard.
        deadline = time.monotonic() + 10
        while t.is_alive() and repo._guard.policy.exclusive_waiting == 0 and time.monotonic() < deadline:
            time.sleep(0.005)
        return adopt(root, name)

    monkeypatch.setattr(repo, "adopt", adopt_after_a_gc_came)
    imported = repo.import_car(buf)
    gc_thread[0].join(10)
    assert imported.pinned == [cid]
    assert [p.cid for p in repo.pins()] == [str(cid)]
    assert result["gc"].removed_blocks == 1  # the unpinned earlier block only
    assert repo.blockstore.get(cid) == data


def test_gc_removes_the_proof_files_of_objects_it_removes(repo: Repo, tmp_path: Path) -> None:
    """`<cid>.leaves` (32 bytes per 2 KiB segment: 16 MiB per GiB) and
    `<cid>.commitment` of a put with a commitment used to stay behind forever
    once its object was unpinned and collected. gc removes them with the
    root block; a pinned object's files stay."""
    from shoal.store.proofs.commit_files import commitment_file, leaves_file

    (tmp_path / "gone.bin").write_bytes(os.urandom(300_000))
    (tmp_path / "kept.bin").write_bytes(os.urandom(200_000))
    gone = repo.add(tmp_path / "gone.bin", profile=PIECES, commit=True).cid
    kept = repo.add(tmp_path / "kept.bin", profile=PIECES, commit=True).cid
    for cid in (gone, kept):
        assert leaves_file(repo.path, cid).is_file() and commitment_file(repo.path, cid).is_file()
    repo.pin_rm(gone)
    assert repo.gc().removed_blocks > 0
    assert not leaves_file(repo.path, gone).exists() and not commitment_file(repo.path, gone).exists()
    assert leaves_file(repo.path, kept).is_file() and commitment_file(repo.path, kept).is_file()
    assert sorted(p.name for p in (repo.path / "proofs").iterdir()) == sorted(
        [leaves_file(repo.path, kept).name, commitment_file(repo.path, kept).name])
    # A pinned object whose root was quarantined (a fetch will restore it) keeps them.
    assert repo.quarantine(kept) is False  # good blocks stay; corrupt it first
    _block_path(repo, block_key(kept)).write_bytes(b"rot")
    assert repo.quarantine(kept) is True and not repo.blockstore.has(kept)
    repo.gc()
    assert leaves_file(repo.path, kept).is_file() and commitment_file(repo.path, kept).is_file()


def test_close_releases_the_lock_even_if_closing_the_index_fails(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing index close used to skip the blockstore's close and the lock
    release: the repo stayed locked for the rest of the process (a node's)."""
    import sqlite3

    repo = Repo.init(tmp_path / "repo")
    real_close = repo.index.close

    def failing_close() -> None:
        real_close()
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(repo.index, "close", failing_close)
    with pytest.raises(sqlite3.OperationalError):
        repo.close()
    with Repo.open(tmp_path / "repo", wait=False) as again:  # RepoLocked if the fd leaked
        assert again.pins() == []
