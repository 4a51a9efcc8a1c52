"""Issue 12 (A2, 22, 23): a lost index, the repo lock, a read-only repo and a
full disk, through the real `shoal` command.

A2: an existing repo whose index.sqlite is lost, emptied, replaced or
damaged is refused (never silently recreated), `gc` refuses to delete the
blocks of an index that never held a pin, and `repair-index` brings every
object back. 22: readers never wait for a writer, a second writer waits
(and `--no-wait` fails fast), readers work on a read-only bind mount. 23: on
a completely full tmpfs, `ls`, `pin rm` and `gc` still run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import (
    PROJECT_ROOT, SHOAL, assert_one_line_error, run_shoal, shoal_env, write_random,
)
from tests.integration.swarm import Swarm, swarm  # noqa: F401 (the fixture)

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
    return r.text.strip()


def block_files(repo: Path) -> list[Path]:
    return sorted((repo / "blocks").rglob("*.data"))


def ls_cids(repo: Path) -> set[str]:
    r = run_shoal(repo, "ls", "--json")
    assert r.code == 0, r.err
    return {row["cid"] for row in json.loads(r.text)}


def remove_index(repo: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        (repo / f"index.sqlite{suffix}").unlink(missing_ok=True)


def _three_objects(repo: Path, tmp_path: Path) -> dict[str, bytes | None]:
    """A multi-block file, a directory and a single-raw-block file: CID -> bytes (None: directory)."""
    big = write_random(tmp_path / "big.bin", 3 * 1024 * 1024 + 5, seed=21)
    d = tmp_path / "model"
    d.mkdir()
    write_random(d / "a.bin", 1_500_000, seed=22)
    write_random(d / "b.txt", 300, seed=23)
    small = write_random(tmp_path / "small.bin", 700, seed=24)
    return {
        put(repo, tmp_path / "big.bin"): big,
        put(repo, d): None,
        put(repo, tmp_path / "small.bin"): small,
    }


# -- A2: a lost index -----------------------------------------------------------

@pytest.mark.parametrize("damage", ["deleted", "emptied", "garbage"])
def test_lost_index_is_refused_then_repaired(repo: Path, tmp_path: Path, damage: str) -> None:
    objects = _three_objects(repo, tmp_path)
    blocks = block_files(repo)
    if damage == "deleted":
        remove_index(repo)
    elif damage == "emptied":
        remove_index(repo)
        (repo / "index.sqlite").write_bytes(b"")
    else:
        remove_index(repo)
        (repo / "index.sqlite").write_bytes(os.urandom(8192))

    # Nothing pretends the repo is fine, and nothing deletes a block.
    for args in (("verify",), ("gc",), ("ls",), ("pin", "ls"), ("put", str(tmp_path / "small.bin"))):
        r = run_shoal(repo, *args)
        assert_one_line_error(r)
        assert "index" in r.err and "repair-index" in r.err, (args, r.err)
    assert block_files(repo) == blocks
    if damage == "deleted":
        assert not (repo / "index.sqlite").exists()  # not silently recreated

    r = run_shoal(repo, "repair-index", "--json")
    assert r.code == 0, r.err
    doc = json.loads(r.text)
    assert {o["cid"] for o in doc["objects"]} == set(objects), doc
    assert doc["blocks_scanned"] == len(blocks)
    if damage == "garbage":
        assert doc["moved_aside"] and Path(doc["moved_aside"]).exists()

    assert ls_cids(repo) == set(objects)
    gc = json.loads(run_shoal(repo, "gc", "--json").text)
    assert gc["removed_blocks"] == 0, gc
    assert block_files(repo) == blocks
    assert run_shoal(repo, "verify").code == 0
    for cid, data in objects.items():
        out = tmp_path / f"out-{cid}"
        r = run_shoal(repo, "get", cid, "-o", str(out))
        assert r.code == 0, r.err
        if data is not None:
            assert out.read_bytes() == data
        else:
            assert (out / "a.bin").stat().st_size == 1_500_000 and (out / "b.txt").stat().st_size == 300


def test_gc_refuses_with_a_fresh_index_until_forced(repo: Path, tmp_path: Path) -> None:
    """An index replaced by a fresh one (it opens fine, holds nothing): gc refuses."""
    objects = _three_objects(repo, tmp_path)
    blocks = block_files(repo)
    other = tmp_path / "other"
    assert run_shoal(other, "init").code == 0
    remove_index(repo)
    shutil.copy(other / "index.sqlite", repo / "index.sqlite")
    assert ls_cids(repo) == set()
    r = run_shoal(repo, "verify")
    assert "never held one" in r.err and "repair-index" in r.err, r.err

    r = run_shoal(repo, "gc")
    assert_one_line_error(r)
    assert "never held" in r.err and "--force" in r.err and "repair-index" in r.err
    assert block_files(repo) == blocks

    r = run_shoal(repo, "repair-index")
    assert r.code == 0, r.err
    assert ls_cids(repo) == set(objects)
    # With pins, and after all of them are removed on purpose, gc runs as always.
    for cid in objects:
        assert run_shoal(repo, "pin", "rm", cid).code == 0
    gc = json.loads(run_shoal(repo, "gc", "--json").text)
    assert gc["removed_blocks"] == len(blocks) and block_files(repo) == []


def test_gc_force_deletes_unpinned_blocks_of_a_never_pinned_repo(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "f.bin", 2_500_000, seed=25)
    cid = put(repo, tmp_path / "f.bin")
    remove_index(repo)
    other = tmp_path / "other"
    assert run_shoal(other, "init").code == 0
    shutil.copy(other / "index.sqlite", repo / "index.sqlite")
    assert_one_line_error(run_shoal(repo, "gc"))
    r = run_shoal(repo, "gc", "--force", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.text)["removed_blocks"] == 4 and block_files(repo) == []  # 3 leaves + root
    assert_one_line_error(run_shoal(repo, "cat", cid))


# -- 22: the lock ------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[3])
    from shoal.store.persist.repo import Repo
    done = 0
    def progress(n):
        global done
        done += n
        if done >= 1024 * 1024 and done - n < 1024 * 1024:
            print("HALF", flush=True)
            sys.stdin.readline()  # hold the repo (lock, index connection) mid-put until told
    with Repo.open(sys.argv[1]) as r:
        r.add(sys.argv[2], progress=progress)
    print("DONE", flush=True)
""")


