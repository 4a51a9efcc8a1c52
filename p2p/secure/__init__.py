"""Secure channels: identities and PeerIds, multiaddrs, Noise XX, the private-swarm layer and the allowlist."""
