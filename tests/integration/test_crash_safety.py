"""kill -9 during `shoal put` never leaves a repo that `shoal verify` rejects.

A large file is put and the process is SIGKILLed at several seeded random
moments. After each kill: verify passes, no incomplete object is listed, and
a re-put completes with the right CID.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT, SHOAL, run_shoal, shoal_env

pytestmark = pytest.mark.integration

SIZE = 192 * 1024 * 1024


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("big") / "weights.bin"
    with open(path, "wb") as f:
        rng = random.Random(99)
        for _ in range(SIZE // (1 << 24)):
            f.write(rng.randbytes(1 << 24))
    return path


def files_under(path: Path) -> int:
    """Block files so far, temp files included (cheap enough to poll)."""
    return sum(len(files) for _root, _dirs, files in os.walk(path))


def test_sigkill_during_put_leaves_a_verifiable_repo(tmp_path: Path, big_file: Path) -> None:
    reference = tmp_path / "reference"
    assert run_shoal(reference, "init").code == 0
    r = run_shoal(reference, "put", str(big_file), "--quiet")
    assert r.code == 0, r.err
    expected_cid = r.text.strip()

    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    rng = random.Random(2024)
    killed_mid_put = 0
    for _ in range(5):
        proc = subprocess.Popen(
            SHOAL + ["--repo", str(repo), "put", str(big_file), "--quiet"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=shoal_env(), cwd=PROJECT_ROOT,
        )
        # Kill once a random share of the blocks has reached the disk (temp or
        # final name): a moment that is really inside the put, however loaded
        # the machine is and however fast the disk.
        target = int(rng.uniform(0.05, 0.9) * SIZE / (1 << 20))
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if files_under(repo / "blocks") >= target:
                proc.send_signal(signal.SIGKILL)
                killed_mid_put += 1
                break
            time.sleep(0.005)
        proc.communicate(timeout=60)

        v = run_shoal(repo, "verify", "--json")
        assert v.code == 0, v.text + v.err
        listed = [o["cid"] for o in json.loads(run_shoal(repo, "ls", "--json").text)]
        assert listed in ([], [expected_cid])  # never a partial object
        if listed:  # the put won the race: start the next round from scratch
            assert run_shoal(repo, "pin", "rm", expected_cid).code == 0
        # --force: until a put wins the race this repo never held a pin, and gc
        # refuses to empty such a repo by default (it may have lost its index).
        assert run_shoal(repo, "gc", "--force").code == 0
    assert killed_mid_put >= 3, "the file is too small to kill puts in flight"

    r = run_shoal(repo, "put", str(big_file), "--quiet")
    assert r.code == 0, r.err
    assert r.text.strip() == expected_cid
    assert run_shoal(repo, "verify").code == 0
    out = tmp_path / "out.bin"
    assert run_shoal(repo, "get", expected_cid, "-o", str(out)).code == 0
    assert out.stat().st_size == SIZE
