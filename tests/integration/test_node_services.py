"""`node start` never runs without its services (issue 12 item 17).

An ImportError while loading replication/audits/energy used to be swallowed:
the node started, accepted `put --replicas 3`, and never replicated, audited
or accounted energy. Now it refuses to start, with one line on stderr.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, run_shoal, shoal_env
from tests.integration.swarm import Swarm, swarm  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("module", ["shoal.p2p.net.extensions", "shoal.p2p.replication.owner", "shoal.p2p.net.energy_service"])
def test_node_start_fails_loudly_when_a_service_cannot_be_imported(tmp_path: Path, module: str) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    # `sys.modules[name] = None` makes `import name` raise ImportError, as a
    # missing file or a broken dependency of that module would.
    code = (f"import sys; sys.modules[{module!r}] = None; from shoal.cli.main import main; "
            f"sys.exit(main(['--repo', {str(repo)!r}, 'node', 'start', '--listen', '/ip4/127.0.0.1/tcp/0', "
            f"'--api', '127.0.0.1:0']))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=shoal_env(), cwd=PROJECT_ROOT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"the node started without {module} instead of failing:\n{err.decode()}")
    text = err.decode()
    assert proc.returncode != 0, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("shoal: error: cannot start the node"), text
    assert module.split(".")[-1] in lines[0] or "import" in lines[0], text
    assert all(line.startswith("hint: ") for line in lines[1:]), text
    assert not (repo / "api").exists()


def test_a_normal_node_has_its_services(swarm: Swarm, tmp_path: Path) -> None:  # noqa: F811
    node = swarm.add("a")
    small = tmp_path / "f.txt"
    small.write_bytes(b"replicated objects have a status\n")
    cid = node.put(small)
    assert node.api("GET", f"/v1/status?cid={cid}").status_code == 200  # replication's route
    assert node.api("GET", "/v1/energy").status_code == 200  # energy's route


def test_nested_json_gets_a_400_json_answer_from_a_real_node(swarm: Swarm) -> None:  # noqa: F811
    """Issue 12: 60 KB of `[` made the node's API answer 500 (RecursionError)."""
    import httpx

    node = swarm.add("a")
    for body in (b"[" * 60_000, b'{"cid": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"):
        resp = httpx.post(node.api_url + "/v1/pin/add", content=body, timeout=30,
                          headers={"Authorization": f"Bearer {node.api_token}",
                                   "Content-Type": "application/json"})
        assert resp.status_code == 400, resp.text
        assert resp.json()["kind"] == "ApiError"
    assert node.api("GET", "/v1/id").status_code == 200  # and it still serves
