"""Lane processes (issue 15) with real nodes: `shoal node start --lanes 2`.

Blocks move lane to lane through `POST /v1/lanes/fetch` (one block from one
holder through the fetching node's lanes, stored in its repo). A lane killed
with SIGKILL fails its jobs with lane_died and is replaced; a holder's lane
killed is failed over and replaced at the same address; a peer the holder
does not admit is refused by its lanes; SIGTERM (and SIGKILL) of a node
leaves no lane behind; `--lanes 1` starts none.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.errors import P2PError
from shoal.p2p.lanes.worker import LANE_PROTOCOL, MAX_HANDSHAKES_PER_IP
from shoal.p2p.libp2p.connection import upgrade_outbound
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.net.connection import PeerConnection, RequestFailed
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import Block, BlockMissing, Error, ErrorCode, Hello, WantBlock
from shoal.store.dag.exporter import iter_links
from shoal.store.dag.walk import DagWalk
from shoal.store.ipld.cid import CID, RAW, make_cid, parse_cid
from shoal.store.persist.repo import Repo
from tests.helpers import MANY_NODES, write_random
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

__all__ = ["swarm"]

pytestmark = [MANY_NODES, pytest.mark.integration, pytest.mark.timeout(240)]


def lanes(node: NodeProc) -> list[dict[str, Any]]:
    doc: dict[str, Any] = node.call("GET", "/v1/node/status")
    return list(doc["lanes"])


def lane_pids(node: NodeProc) -> set[int]:
    return {int(lane["pid"]) for lane in lanes(node)}


def children_running_lanes(pid: int) -> set[int]:
    """Processes whose parent is `pid` and whose command line is a lane's."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmd = f.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid and b"shoal.p2p.lanes.worker" in cmd:
            found.add(int(entry))
    return found


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def dag_cids(repo_path: Path, root: str) -> list[CID]:
    """Every block of the DAG under `root` in a repo (read-only open beside its node)."""
    with Repo.open(repo_path, lock=False) as repo:
        out: list[CID] = []
        walk = DagWalk([parse_cid(root)])
        for cid in walk:
            out.append(cid)
            walk.push(iter_links(cid, repo.blockstore.get(cid)))
        return out


def dag_cids_of_bytes(data: bytes) -> CID:
    return make_cid(RAW, data)


def store_verifies(repo_path: Path, cids: list[CID]) -> None:
    with Repo.open(repo_path, lock=False) as repo:
        for cid in cids:
            repo.blockstore.get(cid)  # re-hashes: HashMismatch / BlockNotFound fail the test


def lane_fetch(node: NodeProc, cid: CID, holder: NodeProc, timeout: float = 20.0) -> dict[str, Any]:
    resp = node.api("POST", "/v1/lanes/fetch", {"cid": str(cid), "holder": holder.peer_id, "timeout": timeout},
                    timeout=timeout + 15)
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


def fetch_all(node: NodeProc, cids: list[CID], holder: NodeProc, threads: int = 4) -> dict[str, str]:
    """Each block once, `threads` at a time; CID -> outcome."""
    out: dict[str, str] = {}
    todo = list(cids)
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not todo:
                    return
                cid = todo.pop()
            outcome = lane_fetch(node, cid, holder)["outcome"]
            with lock:
                out[str(cid)] = outcome

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    return out


def holder_and_fetcher(swarm: Swarm, tmp_path: Path, size: int, *args: str) -> tuple[NodeProc, NodeProc, list[CID]]:
    a = swarm.add("a", extra_args=["--lanes", "2", *args])
    b = swarm.add("b", bootstrap=[a.addr], extra_args=["--lanes", "2", *args])
    swarm.wait_connected(b, 1)
    write_random(tmp_path / "model.bin", size, seed=15)
    root = a.put(tmp_path / "model.bin")
    cids = dag_cids(a.repo, root)
    # B asks A where its lanes are right after the hello: wait for that answer.
    wait_until(lambda: lane_fetch(b, cids[0], a)["outcome"] == "ok", 30, "B's first block over the lanes")
    return a, b, cids


