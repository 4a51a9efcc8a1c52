"""Model folders and file modes through the real CLI, offline and through a node
(issue 12, items 20 and 24): a Hugging Face cache snapshot (symlinks into
../../blobs) puts as its files, `--no-follow` refuses it with one line, and
`get` writes files with the modes the user's umask allows."""

from __future__ import annotations

import os
import stat as stat_mod
import subprocess
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, SHOAL, assert_one_line_error, run_shoal, shoal_env
from tests.integration.swarm import Swarm, swarm  # noqa: F401  (fixture)
from tests.unit.test_import_symlinks import hf_cache, copy_dereferenced


@pytest.fixture(params=["offline", "node"])
def repo(request: pytest.FixtureRequest, tmp_path: Path, swarm: Swarm) -> Path:
    if request.param == "node":
        return swarm.add("a").repo
    path = tmp_path / "repo"
    assert run_shoal(path, "init").code == 0
    return path


def shoal_with_umask(repo: Path, mask: int, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(SHOAL + ["--repo", str(repo), *args], capture_output=True, timeout=120,
                          env=shoal_env(), cwd=PROJECT_ROOT, preexec_fn=lambda: os.umask(mask))


def test_hugging_face_snapshot_put_and_get(repo: Path, tmp_path: Path) -> None:
    snap = hf_cache(tmp_path / "hub")
    r = run_shoal(repo, "put", str(snap), "--quiet")
    assert r.code == 0, r.err
    cid = r.text.strip()
    plain = copy_dereferenced(snap, tmp_path / "plain")
    r2 = run_shoal(repo, "put", str(plain), "--quiet")
    assert r2.text.strip() == cid
    out = tmp_path / "out"
    r = run_shoal(repo, "get", cid, "-o", str(out))
    assert r.code == 0, r.err
    assert (out / "model.safetensors").read_bytes() == (plain / "model.safetensors").read_bytes()
    r = run_shoal(repo, "put", str(snap), "--no-follow")
    assert_one_line_error(r)
    assert "symlink" in r.err


@pytest.mark.parametrize("mask,expect", [(0o022, 0o644), (0o002, 0o664)])
def test_get_honours_the_callers_umask(repo: Path, tmp_path: Path, mask: int, expect: int) -> None:
    """The node (if any) runs with the test's umask; the CLI's own is the one that counts."""
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "weights.bin").write_bytes(os.urandom(1024 * 1024 + 7))
    (d / "sub" / "config.json").write_bytes(b"{}")
    cid = run_shoal(repo, "put", str(d), "--quiet").text.strip()
    out = tmp_path / f"out{mask:o}"
    proc = shoal_with_umask(repo, mask, "get", cid, "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    for f in (out / "weights.bin", out / "sub" / "config.json"):
        assert stat_mod.S_IMODE(f.stat().st_mode) == expect, f
    assert stat_mod.S_IMODE((out / "sub").stat().st_mode) == 0o777 & ~mask
