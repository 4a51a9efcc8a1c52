"""Pure arithmetic of the energy comparison: swarm versus a centralized store.

Why pure functions of plain numbers: every figure in the report must be
reproducible by hand from the coefficient table and the ledger totals, and
testable on known inputs. No I/O here.

Units: W/TB of disk; 1 W per TB held for a month of 730 h is 0.73 Wh per
GB-month (TB = 1e12 bytes, GB = 1e9 bytes). Energy is Wh unless named `_j`.

Schemes (issue 18): the swarm holds an object as `replicas N` (N whole
copies, the owner's among them) or `ec K+M` (K + M shards of size/K on
remote peers, plus the owner's whole copy if it keeps it). Every byte count
below is per object byte: at rest the real stored bytes, at placement the
bytes that cross the network, at repair what one lost holder costs.

Accounting: "attributional" charges the data its share of a disk's power and
the average network kWh/GB; "marginal" asks what storing it *adds*, and a disk
that spins anyway adds almost nothing at rest. Only the swarm's at-rest disk
energy is marginal-sensitive here: the cloud baseline provisions disks for the
data it takes, so it is charged attributionally in both modes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Iterable, Literal, Mapping

from shoal.store.energy.coefficients import Coefficients
from shoal.store.energy.ledger import EC_ENCODE, EC_REPAIR, PRIMARY_BYTES
from shoal.store.errors import InvalidInput
from shoal.store.erasure.durability import Scheme, loss_probability, replicas_for
from shoal.store.erasure.layout import ErasureError

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
    copies: float,
    overhead: float,
    pue: float,
    accounting: Accounting = "attributional",
) -> float:
    """Swarm at rest: disk W/TB × copies × non-drive overhead × PUE, per GB-month.
    `copies` is the stored bytes per object byte (`Layout.stored_factor`):
    N for replicas, (K + M) / K (+ 1) for EC.

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


def audit_holders_wh_per_gb_month(
    joules_per_audit: float, audits_per_month: float, remote_holders: int, gb_per_object: float
) -> float:
    """Audit energy per GB-month for `remote_holders` audited holders of one
    object (replicas N: N - 1; EC K+M: K + M shards, each audited like a replica)."""
    return audit_wh_per_gb_month(joules_per_audit, audits_per_month, remote_holders + 1, gb_per_object)


def placement_cpu_wh_per_gb(
    put_j_per_gb: float | None,
    replicate_in_j_per_gb: float | None,
    replicate_out_j_per_gb: float | None,
    placed_factor: float,
) -> float:
    """CPU energy to put one GB and send `placed_factor` GB of it to peers, in Wh."""
    put = put_j_per_gb or 0.0
    per_gb = (replicate_in_j_per_gb or 0.0) + (replicate_out_j_per_gb or 0.0)
    return (put + per_gb * placed_factor) / J_PER_WH


def annual_failure_rate(afr: float) -> float:
    """Expected failures per holder-year for an annual failure probability:
    -ln(1 - afr), the constant rate of docs/DURABILITY.md (a failed holder is
    replaced and the replacement fails at the same rate)."""
    return -math.log1p(-min(afr, 1.0 - 1e-12))


def repair_wh_per_gb_month(
    failures_per_holder_year: float, holders: int, bytes_factor: float,
    network_kwh_per_gb: float, cpu_j_per_gb: float,
) -> float:
    """Repair energy per GB-month: each lost holder moves `bytes_factor` GB
    per object GB across the network and costs `cpu_j_per_gb` of CPU."""
    per_repair_wh = bytes_factor * network_kwh_per_gb * 1000.0 + cpu_j_per_gb / J_PER_WH
    return failures_per_holder_year * holders * per_repair_wh / 12.0


