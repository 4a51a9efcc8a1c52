"""The energy report as data: ledger totals + coefficients → a JSON-ready dict.

Why a plain dict: `shoal energy --json` prints it as is, the text and the
chart are views of it (shoal.cli.energy_report: the store holds no
presentation), and a test can check the figures without parsing prose. The report states its method (RAPL or estimate), its sources, and the
sensitivity table, so a reader can see where the swarm wins and where not.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from shoal.store.errors import InvalidInput
from shoal.store.energy.coefficients import Coefficients
from shoal.store.energy.ledger import BYTE_FIELDS, KINDS, PRIMARY_BYTES, merge_summaries
from shoal.store.energy.model import (
    GB, DiskType, MeasuredInputs, Scenario, baseline_ingest_network_wh_per_gb,
    delivery_network_wh_per_gb, evaluate, measured_inputs, sensitivity_table,
    swarm_replication_network_wh_per_gb,
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


def build_report(
    summary: Mapping[str, Mapping[str, Any]],
    stored_bytes: int,
    copies: int,
    coefficients: Coefficients,
    peers_summaries: Iterable[Mapping[str, Mapping[str, Any]]] = (),
    *,
    objects: int = 1,
    disk: DiskType = "hdd",
) -> Report:
    """Compare the swarm with the centralized baseline for `stored_bytes` held
    in `copies` copies. `summary` is this node's `ledger.summary`; add peers'
    summaries to get swarm-wide operation totals (a replica's energy is spent
    where it is held). `objects` sets the per-object audit cost per GB."""
    if stored_bytes < 0 or copies < 1 or objects < 0:
        raise InvalidInput("energy report: stored_bytes >= 0, copies >= 1, objects >= 0 required")
    peers = list(peers_summaries)
    totals = merge_summaries([summary, *peers])
    methods: dict[str, int] = {}
    for t in totals.values():
        for m, n in dict(t["methods"]).items():
            methods[m] = methods.get(m, 0) + int(n)
    m_in = measured_inputs(totals, stored_bytes, objects)
    c = coefficients
    pue = c.value("swarm_pue")
    head = evaluate(Scenario(copies, pue, disk, "value", "attributional"), c, m_in)
    marginal = evaluate(Scenario(copies, pue, disk, "value", "marginal"), c, m_in)
    net = c.value("network_kwh_per_gb")
    stored_gb = stored_bytes / GB
    swarm_total = float(head["swarm_wh_per_gb_month"])
    base_total = float(head["baseline_wh_per_gb_month"])
    months = float(head["amortization_months"])
    return {
        "method": _overall_method(methods),
        "methods": methods,
        "scope": "swarm" if peers else "node",
        "peers": len(peers),
        "stored_bytes": stored_bytes,
        "stored_gb": stored_gb,
        "copies": copies,
        "objects": objects,
        "disk": disk,
        "accounting": "attributional",
        "swarm": {
            "wh_per_gb_month": swarm_total,
            "wh_per_month": swarm_total * stored_gb,
            "at_rest_wh_per_gb_month": head["swarm_at_rest_wh_per_gb_month"],
            "audit_wh_per_gb_month": head["swarm_audit_wh_per_gb_month"],
            "one_time_amortized_wh_per_gb_month": float(head["swarm_one_time_wh_per_gb"]) / months,
            "marginal_wh_per_gb_month": marginal["swarm_wh_per_gb_month"],
        },
        "baseline": {
            "wh_per_gb_month": base_total,
            "wh_per_month": base_total * stored_gb,
            "at_rest_wh_per_gb_month": head["baseline_at_rest_wh_per_gb_month"],
            "one_time_amortized_wh_per_gb_month": float(head["baseline_one_time_wh_per_gb"]) / months,
            "replication": c.value("baseline_replication"),
            "pue": c.value("baseline_pue"),
        },
        "swarm_cheaper": swarm_total < base_total,
        "swarm_cheaper_marginal": bool(marginal["swarm_cheaper"]),
        "one_time_per_gb": {
            "put_j_per_gb": m_in.put_j_per_gb,
            "replicate_in_j_per_gb": m_in.replicate_in_j_per_gb,
            "replicate_out_j_per_gb": m_in.replicate_out_j_per_gb,
            "swarm_wh_per_gb": head["swarm_one_time_wh_per_gb"],
            "swarm_replication_network_wh_per_gb": swarm_replication_network_wh_per_gb(copies, net),
            "baseline_ingest_network_wh_per_gb": baseline_ingest_network_wh_per_gb(
                c.value("baseline_replication"), net, c.value("network_inter_dc_kwh_per_gb")
            ),
            "delivery_network_wh_per_gb": delivery_network_wh_per_gb(net),
            "joules_per_audit": m_in.joules_per_audit,
            "amortization_months": months,
        },
        "operations": _operations(totals),
        "coefficients": c.as_list(),
        "sensitivity": sensitivity_table(c, m_in, (2, 3, 5, copies)),
        "by_copies": _by_copies(c, m_in, disk, sorted({2, 3, 5, copies})),
        "notes": [
            "CPU energy method per operation is in operations.<kind>.methods; "
            "cpu-time-estimate = process CPU seconds x cpu_watts_per_core.",
            "RAPL measures the whole CPU package; figures are attributed by this "
            "process's share of busy CPU time when /proc/stat is readable.",
            "Network kWh/GB is an average, not a marginal cost; delivery to readers "
            "costs the same per GB from swarm or cloud under that coefficient.",
            "Marginal accounting charges nothing for disks that spin anyway.",
            "Baseline CPU energy (cloud request handling) is not counted; the swarm's is.",
        ],
    }
