"""Named repositories: Hugging Face style names (org/name, revision) -> directory CIDs.

`records` defines the signed name record and its bounded msgpack codec;
`book` keeps the records a node knows (SQLite, WAL, `<repo>/names.sqlite`)
and answers "which CID is org/name at this revision"; `folder` imports a
folder or a Hugging Face cache snapshot as one directory CID with each
file's sha256 and git blob id.

Deliberately not here: signing and verifying (keys live in p2p/; the store
only carries the signature bytes), spreading records to peers, and the
trust policy (p2p/names).
"""
