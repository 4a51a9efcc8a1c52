"""The demo's private-swarm chapter: a swarm key keeps a stranger out.

Runs last in `shoal demo` (after the energy report, which covers the steps
before it). Two new peers share a libp2p swarm.key and form their own
private swarm; a third without the key dials one of them and is refused on
its first bytes, so it can fetch nothing, although it knows the address and
the peer id.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from shoal.cli.errors import CliError
from shoal.cli.swarm import LocalSwarm, NodeProcess

WAIT_S = 30.0


def say(text: str) -> None:
    print(text, flush=True)


def _dial_failure(node: NodeProcess, timeout: float = WAIT_S) -> str:
    """The line of `node`'s log that reports its failed dial (its bootstrap)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = node.log_path.read_text(errors="replace") if node.log_path is not None else ""
        for line in text.splitlines():
            if "dial" in line and "failed" in line:
                return line.split(": ", 2)[-1]
        time.sleep(0.2)
    raise CliError(f"demo: {node.name} never reported its refused dial")


def private_swarm_step(swarm: LocalSwarm, root: Path, cid: str) -> None:
    from shoal.p2p.secure.pnet import SwarmKey  # the demo's other steps need no crypto

    say("== private swarm: a swarm key (libp2p swarm.key) keeps strangers out ==")
    key = SwarmKey.generate()
    key_file = root / "swarm.key"
    key_file.write_bytes(key.encode())
    key_file.chmod(0o600)
    frank = swarm.add("frank", extra_args=["--swarm-key", str(key_file)])
    grace = swarm.add("grace", bootstrap=frank.addrs[:1], extra_args=["--swarm-key", str(key_file)])
    mallory = swarm.add("mallory", bootstrap=frank.addrs[:1])
    say(f"  frank and grace share a swarm key (fingerprint {key.fingerprint()}); mallory has none")

    secret = root / "private-notes.bin"
    secret.write_bytes(b"weights only the lab may read\n" * 40_000)
    put = frank.call("POST", "/v1/put", {"path": str(secret)})
    swarm.wait_connected(grace, 1)
    got = grace.call("POST", "/v1/get", {"cid": put["cid"], "output": str(root / "grace-copy.bin")})
    say(f"  grace fetched frank's {put['cid'][:16]}... ({got['fetched_blocks']} blocks) over the private swarm")

    reason = _dial_failure(mallory)
    say(f"  mallory dialled frank's address and id: refused on the first bytes ({reason.split(' (')[0]})")
    try:
        mallory.call("POST", "/v1/get", {"cid": put["cid"], "output": str(root / "mallory-copy.bin")})
    except CliError as exc:
        say(f"  mallory's get fails: {exc}")
    else:
        raise SystemExit("demo failed: a node without the swarm key fetched from the private swarm")
    peers: list[dict[str, Any]] = frank.call("GET", "/v1/peers")
    connected = sorted(p["peer_id"] for p in peers if p["connected"])
    if connected != [grace.peer_id]:
        raise SystemExit(f"demo failed: frank is connected to {connected}, not only grace")
    say("  frank's only connection is grace; mallory learned nothing but that the port is open")
