"""Every bad invocation a new user can think of ends in ONE line on stderr
(plus an optional hint line), a non-zero exit, and no traceback — issue 12,
item 18. Each runs the real `shoal` command as a subprocess.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.helpers import PROJECT_ROOT, SHOAL, assert_one_line_error, run_shoal, shoal_env, write_random

pytestmark = pytest.mark.integration

NOT_PRESENT = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"  # sha256 of "hello\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A repo holding one file and one directory, a listening socket (a port
    in use), a non-empty non-repo directory, and a few files to point at."""
    root = tmp_path_factory.mktemp("cli-errors")
    repo = root / "repo"
    assert run_shoal(repo, "init").code == 0
    write_random(root / "f.bin", 300_000, seed=1)
    (root / "d").mkdir()
    write_random(root / "d" / "x.bin", 1000, seed=2)
    file_cid = run_shoal(repo, "put", "-q", str(root / "f.bin")).text.strip()
    dir_cid = run_shoal(repo, "put", "-q", str(root / "d")).text.strip()
    (root / "not-a-repo").mkdir()
    (root / "not-a-repo" / "notes.txt").write_text("mine\n")
    (root / "existing.bin").write_bytes(b"keep me")
    (root / "full-dir").mkdir()
    (root / "full-dir" / "a").write_text("a")
    (root / "bad.car").write_bytes(b"\x01\x02 not a car")
    (root / "bad-config").mkdir()
    assert run_shoal(root / "bad-config", "init").code == 0
    config = root / "bad-config" / "config.toml"
    config.write_text(config.read_text().replace("replicas = 1", 'replicas = "three"'))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        # A repo whose config.toml names the busy port (as a second node's
        # repo on the default port 4101 would): the hint points at the file.
        assert run_shoal(root / "busy-config", "init").code == 0
        cfg = root / "busy-config" / "config.toml"
        cfg.write_text(cfg.read_text().replace("/tcp/4101", f"/tcp/{busy.getsockname()[1]}"))
        yield {"root": str(root), "repo": str(repo), "file": file_cid, "dir": dir_cid,
               "busy": str(busy.getsockname()[1])}


