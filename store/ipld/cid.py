"""CIDs: the few operations Shoal needs, on top of `multiformats.CID`.

Shoal supports sha2-256 multihashes with the raw (0x55) and dag-pb (0x70)
codecs, CIDv0 and CIDv1. Text form is base32 for v1 (`bafy…`, `bafk…`) and
base58btc for v0 (`Qm…`). Every block is checked with `verify_block` before
it is used or stored.
"""

from __future__ import annotations

import hashlib
from typing import Callable

from multiformats import CID, multihash

from shoal.store.errors import HashMismatch, InvalidCID, MalformedBlock
from shoal.store.ipld import varint

RAW = "raw"
DAG_PB = "dag-pb"
RAW_CODE = 0x55
DAG_PB_CODE = 0x70
SHA2_256_CODE = 0x12
SUPPORTED_CODECS = frozenset({RAW, DAG_PB})

__all__ = [
    "CID", "RAW", "DAG_PB", "make_cid", "cid_for_digest", "parse_cid",
    "cid_from_bytes", "verify_block", "block_key", "digest_of", "multihash_digest",
]


def _slow_cid(codec: str, digest: bytes, version: int) -> CID:
    mh = multihash.wrap(digest, "sha2-256")
    if version == 0:
        if codec != DAG_PB:
            raise InvalidCID("CIDv0 can only address dag-pb blocks")
        return CID("base58btc", 0, DAG_PB, mh)
    return CID("base32", 1, codec, mh)


def _cid_maker(codec: str, version: int) -> Callable[[bytes], CID]:
    """A fast digest -> CID constructor for one (codec, version).

    `multiformats.CID(...)` validates everything and costs ~0.1-0.2 ms, which
    shows at thousands of blocks per GiB, on import and on every link read.
    Its internal constructor skips that; it is used only if it provably
    builds the same CID as the public path, so a library change degrades
    speed, never correctness.
    """

    def slow(digest: bytes) -> CID:
        return _slow_cid(codec, digest, version)

    probe = hashlib.sha256(b"shoal").digest()
    reference = slow(probe)
    new_instance = getattr(CID, "_new_instance", None)
    if new_instance is None:
        return slow
    base, vers, cod, hashfun = reference.base, reference.version, reference.codec, reference.hashfun

    def fast(digest: bytes) -> CID:
        return new_instance(CID, base, vers, cod, hashfun, b"\x12\x20" + digest)  # type: ignore[no-any-return]

    try:
        if fast(probe) == reference and str(fast(probe)) == str(reference) and bytes(fast(probe)) == bytes(reference):
            return fast
    except Exception:  # any internal API drift: use the public constructor
        pass
    return slow


_MAKERS: dict[tuple[str, int], Callable[[bytes], CID]] = {}


def _maker(codec: str, version: int) -> Callable[[bytes], CID]:
    key = (codec, version)
    maker = _MAKERS.get(key)
    if maker is None:
        if version == 0 and codec != DAG_PB:
            raise InvalidCID("CIDv0 can only address dag-pb blocks")
        maker = _MAKERS[key] = _cid_maker(codec, version)
    return maker


def cid_for_digest(codec: str, digest: bytes, version: int = 1) -> CID:
    """Build a CID from a precomputed sha2-256 digest."""
    if len(digest) != 32:
        raise InvalidCID("a sha2-256 digest is 32 bytes")
    return _maker(codec, version)(bytes(digest))


def make_cid(codec: str, data: bytes | memoryview, version: int = 1) -> CID:
    """Hash `data` with sha2-256 and return its CID."""
    return cid_for_digest(codec, hashlib.sha256(data).digest(), version)


def _check_supported(cid: CID) -> CID:
    if cid.codec.name not in SUPPORTED_CODECS:
        raise InvalidCID(f"unsupported codec {cid.codec.name} in {cid}")
    if cid.hashfun.name != "sha2-256":
        raise InvalidCID(f"unsupported hash {cid.hashfun.name} in {cid}")
    mh = bytes(cid.digest)
    if len(mh) != 34 or mh[1] != 32:
        raise InvalidCID("bad sha2-256 digest length in a CID")
    return cid


def parse_cid(text: str) -> CID:
    """Parse a CID string; raise InvalidCID (never another error) if it is not one."""
    text = text.strip()
    if not text or len(text) > 512:
        raise InvalidCID(f"not a CID: {text[:80]!r}")
    try:
        cid = CID.decode(text)
    except Exception as exc:  # multiformats raises a zoo of types
        raise InvalidCID(f"not a CID: {text[:80]!r}") from exc
    if cid.version == 1:
        cid = cid.set(base="base32")  # one canonical text form, whatever base was typed
    return _check_supported(cid)


_V1_PREFIXES = {b"\x01\x55\x12\x20": RAW, b"\x01\x70\x12\x20": DAG_PB}


def cid_from_bytes(raw: bytes) -> CID:
    """Decode a binary CID (as found in dag-pb links and CAR files)."""
    raw = bytes(raw)
    if len(raw) == 34 and raw[:2] == b"\x12\x20":
        return cid_for_digest(DAG_PB, raw[2:], 0)
    if len(raw) == 36 and raw[:4] in _V1_PREFIXES:
        return cid_for_digest(_V1_PREFIXES[raw[:4]], raw[4:], 1)
    try:
        cid = CID.decode(raw)
    except Exception as exc:
        raise InvalidCID(f"not a binary CID: {raw[:40].hex()}") from exc
    if cid.version == 1:
        cid = cid.set(base="base32")  # binary CIDs carry no base; print v1 as bafy...
    return _check_supported(cid)


def multihash_digest(cid: CID) -> bytes:
    """The digest inside `cid`'s multihash (any hash function), sliced from
    the multihash bytes.

    Not `CID.raw_digest`: that multiformats property keeps a reference to
    its caller's frame alive (measured with tracemalloc: verifying 1 MiB
    blocks in a generator held ~7 of them at once), which breaks the memory
    bound of every loop that checks blocks as they stream past.
    """
    mh = bytes(cid.digest)
    try:
        _code, pos = varint.decode(mh)
        length, pos = varint.decode(mh, pos)
    except MalformedBlock:
        raise InvalidCID("malformed multihash in a CID") from None
    if len(mh) - pos != length:
        raise InvalidCID("multihash length does not match its digest")
    return mh[pos:]


def digest_of(cid: CID) -> bytes:
    """The raw 32-byte sha2-256 digest of a supported CID."""
    return multihash_digest(cid)


def verify_block(cid: CID, data: bytes | memoryview) -> None:
    """Raise HashMismatch unless sha2-256(data) equals the CID's digest."""
    if hashlib.sha256(data).digest() != digest_of(cid):
        raise HashMismatch(cid)


def block_key(cid: CID) -> str:
    """Blockstore key: base32 (RFC 4648, upper, no padding) of the multihash.

    Keyed by multihash, not CID, like kubo's flatfs: the same bytes stored as
    CIDv0 and CIDv1 dag-pb share one file, and raw vs dag-pb blocks with the
    same digest (impossible unless the bytes are equal) likewise.
    """
    import base64

    return base64.b32encode(bytes(cid.digest)).decode().rstrip("=")
