"""Lanes: worker processes that move a node's block bytes on every core.

The node's trio loop stays the control plane (holders, planning, reputation,
the index); each lane is a separate process that owns its own libp2p
connections, verifies, writes and serves blocks. This package holds the
shared interface (api), the node<->lane control codec (control), the lane
process (worker) and the node-side pool (pool). It does not plan fetches.
"""
