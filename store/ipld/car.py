"""CARv1 archives: move a DAG to and from kubo, Helia, ipfs-car and Filecoin.

Format (https://ipld.io/specs/transport/car/carv1/): a varint-prefixed
DAG-CBOR header `{"roots": [CID...], "version": 1}`, then sections, each
`varint(len(cid) + len(data)) ‖ binary CID ‖ data`.

What this module does: writes the header with a tiny canonical DAG-CBOR
encoder for exactly that shape, reads it back with a strict decoder for
exactly that shape, streams sections with hard size caps, hash-verifies every
block, and imports all-or-nothing.

What it deliberately does not do: CARv2 (index + pragma; refused with a
clear message), general DAG-CBOR, codecs other than raw and dag-pb, hashes
other than sha2-256, or holding a whole CAR in memory.
"""

from __future__ import annotations

from pathlib import Path

import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Protocol

from shoal.store.ipld import varint
from shoal.store.ipld.cid import CID, DAG_PB, block_key, cid_from_bytes, verify_block
from shoal.store.errors import CarError, HashMismatch, InvalidCID, MalformedBlock, StoreError
from shoal.store.dag.exporter import iter_links, walk_dag
from shoal.store.persist.durable import durable_file
from shoal.store.dag.walk import DagWalk

if TYPE_CHECKING:
    from shoal.store.persist.blockstore import Blockstore

__all__ = [
    "CarReader", "CarImportResult", "read_car", "write_car", "export_car",
    "import_car", "encode_header", "decode_header",
    "MAX_HEADER_SIZE", "MAX_ROOTS", "MAX_BLOCK_SIZE",
]

MAX_HEADER_SIZE = 1 << 20
"""A one-root header is ~60 bytes; 1 MiB bounds the allocation a hostile prefix can ask for."""
MAX_ROOTS = 8192
MAX_BLOCK_SIZE = 4 << 20
"""Bitswap moves blocks of at most 2 MiB; 4 MiB leaves room without letting a prefix ask for GiBs."""
MAX_CID_SIZE = 64
"""A sha2-256 CIDv1 is 36 bytes; anything we accept fits comfortably in 64."""
MAX_SECTION_SIZE = MAX_BLOCK_SIZE + MAX_CID_SIZE

_CID_TAG = b"\xd8\x2a"  # CBOR tag 42 (one-byte-argument form, the only minimal one)
_KEY_ROOTS = b"\x65roots"
_KEY_VERSION = b"\x67version"
_CARV2_PRAGMA = bytes.fromhex("0aa16776657273696f6e02")


def _decode_cid(raw: bytes) -> CID:
    """Binary CID → CID that prints as Shoal prints CIDs (base32 for v1, base58btc for v0).

    `cid_from_bytes` leaves v1 CIDs in base58btc (the multiformats default for
    binary input), which would print as `zb2…`/`zdj7…`; equality is unaffected.
    """
    cid = cid_from_bytes(raw)
    return cid.set(base="base32") if cid.version == 1 and cid.base.name != "base32" else cid


# --- header: canonical DAG-CBOR for exactly {roots: [CID...], version: 1} ---

def _cbor_head(major: int, value: int) -> bytes:
    """Minimal-length CBOR head, as DAG-CBOR requires."""
    if value < 24:
        return bytes([major << 5 | value])
    for info, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * width):
            return bytes([major << 5 | info]) + value.to_bytes(width, "big")
    raise CarError("CBOR length out of range")


def encode_header(roots: list[CID]) -> bytes:
    """DAG-CBOR bytes of the CARv1 header (without its varint length prefix).

    Keys are in DAG-CBOR order (shorter first, so "roots" before "version");
    each root is tag 42 around bytes 0x00 ‖ binary CID, as @ipld/dag-cbor writes.
    """
    if len(roots) > MAX_ROOTS:
        raise CarError(f"too many roots ({len(roots)} > {MAX_ROOTS})")
    out = bytearray(b"\xa2" + _KEY_ROOTS + _cbor_head(4, len(roots)))
    for root in roots:
        link = b"\x00" + bytes(root)
        out += _CID_TAG + _cbor_head(2, len(link)) + link
    out += _KEY_VERSION + b"\x01"
    return bytes(out)


