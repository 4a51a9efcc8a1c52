"""The demo's replication chapter: three copies, an audit, a broken holder, a repair.

Runs after the get step of `shoal demo` (registered in commands_demo's
_EXTRA_STEPS). Two more peers join so that a lost replica has somewhere to
go; the owner asks for three copies, audits them, one holder loses a fifth
of its block files, the next audit catches it and the replica is rebuilt
on another peer.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

from shoal.cli.errors import CliError
from shoal.cli.swarm import LocalSwarm, NodeProcess

WAIT_S = 60.0


def say(text: str) -> None:
    print(text, flush=True)


def _wait(what: str, check: Callable[[], Any], timeout: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.2)
    raise CliError(f"demo: timed out waiting for {what}")


def replication_step(swarm: LocalSwarm, root: Path, cid: str) -> None:
    a = swarm.nodes[0]
    say("== replication: three copies, proofs of storage, automatic repair ==")
    for name in ("dave", "erin"):
        swarm.add(name, bootstrap=a.addrs[:1])
    names = {n.peer_id: n.name for n in swarm.nodes}
    swarm.wait_connected(a, len(swarm.nodes) - 1)
    say(f"  dave and erin joined: {len(swarm.nodes)} peers")

    model = root / "model.safetensors"
    # The same chunks as the first put (commands_demo): the same CID. With the
    # tensor-aware chunker one of the few block files _break removes can be the
    # 200-byte header leaf, a loss too small for one audit to see.
    put = a.call("POST", "/v1/put", {"path": str(model), "replicas": 3, "chunker": "fixed"})
    planned = ", ".join(names.get(p, p[:12]) for p in put["placement"]["planned"])
    say(f"alice: put --replicas 3 returned at once; placement by rendezvous hashing picks {planned}")

    def ok_holders() -> list[dict[str, Any]]:
        doc = a.call("GET", "/v1/status", cid=cid)
        alive = {n.peer_id for n in swarm.nodes if n.alive}
        return [h for h in doc["holders"] if h["state"] == "ok" and h["peer_id"] in alive]

    t0 = time.monotonic()
    holders = _wait("three copies", lambda: (lambda hs: hs if len(hs) >= 3 else None)(ok_holders()))
    say(f"  3 copies held after {time.monotonic() - t0:.1f}s (each holder pulled the blocks, pinned them,"
        " checked the Merkle commitment and signed an agreement):")
    for h in holders:
        say(f"    {names.get(h['peer_id'], '?'):<6} {h['state']}")

    t0 = time.monotonic()
    audit = a.call("POST", "/v1/audit", {"cid": cid})
    took = time.monotonic() - t0
    for r in audit["results"]:
        say(f"  audit {names.get(r['peer_id'], '?'):<6} {r['challenged']} random 2 KiB segments: "
            f"{'proof ok' if r['ok'] else 'FAILED'}")
    say(f"  one audit round of {len(audit['results'])} copies in {took:.2f}s")

    victim = next(n for n in swarm.nodes if n.peer_id == holders[-1]["peer_id"] and n is not a)
    _break(victim)
    audit = a.call("POST", "/v1/audit", {"cid": cid})
    bad = next(r for r in audit["results"] if r["peer_id"] == victim.peer_id)
    say(f"{victim.name} lost a fifth of its block files; the next audit: "
        f"{'FAILED, ' + bad['outcome'] + ' proof (proven loss)' if not bad['ok'] else 'passed?!'}")
    t0 = time.monotonic()
    holders = _wait("the repair", lambda: (lambda hs: hs if len(hs) >= 3 and victim.peer_id not in
                                           {h['peer_id'] for h in hs} else None)(ok_holders()))
    now = ", ".join(names.get(h["peer_id"], "?") for h in holders)
    say(f"  repaired in {time.monotonic() - t0:.1f}s: {victim.name} marked lost, copies now on {now}")


def _break(node: NodeProcess) -> None:
    files = sorted((node.repo / "blocks").rglob("*.data"))
    for f in random.Random(1).sample(files, max(1, len(files) // 5)):
        f.unlink()
