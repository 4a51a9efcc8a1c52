"""Shoal's peer-to-peer layer: identity, secure channel, wire protocol, node.

Protocol logic (Noise handshake, framing, messages, exchange scheduling) is
sans-IO: pure state machines that take bytes and return events/bytes, tested
without sockets. Thin trio drivers around them own the sockets and tasks.
Builds on `store/`; never the other way round.
"""
