"""Resolve `/dnsaddr/HOST[/p2p/ID]` to dialable TCP multiaddrs (libp2p dnsaddr spec).

A dnsaddr names TXT records at `_dnsaddr.HOST` whose values are
`dnsaddr=<multiaddr>`; a value may itself be a `/dnsaddr/...`, resolved in
turn. kubo's bootstrap list is made of these (bootstrap.libp2p.io). The
walk is bounded in depth, lookups and results, since the records come from
whoever controls the zone. With a `/p2p/ID` suffix only values ending in
that id are kept, so a record cannot swap in another peer. Values we cannot
dial (QUIC, WebSocket, ...) are skipped. The resolver is an interface
(`TxtResolver`): `dns_txt.UdpTxtResolver` for real lookups, fakes in tests.
"""

from __future__ import annotations

import logging
from typing import Protocol

from shoal.p2p.errors import InvalidMultiaddr, P2PError
from shoal.p2p.secure.multiaddr import Dnsaddr, Multiaddr, parse_address

__all__ = ["MAX_DEPTH", "MAX_LOOKUPS", "MAX_RESULTS", "TxtResolver", "resolve_dnsaddr"]

log = logging.getLogger(__name__)

MAX_DEPTH = 4
"""Nested /dnsaddr levels followed (bootstrap.libp2p.io uses 2)."""
MAX_LOOKUPS = 32
MAX_RESULTS = 64
_PREFIX = "dnsaddr="


class TxtResolver(Protocol):
    """Anything that returns the TXT strings of a DNS name."""

    async def txt(self, name: str) -> list[str]: ...


async def resolve_dnsaddr(addr: Dnsaddr, resolver: TxtResolver, *, max_depth: int = MAX_DEPTH,
                          max_lookups: int = MAX_LOOKUPS,
                          max_results: int = MAX_RESULTS) -> list[Multiaddr]:
    """The TCP multiaddrs `addr` stands for, depth-first, deduplicated, bounded.

    A failed lookup (P2PError, OSError) drops its branch only; the others
    still count. Every result carries its /p2p/ id when the record had one.
    """
    out: list[Multiaddr] = []
    lookups = 0

    async def walk(current: Dnsaddr, depth: int) -> None:
        nonlocal lookups
        if lookups >= max_lookups or len(out) >= max_results:
            return
        lookups += 1
        try:
            values = await resolver.txt(f"_dnsaddr.{current.host}")
        except (P2PError, OSError) as exc:
            log.info("dnsaddr: lookup of %s failed: %s", current, exc)
            return
        for value in values:
            if len(out) >= max_results:
                return
            if not value.startswith(_PREFIX):
                continue
            try:
                found = parse_address(value[len(_PREFIX):])
            except InvalidMultiaddr:
                continue  # a transport we do not dial, or junk
            if current.peer_id is not None and found.peer_id != current.peer_id:
                continue
            if isinstance(found, Dnsaddr):
                if depth < max_depth:
                    await walk(found, depth + 1)
            elif found not in out:
                out.append(found)

    await walk(addr, 1)
    return out