# Each case: arguments after `shoal --repo REPO` ({placeholders} from setup),
# and a word the message must contain (so each fails for the right reason).
CASES: list[tuple[str, str]] = [
    # node start that cannot start (issue 12: these gave tracebacks)
    ("node start --listen /ip4/127.0.0.1/tcp/{busy} --api 127.0.0.1:0", "in use"),
    ("node start --listen /ip4/192.0.2.1/tcp/4101 --api 127.0.0.1:0", "192.0.2.1"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:{busy}", "in use"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 10.0.0.1:5101", "loopback"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api nonsense", "HOST:PORT"),
    ("node start --listen /tcp/nonsense --api 127.0.0.1:0", "nonsense"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --audit-interval -5", "audit-interval"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --audit-interval 0", "audit-interval"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --quota lots", "quota"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --bootstrap nowhere", "nowhere"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --swarm-key {root}/no.key", "no.key"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --swarm-key {root}/f.bin", "swarm key"),
    ("node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0 --allow-peers {root}/no-list", "no-list"),
    ("node start --json", "json"),
    ("--repo {root}/bad-config node start --listen /ip4/127.0.0.1/tcp/0 --api 127.0.0.1:0", "replicas"),
    ("--repo {root}/nothing-here node start", "no shoal repo"),
    ("--repo {root}/busy-config node start --api 127.0.0.1:0", "config.toml"),
    # energy
    ("energy --plot {root}/file.txt", "png"),
    ("energy --plot {root}/no-such-dir/chart.png", "no-such-dir"),
    # arguments
    ("", "required"),
    ("frobnicate", "frobnicate"),
    ("cat {file} --offset lots", "offset"),
    ("cat {file} --offset -1", "offset"),
    ("cat {file} --length 1.5", "length"),
    ("cat {file} --json", "json"),
    ("put {root}/f.bin --replicas 0", "replicas"),
    ("put {root}/f.bin --chunker nonsense", "chunker"),
    ("demo --size 0", "size"),
    ("demo --size -1M", "size"),
    ("pin", "required"),
    ("car export {file}", "output"),
    # content and paths
    ("get not-a-cid", "not a CID"),
    ("get {file} -o {root}/existing.bin", "exists"),
    ("get {dir} -o {root}/full-dir", "not empty"),
    ("get {dir} -o -", "dir"),
    ("get {file} -o - --json", "json"),
    ("get " + NOT_PRESENT + " -o {root}/missing.out", "not found"),
    ("cat {dir}", "dir"),
    ("cat {file} --tensor w", "safetensors"),
    ("ls {file}", "not a directory"),
    ("put {root}/no-such-file", "no such file"),
    ("pin rm " + NOT_PRESENT, "not pinned"),
    ("pin ls " + NOT_PRESENT, "not pinned"),
    ("car import {root}/bad.car", "car"),
    ("car import {root}/no-such.car", "no such file"),
    ("--repo {root}/not-a-repo init", "not empty"),
    ("init", "already"),
    ("--repo {root}/nothing-here ls", "no shoal repo"),
    ("peers", "no running node"),
    ("status {file}", "no running node"),
    ("audit {file}", "no running node"),
    ("put {root}/f.bin --replicas 3", "running node"),
    ("put /dev/null", "regular file"),
    ("cat {dir} --tensor w", "safetensors"),
    ("get {file} -o {root}/f.bin/below", "f.bin"),
]


@pytest.mark.timeout(300)
def test_every_bad_invocation_is_one_line(setup: dict[str, str], tmp_path: Path) -> None:
    failures = []
    procs = []
    for i, (args, word) in enumerate(CASES):
        # Each case on its own copy of the repo: cases that take its lock
        # (pin rm, put, car import, node start) would otherwise wait for one
        # another, and a wait prints a notice before the error (two lines).
        repo = tmp_path / f"repo-{i}"
        shutil.copytree(setup["repo"], repo)
        argv = ["--repo", str(repo)] + args.format(**setup).split()
        procs.append((args, word, subprocess.Popen(SHOAL + argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                   stderr=subprocess.PIPE, env=shoal_env(), cwd=PROJECT_ROOT)))
        while len(procs) >= 4:  # a few at a time (the machine is shared)
            failures += _collect(procs.pop(0))
    while procs:
        failures += _collect(procs.pop(0))
    assert failures == [], "\n\n".join(failures)


def _collect(item: tuple[str, str, subprocess.Popen[bytes]]) -> list[str]:
    from tests.helpers import Result

    args, word, proc = item
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return [f"shoal {args}: still running after 60 s"]
    result = Result(proc.returncode, out, err.decode(errors="replace"))
    try:
        assert_one_line_error(result)
        assert word.lower() in result.err.lower(), f"message does not mention {word!r}"
    except AssertionError as exc:
        return [f"shoal {args}: exit {result.code}: {exc}\n{result.err}"]
    return []


def test_a_node_stops_cleanly_on_a_port_taken_after_the_check(tmp_path: Path) -> None:
    """The early bind check cannot see a port taken a moment later: the
    error from inside the node's start-up is still one line, no traceback."""
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    code = (
        "import socket, sys\n"
        "import shoal.cli.commands_node as n\n"
        "n._check_bindable = lambda *a, **k: None  # as if the port were taken after the check\n"
        "from shoal.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        for args in (["--listen", f"/ip4/127.0.0.1/tcp/{port}", "--api", "127.0.0.1:0"],
                     ["--listen", "/ip4/127.0.0.1/tcp/0", "--api", f"127.0.0.1:{port}"]):
            proc = subprocess.run([sys.executable, "-c", code, "--repo", str(repo), "node", "start", *args],
                                  capture_output=True, timeout=60, env=shoal_env(), cwd=PROJECT_ROOT)
            from tests.helpers import Result

            result = Result(proc.returncode, proc.stdout, proc.stderr.decode(errors="replace"))
            # The node logs its start-up at INFO; the last lines are the error.
            tail = Result(result.code, b"", "\n".join(result.err.splitlines()[-2:]))
            assert "Traceback" not in result.err, result.err
            assert result.code != 0 and "in use" in result.err, result.err
            assert any(line.startswith("shoal: error: ") for line in tail.err.splitlines()), result.err
    assert not (repo / "api").exists()
