"""What an audit result means for a replica, when to repair, and how fast. Pure.

The rules (DESIGN.md, "Reputation"), learned from storage networks whose
users were disqualified for a bad afternoon:

- An invalid proof (wrong segments, bad Merkle path, bad signature, or the
  holder admitting it lacks the data) is a *proven loss*: the replica is
  `lost` at once and replaced at once.
- A timeout or an unreachable holder is *not* a failure by itself: the
  replica is `failed` (suspect, still counted) until it misses
  `MAX_TIMEOUTS_IN_A_ROW` = 3 audits in a row; then it is `lost` for
  replication purposes (a replacement is placed) without a proven-loss mark.
  If it comes back and passes `READMIT_PASSES` = 3 audits in a row, it is
  `ok` again: one outage never disqualifies a peer for good, and one lucky
  answer does not re-admit it either.
- A holder that answers ERROR busy is alive and chooses not to prove. The
  auditor retries within the audit (shoal.p2p.replication.audit); an audit that still ends
  busy counts as a miss (like a timeout), and `MAX_BUSY_IN_A_ROW` = 3 such
  audits with no pass between them are a proven loss: otherwise "busy"
  would be a way to hide a loss that NOT_FOUND would admit.
- Timeouts and proven losses are scored apart (peers.Reputation counts
  `audit_timeouts` and `proven_losses` separately).
- Repairs draw from a token bucket, so a churn burst (many peers leaving at
  once) becomes a steady trickle of repairs, not a storm.
- When the owner is gone, the live holder with the lowest peer id (bytes
  order) takes the owner's duties for the objects they share (`deputy`):
  every holder computes the same answer from the same holder list, so
  exactly one of them acts, and none of them needs to talk to the others
  first.
- Giving replicas back (releases): a release is owed until the holder
  *answers* — any answer, since asking again cannot change a refusal — and
  an unanswered one is retried with capped exponential backoff
  (`release_delay`), like a peer redial, never abandoned. Lowering the
  count gives back the lowest-ranked copies first (`surplus`).

Nothing here does I/O or reads clocks: callers pass `now`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Iterable, Sequence

from shoal.p2p.secure.identity import PeerId

__all__ = [
    "State", "Outcome", "Replica", "Verdict", "MAX_TIMEOUTS_IN_A_ROW", "MAX_BUSY_IN_A_ROW", "READMIT_PASSES",
    "after_audit",
    "after_store", "counts_as_copy", "repairs_needed", "TokenBucket", "deputy", "OwnerWatch",
    "release_delay", "release_settled", "surplus", "RELEASE_RETRY_BASE_S", "RELEASE_RETRY_MAX_S",
]

MAX_TIMEOUTS_IN_A_ROW = 3
MAX_BUSY_IN_A_ROW = 3
READMIT_PASSES = 3
RELEASE_RETRY_BASE_S = 1.0
RELEASE_RETRY_MAX_S = 600.0  # as peer redials: a holder back from an outage waits at most 10 min

# ERROR codes (shoal.p2p.wire.messages.ErrorCode) that answer a release for good:
# MALFORMED, UNKNOWN_TYPE (an older holder), NOT_FOUND (no agreement left),
# REFUSED (we are not its owner, says the holder). Anything else — busy,
# internal, unknown codes — and no answer at all are worth another try.
_RELEASE_FINAL_CODES = frozenset({1, 3, 6, 7})


class State(str, Enum):
    PENDING = "pending"  # store request sent, not yet answered
    OK = "ok"  # agreement signed and the last audit (if any) passed
    FAILED = "failed"  # refused the store request, or missed 1-2 audits in a row
    LOST = "lost"  # proven loss, or 3 audits missed in a row: replaced


class Outcome(str, Enum):
    OK = "ok"
    INVALID = "invalid"  # proven loss
    TIMEOUT = "timeout"  # deadline passed, unreachable, connection lost
    BUSY = "busy"  # answered, but only ERROR busy, however often asked within the audit


@dataclass(frozen=True)
class Replica:
    """The owner's view of one holder of one object."""

    state: State = State.PENDING
    timeouts_in_a_row: int = 0
    proven_loss: bool = False
    refused: bool = False  # never took the replica (store request refused)
    busy_in_a_row: int = 0  # audits ended busy since the last pass
    passes_in_a_row: int = 0  # while lost (not proven): passes toward re-admission


@dataclass(frozen=True)
class Verdict:
    """What the caller should do after an event."""

    replica: Replica
    repair: bool = False  # place a replacement now
    score_timeout: bool = False  # Reputation.audit_timeouts += 1
    score_loss: bool = False  # Reputation.proven_losses += 1


