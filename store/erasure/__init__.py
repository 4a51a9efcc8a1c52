"""Erasure coding of stored objects: layout, shard format, codec, durability model.

Role: turn an object (all the blocks of its DAG) into K + M shards with a
systematic Reed–Solomon code (zfec), rebuild the object from any K of them
with every block checked against its CID, rebuild lost shards for repair, and
estimate how likely an object is to be lost under a replica or EC scheme.

Modules: layout (which bytes, in which stripes), shard (the shard file
format), codec (encode, reconstruct, rebuild, streaming), manifest (what the
owner signs: the layout id, each shard's CID and commitment), durability
(annual loss probability of a scheme, docs/DURABILITY.md).

What it deliberately does not do: I/O beyond the file objects it is handed,
networking, placement, signing, audits, trio. Those live in p2p/ and build on
this package: a shard is one content-addressed byte string (its own sha256,
a raw CID) that a commitment and audits can cover exactly like a replica.
"""
