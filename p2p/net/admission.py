"""Who may hold one of the node's inbound connection slots: sans-IO policy.

A stranger costs a socket, a task and a Noise handshake before we even know
its key, and a key costs nothing to make. So admission works in two steps,
each with a global cap and a per-IP cap:

- handshakes: at most `max_handshakes_per_ip` in flight from one address
  (an IPv4 address or an IPv6 /64: `address_group`)
  and `max_handshakes` in all; a new socket past either cap replaces the
  OLDEST handshake (of that address, or of all). A real handshake finishes
  in a few round trips, so a flood of silent sockets would have to outpace
  that to keep a real peer out, instead of holding every slot for the
  whole handshake timeout; and a flood from one address only ever
  displaces its own sockets.
- connections (after the handshake, when the key is known): at most
  `max_connections_per_ip` from one address, and `max_connections` in all,
  of which `reserved_for_protected` only protected peers may use. A
  protected peer is one the node vouches for (it decides, in
  `Node.is_protected`: a bootstrap peer from the config, an allowlisted
  peer, one protected by a service, a replica holder, one that delivered
  valid data to us and never corrupt data — never merely for connecting);
  protected peers are exempt from the per-IP cap. When the slots are full a newcomer takes the slot of the least valuable unprotected
  connection: first those that never sent data we asked for (a block, a proof), then the
  one idle longest. Connections younger than `grace_s` are left alone, so
  two newcomers cannot keep evicting each other before either is used;
  a protected newcomer ignores the grace period.

Nothing here touches a socket or a clock: the driver (`shoal.p2p.net.node`) passes
`now` and acts on the decisions (close the evicted connections, cancel the
dropped handshakes). Outbound connections are the node's own choice and are
not counted here.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Hashable, Mapping

from shoal.p2p.wire import limits as L
from shoal.p2p.errors import P2PError

Key = Hashable


@dataclass(frozen=True)
class AdmissionLimits:
    """The admission caps of one node (defaults from shoal.p2p.wire.limits).

    The per-IP defaults leave a swarm of a few dozen nodes on one host (all
    on 127.0.0.1, as the tests and the demo run) unaffected; an operator or a
    test sets them lower in config.toml (`[node.limits]`).
    """

    max_handshakes: int = L.MAX_PENDING_HANDSHAKES
    max_handshakes_per_ip: int = L.MAX_HANDSHAKES_PER_IP
    max_connections: int = L.MAX_CONNECTIONS_TOTAL
    max_connections_per_ip: int = L.MAX_CONNECTIONS_PER_IP
    reserved_for_protected: int = L.RESERVED_CONNECTIONS
    grace_s: float = L.NEW_CONNECTION_GRACE_S

    def __post_init__(self) -> None:
        for name in ("max_handshakes", "max_handshakes_per_ip", "max_connections", "max_connections_per_ip"):
            if getattr(self, name) < 1:
                raise P2PError(f"limit {name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.reserved_for_protected < self.max_connections:
            raise P2PError(f"reserved_for_protected must be in [0, max_connections), got "
                           f"{self.reserved_for_protected}")
        if self.grace_s < 0:
            raise P2PError(f"grace_s must not be negative, got {self.grace_s}")


@dataclass
class _Handshake:
    ip: str
    started: float


@dataclass
class Entry:
    """One admitted inbound connection as the policy sees it.

    The driver keeps `last_active` and `useful` current (any message in
    either direction; our requests answered with data) and `protected` is asked of
    the node at every decision, since a peer may prove itself later.
    """

    ip: str
    opened: float
    last_active: float
    useful: int = 0


@dataclass
class Decision:
    admit: bool
    evict: list[Key] = field(default_factory=list)
    reason: str = ""


class Admission:
    """Counts handshakes and inbound connections; decides admits and evictions."""

    def __init__(self, limits: AdmissionLimits | None = None) -> None:
        self.limits = limits or AdmissionLimits()
        self._handshakes: dict[Key, _Handshake] = {}  # insertion order = age
        self._hs_per_ip: dict[str, int] = {}
        self._conns: dict[Key, Entry] = {}
        self.refused = 0
        self.evicted = 0
        self.dropped_handshakes = 0

    # -- handshakes -------------------------------------------------------------

    def begin_handshake(self, key: Key, ip: str, now: float) -> Decision:
        """A socket was accepted; `evict` lists older handshakes to drop now.

        Never refuses: past the per-IP cap the oldest handshake from the same
        address goes, past the global cap the oldest of all. A real handshake
        takes a few round trips, so it finishes long before a flood can push
        it out; silent sockets only ever push out each other.
        """
        lim = self.limits
        ip = address_group(ip)
        evict: list[Key] = []
        if self._hs_per_ip.get(ip, 0) >= lim.max_handshakes_per_ip:
            evict.append(next(k for k, hs in self._handshakes.items() if hs.ip == ip))
        elif len(self._handshakes) >= lim.max_handshakes:
            evict.append(next(iter(self._handshakes)))
        for k in evict:
            self.end_handshake(k)
            self.dropped_handshakes += 1
        self._handshakes[key] = _Handshake(ip, now)
        self._hs_per_ip[ip] = self._hs_per_ip.get(ip, 0) + 1
        return Decision(True, evict)

    def end_handshake(self, key: Key) -> None:
        """The handshake finished, failed or was dropped (idempotent)."""
        hs = self._handshakes.pop(key, None)
        if hs is not None:
            _dec(self._hs_per_ip, hs.ip)

    @property
    def handshaking(self) -> int:
        return len(self._handshakes)

    # -- connections ------------------------------------------------------------

    def admit(self, key: Key, ip: str, protected: bool, now: float,
              is_protected: Mapping[Key, bool] | None = None) -> Decision:
        """An authenticated inbound connection wants a slot.

        `is_protected` says, for admitted keys, which peers are protected now
        (missing keys count as unprotected). On admit, `evict` lists the
        connections to close to make room (already forgotten here).
        """
        lim = self.limits
        ip = address_group(ip)
        prot = is_protected or {}
        same_ip = sum(1 for k, e in self._conns.items() if e.ip == ip and not prot.get(k, False))
        if not protected and same_ip >= lim.max_connections_per_ip:
            self.refused += 1
            return Decision(False, reason=f"{ip} already has {lim.max_connections_per_ip} connections")
        total = len(self._conns)
        unprotected = sum(1 for k in self._conns if not prot.get(k, False))
        # Unprotected peers share the slots below the reserve; a protected one
        # may use every slot, and may displace any unprotected connection.
        full = total >= lim.max_connections or (
            not protected and unprotected >= lim.max_connections - lim.reserved_for_protected)
        evict: list[Key] = []
        if full:
            victim = self._victim(now, prot, ignore_grace=protected)
            if victim is None:
                self.refused += 1
                return Decision(False, reason=f"all {total} connection slots are taken")
            evict.append(victim)
            self.forget(victim)
            self.evicted += 1
        self._conns[key] = Entry(ip, now, now)
        return Decision(True, evict)

    def entry(self, key: Key) -> Entry | None:
        return self._conns.get(key)

    def touch(self, key: Key, now: float, useful: bool = False) -> None:
        e = self._conns.get(key)
        if e is not None:
            e.last_active = max(e.last_active, now)
            if useful:
                e.useful += 1

    def forget(self, key: Key) -> None:
        """The connection closed (or was evicted); frees its slot (idempotent)."""
        self._conns.pop(key, None)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _victim(self, now: float, prot: Mapping[Key, bool], ignore_grace: bool) -> Key | None:
        best: Key | None = None
        best_rank: tuple[Any, ...] | None = None
        for key, e in self._conns.items():
            if prot.get(key, False):
                continue
            if not ignore_grace and now - e.opened < self.limits.grace_s:
                continue
            rank = (e.useful > 0, e.last_active, e.opened)
            if best_rank is None or rank < best_rank:
                best, best_rank = key, rank
        return best

    def stats(self) -> dict[str, int]:
        return {"inbound": len(self._conns), "handshaking": len(self._handshakes),
                "refused": self.refused, "evicted": self.evicted,
                "dropped_handshakes": self.dropped_handshakes}


def address_group(ip: str) -> str:
    """What a per-IP cap counts: an IPv4 address, or an IPv6 /64.

    One IPv6 host is usually given a whole /64, so counting single IPv6
    addresses would let it open 2^64 "different" peers; an IPv4-mapped IPv6
    address counts as the IPv4 address it is. Anything unparsable counts
    as itself.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, 64), strict=False))
    return str(addr)


def _dec(counts: dict[str, int], ip: str) -> None:
    n = counts.get(ip, 0) - 1
    if n > 0:
        counts[ip] = n
    else:
        counts.pop(ip, None)

