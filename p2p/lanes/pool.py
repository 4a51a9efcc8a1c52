"""The node's lanes: spawn, dispatch to, restart and stop the lane processes.

`LaneProcessPool` implements shoal.p2p.lanes.api.LanePool. `run` (a task of
the node's nursery) starts N lanes (`python -m shoal.p2p.lanes.worker`, each
with its end of a socketpair passed as a file descriptor) and reports
readiness once every lane has said where it listens. One supervisor task per
lane reads its control channel (results, admission questions, CPU stats);
when a lane dies (SIGKILL, a crash, a broken channel) every job it had fails
with Outcome.LANE_DIED, its last reported CPU is kept for `cpu_seconds`, and
a replacement is started (on the same port if it is free). When the pool is
cancelled (node shutdown, SIGTERM), every lane's channel is closed, the lane
exits on that EOF, and one that does not within STOP_GRACE_S is killed, so
no lane outlives the node; a node that is SIGKILLed closes the channels too
(the kernel does), and its lanes exit the same way.

Dispatch: a job goes to the lane its holder maps to (affinity: that lane's
connections to the holder are warm) unless another lane is idler by more
than AFFINITY_SLACK jobs; each lane runs at most `max_jobs_per_lane` at once
(later jobs queue for room). Jobs are submitted without a task each
(`submit(job, done)`; `run_job` waits on it): a job placed on a lane goes
to that lane's writer task, which sends every job placed since its last
send in one write, and the lane's reader calls `done` as its Result is
decoded. Deadlines (a lane to take the job, the lane's answer) are checked
by one watchdog task every WATCH_S, not by a timer per job: all of this
is per-block work of the node's main process, the control plane that must
never be what bounds a laned get (bench/transfer.py "fetcher main").

Not here: which block to get from whom (the caller plans; shoal.p2p.exchange).
Callers that store blocks (`job.store`) hold the node's store guard shared
while they wait, as a fetch does, so gc never runs under a lane's writes.
"""

from __future__ import annotations

import itertools
import logging
import math
import socket
import subprocess
import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable, Protocol

import trio

from shoal.store.ipld.cid import CID

from shoal.p2p.errors import ControlProtocolError, LaneError
from shoal.p2p.lanes import control as C
from shoal.p2p.lanes.api import MAX_LANES, JobDone, LaneJob, LaneResult, Outcome
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.wire import limits as L

log = logging.getLogger("shoal.lanes")

__all__ = ["LaneProcessPool"]

MAX_JOBS_PER_LANE = 32
"""Jobs in flight per lane: enough to keep a holder's connection and the
lane's store threads busy, few enough that a lane's death fails little."""
AFFINITY_SLACK = 4
READY_TIMEOUT_S = 30.0
"""A lane imports trio, cryptography, msgpack... and opens the repo: seconds on a loaded machine."""
STOP_GRACE_S = 3.0
RESTART_DELAY_S = 0.2
MAX_RESTART_DELAY_S = 10.0
RESULT_GRACE_S = 5.0
"""The lane times a job out itself; the pool waits this much longer for its word."""
WATCH_S = 1.0
"""How often the watchdog looks for jobs past a deadline (while any job is
queued or running): a job's TIMEOUT comes at most this much late."""


