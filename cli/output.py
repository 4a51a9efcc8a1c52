"""Output helpers: data to stdout, progress to stderr only on a terminal."""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from typing import Any, Callable, Iterator


def print_json(value: Any) -> None:
    """Stable, script-friendly JSON on stdout (sorted keys, one document)."""
    json.dump(value, sys.stdout, sort_keys=True, indent=2)
    sys.stdout.write("\n")


def plural(n: int, one: str, many: str | None = None) -> str:
    """'1 copy', '2 copies', '0 peers': never "1 copies"."""
    return f"{n} {one if n == 1 else (many or one + 's')}"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True) -> Iterator[Callable[[int], None]]:
    """Yield an `advance(n_bytes)` callback; draws a bar only on a terminal.

    The bar goes to stderr, so `shoal put f | xargs ...` still gets a clean CID.
    """
    if not enabled or not sys.stderr.isatty():
        yield lambda n: None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.update(task, advance=n)