class _HeaderParser:
    """Strict cursor over header bytes: only the heads this shape can contain."""

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        if n > len(self.buf) - self.pos:
            raise CarError("truncated CAR header")
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def head(self) -> tuple[int, int]:
        """Read a CBOR head; refuse indefinite lengths and non-minimal arguments."""
        first = self.take(1)[0]
        major, info = first >> 5, first & 0x1F
        if info < 24:
            return major, info
        if info > 27:
            raise CarError("CAR header uses indefinite or reserved CBOR lengths")
        width = 1 << (info - 24)
        value = int.from_bytes(self.take(width), "big")
        if value < (24 if width == 1 else 1 << (4 * width)):
            raise CarError("CAR header uses a non-minimal CBOR integer")
        return major, value

    def expect(self, raw: bytes, what: str) -> None:
        if self.take(len(raw)) != raw:
            raise CarError(f"CAR header: expected {what}")

    def cid(self) -> CID:
        self.expect(_CID_TAG, "a CID (tag 42)")
        major, length = self.head()
        if major != 2 or not 2 <= length <= MAX_CID_SIZE + 1:
            raise CarError("CAR header: root is not a CID byte string")
        link = self.take(length)
        if link[0] != 0:
            raise CarError("CAR header: root CID lacks the 0x00 multibase prefix")
        try:
            return _decode_cid(link[1:])
        except InvalidCID as exc:
            raise CarError(f"CAR header: {exc}") from exc


def decode_header(buf: bytes) -> list[CID]:
    """Parse header bytes; return the roots. Anything but a canonical CARv1 header is CarError."""
    if buf == _CARV2_PRAGMA[1:]:
        raise CarError("this is a CARv2 file; only CARv1 is supported "
                       "(convert it, e.g. `car -v1` / ipfs dag export)")
    p = _HeaderParser(buf)
    major, count = p.head()
    if major != 5:
        raise CarError("CAR header is not a CBOR map")
    if count != 2:
        # A version-only map is how CARv2 and future versions announce themselves.
        if count == 1 and buf[1:2 + len("version")] == _KEY_VERSION:
            raise CarError("unsupported CAR version (only CARv1 is supported)")
        raise CarError(f"CAR header must have exactly the keys roots and version, has {count}")
    p.expect(_KEY_ROOTS, '"roots" as the first key')
    major, n = p.head()
    if major != 4:
        raise CarError("CAR header: roots is not an array")
    if n > MAX_ROOTS:
        raise CarError(f"CAR header: too many roots ({n} > {MAX_ROOTS})")
    roots = [p.cid() for _ in range(n)]
    p.expect(_KEY_VERSION, '"version" as the second key')
    major, version = p.head()
    if major != 0 or version != 1:
        raise CarError(f"unsupported CAR version {version if major == 0 else '?'} "
                       "(only CARv1 is supported)")
    if p.pos != len(buf):
        raise CarError("trailing bytes in CAR header")
    return roots


# --- sections ---

class _Source(Protocol):
    """All the reader needs of a stream, so pipes, files and the spooling tee all fit."""

    def read(self, n: int, /) -> bytes: ...


def _read_exact(stream: _Source, n: int) -> bytes:
    """Read exactly n bytes (n already capped by the caller); short → CarError."""
    parts: list[bytes] = []
    left = n
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise CarError(f"truncated CAR: wanted {n} bytes, got {n - left}")
        parts.append(chunk)
        left -= len(chunk)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _read_varint(stream: _Source) -> int | None:
    try:
        return varint.read_from(stream)
    except MalformedBlock as exc:
        raise CarError(f"bad CAR length prefix: {exc}") from exc


def _split_section(section: bytes) -> tuple[CID, memoryview]:
    """Split a section into its CID and block bytes.

    CIDv0 is a bare sha2-256 multihash (0x12 0x20 + 32 bytes); a CIDv1 is
    varint version, varint codec, then the multihash. The length of the CID is
    found by walking those varints, since the section only gives the total.
    """
    if section[:2] == b"\x12\x20":
        end = 34
    else:
        try:
            pos = 0
            for _ in range(3):  # version, codec, multihash code
                _, pos = varint.decode(section, pos)
            digest_len, pos = varint.decode(section, pos)
        except MalformedBlock as exc:
            raise CarError(f"bad CID in CAR section: {exc}") from exc
        end = pos + digest_len
    if end > len(section) or end > MAX_CID_SIZE:
        raise CarError("bad CID in CAR section (too long, or longer than its section)")
    try:
        cid = _decode_cid(section[:end])
    except InvalidCID as exc:
        raise CarError(f"CAR section: {exc}") from exc
    return cid, memoryview(section)[end:]


