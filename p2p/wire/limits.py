"""Every hard cap of the wire protocol, in one place, each with its reason.

A peer is untrusted until it has behaved, and even then it may be buggy, so
every length, count and wait that a remote can influence is bounded here.
The codec derives its msgpack limits from these numbers; the node and the
exchange enforce the connection, in-flight and timeout caps. Change a number
here and docs/PROTOCOL.md in the same commit: peers rely on them.
"""

from __future__ import annotations

from typing import Final

KiB: Final = 1024
MiB: Final = 1024 * KiB

# --- protocol identity -----------------------------------------------------

PROTOCOL_VERSION: Final = 1
"""The only version this code speaks; the envelope layout never changes."""

MAX_VERSIONS: Final = 8
"""Versions listed in a Hello; more than a handful means a confused peer."""

# --- framing ---------------------------------------------------------------

FRAME_HEADER_BYTES: Final = 4
"""A fixed 4-byte big-endian length: known after exactly 4 bytes, no
non-minimal encodings to reject, and 1-3 extra bytes are noise beside a block."""

MAX_BLOCK_BYTES: Final = 2 * MiB
"""Blocks Shoal makes are 1 MiB, but IPFS treats 2 MiB as the largest block a
peer must accept (blocks imported from CARs made elsewhere may be that big)."""

MAX_FRAME_BYTES: Final = MAX_BLOCK_BYTES + 64 * KiB
"""One frame holds one message: the largest is a Block (2 MiB of data plus a
CID and a few bytes of envelope); 64 KiB of slack is far more than needed."""

MAX_DECODER_BUFFER_BYTES: Final = FRAME_HEADER_BYTES + MAX_FRAME_BYTES
"""A FrameDecoder never holds more than one partial frame and its header."""

# --- message shape (msgpack) ------------------------------------------------

MAX_WIRE_OBJECTS: Final = 1024
"""msgpack objects in one message. The biggest legal message (Peers, 64 peers
x 8 addrs) needs ~710; capping the count stops a 2 MiB frame of tiny nested
arrays from becoming ~100 MB of Python objects."""

MAX_WIRE_DEPTH: Final = 4
"""Array nesting, envelope = 1: the deepest legal path is Peers' envelope ->
list of peers -> one peer -> its addrs."""

MAX_ENVELOPE_FIELDS: Final = 9
"""version + type + request id + at most 6 message fields."""

MAX_REQUEST_ID: Final = 2**32 - 1
"""Request ids are uint32; 0 means 'not part of a request'."""

MAX_UINT64: Final = 2**64 - 1

MIN_CID_BYTES: Final = 34
"""Shortest binary CID Shoal supports: CIDv0 = sha2-256 multihash (2 + 32)."""

MAX_CID_BYTES: Final = 128
"""Generous for any CIDv1 with a 512-bit hash; real ones are 34-70 bytes."""

MIN_PEER_ID_BYTES: Final = 2
MAX_PEER_ID_BYTES: Final = 64
"""libp2p Ed25519 peer ids are 38 bytes (identity multihash of the key)."""

SIGNATURE_BYTES: Final = 64
"""Ed25519 signatures are exactly 64 bytes."""

NONCE_BYTES: Final = 32
"""Audit nonces: 256 bits, so a holder can never precompute answers."""

MAX_PING_BYTES: Final = 32
MAX_AGENT_BYTES: Final = 64
MAX_LISTEN_ADDRS: Final = 16
MAX_LANE_ADDRS: Final = 64
"""Lane addresses in a LANES answer (one per lane; a node runs at most 64)."""
MAX_ADDR_BYTES: Final = 256
"""A multiaddr with dns, tcp and /p2p/<id> fits in well under 256 bytes."""

MAX_ADDRS_PER_PEER: Final = 8
MAX_PEERS_PER_REPLY: Final = 64
"""Enough to bootstrap a swarm in a few round trips; small enough to bound."""

MAX_ERROR_MESSAGE_BYTES: Final = 1024
MAX_REASON_BYTES: Final = 256

MAX_CIDS_PER_WANT_HAVE: Final = 256
"""Presence checks are cheap (an index lookup each); batch them generously."""

MAX_CIDS_PER_WANT_BLOCK: Final = 16
"""Each answer may be a 2 MiB block, so one request commits <= 32 MiB."""

