"""The one DAG walk (store/dag/walk.py) and every walk that now drives it.

Each `old_*` function below is the walk as it was written, before the
shared `DagWalk` (commit 5fe27f1): its own stack and seen set. Hypothesis
builds DAGs with shared subtrees, CIDv0/CIDv1 and raw-codec aliases of one
block, missing and corrupt local blocks, and checks that every user of the
shared walk visits exactly what its old walk visited, in the same order
where the order is observable (CAR bytes, missing lists, the fetch's
requests).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.p2p.exchange.fetch import _Fetch, missing_blocks
from shoal.p2p.exchange.range_fetch import RangeFetchResult, RangeWalk, _RangeFetch, missing_range_blocks
from shoal.store.chunking.profiles import UNIXFS_V1_2025
from shoal.store.dag.exporter import iter_links, walk_dag
from shoal.store.dag.importer import import_bytes
from shoal.store.dag.walk import DagWalk, WalkBudgetExceeded, block_identity, cid_key
from shoal.store.errors import BlockNotFound, HashMismatch, StoreError
from shoal.store.ipld import car, dagpb
from shoal.store.ipld.cid import CID, RAW, block_key, make_cid
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.persist.repo import Repo
from shoal.store.proofs import commit_files
from tests.unit.test_fetch_integrity import FakeNode

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# --- the walks as they were -------------------------------------------------

def old_walk_dag(store: Any, cid: CID) -> list[tuple[CID, bytes]]:
    seen: set[tuple[int, bytes]] = set()
    stack = [cid]
    out = []
    while stack:
        current = stack.pop()
        key = (current.codec.code, bytes(current.digest))
        if key in seen:
            continue
        seen.add(key)
        block = store.get(current)
        out.append((current, block))
        stack.extend(reversed(iter_links(current, block)))
    return out


def old_missing_blocks(store: Any, root: CID, limit: int = 16) -> list[CID]:
    missing: list[CID] = []
    seen: set[tuple[int, bytes]] = set()
    stack = [root]
    while stack and len(missing) < limit:
        cid = stack.pop()
        visit = (int(cid.codec.code), bytes(cid))
        if visit in seen:
            continue
        seen.add(visit)
        if cid.codec.name == RAW:
            if not store.has(cid):
                missing.append(cid)
            continue
        try:
            data = store.get(cid)
        except (BlockNotFound, HashMismatch):
            missing.append(cid)
            continue
        stack.extend(reversed(iter_links(cid, data)))
    return missing


def old_missing_range_blocks(store: Any, cid: CID, offset: int, length: int | None,
                             limit: int = 16) -> list[CID]:
    walk = RangeWalk(cid, offset, length)
    missing: list[CID] = []
    stack = list(reversed(walk.start()))
    while stack and len(missing) < limit:
        block = stack.pop()
        if block.codec.name == RAW:
            if not store.has(block):
                missing.append(block)
            walk.leaf_present(block)
            continue
        try:
            data = store.get(block)
        except (BlockNotFound, HashMismatch):
            missing.append(block)
            continue
        stack.extend(reversed(walk.on_block(block, data)))
    return missing


def old_find_missing(roots: list[CID], present: set[str], links: dict[str, list[CID]],
                     blockstore: Any) -> list[CID]:
    missing: list[CID] = []
    seen: set[str] = set()
    stack = list(reversed(roots))
    while stack:
        cid = stack.pop()
        key = block_key(cid)
        if key in seen:
            continue
        seen.add(key)
        if key in present:
            children = links.get(key, []) if cid.codec.name == "dag-pb" else []
        elif blockstore.has(cid):
            children = iter_links(cid, blockstore.get(cid))
        else:
            missing.append(cid.set(base="base32") if cid.version == 1 else cid)
            continue
        stack.extend(reversed(children))
    return missing


def old_dag_layout(store: Any, root: CID) -> list[tuple[int, CID, int]]:
    out: list[tuple[int, CID, int]] = []
    seen: set[bytes] = set()
    stack = [root]
    pos = 0
    while stack:
        cid = stack.pop()
        key = bytes(cid)
        if key in seen:
            continue
        seen.add(key)
        if cid.codec.name == RAW:
            size = store.size(cid)
        else:
            data = store.get(cid)
            size = len(data)
            stack.extend(reversed(iter_links(cid, data)))
        out.append((pos, cid, size))
        pos += size
    return out


def old_stored_dag_bytes(store: Any, cid: CID) -> int:
    seen: set[bytes] = set()
    stack = [cid]
    total = 0
    while stack:
        block = stack.pop()
        key = bytes(block)
        if key in seen:
            continue
        seen.add(key)
        if block.codec.name == RAW:
            total += store.size(block)
            continue
        data = store.get(block)
        total += len(data)
        stack.extend(iter_links(block, data))
    return total


def old_repo_walk(store: Any, root: CID) -> list[tuple[CID, Any]]:
    """store/persist/repo.py's `Repo._walk` (dag_keys, gc, verify) as it was."""
    out: list[tuple[CID, Any]] = []
    seen: set[tuple[int, str]] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        visit = (int(cid.codec.code), block_key(cid))
        if visit in seen:
            continue
        seen.add(visit)
        if cid.codec.name == RAW:
            out.append((cid, None if store.has(cid) else BlockNotFound(cid)))
            continue
        try:
            data = store.get(cid)
        except (BlockNotFound, HashMismatch) as exc:
            out.append((cid, exc))
            continue
        out.append((cid, None))
        stack.extend(reversed(iter_links(cid, data)))
    return out


