"""The offline `shoal` command, run as a real subprocess against a temp repo."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, random_bytes, run_shoal, write_random

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    r = run_shoal(path, "init")
    assert r.code == 0, r.err
    return path


def put(repo: Path, path: Path, *extra: str) -> str:
    r = run_shoal(repo, "put", str(path), "--quiet", *extra)
    assert r.code == 0, r.err
    cid = r.text.strip()
    assert "\n" not in cid and cid.startswith(("bafy", "bafk", "Qm")), r.text
    return cid


def block_files(repo: Path) -> list[Path]:
    return sorted(p for p in (repo / "blocks").rglob("*.data"))


def test_put_get_round_trip_and_quiet_output(repo: Path, tmp_path: Path) -> None:
    data = write_random(tmp_path / "model.safetensors", 3 * 1024 * 1024 + 17, seed=1)
    cid = put(repo, tmp_path / "model.safetensors")
    assert cid.startswith("bafy")  # multi-chunk file: a dag-pb root
    out = tmp_path / "copy.bin"
    r = run_shoal(repo, "get", cid, "-o", str(out))
    assert r.code == 0, r.err
    assert out.read_bytes() == data


def test_put_json_and_human_output(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "a.bin", 1000, seed=2)
    r = run_shoal(repo, "put", str(tmp_path / "a.bin"), "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.text)
    assert doc["size"] == 1000 and doc["name"] == "a.bin" and doc["cid"].startswith("bafk")
    r = run_shoal(repo, "put", str(tmp_path / "a.bin"))
    assert r.code == 0 and r.text.startswith(f"added {doc['cid']} a.bin")


def test_small_file_is_a_raw_leaf_and_legacy_profile_gives_cidv0(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "small", 100, seed=3)
    assert put(repo, tmp_path / "small").startswith("bafk")
    assert put(repo, tmp_path / "small", "--profile", "kubo-legacy").startswith("Qm")


def test_same_file_twice_stores_blocks_once(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "w.bin", 2 * 1024 * 1024 + 5, seed=4)
    cid1 = put(repo, tmp_path / "w.bin")
    before = block_files(repo)
    cid2 = put(repo, tmp_path / "w.bin")
    assert cid1 == cid2
    assert block_files(repo) == before
    assert len(before) == 4  # three leaves and the root


def test_directory_round_trip_and_ls(repo: Path, tmp_path: Path) -> None:
    src = tmp_path / "dataset"
    (src / "train" / "shards").mkdir(parents=True)
    (src / "empty-dir").mkdir()
    files = {
        "README.md": b"# data\n",
        "train/shards/000.bin": random_bytes(1_500_000, 5),
        "train/labels.txt": b"cat\ndog\n",
        "empty.txt": b"",
    }
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    cid = put(repo, src)
    r = run_shoal(repo, "ls", cid, "--json")
    assert r.code == 0, r.err
    names = [e["name"] for e in json.loads(r.text)]
    assert names == sorted(names) and set(names) == {"README.md", "train", "empty.txt", "empty-dir"}
    dest = tmp_path / "restored"
    r = run_shoal(repo, "get", cid, "-o", str(dest))
    assert r.code == 0, r.err
    for rel, data in files.items():
        assert (dest / rel).read_bytes() == data
    assert (dest / "empty-dir").is_dir()
    r = run_shoal(repo, "ls", "--json")
    assert cid in [o["cid"] for o in json.loads(r.text)]


def test_cat_range(repo: Path, tmp_path: Path) -> None:
    data = write_random(tmp_path / "f", 5 * 1024 * 1024, seed=6)
    cid = put(repo, tmp_path / "f")
    r = run_shoal(repo, "cat", cid)
    assert r.code == 0 and r.out == data
    for offset, length in [(0, 10), (1024 * 1024 - 3, 7), (4 * 1024 * 1024 + 1, 10_000_000), (5 * 1024 * 1024, 5)]:
        r = run_shoal(repo, "cat", cid, "--offset", str(offset), "--length", str(length))
        assert r.code == 0, r.err
        assert r.out == data[offset:offset + length]


def test_pins_and_gc(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "keep", 2_000_000, seed=7)
    write_random(tmp_path / "drop", 2_000_000, seed=8)
    keep = put(repo, tmp_path / "keep")
    drop = put(repo, tmp_path / "drop")
    r = run_shoal(repo, "pin", "ls", "--json")
    assert set(json.loads(r.text)) >= {keep, drop}
    assert run_shoal(repo, "pin", "rm", drop).code == 0
    r = run_shoal(repo, "gc", "--json")
    assert r.code == 0, r.err
    gc = json.loads(r.text)
    assert gc["removed_blocks"] == 3 and gc["freed_bytes"] > 2_000_000
    assert run_shoal(repo, "cat", keep).code == 0
    assert_one_line_error(run_shoal(repo, "cat", drop))
    assert run_shoal(repo, "verify").code == 0
    r = run_shoal(repo, "pin", "rm", drop)
    assert_one_line_error(r)


def test_verify_reports_corruption_and_missing_blocks(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "f", 3_000_000, seed=9)
    cid = put(repo, tmp_path / "f")
    assert run_shoal(repo, "verify").code == 0
    blocks = block_files(repo)
    victim = blocks[0]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    victim.write_bytes(bytes(raw))
    r = run_shoal(repo, "verify", "--json")
    assert r.code == 1
    doc = json.loads(r.text)
    assert not doc["ok"] and len(doc["corrupt_blocks"]) == 1
    victim.unlink()
    r = run_shoal(repo, "verify", "--json")
    assert r.code == 1
    doc = json.loads(r.text)
    assert doc["incomplete_pins"] and doc["incomplete_pins"][0]["pin"] == cid


def test_car_export_import_between_repos(repo: Path, tmp_path: Path) -> None:
    data = write_random(tmp_path / "m", 2_500_000, seed=10)
    cid = put(repo, tmp_path / "m")
    car = tmp_path / "m.car"
    assert run_shoal(repo, "car", "export", cid, "-o", str(car)).code == 0
    other = tmp_path / "other"
    assert run_shoal(other, "init").code == 0
    r = run_shoal(other, "car", "import", str(car))
    assert r.code == 0, r.err
    assert r.text.split() == [cid]
    assert run_shoal(other, "cat", cid).out == data
    assert run_shoal(other, "verify").code == 0


def test_car_with_a_bad_block_is_refused_whole(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "m", 2_500_000, seed=11)
    cid = put(repo, tmp_path / "m")
    car = tmp_path / "m.car"
    assert run_shoal(repo, "car", "export", cid, "-o", str(car)).code == 0
    raw = bytearray(car.read_bytes())
    raw[-100] ^= 0xFF  # inside the last block's bytes
    car.write_bytes(bytes(raw))
    other = tmp_path / "other"
    assert run_shoal(other, "init").code == 0
    assert_one_line_error(run_shoal(other, "car", "import", str(car)))
    assert block_files(other) == []
    assert run_shoal(other, "verify").code == 0


@pytest.mark.parametrize("args", [
    ("put", "/no/such/file"),
    ("get", "not-a-cid"),
    ("cat", "bafyNOTACID"),
    ("cat", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),  # valid, unknown (empty raw)
    ("get", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"),  # valid, unknown
    ("pin", "add", "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"),
    ("car", "import", "/no/such.car"),
])
def test_bad_input_gives_one_line_error(repo: Path, args: tuple[str, ...]) -> None:
    assert_one_line_error(run_shoal(repo, *args))
    assert run_shoal(repo, "verify").code == 0


def test_uninitialized_repo_is_a_clear_error(tmp_path: Path) -> None:
    assert_one_line_error(run_shoal(tmp_path / "nothing-here", "ls"))


def test_locked_repo_is_a_clear_error(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "f", 10, seed=12)
    holder = subprocess.Popen(
        ["python3", "-c",
         "import fcntl,sys,time; f=open(sys.argv[1],'a'); fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
         str(repo / "repo.lock")],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"locked"
        r = run_shoal(repo, "put", str(tmp_path / "f"), "--no-wait")  # without it, put waits (issue 12, item 22)
        assert_one_line_error(r)
        assert "lock" in r.err.lower() or "in use" in r.err.lower()
    finally:
        holder.kill()
        holder.wait()
    assert run_shoal(repo, "put", str(tmp_path / "f")).code == 0


def test_disk_full_gives_one_line_error_and_repo_still_verifies(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        repo = mnt / "repo"
        assert run_shoal(repo, "init").code == 0
        write_random(tmp_path / "small.bin", 1_000_000, seed=13)
        small = put(repo, tmp_path / "small.bin")
        write_random(tmp_path / "big.bin", 12 * 1024 * 1024, seed=14)
        r = run_shoal(repo, "put", str(tmp_path / "big.bin"))
        assert_one_line_error(r)
        assert "space" in r.err.lower()
        v = run_shoal(repo, "verify")
        assert v.code == 0, v.err + v.text
        r = run_shoal(repo, "ls", "--json")
        assert [o["cid"] for o in json.loads(r.text)] == [small]
    finally:
        subprocess.run(["umount", "-l", str(mnt)])
