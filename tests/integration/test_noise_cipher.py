"""Real nodes negotiate the Noise cipher: AES-GCM when both offer it, libp2p's ChaChaPoly otherwise.

`shoal peers --json` shows each peer's negotiated Noise protocol, so a user
can see which cipher their transfers pay for (shoal.p2p.secure.cipher_choice).
"""

from __future__ import annotations

from tests.helpers import shoal_env
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until

__all__ = ["swarm"]

AES = "Noise_XX_25519_AESGCM_SHA256"
CHACHA = "Noise_XX_25519_ChaChaPoly_SHA256"


def start(swarm: Swarm, name: str, aes: str, bootstrap: list[str]) -> NodeProc:
    node = swarm.node(name, bootstrap)
    node.env = {**shoal_env(), "SHOAL_NOISE_AESGCM": aes}
    node.start()
    return node


def security_of(node: NodeProc, peer: NodeProc) -> str | None:
    for p in node.peers():
        if p["peer_id"] == peer.peer_id and p["connected"] and p["security"]:
            return str(p["security"])
    return None


def test_nodes_that_both_offer_aes_use_it_and_a_node_that_does_not_gets_chachapoly(swarm: Swarm) -> None:
    a = start(swarm, "A", "1", [])
    b = start(swarm, "B", "1", [a.addr])
    c = start(swarm, "C", "0", [a.addr])
    assert wait_until(lambda: security_of(b, a), 30, "B sees A") == AES
    assert wait_until(lambda: security_of(a, b), 30, "A sees B") == AES
    assert wait_until(lambda: security_of(c, a), 30, "C sees A") == CHACHA
    assert wait_until(lambda: security_of(a, c), 30, "A sees C") == CHACHA
    # Data crosses both kinds of connection intact.
    data = swarm.root / "data.bin"
    data.write_bytes(bytes(range(256)) * 8192)  # 2 MiB: more than one block
    cid = a.put(data)
    for node in (b, c):
        out = swarm.root / f"out-{node.name}"
        r = node.shoal("get", cid, "-o", str(out))
        assert r.code == 0, r.err
        assert out.read_bytes() == data.read_bytes()
