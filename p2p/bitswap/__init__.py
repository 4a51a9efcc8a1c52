"""Bitswap 1.2.0 / 1.1.0, sans-IO: the message codec, the serving engine, the fetch session.

Bitswap is how IPFS nodes trade blocks. This package holds the parts that
do not depend on a connection, written as pure state machines in the style
of the rest of `p2p/`:

- `message`: the protobuf message of go-bitswap/boxo, hand-encoded and
  decoded with every length and count bounded before allocation; CID
  prefixes (blocks are re-addressed from prefix + data, so a block's CID is
  always the hash of its bytes); uvarint-length framing for a stream.
- `engine`: the serving side. A per-peer ledger of wantlists, answered from
  `has`/`size` callbacks, within a per-peer send budget and a message size
  cap. The engine names the blocks to send; the driver reads (and so
  verifies) them.
- `session`: the fetching side. Wants a set of CIDs from a set of peers,
  asks who has them, fetches each from one peer, verifies it, cancels
  elsewhere, re-asks on timeouts, and ends with what is still missing.

Around them, with trio:

- `driver`: one node's Bitswap (an engine and its sessions) over byte streams.
- `service`: the driver on a libp2p host's connections (shoal.p2p.libp2p).
- `repo_source`: a blockstore or repo as the blocks the engine serves.
- `dag_fetch`: a whole DAG, level by level, into a blockstore.

The three protocol modules are sans-IO: no sockets, streams or trio; the
blockstore is reached only through callbacks.
"""