def test_two_nodes_move_every_block_lane_to_lane(swarm: Swarm, tmp_path: Path) -> None:
    a, b, cids = holder_and_fetcher(swarm, tmp_path, 6 << 20)
    assert len(cids) > 4
    for node in (a, b):
        described = lanes(node)
        assert len(described) == 2, described
        assert children_running_lanes(node.pid) == lane_pids(node)
        assert all(d["addr"].startswith("/ip4/127.0.0.1/tcp/") for d in described)
    outcomes = fetch_all(b, cids, a)
    assert set(outcomes.values()) == {"ok"}, outcomes
    store_verifies(b.repo, cids)
    assert sum(d["bytes"] for d in lanes(b)) >= 6 << 20  # B's lanes fetched the bytes
    assert [d["pid"] for d in b.json("node", "status")["lanes"]] == [d["pid"] for d in lanes(b)]
    text = b.shoal("node", "status").text
    assert all(f"pid {d['pid']} at {d['addr']}" in text for d in lanes(b)), text
    assert b.stats() is not None
    # A's lanes served them: counted in A's served bytes, and in its energy
    # ledger's serve totals with a share of the lanes' CPU.
    assert wait_until(lambda: a.stats()["served_bytes"] >= 6 << 20, 10, "A's served bytes to count its lanes")

    def serve_row() -> Any:
        row = a.call("GET", "/v1/energy")["node"]["operations"].get("serve")
        return row if row and row["bytes"] >= 6 << 20 and row["joules"] > 0 else None

    wait_until(serve_row, 10, "A's energy ledger to count what its lanes served")


def test_a_killed_lane_fails_its_jobs_and_is_replaced(swarm: Swarm, tmp_path: Path) -> None:
    a, b, cids = holder_and_fetcher(swarm, tmp_path, 16 << 20)
    assert len(cids) >= 12  # more than AFFINITY_SLACK + 1 jobs at once: both lanes get some
    victim, other = (int(d["pid"]) for d in lanes(b))
    # Both lanes stopped: jobs wait in them (the pool spreads them once the
    # holder's lane is AFFINITY_SLACK ahead), so the kill finds some in flight.
    for pid in (victim, other):
        os.kill(pid, signal.SIGSTOP)
    results: list[str] = []
    done = threading.Event()

    def fetch_some() -> None:
        try:
            results.extend(fetch_all(b, cids, a, threads=8).values())
        finally:
            done.set()

    worker = threading.Thread(target=fetch_some)
    worker.start()
    try:
        wait_until(lambda: all(d["inflight"] > 0 for d in lanes(b)), 20, "jobs in flight on both stopped lanes")
    finally:
        os.kill(victim, signal.SIGKILL)
        os.kill(other, signal.SIGCONT)
    worker.join(timeout=120)
    assert done.is_set()
    assert "lane_died" in results, results
    assert "ok" in results, results  # the other lane's jobs went on
    assert set(results) <= {"ok", "lane_died"}, results
    pid = victim
    # A replacement (a new pid, the same index) runs; retried jobs succeed.
    wait_until(lambda: len(lanes(b)) == 2 and pid not in lane_pids(b), 30, "a new lane in place of the killed one")
    assert children_running_lanes(b.pid) == lane_pids(b)
    outcomes = fetch_all(b, cids, a)
    assert set(outcomes.values()) == {"ok"}, outcomes
    store_verifies(b.repo, cids)


def test_a_killed_serving_lane_is_failed_over_and_replaced(swarm: Swarm, tmp_path: Path) -> None:
    a, b, cids = holder_and_fetcher(swarm, tmp_path, 4 << 20)
    before = lanes(a)
    for victim in before:  # both, one after the other: B must reach the replacements
        pid = int(victim["pid"])
        os.kill(pid, signal.SIGKILL)
        outcomes = fetch_all(b, cids, a)
        assert set(outcomes.values()) <= {"ok", "unreachable", "lane_died"}, outcomes
        wait_until(lambda: len(lanes(a)) == 2 and pid not in lane_pids(a), 30, "A's replacement lane")
    after = lanes(a)
    # Replacements listen where their predecessors did: B's knowledge stays right.
    assert sorted(d["addr"] for d in after) == sorted(d["addr"] for d in before)
    assert lane_pids(a).isdisjoint(int(d["pid"]) for d in before)

    def all_ok() -> bool:
        return set(fetch_all(b, cids, a).values()) == {"ok"}

    wait_until(all_ok, 30, "every block from A's replacement lanes")
    store_verifies(b.repo, cids)