def test_readers_do_not_wait_for_a_writer(repo: Path, tmp_path: Path) -> None:
    data = write_random(tmp_path / "first.bin", 2_000_000, seed=32)
    cid = put(repo, tmp_path / "first.bin")
    write_random(tmp_path / "slow.bin", 3 * 1024 * 1024, seed=31)
    with _paused_put(repo, tmp_path / "slow.bin") as writer:
        # The writer holds the lock: every reader still answers at once.
        assert ls_cids(repo) == {cid}
        r = run_shoal(repo, "pin", "ls", "--json", timeout=30)
        assert r.code == 0 and json.loads(r.text) == [cid], r.err
        r = run_shoal(repo, "cat", cid, timeout=30)
        assert r.code == 0 and r.out == data, r.err
        out = tmp_path / "copy.bin"
        r = run_shoal(repo, "get", cid, "-o", str(out), timeout=30)
        assert r.code == 0 and out.read_bytes() == data, r.err
        # A writer asked not to wait fails fast with one line.
        r = run_shoal(repo, "pin", "rm", cid, "--no-wait", timeout=30)
        assert_one_line_error(r)
        assert "in use" in r.err and f"pid {writer.pid}" in r.err
        _resume(writer)
    assert len(ls_cids(repo)) == 2


def test_a_second_writer_waits_for_the_first(repo: Path, tmp_path: Path) -> None:
    write_random(tmp_path / "slow.bin", 3 * 1024 * 1024, seed=31)
    write_random(tmp_path / "second.bin", 1_000_000, seed=33)
    with _paused_put(repo, tmp_path / "slow.bin") as writer:
        second = subprocess.Popen(
            [*SHOAL, "--repo", str(repo), "put", str(tmp_path / "second.bin"), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=shoal_env(), cwd=PROJECT_ROOT,
        )
        try:
            assert second.stderr is not None
            line = second.stderr.readline().decode()
            assert line.startswith("shoal: waiting for another shoal process") and "--no-wait" in line, line
            assert second.poll() is None  # waiting, not failed
            _resume(writer)
            out, err = second.communicate(timeout=120)
            assert second.returncode == 0, err
        finally:
            if second.poll() is None:
                second.kill()
            second.wait(timeout=30)
    assert out.decode().strip() in ls_cids(repo)
    assert len(ls_cids(repo)) == 2


@contextmanager
def _paused_put(repo: Path, path: Path) -> Iterator[subprocess.Popen[str]]:
    """A real put (Repo.add in another process) stopped halfway, holding the lock
    and its index connection, until `_resume`."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(repo), str(path), str(PROJECT_ROOT)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "HALF"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def _resume(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "DONE"


# -- 22: a read-only repo -------------------------------------------------------------

@pytest.fixture
def read_only_view(repo: Path, tmp_path: Path) -> Iterator[Path]:
    """The repo through a read-only bind mount: a real EROFS, which root cannot bypass
    (permission bits would not do: tests run as root)."""
    if os.geteuid() != 0:
        pytest.skip("a bind mount needs root")
    view = tmp_path / "ro-view"
    view.mkdir()
    r = subprocess.run(["mount", "-o", "bind,ro", str(repo), str(view)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot bind-mount read-only here: {r.stderr.decode().strip()}")
    try:
        probe = view / "probe"
        with pytest.raises(OSError):
            probe.write_bytes(b"x")
        yield view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


def test_read_commands_work_on_a_read_only_repo(repo: Path, tmp_path: Path, read_only_view: Path) -> None:
    data = write_random(tmp_path / "w.bin", 2_200_000, seed=41)
    cid = put(repo, tmp_path / "w.bin")
    d = tmp_path / "dir"
    d.mkdir()
    write_random(d / "x", 100, seed=42)
    dir_cid = put(repo, d)
    view = read_only_view  # a live mount: what was put through `repo` shows here
    assert ls_cids(view) == {cid, dir_cid}
    r = run_shoal(view, "ls", dir_cid, "--json")
    assert r.code == 0 and [e["name"] for e in json.loads(r.text)] == ["x"], r.err
    r = run_shoal(view, "pin", "ls", "--json")
    assert r.code == 0 and set(json.loads(r.text)) == {cid, dir_cid}, r.err
    r = run_shoal(view, "cat", cid, "--offset", "1000", "--length", "5000")
    assert r.code == 0 and r.out == data[1000:6000], r.err
    out = tmp_path / "out.bin"
    r = run_shoal(view, "get", cid, "-o", str(out))
    assert r.code == 0 and out.read_bytes() == data, r.err
    r = run_shoal(view, "car", "export", cid, "-o", str(tmp_path / "w.car"))
    assert r.code == 0, r.err
    # Writing commands say why they cannot run.
    r = run_shoal(view, "put", str(tmp_path / "w.bin"))
    assert_one_line_error(r)
    assert "read-only" in r.err
    assert not (view / "index.sqlite-shm").exists()


# -- 23: a completely full disk ------------------------------------------------------------

def _fill(path: Path) -> None:
    """Write until the filesystem refuses: a completely full disk."""
    with open(path, "wb", buffering=0) as f:
        chunk = b"\0" * 65536
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass


def test_full_disk_still_lets_the_user_free_space(tmp_path: Path) -> None:
    """The technique of test_cli_offline's disk-full test: a small real tmpfs."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount tmpfs here")
    try:
        repo = mnt / "repo"
        assert run_shoal(repo, "init").code == 0
        write_random(tmp_path / "keep.bin", 300_000, seed=51)
        write_random(tmp_path / "drop.bin", 2_500_000, seed=52)
        keep, drop = put(repo, tmp_path / "keep.bin"), put(repo, tmp_path / "drop.bin")
        _fill(mnt / "filler")  # something else filled the disk to the last byte

        r = run_shoal(repo, "put", str(tmp_path / "keep.bin"))  # even a dedupe needs the index
        assert_one_line_error(r)
        assert "disk full" in r.err and "shoal gc" in r.err, r.err

        assert ls_cids(repo) == {keep, drop}
        r = run_shoal(repo, "pin", "ls", "--json")
        assert r.code == 0 and set(json.loads(r.text)) == {keep, drop}, r.err
        r = run_shoal(repo, "pin", "rm", drop)
        assert r.code == 0, r.err
        assert "disk full: released" in r.err
        r = run_shoal(repo, "gc", "--json")
        assert r.code == 0, r.err
        assert json.loads(r.text)["freed_bytes"] >= 2_500_000
        assert ls_cids(repo) == {keep}
        assert (repo / "reserve").exists()  # held again once there was room
        r = run_shoal(repo, "cat", keep)
        assert r.code == 0 and r.out == (tmp_path / "keep.bin").read_bytes()
        assert run_shoal(repo, "verify").code == 0
    finally:
        subprocess.run(["umount", "-l", str(mnt)])


def test_a_node_refuses_a_lost_index_and_its_gc_the_never_pinned_guard(tmp_path: Path) -> None:
    from tests.integration.swarm import Swarm

    swarm = Swarm(tmp_path)
    try:
        node = swarm.add("a", start=False)
        write_random(tmp_path / "f.bin", 2_500_000, seed=61)
        cid = put(node.repo, tmp_path / "f.bin")
        blocks = block_files(node.repo)
        remove_index(node.repo)
        r = run_shoal(node.repo, "node", "start", "--listen", "/ip4/127.0.0.1/tcp/0", "--api", "127.0.0.1:0",
                      timeout=60)
        assert_one_line_error(r)
        assert "index" in r.err and "repair-index" in r.err
        assert not (node.repo / "index.sqlite").exists()

        other = tmp_path / "other"
        assert run_shoal(other, "init").code == 0
        shutil.copy(other / "index.sqlite", node.repo / "index.sqlite")  # a fresh, empty index
        node.start()
        r = node.shoal("gc")
        assert_one_line_error(r)
        assert "never held" in r.err and "--force" in r.err
        assert block_files(node.repo) == blocks
        r = node.shoal("repair-index")
        assert_one_line_error(r)  # not beside a running node
        assert node.stop() == 0
        assert run_shoal(node.repo, "repair-index").code == 0
        node.start()
        assert cid in {row["cid"] for row in node.json("ls", "--json")}
        assert node.json("gc", "--json")["removed_blocks"] == 0
    finally:
        swarm.close()


def test_verify_through_a_node_warns_about_a_fresh_index_as_offline_does(swarm: Swarm, tmp_path: Path) -> None:
    """docs/CLI.md: a command prints the same thing offline and through a node.
    The warning that the index never held a pin while blocks are stored (a
    replaced index: run repair-index) was printed by the offline verify only."""
    node = swarm.add("a", start=False)
    data = tmp_path / "f.bin"
    write_random(data, 300_000)
    put(node.repo, data)
    other = tmp_path / "other"
    assert run_shoal(other, "init").code == 0
    remove_index(node.repo)
    shutil.copy(other / "index.sqlite", node.repo / "index.sqlite")
    node.start()
    r = node.shoal("verify")
    assert r.code == 0, r.err  # through the node: the offline verify would find the repo locked by it
    assert "never held one" in r.err and "repair-index" in r.err, r.err
