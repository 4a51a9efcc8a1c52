"""`[routing] bootstrap`: "ipfs" = kubo's list, /dnsaddr entries resolved, bad values named."""

from __future__ import annotations

import pytest

from shoal.p2p.dht.node_service import IPFS_BOOTSTRAP, RoutingService, RoutingSettings
from shoal.p2p.errors import P2PError
from shoal.p2p.secure.multiaddr import Multiaddr, parse_address

MARS = "/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ"


def test_default_is_no_bootstrap_and_auto_stays_client_on_public_addresses() -> None:
    s = RoutingSettings.from_config(None, private=False)
    assert s.bootstrap == () and s.mode == "client"
    s = RoutingSettings.from_config({"bootstrap": "ipfs"}, private=False)
    assert s.mode == "client"


def test_ipfs_expands_to_kubos_default_list() -> None:
    s = RoutingSettings.from_config({"bootstrap": "ipfs"}, private=False)
    assert s.bootstrap == IPFS_BOOTSTRAP
    assert sum(t.startswith("/dnsaddr/bootstrap.libp2p.io/p2p/Qm") for t in s.bootstrap) == 4
    assert MARS in s.bootstrap
    for text in s.bootstrap:
        assert str(parse_address(text)) == text  # canonical, parseable
    extra = "/ip4/10.0.0.1/tcp/4001"
    s = RoutingSettings.from_config({"bootstrap": [extra, "ipfs", MARS]}, private=True)
    assert s.bootstrap == (extra, *IPFS_BOOTSTRAP)


@pytest.mark.parametrize(("table", "needle"), [
    ({"bootstrap": 5}, "bootstrap must be"),
    ({"bootstrap": ["/dnsaddr/"]}, "bootstrap:"),
    ({"bootstrap": ["/ip4/1.2.3.4/udp/1/quic-v1"]}, "bootstrap:"),
    ({"bootstrap": [f"/ip4/10.0.0.1/tcp/{p}" for p in range(1, 100)]}, "at most"),
    ({"dns_server": "resolver.example"}, "dns_server"),
    ({"dns_server": "127.0.0.1:0"}, "dns_server"),
])
def test_bad_values_are_named(table: dict[str, object], needle: str) -> None:
    with pytest.raises(P2PError, match=needle):
        RoutingSettings.from_config(table, private=True)


def test_dns_server_forms() -> None:
    assert RoutingSettings.from_config({"dns_server": "127.0.0.1:5353"}, private=True).dns_server == ("127.0.0.1", 5353)
    assert RoutingSettings.from_config({"dns_server": "::1"}, private=True).dns_server == ("::1", 53)
    assert RoutingSettings.from_config({"dns_server": "[::1]:53"}, private=True).dns_server == ("::1", 53)


class Zone:
    def __init__(self, records: dict[str, list[str]]) -> None:
        self.records = records

    async def txt(self, name: str) -> list[str]:
        return self.records.get(name, [])


async def test_bootstrap_addrs_resolve_dnsaddr_with_the_peer_filter() -> None:
    s = RoutingSettings.from_config({"bootstrap": "ipfs"}, private=False)
    service = RoutingService(s)
    nb = "QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN"
    service.resolver = Zone({
        "_dnsaddr.bootstrap.libp2p.io": [f"dnsaddr=/dnsaddr/nb.example/p2p/{nb}"],
        "_dnsaddr.nb.example": [f"dnsaddr=/ip4/139.178.91.71/tcp/4001/p2p/{nb}"],
    })
    addrs = await service.bootstrap_addrs()
    # The other three bootstrap.libp2p.io ids match no record; va1 has none here.
    assert addrs == [Multiaddr.parse(f"/ip4/139.178.91.71/tcp/4001/p2p/{nb}"), Multiaddr.parse(MARS)]
