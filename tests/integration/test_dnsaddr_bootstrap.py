"""`[routing] bootstrap = ["/dnsaddr/..."]` on real node processes, DNS faked on loopback.

A node that knows no peer at all (no --bootstrap, peer exchange off) is given
only `/dnsaddr/lab.example` and a DNS server: a UDP server in this test that
answers the TXT query for `_dnsaddr.lab.example` with a nested dnsaddr and then
the other node's address (plus a QUIC one Shoal cannot dial and an entry for
another peer id, both to be skipped). The node resolves it, dials through the
DHT and ends with the other node in its routing table. This is how a node
joins the public IPFS DHT with `bootstrap = "ipfs"`; there is no internet here.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from shoal.p2p.secure.identity import Identity
from tests.integration.swarm import NodeProc, Swarm, swarm, wait_until  # noqa: F401 (fixture)

pytestmark = pytest.mark.integration


def _answer(query: bytes, records: dict[str, list[str]]) -> bytes:
    """A minimal TXT answer to `query` from `records` (NXDOMAIN when absent)."""
    pos, labels = 12, []
    while query[pos]:
        labels.append(query[pos + 1 : pos + 1 + query[pos]].decode())
        pos += 1 + query[pos]
    question = query[12 : pos + 5]
    values = records.get(".".join(labels).lower())
    flags = 0x8180 if values is not None else 0x8183
    out = query[:2] + struct.pack(">HHHHH", flags, 1, len(values or []), 0, 0) + question
    for value in values or []:
        data = value.encode()
        rdata = bytes([len(data)]) + data
        out += b"\xc0\x0c" + struct.pack(">HHIH", 16, 1, 60, len(rdata)) + rdata
    return out


@pytest.fixture
def fake_dns() -> Iterator[tuple[int, dict[str, list[str]], list[str]]]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    records: dict[str, list[str]] = {}
    asked: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                query, peer = sock.recvfrom(4096)
            except OSError:
                continue
            try:
                reply = _answer(query, records)
                asked.append(reply[12:].split(b"\x00", 1)[0].decode(errors="replace"))
                sock.sendto(reply, peer)
            except (IndexError, OSError, UnicodeDecodeError):
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1], records, asked
    finally:
        stop.set()
        thread.join(5)
        sock.close()


@pytest.mark.timeout(240)
def test_node_joins_the_dht_through_a_dnsaddr_bootstrap(
    swarm: Swarm, fake_dns: tuple[int, dict[str, list[str]], list[str]]
) -> None:
    port, records, asked = fake_dns
    seed = swarm.add("seed")
    seed_id = seed.peer_id
    host_port = seed.addr.split("/p2p/")[0]
    other = Identity.generate().peer_id
    records["_dnsaddr.lab.example"] = [f"dnsaddr=/dnsaddr/seed.lab.example/p2p/{seed_id}", "v=spf1 -all"]
    records["_dnsaddr.seed.lab.example"] = [
        f"dnsaddr=/ip4/127.0.0.1/udp/4001/quic-v1/p2p/{seed_id}",
        f"dnsaddr=/ip4/127.0.0.1/tcp/9/p2p/{other}",
        f"dnsaddr={host_port}/p2p/{seed_id}",
    ]

    joiner = swarm.node("joiner")
    config = joiner.repo / "config.toml"
    text = config.read_text().replace("[node]\n", "[node]\npeer_exchange = false\n", 1)
    config.write_text(text + f'\n[routing]\nbootstrap = ["/dnsaddr/lab.example"]\n'
                             f'dns_server = "127.0.0.1:{port}"\n')
    joiner.start()

    def seed_in_table() -> bool:
        table = joiner.json("routing", "table")
        return seed_id in {p["peer_id"] for p in table["peers"]}

    wait_until(seed_in_table, 120, "the joiner to find the seed through /dnsaddr")
    assert "_dnsaddr" in " ".join(asked)
    assert "routing: bootstrap through 1 address(es)" in joiner.log_text()


@pytest.mark.timeout(240)
def test_node_bootstrap_flag_accepts_dnsaddr(
    swarm: Swarm, fake_dns: tuple[int, dict[str, list[str]], list[str]]
) -> None:
    """`node start --bootstrap /dnsaddr/HOST/p2p/ID`: resolved, filtered by the id,
    dialled as a Shoal peer (the DNS server comes from `[routing] dns_server`)."""
    port, records, _ = fake_dns
    seed = swarm.add("seed")
    host_port = seed.addr.split("/p2p/")[0]
    records["_dnsaddr.lab.example"] = [
        f"dnsaddr=/ip4/127.0.0.1/tcp/9/p2p/{Identity.generate().peer_id}",  # another id
        f"dnsaddr={host_port}/p2p/{seed.peer_id}",
    ]
    joiner = swarm.node("joiner", bootstrap=[f"/dnsaddr/lab.example/p2p/{seed.peer_id}"])
    config = joiner.repo / "config.toml"
    config.write_text(config.read_text() + f'\n[routing]\ndns_server = "127.0.0.1:{port}"\n')
    joiner.start()
    wait_until(lambda: seed.peer_id in joiner.connected_ids(), 60,
               "the joiner to connect the seed it found through /dnsaddr")
    assert "resolved to 1 address(es)" in joiner.log_text()
