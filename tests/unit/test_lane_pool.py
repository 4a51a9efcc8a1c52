"""LaneProcessPool's logic with fake lanes (a trio task per lane speaking the
control protocol over the real socketpair): readiness, dispatch (affinity by
holder, least loaded, the per-lane cap), a dead lane's jobs failing with
LANE_DIED and its replacement on the same port, CPU over dead and live lanes,
admission answers, and every lane stopped when the pool is cancelled."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path
from typing import Any

import pytest
import trio

from shoal.p2p.errors import LaneError
from shoal.p2p.lanes import control as C
from shoal.p2p.lanes.api import LaneJob, Outcome
from shoal.p2p.lanes.pool import AFFINITY_SLACK, LaneProcessPool
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.store.ipld.cid import RAW, CID, cid_for_digest

ME = Identity.generate().peer_id


def cid(n: int) -> CID:
    return cid_for_digest(RAW, hashlib.sha256(str(n).encode()).digest())


class FakeLane:
    """One fake lane process: answers Config with Ready, holds jobs until released."""

    def __init__(self, index: int, pid: int, channel: socket.socket, pool_fakes: "Fakes") -> None:
        self.index, self.pid, self.fakes = index, pid, pool_fakes
        self.scope = trio.CancelScope()
        self.stream = trio.SocketStream(trio.socket.from_stdlib_socket(channel))
        self.returncode: int | None = None
        self.exited = trio.Event()
        self.config: C.Config | None = None
        self.jobs: list[C.Job] = []
        self.admitted: dict[int, bool] = {}
        self.cpu = 0.0
        self.killed = False
        self.send_lock = trio.Lock()  # the test and the fake's own reader both send, as a lane's tasks do

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        self.killed = True
        self.die(-9)

    def die(self, code: int) -> None:
        if self.returncode is None:
            self.returncode = code
            self.exited.set()
            self.scope.cancel()

    async def run(self) -> None:
        try:
            with trio.CancelScope() as self.scope:
                decoder = C.ControlDecoder()
                try:
                    while True:
                        data = await self.stream.receive_some(65536)
                        if not data:
                            break  # the pool closed the channel: exit like a lane does
                        for msg in decoder.feed(data):
                            await self.on(msg)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
        finally:
            self.stream.socket.close()
            if self.returncode is None:
                self.returncode = 0
                self.exited.set()

    async def send(self, msg: C.ControlMessage) -> None:
        async with self.send_lock:
            await self.stream.send_all(C.encode(msg))

    async def on(self, msg: C.ControlMessage) -> None:
        if isinstance(msg, C.Config):
            self.config = msg
            if self.fakes.fail_start:
                self.die(1)
                return
            port = msg.port or 40000 + self.pid
            await self.send(C.Ready(f"/ip4/127.0.0.1/tcp/{port}", self.pid))
            await self.send(C.CpuStats(self.cpu, 0, 0))
        elif isinstance(msg, C.Job):
            self.jobs.append(msg)
            if self.fakes.auto_answer:
                await self.answer(msg)
        elif isinstance(msg, C.AdmitAnswer):
            self.admitted[msg.req_id] = msg.allowed

    async def answer(self, job: C.Job, outcome: Outcome = Outcome.OK) -> None:
        await self.send(C.Result(job.job_id, outcome.value, 10, None, ""))

    async def report_cpu(self, cpu_s: float) -> None:
        self.cpu = cpu_s
        await self.send(C.CpuStats(cpu_s, 0, 0))


class Fakes:
    """The spawner: every lane it started, by index (latest last)."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self.nursery = nursery
        self.started: list[FakeLane] = []
        self.auto_answer = True
        self.fail_start = False

    async def spawn(self, index: int, channel: socket.socket) -> FakeLane:
        lane = FakeLane(index, 1000 + len(self.started), channel, self)
        self.started.append(lane)
        self.nursery.start_soon(lane.run)
        return lane

    def live(self, index: int) -> FakeLane:
        return [f for f in self.started if f.index == index and f.returncode is None][-1]


def make_pool(fakes: Fakes, count: int = 2, **kw: Any) -> LaneProcessPool:
    return LaneProcessPool(count, repo=Path("/tmp"), peer_id=ME, host="127.0.0.1", spawn=fakes.spawn,  # type: ignore[arg-type]
                           **{"admits": lambda p: True, **kw})


async def start_manual_pool(nursery: trio.Nursery, count: int = 1,
                            **kw: Any) -> tuple[Fakes, LaneProcessPool]:
    """A running pool over fake lanes that answer only when a test tells them to."""
    fakes = Fakes(nursery)
    fakes.auto_answer = False
    pool = make_pool(fakes, count, **kw)
    await nursery.start(pool.run)
    return fakes, pool


def job(n: int, holder: PeerId | None) -> LaneJob:
    return LaneJob(cid(n), holder, (), (), timeout=5.0)


async def wait_for(predicate: Any) -> None:
    with trio.fail_after(5):
        while not predicate():
            await trio.sleep(0.01)