def after_audit(r: Replica, outcome: Outcome, max_timeouts: int = MAX_TIMEOUTS_IN_A_ROW,
                max_busy: int = MAX_BUSY_IN_A_ROW, readmit: int = READMIT_PASSES) -> Verdict:
    """Apply one audit result to a replica."""
    if outcome is Outcome.OK:
        if r.proven_loss:
            # A proven loss is final for this replica: the data was gone once,
            # a later pass would only mean it was fetched back from elsewhere.
            return Verdict(r)
        if r.state is State.LOST and r.passes_in_a_row + 1 < readmit:
            return Verdict(replace(r, passes_in_a_row=r.passes_in_a_row + 1, busy_in_a_row=0))
        return Verdict(Replica(State.OK, 0, False, False))
    if outcome is Outcome.INVALID:
        repair = r.state is not State.LOST
        return Verdict(Replica(State.LOST, r.timeouts_in_a_row, True, r.refused, r.busy_in_a_row),
                       repair=repair, score_loss=True)
    n = r.timeouts_in_a_row + 1
    busy = r.busy_in_a_row + (outcome is Outcome.BUSY)
    if outcome is Outcome.BUSY and busy >= max_busy:
        return Verdict(Replica(State.LOST, n, True, r.refused, busy), repair=r.state is not State.LOST,
                       score_loss=True)
    if r.state is State.LOST:
        return Verdict(replace(r, timeouts_in_a_row=n, busy_in_a_row=busy, passes_in_a_row=0), score_timeout=True)
    if n >= max_timeouts:
        return Verdict(Replica(State.LOST, n, r.proven_loss, r.refused, busy), repair=True, score_timeout=True)
    return Verdict(Replica(State.FAILED, n, r.proven_loss, r.refused, busy), score_timeout=True)


def after_store(accepted: bool) -> Verdict:
    """The answer to a store request: accepted -> ok; refused -> failed, replace it."""
    if accepted:
        return Verdict(Replica(State.OK))
    return Verdict(Replica(State.FAILED, refused=True), repair=True)


def counts_as_copy(r: Replica) -> bool:
    """Whether a replica counts toward the wanted number (suspects do, for now)."""
    if r.state in (State.OK, State.PENDING):
        return True
    return r.state is State.FAILED and not r.refused


def repairs_needed(wanted: int, replicas: Iterable[Replica]) -> int:
    """How many new replicas to place so that `wanted` copies exist again."""
    have = sum(1 for r in replicas if counts_as_copy(r))
    return max(0, wanted - have)


class TokenBucket:
    """`rate` repairs per second on average, at most `burst` at once."""

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(float(self.burst), self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def wait_time(self, now: float) -> float:
        """Seconds until the next token (0 if one is available)."""
        self._refill(now)
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


def deputy(live_holders: Sequence[PeerId]) -> PeerId | None:
    """Which live holder runs repairs while the owner is gone (lowest id bytes)."""
    if not live_holders:
        return None
    return min(live_holders, key=lambda p: p.to_bytes())


class OwnerWatch:
    """Counts a holder's consecutive failed checks of an object's owner.

    The owner is `gone` after `threshold` failed checks in a row, and back
    as soon as one check succeeds (then the deputy steps down).
    """

    def __init__(self, threshold: int = MAX_TIMEOUTS_IN_A_ROW) -> None:
        self.threshold = threshold
        self.misses = 0

    def check(self, reachable: bool) -> bool:
        """Record one check; True if the owner is now considered gone."""
        self.misses = 0 if reachable else self.misses + 1
        return self.gone

    @property
    def gone(self) -> bool:
        return self.misses >= self.threshold


def release_delay(attempts: int, jitter: float, base: float = RELEASE_RETRY_BASE_S,
                  cap: float = RELEASE_RETRY_MAX_S) -> float:
    """Seconds before retrying a release that went unanswered `attempts` times.

    `min(cap, base × 2^attempts) × jitter`, jitter drawn by the caller from
    [0.5, 1] so owners that lost the same holder do not retry in lockstep.
    """
    return min(cap, base * 2.0 ** min(max(0, attempts), 62)) * jitter


def release_settled(error_code: int | None) -> bool:
    """Whether an ERROR answer to a release ends it (None: no answer at all)."""
    return error_code is not None and error_code in _RELEASE_FINAL_CODES


def surplus(ranked: Sequence[str], wanted: int) -> list[str]:
    """Which holders to give back when only `wanted` copies are wanted.

    `ranked` lists the copies other than the owner's, lowest rank first;
    the owner's own copy counts as one of the `wanted` and is never here.
    """
    extra = len(ranked) - max(0, wanted - 1)
    return list(ranked[:extra]) if extra > 0 else []
