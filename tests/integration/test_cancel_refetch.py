"""A cancelled whole-file fetch, then the same file again through the same node.

Node A holds the files; node C (the gateway, the `shoal get` node) holds
nothing and is connected to A only. A client reads a little of a whole-file
response and hangs up (or `shoal get` is interrupted with SIGINT), so the
fetch behind it is cancelled with requests to A in flight; the next request
for the same file must be served whole, byte-exact. Before the fix a
request cancelled while it was handing its WANT_BLOCK frame to the secure
stream spent a Noise nonce on a frame never sent (or sent half a frame): A
failed to authenticate C's next frame and hung up, and the next request
failed with "no connected peer has it" (NoPeers, a 404 from the path
gateway, a body cut short). The race is narrow, so every test repeats it
over fresh files with the hang-up at varying points; the deterministic
proof is tests/unit/test_connection_cancel.py.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import httpx
import pytest

from tests.helpers import MANY_NODES
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until
from tests.integration.test_gateway import gateway_url, two_nodes

pytestmark = MANY_NODES

__all__ = ["swarm"]

MIB = 1 << 20
AUTH_FAILURE = "failed authentication"


def distinct_file(path: Path, mib: int, tag: int) -> bytes:
    """`mib` MiB whose every 1 MiB chunk is distinct (in this file and across `tag`s)."""
    data = bytearray(mib * MIB)
    for i in range(mib):
        data[i * MIB : i * MIB + 16] = tag.to_bytes(8, "big") + i.to_bytes(8, "big")
    path.write_bytes(data)
    return bytes(data)


def no_hang_up(a: NodeProc, c: NodeProc) -> None:
    """Neither node hung up on the other for frames it could not authenticate."""
    for node in (a, c):
        assert AUTH_FAILURE not in node.log_text(), node.log_tail()


def abandon(urls: list[str], read: int) -> list[str]:
    """GET `urls` at once, read about `read` bytes of each body (0: none), hang
    up on all of them together; what went wrong, if anything."""
    wrong: list[str] = []
    with httpx.Client(timeout=60) as client, contextlib.ExitStack() as stack:
        for url in urls:
            resp = stack.enter_context(client.stream("GET", url))
            if resp.status_code != 200:
                wrong.append(f"{url}: {resp.status_code}: {resp.read()[:200]!r}")
                continue
            got = 0
            for chunk in resp.iter_raw():
                got += len(chunk)
                if got >= read:
                    break
    return wrong


@pytest.mark.parametrize("route", ["car", "path"])
def test_gateway_serves_a_file_whole_right_after_a_cancelled_fetch_of_it(swarm: Swarm, tmp_path: Path,
                                                                          route: str) -> None:
    """Hang up on whole-file GETs mid-fetch (the CAR of a file: fetch_dag;
    a file by its CID: the path gateway), three at once, then GET the files
    again at once by their paths in the directory: 200, exact bytes, every round."""
    # Files larger than the hand-off (32 MiB): the client's hang-up finds the
    # fetch running, held back by the export. The old code failed the CAR
    # route in 2 of 3 runs of 10 rounds (a broken connection fails the rounds
    # after it too); the path gateway fetches block by block and never did
    # in 16 rounds: there this is a guard, not a repro.
    rounds, at_once, size = (12, 1, 40) if route == "car" else (3, 3, 16)
    tree = tmp_path / "tree"
    tree.mkdir()
    n = rounds * at_once
    files = [distinct_file(tree / f"f{i}.bin", size, tag=i) for i in range(n)]
    a, c = two_nodes(swarm)
    root = a.put(tree)
    cids = [a.put(tree / f"f{i}.bin") for i in range(n)]  # the files' own CIDs (deduplicated)
    url = gateway_url(c)
    failures: list[tuple[int, str]] = []
    for r in range(rounds):
        batch = range(r * at_once, (r + 1) * at_once)
        suffix = "?format=car" if route == "car" else ""
        for wrong in abandon([f"{url}/ipfs/{cids[i]}{suffix}" for i in batch], read=(r % 4) * 256 * 1024):
            failures.append((r, f"the GET to cancel: {wrong}"))  # the round before broke the connection
        for i in batch:
            try:
                got = httpx.get(f"{url}/ipfs/{root}/f{i}.bin", timeout=120)
            except httpx.HTTPError as exc:  # a body cut short
                failures.append((i, f"{type(exc).__name__}: {exc}"))
                continue
            if got.status_code != 200 or got.content != files[i]:
                failures.append((i, f"{got.status_code}, {len(got.content)} bytes: "
                                    f"{got.text[:200] if got.status_code != 200 else ''}"))
    assert not failures, (failures, c.log_tail())
    no_hang_up(a, c)


def test_shoal_get_after_an_interrupted_get_through_the_node(swarm: Swarm, tmp_path: Path) -> None:
    """`shoal get` through C interrupted with SIGINT mid-fetch, then run again: exit 0, exact bytes."""
    rounds = 6  # the old code failed about one run in three (NoPeers)
    a, c = two_nodes(swarm)
    srcs = [tmp_path / f"m{i}.bin" for i in range(rounds)]
    datas = [distinct_file(src, 24, tag=100 + i) for i, src in enumerate(srcs)]
    cids = [a.put(src) for src in srcs]
    for i in range(rounds):
        out = tmp_path / f"out{i}"
        out.mkdir()
        before = c.block_count()
        # `-o -` into a pipe nobody reads (the fetch runs ahead of a stalled
        # export, as behind a slow client), or `-o FILE`.
        proc = c.popen("get", cids[i], "-o", "-" if i % 2 == 0 else str(out / "m.bin"))
        try:
            # The signal at varying points: at the root (the first burst of
            # WANT_BLOCKs going out), or a few blocks into the fetch.
            wait_until(lambda: c.block_count() >= before + 1 + (i // 2 % 3), 60, "C to fetch some blocks")
            proc.send_signal(signal.SIGINT)
            proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        # (a fresh path: the interrupted get may have finished just before the signal)
        again = c.shoal("get", cids[i], "-o", str(out / "again.bin"))
        assert again.code == 0, (i, again.err, c.log_tail())
        assert (out / "again.bin").read_bytes() == datas[i]
    no_hang_up(a, c)


