"""The signed-manifest envelope shared by replica and erasure manifests
(shoal.store.proofs.signed_array): both refuse the same malformed envelopes
the same way, and sign a domain-separated body."""

from __future__ import annotations

import msgpack
import pytest

from shoal.store.erasure.manifest import ErasureManifest, MalformedErasureManifest
from shoal.store.proofs.manifest import Manifest, MalformedManifest
from shoal.store.proofs.signed_array import check_envelope, pack, signing_bytes, unpack_array
from tests.unit.test_erasure_manifest import _encoded
from tests.unit.test_manifest import _manifest


def _both() -> list[tuple[bytes, type[Exception], type[Manifest] | type[ErasureManifest]]]:
    return [(_manifest().encode(), MalformedManifest, Manifest),
            (_encoded()[3].encode(), MalformedErasureManifest, ErasureManifest)]


@pytest.mark.parametrize("case", range(2))
def test_both_manifests_refuse_a_bool_version_and_a_padded_int(case: int) -> None:
    data, error, cls = _both()[case]
    fields = msgpack.unpackb(data, raw=False)
    fields[0] = True  # msgpack true, which Python would take for 1
    with pytest.raises(error, match="version"):
        cls.decode(msgpack.packb(fields, use_bin_type=True))
    # version 1 as a uint16 instead of a positive fixint: the same value, not the canonical bytes
    padded = data[:1] + b"\xcd\x00\x01" + data[2:]
    with pytest.raises(error, match="canonical"):
        cls.decode(padded)


@pytest.mark.parametrize("case", range(2))
def test_both_manifests_refuse_an_empty_owner_and_a_bool_created(case: int) -> None:
    data, error, cls = _both()[case]
    good = cls.decode(data)
    with pytest.raises(error, match="owner"):
        cls.decode(msgpack.packb([*msgpack.unpackb(data, raw=False)[:-3], b"", 5, b""],
                                 use_bin_type=True))
    fields = msgpack.unpackb(data, raw=False)
    fields[-2] = True
    with pytest.raises(error, match="created"):
        cls.decode(msgpack.packb(fields, use_bin_type=True))
    fields = msgpack.unpackb(data, raw=False)
    assert good.signing_bytes().endswith(pack(fields[:-1]))  # the body without the signature, after a domain tag
    assert not good.signing_bytes().startswith(pack(fields[:-1]))


def test_the_envelope_helpers_directly() -> None:
    class Bad(ValueError):
        pass

    CID = _manifest().root_cid
    check_envelope(Bad, CID, b"owner", 0, b"")
    for args in [("", b"o", 0, b""), ("not a cid", b"o", 0, b""), (CID, b"", 0, b""), (CID, b"o", -1, b""),
                 (CID, b"o", False, b""), (CID, b"o", 0, b"s" * 129), (CID, "o", 0, b"")]:
        with pytest.raises(Bad):
            check_envelope(Bad, *args)
    body = [1, "x", 2]
    assert signing_bytes(b"tag\x00", body[:-1]) == b"tag\x00" + pack(body[:-1])
    assert unpack_array(pack(body), error=Bad, what="a thing", version=1, fields=3, max_bytes=100,
                        max_bin_len=10, max_array_len=3) == ["x", 2]
    with pytest.raises(Bad, match="too large"):
        unpack_array(pack(body), error=Bad, what="a thing", version=1, fields=3, max_bytes=2,
                     max_bin_len=10, max_array_len=3)
    with pytest.raises(Bad, match="not a thing"):
        unpack_array(b"\xc1", error=Bad, what="a thing", version=1, fields=3, max_bytes=100,
                     max_bin_len=10, max_array_len=3)
    with pytest.raises(Bad, match="3 elements"):
        unpack_array(pack([1, 2]), error=Bad, what="a thing", version=1, fields=3, max_bytes=100,
                     max_bin_len=10, max_array_len=3)
