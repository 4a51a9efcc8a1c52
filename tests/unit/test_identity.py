"""Identity and PeerId: libp2p encodings, spec vectors, key-file safety."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.p2p.errors import InvalidMultiaddr, P2PError
from shoal.p2p.secure.identity import Identity, PeerId, decode_public_key, encode_public_key

# peer-ids spec, "Test vectors" table (libp2p/specs peer-ids/peer-ids.md).
SPEC_ED25519_PRIVATE = bytes.fromhex(
    "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d"
    "1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
SPEC_ED25519_PUBLIC = bytes.fromhex(
    "080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e"
)
# peer-ids spec, "Examples" of the string forms.
SPEC_ED25519_PEER = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
SPEC_SHA256_PEER = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
SPEC_CID_PEER = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"


def test_spec_private_key_vector_gives_spec_public_key() -> None:
    identity = Identity.from_private_proto(SPEC_ED25519_PRIVATE)
    assert identity.public_key_proto == SPEC_ED25519_PUBLIC
    assert identity.to_private_proto() == SPEC_ED25519_PRIVATE
    assert identity.peer_id.to_bytes() == b"\x00\x24" + SPEC_ED25519_PUBLIC
    assert str(identity.peer_id).startswith("12D3KooW")


def test_spec_peer_id_strings_round_trip() -> None:
    ed = PeerId.from_string(SPEC_ED25519_PEER)
    assert str(ed) == SPEC_ED25519_PEER
    assert PeerId.from_public_key(ed.public_key()) == ed
    sha = PeerId.from_string(SPEC_SHA256_PEER)
    assert str(sha) == SPEC_SHA256_PEER
    with pytest.raises(ValueError):
        sha.public_key()
    cid_form = PeerId.from_string(SPEC_CID_PEER)
    assert cid_form.to_bytes()[:2] == b"\x12\x20"


def test_sign_and_verify() -> None:
    identity = Identity.generate()
    sig = identity.sign(b"hello")
    peer = PeerId.from_string(str(identity.peer_id))
    assert peer.verify(sig, b"hello")
    assert not peer.verify(sig, b"hellO")
    assert not peer.verify(b"\x00" * 64, b"hello")
    assert not PeerId.from_string(SPEC_SHA256_PEER).verify(sig, b"hello")


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "Qm",
        "12D3KooW",
        "0OIl",  # not base58
        "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi",  # a dag-pb CID
        "x" * 300,
    ],
)
def test_bad_peer_id_strings(bad: str) -> None:
    with pytest.raises(InvalidMultiaddr):
        PeerId.from_string(bad)


@given(st.binary(max_size=60))
def test_peer_id_from_bytes_never_crashes(data: bytes) -> None:
    try:
        peer = PeerId.from_bytes(data)
    except InvalidMultiaddr:
        return
    assert PeerId.from_string(str(peer)) == peer


@given(st.binary(max_size=80))
def test_decode_public_key_is_strict(data: bytes) -> None:
    try:
        key = decode_public_key(data)
    except ValueError:
        return
    assert key.to_proto() == data


def test_load_or_create_writes_0600_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "identity.key"
    first = Identity.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load_or_create(path).peer_id == first.peer_id
    assert [p.name for p in path.parent.iterdir()] == ["identity.key"]  # no temp left


def test_load_refuses_readable_key_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    Identity.load_or_create(path)
    os.chmod(path, 0o644)
    with pytest.raises(P2PError) as info:
        Identity.load_or_create(path)
    assert "chmod 600" in info.value.hint


def test_load_refuses_corrupt_key_file(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    Identity.load_or_create(path)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # stored public key no longer matches
    path.write_bytes(bytes(data))
    with pytest.raises(P2PError):
        Identity.load_or_create(path)
