"""shoal.store.ipld.cid: binary and text CID decoding refuse bad input with InvalidCID only."""

from typing import Iterator

import pytest

from shoal.store.ipld.cid import CID, RAW, make_cid, verify_block


def test_binary_cid_with_oversized_sha256_digest_is_invalid_cid() -> None:
    """Found by the CAR fuzz test: a v1 CID claiming sha2-256 with a 33-byte
    digest made multiformats raise its own error past our InvalidCID."""
    from shoal.store.ipld.cid import cid_from_bytes
    from shoal.store.errors import InvalidCID

    raw = bytes([0x01, 0x55, 0x12, 33]) + bytes(33)
    with pytest.raises(InvalidCID):
        cid_from_bytes(raw)


def test_checking_blocks_does_not_keep_them_alive() -> None:
    """`CID.raw_digest` (multiformats) keeps its caller's frame alive: a
    generator that verified 1 MiB blocks with it held ~7 of them at once.
    verify_block slices the digest from the multihash instead."""
    import tracemalloc

    def blocks(n: int) -> Iterator[CID]:
        for i in range(n):
            data = bytes([i % 256]) * (1 << 20)
            cid = make_cid(RAW, data)
            verify_block(cid, data)
            yield cid

    tracemalloc.start()
    try:
        for _ in blocks(24):
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"peak {peak / 2**20:.1f} MiB: checked blocks are kept alive"


@pytest.mark.parametrize("text", [
    "bafkqaaa",  # identity, empty
    "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
])
def test_multihash_digest_equals_multiformats(text: str) -> None:
    from shoal.store.ipld.cid import multihash_digest

    cid = CID.decode(text)
    assert multihash_digest(cid) == bytes(cid.raw_digest)
