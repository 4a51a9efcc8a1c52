"""A cancel flag that long synchronous store work checks between steps.

Why: `store/` runs in worker threads (trio.to_thread), and a thread cannot
be interrupted from outside. When the caller goes away (a CLI client that
disconnected, a node shutting down) the driver sets the flag; the export or
import checks it between blocks and raises `Cancelled`, so it stops within
one block's work and its normal error path removes what it left half done.
"""

from __future__ import annotations

import threading

from shoal.store.errors import StoreError

__all__ = ["Cancelled", "CancelFlag"]


class Cancelled(StoreError):
    """The work was cancelled by its caller (the client left, or the node stops)."""


class CancelFlag:
    """Thread-safe, set once; `check()` raises `Cancelled` after `set()`."""

    __slots__ = ("_event", "reason")

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "cancelled"

    def set(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled(self.reason)

    def progress(self, _n: int = 0) -> None:
        """Usable as an importer `progress` callback: checks the flag per chunk."""
        self.check()
