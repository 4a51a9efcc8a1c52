"""Energy accounting bound to a repo: measure real operations into its ledger.

Why a separate object from the meter and the ledger: the pure parts know
nothing of repos, configs or threads. Here one `EnergyAccount` per open repo
loads the coefficients once (defaults + config.toml `[energy]`), makes sure
the ledger table exists, and turns each measured operation into one small
SQLite transaction. It is thread-safe: the node runs store work in worker
threads and several operations may be measured at once.

Serving blocks happens once per request, far too often for a row (and an
fsync) each, so `serving()` aggregates bytes and CPU energy in memory and
`flush()` (called every few seconds by the node and at shutdown) writes
them as one row per method. Concurrent serves are timed as one busy period
(the meter runs while at least one serve is in flight), so overlapping
requests are not counted twice.

What is not here: the network (peers' summaries arrive as plain dicts) and
deciding which operation is which kind (the callers know that).
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from shoal.store.errors import InvalidInput
from shoal.store.persist.index import Index, register_schema
from shoal.store.energy import ledger
from shoal.store.energy.coefficients import Coefficients, load_coefficients
from shoal.store.energy.meter import (
    DEFAULT_POWERCAP, DEFAULT_PROC, ESTIMATE, EnergyMeter, Measurement,
)

if TYPE_CHECKING:
    from shoal.store.dag.importer import ImportResult
    from shoal.store.persist.maintenance import GcResult
    from shoal.store.persist.repo import Repo

__all__ = ["COMPONENT", "Bytes", "EnergyAccount", "account_for", "read_summary", "put_measured", "gc_measured"]

COMPONENT = "energy"
# Every repo opened after this import gets the ledger table with its schema
# version recorded; EnergyAccount also applies it for repos opened earlier.
register_schema(COMPONENT, ledger.MIGRATIONS)


@dataclass
class Bytes:
    """What an operation touched; the caller adds to it inside `measure`."""

    bytes_hashed: int = 0
    bytes_written: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def add(self, other: "Bytes") -> None:
        self.bytes_hashed += other.bytes_hashed
        self.bytes_written += other.bytes_written
        self.bytes_sent += other.bytes_sent
        self.bytes_received += other.bytes_received

    def any(self) -> bool:
        return bool(self.bytes_hashed or self.bytes_written or self.bytes_sent or self.bytes_received)


@dataclass
class _Pending:
    """Serve totals of one kind not yet in the ledger."""

    joules: float = 0.0
    duration_s: float = 0.0
    method: str = ESTIMATE
    counts: Bytes = field(default_factory=Bytes)

    def as_totals(self) -> ledger.Totals:
        used = self.joules > 0 or self.counts.any()
        return {
            "count": 1 if used else 0, "joules": self.joules, "duration_s": self.duration_s,
            "methods": {self.method: 1} if used else {},
            "bytes_hashed": self.counts.bytes_hashed, "bytes_written": self.counts.bytes_written,
            "bytes_sent": self.counts.bytes_sent, "bytes_received": self.counts.bytes_received,
        }


class EnergyAccount:
    """Measures operations of one repo into its ledger. Open the repo with its lock."""

    def __init__(
        self,
        index: Index,
        overrides: Mapping[str, object] | None = None,
        *,
        coefficients: Coefficients | None = None,
        powercap_root: Path = DEFAULT_POWERCAP,
        proc_root: Path = DEFAULT_PROC,
    ) -> None:
        self.index = index
        self.coefficients = coefficients if coefficients is not None else load_coefficients(overrides)
        self.watts_per_core = self.coefficients.value("cpu_watts_per_core")
        self._powercap_root = powercap_root
        self._proc_root = proc_root
        index.apply_schema(COMPONENT, ledger.MIGRATIONS)
        self._lock = threading.Lock()  # serve aggregation: held for microseconds, never over I/O
        self._flush_lock = threading.Lock()  # a flush's hand-over and write appear atomic to summary()
        self._pending: dict[str, _Pending] = {}
        self._period: dict[str, Bytes] = {}
        self._busy = 0
        self._busy_meter: EnergyMeter | None = None
        #: CPU seconds of the owner's helper processes still running (a node's
        #: lanes), added to every meter's own (see EnergyMeter's extra_cpu).
        self.extra_cpu: Callable[[], float] | None = None

    # -- one operation, one row -------------------------------------------------

    def meter(self, kind: str) -> EnergyMeter:
        """A meter with this account's watts-per-core (for callers that record later)."""
        if kind not in ledger.KINDS:
            raise InvalidInput(f"energy: unknown operation kind {kind!r}")
        return EnergyMeter(kind, watts_per_core=self.watts_per_core,
                           powercap_root=self._powercap_root, proc_root=self._proc_root,
                           extra_cpu=self.extra_cpu)

    @contextmanager
    def measure(self, kind: str) -> Iterator[Bytes]:
        """`with account.measure("put") as op: ...; op.bytes_hashed += n`.

        On a normal exit, one ledger row: joules, method, bytes, duration. An
        operation that raises is not recorded: its byte counts would be
        partial and its energy would skew the per-GB figures.
        """
        op = Bytes()
        meter = self.meter(kind)
        with meter:
            yield op
        self.record(meter.result, op)

    def record(self, m: Measurement, op: Bytes) -> None:
        """Write one measured operation (one short transaction)."""
        with self.index.transaction() as db:
            ledger.record(db, m.kind, m.joules, m.method, op.bytes_hashed, op.bytes_written,
                          op.bytes_sent, op.bytes_received, m.duration_s)

    # -- serving: aggregated in memory -----------------------------------------------

    @contextmanager
    def serving(self, kind: str = "serve") -> Iterator[Bytes]:
        """Around serving one request; add `bytes_sent` to what it yields.

        Nothing touches SQLite here; `flush` writes the totals. CPU energy is
        metered over busy periods (at least one request in flight), not per
        request, so concurrent requests are not counted twice; a period's
        energy is shared among the kinds served in it by bytes sent.
        """
        if kind not in ledger.KINDS:
            raise InvalidInput(f"energy: unknown operation kind {kind!r}")
        op = Bytes()
        with self._lock:
            if self._busy == 0:
                self._busy_meter = self.meter(kind).__enter__()
            self._busy += 1
        try:
            yield op
        finally:
            with self._lock:
                self._busy -= 1
                self._period.setdefault(kind, Bytes()).add(op)
                if self._busy == 0:
                    self._close_busy_period(reopen=False)

    def add_served(self, bytes_sent: int, cpu_s: float, kind: str = "serve") -> None:
        """Serving done by helper processes (a node's lanes): `cpu_s` of their
        CPU for `bytes_sent` bytes, added to the pending totals of `kind`
        (the cpu-time estimate: their CPU is not this process's to meter)."""
        if kind not in ledger.KINDS:
            raise InvalidInput(f"energy: unknown operation kind {kind!r}")
        with self._lock:
            p = self._pending.get(kind)
            if p is None:
                p = self._pending[kind] = _Pending()
            p.joules += max(0.0, cpu_s) * self.watts_per_core
            p.counts.add(Bytes(bytes_sent=bytes_sent))

    def _close_busy_period(self, reopen: bool) -> None:
        """Charge the busy period's energy to the kinds served in it. Holds _lock."""
        meter, period = self._busy_meter, self._period
        self._busy_meter, self._period = None, {}
        if meter is None:
            return
        meter.__exit__(None, None, None)
        m = meter.result
        if reopen:
            self._busy_meter = self.meter(m.kind).__enter__()
        if not period:
            period = {"serve": Bytes()}
        sent = sum(b.bytes_sent for b in period.values())
        for kind, counted in period.items():
            share = counted.bytes_sent / sent if sent else 1.0 / len(period)
            p = self._pending.setdefault(kind, _Pending())
            p.joules += m.joules * share
            p.duration_s += m.duration_s * share
            p.method = m.method
            p.counts.add(counted)

    def flush(self) -> int:
        """Write pending serve totals to the ledger; returns the rows written.

        A request still in flight keeps running: its busy period is cut here
        and a new one starts, so a node that never goes idle still gets rows.
        """
        with self._flush_lock:
            with self._lock:
                if self._busy:
                    self._close_busy_period(reopen=True)
                pending, self._pending = self._pending, {}
            rows = [(k, p) for k, p in pending.items() if p.joules > 0 or p.counts.any()]
            if rows:
                with self.index.transaction() as db:
                    for kind, p in rows:
                        c = p.counts
                        ledger.record(db, kind, p.joules, p.method, c.bytes_hashed, c.bytes_written,
                                      c.bytes_sent, c.bytes_received, p.duration_s)
            return len(rows)

    def pending_summary(self) -> dict[str, ledger.Totals]:
        """Unflushed serve totals in `ledger.summary` form (finished busy periods only)."""
        with self._lock:
            return {k: p.as_totals() for k, p in self._pending.items() if p.joules > 0 or p.counts.any()}

    def summary(self) -> dict[str, ledger.Totals]:
        """This repo's totals per kind: the ledger plus what is not flushed yet."""
        with self._flush_lock:
            return ledger.merge_summaries([read_summary(self.index), self.pending_summary()])


