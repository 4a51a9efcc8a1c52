"""Proof-of-storage commitments: the Merkle tree over SHA-256 chaining values, audit challenges, proofs, commit files and manifests."""
