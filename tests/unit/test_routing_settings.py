"""`[routing]` settings: the default mode by setup, flags over config, bad values named."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from shoal.store.persist.repo import Repo
from shoal.p2p.dht.node_service import RoutingService, RoutingSettings, is_private_setup
from shoal.p2p.errors import P2PError
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.pnet import SwarmKey


def test_default_mode_is_server_in_a_lab_and_client_on_the_internet() -> None:
    lan = [Multiaddr("127.0.0.1", 0), Multiaddr("192.168.1.5", 4101)]
    public = [Multiaddr("0.0.0.0", 4101), Multiaddr("8.8.8.8", 4101)]
    assert is_private_setup(lan, None)
    assert not is_private_setup(public[1:], None)
    assert is_private_setup(public[1:], SwarmKey.generate())  # a private swarm, wherever it listens
    assert RoutingSettings.from_config(None, private=True).mode == "server"
    assert RoutingSettings.from_config(None, private=False).mode == "client"
    assert RoutingSettings.from_config({"mode": "auto"}, private=False).mode == "client"


def test_flags_override_config_and_times_are_read() -> None:
    table = {"mode": "client", "provide": "all", "reprovide_interval": 5, "provider_expiry": 20.5}
    s = RoutingSettings.from_config(table, private=True)
    assert (s.mode, s.provide, s.reprovide_interval, s.provider_expiry) == ("client", "all", 5.0, 20.5)
    s = RoutingSettings.from_config(table, mode="off", provide="roots", private=True)
    assert (s.mode, s.provide) == ("off", "roots")


@pytest.mark.parametrize("table, needle", [
    ({"mode": "loud"}, "mode"),
    ({"provide": "some"}, "provide"),
    ({"scan_interval": 0}, "scan_interval"),
    ({"reprovide_interval": True}, "reprovide_interval"),
    ({"bucket": 3}, "unknown key 'bucket'"),
    ("server", "must be a table"),
])
def test_bad_values_are_named(table: object, needle: str) -> None:
    with pytest.raises(P2PError, match=needle):
        RoutingSettings.from_config(table, private=True)


def test_provide_roots_or_every_block(tmp_path: Path) -> None:
    """"roots" announces each object put (and recursive pin) once; "all" every block of them."""
    src = tmp_path / "model.bin"
    src.write_bytes(os.urandom(1_500_000))  # several chunks: leaves under one root
    with Repo.init(tmp_path / "repo") as repo:
        root = repo.add(src).cid
        holder = SimpleNamespace(repo=repo)
        roots = RoutingService(RoutingSettings(provide="roots"))
        roots.node = holder  # type: ignore[assignment]
        assert roots._holdings() == {bytes(root.digest)}
        every = RoutingService(RoutingSettings(provide="all"))
        every.node = holder  # type: ignore[assignment]
        blocks = every._holdings()
        assert bytes(root.digest) in blocks
        assert len(blocks) == len(repo.dag_keys(root)) > 2
