"""UnixFS: the `Data` message inside a dag-pb node that says what it is.

Encoding is byte-identical to the npm `ipfs-unixfs` package's `marshal()`
for the nodes Shoal builds: Type is always written, Data only when
non-empty, filesize always for File and Raw nodes (even 0), each blocksize
as its own (unpacked) field, mode left out when it is the default (0644 for
files, 0755 for directories), fields in field-number order.

Decoding is strict, since it runs on peers' blocks: Type is required (it is
`required` in the proto2 schema), unknown fields, wrong wire types, repeated
singular fields, unknown Type values, more than `MAX_BLOCKSIZES` blocksizes
and truncation raise `MalformedBlock` only. Field order is not enforced:
protobuf allows any order and other encoders exist.

Not here: the dag-pb envelope (`shoal.store.ipld.dagpb`), DAG layout (`shoal.store.dag.importer`).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field

from shoal.store.ipld import varint
from shoal.store.ipld.dagpb import MAX_BLOCK_SIZE
from shoal.store.errors import MalformedBlock

MAX_BLOCKSIZES = MAX_BLOCK_SIZE // 2  # each costs at least 2 bytes on the wire
HAMT_MIN_FANOUT = 8
HAMT_MAX_FANOUT = 1024
"""The HAMT fanouts a shard may declare: powers of two from 8 to 1024, as
IPFS implementations accept. A fanout of 1 (a shard that never splits: a
chain as deep as it has names) or 2^40 (10-hex-digit slot names, bitfields
of 128 GiB) only ever comes from a hostile DAG."""


def valid_hamt_fanout(fanout: int | None) -> bool:
    """True for a power of two in HAMT_MIN_FANOUT..HAMT_MAX_FANOUT."""
    return (fanout is not None and HAMT_MIN_FANOUT <= fanout <= HAMT_MAX_FANOUT
            and fanout & (fanout - 1) == 0)
DEFAULT_FILE_MODE = 0o644
DEFAULT_DIR_MODE = 0o755
_U64 = 1 << 64


class DataType(enum.IntEnum):
    RAW = 0
    DIRECTORY = 1
    FILE = 2
    METADATA = 3
    SYMLINK = 4
    HAMT_SHARD = 5


@dataclass(frozen=True, slots=True)
class UnixTime:
    seconds: int  # int64, may be negative
    nanos: int | None = None  # fixed32 fractional nanoseconds


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The decoded UnixFS `Data` message.

    `filesize` is None when absent on the wire; `encode` writes it for File
    and Raw nodes whatever it is set to (computing it when None), as JS does.
    """

    type: DataType
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default=())
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: UnixTime | None = None

    def content_size(self) -> int:
        """Bytes of file content below this node: inline data + blocksizes."""
        return len(self.data or b"") + sum(self.blocksizes)


def _key(fieldno: int, wire: int) -> bytes:
    return varint.encode((fieldno << 3) | wire)


def encode(msg: UnixFSData) -> bytes:
    """Serialize like ipfs-unixfs `marshal()`."""
    out = bytearray(_key(1, 0) + varint.encode(int(msg.type)))
    if msg.data:
        out += _key(2, 2) + varint.encode(len(msg.data)) + msg.data
    if msg.type in (DataType.FILE, DataType.RAW):
        size = msg.filesize if msg.filesize is not None else msg.content_size()
        out += _key(3, 0) + varint.encode(size)
    for bs in msg.blocksizes:
        out += b"\x20" + varint.encode(bs)
    if msg.hash_type is not None:
        out += _key(5, 0) + varint.encode(msg.hash_type)
    if msg.fanout is not None:
        out += _key(6, 0) + varint.encode(msg.fanout)
    if msg.mode is not None:
        is_dir = msg.type in (DataType.DIRECTORY, DataType.HAMT_SHARD)
        default = DEFAULT_DIR_MODE if is_dir else DEFAULT_FILE_MODE
        if msg.mode != default:
            out += _key(7, 0) + varint.encode(msg.mode & 0xFFFFFFFF)
    if msg.mtime is not None:
        inner = _key(1, 0) + varint.encode(msg.mtime.seconds % _U64)
        if msg.mtime.nanos is not None:
            inner += _key(2, 5) + struct.pack("<I", msg.mtime.nanos)
        out += _key(8, 2) + varint.encode(len(inner)) + inner
    return bytes(out)


