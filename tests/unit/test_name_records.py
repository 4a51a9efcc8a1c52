"""Name records (shoal.store.names.records): validation, signing bytes, a bounded codec."""

from __future__ import annotations

import hashlib

import msgpack
import pytest
from hypothesis import given, settings, strategies as st

from shoal.store.errors import InvalidInput
from shoal.store.ipld.cid import CID, RAW
from shoal.store.names.records import (
    MAX_FILES, MAX_RECORD_BYTES, SIGNING_DOMAIN, InvalidNameRecord, NameRecord, RepoFile,
)

PEER = "12D3KooWGzVGyTfXn4Hk1oPK6mSxAYjymGcTEPhFaEhZqEF8Z6nX"


def cid_of(data: bytes) -> str:
    return str(CID("base32", 1, RAW, ("sha2-256", hashlib.sha256(data).digest())))


DIR_CID = cid_of(b"a directory")


def repo_file(path: str, content: bytes = b"x") -> RepoFile:
    return RepoFile(path, len(content), hashlib.sha256(content).hexdigest(),
                    hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest(), cid_of(content))


def record(**changes: object) -> NameRecord:
    fields: dict[str, object] = dict(
        repo="org/model", kind="model", revision="main", cid=DIR_CID, commit="ab" * 20,
        files=(repo_file("config.json", b"{}"), repo_file("sub/w.bin", b"weights")),
        publisher=PEER, seq=3, signature=b"\x01" * 64)
    fields.update(changes)
    return NameRecord(**fields)  # type: ignore[arg-type]


def test_round_trip_is_exact() -> None:
    r = record()
    assert NameRecord.decode(r.encode()) == r
    assert NameRecord.decode(r.encode()).encode() == r.encode()


def test_signing_bytes_are_domain_tagged_and_cover_every_field_but_the_signature() -> None:
    r = record()
    assert r.signing_bytes().startswith(SIGNING_DOMAIN)
    assert record(signature=b"").signing_bytes() == r.signing_bytes()
    for change in (dict(repo="org/other"), dict(kind="dataset"), dict(revision="v1"),
                   dict(cid=cid_of(b"other")), dict(commit="cd" * 20), dict(seq=4),
                   dict(publisher=PEER[:-1] + "Y"), dict(files=(repo_file("config.json", b"{}"),))):
        assert record(**change).signing_bytes() != r.signing_bytes(), change


@pytest.mark.parametrize("change", [
    dict(repo="org"), dict(repo="org/../x"), dict(repo="a/b/c"), dict(repo="or g/x"), dict(repo="o/" + "x" * 300),
    dict(kind="space"), dict(revision=""), dict(revision="../main"), dict(revision="a//b"),
    dict(commit="AB" * 20), dict(commit="ab"), dict(cid="not-a-cid"), dict(publisher="0OIl"),
    dict(seq=-1), dict(seq=2**63), dict(seq=True), dict(signature=b"s" * 65),
    dict(files=(repo_file("b"), repo_file("a"))), dict(files=(repo_file("a"), repo_file("a"))),
])
def test_bad_fields_are_refused(change: dict[str, object]) -> None:
    with pytest.raises(InvalidNameRecord):
        record(**change)


@pytest.mark.parametrize("path", ["", "/abs", "a/../b", "a//b", "./a", "a/", "a\x00b", "x" * 1025])
def test_bad_file_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidNameRecord):
        repo_file(path)


def test_invalid_name_record_is_a_store_invalid_input() -> None:
    assert issubclass(InvalidNameRecord, InvalidInput)


def test_oversized_input_is_refused_before_unpacking() -> None:
    with pytest.raises(InvalidNameRecord, match="over"):
        NameRecord.decode(b"\x90" * (MAX_RECORD_BYTES + 1))


def test_a_huge_declared_array_is_refused_without_allocating_it() -> None:
    # array32 header claiming 2**32-1 elements, then almost nothing
    with pytest.raises(InvalidNameRecord):
        NameRecord.decode(b"\xdd\xff\xff\xff\xff" + b"\x00" * 10)
    body = msgpack.packb([1, "org/m", "model", "main", DIR_CID, b"\x00" * 20], use_bin_type=True)
    # files field declaring more entries than MAX_FILES
    with pytest.raises(InvalidNameRecord):
        NameRecord.decode(b"\x9a" + body[1:] + b"\xdd" + (MAX_FILES + 1).to_bytes(4, "big"))


def test_too_many_files_are_refused_when_built() -> None:
    files = tuple(repo_file(f"f{i:06d}") for i in range(MAX_FILES + 1))
    with pytest.raises(InvalidNameRecord, match="at most"):
        record(files=files)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_decode_only_raises_invalid_name_record(data: bytes) -> None:
    try:
        NameRecord.decode(data)
    except InvalidNameRecord:
        pass


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=2000), st.integers(min_value=0, max_value=255))
def test_fuzz_mutated_valid_records_decode_or_raise_cleanly(pos: int, byte: int) -> None:
    data = bytearray(record().encode())
    data[pos % len(data)] = byte
    try:
        r = NameRecord.decode(bytes(data))
    except InvalidNameRecord:
        return
    assert NameRecord.decode(r.encode()) == r


_segment = st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=12).filter(lambda s: s not in (".", "..") and ".." not in s)
_paths = st.lists(_segment, min_size=1, max_size=3).map("/".join)


@settings(max_examples=150, deadline=None)
@given(
    name=st.tuples(_segment, _segment).map("/".join),
    kind=st.sampled_from(["model", "dataset"]),
    revision=st.lists(_segment, min_size=1, max_size=3).map("/".join),
    contents=st.dictionaries(_paths, st.binary(max_size=40), max_size=8),
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    signature=st.binary(max_size=64),
)
def test_hypothesis_round_trip(name: str, kind: str, revision: str, contents: dict[str, bytes],
                               seq: int, signature: bytes) -> None:
    files = tuple(repo_file(p, c) for p, c in sorted(contents.items(), key=lambda kv: kv[0].encode()))
    r = NameRecord(name, kind, revision, DIR_CID, hashlib.sha1(name.encode()).hexdigest(), files,
                   PEER, seq, signature)
    assert NameRecord.decode(r.encode()) == r
