"""dag-pb: the protobuf node format that UnixFS DAGs are built from.

Encoding is byte-identical to `@ipld/dag-pb` (the JS codec the IPFS importer
uses): Links are written before Data, an empty link name is still written,
link fields in order Hash, Name, Tsize, minimal varints. Any difference
here would change every CID, so tests pin it against the real importer.

Decoding is strict and bounded, because blocks arrive from untrusted peers:
unknown fields, wrong wire types, duplicate or out-of-order link fields,
interleaved Links/Data, truncation, non-minimal varints, blocks above
`MAX_BLOCK_SIZE` and link hashes that are not structurally CIDs all raise
`MalformedBlock` and nothing else. Like the JS decoder, Data-before-Links is
accepted (older encoders wrote it); it re-encodes canonically.

Names are kept as `str`; bytes that are not UTF-8 are carried with
`surrogateescape`, so any name round-trips byte for byte.

Not here: what Data means (that is `shoal.store.ipld.unixfs`), CID hashing (`shoal.store.ipld.cid`).
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal.store.ipld import varint
from shoal.store.errors import MalformedBlock

MAX_BLOCK_SIZE = 2 * 1024 * 1024
# A link costs at least 2 (key+len) + 2 (hash key+len) + 34 (smallest CID we
# accept) bytes, so this cap is never hit by a block under MAX_BLOCK_SIZE
# with real CIDs; it bounds work on hostile input with tiny fake hashes.
MAX_LINKS = MAX_BLOCK_SIZE // 8

_KEY_DATA = 0x0A  # field 1, wire type 2
_KEY_LINKS = 0x12  # field 2, wire type 2
_KEY_HASH = 0x0A
_KEY_NAME = 0x12
_KEY_TSIZE = 0x18  # field 3, wire type 0


@dataclass(frozen=True, slots=True)
class PBLink:
    """One dag-pb link: binary CID, optional name, optional cumulative size."""

    hash: bytes
    name: str | None = None
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A dag-pb node: ordered links and optional opaque data."""

    links: tuple[PBLink, ...] = ()
    data: bytes | None = None


def _name_bytes(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def encode_link(link: PBLink) -> bytes:
    """Encode one PBLink's fields (without the enclosing key and length)."""
    if link.tsize is not None and link.tsize < 0:
        raise ValueError("Tsize cannot be negative")
    out = bytearray()
    out.append(_KEY_HASH)
    out += varint.encode(len(link.hash))
    out += link.hash
    if link.name is not None:
        nb = _name_bytes(link.name)
        out.append(_KEY_NAME)
        out += varint.encode(len(nb))
        out += nb
    if link.tsize is not None:
        out.append(_KEY_TSIZE)
        out += varint.encode(link.tsize)
    return bytes(out)


def encode(node: PBNode) -> bytes:
    """Serialize canonically: every link in order, then Data if present."""
    parts: list[bytes] = []
    for link in node.links:
        body = encode_link(link)
        parts.append(bytes((_KEY_LINKS,)) + varint.encode(len(body)))
        parts.append(body)
    if node.data is not None:
        parts.append(bytes((_KEY_DATA,)) + varint.encode(len(node.data)))
        parts.append(bytes(node.data))
    return b"".join(parts)


def link_size(name_len: int, hash_len: int, tsize: int) -> int:
    """Exact bytes one named link with a Tsize adds to an encoded node.

    The directory builder uses it to predict node sizes (HAMT decision)
    without re-encoding.
    """
    body = 1 + len(varint.encode(hash_len)) + hash_len
    body += 1 + len(varint.encode(name_len)) + name_len
    body += 1 + len(varint.encode(tsize))
    return 1 + len(varint.encode(body)) + body


def _read_len(buf: bytes | memoryview, pos: int, end: int) -> tuple[int, int]:
    length, pos = varint.decode(buf, pos)
    if length > end - pos:
        raise MalformedBlock("dag-pb: length runs past the end")
    return length, pos


def _check_cid_bytes(raw: bytes) -> None:
    """Structural CID check (no registry lookups, so it is cheap and total)."""
    if len(raw) == 34 and raw[0] == 0x12 and raw[1] == 0x20:
        return  # CIDv0: a bare sha2-256 multihash
    try:
        version, pos = varint.decode(raw, 0)
        if version != 1:
            raise MalformedBlock(f"dag-pb: link hash has CID version {version}")
        _codec, pos = varint.decode(raw, pos)
        _hash_code, pos = varint.decode(raw, pos)
        digest_len, pos = varint.decode(raw, pos)
    except MalformedBlock as exc:
        raise MalformedBlock(f"dag-pb: link hash is not a CID ({exc})") from None
    if pos + digest_len != len(raw):
        raise MalformedBlock("dag-pb: link hash is not a CID (digest length)")


def _decode_link(buf: memoryview, pos: int, end: int) -> PBLink:
    hash_: bytes | None = None
    name: str | None = None
    tsize: int | None = None
    last_field = 0
    while pos < end:
        key, pos = varint.decode(buf, pos)
        field, wire = key >> 3, key & 7
        if field <= last_field:
            raise MalformedBlock("dag-pb: link fields duplicated or out of order")
        last_field = field
        if field == 1 and wire == 2:
            n, pos = _read_len(buf, pos, end)
            hash_ = bytes(buf[pos:pos + n])
            pos += n
        elif field == 2 and wire == 2:
            n, pos = _read_len(buf, pos, end)
            name = bytes(buf[pos:pos + n]).decode("utf-8", "surrogateescape")
            pos += n
        elif field == 3 and wire == 0:
            tsize, pos = varint.decode(buf, pos)
        else:
            raise MalformedBlock(f"dag-pb: unexpected link field {field} (wire type {wire})")
    if pos != end:
        raise MalformedBlock("dag-pb: link runs past its length")
    if hash_ is None:
        raise MalformedBlock("dag-pb: link without Hash")
    _check_cid_bytes(hash_)
    return PBLink(hash_, name, tsize)


def decode(block: bytes | memoryview) -> PBNode:
    """Parse a dag-pb block; raise MalformedBlock on anything non-conforming."""
    if len(block) > MAX_BLOCK_SIZE:
        raise MalformedBlock(f"dag-pb: block of {len(block)} bytes exceeds {MAX_BLOCK_SIZE}")
    buf = memoryview(block)
    end = len(buf)
    pos = 0
    links: list[PBLink] = []
    data: bytes | None = None
    data_after_links = False
    while pos < end:
        key, pos = varint.decode(buf, pos)
        if key == _KEY_LINKS:
            if data_after_links:
                raise MalformedBlock("dag-pb: Links interleaved with Data")
            if len(links) >= MAX_LINKS:
                raise MalformedBlock("dag-pb: too many links")
            n, pos = _read_len(buf, pos, end)
            links.append(_decode_link(buf, pos, pos + n))
            pos += n
        elif key == _KEY_DATA:
            if data is not None:
                raise MalformedBlock("dag-pb: duplicate Data")
            n, pos = _read_len(buf, pos, end)
            data = bytes(buf[pos:pos + n])
            data_after_links = bool(links)
            pos += n
        else:
            raise MalformedBlock(f"dag-pb: unexpected node field (key {key:#x})")
    return PBNode(tuple(links), data)
