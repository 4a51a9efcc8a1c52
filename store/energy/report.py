"""The energy report as data: ledger totals + coefficients → a JSON-ready dict.

Why a plain dict: `shoal energy --json` prints it as is, the text and the
chart are views of it (shoal.cli.energy_report: the store holds no
presentation), and a test can check the figures without parsing prose. The report states its method (RAPL or estimate), its sources, and the
sensitivity table, so a reader can see where the swarm wins and where not.

Two comparisons, both in the dict: the headline `equal_durability` (the
cloud at the replica count that loses data no more often than the swarm's
scheme, docs/DURABILITY.md) and the older `per_copy` one (the cloud at its
own replication, whatever the swarm's durability), which the top-level
`swarm` / `baseline` / `swarm_cheaper` fields keep meaning.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from shoal.store.errors import InvalidInput
from shoal.store.energy.coefficients import Coefficients
from shoal.store.energy.ledger import BYTE_FIELDS, KINDS, PRIMARY_BYTES, merge_summaries
from shoal.store.energy.model import (
    DEFAULT_SCHEMES, GB, DiskType, Layout, MeasuredInputs, Scenario, baseline_ingest_network_wh_per_gb,
    delivery_network_wh_per_gb, evaluate, measured_inputs, sensitivity_table,
)

Report = dict[str, Any]


def _overall_method(methods: Mapping[str, int]) -> str:
    used = sorted(m for m, n in methods.items() if n)
    if not used:
        return "none"
    return used[0] if len(used) == 1 else "mixed (" + ", ".join(used) + ")"


def _operations(totals: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    ops: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        t = totals.get(kind)
        if not t:
            continue
        op: dict[str, Any] = {
            "count": t["count"],
            "joules": t["joules"],
            "bytes": t[PRIMARY_BYTES[kind]],
            "bytes_field": PRIMARY_BYTES[kind],
            "duration_s": t["duration_s"],
            "methods": dict(t["methods"]),
        }
        for f in BYTE_FIELDS:
            op[f] = t[f]
        nbytes = int(t[PRIMARY_BYTES[kind]])
        op["joules_per_gb"] = float(t["joules"]) * GB / nbytes if nbytes else None
        ops[kind] = op
    return ops


def _by_copies(
    c: Coefficients, m_in: MeasuredInputs, disk: DiskType, copies_options: list[int]
) -> list[dict[str, Any]]:
    """Totals per copies and accounting at the low / default / high network
    coefficient, default PUEs: what the chart's right panel draws."""
    out: list[dict[str, Any]] = []
    pue = c.value("swarm_pue")
    for cp in copies_options:
        for acc in ("attributional", "marginal"):
            row: dict[str, Any] = {"copies": cp, "accounting": acc}
            for net in ("low", "value", "high"):
                r = evaluate(Scenario(cp, pue, disk, net, acc), c, m_in)
                row[f"swarm_{net}"] = r["swarm_wh_per_gb_month"]
                row[f"baseline_{net}"] = r["baseline_wh_per_gb_month"]
            out.append(row)
    return out


def _by_scheme(
    c: Coefficients, m_in: MeasuredInputs, disk: DiskType, schemes: list[Layout]
) -> list[dict[str, Any]]:
    """Totals per scheme and accounting at the low / default / high network
    coefficient, default PUEs, against the cloud per copy and at equal
    durability: what the chart's right panel and the text's scheme line show."""
    out: list[dict[str, Any]] = []
    pue = c.value("swarm_pue")
    for lay in schemes:
        for acc in ("attributional", "marginal"):
            row: dict[str, Any] = {"scheme": lay.describe(), "scheme_label": lay.label,
                                   "stored_factor": lay.stored_factor, "accounting": acc}
            for net in ("low", "value", "high"):
                r = evaluate(Scenario(lay, pue, disk, net, acc), c, m_in)
                row[f"swarm_{net}"] = r["swarm_wh_per_gb_month"]
                row[f"baseline_{net}"] = r["baseline_wh_per_gb_month"]
                row[f"baseline_equal_{net}"] = r["baseline_equal_wh_per_gb_month"]
                row["swarm_loss_probability"] = r["swarm_loss_probability"]
                row["equal_durability_replicas"] = r["equal_durability_replicas"]
            out.append(row)
    return out


