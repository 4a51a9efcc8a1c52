"""Kademlia DHT compatible with libp2p's `/ipfs/kad/1.0.0` — the sans-IO core.

Role: the pieces of a Kademlia node that are pure logic, each a state machine
driven by a virtual clock the caller feeds: keys and XOR distance (`keys`),
the kad protobuf messages and their length-prefixed framing (`messages`), the
k-bucket routing table with Kademlia's keep-the-old-peers rule and a per-bucket
IP diversity limit (`routing_table`), the iterative lookup (`query`) and the
provider-record store (`providers`).

Deliberately not here: sockets, trio, the node. A driver (on the libp2p
layer, p2p/libp2p/) feeds bytes and time in and carries the events out; the
simulator bench/dht_sim.py drives the very same code over an in-memory
network, which is how the routing behaviour is measured.
"""

from __future__ import annotations

PROTOCOL_ID = "/ipfs/kad/1.0.0"
"""The libp2p stream protocol this DHT speaks (kad-dht spec)."""

K = 20
"""Bucket size and number of closest peers a lookup returns (libp2p default)."""

ALPHA = 10
"""Requests in flight per lookup (libp2p default)."""

BETA = 3
"""Closest peers that must have answered before a lookup ends (libp2p default)."""