def test_a_replacement_lane_on_a_new_port_is_learnt_again(swarm: Swarm, tmp_path: Path) -> None:
    """The dead lane's port is taken when its replacement starts: peers learn
    the new address when they ask again (every LANES_REFRESH_S)."""
    a, b, cids = holder_and_fetcher(swarm, tmp_path, 4 << 20)
    victim = lanes(a)[0]
    old = Multiaddr.parse(victim["addr"])
    os.kill(int(victim["pid"]), signal.SIGKILL)
    squatter = socket.socket()
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    deadline = time.monotonic() + 5
    while True:
        try:
            squatter.bind((old.host, old.port))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    squatter.listen(1)
    try:
        fresh = wait_until(lambda: [d for d in lanes(a) if d["index"] == victim["index"] and d["pid"] != victim["pid"]],
                           30, "A's replacement lane")[0]
    finally:
        squatter.close()
    assert fresh["addr"] != victim["addr"]

    def new_lane_serves() -> bool:
        assert set(fetch_all(b, cids, a).values()) == {"ok"}
        return any(d["addr"] == fresh["addr"] and d["served_bytes"] > 0 for d in lanes(a))

    wait_until(new_lane_serves, 60, "B's lanes to use A's replacement at its new address", interval=1.0)


async def _lane_get(addr: Multiaddr, identity: Identity, cid: CID, timeout: float = 20,
                    local_address: str | None = None) -> bytes:
    """Dial a lane as `identity` and ask it for one block (P2PError & co. if refused)."""
    got: list[bytes] = []
    with trio.fail_after(timeout):
        tcp = await trio.open_tcp_stream(addr.host, addr.port, local_address=local_address)
        conn = await upgrade_outbound(tcp, identity, {}, expected_peer=addr.peer_id)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.run)
                stream = await conn.open_stream(LANE_PROTOCOL)

                async def no_requests(c: Any, msg: Any) -> list[Any]:
                    return [Error(msg.request_id, ErrorCode.UNKNOWN_TYPE, "no")]

                pc = PeerConnection(stream, conn.remote_peer, no_requests)
                nursery.start_soon(pc.run)
                await pc.send(Hello(0, (L.PROTOCOL_VERSION,), (), "test", 0, 0))
                replies = await pc.request(lambda rid: WantBlock(rid, (bytes(cid),)), timeout=10)
                got.extend(r.data for r in replies if isinstance(r, Block))
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await conn.aclose()
    assert got, "the lane answered without the block"
    return got[0]


