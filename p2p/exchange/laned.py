"""The laned get: lanes fetch a file's raw leaves straight into the export's file.

`shoal get CID -o OUT` on a node with lanes (shoal.p2p.lanes), from holders
that advertise lanes, moves no leaf byte through the node's main process:

- the main fetch (shoal.p2p.exchange.fetch, `skip_file_leaves=True`) brings
  the directories and the files' inner nodes only (small: links and sizes),
  handed to the export as today (shoal.p2p.exchange.handoff);
- the export (shoal.store.dag.disk_export, in a worker thread) creates each
  file's durable temp file, reads its inner nodes for the (leaf, offset)
  list and calls `LaneDispatcher.fill` (the `LeafFiller`), which returns
  once every leaf is in the file;
- the dispatcher (here, on the trio loop) turns leaves into LaneJobs: a leaf
  already in our store is a copy job (holder None: a lane reads it, verified,
  and writes it into the file: a resumed get), any other goes to the
  planner (shoal.p2p.exchange.planner.FetchPlanner) over the holders that
  have lanes, and a lane fetches it from one of the holder's lanes,
  verifies it, pwrites it at each of its offsets and stores it durably.

Failures, per block, as the main fetch treats them: MISSING and TIMEOUT move
the leaf to another holder (the planner's rounds); CORRUPT drops the holder
for the rest of the get and marks its reputation; LANE_DIED (our lane was
killed; the pool starts another) and UNREACHABLE (the holder's lane may be
restarting) queue the leaf again, the same holder included, a bounded
number of times with a growing pause; STORE_ERROR (our disk) fails the
file. A leaf no holder could give fails its files, and the export removes
what it wrote.

Memory is bounded: at most `WINDOW_LEAVES` leaf descriptors (a few dozen
bytes each, never block bytes) are handed over and unwritten at a time,
and at most `JOBS_PER_LANE` jobs per lane run at once.

Threads: `fill` runs in the export's threads and only takes a lock,
waits on a condition and posts work to the loop (`run_sync_soon`, never a
blocking call into trio); everything else runs on the loop.

Per-block cost on the loop (the node's main process, the control plane):
one long-lived task (`run`) does all of it. Jobs are handed to the pool
with `LanePool.submit` (no task per job); a job's result is queued by the
pool's reader and handled on this task's next turn together with every
other result that came meanwhile, and the jobs that refill the freed
slots are submitted in the same turn, so the pool writes them to a lane
in one message. Only the rare pauses (a holder's lane unreachable, a
corrupt local copy to quarantine) get a task of their own.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable, cast

import trio

from shoal.p2p.exchange.fetch import FetchFailed
from shoal.p2p.exchange.planner import FetchPlanner
from shoal.p2p.lanes.api import JobTicket, LaneJob, LanePool, LaneResult, Outcome, Sink
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.store.cancel import CancelFlag
from shoal.store.dag.exporter import Leaf
from shoal.store.errors import MalformedBlock, StoreError
from shoal.store.ipld.cid import CID

log = logging.getLogger("shoal.laned")

# Jobs in flight per lane of ours: enough to cover a block's round trip on
# each lane connection with answers coming back in batches (REFILL_BATCH,
# the lanes' RESULT_BATCH), few enough that a dead lane loses little.
# 16 with batches of 8 against 8 with batches of 4: fetcher main 0.43 ->
# 0.40 CPU s/GiB and 220 -> 235 MB/s (512 MiB, 1x2, 4 runs each, ABAB).
JOBS_PER_LANE = 16
# Leaves handed over by the export and not yet written (descriptors only).
WINDOW_LEAVES = 1024
# Leaves the export hands over per hop to the loop.
SUBMIT_BATCH = 64
# How often a leaf may be re-queued because OUR lane died or the holder's
# lane could not be reached, before it counts as a failure of that holder.
RETRIES = 6
RETRY_PAUSE_S = 0.2  # doubled each time, for UNREACHABLE (a holder's lane restarting)
JOB_TIMEOUT_S = 30.0
# How often a waiting export thread looks at its cancel flag.
POLL_S = 0.2
# Plain successes handled per turn of the dispatcher while many jobs are out:
# each turn (and the lane write of the jobs it submits) costs the main
# process a task switch or two and a loop iteration, so refilling after
# every single answer cost more than the answers themselves.
REFILL_BATCH = 8


class _File:
    """One file being filled: how many of its leaf writes are still due."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.outstanding = 0
        self.error: BaseException | None = None
        self.over = False  # its fill ended (failed or cancelled): its sinks are dropped


