"""The names service's checks (shoal.p2p.names), without sockets: signing, receipt, trust."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator

import pytest

from shoal.store.names.records import MAX_RECORD_BYTES, InvalidNameRecord, NameRecord
from shoal.store.persist.repo import Repo

from shoal.p2p.errors import P2PError
from shoal.p2p.names.publish import publish_folder, record_json, sign, verify
from shoal.p2p.names.service import NameService, resolver_of
from shoal.p2p.names.trust import TrustPolicy
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.wire import limits as L

from tests.unit.test_name_records import cid_of, record

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    with Repo.init(tmp_path / "repo") as repo:
        yield Node(repo, BOB, NodeOptions())


def attached(node: Node) -> NameService:
    service = NameService()
    node.register(service)
    return service


def test_wire_cap_is_the_record_cap() -> None:
    assert L.MAX_NAME_RECORD_BYTES == MAX_RECORD_BYTES


def test_sign_and_verify_cover_every_field() -> None:
    signed = sign(record(signature=b""), ALICE)
    assert signed.publisher == str(ALICE.peer_id) and verify(signed)
    assert not verify(dataclasses.replace(signed, cid=cid_of(b"other")))
    assert not verify(dataclasses.replace(signed, seq=signed.seq + 1))
    assert not verify(dataclasses.replace(signed, publisher=str(BOB.peer_id)))
    assert not verify(dataclasses.replace(signed, signature=b""))


def test_receipt_takes_only_first_hand_validly_signed_records(node: Node) -> None:
    service = attached(node)
    good = sign(record(signature=b""), ALICE)
    alice = str(ALICE.peer_id)
    with pytest.raises(P2PError, match="first-hand"):
        service._accept(str(Identity.from_seed(b"c" * 32).peer_id), good.encode())
    forged = dataclasses.replace(good, seq=good.seq + 9)  # changed after signing
    with pytest.raises(P2PError, match="signature"):
        service._accept(alice, forged.encode())
    with pytest.raises(InvalidNameRecord):
        service._accept(alice, b"\x93garbage")
    assert node.repo.names.repos() == []
    assert service._accept(alice, good.encode())[0] is True
    assert service._accept(alice, good.encode())[0] is False, "a replay stores nothing"


def test_a_publisher_cannot_fill_the_book(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    service = attached(node)
    monkeypatch.setattr(L, "MAX_NAMES_PER_PUBLISHER", 2)
    alice = str(ALICE.peer_id)
    for rev in ("a", "b"):
        assert service._accept(alice, sign(record(revision=rev, signature=b""), ALICE).encode())[0]
    with pytest.raises(P2PError, match="names here already"):
        service._accept(alice, sign(record(revision="c", signature=b""), ALICE).encode())
    newer = sign(record(revision="a", seq=99, signature=b""), ALICE)
    assert service._accept(alice, newer.encode())[0], "a newer seq of a held name still replaces it"


def test_trust_defaults_and_config() -> None:
    me, other = ALICE.peer_id, str(BOB.peer_id)
    assert not TrustPolicy.from_config(None, me, private_swarm=False)(other)
    assert TrustPolicy.from_config(None, me, private_swarm=False)(str(me))
    assert TrustPolicy.from_config(None, me, private_swarm=True)(other)
    assert not TrustPolicy.from_config({"trust": "self"}, me, private_swarm=True)(other)
    listed = TrustPolicy.from_config({"trust": [other]}, me, private_swarm=False)
    assert listed(other) and listed(str(me)) and not listed(str(Identity.from_seed(b"c" * 32).peer_id))
    for bad in ({"trust": "everyone"}, {"trust": ["nope"]}, {"trust": 3}, {"other": 1}, "x"):
        with pytest.raises(P2PError):
            TrustPolicy.from_config(bad, me, private_swarm=False)


def test_resolver_applies_trust(tmp_path: Path) -> None:
    with Repo.init(tmp_path / "pub") as repo:
        node = Node(repo, BOB, NodeOptions())
        attached(node)
        theirs = sign(record(signature=b""), ALICE)
        repo.names.put(theirs)
        assert resolver_of(node).resolve("model", "org/model", "main") is None
        assert resolver_of(node).repos() == []
    with Repo.init(tmp_path / "priv") as repo:
        node = Node(repo, BOB, NodeOptions(swarm_key=SwarmKey(b"k" * 32)))
        attached(node)
        repo.names.put(theirs)
        assert resolver_of(node).resolve("model", "org/model", theirs.commit) == theirs
        assert resolver_of(node).repos() == [theirs]


def test_resolver_of_a_node_without_the_service(node: Node) -> None:
    with pytest.raises(P2PError):
        resolver_of(node)


def test_publish_folder_signs_and_counts_seq(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_bytes(b"{}")
    with Repo.init(tmp_path / "repo") as repo:
        first = publish_folder(repo, ALICE, folder, "org/m")
        assert (first.seq, first.kind, first.revision) == (1, "model", "main") and verify(first)
        (folder / "config.json").write_bytes(b'{"v": 2}')
        second = publish_folder(repo, ALICE, folder, "org/m")
        assert second.seq == 2 and second.cid != first.cid
        assert repo.names.resolve("model", "org/m", "main") == second
        assert list(record_json(second)) == ["repo", "revision", "commit", "cid", "files"]
        with pytest.raises(InvalidNameRecord):
            publish_folder(repo, ALICE, folder, "org/../m")
        with pytest.raises(InvalidNameRecord):
            publish_folder(repo, ALICE, folder, "org/m", kind="space")


def test_publish_a_dataset_snapshot_keeps_its_commit_and_type(tmp_path: Path) -> None:
    from tests.unit.test_name_folder import COMMIT, make_snapshot

    snap, contents = make_snapshot(tmp_path / "hub", kind="datasets")
    with Repo.init(tmp_path / "repo") as repo:
        published = publish_folder(repo, ALICE, snap, "org/tiny-model")
        assert (published.kind, published.commit) == ("dataset", COMMIT)
        assert repo.names.resolve("dataset", "org/tiny-model", COMMIT) == published
        assert sorted(f.path for f in published.files) == sorted(contents)