@dataclass
class Trace:
    """What a fetch's walk did: blocks wanted (in order), local count, quarantined."""

    wanted: list[bytes]
    local_blocks: int
    quarantined: list[bytes]


def old_fetch_walk(local: MemoryBlockstore, source: MemoryBlockstore, root: CID, check_local: bool) -> Trace:
    """fetch.py's `_Fetch._consider` as it was, run synchronously; wanted
    blocks arrive in the order they were wanted (first in, first out)."""
    cids: dict[bytes, CID] = {}
    trace = Trace([], 0, [])
    queue: list[CID] = []

    def want(cid: CID) -> None:
        trace.wanted.append(bytes(cid))
        queue.append(cid)

    def consider(start: list[CID]) -> None:
        stack = list(reversed(start))
        while stack:
            cid = stack.pop()
            key = bytes(cid)
            if key in cids:
                continue
            cids[key] = cid
            if not local.has(cid):
                want(cid)
                continue
            trace.local_blocks += 1
            if cid.codec.name == RAW and not check_local:
                continue
            try:
                data = local.get(cid)
            except HashMismatch:
                trace.quarantined.append(key)
                local.delete(cid)
                trace.local_blocks -= 1
                want(cid)
                continue
            if cid.codec.name != RAW:
                stack.extend(reversed(iter_links(cid, data)))

    consider([root])
    while queue:
        cid = queue.pop(0)
        data = source.get(cid)
        local.put(cid, data)
        if cid.codec.name != RAW:
            consider(iter_links(cid, data))
    return trace


def old_range_walk(local: MemoryBlockstore, source: MemoryBlockstore, root: CID,
                   offset: int, length: int | None) -> Trace:
    """range_fetch.py's `_RangeFetch._consider` as it was, run synchronously (FIFO arrivals)."""
    walk = RangeWalk(root, offset, length)
    waiting: set[bytes] = set()
    trace = Trace([], 0, [])
    queue: list[bytes] = []

    def consider(start: list[CID]) -> None:
        stack = list(reversed(start))
        while stack:
            cid = stack.pop()
            key = bytes(cid)
            if key in waiting:
                continue
            if cid.codec.name == RAW and local.has(cid):
                trace.local_blocks += 1
                walk.leaf_present(cid)
                continue
            try:
                data = local.get(cid) if local.has(cid) else None
            except HashMismatch:
                trace.quarantined.append(key)
                local.delete(cid)
                data = None
            if data is None:
                waiting.add(key)
                trace.wanted.append(key)
                queue.append(key)
                continue
            trace.local_blocks += 1
            stack.extend(reversed(walk.on_block(cid, data)))

    consider(walk.start())
    while queue:
        key = queue.pop(0)
        cid = walk.cid_for(key)
        data = source.get(cid)
        local.put(cid, data)
        waiting.discard(key)
        consider(walk.on_block(cid, data))
    return trace


# --- the walks as they are now, driven the same way ---------------------------