class CarReader:
    """A CARv1 stream whose header has been read; iterate it for verified blocks.

    Iteration is single-pass and streaming: one section in memory at a time.
    Each yielded block has already matched its CID's sha2-256 digest.
    """

    def __init__(self, stream: _Source) -> None:
        self._stream = stream
        length = _read_varint(stream)
        if length is None:
            raise CarError("empty CAR file")
        if length == 0 or length > MAX_HEADER_SIZE:
            raise CarError(f"CAR header length {length} out of range")
        self.roots: list[CID] = decode_header(_read_exact(stream, length))
        self._used = False

    def __iter__(self) -> Iterator[tuple[CID, bytes]]:
        return self.blocks()

    def blocks(self) -> Iterator[tuple[CID, bytes]]:
        """Yield (CID, bytes) for every section; CarError on any bad section."""
        if self._used:
            raise CarError("a CarReader can be iterated only once")
        self._used = True
        while True:
            length = _read_varint(self._stream)
            if length is None:
                return
            if length == 0:
                raise CarError("empty CAR section")
            if length > MAX_SECTION_SIZE:
                raise CarError(f"CAR section of {length} bytes exceeds the "
                               f"{MAX_BLOCK_SIZE}-byte block limit")
            cid, data = _split_section(_read_exact(self._stream, length))
            try:
                verify_block(cid, data)
            except HashMismatch as exc:
                raise CarError(f"CAR block does not match its CID {cid}") from exc
            yield cid, bytes(data)


def read_car(stream: IO[bytes]) -> CarReader:
    """Read the header of a CARv1 stream; the result has `.roots` and yields verified blocks."""
    return CarReader(stream)


# --- writing ---