MAX_MANIFEST_BYTES: Final = 1 * MiB
MAX_EC_MAP_BYTES: Final = 16 * KiB
"""One signed shard map of an erasure-coded object (shoal.p2p.replication.ec_map):
32 shards with their CIDs and holders take ~3 KiB."""
MAX_EC_OFFERS_BYTES: Final = 512 * KiB
"""The shard offers an EC_MAP_PUSH carries (one signed offer per shard, each a
manifest and up to 32 holder ids: ~2 KiB; 32 of them)."""
MAX_AUDIT_CHALLENGES: Final = 1024
"""k per audit; DESIGN.md needs 688 to catch a 1 % loss, 1024 leaves room."""

MAX_PROOF_BYTES: Final = 2 * MiB
"""k segments plus their Merkle paths; must fit one frame with its envelope."""

MAX_AUDIT_DEADLINE_MS: Final = 10 * 60 * 1000
MAX_LEDGER_KINDS: Final = 32
MAX_LEDGER_KIND_BYTES: Final = 32

# --- connections and concurrency (enforced by the node) ---------------------

MAX_INFLIGHT_REQUESTS_PER_PEER: Final = 64
"""Requests a server works on at once for one connection; the next one gets
ERROR busy. Caps server memory at roughly 64 x 32 MiB in the worst case."""

MAX_CONNECTIONS_PER_PEER: Final = 2
"""Two, not one: both sides may dial each other at the same moment."""

MAX_CONNECTIONS_TOTAL: Final = 256

MAX_PENDING_HANDSHAKES: Final = 64
"""Inbound connections still in the Noise handshake. A stranger costs a
socket and a task until the handshake timeout; capping them apart keeps
room for real peers while hundreds of silent sockets sit in the queue.
When all are taken, a new socket replaces the oldest one (shoal.p2p.net.admission)."""

MAX_HANDSHAKES_PER_IP: Final = 16
"""Handshakes in flight from one IP address; past it, that address's oldest
is dropped. One address cannot take more than a quarter of the pool, so
its flood only ever displaces its own sockets."""

MAX_CONNECTIONS_PER_IP: Final = 32
"""Authenticated inbound connections from one IP address (peers that proved
useful are exempt). Keys are free, addresses are not: 256 throwaway keys
from one host get 32 slots, not all of them. 32 leaves a swarm of a dozen
nodes on one host (tests, the demo: all on 127.0.0.1) far from the cap."""

RESERVED_CONNECTIONS: Final = 32
"""Of MAX_CONNECTIONS_TOTAL, slots only peers that proved useful may take
(allowlisted, bootstrap, delivered data to us, hold our replicas)."""

NEW_CONNECTION_GRACE_S: Final = 5.0
"""A new connection is not evicted for a newcomer during its first seconds,
so two strangers cannot keep displacing each other before either is used."""

SEND_BUDGET_BYTES: Final = 32 * MiB
"""Block bytes read for one peer and not yet written to its socket. A peer
that stops reading stalls at this, not at 64 requests x 16 blocks (1 GiB)."""

SEND_STALL_TIMEOUT_S: Final = 60.0
"""Longest one frame (<= 2.06 MiB) may take to reach the socket before the
connection is closed as stuck: the same 60 s a requester gives a block
request (BLOCK_REQUEST_TIMEOUT_S), so a peer that cannot take one frame
in that time would have given up on it anyway."""

# --- timeouts, seconds (defaults; the node may lower them) ------------------

HANDSHAKE_TIMEOUT_S: Final = 10.0
HELLO_TIMEOUT_S: Final = 10.0
REQUEST_TIMEOUT_S: Final = 30.0
"""Default for small requests (Ping, GetPeers, WantHave, Ledger)."""

BLOCK_REQUEST_TIMEOUT_S: Final = 60.0
"""Up to 32 MiB may come back; 60 s tolerates ~4 Mbit/s links."""

STORE_REQUEST_TIMEOUT_S: Final = 60.0
PEER_EXCHANGE_DEADLINE_S: Final = 5.0
"""One round of peer exchange asks every connected peer at once and waits
this long in all: a silent peer costs the round nothing beyond it."""

IDLE_TIMEOUT_S: Final = 300.0
"""Close a connection with nothing in flight for this long."""

# --- name records (shoal.p2p.names) ----------------------------------------------

MAX_NAME_RECORD_BYTES: Final = 2 * MiB - 64 * KiB
"""One encoded name record (shoal.store.names.records.MAX_RECORD_BYTES, which
tests/unit/test_names_service.py checks equal): 10,000 files fit, and the
record plus its envelope fits one frame."""

MAX_NAMES_ON_CONNECT: Final = 64
"""Own records a node offers a peer when they connect; newer names first."""

MAX_NAMES_PER_PUBLISHER: Final = 1024
"""Distinct (kind, repo, revision) a node keeps per remote publisher: a peer
cannot fill another's disk with names (a newer seq of a held name still replaces it)."""