def new_fetch_walk(local: MemoryBlockstore, source: MemoryBlockstore, root: CID, check_local: bool) -> Trace:
    """The real `_Fetch` driver's walk: `_consider`, then `_on_block` per arrival (FIFO)."""
    async def run() -> Trace:
        node = FakeNode(local, {})
        driver = _Fetch(node, root, None, 20.0, 16)  # type: ignore[arg-type]
        driver.check_local = check_local
        queue: list[CID] = []
        wanted: list[bytes] = []

        def on_wanted(cid: CID) -> None:
            wanted.append(bytes(cid))
            queue.append(cid)

        driver.on_wanted = on_wanted
        await driver._consider([root])
        while queue:
            cid = queue.pop(0)
            data = source.get(cid)
            local.put(cid, data)
            await driver._on_block(bytes(cid), cid, data)
        return Trace(wanted, driver.result.local_blocks, [bytes(c) for c in node.repo.quarantined])

    return trio.run(run)


def new_range_walk(local: MemoryBlockstore, source: MemoryBlockstore, root: CID,
                   offset: int, length: int | None) -> Trace:
    async def run() -> Trace:
        node = FakeNode(local, {})
        result = RangeFetchResult(root)
        driver = _RangeFetch(node, RangeWalk(root, offset, length), result, 20.0, 16)  # type: ignore[arg-type]
        queue: list[bytes] = []
        wanted: list[bytes] = []
        planner_want = driver.planner.want

        def want(keys: list[bytes]) -> None:
            queue.extend(keys)
            wanted.extend(keys)
            planner_want(keys)

        driver.planner.want = want  # type: ignore[method-assign]
        await driver._consider(driver.walk.start())
        while queue:
            key = queue.pop(0)
            cid = driver.walk.cid_for(key)
            data = source.get(cid)
            local.put(cid, data)
            await driver._on_block(key, cid, data)
        return Trace(wanted, result.local_blocks, [bytes(c) for c in node.repo.quarantined])

    return trio.run(run)


# --- DAGs -------------------------------------------------------------------

@dataclass
class Dag:
    root: CID
    source: MemoryBlockstore
    cids: list[CID]  # every block, one CID each (v1)


@st.composite
def dags(draw: Any, aliases: bool = True) -> Dag:
    """A DAG of raw leaves and dag-pb nodes; later nodes link earlier ones,
    repeatedly and (with `aliases`) as CIDv0 or as a raw CID of a dag-pb
    node's bytes (same multihash: the walks must tell them apart or not as
    they always did)."""
    source = MemoryBlockstore()
    nodes: list[CID] = []
    for i in range(draw(st.integers(1, 6))):
        data = b"leaf %d " % i + draw(st.binary(max_size=8))
        cid = make_cid("raw", data)
        source.put(cid, data)
        nodes.append(cid)
    for i in range(draw(st.integers(1, 7))):
        picks = draw(st.lists(st.integers(0, len(nodes) - 1), max_size=5))
        links = []
        for j in picks:
            child = nodes[j]
            form = draw(st.sampled_from(["v1", "v0", "raw"])) if aliases else "v1"
            if child.codec.name == "dag-pb" and form == "v0":
                child = make_cid("dag-pb", source.get(child), version=0)
            elif child.codec.name == "dag-pb" and form == "raw":
                child = make_cid("raw", source.get(child))
            links.append(dagpb.PBLink(hash=bytes(child), name=None, tsize=None))
        block = dagpb.encode(dagpb.PBNode(links=tuple(links), data=b"node %d" % i))
        cid = make_cid("dag-pb", block)
        source.put(cid, block)
        nodes.append(cid)
    return Dag(nodes[-1], source, nodes)


def damaged_copy(draw: Any, dag: Dag) -> MemoryBlockstore:
    """A local store holding some of the DAG's blocks, a few of them rotten."""
    local = MemoryBlockstore()
    for cid in dag.cids:
        fate = draw(st.sampled_from(["keep", "keep", "absent", "rot"]))
        if fate == "keep":
            local.put(cid, dag.source.get(cid))
        elif fate == "rot":
            local.raw_put(block_key(cid), b"rot " + bytes(cid)[-4:])
    return local


PROFILE = UNIXFS_V1_2025.with_overrides(chunk_size=16, max_links=3)


@st.composite
def files(draw: Any) -> tuple[Dag, int]:
    """A file DAG of 16-byte leaves from a small alphabet, so leaves (and
    whole subtrees) repeat: one block covering several byte spans."""
    pieces = draw(st.lists(st.sampled_from([b"A" * 16, b"B" * 16, b"C" * 16, b"tail"]), min_size=1, max_size=14))
    data = b"".join(pieces)
    source = MemoryBlockstore()
    root = import_bytes(data, source, PROFILE).cid
    return Dag(root, source, [c for c, _ in walk_dag(source, root)]), len(data)


