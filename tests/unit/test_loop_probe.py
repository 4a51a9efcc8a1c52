"""The event-loop latency probe: bounded bookkeeping, and a real stall is seen."""

from __future__ import annotations

import time

import pytest
import trio

from shoal.p2p.net.loop_probe import LoopProbe, StallWindow


def test_window_keeps_the_worst_of_the_last_minute_only() -> None:
    w = StallWindow(window=60)
    w.record(100.0, 0.01)
    w.record(100.5, 0.9)  # the worst, at t=100
    w.record(130.0, 0.2)
    assert w.worst(130.0) == 0.9
    assert w.worst(160.9) == 0.9  # its one-second bucket is still within the window
    assert w.worst(162.0) == 0.2  # 0.9 aged out
    assert w.worst(200.0) == 0.0
    assert w.worst_ever == 0.9 and w.samples == 3


def test_window_memory_is_bounded_by_its_length() -> None:
    w = StallWindow(window=60)
    for i in range(100_000):
        w.record(i * 0.05, 0.001)
    assert len(w._buckets) <= 62


def test_negative_lateness_counts_as_none() -> None:
    w = StallWindow()
    w.record(5.0, -0.002)
    assert w.worst(5.0) == 0.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        StallWindow(window=0)
    with pytest.raises(ValueError):
        LoopProbe(interval=0)


async def test_probe_sees_a_blocking_call_on_the_loop() -> None:
    probe = LoopProbe(interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run)
        await trio.sleep(0.05)
        quiet = probe.report()["worst_stall_s"]
        time.sleep(0.3)  # the kind of call the node must never make on its loop
        await trio.sleep(0.05)
        report = probe.report()
        nursery.cancel_scope.cancel()
    assert report["worst_stall_s"] >= 0.25
    assert report["samples"] > 5
    assert quiet < report["worst_stall_s"]


async def test_report_counts_a_stall_still_in_progress() -> None:
    probe = LoopProbe(interval=0.01)
    async with trio.open_nursery() as nursery:
        await nursery.start(probe.run)
        await trio.sleep(0.03)
        time.sleep(0.2)
        report = probe.report()  # before the probe task could run again
        nursery.cancel_scope.cancel()
    assert report["worst_stall_s"] >= 0.15