def _by_afr(
    c: Coefficients, m_in: MeasuredInputs, disk: DiskType, schemes: list[Layout]
) -> list[dict[str, Any]]:
    """Equal durability as the swarm's holders fail more or less often (the
    `swarm_holder_afr` band), default everything else, attributional."""
    out: list[dict[str, Any]] = []
    pue = c.value("swarm_pue")
    afrs = sorted(set(c.band("swarm_holder_afr")) | {c.value("swarm_holder_afr")})
    for lay in schemes:
        for afr in afrs:
            r = evaluate(Scenario(lay, pue, disk, "value", "attributional"), c, m_in, swarm_afr=afr)
            out.append({
                "scheme": lay.describe(), "scheme_label": lay.label, "swarm_holder_afr": afr,
                "swarm_loss_probability": r["swarm_loss_probability"],
                "equal_durability_replicas": r["equal_durability_replicas"],
                "swarm_wh_per_gb_month": r["swarm_wh_per_gb_month"],
                "baseline_equal_wh_per_gb_month": r["baseline_equal_wh_per_gb_month"],
                "swarm_cheaper_equal": r["swarm_cheaper_equal"],
            })
    return out


def build_report(
    summary: Mapping[str, Mapping[str, Any]],
    stored_bytes: int,
    copies: int,
    coefficients: Coefficients,
    peers_summaries: Iterable[Mapping[str, Mapping[str, Any]]] = (),
    *,
    objects: int = 1,
    disk: DiskType = "hdd",
    scheme: Layout | None = None,
) -> Report:
    """Compare the swarm with the centralized baseline for `stored_bytes` held
    in `copies` copies, or as `scheme` (replicas N or EC K+M; it wins over
    `copies`). `summary` is this node's `ledger.summary`; add peers'
    summaries to get swarm-wide operation totals (a replica's energy is spent
    where it is held). `objects` sets the per-object audit cost per GB."""
    if stored_bytes < 0 or (scheme is None and copies < 1) or objects < 0:
        raise InvalidInput("energy report: stored_bytes >= 0, copies >= 1, objects >= 0 required")
    layout = scheme if scheme is not None else Layout.replicas(copies)
    copies = layout.whole_copies
    peers = list(peers_summaries)
    totals = merge_summaries([summary, *peers])
    methods: dict[str, int] = {}
    for t in totals.values():
        for m, n in dict(t["methods"]).items():
            methods[m] = methods.get(m, 0) + int(n)
    m_in = measured_inputs(totals, stored_bytes, objects)
    c = coefficients
    pue = c.value("swarm_pue")
    head = evaluate(Scenario(layout, pue, disk, "value", "attributional"), c, m_in)
    marginal = evaluate(Scenario(layout, pue, disk, "value", "marginal"), c, m_in)
    net = c.value("network_kwh_per_gb")
    stored_gb = stored_bytes / GB
    swarm_total = float(head["swarm_wh_per_gb_month"])
    base_total = float(head["baseline_wh_per_gb_month"])
    months = float(head["amortization_months"])
    equal_total = float(head["baseline_equal_wh_per_gb_month"])
    schemes = list(dict.fromkeys([*DEFAULT_SCHEMES, layout]))
    replica_options = sorted({2, 3, 5} | ({copies} if layout.kind == "replicas" else set()))
    return {
        "method": _overall_method(methods),
        "methods": methods,
        "scope": "swarm" if peers else "node",
        "peers": len(peers),
        "stored_bytes": stored_bytes,
        "stored_gb": stored_gb,
        "copies": copies,
        "scheme": layout.describe(),
        "scheme_label": layout.label,
        "stored_factor": layout.stored_factor,
        "headline": "equal_durability",
        "objects": objects,
        "disk": disk,
        "accounting": "attributional",
        "swarm": {
            "wh_per_gb_month": swarm_total,
            "wh_per_month": swarm_total * stored_gb,
            "at_rest_wh_per_gb_month": head["swarm_at_rest_wh_per_gb_month"],
            "audit_wh_per_gb_month": head["swarm_audit_wh_per_gb_month"],
            "one_time_amortized_wh_per_gb_month": float(head["swarm_one_time_wh_per_gb"]) / months,
            "repair_wh_per_gb_month": head["swarm_repair_wh_per_gb_month"],
            "encode_wh_per_gb": head["swarm_encode_wh_per_gb"],
            "encode_source": head["swarm_encode_source"],
            "repair_cpu_source": head["swarm_repair_cpu_source"],
            "marginal_wh_per_gb_month": marginal["swarm_wh_per_gb_month"],
            "loss_probability": head["swarm_loss_probability"],
        },
        "baseline": {
            "wh_per_gb_month": base_total,
            "wh_per_month": base_total * stored_gb,
            "at_rest_wh_per_gb_month": head["baseline_at_rest_wh_per_gb_month"],
            "one_time_amortized_wh_per_gb_month": float(head["baseline_one_time_wh_per_gb"]) / months,
            "repair_wh_per_gb_month": head["baseline_repair_wh_per_gb_month"],
            "replication": c.value("baseline_replication"),
            "pue": c.value("baseline_pue"),
            "loss_probability": head["baseline_loss_probability"],
        },
        "swarm_cheaper": swarm_total < base_total,
        "swarm_cheaper_marginal": bool(marginal["swarm_cheaper"]),
        "equal_durability": {
            "swarm_scheme": layout.label,
            "swarm_wh_per_gb_month": swarm_total,
            "swarm_marginal_wh_per_gb_month": marginal["swarm_wh_per_gb_month"],
            "swarm_loss_probability": head["swarm_loss_probability"],
            "baseline_replicas": head["equal_durability_replicas"],
            "baseline_loss_probability": head["baseline_equal_loss_probability"],
            "baseline_wh_per_gb_month": equal_total,
            "baseline_wh_per_month": equal_total * stored_gb,
            "baseline_at_rest_wh_per_gb_month": head["baseline_equal_at_rest_wh_per_gb_month"],
            "baseline_one_time_amortized_wh_per_gb_month":
                float(head["baseline_equal_one_time_wh_per_gb"]) / months,
            "baseline_repair_wh_per_gb_month": head["baseline_equal_repair_wh_per_gb_month"],
            "swarm_cheaper": swarm_total < equal_total,
            "swarm_cheaper_marginal": float(marginal["swarm_wh_per_gb_month"]) < equal_total,
            "assumptions": {name: c.value(name) for name in (
                "swarm_holder_afr", "swarm_repair_hours", "cloud_holder_afr", "cloud_repair_hours")},
        },
        "per_copy": {
            "swarm_scheme": layout.label,
            "swarm_wh_per_gb_month": swarm_total,
            "swarm_loss_probability": head["swarm_loss_probability"],
            "baseline_replicas": c.value("baseline_replication"),
            "baseline_loss_probability": head["baseline_loss_probability"],
            "baseline_wh_per_gb_month": base_total,
            "swarm_cheaper": swarm_total < base_total,
        },
        "one_time_per_gb": {
            "put_j_per_gb": m_in.put_j_per_gb,
            "replicate_in_j_per_gb": m_in.replicate_in_j_per_gb,
            "replicate_out_j_per_gb": m_in.replicate_out_j_per_gb,
            "swarm_wh_per_gb": head["swarm_one_time_wh_per_gb"],
            "swarm_replication_network_wh_per_gb": layout.placed_factor * net * 1000.0,
            "ec_encode_j_per_gb": m_in.ec_encode_j_per_gb,
            "ec_repair_j_per_gb": m_in.ec_repair_j_per_gb,
            "baseline_ingest_network_wh_per_gb": baseline_ingest_network_wh_per_gb(
                c.value("baseline_replication"), net, c.value("network_inter_dc_kwh_per_gb")
            ),
            "delivery_network_wh_per_gb": delivery_network_wh_per_gb(net),
            "joules_per_audit": m_in.joules_per_audit,
            "amortization_months": months,
        },
        "operations": _operations(totals),
        "coefficients": c.as_list(),
        "sensitivity": sensitivity_table(c, m_in, schemes=schemes),
        "by_copies": _by_copies(c, m_in, disk, replica_options),
        "by_scheme": _by_scheme(c, m_in, disk, schemes),
        "equal_durability_by_afr": _by_afr(c, m_in, disk, schemes),
        "notes": [
            "CPU energy method per operation is in operations.<kind>.methods; "
            "cpu-time-estimate = process CPU seconds x cpu_watts_per_core.",
            "RAPL measures the whole CPU package; figures are attributed by this "
            "process's share of busy CPU time when /proc/stat is readable.",
            "Network kWh/GB is an average, not a marginal cost; delivery to readers "
            "costs the same per GB from swarm or cloud under that coefficient.",
            "Marginal accounting charges nothing for disks that spin anyway.",
            "Baseline CPU energy (cloud request handling) is not counted; the swarm's is.",
            "Equal durability: the cloud's replica count is the fewest whose annual loss "
            "probability (docs/DURABILITY.md; cloud_holder_afr, cloud_repair_hours) is at most "
            "the swarm scheme's (swarm_holder_afr, swarm_repair_hours); failures independent.",
            "EC: at rest (K+M)/K of the object plus the owner's copy if kept (not counted for "
            "durability); encode and rebuild CPU from the ledger (ec-encode, ec-repair) when "
            "measured, else bench/erasure.py CPU-s/GB x cpu_watts_per_core (encode_source).",
            "The cloud is modelled with whole replicas (CCF); a cloud that erasure-codes "
            "internally stores fewer bytes than its replica count says.",
        ],
    }
