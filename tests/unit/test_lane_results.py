"""A lane sends its finished jobs' Results to the node several per write
(shoal.p2p.lanes.worker RESULT_BATCH): the node's main process then wakes
once per batch, not once per block. A Result is never held longer than
RESULT_LINGER_S, and the last jobs' go at once."""

from __future__ import annotations

import hashlib
from typing import Any

import trio

from shoal.p2p.lanes import control as C
from shoal.p2p.lanes.api import LaneJob, LaneResult, Outcome
from shoal.p2p.lanes.worker import RESULT_BATCH, Lane
from shoal.store.ipld.cid import RAW, cid_for_digest


class Control:
    """The control channel's node end: every write, decoded."""

    def __init__(self) -> None:
        self.writes: list[list[C.ControlMessage]] = []
        self._decoder = C.ControlDecoder()

    async def send_all(self, data: Any) -> None:
        self.writes.append(self._decoder.feed(bytes(data)))


def _lane(jobs_running: int) -> tuple[Lane, Control]:
    lane = Lane.__new__(Lane)  # no repo, identity or listener: only the job/result path runs
    control = Control()
    lane.control = control  # type: ignore[assignment]
    lane._send_lock = trio.Lock()
    lane._results = []
    lane._results_waiting = trio.Event()
    lane._results_due = trio.Event()
    lane._jobs = jobs_running

    async def run_job(job: LaneJob) -> LaneResult:
        return LaneResult(Outcome.OK, 10)  # (no checkpoint: jobs end in one turn)

    lane.run_job = run_job  # type: ignore[method-assign]
    return lane, control


def _job(n: int) -> C.Job:
    cid = cid_for_digest(RAW, hashlib.sha256(str(n).encode()).digest())
    return C.Job(n, bytes(cid), None, (), (), False, False, 5.0)


async def test_results_of_one_turn_go_in_one_write_and_the_last_ones_at_once() -> None:
    lane, control = _lane(jobs_running=2 * RESULT_BATCH)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lane._send_results)
        for n in range(1, RESULT_BATCH + 1):  # a batch: due when the batch is full
            await lane._job_task(_job(n))
        with trio.fail_after(5):
            while len(control.writes) < 1:
                await trio.sleep(0.001)
        for n in range(RESULT_BATCH + 1, 2 * RESULT_BATCH + 1):  # the last jobs of this lane
            await lane._job_task(_job(n))
        with trio.fail_after(5):
            while sum(len(w) for w in control.writes) < 2 * RESULT_BATCH:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert [len(w) for w in control.writes] == [RESULT_BATCH, RESULT_BATCH]
    results = [m for w in control.writes for m in w]
    assert all(isinstance(m, C.Result) and m.outcome == "ok" for m in results)
    assert sorted(m.job_id for m in results if isinstance(m, C.Result)) == list(range(1, 2 * RESULT_BATCH + 1))


async def test_a_lone_result_is_not_held_for_ever() -> None:
    lane, control = _lane(jobs_running=10 * RESULT_BATCH)  # many more still running
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lane._send_results)
        await lane._job_task(_job(1))
        with trio.fail_after(5):  # RESULT_LINGER_S, not until the others end
            while not control.writes:
                await trio.sleep(0.001)
        nursery.cancel_scope.cancel()
    assert [[m.job_id for m in w if isinstance(m, C.Result)] for w in control.writes] == [[1]]
