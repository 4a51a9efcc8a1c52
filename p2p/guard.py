"""A trio shared/exclusive guard between writers and garbage collection.

Fetches and imports write blocks that become pinned only at the end; gc
must not run in between or it would delete them. Many writers may hold the
guard together (shared); gc holds it alone (exclusive). Waiting happens in
the event loop, never by blocking a thread.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio


class StoreGuard:
    def __init__(self) -> None:
        self._shared = 0
        self._exclusive = False
        self._changed = trio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    @asynccontextmanager
    async def shared(self) -> AsyncIterator[None]:
        while self._exclusive:
            await self._changed.wait()
        self._shared += 1
        try:
            yield
        finally:
            self._shared -= 1
            self._notify()

    @asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        while self._exclusive or self._shared:
            await self._changed.wait()
        self._exclusive = True
        try:
            yield
        finally:
            self._exclusive = False
            self._notify()