def test_a_peer_the_holder_does_not_admit_is_refused_by_its_lanes(swarm: Swarm, tmp_path: Path) -> None:
    allowed, stranger = Identity.generate(), Identity.generate()
    allow = tmp_path / "allow.txt"
    allow.write_text(f"{allowed.peer_id}\n")
    a = swarm.add("a", extra_args=["--lanes", "2", "--allow-peers", str(allow)])
    write_random(tmp_path / "f.bin", 300_000, seed=3)
    root = a.put(tmp_path / "f.bin")
    cid = dag_cids(a.repo, root)[-1]
    peer = PeerId.from_string(a.peer_id)
    addrs = [Multiaddr.parse(d["addr"]).with_peer(peer) for d in lanes(a)]
    data = trio.run(_lane_get, addrs[0], allowed, cid)
    assert len(data) > 0
    for addr in addrs:
        refused = False
        try:
            trio.run(_lane_get, addr, stranger, cid)
        except* (P2PError, RequestFailed, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            refused = True  # the lane hung up after the handshake: no stream, no block
        assert refused, f"{addr} served a peer its node does not admit"
    assert "not admitted by the node" in a.log_text()


def test_lanes_of_a_private_swarm_need_its_key(swarm: Swarm, tmp_path: Path) -> None:
    key = tmp_path / "swarm.key"
    key.write_text("/key/swarm/psk/1.0.0/\n/base16/\n" + os.urandom(32).hex() + "\n")
    a, b, cids = holder_and_fetcher(swarm, tmp_path, 2 << 20, "--swarm-key", str(key))
    assert set(fetch_all(b, cids, a).values()) == {"ok"}  # lane to lane through the protector
    store_verifies(b.repo, cids)
    peer = PeerId.from_string(a.peer_id)
    outsider = Identity.generate()  # no swarm key: its handshake cannot even start
    for d in lanes(a):
        refused = False
        try:
            trio.run(_lane_get, Multiaddr.parse(d["addr"]).with_peer(peer), outsider, cids[-1], 3)
        except* (P2PError, RequestFailed, trio.BrokenResourceError, trio.ClosedResourceError, OSError,
                 trio.TooSlowError):
            refused = True
        assert refused, f"{d['addr']} served a peer without the swarm key"


def test_silent_sockets_from_one_address_cannot_take_every_handshake_slot(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("a", extra_args=["--lanes", "2"])
    write_random(tmp_path / "f.bin", 100_000, seed=4)
    cid = dag_cids(a.repo, a.put(tmp_path / "f.bin"))[-1]
    lane = Multiaddr.parse(lanes(a)[0]["addr"]).with_peer(PeerId.from_string(a.peer_id))
    silent = [socket.create_connection((lane.host, lane.port)) for _ in range(MAX_HANDSHAKES_PER_IP)]
    try:
        time.sleep(0.5)  # the lane has taken them all into handshakes
        extra = socket.create_connection((lane.host, lane.port))
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed at once, not held for the handshake timeout
        extra.close()
        # Another address is not crowded out by them.
        assert len(trio.run(_lane_get, lane, Identity.generate(), cid, 10, "127.0.0.2")) > 0
    finally:
        for sock in silent:
            sock.close()


def test_sigterm_or_sigkill_of_a_node_leaves_no_lane(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("a", extra_args=["--lanes", "2"])
    b = swarm.add("b", extra_args=["--lanes", "2"])
    pids_a, pids_b = lane_pids(a), lane_pids(b)
    assert len(pids_a) == len(pids_b) == 2 and all(map(alive, pids_a | pids_b))
    assert a.stop() == 0
    assert not any(map(alive, pids_a)), "a lane outlived its node's SIGTERM"
    b.kill()  # no clean-up at all: the lanes see their control channel close
    wait_until(lambda: not any(map(alive, pids_b)), 15, "B's lanes to exit after B was SIGKILLed")


def test_lanes_1_starts_no_lane_process(swarm: Swarm, tmp_path: Path) -> None:
    a = swarm.add("a", extra_args=["--lanes", "1"])
    assert lanes(a) == []
    assert children_running_lanes(a.pid) == set()
    resp = a.api("POST", "/v1/lanes/fetch", {"cid": "bafkqaaa", "holder": a.peer_id})
    assert resp.status_code == 404


async def _serve_lies(identity: Identity, answer: str, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """A holder lane that answers every WANT_BLOCK with wrong bytes ("lie") or BLOCK_MISSING."""
    async with trio.open_nursery() as nursery:
        host = Libp2pHost(identity, nursery)

        async def on_request(conn: Any, msg: Any) -> list[Any]:
            if isinstance(msg, WantBlock):
                raw = msg.cids[0]
                return [Block(msg.request_id, raw, b"not the block you asked for") if answer == "lie"
                        else BlockMissing(msg.request_id, raw)]
            return [Error(msg.request_id, ErrorCode.UNKNOWN_TYPE, "no")]

        async def lane_stream(stream: Any) -> None:
            pc = PeerConnection(stream, stream.conn.remote_peer, on_request)
            async with trio.open_nursery() as inner:
                await inner.start(pc.run)
                await pc.send(Hello(0, (L.PROTOCOL_VERSION,), (), "liar", 0, 0))

        host.handlers[LANE_PROTOCOL] = lane_stream
        addrs = await nursery.start(host.serve, "127.0.0.1", 0)
        task_status.started(addrs[0])


@pytest.mark.parametrize("answer, outcome", [("lie", "corrupt"), ("missing", "missing")])
def test_a_holder_that_lies_is_caught_before_the_block_is_used(swarm: Swarm, tmp_path: Path, answer: str,
                                                               outcome: str) -> None:
    b = swarm.add("b", extra_args=["--lanes", "2"])
    liar = Identity.generate()
    wanted = dag_cids_of_bytes(b"the real block")

    async def scenario() -> dict[str, Any]:
        async with trio.open_nursery() as nursery:
            addr = await nursery.start(_serve_lies, liar, answer)
            doc = await trio.to_thread.run_sync(lambda: b.api("POST", "/v1/lanes/fetch", {
                "cid": str(wanted), "holder": str(liar.peer_id), "holder_addrs": [str(addr.with_peer(None))],
                "timeout": 10}, timeout=30).json())
            nursery.cancel_scope.cancel()
        return doc  # type: ignore[no-any-return]

    doc = trio.run(scenario)
    assert doc.get("outcome") == outcome, doc
    with Repo.open(b.repo, lock=False) as repo:
        assert not repo.blockstore.has(wanted)  # nothing of the lie was stored