async def test_ready_once_every_lane_said_where_it_listens() -> None:
    async with trio.open_nursery() as nursery:
        fakes = Fakes(nursery)
        pool = make_pool(fakes, 3)
        await nursery.start(pool.run)
        assert pool.size == 3 and len(fakes.started) == 3
        by_index = sorted(fakes.started, key=lambda f: f.index)
        assert [str(a) for a in pool.addrs()] == [f"/ip4/127.0.0.1/tcp/{40000 + f.pid}" for f in by_index]
        assert [d["pid"] for d in pool.describe()] == [f.pid for f in by_index]
        assert all(f.config is not None and f.config.index == f.index and f.config.port == 0 for f in fakes.started)
        result = await pool.run_job(job(1, None))
        assert result.outcome is Outcome.OK and result.size == 10
        nursery.cancel_scope.cancel()


async def test_jobs_stay_with_the_holders_lane_until_it_is_slack_ahead() -> None:
    async with trio.open_nursery() as nursery:
        fakes, pool = await start_manual_pool(nursery, 2)
        holder = Identity.generate().peer_id
        for n in range(AFFINITY_SLACK + 1):
            nursery.start_soon(pool.run_job, job(n, holder))
        await wait_for(lambda: sum(len(f.jobs) for f in fakes.started) == AFFINITY_SLACK + 1)
        busy = [f for f in fakes.started if f.jobs]
        assert len(busy) == 1  # all on the holder's lane: its connections are warm
        nursery.start_soon(pool.run_job, job(99, holder))
        await wait_for(lambda: all(f.jobs for f in fakes.started))  # the next one goes to the idle lane
        nursery.cancel_scope.cancel()


async def test_a_lane_runs_at_most_its_cap_and_callers_wait() -> None:
    async with trio.open_nursery() as nursery:
        fakes, pool = await start_manual_pool(nursery, max_jobs_per_lane=3)
        done: list[Outcome] = []

        async def one(n: int) -> None:
            done.append((await pool.run_job(job(n, None))).outcome)

        for n in range(5):
            nursery.start_soon(one, n)
        lane = fakes.live(0)
        await wait_for(lambda: len(lane.jobs) == 3)
        await trio.sleep(0.05)
        assert len(lane.jobs) == 3  # the other two wait for room
        for j in list(lane.jobs):
            await lane.answer(j)
        await wait_for(lambda: len(lane.jobs) == 5)
        for j in lane.jobs[3:]:
            await lane.answer(j)
        await wait_for(lambda: len(done) == 5)
        assert set(done) == {Outcome.OK}
        nursery.cancel_scope.cancel()


async def test_a_dead_lane_fails_its_jobs_and_is_replaced_on_its_port() -> None:
    async with trio.open_nursery() as nursery:
        fakes, pool = await start_manual_pool(nursery)
        first = fakes.live(0)
        await first.report_cpu(2.5)
        await wait_for(lambda: pool.cpu_seconds() == 2.5)
        results: list[Any] = []

        async def one(n: int) -> None:
            results.append(await pool.run_job(job(n, None)))

        for n in range(3):
            nursery.start_soon(one, n)
        await wait_for(lambda: len(first.jobs) == 3)
        first.die(-9)  # SIGKILL: the channel closes with it
        await wait_for(lambda: len(results) == 3)
        assert {r.outcome for r in results} == {Outcome.LANE_DIED}
        await wait_for(lambda: pool.size == 1 and len(fakes.started) == 2)
        second = fakes.live(0)
        assert second.pid != first.pid
        assert second.config is not None and second.config.port == 40000 + first.pid  # peers know that address
        assert [str(a) for a in pool.addrs()] == [f"/ip4/127.0.0.1/tcp/{40000 + first.pid}"]
        await second.report_cpu(1.0)
        await wait_for(lambda: pool.live_cpu_seconds() == 1.0)
        assert pool.cpu_seconds() == 3.5  # the dead lane's CPU stays counted
        fakes.auto_answer = True
        assert (await pool.run_job(job(7, None))).outcome is Outcome.OK
        nursery.cancel_scope.cancel()


async def test_lane_cpu_is_shared_between_serving_and_jobs_by_bytes() -> None:
    served: list[tuple[int, float]] = []
    async with trio.open_nursery() as nursery:
        fakes = Fakes(nursery)
        pool = make_pool(fakes, 1, on_served=lambda n, cpu: served.append((n, cpu)))
        await nursery.start(pool.run)
        lane = fakes.live(0)
        await lane.send(C.CpuStats(1.0, 0, 0))  # start-up: no bytes moved, nothing served
        await lane.send(C.CpuStats(5.0, 300, 100))  # 4 CPU-s: 3/4 of the bytes were served
        await wait_for(lambda: pool.cpu_seconds() == 5.0)
        assert served == [(300, 3.0)]
        assert pool.live_cpu_seconds() == 2.0  # what a meter in the node may add: not the serving
        assert pool.served_bytes() == 300
        nursery.cancel_scope.cancel()


