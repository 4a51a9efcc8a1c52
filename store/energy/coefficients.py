"""The coefficient table: every number the energy model uses, with its source.

Why one table: a reader of the report must be able to trace each figure to a
published source, and a user who disagrees with a figure must be able to
change it (config.toml `[energy]`) without editing code. The defaults live in
`coefficients.toml` beside this module.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator, Mapping

from shoal.store.errors import InvalidInput

DEFAULTS_PATH = Path(__file__).with_name("coefficients.toml")
OVERRIDE_SOURCE = "user override (config.toml [energy])"


@dataclass(frozen=True)
class Coefficient:
    """One figure with its provenance; `low`/`high` bound it where sources differ."""

    name: str
    value: float
    unit: str
    source: str
    year: str
    low: float | None = None
    high: float | None = None

    def as_dict(self) -> dict[str, object]:
        """JSON-ready form, used by the report's `coefficients` list."""
        out: dict[str, object] = {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "source": self.source,
            "year": self.year,
        }
        if self.low is not None:
            out["low"] = self.low
        if self.high is not None:
            out["high"] = self.high
        return out


class Coefficients(Mapping[str, Coefficient]):
    """Read-only name → `Coefficient` table; `c.value(name)` for the number."""

    def __init__(self, items: Mapping[str, Coefficient]) -> None:
        self._items = dict(items)

    def __getitem__(self, name: str) -> Coefficient:
        return self._items[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def value(self, name: str) -> float:
        """The number alone; a KeyError here is a bug (unknown coefficient)."""
        return self._items[name].value

    def band(self, name: str) -> tuple[float, float]:
        """(low, high), falling back to the value where no band is published."""
        c = self._items[name]
        low = c.low if c.low is not None else c.value
        high = c.high if c.high is not None else c.value
        return low, high

    def as_list(self) -> list[dict[str, object]]:
        return [c.as_dict() for c in self._items.values()]


def _number(name: str, field: str, raw: object) -> float:
    # bool is an int subclass; `true` in TOML is never a coefficient.
    if isinstance(raw, bool) or not isinstance(raw, (int, float)):
        raise InvalidInput(f"energy coefficient {name}.{field} must be a number, got {raw!r}")
    value = float(raw)
    if not math.isfinite(value) or value < 0:
        raise InvalidInput(f"energy coefficient {name}.{field} must be finite and >= 0, got {raw!r}")
    return value


def _parse_table(table: Mapping[str, object]) -> dict[str, Coefficient]:
    out: dict[str, Coefficient] = {}
    for name, entry in table.items():
        if not isinstance(entry, dict):
            raise InvalidInput(f"energy coefficient {name} must be a table")
        low = entry.get("low")
        high = entry.get("high")
        out[name] = Coefficient(
            name=name,
            value=_number(name, "value", entry.get("value")),
            unit=str(entry["unit"]),
            source=str(entry["source"]),
            year=str(entry["year"]),
            low=None if low is None else _number(name, "low", low),
            high=None if high is None else _number(name, "high", high),
        )
    return out


def load_coefficients(
    overrides: Mapping[str, object] | None = None, path: Path = DEFAULTS_PATH
) -> Coefficients:
    """Load the default table and apply `overrides` (name → value).

    `overrides` is the `[energy]` table of config.toml. An unknown name is an
    error rather than being ignored, because a typo would otherwise silently
    leave the default in force and the report would claim a figure the user
    thinks they changed. An overridden coefficient's source says so.
    """
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise InvalidInput(f"cannot read energy coefficients {path}: {e}") from e
    items = _parse_table(table)
    for name, raw in (overrides or {}).items():
        if name not in items:
            known = ", ".join(sorted(items))
            raise InvalidInput(f"unknown energy coefficient {name!r} in [energy]; known: {known}")
        items[name] = replace(
            items[name], value=_number(name, "value", raw), source=OVERRIDE_SOURCE, year="user"
        )
    return Coefficients(items)
