"""Energy per stored gigabyte: measure, record, model and report.

Role: measure the CPU energy of each store operation (RAPL or a documented
estimate), keep it in a ledger table of the repo index, and compare the
swarm's energy per GB-month with a centralized cloud store using sourced
coefficients that a user can override.

Deliberately not here: networking or trio (peers' summaries arrive as plain
dicts), wiring into the repo (the caller passes a sqlite3 connection), and any
claim the coefficients do not support: the report says when the swarm costs
more.
"""

from __future__ import annotations

from .coefficients import Coefficient, Coefficients, load_coefficients
from .ledger import KINDS, create_schema, merge_summaries, record, summary
from .meter import ESTIMATE, RAPL, EnergyMeter, Measurement, measure
from .report import build_report, plot, render_text

__all__ = [
    "Coefficient",
    "Coefficients",
    "ESTIMATE",
    "EnergyMeter",
    "KINDS",
    "Measurement",
    "RAPL",
    "build_report",
    "create_schema",
    "load_coefficients",
    "measure",
    "merge_summaries",
    "plot",
    "record",
    "render_text",
    "summary",
]