@dataclass(frozen=True)
class Layout:
    """How the swarm holds an object, the energy model's scheme.

    `replicas N`: N whole copies, the owner's one of them (N - 1 cross the
    network, N are repaired). `ec K+M`: K + M shards of size/K, all on remote
    peers, plus the owner's whole copy if `owner_copy` (kept by default, as
    `put --ec` does unless `--ec-drop-local`). The owner's copy is not
    counted for durability: the swarm does not repair it, so leaving it out
    makes the equal-durability comparison lean against the swarm.
    """

    kind: Literal["replicas", "ec"]
    k: int
    m: int
    owner_copy: bool = True

    @classmethod
    def replicas(cls, n: int) -> "Layout":
        return cls("replicas", 1, n - 1)

    @classmethod
    def ec(cls, k: int, m: int, owner_copy: bool = True) -> "Layout":
        return cls("ec", k, m, owner_copy)

    @classmethod
    def parse(cls, text: str) -> "Layout":
        """`3`, `replicas 3`, `4+2`, `ec 4+2`, `ec 4+2 drop-local`."""
        words = text.lower().replace("replicas", " ").replace("ec", " ").split()
        drop = "drop-local" in words
        words = [w for w in words if w != "drop-local"]
        try:
            if len(words) == 1 and "+" in words[0]:
                k, m = (int(x) for x in words[0].split("+", 1))
                return cls.ec(k, m, owner_copy=not drop)
            if len(words) == 1 and not drop:
                return cls.replicas(int(words[0]))
        except ValueError:
            pass
        raise InvalidInput(f"energy: cannot read scheme {text!r}; expected 'replicas N' or 'ec K+M'")

    def __post_init__(self) -> None:
        if self.kind == "replicas" and (self.k != 1 or self.m < 0 or not self.owner_copy):
            raise InvalidInput("energy: replicas N needs N >= 1 (the owner's copy is one of them)")
        if self.kind == "ec" and (self.k < 1 or self.m < 0):
            raise InvalidInput("energy: ec K+M needs K >= 1 and M >= 0")
        if self.kind not in ("replicas", "ec"):
            raise InvalidInput(f"energy: unknown scheme kind {self.kind!r}")

    @property
    def n(self) -> int:
        """Holders the swarm keeps and repairs."""
        return self.k + self.m

    @property
    def stored_factor(self) -> float:
        """Stored bytes per object byte: N, or (K + M) / K (+ 1 for the owner's copy)."""
        if self.kind == "replicas":
            return float(self.n)
        return self.n / self.k + (1.0 if self.owner_copy else 0.0)

    @property
    def placed_factor(self) -> float:
        """Bytes crossing the network at placement per object byte: N - 1 copies
        (the owner's is local), or K + M shards of size/K."""
        return float(self.n - 1) if self.kind == "replicas" else self.n / self.k

    @property
    def remote_holders(self) -> int:
        """Holders that are audited: every replica but the owner's, every shard."""
        return self.n - 1 if self.kind == "replicas" else self.n

    @property
    def repair_factor(self) -> float:
        """Network bytes per object byte to replace one lost holder: a replica
        copies the object; EC reads K shards of size/K (one object) and
        writes one shard of size/K to the new holder."""
        return 1.0 if self.kind == "replicas" else 1.0 + 1.0 / self.k

    @property
    def whole_copies(self) -> int:
        """Whole copies of the object in the swarm (the report's `copies`)."""
        if self.kind == "replicas":
            return self.n
        return 1 if self.owner_copy else 0

    @property
    def durability(self) -> Scheme:
        return Scheme(self.k, self.m)

    @property
    def label(self) -> str:
        if self.kind == "replicas":
            return f"replicas {self.n}"
        return f"EC {self.k}+{self.m}" + ("" if self.owner_copy else " drop-local")

    def describe(self) -> dict[str, Any]:
        """As `shoal status` shows a scheme, plus whether the owner keeps its copy."""
        if self.kind == "replicas":
            return {"replicas": self.n}
        return {"ec": [self.k, self.m], "owner_copy": self.owner_copy}


DEFAULT_SCHEMES: tuple[Layout, ...] = (
    Layout.replicas(2), Layout.replicas(3), Layout.replicas(5),
    Layout.ec(4, 2), Layout.ec(8, 4), Layout.ec(10, 6),
    Layout.ec(4, 2, owner_copy=False), Layout.ec(8, 4, owner_copy=False), Layout.ec(10, 6, owner_copy=False),
)

MAX_CLOUD_REPLICAS = 20


@functools.lru_cache(maxsize=1024)
def _loss(k: int, m: int, afr: float, repair_hours: float | None) -> float:
    return loss_probability([afr] * (k + m), m, repair_hours)


def swarm_loss_probability(layout: Layout, afr: float, repair_hours: float | None) -> float:
    """Annual loss probability of the swarm's scheme (docs/DURABILITY.md)."""
    return _loss(layout.k, layout.m, afr, repair_hours)


def cloud_loss_probability(replication: int, afr: float, repair_hours: float | None) -> float:
    """Annual loss probability of the cloud's `replication` copies."""
    return _loss(1, max(1, replication) - 1, afr, repair_hours)


@functools.lru_cache(maxsize=1024)
def equal_durability_replicas(target: float, afr: float, repair_hours: float | None) -> int:
    """The fewest cloud replicas whose loss probability is at most `target`
    (`durability.replicas_for`); MAX_CLOUD_REPLICAS if none up to it does."""
    try:
        return replicas_for(target, afr, repair_hours, MAX_CLOUD_REPLICAS)
    except ErasureError:
        return MAX_CLOUD_REPLICAS


