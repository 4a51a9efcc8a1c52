"""How `shoal energy` shows the report: the text summary, the detail table, the chart.

The numbers are shoal.store.energy.report's (a plain dict, the same one
`--json` prints); this module only renders them, so the store stays free of
presentation and matplotlib. matplotlib loads only when a chart is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from shoal.cli.errors import CliError


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "unmeasured"
    return f"{float(x):.{digits}f}"


def _sig(x: float | None) -> str:
    return "unmeasured" if x is None else f"{float(x):.3g}"


def _copies(n: int) -> str:
    return f"{n} {'copy' if n == 1 else 'copies'}"


def _compare(swarm: float, base: float) -> str:
    """'78% less', '12% more', 'the same' — the swarm against the baseline."""
    if base <= 0:
        return "more" if swarm > 0 else "the same"
    change = 100 * (swarm / base - 1)
    if abs(change) < 0.5:
        return "the same"
    if change < -99.5:
        return "over 99% less"
    return f"{-change:.0f}% less" if change < 0 else f"{change:.0f}% more"


def _prob(p: float) -> str:
    return f"{float(p):.1e}"


def _scheme_of(report: Mapping[str, Any]) -> str:
    """'3 copies' for a report from before schemes, else its label."""
    label = report.get("scheme_label")
    return str(label) if label else _copies(int(report["copies"]))


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """The answer first, in a few lines: what is stored, swarm against cloud
    at equal durability (the headline) and per copy (the older comparison),
    the parts of each total, and across how many scenarios the swarm wins."""
    sw: Mapping[str, Any] = report["swarm"]
    bl: Mapping[str, Any] = report["baseline"]
    eq: Mapping[str, Any] = report["equal_durability"]
    once: Mapping[str, Any] = report["one_time_per_gb"]
    s_tot, b_tot = float(sw["wh_per_gb_month"]), float(bl["wh_per_gb_month"])
    e_tot = float(eq["baseline_wh_per_gb_month"])
    n_eq = int(eq["baseline_replicas"])
    marginal = float(sw["marginal_wh_per_gb_month"])
    rows = report.get("sensitivity") or []
    wins = sum(1 for r in rows if r["swarm_cheaper"])
    wins_eq = sum(1 for r in rows if r.get("swarm_cheaper_equal"))
    by_scheme = [r for r in report.get("by_scheme") or [] if r["accounting"] == "attributional"]
    a = eq["assumptions"]
    rep = float(bl["replication"])
    return [
        "Energy per stored GB: this swarm vs a centralized cloud store",
        f"  stored {float(report['stored_gb']):.3f} GB as {_scheme_of(report)} "
        f"({float(report.get('stored_factor', report['copies'])):.2f}x), {report['disk']}; "
        f"CPU energy by {report['method']} (scope: {report['scope']})",
        f"  swarm {s_tot:.3f} vs cloud {e_tot:.3f} Wh per GB-month at equal durability "
        f"(cloud {_copies(n_eq)}): the swarm uses {_compare(s_tot, e_tot)}",
        f"  annual loss probability: swarm {_prob(eq['swarm_loss_probability'])} "
        f"(holders {float(a['swarm_holder_afr']):.1%}/yr, repair {float(a['swarm_repair_hours']):g} h), "
        f"cloud {_prob(eq['baseline_loss_probability'])} "
        f"(drives {float(a['cloud_holder_afr']):.2%}/yr, repair {float(a['cloud_repair_hours']):g} h)",
        f"  per copy (cloud at its own {rep:g} copies, loss {_prob(bl['loss_probability'])}): "
        f"swarm {s_tot:.3f} vs cloud {b_tot:.3f}, {_compare(s_tot, b_tot)}",
        f"  counting only what disks that spin anyway add (marginal): {marginal:.3f}, "
        f"{_compare(marginal, e_tot)} at equal durability",
        "",
        f"  {'Wh per GB-month':<34}{'swarm':>10}{'cloud=':>10}{'cloud':>10}",
        f"  {'at rest (disk x bytes x PUE)':<34}{_fmt(sw['at_rest_wh_per_gb_month']):>10}"
        f"{_fmt(eq['baseline_at_rest_wh_per_gb_month']):>10}{_fmt(bl['at_rest_wh_per_gb_month']):>10}",
        f"  {'audits':<34}{_fmt(sw['audit_wh_per_gb_month']):>10}{'-':>10}{'-':>10}",
        f"  {'repair of lost holders':<34}{_fmt(sw.get('repair_wh_per_gb_month', 0.0)):>10}"
        f"{_fmt(eq['baseline_repair_wh_per_gb_month']):>10}{_fmt(bl.get('repair_wh_per_gb_month', 0.0)):>10}",
        f"  {'one-time, over ' + _fmt(once['amortization_months'], 0) + ' months':<34}"
        f"{_fmt(sw['one_time_amortized_wh_per_gb_month']):>10}"
        f"{_fmt(eq['baseline_one_time_amortized_wh_per_gb_month']):>10}"
        f"{_fmt(bl['one_time_amortized_wh_per_gb_month']):>10}",
        f"  {'total':<34}{_fmt(s_tot):>10}{_fmt(e_tot):>10}{_fmt(b_tot):>10}",
        f"  (cloud= at equal durability, {_copies(n_eq)}; cloud = its own {rep:g} copies)",
        "",
        "  by scheme (swarm vs cloud at equal durability): " + "; ".join(
            f"{r['scheme_label']} {float(r['swarm_value']):.2f} vs {float(r['baseline_equal_value']):.2f}"
            for r in by_scheme),
        f"  the swarm is cheaper in {wins_eq} of {len(rows)} scenarios at equal durability, {wins} per copy "
        f"(scheme, PUE, disk, network, accounting)",
    ]


def render_text(report: Mapping[str, Any], detail: bool = False) -> str:
    """The summary, and with `detail` the one-time energy, equal durability
    by holder failure rate, and the sensitivity table (every scenario the
    summary's last line counts)."""
    once: Mapping[str, Any] = report["one_time_per_gb"]
    sw: Mapping[str, Any] = report["swarm"]
    lines = summary_lines(report)
    if not detail:
        lines += ["", "More: --detail (every scenario), --json, --plot FILE.png; sources in docs/ENERGY.md."]
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"One-time: put {_sig(once['put_j_per_gb'])} J/GB, replicate in "
        f"{_sig(once['replicate_in_j_per_gb'])} / out {_sig(once['replicate_out_j_per_gb'])} J/GB (CPU); "
        f"network: swarm replication {_fmt(once['swarm_replication_network_wh_per_gb'], 2)} Wh/GB, "
        f"baseline ingest {_fmt(once['baseline_ingest_network_wh_per_gb'], 2)} Wh/GB, "
        f"delivery {_fmt(once['delivery_network_wh_per_gb'], 2)} Wh/GB either way",
        "",
        f"Erasure coding: encode {_fmt(sw.get('encode_wh_per_gb', 0.0), 4)} Wh/GB "
        f"({sw.get('encode_source', 'none')}), rebuild CPU {sw.get('repair_cpu_source', 'none')}",
        "",
        "Equal durability by the swarm holders' annual failure probability (default network, attributional):",
        f"{'scheme':>20} {'AFR':>6} {'P(loss)/yr':>10} {'cloud copies':>12} {'swarm':>8} {'cloud=':>8}  swarm cheaper?",
    ]
    for r in report.get("equal_durability_by_afr") or []:
        lines.append(
            f"{r['scheme_label']:>20} {float(r['swarm_holder_afr']):>6.1%} {_prob(r['swarm_loss_probability']):>10}"
            f" {int(r['equal_durability_replicas']):>12} {float(r['swarm_wh_per_gb_month']):>8.3f}"
            f" {float(r['baseline_equal_wh_per_gb_month']):>8.3f}  {'yes' if r['swarm_cheaper_equal'] else 'no'}"
        )
    lines += [
        "",
        "Sensitivity (Wh per GB-month, one-time energy amortized; cloud= at equal durability,"
        " cloud at its own replication):",
        f"{'scheme':>20} {'swarmPUE':>8} {'disk':>4} {'net kWh/GB':>10} {'accounting':>13}"
        f" {'swarm':>8} {'cloud=':>8} {'cloud':>8}  cheaper at equal durability? per copy?",
    ]
    for r in report["sensitivity"]:
        label = r.get("scheme_label") or _copies(int(r["copies"]))
        lines.append(
            f"{label:>20} {r['swarm_pue']:>8.3g} {r['disk']:>4} {r['network_kwh_per_gb']:>10.4g}"
            f" {r['accounting']:>13} {r['swarm_wh_per_gb_month']:>8.3f}"
            f" {float(r.get('baseline_equal_wh_per_gb_month', r['baseline_wh_per_gb_month'])):>8.3f}"
            f" {r['baseline_wh_per_gb_month']:>8.3f}"
            f"  {'yes' if r.get('swarm_cheaper_equal') else 'no':>3} {'yes' if r['swarm_cheaper'] else 'no':>3}"
        )
    lines.append("")
    lines.append("Coefficients and sources: `shoal energy --json` (coefficients), docs/ENERGY.md.")
    return "\n".join(lines) + "\n"


