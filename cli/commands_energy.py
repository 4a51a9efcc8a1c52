"""`shoal energy [--json] [--plot FILE.png]`: energy per stored GB, swarm vs cloud.

With a running node the report comes from its `/v1/energy` route and covers
the swarm's operation totals (every connected peer's ledger summary); offline
it is built from this repo's ledger and objects alone. Either way the
arithmetic is shoal.store.energy.report's and the rendering
shoal.cli.energy_report's; this module only fetches and prints.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

# shoal.store.energy loads in the handlers: every `shoal` command imports this
# module to register its parser, and a put should not pay for the report.
from shoal.store.persist.repo import Repo

from shoal.cli.dispatch import Access, run
from shoal.cli.output import human_size, print_json


def register(sub: Any) -> None:
    p = sub.add_parser("energy", help="energy per stored GB: this swarm vs a centralized cloud store")
    p.add_argument("--detail", action="store_true",
                   help="also print the sensitivity table (every copy count, accounting and scenario)")
    p.add_argument("--plot", metavar="FILE", type=plot_path,
                   help="also write a chart to FILE: .png, .svg or .pdf; needs matplotlib (default: no chart)")
    p.set_defaults(handler=cmd_energy)


PLOT_FORMATS = (".png", ".svg", ".pdf")


def plot_path(text: str) -> Path:
    """argparse type for --plot: a file name matplotlib can write by its suffix."""
    path = Path(text)
    if path.suffix.lower() not in PLOT_FORMATS:
        raise argparse.ArgumentTypeError(
            f"cannot tell the chart format from {text!r}: name the file .png, .svg or .pdf")
    return path


def load_report(args: argparse.Namespace) -> dict[str, Any]:
    """Through the repo's node if one answers (swarm totals), else offline."""
    # Read-only: the report writes nothing, so it may run beside other commands.
    return run(args, node=lambda client: dict(client.call("GET", "/v1/energy")), offline=offline_report,
               access=Access.READ)


def offline_report(repo: Repo) -> dict[str, Any]:
    """This repo's report: offline, the repo is the whole (one-node) swarm."""
    from shoal.p2p.net.energy_service import local_report
    from shoal.store.energy.accounting import read_summary
    from shoal.store.energy.coefficients import load_coefficients

    from shoal.p2p.net.energy_service import _compact
    from shoal.p2p.secure.identity import Identity

    energy = repo.config.get("energy", {})
    coefficients = load_coefficients(energy if isinstance(energy, dict) else {})
    summary = read_summary(repo.index)
    report = dict(local_report(repo, summary, coefficients))
    # The fields the node's report adds, so that --json has one schema:
    # offline, this repo is the whole (one-node) swarm.
    report["node"] = {"peer_id": str(Identity.load_or_create(repo.identity_path).peer_id),
                      "operations": _compact(summary)}
    report["swarm_peers"] = {}
    return report


def cmd_energy(args: argparse.Namespace) -> int:
    from shoal.cli.energy_report import plot, render_text

    report = load_report(args)
    if args.plot:
        written = plot(report, args.plot)
        print(f"wrote {written}", file=sys.stderr)
    if args.json:
        print_json(report)
    else:
        sys.stdout.write(render_text(report, detail=args.detail))
    return 0


def brief_lines(report: Mapping[str, Any]) -> list[str]:
    """The demo's view: the report's summary and what was measured."""
    from shoal.cli.energy_report import summary_lines

    lines = [line.removeprefix("  ") for line in summary_lines(report) if line.strip()]
    ops = report.get("operations", {})
    measured = ", ".join(f"{kind} {float(op['joules']):.3g} J / {human_size(int(op['bytes']))}"
                         for kind, op in ops.items())
    lines.append(f"measured CPU energy ({report['method']}): {measured or 'nothing yet'}")
    return lines


def demo_step(swarm: Any, root: Path, cid: str) -> None:
    """The demo's last step: the energy report of the demo swarm, briefly."""
    node = swarm.nodes[0]
    report = node.call("GET", "/v1/energy")
    print(f"== energy: {node.name}'s objects, with the swarm's measured operations ==", flush=True)
    for line in brief_lines(report):
        print(f"  {line}", flush=True)
    print("  (every scenario: `shoal energy --detail`; also `--json`, `--plot FILE.png`; docs/ENERGY.md)", flush=True)