async def test_admission_questions_get_the_nodes_answer() -> None:
    allowed = Identity.generate().peer_id
    async with trio.open_nursery() as nursery:
        fakes = Fakes(nursery)
        pool = make_pool(fakes, 1, admits=lambda p: p == allowed)
        await nursery.start(pool.run)
        lane = fakes.live(0)
        await lane.send(C.AdmitRequest(1, allowed.multihash))
        await lane.send(C.AdmitRequest(2, Identity.generate().peer_id.multihash))
        await lane.send(C.AdmitRequest(3, ME.multihash))  # ourselves: never
        await lane.send(C.AdmitRequest(4, b"\x00\x03abc"))  # not a peer id
        await wait_for(lambda: len(lane.admitted) == 4)
        assert lane.admitted == {1: True, 2: False, 3: False, 4: False}
        nursery.cancel_scope.cancel()


async def test_cancelling_the_pool_stops_every_lane() -> None:
    async with trio.open_nursery() as outer:
        fakes = Fakes(outer)  # the fake processes outlive the pool, as real ones could
        async with trio.open_nursery() as inner:
            await inner.start(make_pool(fakes, 2).run)
            inner.cancel_scope.cancel()
        # pool.run has returned: it closed each channel and waited for each process.
        assert len(fakes.started) == 2
        assert all(f.returncode == 0 for f in fakes.started)  # exited on EOF...
        assert not any(f.killed for f in fakes.started)  # ...so none needed a kill
        outer.cancel_scope.cancel()


async def test_a_lane_that_cannot_start_fails_the_start() -> None:
    with pytest.raises(BaseExceptionGroup) as info:
        async with trio.open_nursery() as nursery:
            fakes = Fakes(nursery)
            fakes.fail_start = True
            await nursery.start(make_pool(fakes, 2).run)
    assert info.group_contains(LaneError)


async def test_jobs_submitted_together_go_to_a_lane_in_one_write() -> None:
    async with trio.open_nursery() as nursery:
        fakes, pool = await start_manual_pool(nursery)
        lane = fakes.live(0)
        writes: list[bytes] = []
        stream = pool._lanes[0].stream
        send_all = stream.send_all

        async def counting(data: Any) -> None:
            writes.append(bytes(data))
            await send_all(data)

        stream.send_all = counting  # type: ignore[method-assign]
        answers: list[Outcome] = []
        for n in range(5):  # one turn of the loop, as the laned get refills its free slots
            pool.submit(job(n, None), lambda r: answers.append(r.outcome))
        assert answers == []  # never from within submit
        await wait_for(lambda: len(lane.jobs) == 5)
        assert len(writes) == 1
        assert [j.cid for j in lane.jobs] == [bytes(cid(n)) for n in range(5)]
        for j in lane.jobs:
            await lane.answer(j)
        await wait_for(lambda: len(answers) == 5)
        assert answers == [Outcome.OK] * 5
        nursery.cancel_scope.cancel()


async def test_a_job_given_up_before_it_is_sent_is_never_sent() -> None:
    async with trio.open_nursery() as nursery:
        fakes, pool = await start_manual_pool(nursery, max_jobs_per_lane=1)
        lane = fakes.live(0)
        answers: list[Outcome] = []
        pool.submit(job(1, None), lambda r: answers.append(r.outcome))
        queued = pool.submit(job(2, None), lambda r: answers.append(r.outcome))  # waits for room
        placed = pool.submit(job(3, None), lambda r: answers.append(r.outcome))
        queued.cancel()
        await wait_for(lambda: len(lane.jobs) == 1)
        await lane.answer(lane.jobs[0])
        await wait_for(lambda: len(lane.jobs) == 2)
        assert lane.jobs[1].cid == bytes(cid(3))  # job 2 was skipped
        placed.cancel()  # sent already: it runs, but nobody hears of it
        await lane.answer(lane.jobs[1])
        await wait_for(lambda: pool.describe()[0]["inflight"] == 0)
        assert answers == [Outcome.OK]
        nursery.cancel_scope.cancel()


async def test_deadlines_a_lane_that_does_not_answer_and_no_lane_with_room(monkeypatch: pytest.MonkeyPatch) -> None:
    import shoal.p2p.lanes.pool as pool_module
    monkeypatch.setattr(pool_module, "RESULT_GRACE_S", 0.0)
    monkeypatch.setattr(pool_module, "WATCH_S", 0.02)
    async with trio.open_nursery() as nursery:
        fakes, pool = await start_manual_pool(nursery, max_jobs_per_lane=1)
        quick = LaneJob(cid(1), None, (), (), timeout=0.1)
        results = await run_all(pool, [quick, quick])
        assert sorted(r.outcome.value for r in results) == ["lane_died", "timeout"]
        died = next(r for r in results if r.outcome is Outcome.LANE_DIED)
        assert "no lane could take the job" in died.detail
        assert pool.describe()[0]["inflight"] == 0  # the unanswered job's room is free again
        nursery.cancel_scope.cancel()


async def run_all(pool: LaneProcessPool, jobs: list[LaneJob]) -> list[Any]:
    results: list[Any] = []
    async with trio.open_nursery() as nursery:
        for j in jobs:
            async def one(j: LaneJob = j) -> None:
                results.append(await pool.run_job(j))
            nursery.start_soon(one)
    return results
