"""Replication: placement, the owner and holder sides, agreements, audits and repair policy."""