class LaneProcess(Protocol):
    """What the pool needs of a lane's process (trio.Process; a fake in unit tests)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def kill(self) -> None: ...


Spawner = Callable[[int, socket.socket], Awaitable[LaneProcess]]
"""Starts lane `index` holding its end of the control channel (and closes that end in this process)."""


CONTROL_BUFFER_BYTES = 4 * 1024 * 1024
"""Socket buffers of a control channel: a Result carrying a block (want_data, up
to the exchange's largest block) goes through in one or two sends instead of
~20 of the default 208 KiB, each a wake-up of both processes (the kernel may
cap it at net.core.wmem_max/rmem_max)."""
CONTROL_READ_BYTES = 1024 * 1024


def _widen(end: socket.socket) -> None:
    for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
        try:
            end.setsockopt(socket.SOL_SOCKET, option, CONTROL_BUFFER_BYTES)
        except OSError:  # a platform that refuses: the default buffers work, only slower
            pass


@dataclass(eq=False)
class _Pending:
    """A submitted job (the JobTicket): queued until a lane has room, then in that lane's `pending`."""

    job: LaneJob
    msg: C.Job
    done: JobDone
    pick_by: float  # trio time by which a lane must have taken it
    answer_by: float = math.inf  # ... and answered it (set when placed)
    cancelled: bool = False  # the caller gave up on it
    delivered: bool = False  # `done` was called

    def cancel(self) -> None:
        self.cancelled = True


@dataclass
class _Lane:
    index: int
    process: LaneProcess
    stream: trio.SocketStream
    pid: int
    decoder: C.ControlDecoder = field(default_factory=C.ControlDecoder)
    addr: Multiaddr | None = None
    ready: bool = False
    dead: bool = False
    inflight: int = 0
    jobs: int = 0
    bytes: int = 0
    cpu_s: float = 0.0
    serve_cpu_s: float = 0.0
    served_bytes: int = 0
    fetched_bytes: int = 0
    pending: dict[int, _Pending] = field(default_factory=dict)  # job id -> job placed here
    outbox: list[_Pending] = field(default_factory=list)  # placed, not yet written
    outbox_ready: trio.Event = field(default_factory=trio.Event)
    send_lock: trio.Lock = field(default_factory=trio.Lock)

    async def send(self, msg: C.ControlMessage) -> None:
        async with self.send_lock:
            await self.stream.send_all(C.encode(msg))


class LaneProcessPool:
    """N lane processes of one node (see the module docstring)."""

    def __init__(
        self,
        count: int,
        *,
        repo: Path,
        peer_id: PeerId,
        host: str,
        admits: Callable[[PeerId], bool],
        swarm_key: SwarmKey | None = None,
        send_budget: int = L.SEND_BUDGET_BYTES,
        stall_timeout: float = L.SEND_STALL_TIMEOUT_S,
        max_jobs_per_lane: int = MAX_JOBS_PER_LANE,
        python: str = sys.executable,
        on_stored: Callable[[CID], None] | None = None,
        on_served: Callable[[int, float], None] | None = None,
        spawn: Spawner | None = None,
    ) -> None:
        """`on_stored(cid)`: a lane stored `cid`'s block (OK of a job with
        `store`), called before `run_job` returns it; the node's blockstore
        notes it so its next flush makes the block's name durable.
        `on_served(bytes, cpu_s)`: lanes served `bytes` to peers at the cost
        of `cpu_s` (their CPU since the last report, split between serving
        and jobs by bytes moved), for the energy ledger's serve totals."""
        if not 1 <= count <= MAX_LANES:
            raise LaneError(f"lanes: 1 to {MAX_LANES}, not {count}")
        self.count = count
        self.repo = Path(repo).resolve()
        self.peer_id = peer_id
        self.host = host
        self.admits = admits
        self.swarm_key = swarm_key
        self.send_budget = send_budget
        self.stall_timeout = stall_timeout
        self.max_jobs_per_lane = max_jobs_per_lane
        self.python = python
        self.on_stored = on_stored
        self.on_served = on_served
        self._spawn: Spawner = spawn if spawn is not None else self._spawn_process
        self._lanes: dict[int, _Lane] = {}
        self._ports: dict[int, int] = {}
        self._job_ids = itertools.count(1)
        self._live: list[_Lane] = []  # ready and not dead, by index (kept, not recomputed per job)
        self._queue: deque[_Pending] = deque()  # submitted, waiting for a lane with room
        self._watch = trio.Event()  # work appeared: the watchdog has deadlines to look at
        self._dead_cpu_s = 0.0
        self._dead_served = 0
        self._dead_fetched = 0
        self.restarts = 0

    # -- LanePool --------------------------------------------------------------------

    @property
    def size(self) -> int:
        return sum(1 for lane in self._lanes.values() if lane.ready and not lane.dead)

    def addrs(self) -> list[Multiaddr]:
        return [lane.addr for _, lane in sorted(self._lanes.items())
                if lane.ready and not lane.dead and lane.addr is not None]

    def cpu_seconds(self) -> float:
        return self._dead_cpu_s + sum(lane.cpu_s for lane in list(self._lanes.values()) if not lane.dead)

    def live_cpu_seconds(self) -> float:
        """CPU of the lanes running now (as last reported), less what went to
        serving peers (reported through `on_served`): what a meter of the node
        adds to its own. Dead lanes are left out: once reaped they are in
        the node's children times (os.times) already."""
        return sum(lane.cpu_s - lane.serve_cpu_s for lane in list(self._lanes.values()) if not lane.dead)

    def served_bytes(self) -> int:
        return self._dead_served + sum(lane.served_bytes for lane in self._lanes.values() if not lane.dead)

    def describe(self) -> list[dict[str, Any]]:
        return [{"index": lane.index, "pid": lane.pid, "addr": str(lane.addr) if lane.addr else None,
                 "jobs": lane.jobs, "bytes": lane.bytes, "inflight": lane.inflight,
                 "served_bytes": lane.served_bytes,
                 "cpu_s": round(lane.cpu_s, 3)}
                for _, lane in sorted(self._lanes.items()) if lane.ready and not lane.dead]

    async def run_job(self, job: LaneJob) -> LaneResult:
        box: list[LaneResult] = []
        event = trio.Event()

        def done(result: LaneResult) -> None:
            box.append(result)
            event.set()

        ticket = self.submit(job, done)
        try:
            await event.wait()
        finally:
            if not box:
                ticket.cancel()  # cancelled: a job not sent yet never is
        return box[0]

    def submit(self, job: LaneJob, done: JobDone) -> _Pending:
        msg = C.Job.from_job(next(self._job_ids), job)  # a job breaking a bound is the caller's bug: raises
        pending = _Pending(job, msg, done, trio.current_time() + job.timeout)
        self._queue.append(pending)
        self._place()
        self._watch.set()
        return pending

    def _place(self) -> None:
        """Queued jobs, in order, to lanes with room; each lane's writer sends its share at once."""
        now: float | None = None
        while self._queue:
            pending = self._queue[0]
            if pending.cancelled:
                self._queue.popleft()
                continue
            lane = self._choose(pending.job)
            if lane is None:
                return  # no room anywhere: an answer or a new lane calls us again
            self._queue.popleft()
            if now is None:
                now = trio.current_time()
            pending.answer_by = now + pending.job.timeout + RESULT_GRACE_S
            lane.pending[pending.msg.job_id] = pending
            lane.inflight += 1
            lane.outbox.append(pending)
            lane.outbox_ready.set()

    def _choose(self, job: LaneJob) -> _Lane | None:
        live = self._live
        least: _Lane | None = None
        for lane in live:
            if lane.inflight < self.max_jobs_per_lane and (least is None or lane.inflight < least.inflight):
                least = lane
        if least is None or job.holder is None:
            return least
        preferred = live[int.from_bytes(job.holder.multihash[-4:], "big") % len(live)]
        if preferred.inflight < self.max_jobs_per_lane and preferred.inflight <= least.inflight + AFFINITY_SLACK:
            return preferred
        return least

    def _finish(self, lane: _Lane, pending: _Pending, result: LaneResult, answered: bool = True) -> None:
        """`pending` left `lane` (answered, timed out, the lane died): count it, tell its caller."""
        lane.inflight -= 1
        if answered:
            lane.jobs += 1
            if result.outcome is Outcome.OK:
                lane.bytes += result.size
                job = pending.job
                if job.store and job.holder is not None and self.on_stored is not None:
                    self.on_stored(job.cid)
        self._deliver(pending, result)
        if self._queue:
            self._place()

    @staticmethod
    def _deliver(pending: _Pending, result: LaneResult) -> None:
        if pending.cancelled or pending.delivered:
            return
        pending.delivered = True
        try:
            pending.done(result)
        except Exception:  # a caller's bug must not end the lane's reader
            log.exception("lanes: a job's done callback failed")

    def _set_live(self) -> None:
        self._live = [lane for _, lane in sorted(self._lanes.items()) if lane.ready and not lane.dead]

    async def _watchdog(self) -> None:
        """Jobs past a deadline: TIMEOUT if a lane did not answer, LANE_DIED if none took it."""
        while True:
            if not self._queue and not any(lane.pending for lane in self._lanes.values()):
                await self._watch.wait()
                self._watch = trio.Event()
                continue
            await trio.sleep(WATCH_S)
            self._expire(trio.current_time())

    def _expire(self, now: float) -> None:
        # The queue first: a lane's room freed by a timeout below is not for a job already too late.
        if any(p.pick_by <= now or p.cancelled for p in self._queue):
            late = [p for p in self._queue if p.pick_by <= now]
            self._queue = deque(p for p in self._queue if p.pick_by > now and not p.cancelled)
            for pending in late:
                self._deliver(pending, LaneResult(
                    Outcome.LANE_DIED, detail=f"no lane could take the job within {pending.job.timeout:g}s"))
        for lane in list(self._lanes.values()):
            for job_id, pending in [(i, p) for i, p in lane.pending.items() if p.answer_by <= now]:
                del lane.pending[job_id]
                self._finish(lane, pending, LaneResult(Outcome.TIMEOUT,
                                                       detail=f"lane {lane.index} did not answer in time"),
                             answered=False)

    # -- processes -----------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every lane, report ready, keep them running until cancelled; then stop them all."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watchdog)
            async with trio.open_nursery() as starting:
                for index in range(self.count):
                    starting.start_soon(nursery.start, self._supervise, index)
            task_status.started()

    async def _supervise(self, index: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run lane `index` for ever: start it, serve its channel, replace it when it dies."""
        delay = RESTART_DELAY_S
        first = True
        while True:
            try:
                lane = await self._start(index)
            except (LaneError, OSError) as exc:
                if first:
                    raise LaneError(f"lane {index} did not start: {exc}") from None
                log.warning("lane %d did not restart (%s); trying again in %gs", index, exc, delay)
                await trio.sleep(delay)
                delay = min(MAX_RESTART_DELAY_S, delay * 2)
                continue
            if first:
                task_status.started()
                first = False
            else:
                self.restarts += 1
                log.warning("lane %d replaced: pid %d at %s", index, lane.pid, lane.addr)
            started = trio.current_time()
            try:
                await self._serve(lane)
            finally:
                await self._retire(lane)
            log.warning("lane %d (pid %d) died (exit %s); starting a new one", index, lane.pid,
                        lane.process.returncode)
            # A lane that dies at once again and again waits longer each time.
            delay = RESTART_DELAY_S if trio.current_time() - started > 10 else min(MAX_RESTART_DELAY_S, delay * 2)
            await trio.sleep(delay)

    async def _start(self, index: int) -> _Lane:
        """Spawn lane `index`, configure it, wait for its Ready."""
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):
            _widen(end)
        try:
            process = await self._spawn(index, theirs)
        except BaseException:
            ours.close()
            raise
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
        lane = _Lane(index, process, stream, process.pid)
        try:
            await lane.send(C.Config(str(self.repo), self.host, self._ports.get(index, 0), self.peer_id.multihash,
                                     self.swarm_key.psk if self.swarm_key is not None else None,
                                     self.send_budget, float(self.stall_timeout), index))
            with trio.fail_after(READY_TIMEOUT_S):
                ready = await self._receive_ready(lane)
            lane.addr = Multiaddr.parse(ready.addr)
        except BaseException as exc:
            with trio.CancelScope(shield=True):
                await self._stop_process(lane)
            if isinstance(exc, (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError,
                                ControlProtocolError)):
                raise LaneError(f"{type(exc).__name__}: {exc} (exit status {process.returncode})") from None
            raise
        self._ports[index] = lane.addr.port
        lane.ready = True
        self._lanes[index] = lane
        self._set_live()
        self._place()
        return lane

    async def _spawn_process(self, index: int, channel: socket.socket) -> LaneProcess:
        """The real spawner: `python -m shoal.p2p.lanes.worker --fd N` holding `channel`."""
        try:
            # stdout/stderr are the node's: a lane's log lines go where the node's go.
            return await trio.lowlevel.open_process(
                [self.python, "-m", "shoal.p2p.lanes.worker", "--fd", str(channel.fileno())],
                pass_fds=(channel.fileno(),), stdin=subprocess.DEVNULL,
            )
        finally:
            channel.close()  # the lane holds its end: its death (or ours) is EOF on the other

    async def _receive_ready(self, lane: _Lane) -> C.Ready:
        while True:
            data = await lane.stream.receive_some(64 * 1024)
            if not data:
                raise LaneError("the lane exited before it was ready (see its error above)")
            msgs = lane.decoder.feed(data)
            if not msgs:
                continue
            first = msgs[0]
            if not isinstance(first, C.Ready):
                raise ControlProtocolError("a lane must answer Config with Ready")
            for m in msgs[1:]:
                if not isinstance(m, C.CpuStats):
                    raise ControlProtocolError(f"a lane sent {type(m).__name__} before the node saw it ready")
                self._on_stats(lane, m)
            return first

    async def _serve(self, lane: _Lane) -> None:
        """Run lane's writer and reader until the channel ends (the lane died or broke the protocol)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, lane)
            await self._read(lane)
            nursery.cancel_scope.cancel()

    async def _write(self, lane: _Lane) -> None:
        """Send the jobs placed on `lane`: all those placed since the last send in one write."""
        while True:
            await lane.outbox_ready.wait()
            lane.outbox_ready = trio.Event()
            placed, lane.outbox = lane.outbox, []
            msgs = [p.msg for p in placed if not p.cancelled]
            if len(msgs) < len(placed):  # given up before it was sent: never sent, its room is free
                for pending in placed:
                    if pending.cancelled and lane.pending.pop(pending.msg.job_id, None) is not None:
                        lane.inflight -= 1
                self._place()
            if not msgs:
                continue
            data = b"".join(C.encode(msg) for msg in msgs)
            try:
                async with lane.send_lock:
                    await lane.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                # The lane is gone: end the reader too, which retires the lane
                # (its jobs fail LANE_DIED, a replacement starts).
                await trio.aclose_forcefully(lane.stream)
                return

    async def _read(self, lane: _Lane) -> None:
        """Read lane's control channel until it ends."""
        decoder = lane.decoder
        while True:
            try:
                data = await lane.stream.receive_some(CONTROL_READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            if not data:
                return
            try:
                msgs = decoder.feed(data)
            except ControlProtocolError as exc:
                log.error("lane %d broke the control protocol: %s", lane.index, exc)
                return
            for msg in msgs:
                if isinstance(msg, C.Result):
                    pending = lane.pending.pop(msg.job_id, None)
                    if pending is not None:  # (else late: timed out already)
                        self._finish(lane, pending, msg.to_result())
                elif isinstance(msg, C.AdmitRequest):
                    allowed = self._admits(msg.peer)
                    try:
                        await lane.send(C.AdmitAnswer(msg.req_id, allowed))
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        return
                elif isinstance(msg, C.CpuStats):
                    self._on_stats(lane, msg)
                else:
                    log.error("lane %d sent an unexpected %s", lane.index, type(msg).__name__)
                    return

    def _admits(self, raw: bytes) -> bool:
        try:
            peer = PeerId.from_bytes(raw)
        except Exception:  # InvalidMultiaddr and kin: not a peer id, not admitted
            return False
        return peer != self.peer_id and self.admits(peer)

    def _on_stats(self, lane: _Lane, msg: C.CpuStats) -> None:
        cpu = max(0.0, msg.cpu_s - lane.cpu_s)
        served = max(0, msg.served_bytes - lane.served_bytes)
        fetched = max(0, msg.fetched_bytes - lane.fetched_bytes)
        lane.cpu_s = max(lane.cpu_s, msg.cpu_s)
        lane.served_bytes, lane.fetched_bytes = msg.served_bytes, msg.fetched_bytes
        if served:
            # One process serves and fetches: its CPU of the interval is
            # shared by bytes moved (hashing, Noise and copies scale with them).
            part = cpu * served / (served + fetched)
            lane.serve_cpu_s += part
            if self.on_served is not None:
                self.on_served(served, part)

    async def _retire(self, lane: _Lane) -> None:
        """The lane is gone or going: fail its jobs, keep its counts, make sure the process is reaped."""
        lane.dead = True
        self._dead_cpu_s += lane.cpu_s
        self._dead_served += lane.served_bytes
        self._dead_fetched += lane.fetched_bytes
        if self._lanes.get(lane.index) is lane:
            del self._lanes[lane.index]
        self._set_live()
        pending, lane.pending, lane.outbox = list(lane.pending.values()), {}, []
        for job in pending:
            self._finish(lane, job, LaneResult(Outcome.LANE_DIED, detail=f"lane {lane.index} (pid {lane.pid}) died"),
                         answered=False)
        with trio.CancelScope(shield=True):
            await self._stop_process(lane)

    async def _stop_process(self, lane: _Lane) -> None:
        """Close the channel (the lane exits on EOF), wait a little, then kill; always reap."""
        await trio.aclose_forcefully(lane.stream)
        with trio.move_on_after(STOP_GRACE_S):
            await lane.process.wait()
        if lane.process.returncode is None:
            log.warning("lane %d (pid %d) did not stop in %gs: killing it", lane.index, lane.pid, STOP_GRACE_S)
            lane.process.kill()
            await lane.process.wait()
