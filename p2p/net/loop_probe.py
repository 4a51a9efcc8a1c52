"""Event-loop latency probe: how long the trio loop was unable to run a task.

Why: every peer, the control API and the background loops share one trio
thread. Anything that blocks it (a SQLite call waiting on a writer's lock, a
large hash, a slow stat on a loaded disk) stalls all of them at once, and
nothing else in the node would notice. The probe is a task that asks to
wake up every `interval` seconds and records how late it woke: that lateness
is the longest time the loop could not schedule anything. `shoal node status
--json` reports the worst stall over the last minute.

The bookkeeping (`StallWindow`) is pure and takes times as arguments, so it
is unit-tested without a loop; `LoopProbe.run` is the thin trio driver.
Not here: finding *what* blocked the loop (use `python -X importtime`/py-spy
for that); the probe only says that, when and for how long.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import trio

PROBE_INTERVAL_S = 0.05
"""How often the probe asks to run. 50 ms: 20 wake-ups a second cost nothing
measurable, and a stall shorter than this still shows as its lateness."""

WINDOW_S = 60.0
"""The worst stall is reported over this many seconds (one-second buckets)."""


class StallWindow:
    """The largest stall per one-second bucket, kept for the last `window` seconds.

    Memory is bounded by the window (at most `window` + 1 buckets), however
    many samples arrive.
    """

    def __init__(self, window: float = WINDOW_S) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self._buckets: deque[tuple[int, float]] = deque()  # (second, worst stall in it)
        self.samples = 0
        self.worst_ever = 0.0

    def record(self, now: float, stall: float) -> None:
        """One observation at time `now` (seconds, monotonic): the loop was late by `stall`."""
        stall = max(0.0, stall)
        self.samples += 1
        self.worst_ever = max(self.worst_ever, stall)
        second = int(now)
        if self._buckets and self._buckets[-1][0] == second:
            if stall > self._buckets[-1][1]:
                self._buckets[-1] = (second, stall)
        else:
            self._buckets.append((second, stall))
        self._expire(now)

    def worst(self, now: float) -> float:
        """The worst stall whose bucket lies within the last `window` seconds of `now`."""
        self._expire(now)
        return max((stall for _, stall in self._buckets), default=0.0)

    def _expire(self, now: float) -> None:
        oldest = int(now - self.window)
        while self._buckets and self._buckets[0][0] < oldest:
            self._buckets.popleft()


class LoopProbe:
    """Runs in the node's nursery and measures how late the loop wakes it."""

    def __init__(self, interval: float = PROBE_INTERVAL_S, window: float = WINDOW_S) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive")
        self.interval = interval
        self.stalls = StallWindow(window)
        self._last_wake: float | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        while True:
            due = trio.current_time() + self.interval
            await trio.sleep_until(due)
            woke = trio.current_time()
            self._last_wake = woke
            self.stalls.record(woke, woke - due)

    def report(self) -> dict[str, Any]:
        """JSON for `node status`: the worst stall over the window, and what was sampled.

        A probe that has not run for longer than a sample interval is itself
        evidence of a stall still in progress (this report runs on the same
        loop, so that is only possible right after one): count it too.
        """
        now = trio.current_time()
        worst = self.stalls.worst(now)
        if self._last_wake is not None:
            worst = max(worst, now - self._last_wake - self.interval)
        return {
            "worst_stall_s": round(worst, 4),
            "window_s": self.stalls.window,
            "interval_s": self.interval,
            "samples": self.stalls.samples,
            "worst_stall_ever_s": round(self.stalls.worst_ever, 4),
        }