@dataclass(frozen=True)
class Scenario:
    """One row of the sensitivity table: the choices that vary. `scheme` is
    a Layout, or an int N meaning `replicas N` (the pre-EC form)."""

    scheme: "Layout | int"
    swarm_pue: float
    disk: DiskType
    network: Literal["value", "low", "high"]
    accounting: Accounting

    @property
    def layout(self) -> Layout:
        return self.scheme if isinstance(self.scheme, Layout) else Layout.replicas(int(self.scheme))

    @property
    def copies(self) -> int:
        return self.layout.whole_copies


@dataclass(frozen=True)
class MeasuredInputs:
    """Figures taken from the ledger, per GB or per audit (None = unmeasured)."""

    put_j_per_gb: float | None = None
    replicate_in_j_per_gb: float | None = None
    replicate_out_j_per_gb: float | None = None
    joules_per_audit: float = 0.0
    gb_per_object: float = 1.0
    ec_encode_j_per_gb: float | None = None  # per GB of object encoded
    ec_repair_j_per_gb: float | None = None  # per GB of shards read + written


def _edge_disk(c: Coefficients, disk: DiskType) -> float:
    return c.value("edge_hdd_w_per_tb" if disk == "hdd" else "edge_ssd_w_per_tb")


def _cloud_disk(c: Coefficients, disk: DiskType) -> float:
    return c.value("cloud_hdd_w_per_tb" if disk == "hdd" else "cloud_ssd_w_per_tb")


def ec_encode_j_per_gb(c: Coefficients, m: MeasuredInputs) -> tuple[float, str]:
    """J to encode one GB of object, and where the figure comes from: the
    ledger's `ec-encode` rows, else bench/erasure.py's CPU-s/GB x W per core."""
    if m.ec_encode_j_per_gb is not None:
        return m.ec_encode_j_per_gb, "measured"
    return c.value("ec_encode_cpu_s_per_gb") * c.value("cpu_watts_per_core"), "coefficient"


def ec_rebuild_j_per_gb(c: Coefficients, m: MeasuredInputs, k: int) -> tuple[float, str]:
    """CPU J to rebuild one lost shard, per GB of object: the ledger's
    `ec-repair` J/GB (over shard bytes read + written, 1 + 1/K per object
    byte), else bench/erasure.py's rebuild CPU-s/GB x W per core."""
    if m.ec_repair_j_per_gb is not None:
        return m.ec_repair_j_per_gb * (1.0 + 1.0 / k), "measured"
    return c.value("ec_rebuild_cpu_s_per_gb") * c.value("cpu_watts_per_core"), "coefficient"


def baseline_figures(c: Coefficients, disk: DiskType, net: float, replication: float) -> dict[str, float]:
    """The cloud at `replication` copies: at rest, one-time (ingest), repair
    (a failed drive re-copied inside the data centre), total per GB-month."""
    months = max(c.value("amortization_months"), 1e-9)
    rest = baseline_at_rest_wh_per_gb_month(_cloud_disk(c, disk), replication, c.value("baseline_pue"))
    once = baseline_ingest_network_wh_per_gb(replication, net, c.value("network_inter_dc_kwh_per_gb"))
    repair = repair_wh_per_gb_month(annual_failure_rate(c.value("cloud_holder_afr")), max(1, round(replication)),
                                    1.0, c.value("network_inter_dc_kwh_per_gb"), 0.0)
    return {"at_rest": rest, "one_time": once, "repair": repair, "total": rest + once / months + repair}


def durability_figures(layout: Layout, c: Coefficients, swarm_afr: float | None = None) -> dict[str, Any]:
    """The swarm scheme's annual loss probability, the cloud's at its own
    replication, and the cloud replica count that matches the swarm's."""
    afr = c.value("swarm_holder_afr") if swarm_afr is None else swarm_afr
    p_swarm = swarm_loss_probability(layout, afr, c.value("swarm_repair_hours"))
    replication = max(1, round(c.value("baseline_replication")))
    cloud_afr, cloud_repair = c.value("cloud_holder_afr"), c.value("cloud_repair_hours")
    n_eq = equal_durability_replicas(p_swarm, cloud_afr, cloud_repair)
    return {
        "swarm_holder_afr": afr,
        "swarm_loss_probability": p_swarm,
        "baseline_loss_probability": cloud_loss_probability(replication, cloud_afr, cloud_repair),
        "equal_durability_replicas": n_eq,
        "baseline_equal_loss_probability": cloud_loss_probability(n_eq, cloud_afr, cloud_repair),
    }