# --- the walker itself --------------------------------------------------------

def test_walk_is_depth_first_preorder_in_link_order() -> None:
    c = [make_cid("raw", b"%d" % i) for i in range(6)]
    walk = DagWalk([c[0]])
    order = []
    children = {0: [c[1], c[4]], 1: [c[2], c[3], c[2]], 4: [c[5], c[1]]}
    for cid in walk:
        i = c.index(cid)
        order.append(i)
        walk.push(children.get(i, []))
    assert order == [0, 1, 2, 3, 4, 5]
    assert walk.visited == 6


def test_a_walk_resumes_when_links_are_pushed_later() -> None:
    """A fetch visits a block it lacks, pushes nothing, and pushes its links when it arrives."""
    a, b, c = (make_cid("raw", x) for x in (b"a", b"b", b"c"))
    walk = DagWalk([a])
    assert list(walk) == [a]
    assert not walk.pending
    walk.push([b, a, c])
    assert list(walk) == [b, c]  # a was visited already
    assert walk.seen(a) and walk.seen(c)


def test_dedupe_keys_differ_as_documented() -> None:
    block = dagpb.encode(dagpb.PBNode(links=(), data=b"x"))
    v1, v0, raw = make_cid("dag-pb", block), make_cid("dag-pb", block, version=0), make_cid("raw", block)
    assert list(DagWalk([v1, v0, raw])) == [v1, v0, raw]  # binary CIDs: three visits
    assert list(DagWalk([v1, v0, raw], key=block_identity)) == [v1, raw]
    assert list(DagWalk([v1, v0, raw], key=block_key)) == [v1]
    assert list(DagWalk([v1, v1], key=None)) == [v1, v1]
    assert cid_key(v1) == bytes(v1)


def test_budget_bounds_the_visits_and_leaves_the_walk_where_it_was() -> None:
    c = [make_cid("raw", b"%d" % i) for i in range(5)]
    walk = DagWalk(c, budget=3)
    assert [next(walk) for _ in range(3)] == c[:3]
    with pytest.raises(WalkBudgetExceeded):
        next(walk)
    assert isinstance(WalkBudgetExceeded("x"), StoreError)
    assert walk.pending and walk.visited == 3
    with pytest.raises(WalkBudgetExceeded):  # still refused, and nothing was marked seen
        next(walk)
    assert not walk.seen(c[3])
    with pytest.raises(ValueError):
        DagWalk(budget=-1)


def test_stop_ends_the_walk() -> None:
    c = [make_cid("raw", b"%d" % i) for i in range(3)]
    walk = DagWalk(c)
    assert next(walk) == c[0]
    walk.stop()
    assert list(walk) == []


# --- each user visits what its old walk visited --------------------------------

@SETTINGS
@given(dags())
def test_walk_dag_and_car_export_are_unchanged(dag: Dag) -> None:
    """CAR export's section order is observable: the bytes must be identical."""
    old = old_walk_dag(dag.source, dag.root)
    assert [(bytes(c), b) for c, b in walk_dag(dag.source, dag.root)] == [(bytes(c), b) for c, b in old]
    out = io.BytesIO()
    car.export_car(dag.source, dag.root, out)
    expected = io.BytesIO()
    car.write_car(expected, [dag.root], old)
    assert out.getvalue() == expected.getvalue()


@SETTINGS
@given(st.data())
def test_missing_blocks_is_unchanged(data: st.DataObject) -> None:
    dag = data.draw(dags())
    local = damaged_copy(data.draw, dag)
    limit = data.draw(st.integers(1, 20))
    assert missing_blocks(local, dag.root, limit) == old_missing_blocks(local, dag.root, limit)


@SETTINGS
@given(st.data())
def test_car_import_missing_check_is_unchanged(data: st.DataObject) -> None:
    dag = data.draw(dags())
    in_car = [c for c in dag.cids if data.draw(st.booleans())]
    present = {block_key(c) for c in in_car}
    links = {block_key(c): iter_links(c, dag.source.get(c)) for c in in_car if c.codec.name == "dag-pb"}
    stored = MemoryBlockstore()
    for cid in dag.cids:
        if block_key(cid) not in present and data.draw(st.booleans()):
            stored.put(cid, dag.source.get(cid))
    roots = [dag.root] + data.draw(st.lists(st.sampled_from(dag.cids), max_size=2))
    new = car._find_missing(roots, present, links, stored)
    old = old_find_missing(roots, present, links, stored)
    assert [bytes(c) for c in new] == [bytes(c) for c in old]
    assert [str(c) for c in new] == [str(c) for c in old]


