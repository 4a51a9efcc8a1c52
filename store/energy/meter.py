"""Measure the CPU energy of one operation: RAPL where readable, else an estimate.

Why two methods: RAPL counters (`/sys/class/powercap/intel-rapl:N/energy_uj`)
are real measurements, but they are root-only since Linux 5.10 and absent in
most VMs and containers, including Shoal's CI. There we estimate energy as
process CPU seconds × a watts-per-busy-core coefficient. Every `Measurement`
says which method produced it, so a report never passes an estimate off as a
measurement.

RAPL counts the whole CPU package, every process on it, not just Shoal. When
`/proc/stat` is readable we attribute to this operation the package energy
times this process's share of the busy CPU time over the same interval
(`Measurement.package_joules` keeps the raw figure); otherwise the package
figure is used as is and `attribution` says "package-wide", an upper bound.

Not here: storage or network energy (see `model`), persistence (`ledger`).
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Callable, Final, Literal

Method = Literal["rapl", "cpu-time-estimate"]
RAPL: Final[Method] = "rapl"
ESTIMATE: Final[Method] = "cpu-time-estimate"

DEFAULT_POWERCAP = Path("/sys/class/powercap")
DEFAULT_PROC = Path("/proc")
# Top-level package zones only: "intel-rapl:0", not subzones "intel-rapl:0:1"
# (core/uncore/dram, already inside the package) and not "intel-rapl-mmio:0"
# (a second view of the same package, which would count it twice).
_PACKAGE_ZONE = re.compile(r"^intel-rapl:\d+$")


@dataclass(frozen=True)
class Measurement:
    """Energy of one operation. `joules` is what the ledger records."""

    kind: str
    joules: float
    method: Method
    duration_s: float
    cpu_s: float
    package_joules: float | None = None  # RAPL only: whole package, all processes
    attribution: str = "process"  # "process", "cpu-share" or "package-wide"


@dataclass(frozen=True)
class RaplZone:
    energy_path: Path
    max_range_uj: int


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def find_package_zones(powercap_root: Path = DEFAULT_POWERCAP) -> list[RaplZone]:
    """Readable RAPL package zones (Intel, or AMD Zen via the same driver).

    A zone counts only if its `energy_uj` and `max_energy_range_uj` are both
    readable now, and its `name` (when present) starts with "package": some
    laptops add a top-level "psys" zone that already includes the package.
    """
    zones: list[RaplZone] = []
    try:
        entries = sorted(powercap_root.iterdir())
    except OSError:
        return zones
    for d in entries:
        if not _PACKAGE_ZONE.match(d.name):
            continue
        try:
            name = (d / "name").read_text().strip()
        except OSError:
            name = "package"
        if not name.startswith("package"):
            continue
        max_range = _read_int(d / "max_energy_range_uj")
        if max_range is None or max_range <= 0 or _read_int(d / "energy_uj") is None:
            continue
        zones.append(RaplZone(d / "energy_uj", max_range))
    return zones


def counter_delta_uj(start: int, end: int, max_range_uj: int) -> int:
    """Counter advance from `start` to `end`, allowing one wrap at `max_range_uj`.

    The counter wraps to 0 after `max_energy_range_uj` (about 262 kJ on many
    Intel parts: ~45 min at 100 W). Two wraps inside one operation cannot be
    told apart from one; operations that long are not measured this way.
    """
    if end >= start:
        return end - start
    return end + max_range_uj - start


def _busy_cpu_s(proc_root: Path) -> float | None:
    """Busy CPU seconds of the whole machine since boot, from /proc/stat."""
    try:
        with open(proc_root / "stat") as f:
            first = f.readline().split()
    except OSError:
        return None
    if not first or first[0] != "cpu" or len(first) < 8:
        return None
    try:
        # user nice system idle iowait irq softirq steal: drop idle and iowait.
        ticks = [int(x) for x in first[1:9]]
    except ValueError:
        return None
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _cpu_now() -> float:
    """CPU seconds of this process, every thread (hashing threads too), plus
    those of its children reaped so far: a put's piece-hashing helpers
    (store/proofs/piece_hashers.py) do its hashing and are reaped before it returns."""
    t = os.times()
    return time.process_time() + t.children_user + t.children_system


class EnergyMeter:
    """Context manager measuring one operation; read `.result` after the block.

    with EnergyMeter("put") as m:
        ...work...
    ledger.record(conn, "put", m.result.joules, m.result.method, ...)
    """

    def __init__(
        self,
        kind: str,
        *,
        watts_per_core: float | None = None,
        powercap_root: Path = DEFAULT_POWERCAP,
        proc_root: Path = DEFAULT_PROC,
        extra_cpu: Callable[[], float] | None = None,
    ) -> None:
        """`extra_cpu()`: CPU seconds of helper processes that work for this
        one but are not its reaped children yet (a node's running lanes,
        shoal.p2p.lanes); their delta over the block counts as this process's."""
        if watts_per_core is None:
            from shoal.store.energy.coefficients import load_coefficients

            watts_per_core = load_coefficients().value("cpu_watts_per_core")
        self.kind = kind
        self.watts_per_core = watts_per_core
        self.powercap_root = powercap_root
        self.proc_root = proc_root
        self.extra_cpu = extra_cpu
        self._zones: list[RaplZone] = []
        self._start_uj: list[int] = []
        self._t0 = 0.0
        self._cpu0 = 0.0
        self._busy0: float | None = None
        self._result: Measurement | None = None

    @property
    def result(self) -> Measurement:
        if self._result is None:
            raise RuntimeError("EnergyMeter.result read before the with-block ended")
        return self._result

    def __enter__(self) -> EnergyMeter:
        self._zones = find_package_zones(self.powercap_root)
        starts = [_read_int(z.energy_path) for z in self._zones]
        if any(s is None for s in starts):
            self._zones, starts = [], []
        self._start_uj = [s for s in starts if s is not None]
        self._busy0 = _busy_cpu_s(self.proc_root) if self._zones else None
        self._t0 = time.perf_counter()
        self._cpu0 = self._cpu_now()
        return self

    def _cpu_now(self) -> float:
        return _cpu_now() + (self.extra_cpu() if self.extra_cpu is not None else 0.0)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        cpu_s = max(0.0, self._cpu_now() - self._cpu0)
        duration_s = max(0.0, time.perf_counter() - self._t0)
        self._result = self._rapl(cpu_s, duration_s) or Measurement(
            kind=self.kind,
            joules=cpu_s * self.watts_per_core,
            method=ESTIMATE,
            duration_s=duration_s,
            cpu_s=cpu_s,
        )

    def _rapl(self, cpu_s: float, duration_s: float) -> Measurement | None:
        if not self._zones:
            return None
        total_uj = 0
        for zone, start in zip(self._zones, self._start_uj):
            end = _read_int(zone.energy_path)
            if end is None:  # zone vanished or lost permission mid-operation
                return None
            total_uj += counter_delta_uj(start, end, zone.max_range_uj)
        package_j = total_uj / 1e6
        busy1 = _busy_cpu_s(self.proc_root)
        if self._busy0 is not None and busy1 is not None and busy1 > self._busy0:
            share = min(1.0, cpu_s / (busy1 - self._busy0))
            joules, attribution = package_j * share, "cpu-share"
        else:
            joules, attribution = package_j, "package-wide"
        return Measurement(
            kind=self.kind,
            joules=joules,
            method=RAPL,
            duration_s=duration_s,
            cpu_s=cpu_s,
            package_joules=package_j,
            attribution=attribution,
        )


def measure(
    kind: str,
    *,
    watts_per_core: float | None = None,
    powercap_root: Path = DEFAULT_POWERCAP,
    proc_root: Path = DEFAULT_PROC,
) -> EnergyMeter:
    """`with measure("put") as m: ...` — the same as `EnergyMeter(kind, ...)`."""
    return EnergyMeter(
        kind, watts_per_core=watts_per_core, powercap_root=powercap_root, proc_root=proc_root
    )


def rapl_available(powercap_root: Path = DEFAULT_POWERCAP) -> bool:
    """True when at least one package zone is readable (what `measure` will use)."""
    return bool(find_package_zones(powercap_root))
