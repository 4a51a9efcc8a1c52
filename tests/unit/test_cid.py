"""shoal.store.ipld.cid: binary and text CID decoding refuse bad input with InvalidCID only."""

import pytest

def test_binary_cid_with_oversized_sha256_digest_is_invalid_cid() -> None:
    """Found by the CAR fuzz test: a v1 CID claiming sha2-256 with a 33-byte
    digest made multiformats raise its own error past our InvalidCID."""
    from shoal.store.ipld.cid import cid_from_bytes
    from shoal.store.errors import InvalidCID

    raw = bytes([0x01, 0x55, 0x12, 33]) + bytes(33)
    with pytest.raises(InvalidCID):
        cid_from_bytes(raw)
