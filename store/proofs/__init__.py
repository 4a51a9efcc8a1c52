"""Proof-of-storage commitments: the Merkle tree over SHA-256 chaining values, its helpers and manifests."""
