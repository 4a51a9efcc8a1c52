"""A client that goes away cancels its request on the node (issue 12, items 9 and 19).

Real processes: a node, and the `shoal` CLI interrupted with SIGINT (Ctrl-C)
in the middle of a transfer. The node logs "client went away, request
cancelled" only once the request's thread work has stopped; after it, the
node must not pin the put's object, nor complete or leave the get's output.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401  (fixture)

MIB = 1 << 20
CANCELLED = "client went away, request cancelled"


def distinct_sparse_file(path: Path, mib: int) -> None:
    """`mib` MiB, mostly holes (cheap to make and read), every 1 MiB chunk distinct."""
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
        for i in range(mib):
            f.seek(i * MIB)
            f.write(i.to_bytes(8, "big"))


def interrupt(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("the CLI did not exit after SIGINT") from None
    return proc.returncode, err.decode(errors="replace")


def cancelled_count(node: NodeProc, route: str) -> int:
    return sum(1 for line in node.log_text().splitlines() if route in line and CANCELLED in line)


def test_ctrl_c_of_put_stops_the_node_side_put(swarm: Swarm, tmp_path: Path) -> None:
    node = swarm.add("a")
    src = tmp_path / "big.bin"
    distinct_sparse_file(src, 1024)
    before = node.block_count()
    proc = node.popen("put", str(src), "--quiet")
    try:
        wait_until(lambda: node.block_count() >= before + 16, 60, "the node to store some of the put's blocks")
        code, err = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 130 and "interrupted" in err, err
    wait_until(lambda: cancelled_count(node, "/v1/put"), 30, "the node to cancel the put",
               on_timeout=node.log_tail)
    stored = node.block_count()
    assert stored < before + 1024, "the whole file was stored anyway"
    time.sleep(1.0)
    assert node.block_count() == stored, "the node kept storing blocks after the client left"
    assert node.json("pin", "ls") == []
    assert node.json("ls") == []


def test_ctrl_c_of_get_stops_the_export_and_removes_partial_output(swarm: Swarm, tmp_path: Path) -> None:
    node = swarm.add("a")
    src = tmp_path / "zeros.bin"
    with open(src, "wb") as f:
        f.truncate(2048 * MIB)  # one distinct block: a fast put, a long export
    cid = node.put(src)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc = node.popen("get", cid, "-o", str(out_dir / "model.bin"))

    def partial_written() -> bool:
        return any(p.stat().st_size > 0 for p in out_dir.glob(".shoal-*.part"))

    try:
        wait_until(partial_written, 60, "the node to start writing the output")
        code, err = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 130 and "interrupted" in err, err
    wait_until(lambda: cancelled_count(node, "/v1/get"), 30, "the node to cancel the get",
               on_timeout=node.log_tail)
    assert list(out_dir.iterdir()) == [], "partial or completed output was left behind"
    time.sleep(1.0)
    assert list(out_dir.iterdir()) == []


def test_ls_streams_through_the_node(swarm: Swarm, tmp_path: Path) -> None:
    node = swarm.add("a")
    src = tmp_path / "wide"
    src.mkdir()
    for i in range(1500):  # three batches of the node's listing stream
        (src / f"f{i:05d}").write_bytes(b"%d" % i)
    cid = node.put(src)
    rows = node.json("ls", cid)
    assert [r["name"] for r in rows] == [f"f{i:05d}" for i in range(1500)]
    assert rows[7]["size"] == 1 and rows[1234]["kind"] == "file"
    resp = node.api("GET", f"/v1/ls?cid={cid}")
    assert resp.headers["content-type"] == "application/x-ndjson"
    assert len([json.loads(line) for line in resp.text.splitlines()]) == 1500


def test_ctrl_c_of_offline_get_removes_partial_output(tmp_path: Path) -> None:
    from tests.helpers import run_shoal, shoal_env
    from tests.integration.swarm import PROJECT_ROOT, SHOAL

    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    src = tmp_path / "zeros.bin"
    with open(src, "wb") as f:
        f.truncate(2048 * MIB)
    cid = run_shoal(repo, "put", str(src), "--quiet").text.strip()
    out_dir = tmp_path / "out"
    proc = subprocess.Popen(SHOAL + ["--repo", str(repo), "get", cid, "-o", str(out_dir / "sub" / "model.bin")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=shoal_env(), cwd=PROJECT_ROOT)
    try:
        wait_until(lambda: any(p.stat().st_size > 0 for p in out_dir.glob("sub/.shoal-*.part")), 60,
                   "the export to start writing")
        code, err = interrupt(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert code == 130 and "interrupted" in err, err
    assert not out_dir.exists(), list(out_dir.rglob("*"))  # the directories it made go too
