"""The wire: limits, length-prefixed frames, message classes and their msgpack codec (sans-IO)."""
