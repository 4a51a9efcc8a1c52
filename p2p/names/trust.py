"""Which publishers' name records resolve on this node: `[names] trust` in config.toml.

- `"self"`: only this node's own records (the default without a swarm key:
  on a public swarm anyone can publish any name, so nobody else is believed);
- `"swarm"`: every publisher whose record reached this node, i.e. every peer
  of the swarm (the default with a private swarm key: records are taken
  only first-hand, from the publisher over an authenticated connection, and
  only swarm members can connect);
- a list of peer ids: those publishers and this node.

Records of untrusted publishers may be stored (trust can change without
losing them) but never resolve.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shoal.p2p.errors import P2PError
from shoal.p2p.secure.identity import PeerId

__all__ = ["TrustPolicy"]


@dataclass(frozen=True)
class TrustPolicy:
    """A trust decision per publisher peer id (text)."""

    me: str
    mode: str  # "self" | "swarm" | "list"
    peers: frozenset[str] = frozenset()

    def __call__(self, publisher: str) -> bool:
        if publisher == self.me:
            return True
        if self.mode == "swarm":
            return True
        return self.mode == "list" and publisher in self.peers

    def describe(self) -> str:
        if self.mode == "list":
            return f"{len(self.peers)} listed publisher(s) and this node"
        return {"self": "this node only", "swarm": "any peer of the swarm"}[self.mode]

    @classmethod
    def from_config(cls, table: object, me: PeerId, private_swarm: bool) -> "TrustPolicy":
        """From the `[names]` table (None: the default for this swarm); P2PError if malformed."""
        if table is None:
            table = {}
        if not isinstance(table, dict):
            raise P2PError("config: [names] must be a table")
        unknown = set(table) - {"trust"}
        if unknown:
            raise P2PError(f"config: unknown key {sorted(unknown)[0]!r} in [names]; known: trust")
        value: Any = table.get("trust", "swarm" if private_swarm else "self")
        if value in ("self", "swarm"):
            return cls(str(me), value)
        if isinstance(value, list):
            ids = set()
            for item in value:
                if not isinstance(item, str):
                    raise P2PError(f"config: [names] trust lists peer ids, not {item!r}")
                try:
                    ids.add(str(PeerId.from_string(item)))
                except (P2PError, ValueError):
                    raise P2PError(f"config: [names] trust: {item!r} is not a peer id") from None
            return cls(str(me), "list", frozenset(ids))
        raise P2PError(f'config: [names] trust must be "swarm", "self" or a list of peer ids, not {value!r}')