def plot(report: Mapping[str, Any], path: Path | str) -> Path:
    """Write a bar chart (PNG, SVG or PDF by the file's suffix): headline
    components (left) and how the swarm's total moves with copies and
    accounting against the baseline (right). Needs matplotlib (the `plot`
    extra); uses the Agg backend, no display."""
    fig = figure(report)  # first: it says so if matplotlib is missing
    import matplotlib.pyplot as plt

    out = Path(path)
    try:
        fig.savefig(out, dpi=110)
    except ValueError as exc:  # a suffix matplotlib cannot write
        raise CliError(f"cannot write the chart to {out}: {exc}") from None
    except OSError as exc:
        raise CliError(f"cannot write the chart to {out}: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return out


def figure(report: Mapping[str, Any]) -> Any:
    """The chart as a matplotlib Figure (the caller saves and closes it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise CliError("the energy plot needs matplotlib: pip install 'shoal[plot]'") from e
    sw: Mapping[str, Any] = report["swarm"]
    bl: Mapping[str, Any] = report["baseline"]
    eq: Mapping[str, Any] = report["equal_durability"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.6), gridspec_kw={"width_ratios": [1, 1.8]})

    n_eq, rep = int(eq["baseline_replicas"]), float(bl["replication"])
    names = ["swarm\n" + _scheme_of(report), f"cloud, equal\ndurability ({n_eq})", f"cloud, per copy\n({rep:g} copies)"]
    parts = [
        ("at rest", [sw["at_rest_wh_per_gb_month"], eq["baseline_at_rest_wh_per_gb_month"],
                     bl["at_rest_wh_per_gb_month"]], "#4c72b0"),
        ("one-time (network + CPU), amortized",
         [sw["one_time_amortized_wh_per_gb_month"], eq["baseline_one_time_amortized_wh_per_gb_month"],
          bl["one_time_amortized_wh_per_gb_month"]], "#dd8452"),
        ("repair of lost holders", [sw.get("repair_wh_per_gb_month", 0.0), eq["baseline_repair_wh_per_gb_month"],
                                    bl.get("repair_wh_per_gb_month", 0.0)], "#8172b3"),
        ("audits", [sw["audit_wh_per_gb_month"], 0.0, 0.0], "#55a868"),
    ]
    bottom = [0.0, 0.0, 0.0]
    for label, vals, color in parts:
        vals = [float(v) for v in vals]
        ax1.bar(names, vals, bottom=bottom, label=label, color=color, width=0.55)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for i, total in enumerate(bottom):
        ax1.text(i, total, f"{total:.2f}", ha="center", va="bottom", fontsize=10, fontweight="bold")
    ax1.set_ylim(0, max(bottom) * 1.18 or 1)
    ax1.set_ylabel("Wh per GB-month")
    ax1.tick_params(axis="x", labelsize=9)
    ax1.set_title(f"Default figures ({report['disk']}, attributional): annual loss\n"
                  f"swarm {_prob(eq['swarm_loss_probability'])}, cloud {_prob(eq['baseline_loss_probability'])}"
                  f" equal / {_prob(bl['loss_probability'])} per copy", fontsize=10)
    ax1.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=1, frameon=False)

    # Right: bar = default network coefficient, whisker = its low..high band;
    # every scheme against the cloud at the replica count as durable as it.
    rows: list[Mapping[str, Any]] = report["by_scheme"]
    own = report.get("scheme_label")
    labels = list(dict.fromkeys(str(r["scheme_label"]) for r in rows
                                if not str(r["scheme_label"]).endswith("drop-local") or r["scheme_label"] == own))

    def pick(label: str, acc: str, key: str) -> tuple[float, float, float]:
        r = next(r for r in rows if r["scheme_label"] == label and r["accounting"] == acc)
        return float(r[key + "_low"]), float(r[key + "_value"]), float(r[key + "_high"])

    series = [  # (label, accounting, side, bar colour, a darker one for its numbers)
        ("swarm, attributional", "attributional", "swarm", "#4c72b0", "#4c72b0"),
        ("swarm, marginal (disks spin anyway)", "marginal", "swarm", "#8fb0de", "#5b7fb8"),
        ("cloud at equal durability", "attributional", "baseline_equal", "#c44e52", "#c44e52"),
    ]
    width = 0.26
    for k, (label, acc, key, color, text_color) in enumerate(series):
        xs = [i + (k - 1) * width for i in range(len(labels))]
        lo, mid, hi = zip(*(pick(lab, acc, key) for lab in labels))
        ax2.bar(xs, mid, width=width, color=color, label=label)
        ax2.errorbar(xs, mid, yerr=[[m - l for m, l in zip(mid, lo)], [h - m for h, m in zip(hi, mid)]],
                     fmt="none", ecolor="#333333", capsize=3, lw=1)
        # Each bar's value goes under the axis, not on the bar: a whisker runs
        # through the middle of every bar, and on a log scale it can reach
        # from the bottom of the plot to the top, so no spot on a bar is free.
        for x, v in zip(xs, mid):
            ax2.text(x, -0.02, f"{v:.2f}", transform=ax2.get_xaxis_transform(), ha="center", va="top",
                     fontsize=7, color=text_color, fontweight="bold")
    per_copy = float(bl["wh_per_gb_month"])
    ax2.axhline(per_copy, color="#c44e52", ls="--", lw=1,
                label=f"cloud per copy ({rep:g} copies, any scheme): {per_copy:.2f}")
    ax2.set_yscale("log")
    ax2.set_xticks(range(len(labels)), labels)
    ax2.tick_params(axis="x", pad=16, length=0, labelsize=9)  # room for the values above the tick labels
    ax2.set_ylabel("Wh per GB-month")
    ax2.set_title(
        f"By scheme ({report['disk']}, log scale), cloud at equal durability: bar and number =\n"
        f"default network kWh/GB, whisker = its low..high range",
        fontsize=10,
    )
    ax2.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax2.grid(axis="y", alpha=0.3)
    ax1.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Shoal energy per stored GB vs a centralized cloud store  (CPU method: {report['method']})",
                 fontsize=13)
    fig.tight_layout()
    return fig
