"""Pure arithmetic of the energy comparison: swarm versus a centralized store.

Why pure functions of plain numbers: every figure in the report must be
reproducible by hand from the coefficient table and the ledger totals, and
testable on known inputs. No I/O here.

Units: W/TB of disk; 1 W per TB held for a month of 730 h is 0.73 Wh per
GB-month (TB = 1e12 bytes, GB = 1e9 bytes). Energy is Wh unless named `_j`.

Accounting: "attributional" charges the data its share of a disk's power and
the average network kWh/GB; "marginal" asks what storing it *adds*, and a disk
that spins anyway adds almost nothing at rest. Only the swarm's at-rest disk
energy is marginal-sensitive here: the cloud baseline provisions disks for the
data it takes, so it is charged attributionally in both modes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from shoal.store.energy.coefficients import Coefficients

HOURS_PER_MONTH = 730.0
GB = 1e9
TB = 1e12
J_PER_WH = 3600.0

Accounting = Literal["attributional", "marginal"]
DiskType = Literal["hdd", "ssd"]


def wh_per_gb_month(w_per_tb: float) -> float:
    """Energy of holding one GB for a month on a disk drawing `w_per_tb`."""
    return w_per_tb * HOURS_PER_MONTH * GB / TB


def swarm_at_rest_wh_per_gb_month(
    disk_w_per_tb: float,
    copies: int,
    overhead: float,
    pue: float,
    accounting: Accounting = "attributional",
) -> float:
    """Swarm at rest: disk W/TB × copies × non-drive overhead × PUE, per GB-month.

    Marginal accounting returns 0: the peers' disks spin whether or not they
    hold this data, so holding it adds (almost) nothing.
    """
    if copies < 1:
        raise ValueError("copies must be >= 1")
    if accounting == "marginal":
        return 0.0
    return wh_per_gb_month(disk_w_per_tb) * copies * overhead * pue


def baseline_at_rest_wh_per_gb_month(disk_w_per_tb: float, replication: float, pue: float) -> float:
    """Cloud baseline at rest: CCF storage W/TB × its replication factor × its PUE."""
    return wh_per_gb_month(disk_w_per_tb) * replication * pue


def at_rest_wh_per_month(wh_per_gb_month_: float, stored_bytes: int) -> float:
    """Total at-rest Wh per month for `stored_bytes` (linear in bytes)."""
    return wh_per_gb_month_ * stored_bytes / GB


def joules_per_gb(joules: float, nbytes: int) -> float | None:
    """Measured J per GB of an operation, or None when no bytes were counted."""
    if nbytes <= 0:
        return None
    return joules * GB / nbytes


def one_time_cpu_wh_per_gb(
    put_j_per_gb: float | None,
    replicate_in_j_per_gb: float | None,
    replicate_out_j_per_gb: float | None,
    copies: int,
) -> float:
    """CPU energy to put one GB once and copy it to `copies - 1` peers, in Wh.

    Unmeasured operations count as 0 (the report flags them as unmeasured).
    """
    put = put_j_per_gb or 0.0
    per_copy = (replicate_in_j_per_gb or 0.0) + (replicate_out_j_per_gb or 0.0)
    return (put + per_copy * (copies - 1)) / J_PER_WH


def swarm_replication_network_wh_per_gb(copies: int, network_kwh_per_gb: float) -> float:
    """Network energy to place `copies - 1` replicas across the internet, per GB.

    The owner's copy is local; each further copy crosses the network once.
    """
    return (copies - 1) * network_kwh_per_gb * 1000.0


def baseline_ingest_network_wh_per_gb(
    replication: float, network_kwh_per_gb: float, inter_dc_kwh_per_gb: float
) -> float:
    """Network energy for the baseline to take one GB: one upload over the
    internet, then its own replication at the inter-data-centre coefficient."""
    return (network_kwh_per_gb + max(0.0, replication - 1) * inter_dc_kwh_per_gb) * 1000.0


def delivery_network_wh_per_gb(network_kwh_per_gb: float) -> float:
    """Delivering one GB to a reader, swarm or central: the same average
    coefficient, since kWh/GB figures do not depend on who sends the bytes.
    A swarm saves here only if its paths are really shorter, which an average
    coefficient cannot show."""
    return network_kwh_per_gb * 1000.0


def audit_wh_per_gb_month(
    joules_per_audit: float, audits_per_month: float, copies: int, gb_per_object: float
) -> float:
    """Audit energy per GB-month: each of the `copies - 1` remote replicas of an
    object is audited `audits_per_month` times, whatever the object's size, so
    small objects pay more per GB."""
    if gb_per_object <= 0:
        return 0.0
    return joules_per_audit * audits_per_month * (copies - 1) / gb_per_object / J_PER_WH


@dataclass(frozen=True)
class Scenario:
    """One row of the sensitivity table: the choices that vary."""

    copies: int
    swarm_pue: float
    disk: DiskType
    network: Literal["value", "low", "high"]
    accounting: Accounting


@dataclass(frozen=True)
class MeasuredInputs:
    """Figures taken from the ledger, per GB or per audit (None = unmeasured)."""

    put_j_per_gb: float | None = None
    replicate_in_j_per_gb: float | None = None
    replicate_out_j_per_gb: float | None = None
    joules_per_audit: float = 0.0
    gb_per_object: float = 1.0


def _edge_disk(c: Coefficients, disk: DiskType) -> float:
    return c.value("edge_hdd_w_per_tb" if disk == "hdd" else "edge_ssd_w_per_tb")


def _cloud_disk(c: Coefficients, disk: DiskType) -> float:
    return c.value("cloud_hdd_w_per_tb" if disk == "hdd" else "cloud_ssd_w_per_tb")


def evaluate(s: Scenario, c: Coefficients, m: MeasuredInputs) -> dict[str, Any]:
    """Swarm and baseline Wh per GB-month for one scenario, one-time energy
    amortized over `amortization_months`. Same disk type on both sides."""
    low, high = c.band("network_kwh_per_gb")
    net = {"low": low, "high": high}.get(s.network, c.value("network_kwh_per_gb"))
    months = max(c.value("amortization_months"), 1e-9)
    replication = c.value("baseline_replication")
    swarm_rest = swarm_at_rest_wh_per_gb_month(
        _edge_disk(c, s.disk), s.copies, c.value("edge_overhead_factor"), s.swarm_pue, s.accounting
    )
    swarm_once = swarm_replication_network_wh_per_gb(s.copies, net) + one_time_cpu_wh_per_gb(
        m.put_j_per_gb, m.replicate_in_j_per_gb, m.replicate_out_j_per_gb, s.copies
    )
    swarm_audit = audit_wh_per_gb_month(
        m.joules_per_audit, c.value("audits_per_month"), s.copies, m.gb_per_object
    )
    swarm_total = swarm_rest + swarm_once / months + swarm_audit
    base_disk = _cloud_disk(c, s.disk)
    base_rest = baseline_at_rest_wh_per_gb_month(base_disk, replication, c.value("baseline_pue"))
    base_once = baseline_ingest_network_wh_per_gb(
        replication, net, c.value("network_inter_dc_kwh_per_gb")
    )
    base_total = base_rest + base_once / months
    return {
        "copies": s.copies,
        "swarm_pue": s.swarm_pue,
        "disk": s.disk,
        "network": s.network,
        "network_kwh_per_gb": net,
        "accounting": s.accounting,
        "swarm_wh_per_gb_month": swarm_total,
        "swarm_at_rest_wh_per_gb_month": swarm_rest,
        "swarm_one_time_wh_per_gb": swarm_once,
        "swarm_audit_wh_per_gb_month": swarm_audit,
        "baseline_wh_per_gb_month": base_total,
        "baseline_at_rest_wh_per_gb_month": base_rest,
        "baseline_one_time_wh_per_gb": base_once,
        "amortization_months": months,
        "swarm_cheaper": swarm_total < base_total,
    }


def sensitivity_table(
    c: Coefficients, m: MeasuredInputs, copies_options: Iterable[int] = (2, 3, 5)
) -> list[dict[str, Any]]:
    """Every combination of copies, swarm PUE band, disk type, network band and
    accounting mode, each row saying whether the swarm is cheaper."""
    pues = sorted(set(c.band("swarm_pue")) | {c.value("swarm_pue")})
    rows: list[dict[str, Any]] = []
    for copies in sorted(set(copies_options)):
        for pue in pues:
            for disk in ("hdd", "ssd"):
                for network in ("low", "high"):
                    for accounting in ("attributional", "marginal"):
                        s = Scenario(copies, pue, disk, network, accounting)
                        rows.append(evaluate(s, c, m))
    return rows


def measured_inputs(
    summary: Mapping[str, Mapping[str, Any]], stored_bytes: int, objects: int
) -> MeasuredInputs:
    """Per-GB and per-audit figures from a ledger summary (see `ledger.summary`)."""

    def per_gb(kind: str, field: str) -> float | None:
        t = summary.get(kind)
        if not t:
            return None
        return joules_per_gb(float(t["joules"]), int(t[field]))

    # One audit = one prove (holder) + one verify (verifier); a node may have
    # seen only one side, so count audits by whichever side saw more.
    audits = max(int(summary.get(k, {}).get("count", 0) or 0) for k in ("audit-prove", "audit-verify"))
    audit_j = sum(float(summary.get(k, {}).get("joules", 0.0)) for k in ("audit-prove", "audit-verify"))
    return MeasuredInputs(
        put_j_per_gb=per_gb("put", "bytes_hashed"),
        replicate_in_j_per_gb=per_gb("replicate-in", "bytes_received"),
        replicate_out_j_per_gb=per_gb("replicate-out", "bytes_sent"),
        joules_per_audit=audit_j / audits if audits else 0.0,
        gb_per_object=(stored_bytes / GB / objects) if objects > 0 else 0.0,
    )