def write_car(out: IO[bytes], roots: list[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CARv1 with these roots and blocks, in the given order; return bytes written.

    Blocks are written as given, not re-hashed: callers hand over blocks they
    already verified (export_car's walk does). Blocks over MAX_BLOCK_SIZE are
    refused, so that Shoal never writes a CAR that it would itself refuse.
    """
    header = encode_header(list(roots))
    prefix = varint.encode(len(header))
    out.write(prefix)
    out.write(header)
    written = len(prefix) + len(header)
    for cid, data in blocks:
        if len(data) > MAX_BLOCK_SIZE:
            raise CarError(f"block {cid} is {len(data)} bytes, over the CAR limit")
        raw_cid = bytes(cid)
        prefix = varint.encode(len(raw_cid) + len(data))
        out.write(prefix)
        out.write(raw_cid)
        out.write(data)
        written += len(prefix) + len(raw_cid) + len(data)
    return written


def export_car(blockstore: Blockstore, root: CID, out: IO[bytes]) -> int:
    """Write the DAG under `root` as a CARv1, depth-first pre-order, each block once.

    That order is what @ipld/car, ipfs-car and kubo's `dag export` produce, so
    streaming readers can verify and unpack as they go. BlockNotFound if the
    DAG is incomplete in this blockstore.
    """
    return write_car(out, [root], walk_dag(blockstore, root))


def export_car_file(blockstore: Blockstore, root: CID, path: Path) -> int:
    """`export_car` to a file, written durably (persist.durable), so no partial CAR is left."""
    path = Path(path)
    with durable_file(path, mode=0o644, prefix=f".{path.name}.", suffix=".partial") as out:
        written = export_car(blockstore, root, out)
    return written


# --- importing ---

@dataclass(frozen=True)
class CarImportResult:
    """What import_car did.

    `blocks` counts sections in the CAR, `new_blocks` those not already in the
    store. `missing` lists CIDs reachable from the roots (through dag-pb links
    of blocks in the CAR or already in the store) that are in neither: a CAR
    may be partial on purpose, so this is reported, not refused, unless
    `require_complete=True` was passed.
    """

    roots: list[CID]
    blocks: int
    new_blocks: int
    missing: list[CID] = field(default_factory=list)
    # Roots the header names that no section of the CAR carries: a CAR that
    # claims content it does not hold. Never pinned (Repo.import_car), and
    # the CLI warns about each one.
    absent_roots: list[CID] = field(default_factory=list)
    pinned: list[CID] = field(default_factory=list)  # set by Repo.import_car

    @property
    def complete(self) -> bool:
        return not self.missing

    def as_json(self) -> dict[str, object]:
        """The `car import --json` document (the same offline and through a node)."""
        return {"roots": [str(r) for r in self.roots], "blocks": self.blocks, "new_blocks": self.new_blocks,
                "pinned": [str(r) for r in self.pinned], "absent_roots": [str(r) for r in self.absent_roots]}


def _links(cid: CID, data: bytes) -> list[CID]:
    """CIDs linked from a block (none for raw); CarError if they cannot be followed."""
    try:
        return iter_links(cid, data)
    except StoreError as exc:
        raise CarError(f"CAR block {cid} cannot be followed: {exc}") from exc


class _Tee:
    """Copies everything read from a non-seekable stream into a spool file."""

    def __init__(self, src: _Source, spool: IO[bytes]) -> None:
        self._src = src
        self._spool = spool

    def read(self, n: int, /) -> bytes:
        data = self._src.read(n)
        self._spool.write(data)
        return data


def _seekable(stream: IO[bytes]) -> bool:
    try:
        return bool(stream.seekable())
    except (AttributeError, ValueError, OSError):
        return False


def _verify_pass(stream: _Source) -> tuple[list[CID], int, set[str], dict[str, list[CID]]]:
    """Pass 1: read and verify every block, remember which are present and their links.

    Memory is one short key per block plus the links of dag-pb nodes (about
    one entry per block again), never the block bytes.
    """
    reader = CarReader(stream)
    count = 0
    present: set[str] = set()
    links: dict[str, list[CID]] = {}
    for cid, data in reader:
        count += 1
        key = block_key(cid)
        present.add(key)
        if cid.codec.name == DAG_PB and key not in links:
            links[key] = _links(cid, data)
    return reader.roots, count, present, links


def _find_missing(roots: list[CID], present: set[str], links: dict[str, list[CID]],
                  blockstore: Blockstore) -> list[CID]:
    """CIDs reachable from the roots that are neither in the CAR nor in the store."""
    missing: list[CID] = []
    # Keyed like the blockstore (multihash only): the CAR's presence set is too.
    walk = DagWalk(roots, key=block_key)
    for cid in walk:
        key = block_key(cid)
        if key in present:
            children = links.get(key, []) if cid.codec.name == DAG_PB else []
        elif blockstore.has(cid):
            # Already stored: its subtree may still be partial (an interrupted fetch).
            children = _links(cid, blockstore.get(cid))
        else:
            missing.append(cid.set(base="base32") if cid.version == 1 else cid)
            continue
        walk.push(children)
    return missing


def import_car(stream: IO[bytes], blockstore: Blockstore, *,
               require_complete: bool = False) -> CarImportResult:
    """Import a CARv1 all-or-nothing: verify every block first, then store them.

    Pass 1 reads the whole CAR and verifies every block without storing
    anything. A seekable stream (a file) is then rewound and read again; a
    pipe is copied to an anonymous temporary file during pass 1 and pass 2
    reads that copy — either way the CAR is never held in memory. Pass 2
    re-reads through the same verifying reader (so a file changed between the
    passes is caught) and stores with `put_trusted` (the reader just hashed
    each block). If anything fails in pass 2 (a changed file, a full disk),
    the blocks this import added are deleted again before the error propagates.

    Raises CarError (nothing stored) if any block is bad, the CAR is malformed
    or truncated, or `require_complete` is set and blocks are missing.
    """
    if _seekable(stream):
        start = stream.tell()
        roots, count, present, links = _verify_pass(stream)
        missing = _check_missing(roots, present, links, blockstore, require_complete)
        stream.seek(start)
        new = _store_pass(stream, blockstore)
    else:
        with tempfile.TemporaryFile(prefix="shoal-car-") as spool:
            roots, count, present, links = _verify_pass(_Tee(stream, spool))
            missing = _check_missing(roots, present, links, blockstore, require_complete)
            spool.seek(0)
            new = _store_pass(spool, blockstore)
    absent = [r for r in roots if block_key(r) not in present]
    return CarImportResult(roots=roots, blocks=count, new_blocks=new, missing=missing, absent_roots=absent)


def _check_missing(roots: list[CID], present: set[str], links: dict[str, list[CID]],
                   blockstore: Blockstore, require_complete: bool) -> list[CID]:
    missing = _find_missing(roots, present, links, blockstore)
    if missing and require_complete:
        raise CarError(f"CAR is incomplete: {len(missing)} block(s) reachable from its "
                       f"roots are neither in it nor in the store, e.g. {missing[0]}")
    return missing


def _store_pass(stream: _Source, blockstore: Blockstore) -> int:
    """Pass 2: store every block; on any failure, remove what this pass added."""
    added: list[CID] = []
    try:
        for cid, data in CarReader(stream):
            if blockstore.put_trusted(cid, data):  # read_car verified it just now
                added.append(cid)
    except BaseException:
        for cid in added:
            blockstore.delete(cid)
        raise
    return len(added)
