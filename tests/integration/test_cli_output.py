"""Where `get` writes, what `init` accepts, `--version`, and global options
after the command — issue 12, item 26 — with the real `shoal` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import assert_one_line_error, run_shoal, write_random

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    assert run_shoal(path, "init").code == 0
    return path


def test_get_to_stdout(repo: Path, tmp_path: Path) -> None:
    data = write_random(tmp_path / "f.bin", 2_500_000, seed=5)
    cid = run_shoal(repo, "put", "-q", str(tmp_path / "f.bin")).text.strip()
    r = run_shoal(repo, "get", cid, "-o", "-")
    assert r.code == 0, r.err
    assert r.out == data
    assert not (Path.cwd() / "-").exists()


def test_get_refuses_to_overwrite_without_force(repo: Path, tmp_path: Path) -> None:
    data = write_random(tmp_path / "f.bin", 10_000, seed=6)
    cid = run_shoal(repo, "put", "-q", str(tmp_path / "f.bin")).text.strip()
    target = tmp_path / "existing.bin"
    target.write_bytes(b"precious")
    r = run_shoal(repo, "get", cid, "-o", str(target))
    assert_one_line_error(r)
    assert "--force" in r.err and target.read_bytes() == b"precious"
    r = run_shoal(repo, "get", cid, "-o", str(target), "--force")
    assert r.code == 0, r.err
    assert target.read_bytes() == data


def test_get_refuses_a_non_empty_directory_without_force(repo: Path, tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    write_random(tmp_path / "d" / "x.bin", 1000, seed=7)
    cid = run_shoal(repo, "put", "-q", str(tmp_path / "d")).text.strip()
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("mine")
    r = run_shoal(repo, "get", cid, "-o", str(out))
    assert_one_line_error(r)
    assert not (out / "x.bin").exists()
    assert run_shoal(repo, "get", cid, "-o", str(out), "-f").code == 0
    assert (out / "x.bin").stat().st_size == 1000 and (out / "mine.txt").read_text() == "mine"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_shoal(repo, "get", cid, "-o", str(empty)).code == 0  # an empty directory is fine
    assert (empty / "x.bin").exists()


def test_init_refuses_a_non_empty_directory_that_is_not_a_repo(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "train.py").write_text("print('hi')\n")
    r = run_shoal(project, "init")
    assert_one_line_error(r)
    assert sorted(p.name for p in project.iterdir()) == ["train.py"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_shoal(empty, "init").code == 0


def test_version_and_global_options_after_the_command(repo: Path, tmp_path: Path) -> None:
    r = run_shoal(None, "--version")
    assert r.code == 0 and r.text.startswith("shoal ") and r.text.split()[1][0].isdigit(), r.text
    write_random(tmp_path / "f.bin", 100, seed=8)
    r = run_shoal(None, "put", str(tmp_path / "f.bin"), "--repo", str(repo), "--json")
    assert r.code == 0, r.err
    cid = json.loads(r.text)["cid"]
    r = run_shoal(None, "--json", "ls", "--repo", str(repo))
    assert r.code == 0 and [o["cid"] for o in json.loads(r.text)] == [cid], r.text + r.err
    r = run_shoal(None, "cat", cid, "--offset", "64", "--repo", str(repo))
    assert r.code == 0 and r.out == (tmp_path / "f.bin").read_bytes()[64:]
