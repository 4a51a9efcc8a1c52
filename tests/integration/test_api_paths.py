"""Paths through the control API: the CLI resolves them where the user typed
them, and the node refuses any relative path instead of resolving it against
its own working directory (a real node process, started elsewhere)."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, SHOAL, Result, shoal_env, write_random
from tests.integration.swarm import Swarm, swarm  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def shoal_in(cwd: Path, repo: Path, *args: str) -> Result:
    """Run `shoal` as a user would from `cwd` (the node runs in PROJECT_ROOT)."""
    proc = subprocess.run(SHOAL + ["--repo", str(repo), *args], capture_output=True, timeout=120,
                          env=shoal_env(), cwd=cwd)
    return Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))


@pytest.mark.timeout(90)
def test_relative_paths_land_where_the_user_meant(swarm: Swarm, tmp_path: Path) -> None:
    node = swarm.add("A")  # its working directory is the project root
    user = tmp_path / "user"
    (user / "in").mkdir(parents=True)
    data = write_random(user / "in" / "model.bin", 300_000, seed=1)
    (user / "in" / "link.bin").symlink_to("model.bin")

    r = shoal_in(user, node.repo, "put", "in/model.bin", "--json")
    assert r.code == 0, r.err
    cid = r.text.split('"cid": "')[1].split('"')[0]
    # A symlink is sent as its absolute path, not resolved: the object keeps the name the user gave.
    r = shoal_in(user, node.repo, "put", "in/link.bin", "--json")
    assert r.code == 0 and '"name": "link.bin"' in r.text, (r.text, r.err)

    r = shoal_in(user, node.repo, "get", cid, "-o", "out/copy.bin")
    assert r.code == 0, r.err
    assert (user / "out" / "copy.bin").read_bytes() == data
    assert not (PROJECT_ROOT / "out").exists()

    r = shoal_in(user, node.repo, "car", "export", cid, "-o", "model.car")
    assert r.code == 0 and (user / "model.car").is_file(), r.err
    r = shoal_in(user, node.repo, "car", "import", "model.car")
    assert r.code == 0 and cid in r.text, r.err


@pytest.mark.timeout(90)
def test_the_api_refuses_relative_paths(swarm: Swarm, tmp_path: Path) -> None:
    node = swarm.add("A")
    data = write_random(tmp_path / "w.bin", 1000)
    cid = node.put(tmp_path / "w.bin")
    # A name unique to this run: were it resolved against the node's directory, it would land there.
    stray = f"stray-{uuid.uuid4().hex}.bin"
    try:
        for method, route, body in [
            ("POST", "/v1/put", {"path": "w.bin"}),
            ("POST", "/v1/get", {"cid": cid, "output": stray}),
            ("POST", "/v1/car/export", {"cid": cid, "output": stray}),
            ("POST", "/v1/car/import", {"path": stray}),
        ]:
            resp = node.api(method, route, body)
            assert resp.status_code == 400, (route, resp.status_code, resp.text)
            doc = resp.json()
            assert "must be an absolute path" in doc["error"] and doc["hint"], doc
            assert not (PROJECT_ROOT / stray).exists(), route
        # The same calls with absolute paths work.
        resp = node.api("POST", "/v1/get", {"cid": cid, "output": str(tmp_path / "ok.bin")})
        assert resp.status_code == 200 and (tmp_path / "ok.bin").read_bytes() == data
    finally:
        (PROJECT_ROOT / stray).unlink(missing_ok=True)
