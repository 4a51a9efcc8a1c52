"""The peer allowlist (`shoal node start --allow-peers FILE`).

One peer id per line; `#` starts a comment (a whole line or the rest of
one); blank lines are ignored. A node with an allowlist keeps a connection,
in either direction, only once the remote has proven (Noise) one of these
ids, and never dials a peer that is not on it.

What it does not do: hide anything. The Noise handshake runs before the
check, and in XX the responder shows its identity first, so a stranger who
connects still learns the node's peer id. Hiding the node entirely is what
the swarm key (`shoal.p2p.secure.pnet`) is for; the two combine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from shoal.p2p.errors import P2PError
from shoal.p2p.secure.identity import PeerId

__all__ = ["AllowlistError", "load_allowlist", "parse_allowlist"]

MAX_ALLOWLIST_BYTES: Final = 1024 * 1024
"""~20,000 peer ids; far beyond a private swarm, and a bound on a wrong file."""


class AllowlistError(P2PError):
    """An allowlist file that cannot be read or holds something that is not a peer id."""

    hint = "one peer id (12D3KooW...) per line; `shoal id` prints a node's; # starts a comment"


def parse_allowlist(text: str) -> frozenset[PeerId]:
    """The peer ids in an allowlist's text; AllowlistError names the first bad line."""
    peers: set[PeerId] = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        try:
            peers.add(PeerId.from_string(entry))
        except P2PError as exc:
            raise AllowlistError(f"line {number}: {entry!r} is not a peer id ({exc})") from None
    return frozenset(peers)


def load_allowlist(path: Path) -> frozenset[PeerId]:
    """Read and parse an allowlist file. An empty list is refused: it would admit nobody."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_ALLOWLIST_BYTES + 1)
    except OSError as exc:
        raise AllowlistError(f"cannot read allowlist {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_ALLOWLIST_BYTES:
        raise AllowlistError(f"{path} is over {MAX_ALLOWLIST_BYTES} bytes; not an allowlist")
    try:
        peers = parse_allowlist(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise AllowlistError(f"{path} is not UTF-8 text") from None
    except AllowlistError as exc:
        raise AllowlistError(f"{path}: {exc}") from None
    if not peers:
        raise AllowlistError(f"{path} lists no peer ids, so the node would accept no one")
    return peers