@dataclass
class _Target:
    file: _File
    offset: int
    size: int  # what the leaf's parent says it holds


class _Reader:
    """A `get_block` caller: woken with the block's bytes, or with why not."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.data: bytes | None = None
        self.error: BaseException | None = None

    def settle(self, data: bytes | None, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.data, self.error = data, error
            self.done.set()


@dataclass
class _LeafState:
    cid: CID
    waiting: list[_Target] = field(default_factory=list)  # not given to a job (each job holds its own)
    jobs: int = 0  # jobs for this leaf in flight (a dropped holder's may outlive its retry elsewhere)
    stored: bool = False  # the block is in our store: more targets are copy jobs
    in_planner: bool = False  # wanted from holders and not finished there
    retries: int = 0
    readers: list[_Reader] = field(default_factory=list)  # `get_block` callers waiting for the bytes


@dataclass
class LaneStats:
    fetched_blocks: int = 0
    fetched_bytes: int = 0
    copied_blocks: int = 0  # leaves our store had (copy jobs)
    outcomes: dict[str, int] = field(default_factory=dict)  # every job's outcome, counted


class LaneDispatcher:
    """The `LeafFiller` of a laned export (see the module doc).

    `holders`: the peers to fetch leaves from (each must have lane addresses,
    looked up per job with `lane_addrs`, so a holder's replaced lane is
    found); `store`: our blockstore (only `has` is called, in the export's
    thread); `peers`: the node's peer table (reputation); `quarantine`: moves
    a corrupt local block aside (worker thread).
    """

    def __init__(self, pool: LanePool, holders: Iterable[PeerId], *,
                 lane_addrs: Callable[[PeerId], tuple[Multiaddr, ...]], store: Any, peers: Any = None,
                 quarantine: Callable[[CID], Any] | None = None, jobs_per_lane: int = JOBS_PER_LANE,
                 window: int = WINDOW_LEAVES, job_timeout: float = JOB_TIMEOUT_S,
                 retry_pause: float = RETRY_PAUSE_S, refill_batch: int = REFILL_BATCH) -> None:
        self._pool = pool
        self._lane_addrs = lane_addrs
        self._store = store
        self._peers = peers
        self._quarantine = quarantine
        self._jobs_per_lane = jobs_per_lane
        self._window_cap = window
        self._job_timeout = job_timeout
        self._retry_pause = retry_pause
        self._refill_batch = refill_batch
        self.planner = FetchPlanner(max_inflight_per_peer=max(1, pool.size) * jobs_per_lane,
                                    request_timeout=math.inf, max_rounds=2)
        self.holders = list(dict.fromkeys(holders))
        for peer in self.holders:
            self.planner.add_holder(peer)
        self.stats = LaneStats()
        self._leaves: dict[bytes, _LeafState] = {}
        self._copies: deque[bytes] = deque()
        self._running = 0
        self._failed_seen: set[bytes] = set()  # leaves no holder could give (their targets fail at once)
        self._given_up: set[bytes] = set()  # those of them the planner failed (seen in _fail_given_up)
        self._wake = trio.Event()
        # Results of finished jobs, each with what handles it, for run()'s next turn.
        self._results: deque[tuple[Callable[[LaneResult], None], LaneResult]] = deque()
        self._tickets: set[JobTicket] = set()  # jobs submitted and not answered
        self._nursery: trio.Nursery | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._cond = threading.Condition()
        self._window = 0  # targets handed over and not yet settled (under _cond)
        self._room_wanted: list[int] = []  # batch sizes export threads wait to hand over (under _cond)
        self.max_running = 0  # the most jobs that ran at once (tests)
        self._closed = False  # run() ended: no reader is served any more

    # -- the loop's side -------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Dispatch jobs until cancelled (the get's nursery ends it with the export)."""
        self._token = trio.lowlevel.current_trio_token()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    while self._results:
                        handle, result = self._results.popleft()
                        handle(result)
                    self._dispatch()
                    await self._wake.wait()
                    self._wake = trio.Event()
        finally:
            # Jobs still queued in the pool are not sent (those running finish there unheard).
            for ticket in self._tickets:
                ticket.cancel()
            self._tickets.clear()
            # Readers waiting in other tasks (threads' from_thread calls) would wait for ever.
            self._closed = True
            for state in self._leaves.values():
                readers, state.readers = state.readers, []
                for reader in readers:
                    reader.settle(None, FetchFailed(f"the fetch of {state.cid} was stopped"))

    def _max_jobs(self) -> int:
        return max(1, self._pool.size) * self._jobs_per_lane

    def _dispatch(self) -> None:
        self._fail_given_up()
        while self._copies and self._running < self._max_jobs():
            key = self._copies.popleft()
            state = self._leaves[key]
            if state.jobs:
                continue  # that job's end queues the copy again
            targets = self._take_waiting(state)
            if targets:
                self._start(key)
                self._copy(key, targets)
        room = self._max_jobs() - self._running
        if room > 0:
            for peer, planned in self.planner.next_requests(trio.current_time(), limit=room):
                key = cast(bytes, planned)
                # (a fetch whose targets were all dropped still stores the block)
                self._start(key)
                self._fetch(key, self._take_waiting(self._leaves[key]), cast(PeerId, peer))
        self._fail_given_up()

    def _start(self, key: bytes) -> None:
        self._running += 1
        self.max_running = max(self.max_running, self._running)
        self._leaves[key].jobs += 1

    def _end(self, state: _LeafState) -> None:
        state.jobs -= 1
        self._running -= 1

    def _run_job(self, state: _LeafState, job: LaneJob, handle: Callable[[LaneResult], None]) -> None:
        """`job` (for leaf `state`) to the pool; `handle(result)` runs on run()'s next turn after the answer."""
        ticket: JobTicket | None = None

        def done(result: LaneResult) -> None:
            self._tickets.discard(cast(JobTicket, ticket))
            self._later(handle, result, urgent=result.outcome is not Outcome.OK or bool(state.readers))

        ticket = self._pool.submit(job, done)
        self._tickets.add(ticket)

    def _later(self, handle: Callable[[LaneResult], None], result: LaneResult, urgent: bool = True) -> None:
        """Queue `result` for run()'s next turn, and wake it unless waiting costs nothing:
        a plain success (`urgent` False) while REFILL_BATCH or more other jobs are
        still out waits for more answers (each of those wakes it in turn, and
        the pool's watchdog answers a job that never is), so one turn handles
        several and refills their slots with one write to the lane. Failures,
        readers waiting for bytes (the gateway) and a get's last jobs go at once."""
        self._results.append((handle, result))
        if (urgent or len(self._results) >= self._refill_batch
                or self._running - len(self._results) < self._refill_batch):
            self._wake.set()

    async def _pause(self, seconds: float, handle: Callable[[LaneResult], None], result: LaneResult) -> None:
        await trio.sleep(seconds)
        self._later(handle, result)

    def _take_waiting(self, state: _LeafState) -> list[_Target]:
        """The waiting targets whose file still wants them (the others are settled now)."""
        live = [t for t in state.waiting if not t.file.over]
        self._settle([t for t in state.waiting if t.file.over])
        state.waiting = []
        return live

    @staticmethod
    def _sinks(targets: list[_Target]) -> tuple[Sink, ...]:
        return tuple(Sink(t.file.path, t.offset) for t in targets if not t.file.over)

    def _fetch(self, key: bytes, targets: list[_Target], peer: PeerId) -> None:
        state = self._leaves[key]
        handle = partial(self._fetch_answered, key, targets, peer)
        addrs = self._lane_addrs(peer)
        if addrs:
            self._run_job(state, LaneJob(state.cid, peer, tuple(addrs), self._sinks(targets),
                                         want_data=bool(state.readers), store=True, timeout=self._job_timeout), handle)
        else:
            self._later(handle, LaneResult(Outcome.UNREACHABLE, detail=f"{peer} advertises no lanes"))

    def _fetch_answered(self, key: bytes, targets: list[_Target], peer: PeerId, result: LaneResult) -> None:
        state = self._leaves[key]
        self._count(result)
        end = partial(self._fetch_ended, key, targets, peer)
        if result.outcome is Outcome.UNREACHABLE and state.retries < RETRIES:
            # The job keeps its slot through the pause: a holder's lane restarting is given time.
            assert self._nursery is not None
            self._nursery.start_soon(self._pause, self._retry_pause * (2 ** state.retries), end, result)
            return
        end(result)

    def _fetch_ended(self, key: bytes, targets: list[_Target], peer: PeerId, result: LaneResult) -> None:
        state = self._leaves[key]
        self._end(state)
        self._fetched(peer, key, state, result, targets)

    def _fetched(self, peer: PeerId, key: bytes, state: _LeafState, result: LaneResult,
                 targets: list[_Target]) -> None:
        outcome = result.outcome
        if outcome is Outcome.OK:
            self.planner.on_block(peer, key, valid=True)
            state.in_planner = False
            state.stored = True
            self._reputation(peer, "delivered")
            self.stats.fetched_blocks += 1
            self.stats.fetched_bytes += result.size
            self._written(key, state, result.size, targets)
            self._hand_over(state, result.data)
            return
        if outcome is Outcome.STORE_ERROR:
            self.planner.on_failure(peer, key)
            self._fail_targets(state, StoreError(f"a lane could not write {state.cid}: {result.detail}"), targets)
            return
        state.waiting[:0] = targets  # back in line, in front of later arrivals
        if outcome is Outcome.CORRUPT:
            log.warning("peer %s sent a block that does not match %s (through its lane)", peer, state.cid)
            self._reputation(peer, "corrupt")
            self.planner.on_block(peer, key, valid=False)
        elif outcome in (Outcome.LANE_DIED, Outcome.UNREACHABLE) and state.retries < RETRIES:
            state.retries += 1
            self.planner.on_interrupted(peer, key)
        else:
            if outcome is Outcome.TIMEOUT:
                self._reputation(peer, "timeouts")
            self.planner.on_failure(peer, key, timed_out=outcome is Outcome.TIMEOUT)
        self._requeue(key, state)

    def _requeue(self, key: bytes, state: _LeafState) -> None:
        """After a failed job: its targets wait again; make sure someone serves them."""
        if key in self._failed_seen:
            if state.waiting or state.readers:
                self._fail_targets(state, FetchFailed(f"could not fetch {state.cid} from any holder's lanes"))
        elif state.stored:  # another job brought it meanwhile (a retry of a dropped holder's)
            self._hand_over(state, None)  # its readers read our store
            if state.waiting:
                self._copies.append(key)
        # else: the planner has the key queued or in flight; that job takes them

    def _copy(self, key: bytes, targets: list[_Target]) -> None:
        state = self._leaves[key]
        self._run_job(state, LaneJob(state.cid, None, (), self._sinks(targets), store=False, timeout=self._job_timeout),
                     partial(self._copy_answered, key, targets))

    def _copy_answered(self, key: bytes, targets: list[_Target], result: LaneResult) -> None:
        state = self._leaves[key]
        self._count(result)
        end = partial(self._copy_ended, key, targets)
        if result.outcome is Outcome.CORRUPT and self._quarantine is not None:
            assert self._nursery is not None
            self._nursery.start_soon(self._quarantine_then, state.cid, end, result)
            return
        end(result)

    async def _quarantine_then(self, cid: CID, handle: Callable[[LaneResult], None], result: LaneResult) -> None:
        assert self._quarantine is not None
        await trio.to_thread.run_sync(self._quarantine, cid)
        self._later(handle, result)

    def _copy_ended(self, key: bytes, targets: list[_Target], result: LaneResult) -> None:
        state = self._leaves[key]
        self._end(state)
        if result.outcome is Outcome.OK:
            self.stats.copied_blocks += 1
            self._written(key, state, result.size, targets)
            self._hand_over(state, None)
            return
        if result.outcome is Outcome.STORE_ERROR and "sink" in result.detail:
            self._fail_targets(state, StoreError(f"a lane could not write {state.cid}: {result.detail}"), targets)
            return
        state.waiting[:0] = targets
        if result.outcome is Outcome.LANE_DIED and state.retries < RETRIES:
            state.retries += 1
            self._copies.append(key)
            return
        # Our copy is gone or damaged (the lane quarantined a corrupt one): a holder's instead.
        log.warning("local copy of %s unusable (%s: %s): fetching it again", state.cid, result.outcome.value,
                    result.detail)
        state.stored = False
        if not state.in_planner:
            self._want(key, state)

    def _want(self, key: bytes, state: _LeafState) -> None:
        if self.planner.is_done(key):  # fetched in this get already, yet gone again: give up
            self._fail_targets(state, FetchFailed(f"block {state.cid} vanished from the store during the get"))
            return
        if not self.planner.holders:  # none given, or every one dropped: nobody to ask
            self._failed_seen.add(key)
            self._fail_targets(state, FetchFailed(f"could not fetch {state.cid}: no holder with lanes left"))
            return
        state.in_planner = True
        self.planner.want([key])

    def _written(self, key: bytes, state: _LeafState, size: int, targets: list[_Target]) -> None:
        """A job wrote its targets: settle them (a size their parent did not promise fails the file)."""
        for target in targets:
            if target.size != size and not target.file.over:
                self._fail_file(target.file, MalformedBlock(
                    f"{state.cid}: raw leaf of {size} bytes, parent says {target.size}"))
        self._settle(targets)
        if state.waiting:  # targets that came while it ran: the block is ours now
            self._copies.append(key)

    def _fail_given_up(self) -> None:
        """Leaves the planner gave up on (no holder left, every one failed): their files fail."""
        if self.planner.failed_count == len(self._given_up):
            return
        for done_key in self.planner.failed:
            key = cast(bytes, done_key)
            if key in self._given_up:
                continue
            self._given_up.add(key)
            self._failed_seen.add(key)
            state = self._leaves[key]
            state.in_planner = False
            self._fail_targets(state, FetchFailed(
                f"could not fetch {state.cid} from any holder's lanes ({len(self.planner.holders)} holders left)"))

    def _hand_over(self, state: _LeafState, data: bytes | None) -> None:
        """The block is stored: its readers get the bytes (None: a reader that came
        after the job left reads our store instead)."""
        readers, state.readers = state.readers, []
        for reader in readers:
            reader.settle(data)

    def _fail_targets(self, state: _LeafState, error: BaseException, also: list[_Target] | None = None) -> None:
        readers, state.readers = state.readers, []
        for reader in readers:
            reader.settle(None, error)
        targets = state.waiting + (also or [])
        state.waiting = []
        for target in targets:
            self._fail_file(target.file, error)
        self._settle(targets)

    def _fail_file(self, file: _File, error: BaseException) -> None:
        with self._cond:
            if file.error is None:
                file.error = error
            self._cond.notify_all()

    def _settle(self, targets: list[_Target]) -> None:
        if not targets:
            return
        with self._cond:
            finished = False
            for target in targets:
                target.file.outstanding -= 1
                finished = finished or target.file.outstanding == 0
            self._window -= len(targets)
            # Wake the export's threads only when one of them can go on (a
            # file complete, room for a waiting batch): a wake-up per leaf
            # cost this process a thread switch and a GIL hand-off per block.
            if finished or any(self._has_room(n) for n in self._room_wanted):
                self._cond.notify_all()

    def _has_room(self, batch: int) -> bool:
        return self._window + batch <= max(self._window_cap, batch)

    def _count(self, result: LaneResult) -> None:
        name = result.outcome.value
        self.stats.outcomes[name] = self.stats.outcomes.get(name, 0) + 1

    def _reputation(self, peer: PeerId, what: str) -> None:
        if self._peers is not None:
            rep = self._peers.ensure(peer).reputation
            setattr(rep, what, getattr(rep, what) + 1)

    def _add(self, file: _File, leaves: list[Leaf], local: list[bool]) -> None:
        """(On the loop, posted by `fill`.) New targets: copy, join a leaf on its way, or want it."""
        for leaf, here in zip(leaves, local):
            key = bytes(leaf.cid)
            state = self._leaves.get(key)
            if state is None:
                state = self._leaves[key] = _LeafState(leaf.cid)
            state.waiting.append(_Target(file, leaf.offset, leaf.size))
            if state.jobs or state.in_planner:
                continue  # it goes with the next job for it, or the copy after the running one
            if key in self._failed_seen:
                self._fail_targets(state, FetchFailed(f"could not fetch {state.cid} from any holder's lanes"))
            elif here or state.stored:
                self._copies.append(key)
            else:
                self._want(key, state)
        self._wake.set()

    # -- a reader's side (the gateway) -----------------------------------------------

    async def get_block(self, cid: CID) -> bytes | None:
        """(On the loop.) Have a lane fetch `cid` from the holders, store it durably and
        return its verified bytes (the lane hashed them; this process does not).

        For a reader that needs the bytes here, block by block, in its own order
        (shoal.p2p.gateway.lane_blocks): the caller found `cid` missing from our
        store. None when the block is in our store after all (another reader's
        job stored it meanwhile): read it there. Raises FetchFailed (or
        StoreError, our disk) when no holder could give it; the planner's rules
        are those of the laned get (MISSING/TIMEOUT: another holder; CORRUPT:
        the holder is dropped; our lane died: again). Cancelling the caller
        leaves the job to finish for whoever else waits for the block."""
        if self._token is None:
            raise RuntimeError("LaneDispatcher.get_block before run() started")
        if self._closed:
            raise FetchFailed(f"the fetch of {cid} was stopped")
        key = bytes(cid)
        state = self._leaves.get(key)
        if state is None:
            state = self._leaves[key] = _LeafState(cid)
        if state.stored and not state.jobs:
            return None
        reader = _Reader()
        state.readers.append(reader)
        if not (state.jobs or state.in_planner):
            if key in self._failed_seen:
                self._fail_targets(state, FetchFailed(f"could not fetch {cid} from any holder's lanes"))
            else:
                self._want(key, state)
            self._wake.set()
        try:
            await reader.done.wait()
        finally:
            if not reader.done.is_set() and reader in state.readers:
                state.readers.remove(reader)
        if reader.error is not None:
            raise reader.error
        return reader.data

    # -- the export's side (LeafFiller) -----------------------------------------

    def fill(self, path: str, leaves: Iterable[Leaf], cancel: CancelFlag | None) -> None:
        """Export thread: return once every leaf is written into `path` (see disk_export.LeafFiller)."""
        if self._token is None:
            raise RuntimeError("LaneDispatcher.fill before run() started")
        file = _File(path)
        try:
            batch: list[Leaf] = []
            for leaf in leaves:
                batch.append(leaf)
                if len(batch) >= SUBMIT_BATCH:
                    self._submit(file, batch, cancel)
                    batch = []
            if batch:
                self._submit(file, batch, cancel)
            with self._cond:
                self._wait(file, cancel, lambda: file.outstanding == 0)
        finally:
            with self._cond:
                file.over = True

    def _submit(self, file: _File, batch: list[Leaf], cancel: CancelFlag | None) -> None:
        local = [bool(self._store.has(leaf.cid)) for leaf in batch]
        with self._cond:
            self._room_wanted.append(len(batch))
            try:
                self._wait(file, cancel, lambda: self._has_room(len(batch)))
            finally:
                self._room_wanted.remove(len(batch))
            self._window += len(batch)
            file.outstanding += len(batch)
        assert self._token is not None
        self._token.run_sync_soon(self._add, file, batch, local)

    def _wait(self, file: _File, cancel: CancelFlag | None, ready: Callable[[], bool]) -> None:
        """(Under the lock.) Until `ready()`; raises the file's error, or Cancelled."""
        while True:
            if file.error is not None:
                raise file.error
            if cancel is not None:
                cancel.check()
            if ready():
                return
            self._cond.wait(POLL_S)
