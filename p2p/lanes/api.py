"""The interface between the node's control plane and its lanes.

Types only: the node (and the laned get/export built on it) hands a LaneJob
to a LanePool and gets a LaneResult back. Per-block failures are outcomes,
never exceptions, so a caller can retry elsewhere without unwinding.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Protocol

from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.store.ipld.cid import CID


MAX_LANES = 64
"""Lane processes one node may run (`--lanes`)."""


@dataclass(frozen=True)
class Sink:
    """Where a lane pwrites a verified block: an EXISTING file, opened O_WRONLY."""

    path: str
    offset: int

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path.startswith("/"):
            raise ValueError("sink path must be an absolute path")
        if not isinstance(self.offset, int) or isinstance(self.offset, bool) or self.offset < 0:
            raise ValueError("sink offset must be a non-negative int")


@dataclass(frozen=True)
class LaneJob:
    """One block for a lane to obtain (from `holder`, or our own store when None)."""

    cid: CID
    holder: PeerId | None
    holder_addrs: tuple[Multiaddr, ...]
    sinks: tuple[Sink, ...]
    want_data: bool = False
    store: bool = True
    timeout: float = 30.0


class Outcome(enum.Enum):
    """How a job ended; everything but OK is a per-block failure the caller may retry."""

    OK = "ok"
    CORRUPT = "corrupt"
    MISSING = "missing"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    LANE_DIED = "lane_died"
    STORE_ERROR = "store_error"


@dataclass(frozen=True)
class LaneResult:
    """The answer to a LaneJob; `data` only when the job asked for it."""

    outcome: Outcome
    size: int = 0
    data: bytes | None = None
    detail: str = ""


JobDone = Callable[[LaneResult], None]
"""Called once, on the trio loop, with a submitted job's result (see `LanePool.submit`)."""


class JobTicket(Protocol):
    """A submitted job, for its caller to give up on."""

    def cancel(self) -> None:
        """The answer is no longer wanted: a job not sent yet never is, and
        `done` is not called (a job a lane runs already finishes there)."""
        ...


class LanePool(Protocol):
    """The node's lanes, as the control plane sees them."""

    @property
    def size(self) -> int:
        """Lanes running (0 when the node runs with --lanes 1)."""
        ...

    def addrs(self) -> list[Multiaddr]:
        """The lanes' listen addresses, as Hello advertises them."""
        ...

    async def run_job(self, job: LaneJob) -> LaneResult:
        """Run `job` on a lane (affinity by holder, least loaded); never raises for a per-block failure."""
        ...

    def submit(self, job: LaneJob, done: JobDone) -> JobTicket:
        """(On the loop, never blocks.) Queue `job` for a lane; `done(result)` is
        called later on the loop (never from within `submit`), also for a
        per-block failure or a timeout. For a caller with many jobs in
        flight: no task and no wake-up of its own per job (`run_job` is this
        plus a wait)."""
        ...

    def cpu_seconds(self) -> float:
        """utime+stime of every lane this pool ever ran, dead ones included."""
        ...

    def describe(self) -> list[dict[str, Any]]:
        """One dict per live lane: pid, addr, jobs, bytes (for /v1/status and tests)."""
        ...
