"""One place that turns exceptions into one-line messages and exit codes.

User errors (a bad CID, a missing file, a locked repo, a full disk) are
expected: they print `shoal: error: <message>` and, where useful, a hint on a
second line starting with `hint:`. Anything else is a bug and keeps its
traceback so it can be reported.
"""

from __future__ import annotations

import errno
import sys
from typing import NoReturn

from shoal.store.errors import StoreError

EXIT_OK = 0
EXIT_FAILURE = 1  # the command ran and found a problem (verify failed) or a user error
EXIT_USAGE = 2  # argparse's own code for bad arguments


class CliError(Exception):
    """An error the CLI itself raises (bad flag combination, unreadable path)."""

    def __init__(self, message: str, hint: str = "", code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def _p2p_error_types() -> tuple[type[BaseException], ...]:
    try:
        from shoal.p2p.errors import P2PError
    except ImportError:  # pragma: no cover - p2p is part of the package
        return ()
    return (P2PError,)


def describe(exc: BaseException) -> tuple[str, str] | None:
    """(message, hint) for an expected error, or None for a bug."""
    if isinstance(exc, (CliError, StoreError)) or isinstance(exc, _p2p_error_types()):
        return str(exc) or type(exc).__name__, getattr(exc, "hint", "")
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            # Not a store error: the full disk may be the output's, not the repo's.
            where = f" writing {exc.filename}" if exc.filename else ""
            return f"disk full{where} (no space left on device)", "free some space on that disk and try again"
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}", ""
    return None


def fail(message: str, hint: str = "", code: int = EXIT_FAILURE) -> NoReturn:
    """Print a one-line error (plus an optional hint line) and exit."""
    print(f"shoal: error: {message}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    raise SystemExit(code)