@SETTINGS
@given(st.data())
def test_commitment_walks_are_unchanged(data: st.DataObject) -> None:
    dag = data.draw(dags())
    assert commit_files._dag_layout(dag.source, dag.root) == old_dag_layout(dag.source, dag.root)
    assert commit_files.stored_dag_bytes(dag.source, dag.root) == old_stored_dag_bytes(dag.source, dag.root)
    local = damaged_copy(data.draw, dag)
    pairs: list[tuple[Callable[..., Any], Callable[..., Any]]] = [
        (commit_files.stored_dag_bytes, old_stored_dag_bytes), (commit_files._dag_layout, old_dag_layout)]
    for new, old in pairs:
        outcomes = []
        for run in (new, old):
            try:
                outcomes.append(run(local, dag.root))
            except StoreError as exc:  # the same error, about the same block
                outcomes.append(f"{type(exc).__name__}: {exc}")
        assert outcomes[0] == outcomes[1]


def test_stored_dag_bytes_checks_should_stop_before_the_first_block_and_every_256th() -> None:
    leaves = [make_cid("raw", b"%d" % i) for i in range(600)]
    source = MemoryBlockstore()
    for i, leaf in enumerate(leaves):
        source.put(leaf, b"%d" % i)
    block = dagpb.encode(dagpb.PBNode(links=tuple(dagpb.PBLink(bytes(c)) for c in leaves), data=b"r"))
    root = make_cid("dag-pb", block)
    source.put(root, block)
    calls: list[int] = []
    commit_files.stored_dag_bytes(source, root, should_stop=lambda: bool(calls.append(1)))
    assert len(calls) == 3  # before blocks 1, 257 and 513 of 601


@SETTINGS
@given(st.data())
def test_missing_range_blocks_is_unchanged(data: st.DataObject) -> None:
    dag, size = data.draw(files())
    local = damaged_copy(data.draw, dag)
    offset = data.draw(st.integers(0, size + 4))
    length = data.draw(st.none() | st.integers(0, size))
    limit = data.draw(st.integers(1, 20))
    assert (missing_range_blocks(local, dag.root, offset, length, limit)
            == old_missing_range_blocks(local, dag.root, offset, length, limit))


def _copy(store: MemoryBlockstore) -> MemoryBlockstore:
    twin = MemoryBlockstore()
    for key in store.keys():
        twin.raw_put(key, store._blocks[key])
    return twin


@SETTINGS
@given(st.data())
def test_fetch_walk_is_unchanged(data: st.DataObject) -> None:
    """What the fetch asks the swarm for (order included), counts as local,
    and quarantines, on a damaged local copy; `check_local` either way."""
    dag = data.draw(dags())
    local = damaged_copy(data.draw, dag)
    check_local = data.draw(st.booleans())
    old_local, new_local = _copy(local), _copy(local)
    old = old_fetch_walk(old_local, dag.source, dag.root, check_local)
    new = new_fetch_walk(new_local, dag.source, dag.root, check_local)
    assert new == old
    assert missing_blocks(new_local, dag.root) == []


@SETTINGS
@given(st.data())
def test_range_fetch_walk_is_unchanged(data: st.DataObject) -> None:
    dag, size = data.draw(files())
    local = damaged_copy(data.draw, dag)
    offset = data.draw(st.integers(0, size))
    length = data.draw(st.none() | st.integers(0, size))
    old_local, new_local = _copy(local), _copy(local)
    old = old_range_walk(old_local, dag.source, dag.root, offset, length)
    new = new_range_walk(new_local, dag.source, dag.root, offset, length)
    assert new == old
    assert missing_range_blocks(new_local, dag.root, offset, length) == []


@SETTINGS
@given(st.data())
def test_repo_walk_is_unchanged(data: st.DataObject) -> None:
    """`Repo._walk` (behind dag_keys, gc's pin walk and verify) on a damaged copy."""
    dag = data.draw(dags())
    local = damaged_copy(data.draw, dag)
    repo: Any = SimpleNamespace(blockstore=local)  # the walk uses nothing else of the repo

    def shown(walked: Any) -> list[tuple[bytes, str | None]]:
        return [(bytes(c), None if p is None else f"{type(p).__name__}: {p}") for c, p in walked]

    assert shown(Repo._walk(repo, dag.root)) == shown(old_repo_walk(local, dag.root))