def evaluate(s: Scenario, c: Coefficients, m: MeasuredInputs, swarm_afr: float | None = None) -> dict[str, Any]:
    """Swarm and baseline Wh per GB-month for one scenario, one-time energy
    amortized over `amortization_months`. Same disk type on both sides.

    Two baselines: the cloud at its own replication (`baseline_*`, the
    per-copy comparison) and the cloud at the replica count that is as
    durable as the swarm's scheme (`baseline_equal_*`, the headline)."""
    lay = s.layout
    low, high = c.band("network_kwh_per_gb")
    net = {"low": low, "high": high}.get(s.network, c.value("network_kwh_per_gb"))
    months = max(c.value("amortization_months"), 1e-9)
    replication = c.value("baseline_replication")
    swarm_rest = swarm_at_rest_wh_per_gb_month(
        _edge_disk(c, s.disk), lay.stored_factor, c.value("edge_overhead_factor"), s.swarm_pue, s.accounting
    )
    encode_j, encode_src = ec_encode_j_per_gb(c, m) if lay.kind == "ec" else (0.0, "none")
    transfer_j = (m.replicate_in_j_per_gb or 0.0) + (m.replicate_out_j_per_gb or 0.0)
    swarm_once = (lay.placed_factor * net * 1000.0
                  + placement_cpu_wh_per_gb(m.put_j_per_gb, m.replicate_in_j_per_gb, m.replicate_out_j_per_gb,
                                            lay.placed_factor)
                  + encode_j / J_PER_WH)
    swarm_audit = audit_holders_wh_per_gb_month(
        m.joules_per_audit, c.value("audits_per_month"), lay.remote_holders, m.gb_per_object
    )
    dur = durability_figures(lay, c, swarm_afr)
    rebuild_j, rebuild_src = ec_rebuild_j_per_gb(c, m, lay.k) if lay.kind == "ec" else (0.0, "none")
    swarm_repair = repair_wh_per_gb_month(
        annual_failure_rate(dur["swarm_holder_afr"]), lay.n, lay.repair_factor, net,
        rebuild_j + transfer_j * lay.repair_factor,
    )
    swarm_total = swarm_rest + swarm_once / months + swarm_audit + swarm_repair
    base = baseline_figures(c, s.disk, net, replication)
    equal = baseline_figures(c, s.disk, net, dur["equal_durability_replicas"])
    return {
        "copies": lay.whole_copies,
        "scheme": lay.describe(),
        "scheme_label": lay.label,
        "stored_factor": lay.stored_factor,
        "swarm_pue": s.swarm_pue,
        "disk": s.disk,
        "network": s.network,
        "network_kwh_per_gb": net,
        "accounting": s.accounting,
        "swarm_wh_per_gb_month": swarm_total,
        "swarm_at_rest_wh_per_gb_month": swarm_rest,
        "swarm_one_time_wh_per_gb": swarm_once,
        "swarm_encode_wh_per_gb": encode_j / J_PER_WH,
        "swarm_encode_source": encode_src,
        "swarm_repair_wh_per_gb_month": swarm_repair,
        "swarm_repair_cpu_source": rebuild_src,
        "swarm_audit_wh_per_gb_month": swarm_audit,
        "baseline_replication": replication,
        "baseline_wh_per_gb_month": base["total"],
        "baseline_at_rest_wh_per_gb_month": base["at_rest"],
        "baseline_one_time_wh_per_gb": base["one_time"],
        "baseline_repair_wh_per_gb_month": base["repair"],
        "baseline_equal_wh_per_gb_month": equal["total"],
        "baseline_equal_at_rest_wh_per_gb_month": equal["at_rest"],
        "baseline_equal_one_time_wh_per_gb": equal["one_time"],
        "baseline_equal_repair_wh_per_gb_month": equal["repair"],
        **dur,
        "amortization_months": months,
        "swarm_cheaper": swarm_total < base["total"],
        "swarm_cheaper_equal": swarm_total < equal["total"],
    }


def sensitivity_table(
    c: Coefficients, m: MeasuredInputs, copies_options: Iterable[int] = (2, 3, 5),
    schemes: Iterable[Layout] | None = None,
) -> list[dict[str, Any]]:
    """Every combination of scheme (`schemes`, else replicas N for each of
    `copies_options`), swarm PUE band, disk type, network band and
    accounting mode, each row saying whether the swarm is cheaper per copy
    and at equal durability."""
    layouts = list(dict.fromkeys(schemes)) if schemes is not None else [
        Layout.replicas(n) for n in sorted(set(copies_options))]
    pues = sorted(set(c.band("swarm_pue")) | {c.value("swarm_pue")})
    rows: list[dict[str, Any]] = []
    for lay in layouts:
        for pue in pues:
            for disk in ("hdd", "ssd"):
                for network in ("low", "high"):
                    for accounting in ("attributional", "marginal"):
                        s = Scenario(lay, pue, disk, network, accounting)
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
        ec_encode_j_per_gb=per_gb(EC_ENCODE, PRIMARY_BYTES[EC_ENCODE]),
        ec_repair_j_per_gb=per_gb(EC_REPAIR, PRIMARY_BYTES[EC_REPAIR]),
    )