def _varint64(buf: memoryview, pos: int) -> tuple[int, int]:
    """A protobuf varint of up to 10 bytes (int64 negatives need all 10)."""
    value = 0
    for i in range(10):
        if pos + i >= len(buf):
            raise MalformedBlock("unixfs: truncated varint")
        byte = buf[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if not byte & 0x80:
            if byte == 0 and i > 0:
                raise MalformedBlock("unixfs: non-minimal varint")
            if value >= _U64:
                raise MalformedBlock("unixfs: varint overflows 64 bits")
            return value, pos + i + 1
    raise MalformedBlock("unixfs: varint longer than 10 bytes")


def _bytes_field(buf: memoryview, pos: int) -> tuple[bytes, int]:
    n, pos = varint.decode(buf, pos)
    if n > len(buf) - pos:
        raise MalformedBlock("unixfs: length runs past the end")
    return bytes(buf[pos:pos + n]), pos + n


def _decode_mtime(raw: bytes) -> UnixTime:
    buf = memoryview(raw)
    pos = 0
    seconds: int | None = None
    nanos: int | None = None
    while pos < len(buf):
        key, pos = varint.decode(buf, pos)
        if key == 0x08 and seconds is None:
            u, pos = _varint64(buf, pos)
            seconds = u - _U64 if u >= 1 << 63 else u
        elif key == 0x15 and nanos is None:
            if pos + 4 > len(buf):
                raise MalformedBlock("unixfs: truncated mtime nanoseconds")
            (nanos,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if nanos > 999_999_999:
                raise MalformedBlock("unixfs: mtime nanoseconds out of range")
        else:
            raise MalformedBlock(f"unixfs: unexpected mtime field (key {key:#x})")
    return UnixTime(seconds if seconds is not None else 0, nanos)


def decode(raw: bytes | memoryview) -> UnixFSData:
    """Parse a UnixFS Data message; MalformedBlock on anything off-spec."""
    buf = memoryview(raw)
    pos = 0
    seen: set[int] = set()
    type_: int | None = None
    data: bytes | None = None
    filesize = hash_type = fanout = mode = None
    mtime: UnixTime | None = None
    blocksizes: list[int] = []
    while pos < len(buf):
        key, pos = varint.decode(buf, pos)
        fieldno, wire = key >> 3, key & 7
        if fieldno != 4:
            if fieldno in seen:
                raise MalformedBlock(f"unixfs: field {fieldno} repeated")
            seen.add(fieldno)
        expected_wire = 2 if fieldno in (2, 8) else 0
        if not 1 <= fieldno <= 8 or wire != expected_wire:
            raise MalformedBlock(f"unixfs: unexpected field {fieldno} (wire type {wire})")
        if fieldno == 2:
            data, pos = _bytes_field(buf, pos)
        elif fieldno == 8:
            inner, pos = _bytes_field(buf, pos)
            mtime = _decode_mtime(inner)
        else:
            value, pos = varint.decode(buf, pos)
            if fieldno == 1:
                type_ = value
            elif fieldno == 3:
                filesize = value
            elif fieldno == 4:
                if len(blocksizes) >= MAX_BLOCKSIZES:
                    raise MalformedBlock("unixfs: too many blocksizes")
                blocksizes.append(value)
            elif fieldno == 5:
                hash_type = value
            elif fieldno == 6:
                fanout = value
            else:
                if value > 0xFFFFFFFF:
                    raise MalformedBlock("unixfs: mode does not fit uint32")
                mode = value
    if type_ is None:
        raise MalformedBlock("unixfs: missing Type")
    try:
        dtype = DataType(type_)
    except ValueError:
        raise MalformedBlock(f"unixfs: unknown Type {type_}") from None
    if dtype == DataType.HAMT_SHARD and not valid_hamt_fanout(fanout):
        raise MalformedBlock(f"unixfs: HAMT fanout {fanout} is not a power of two in "
                             f"{HAMT_MIN_FANOUT}..{HAMT_MAX_FANOUT}")
    return UnixFSData(dtype, data, filesize, tuple(blocksizes), hash_type, fanout, mode, mtime)
