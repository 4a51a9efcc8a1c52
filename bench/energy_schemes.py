"""Energy per stored GB-month by storage scheme, swarm vs cloud, at equal durability.

What it prints (markdown, for bench/RESULTS.md), from the energy model of
`shoal energy` (shoal.store.energy: `build_report`) on its default
coefficients (store/energy/coefficients.toml, or a config's `[energy]`
overrides given with `--set name=value`), no ledger (CPU energy: the
coefficients; it is well under 1 % of every total here):

1. The headline, one row per scheme (replicas 2/3/5, EC 4+2 / 8+4 / 10+6
   with and without the owner's whole copy): stored bytes per object byte,
   the swarm's annual loss probability (docs/DURABILITY.md), the cloud
   replica count as durable, and Wh per GB-month for the swarm, the cloud
   at equal durability and the cloud at its own replication (per copy).
2. Equal durability as the swarm's holders fail more or less often
   (`swarm_holder_afr` low / default / high).
3. Equal durability across the network coefficient's band (low / default / high).
4. Per scheme, in how many of the 16 sensitivity scenarios (swarm PUE x
   disk x network x accounting) the swarm is cheaper, at equal durability
   and per copy.

Nothing here is measured on this machine: the figures are the model's, so
they do not depend on where it runs; the script exists so that every figure
quoted from them (README, docs/ENERGY.md) comes from a run.

Usage:
    .venv/bin/python bench/energy_schemes.py
    .venv/bin/python bench/energy_schemes.py --json bench/results/energy_schemes.json
    .venv/bin/python bench/energy_schemes.py --set network_kwh_per_gb=0.06
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from bench.common import markdown_table, write_json  # noqa: E402
from shoal.store.energy.coefficients import load_coefficients  # noqa: E402
from shoal.store.energy.model import DEFAULT_SCHEMES  # noqa: E402
from shoal.store.energy.report import build_report  # noqa: E402

GB = 10**9


def _pct(swarm: float, cloud: float) -> str:
    change = 100 * (swarm / cloud - 1)
    return f"{-change:.0f} % less" if change < 0 else f"{change:.0f} % more"


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def run(overrides: dict[str, float]) -> dict[str, Any]:
    c = load_coefficients(overrides)
    reports = {lay.label: build_report({}, GB, 1, c, scheme=lay) for lay in DEFAULT_SCHEMES}
    any_report = next(iter(reports.values()))
    return {
        "commit": _commit(),
        "overrides": overrides,
        "coefficients": {x["name"]: x["value"] for x in any_report["coefficients"]},
        "headline": [{
            "scheme": label, "stored_factor": r["stored_factor"],
            "swarm_loss_probability": r["equal_durability"]["swarm_loss_probability"],
            "cloud_replicas_equal": r["equal_durability"]["baseline_replicas"],
            "cloud_loss_probability_equal": r["equal_durability"]["baseline_loss_probability"],
            "swarm_wh_per_gb_month": r["swarm"]["wh_per_gb_month"],
            "swarm_marginal_wh_per_gb_month": r["swarm"]["marginal_wh_per_gb_month"],
            "swarm_repair_wh_per_gb_month": r["swarm"]["repair_wh_per_gb_month"],
            "cloud_equal_wh_per_gb_month": r["equal_durability"]["baseline_wh_per_gb_month"],
            "cloud_per_copy_wh_per_gb_month": r["baseline"]["wh_per_gb_month"],
            "cloud_per_copy_replicas": r["baseline"]["replication"],
        } for label, r in reports.items()],
        "by_afr": any_report["equal_durability_by_afr"],
        "by_scheme": any_report["by_scheme"],
        "wins": [{
            "scheme": label,
            "scenarios": sum(1 for row in any_report["sensitivity"] if row["scheme_label"] == label),
            "cheaper_equal": sum(1 for row in any_report["sensitivity"]
                                 if row["scheme_label"] == label and row["swarm_cheaper_equal"]),
            "cheaper_per_copy": sum(1 for row in any_report["sensitivity"]
                                    if row["scheme_label"] == label and row["swarm_cheaper"]),
        } for label in reports],
    }


def render(doc: dict[str, Any]) -> str:
    co = doc["coefficients"]
    out = [
        f"Written by `bench/energy_schemes.py` (Shoal {doc['commit']}; the energy model of `shoal energy` on its "
        f"default coefficients{', overrides ' + str(doc['overrides']) if doc['overrides'] else ''}; no ledger). "
        f"HDD on both sides, swarm PUE {co['swarm_pue']:g}, network {co['network_kwh_per_gb']:g} kWh/GB, "
        f"one-time energy over {co['amortization_months']:g} months, attributional unless marked. Swarm holders "
        f"fail at {co['swarm_holder_afr']:.1%}/yr and are replaced in {co['swarm_repair_hours']:g} h; cloud drives "
        f"{co['cloud_holder_afr']:.2%}/yr (Backblaze 2024), {co['cloud_repair_hours']:g} h. Wh per GB-month.",
        "",
        markdown_table(
            ["scheme", "stored", "P(loss)/yr", "cloud copies as durable", "swarm", "swarm marginal",
             "cloud, equal durability", "swarm vs cloud (equal)", f"cloud per copy ({doc['headline'][0]['cloud_per_copy_replicas']:g})",
             "swarm vs cloud (per copy)"],
            [[h["scheme"], f"{h['stored_factor']:.2f}x", f"{h['swarm_loss_probability']:.1e}",
              h["cloud_replicas_equal"], f"{h['swarm_wh_per_gb_month']:.2f}",
              f"{h['swarm_marginal_wh_per_gb_month']:.2f}", f"{h['cloud_equal_wh_per_gb_month']:.2f}",
              _pct(h["swarm_wh_per_gb_month"], h["cloud_equal_wh_per_gb_month"]),
              f"{h['cloud_per_copy_wh_per_gb_month']:.2f}",
              _pct(h["swarm_wh_per_gb_month"], h["cloud_per_copy_wh_per_gb_month"])]
             for h in doc["headline"]]),
        "",
        "Equal durability by the swarm holders' annual failure probability (swarm_holder_afr band):",
        "",
        markdown_table(
            ["scheme", "holder AFR", "P(loss)/yr", "cloud copies", "swarm", "cloud", "swarm cheaper"],
            [[r["scheme_label"], f"{100 * r['swarm_holder_afr']:.3g} %", f"{r['swarm_loss_probability']:.1e}",
              r["equal_durability_replicas"], f"{r['swarm_wh_per_gb_month']:.2f}",
              f"{r['baseline_equal_wh_per_gb_month']:.2f}", "yes" if r["swarm_cheaper_equal"] else "no"]
             for r in doc["by_afr"]]),
        "",
        "Equal durability across the network coefficient (swarm vs cloud as durable; marginal = the swarm's "
        "disks spin anyway):",
        "",
    ]
    rows = []
    for r in doc["by_scheme"]:
        if r["accounting"] != "attributional":
            continue
        marg = next(x for x in doc["by_scheme"] if x["scheme_label"] == r["scheme_label"]
                    and x["accounting"] == "marginal")
        cells = [r["scheme_label"]]
        for net in ("low", "value", "high"):
            s, b = r[f"swarm_{net}"], r[f"baseline_equal_{net}"]
            cells.append(f"{s:.2f} vs {b:.2f} ({'cheaper' if s < b else 'dearer'})")
        cells.append(f"{marg['swarm_value']:.2f} vs {marg['baseline_equal_value']:.2f}")
        rows.append(cells)
    lo, hi = "0.001", "0.06"
    out.append(markdown_table(["scheme", f"network {lo}", f"network {co['network_kwh_per_gb']:g} (default)",
                               f"network {hi}", "marginal, default network"], rows))
    out += ["", "Sensitivity scenarios (swarm PUE 1.0/1.54 x HDD/SSD x network low/high x attributional/marginal) "
                "where the swarm is cheaper:", "",
            markdown_table(["scheme", "at equal durability", "per copy"],
                           [[w["scheme"], f"{w['cheaper_equal']} of {w['scenarios']}",
                             f"{w['cheaper_per_copy']} of {w['scenarios']}"] for w in doc["wins"]])]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="also write the figures as JSON")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a coefficient, as config.toml [energy] does (repeatable)")
    args = ap.parse_args(argv)
    overrides: dict[str, float] = {}
    for item in args.set:
        name, _, value = item.partition("=")
        try:
            overrides[name.strip()] = float(value)
        except ValueError:
            ap.error(f"--set {item!r}: expected NAME=NUMBER")
    doc = run(overrides)
    sys.stdout.write(render(doc))
    if args.json:
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