def read_summary(index: Index) -> dict[str, ledger.Totals]:
    """`ledger.summary` of a repo's index; {} if the table does not exist yet
    (a repo opened read-only that no energy-aware Shoal has written)."""
    try:
        with index.snapshot() as db:
            return ledger.summary(db)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise


_accounts: "weakref.WeakKeyDictionary[Any, EnergyAccount]" = weakref.WeakKeyDictionary()
_accounts_lock = threading.Lock()


def account_for(repo: "Repo") -> EnergyAccount:
    """The repo's account, created once (coefficients read once per open repo).

    The repo must be open with its lock: the account may create the table.
    """
    with _accounts_lock:
        account = _accounts.get(repo)
        if account is None:
            energy = repo.config.get("energy", {})
            account = EnergyAccount(repo.index, energy if isinstance(energy, dict) else {})
            _accounts[repo] = account
        return account


def put_measured(repo: "Repo", path: Path, **kwargs: Any) -> "ImportResult":
    """`repo.add(path, **kwargs)`, recorded as a `put`: every block byte is
    hashed and (at most) written; dedup against blocks already stored is not
    subtracted, so bytes_written is an upper bound."""
    account = account_for(repo)
    with account.measure("put") as op:
        result = repo.add(path, **kwargs)
        op.bytes_hashed += result.tsize
        op.bytes_written += result.tsize
    return result


def gc_measured(repo: "Repo", force: bool = False) -> "GcResult":
    """`repo.gc(force)`, recorded as a `gc`; its bytes are the bytes freed (counted
    as bytes_written, the field the ledger's per-GB figure for gc uses)."""
    account = account_for(repo)
    with account.measure("gc") as op:
        result = repo.gc(force)
        op.bytes_written += result.freed_bytes
    return result

