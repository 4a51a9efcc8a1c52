"""The peer table survives restarts of real node processes (issue 17 item 3).

A and C run throughout (C bootstrapped to A); B is bootstrapped to A only
and learns C through peer exchange. B is then killed with SIGKILL (only
what the periodic batch wrote survives), stopped with SIGTERM, and
restarted each time WITHOUT --bootstrap: it must find A and C again from
its index alone. Before the old code kept the table in memory only, so a
restarted B knew nobody.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing

from shoal.p2p.net.peer_store import PEER_TABLE_FLUSH_INTERVAL_S

from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

__all__ = ["swarm"]

# A batch is written on a peer-exchange round (every 2 s) once the interval has passed.
BATCH_WAIT_S = PEER_TABLE_FLUSH_INTERVAL_S + 2.0 + 20.0  # + slack for a loaded machine
RECONNECT_S = 30.0


def saved_peers(node: NodeProc) -> dict[str, float]:
    """peer id -> last_connected, as B's index holds them now (read-only, beside the running node)."""
    try:
        with closing(sqlite3.connect(f"file:{node.repo / 'index.sqlite'}?mode=ro", uri=True, timeout=5)) as db:
            return {str(p): float(t) for p, t in db.execute("SELECT peer_id, last_connected FROM peer_table")}
    except sqlite3.OperationalError:  # the table is not created yet
        return {}


def restart_without_bootstrap(node: NodeProc) -> None:
    node.bootstrap = []
    node.start()
    assert "--bootstrap" not in " ".join(node.command())


def test_restarted_node_redials_saved_and_exchanged_peers(swarm: Swarm) -> None:
    a = swarm.add("a")
    c = swarm.add("c", bootstrap=[a.addr])
    b = swarm.add("b", bootstrap=[a.addr])
    swarm.wait_connected(b, {a.peer_id, c.peer_id}, timeout=RECONNECT_S)  # C through peer exchange

    # kill -9: no shutdown write, only what the batch wrote before.
    wait_until(lambda: {a.peer_id, c.peer_id} <= {p for p, t in saved_peers(b).items() if t > 0},
               BATCH_WAIT_S, "B's periodic write of the peer table with A and C")
    b.kill()
    verify = b.shoal("verify")
    assert verify.code == 0, f"verify after kill -9: {verify.err}"
    restart_without_bootstrap(b)
    swarm.wait_connected(b, {a.peer_id, c.peer_id}, timeout=RECONNECT_S)

    # SIGTERM: a clean stop, then a start without --bootstrap.
    assert b.stop() == 0, b.log_tail()
    restart_without_bootstrap(b)
    swarm.wait_connected(b, {a.peer_id, c.peer_id}, timeout=RECONNECT_S)

    # C was learnt only through A's peer exchange. With A gone, only B's saved
    # table can lead it to C (C knows only B's old, ephemeral address).
    assert b.stop() == 0, b.log_tail()
    assert a.stop() == 0, a.log_tail()
    restart_without_bootstrap(b)
    swarm.wait_connected(b, {c.peer_id}, timeout=RECONNECT_S)
    known = {p["peer_id"]: p for p in b.peers()}
    assert a.peer_id in known and not known[a.peer_id]["connected"]  # still known, being redialled
    assert b.stop() == 0, b.log_tail()
    verify = b.shoal("verify")
    assert verify.code == 0, f"verify after the restarts: {verify.err}"
