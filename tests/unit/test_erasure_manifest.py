"""Erasure manifests: canonical, bounded, strict; they pick the true encoding among lying shards."""

from __future__ import annotations

import io
import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.store.chunking.profiles import UNIXFS_V1_2025
from shoal.store.dag.importer import import_bytes
from shoal.store.erasure import codec
from shoal.store.erasure.manifest import MAX_EC_MANIFEST_BYTES, ErasureManifest, MalformedErasureManifest
from shoal.store.erasure.shard import FOOTER_LEN, ShardReader
from shoal.store.erasure.layout import dag_blocks
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.errors import StoreError
from shoal.store.persist.blockstore import MemoryBlockstore

OWNER = bytes.fromhex("0024080112") + bytes(range(33))


def _encoded(k: int = 4, m: int = 2) -> tuple[CID, MemoryBlockstore, list[bytes], ErasureManifest]:
    store = MemoryBlockstore()
    root = import_bytes(random.Random(11).randbytes(40_000), store,
                        UNIXFS_V1_2025.with_overrides(chunk_size=4096, max_links=4)).cid
    sinks = [io.BytesIO() for _ in range(k + m)]
    _, infos = codec.encode_object(root, store.get, store.size, sinks, k, m, 1024, commit_segment_size=64)
    shards = [s.getvalue() for s in sinks]
    header = ShardReader(io.BytesIO(shards[0])).header
    return root, store, shards, ErasureManifest.from_encoding(header, infos, OWNER, 1_796_000_000)


def test_round_trip_signing_bytes_and_size_bound() -> None:
    _, _, shards, mf = _encoded(10, 6)
    signed = mf.with_signature(bytes(64))
    raw = signed.encode()
    assert ErasureManifest.decode(raw) == signed
    assert signed.signing_bytes() == mf.signing_bytes() != raw
    assert signed.signing_bytes().startswith(b"shoal-ec-manifest-v1\x00")
    assert len(raw) < MAX_EC_MANIFEST_BYTES
    for i, shard in enumerate(shards):
        assert mf.shard_cid(i) == make_cid("raw", shard) and mf.commitment(i).length == len(shard)
        assert mf.matches(ShardReader(io.BytesIO(shard)).header)


def test_the_signed_layout_picks_the_true_shards_among_liars() -> None:
    root, store, shards, mf = _encoded()
    liar = bytearray(shards[2])
    liar[-FOOTER_LEN - 1] ^= 1  # its table differs: another layout id
    readers = [ShardReader(io.BytesIO(s)) for s in shards[:2] + [bytes(liar)] + shards[3:]]
    assert not mf.matches(readers[2].header)
    with pytest.raises(StoreError):  # without the signed id the shards disagree
        list(codec.reconstruct(readers, root))
    got = list(codec.reconstruct(readers, root, layout_id=mf.layout_id))
    assert [(bytes(c), d) for c, d in got] == [(bytes(c), d) for c, d in dag_blocks(root, store.get)]


def test_invalid_values_are_refused() -> None:
    _, _, _, mf = _encoded()
    from dataclasses import replace
    for bad in (dict(k=0), dict(m=300), dict(layout_id=b"short"), dict(shards=mf.shards[:-1]),
                dict(shards=mf.shards[:-1] + ((make_cid("dag-pb", b"x"), mf.shards[0][1]),)),
                dict(owner=b""), dict(created=-1), dict(root_cid="nope")):
        with pytest.raises(MalformedErasureManifest):
            replace(mf, **bad)  # type: ignore[arg-type]


def test_non_canonical_and_oversized_encodings_are_refused() -> None:
    _, _, _, mf = _encoded()
    fields = msgpack.unpackb(mf.encode(), raw=False)
    fields[2] = float(fields[2])
    with pytest.raises(MalformedErasureManifest):
        ErasureManifest.decode(msgpack.packb(fields, use_bin_type=True))
    with pytest.raises(MalformedErasureManifest, match="too large"):
        ErasureManifest.decode(bytes(MAX_EC_MANIFEST_BYTES + 1))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_decoder_fuzz(data: st.DataObject) -> None:
    raw = bytearray(_MF_BYTES)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        if data.draw(st.booleans()):
            raw[at] ^= 1 << data.draw(st.integers(0, 7))
        else:
            del raw[at:at + data.draw(st.integers(1, 20))]
        if not raw:
            break
    try:
        mf = ErasureManifest.decode(bytes(raw))
    except MalformedErasureManifest:
        return
    assert mf.encode() == bytes(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decoder_fuzz_random_bytes(raw: bytes) -> None:
    try:
        mf = ErasureManifest.decode(raw)
    except MalformedErasureManifest:
        return
    assert mf.encode() == raw


_MF_BYTES = _encoded()[3].with_signature(bytes(64)).encode()
