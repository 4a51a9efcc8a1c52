"""The node services (replication, audits, name records, content routing), attached by `shoal node start` before the node runs.

`shoal.cli.commands_node._load_services` calls `install(node)`. Each service
registers itself with `Node.register` and hooks in through the node's typed
extension points (shoal.p2p.net.hooks) instead of the node importing it,
so the core node stays small and each service can be tested on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# Imported with this module, not inside install(): `node start` loads this
# module before it opens the repo, so a broken service fails the start at once.
from shoal.p2p.dht.node_service import install as install_routing
from shoal.p2p.names.service import install as install_names
from shoal.p2p.replication.owner import install as install_replication


if TYPE_CHECKING:
    from shoal.p2p.net.node import Node


def install(node: "Node") -> None:
    """Register every service on `node` (replication and audits first, then names, then the DHT)."""
    install_replication(node)
    install_names(node)
    install_routing(node)
