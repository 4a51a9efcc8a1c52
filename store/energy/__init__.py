"""Energy per stored gigabyte: measure, record, model and report (as data).

Role: measure the CPU energy of each store operation (RAPL or a documented
estimate), keep it in a ledger table of the repo index, and compare the
swarm's energy per GB-month with a centralized cloud store using sourced
coefficients that a user can override.

Deliberately not here: the text and the chart (shoal.cli.energy_report), networking or trio (peers' summaries arrive as plain
dicts), wiring into the repo (the caller passes a sqlite3 connection), and any
claim the coefficients do not support: the report says when the swarm costs
more.
"""

from __future__ import annotations

import importlib
from typing import Any

# Exports load on first use (PEP 562): the ledger and meter are on every
# put's path, the report and its tables are not.
_EXPORTS = {
    "Coefficient": "coefficients", "Coefficients": "coefficients", "load_coefficients": "coefficients",
    "KINDS": "ledger", "create_schema": "ledger", "merge_summaries": "ledger", "record": "ledger",
    "summary": "ledger",
    "ESTIMATE": "meter", "RAPL": "meter", "EnergyMeter": "meter", "Measurement": "meter", "measure": "meter",
    "build_report": "report",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


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
    "record",
    "summary",
]
