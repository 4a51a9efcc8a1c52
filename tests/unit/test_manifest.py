"""Manifests: canonical, bounded, strict encoding and what gets signed."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.store.ipld.cid import make_cid
from shoal.store.proofs.manifest import MAX_MANIFEST_BYTES, Manifest, MalformedManifest
from shoal.store.proofs.commitment import commit

OWNER = bytes.fromhex("0024080112") + bytes(range(33))


def _manifest(**changes: object) -> Manifest:
    data = b"weights" * 100
    fields: dict[str, object] = dict(
        root_cid=str(make_cid("raw", data)),
        size=len(data),
        chunker="fixed",
        profile="unixfs-v1-2025",
        commitment=commit(data, 64),
        owner=OWNER,
        created=1_796_000_000,
    )
    fields.update(changes)
    return Manifest(**fields)  # type: ignore[arg-type]


def test_round_trip_and_determinism() -> None:
    m = _manifest().with_signature(bytes(64))
    raw = m.encode()
    assert Manifest.decode(raw) == m
    assert _manifest().with_signature(bytes(64)).encode() == raw
    assert len(raw) < 400


def test_signing_bytes_exclude_the_signature_and_cover_everything_else() -> None:
    m = _manifest()
    assert m.signing_bytes() == m.with_signature(b"\x01" * 64).signing_bytes()
    assert m.signing_bytes().startswith(b"shoal-manifest-v1\x00")
    for change in (dict(size=701), dict(chunker="cdc"), dict(created=1), dict(owner=b"x"),
                   dict(commitment=commit(b"other", 64))):
        assert _manifest(**change).signing_bytes() != m.signing_bytes()


@pytest.mark.parametrize(
    "change",
    [
        dict(root_cid="not-a-cid"),
        dict(size=-1),
        dict(size=True),
        dict(chunker=""),
        dict(profile="x" * 65),
        dict(owner=b""),
        dict(created=-5),
        dict(signature=bytes(129)),
    ],
)
def test_invalid_values_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(MalformedManifest):
        _manifest(**change)


def test_decode_refuses_non_canonical_and_hostile_input() -> None:
    raw = _manifest().encode()
    fields = msgpack.unpackb(raw, raw=False)
    # the same values with a non-shortest int encoding
    loose = bytearray(msgpack.packb(fields[:2], use_bin_type=True))
    loose[0] = 0x90 | 11
    loose += b"\xcf" + fields[2].to_bytes(8, "big") + msgpack.packb(fields[3:], use_bin_type=True)[1:]
    with pytest.raises(MalformedManifest):
        Manifest.decode(bytes(loose))
    with pytest.raises(MalformedManifest):
        Manifest.decode(raw + b"\x00")
    with pytest.raises(MalformedManifest):
        Manifest.decode(bytes(MAX_MANIFEST_BYTES + 1))
    with pytest.raises(MalformedManifest):
        Manifest.decode(b"\xdd\xff\xff\xff\xff")  # array of 2^32-1 elements
    with pytest.raises(MalformedManifest):
        Manifest.decode(b"\xc6\xff\xff\xff\xff")  # bin of 4 GiB
    with pytest.raises(MalformedManifest):
        Manifest.decode(msgpack.packb([2] + fields[1:], use_bin_type=True))
    with pytest.raises(MalformedManifest):
        Manifest.decode(msgpack.packb({"a": 1}))


def test_random_bit_flips_never_crash() -> None:
    raw = _manifest().with_signature(bytes(64)).encode()
    rnd = random.Random(5)
    good = Manifest.decode(raw)
    for _ in range(3000):
        bad = bytearray(raw)
        bit = rnd.randrange(len(raw) * 8)
        bad[bit // 8] ^= 1 << (bit % 8)
        try:
            m = Manifest.decode(bytes(bad))
        except MalformedManifest:
            continue
        assert m != good


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_malformed(data: bytes) -> None:
    try:
        Manifest.decode(data)
    except MalformedManifest:
        pass
