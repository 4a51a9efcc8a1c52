"""The node services (replication, audits), attached by `shoal node start` before the node runs.

`shoal.cli.commands_node._load_services` calls `install(node)`. Each service
hooks itself in through the node's extension points (extra_handlers,
extra_routes, background) instead of the node importing it, so the core
node stays small and each service can be tested on its own.
"""

from __future__ import annotations

from typing import Any

# Imported with this module, not inside install(): `node start` loads this
# module before it opens the repo, so a broken service fails the start at once.
from shoal.p2p.replication.owner import install as install_replication


def install(node: Any) -> None:
    """Attach every service to `node` (replication and audits first)."""
    service = install_replication(node)
    # Peers holding our replicas keep their connection slots when strangers
    # crowd in (shoal.p2p.net.admission); read from the index in a worker thread.
    node.protection_sources.append(service.db.holder_peers)
