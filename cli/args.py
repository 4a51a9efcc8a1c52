"""Argument types shared by every command: sizes, counts, durations.

Each is an argparse `type=` callable that raises ArgumentTypeError with a
message a user can act on, so a bad value ends as one line on stderr (see
`shoal.cli.main.ShoalArgumentParser.error`) and never reaches a handler. Sizes take
the same binary suffixes everywhere (`--offset 1M`, `--quota 10G`,
`demo --size 48M`), so a user learns the syntax once.
"""

from __future__ import annotations

import argparse
import math
import re
from fractions import Fraction
from typing import Callable

__all__ = ["parse_size", "size", "positive_size", "positive_int", "non_negative_int", "positive_seconds", "seconds_at_least"]

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?)(I?B)?\s*$", re.IGNORECASE)
SIZE_HINT = "a size is bytes or a number with a binary suffix: 4096, 512K, 1M, 1.5G, 2T (1K = 1024)"


def parse_size(text: str) -> int:
    """'10G', '512M', '1.5T', '1MiB', '1000' -> bytes (binary units: 1K = 1024).

    ValueError (with the reason) if the text is not a whole number of bytes.
    """
    m = _SIZE.match(text)
    if m is None:
        if text.strip().startswith("-"):
            raise ValueError(f"must not be negative: {text!r}")
        raise ValueError(f"not a size: {text!r}")
    number, unit, _b = m.groups()
    value = Fraction(number) * _UNITS[unit.upper()]  # exact: a float loses bytes past 2^53
    if value.denominator != 1:
        raise ValueError(f"not a whole number of bytes: {text!r}")
    return int(value)


def size(text: str) -> int:
    """argparse type: a byte count, with an optional binary suffix."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc} ({SIZE_HINT})") from None


def positive_size(text: str) -> int:
    """argparse type: a byte count of at least 1."""
    value = size(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 byte, not {text!r}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: 0, 1, 2, ..."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type: 1, 2, 3, ..."""
    value = non_negative_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text!r}")
    return value


def positive_seconds(text: str) -> float:
    """argparse type: a duration in seconds, more than 0 (0 would mean 'busy loop')."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def seconds_at_least(minimum: float) -> Callable[[str], float]:
    """argparse type: a duration of at least `minimum` seconds (a tiny positive
    interval like 1e-320 is "above 0" but still a busy loop)."""
    def parse(text: str) -> float:
        value = positive_seconds(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} seconds, not {text!r}")
        return value
    return parse
