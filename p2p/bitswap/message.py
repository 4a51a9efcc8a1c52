"""The Bitswap message: protobuf codec, CID prefixes and stream framing, all bounded.

The schema is go-bitswap/boxo's `message.proto` (proto3)::

    message Message {
      message Wantlist {
        enum WantType { Block = 0; Have = 1; }
        message Entry {
          bytes block = 1;          // the CID, binary
          int32 priority = 2;
          bool cancel = 3;
          WantType wantType = 4;    // 1.2.0
          bool sendDontHave = 5;    // 1.2.0
        }
        repeated Entry entries = 1;
        bool full = 2;
      }
      message Block { bytes prefix = 1; bytes data = 2; }
      enum BlockPresenceType { Have = 0; DontHave = 1; }
      message BlockPresence { bytes cid = 1; BlockPresenceType type = 2; }
      Wantlist wantlist = 1;
      repeated bytes blocks = 2;                // 1.0.0: CIDv0 blocks
      repeated Block payload = 3;               // 1.1.0+
      repeated BlockPresence blockPresences = 4; // 1.2.0
      int32 pendingBytes = 5;
    }

Why by hand: the message is small, and a generated parser would allocate
first and check later. Here every length is compared with its cap before a
byte is copied, every repeated field is counted as it is read, unknown
fields are skipped (protobuf's rule, so newer peers still parse), a known
field with the wrong wire type is refused, and anything malformed raises
`BitswapError` (a `ProtocolError`) and nothing else.

Blocks travel as CID prefix + data, and `decode` rebuilds the CID by hashing
the data: a received block's CID is therefore always the hash of its bytes.
Only sha2-256 and identity prefixes are accepted for blocks (the hashes this
node can check); wantlist entries and presences may name any well-formed
CID, so a want for a CID this node cannot hold is answered DONT_HAVE rather
than treated as an attack.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Final

from shoal.p2p.errors import RemoteProtocolError
from shoal.p2p.wire import limits as L
from shoal.store.errors import StoreError
from shoal.store.ipld import varint

__all__ = [
    "PROTOCOL_1_0_0", "PROTOCOL_1_1_0", "PROTOCOL_1_2_0", "PROTOCOLS",
    "MAX_MESSAGE_BYTES", "MAX_BLOCK_BYTES", "MAX_WANTLIST_ENTRIES", "MAX_BLOCKS_PER_MESSAGE",
    "MAX_PRESENCES_PER_MESSAGE", "MAX_CID_BYTES", "MAX_IDENTITY_DIGEST_BYTES",
    "BitswapError", "WantType", "PresenceType", "Entry", "Wantlist", "BlockPayload",
    "BlockPresence", "Message", "CidPrefix", "cid_prefix", "check_cid", "block_cid",
    "encode", "decode", "frame", "FrameReader",
    "entry_size", "payload_size", "presence_size",
]

PROTOCOL_1_2_0: Final = "/ipfs/bitswap/1.2.0"
PROTOCOL_1_1_0: Final = "/ipfs/bitswap/1.1.0"
PROTOCOL_1_0_0: Final = "/ipfs/bitswap/1.0.0"
PROTOCOLS: Final = (PROTOCOL_1_2_0, PROTOCOL_1_1_0)
"""What this node speaks, best first. 1.0.0 (CIDv0-only blocks, no
presences) is only decoded, never offered."""

MAX_MESSAGE_BYTES: Final = 4 * L.MiB
"""go-bitswap's limit for one message; a 2 MiB block fits with room."""

MAX_BLOCK_BYTES: Final = L.MAX_BLOCK_BYTES
"""2 MiB, the largest block an IPFS peer must accept (as in Shoal's protocol)."""

MAX_WANTLIST_ENTRIES: Final = 1024
"""Entries in one message's wantlist: go sends at most a few hundred; the
engine's per-peer ledger has its own (larger) cap across messages."""

MAX_BLOCKS_PER_MESSAGE: Final = 512
"""Blocks in one message. 4 MiB of tiny blocks could otherwise be a million
Python objects; real senders pack a few blocks up to ~1-4 MiB."""

MAX_PRESENCES_PER_MESSAGE: Final = 1024
"""HAVE / DONT_HAVE entries: one per wanted CID, so as many as entries."""

MAX_CID_BYTES: Final = L.MAX_CID_BYTES
"""128: any CIDv1 with a 512-bit hash fits; real ones are 34-70 bytes."""

MAX_IDENTITY_DIGEST_BYTES: Final = 64
"""Identity "hashes" inline the data; boxo caps them (128), we keep them
small enough that every identity CID fits MAX_CID_BYTES."""

_MAX_PREFIX_BYTES: Final = 4 * varint.MAX_VARINT_BYTES
_MAX_DIGEST_BYTES: Final = 64
_SHA2_256: Final = 0x12
_IDENTITY: Final = 0x00
_DAG_PB: Final = 0x70
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1
_UINT64: Final = 2**64 - 1

# Protobuf wire types.
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class BitswapError(RemoteProtocolError):
    """Bytes that are not a valid (or are an over-limit) Bitswap message."""


class WantType(IntEnum):
    BLOCK = 0
    HAVE = 1


class PresenceType(IntEnum):
    HAVE = 0
    DONT_HAVE = 1


# -- CIDs and prefixes ---------------------------------------------------------


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """A multiformats unsigned varint (minimal, <= 9 bytes) as BitswapError on failure."""
    try:
        return varint.decode(buf, pos)
    except StoreError as exc:
        raise BitswapError(f"bad varint in a CID: {exc}") from None


@dataclass(frozen=True, slots=True)
class CidPrefix:
    """A CID without its digest: what Bitswap 1.1.0+ sends beside a block's data."""

    version: int
    codec: int
    mh_type: int
    mh_len: int

    def to_bytes(self) -> bytes:
        """The wire form: four unsigned varints."""
        return b"".join(varint.encode(v) for v in (self.version, self.codec, self.mh_type, self.mh_len))

    @classmethod
    def from_bytes(cls, raw: bytes) -> CidPrefix:
        """Parse a prefix; BitswapError unless it is exactly four varints of a sane CID."""
        if len(raw) > _MAX_PREFIX_BYTES:
            raise BitswapError("CID prefix too long")
        pos = 0
        values = []
        for _ in range(4):
            value, pos = _uvarint(raw, pos)
            values.append(value)
        if pos != len(raw):
            raise BitswapError("trailing bytes after a CID prefix")
        prefix = cls(*values)
        prefix._check()
        return prefix

    def _check(self) -> None:
        if self.version not in (0, 1):
            raise BitswapError(f"CID version {self.version}")
        if self.version == 0 and (self.codec, self.mh_type, self.mh_len) != (_DAG_PB, _SHA2_256, 32):
            raise BitswapError("a CIDv0 prefix must be dag-pb / sha2-256 / 32")

    def cid_for(self, data: bytes) -> bytes:
        """The binary CID of `data` under this prefix (the data is hashed here).

        Only sha2-256 (32-byte digests) and identity hashes: those are the
        ones this node can verify. BitswapError for any other.
        """
        if self.mh_type == _SHA2_256:
            if self.mh_len != 32:
                raise BitswapError("sha2-256 digests are 32 bytes")
            digest = hashlib.sha256(data).digest()
        elif self.mh_type == _IDENTITY:
            if self.version == 0 or self.mh_len != len(data) or len(data) > MAX_IDENTITY_DIGEST_BYTES:
                raise BitswapError("bad identity CID prefix for its data")
            digest = bytes(data)
        else:
            raise BitswapError(f"unsupported multihash 0x{self.mh_type:x} for a block")
        multihash = varint.encode(self.mh_type) + varint.encode(self.mh_len) + digest
        if self.version == 0:
            return multihash
        return varint.encode(1) + varint.encode(self.codec) + multihash


def cid_prefix(cid: bytes) -> CidPrefix:
    """The prefix of a binary CID; BitswapError if `cid` is not a well-formed CID.

    Any codec and any multihash are accepted (with a digest of at most 64
    bytes, 32 for sha2-256), so that wants for CIDs this node cannot hold
    are answered, not refused.
    """
    if not 2 <= len(cid) <= MAX_CID_BYTES:
        raise BitswapError(f"CID of {len(cid)} bytes")
    if len(cid) == 34 and cid[0] == _SHA2_256 and cid[1] == 32:
        return CidPrefix(0, _DAG_PB, _SHA2_256, 32)
    version, pos = _uvarint(cid, 0)
    if version != 1:
        raise BitswapError(f"CID version {version}")
    codec, pos = _uvarint(cid, pos)
    mh_type, pos = _uvarint(cid, pos)
    mh_len, pos = _uvarint(cid, pos)
    if mh_len != len(cid) - pos:
        raise BitswapError("CID digest length does not match its multihash")
    if mh_len > _MAX_DIGEST_BYTES or (mh_type == _SHA2_256 and mh_len != 32):
        raise BitswapError("bad CID digest length")
    return CidPrefix(1, codec, mh_type, mh_len)


def check_cid(cid: bytes) -> bytes:
    """`cid` as bytes if it is a well-formed binary CID; BitswapError otherwise."""
    cid = bytes(cid)
    cid_prefix(cid)
    return cid


def block_cid(cid: bytes, data: bytes) -> bool:
    """True if `data` hashes to `cid` (sha2-256 or identity); False otherwise, never raising."""
    try:
        return cid_prefix(cid).cid_for(data) == cid
    except BitswapError:
        return False


# -- messages ------------------------------------------------------------------


def _check_int32(name: str, value: int) -> None:
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise BitswapError(f"{name} {value} is not an int32")


@dataclass(frozen=True, slots=True)
class Entry:
    """One wantlist entry: want (have or block) a CID, or cancel a want."""

    cid: bytes
    priority: int = 1
    cancel: bool = False
    want_type: WantType = WantType.BLOCK
    send_dont_have: bool = False

    def __post_init__(self) -> None:
        check_cid(self.cid)
        _check_int32("priority", self.priority)


@dataclass(frozen=True, slots=True)
class Wantlist:
    """The entries of one message; `full` replaces the peer's whole wantlist."""

    entries: tuple[Entry, ...] = ()
    full: bool = False

    def __post_init__(self) -> None:
        if len(self.entries) > MAX_WANTLIST_ENTRIES:
            raise BitswapError(f"{len(self.entries)} wantlist entries (max {MAX_WANTLIST_ENTRIES})")


@dataclass(frozen=True, slots=True)
class BlockPayload:
    """A block: its binary CID and bytes. Decoded ones have the CID of their data."""

    cid: bytes
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_cid(self.cid)
        if len(self.data) > MAX_BLOCK_BYTES:
            raise BitswapError(f"block of {len(self.data)} bytes (max {MAX_BLOCK_BYTES})")


@dataclass(frozen=True, slots=True)
class BlockPresence:
    """HAVE or DONT_HAVE for a CID (Bitswap 1.2.0)."""

    cid: bytes
    type: PresenceType

    def __post_init__(self) -> None:
        check_cid(self.cid)


@dataclass(frozen=True, slots=True)
class Message:
    """One Bitswap message. Validated when built, so a Message always encodes."""

    wantlist: Wantlist = Wantlist()
    blocks: tuple[BlockPayload, ...] = ()
    presences: tuple[BlockPresence, ...] = ()
    pending_bytes: int = 0

    def __post_init__(self) -> None:
        if len(self.blocks) > MAX_BLOCKS_PER_MESSAGE:
            raise BitswapError(f"{len(self.blocks)} blocks in one message")
        if len(self.presences) > MAX_PRESENCES_PER_MESSAGE:
            raise BitswapError(f"{len(self.presences)} presences in one message")
        _check_int32("pendingBytes", self.pending_bytes)

    def is_empty(self) -> bool:
        return not (self.wantlist.entries or self.wantlist.full or self.blocks
                    or self.presences or self.pending_bytes)


# -- encoding ------------------------------------------------------------------


def _key(number: int, wire: int) -> bytes:
    return varint.encode(number << 3 | wire)


def _len_field(number: int, value: bytes) -> bytes:
    return _key(number, _LEN) + varint.encode(len(value)) + value


def _varint_field(number: int, value: int) -> bytes:
    """A varint field; proto3 leaves zero values out. Negative int32s take 10 bytes."""
    if value == 0:
        return b""
    return _key(number, _VARINT) + varint.encode(value & _UINT64)


def _entry_bytes(entry: Entry) -> bytes:
    return (_len_field(1, entry.cid) + _varint_field(2, entry.priority) + _varint_field(3, int(entry.cancel))
            + _varint_field(4, int(entry.want_type)) + _varint_field(5, int(entry.send_dont_have)))


def _presence_bytes(presence: BlockPresence) -> bytes:
    return _len_field(1, presence.cid) + _varint_field(2, int(presence.type))


def _len_size(length: int) -> int:
    """Bytes a length-delimited field of field number < 16 takes around `length` bytes."""
    return 1 + len(varint.encode(length)) + length


def entry_size(entry: Entry) -> int:
    """Bytes this entry adds to an encoded message (for packing messages under a cap)."""
    return _len_size(len(_entry_bytes(entry)))


def presence_size(presence: BlockPresence) -> int:
    """Bytes this presence adds to an encoded message."""
    return _len_size(len(_presence_bytes(presence)))


def payload_size(cid: bytes, data_len: int) -> int:
    """Bytes a block of `data_len` bytes under `cid` adds to an encoded message.

    BitswapError if blocks under this CID cannot travel: its hash is one a
    receiver could not check (only sha2-256 and identity are accepted).
    """
    prefix = cid_prefix(cid)
    if prefix.mh_type not in (_SHA2_256, _IDENTITY):
        raise BitswapError(f"unsupported multihash 0x{prefix.mh_type:x} for a block")
    prefix_len = len(prefix.to_bytes())
    return _len_size(_len_size(prefix_len) + _len_size(data_len))


def encode(message: Message) -> bytes:
    """The protobuf bytes of `message` (without the stream's length prefix).

    Blocks always go as 1.1.0+ payloads (prefix + data); a message over
    MAX_MESSAGE_BYTES is a LocalProtocolError-worthy bug, raised as BitswapError.
    """
    parts: list[bytes] = []
    wl = message.wantlist
    if wl.entries or wl.full:
        body = b"".join(_len_field(1, _entry_bytes(e)) for e in wl.entries) + _varint_field(2, int(wl.full))
        parts.append(_len_field(1, body))
    for block in message.blocks:
        prefix = cid_prefix(block.cid).to_bytes()
        parts.append(_len_field(3, _len_field(1, prefix) + _len_field(2, block.data)))
    for presence in message.presences:
        parts.append(_len_field(4, _presence_bytes(presence)))
    parts.append(_varint_field(5, message.pending_bytes))
    out = b"".join(parts)
    if len(out) > MAX_MESSAGE_BYTES:
        raise BitswapError(f"message of {len(out)} bytes (max {MAX_MESSAGE_BYTES})")
    return out


# -- decoding ------------------------------------------------------------------


class _Fields:
    """A bounded reader of one protobuf message's fields."""

    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def varint(self) -> int:
        """A protobuf varint: at most 10 bytes, value < 2**64 (non-minimal tolerated)."""
        result = 0
        buf, pos = self.buf, self.pos
        for shift in range(0, 70, 7):
            if pos >= self.end:
                raise BitswapError("truncated varint")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if result > _UINT64:
                    raise BitswapError("varint over 64 bits")
                self.pos = pos
                return result
        raise BitswapError("varint longer than 10 bytes")

    def next(self) -> tuple[int, int] | None:
        """(field number, wire type) of the next field, or None at the end."""
        if self.pos >= self.end:
            return None
        key = self.varint()
        number, wire = key >> 3, key & 7
        if number == 0 or number > 2**29 - 1:
            raise BitswapError(f"bad field number {number}")
        return number, wire

    def length_delimited(self, cap: int, what: str) -> memoryview:
        """The next LEN value, refused if over `cap` or past the end (before any copy)."""
        length = self.varint()
        if length > cap:
            raise BitswapError(f"{what} of {length} bytes (max {cap})")
        if length > self.end - self.pos:
            raise BitswapError(f"truncated {what}")
        start = self.pos
        self.pos += length
        return self.buf[start:self.pos]

    def skip(self, wire: int) -> None:
        """Skip an unknown field of any wire type protobuf still allows."""
        if wire == _VARINT:
            self.varint()
        elif wire == _LEN:
            self.length_delimited(self.end, "unknown field")
        elif wire in (_I64, _I32):
            size = 8 if wire == _I64 else 4
            if size > self.end - self.pos:
                raise BitswapError("truncated fixed field")
            self.pos += size
        else:
            raise BitswapError(f"wire type {wire} (groups and 6/7 are not allowed)")


def _expect(number: int, wire: int, wanted: int) -> None:
    if wire != wanted:
        raise BitswapError(f"field {number} has wire type {wire}, expected {wanted}")


def _int32(value: int) -> int:
    """Protobuf int32 from a varint: the low 32 bits, signed (negatives come sign-extended)."""
    value &= 0xFFFFFFFF
    return value - 2**32 if value > _INT32_MAX else value


def _enum(value: int, kind: type[WantType] | type[PresenceType]) -> int:
    try:
        return int(kind(value))
    except ValueError:
        raise BitswapError(f"unknown {kind.__name__} {value}") from None


def _decode_entry(buf: memoryview) -> Entry:
    f = _Fields(buf)
    cid: bytes | None = None
    priority, cancel, want_type, send_dont_have = 0, False, 0, False
    while (key := f.next()) is not None:
        number, wire = key
        if number == 1:
            _expect(number, wire, _LEN)
            cid = bytes(f.length_delimited(MAX_CID_BYTES, "wanted CID"))
        elif number == 2:
            _expect(number, wire, _VARINT)
            priority = _int32(f.varint())
        elif number == 3:
            _expect(number, wire, _VARINT)
            cancel = f.varint() != 0
        elif number == 4:
            _expect(number, wire, _VARINT)
            want_type = _enum(f.varint(), WantType)
        elif number == 5:
            _expect(number, wire, _VARINT)
            send_dont_have = f.varint() != 0
        else:
            f.skip(wire)
    if cid is None:
        raise BitswapError("wantlist entry without a CID")
    return Entry(cid, priority, cancel, WantType(want_type), send_dont_have)


def _decode_wantlist(buf: memoryview) -> Wantlist:
    f = _Fields(buf)
    entries: list[Entry] = []
    full = False
    while (key := f.next()) is not None:
        number, wire = key
        if number == 1:
            _expect(number, wire, _LEN)
            if len(entries) >= MAX_WANTLIST_ENTRIES:
                raise BitswapError(f"more than {MAX_WANTLIST_ENTRIES} wantlist entries")
            entries.append(_decode_entry(f.length_delimited(MAX_MESSAGE_BYTES, "wantlist entry")))
        elif number == 2:
            _expect(number, wire, _VARINT)
            full = f.varint() != 0
        else:
            f.skip(wire)
    return Wantlist(tuple(entries), full)


def _decode_payload(buf: memoryview) -> BlockPayload:
    f = _Fields(buf)
    prefix: bytes | None = None
    data: memoryview | None = None
    while (key := f.next()) is not None:
        number, wire = key
        if number == 1:
            _expect(number, wire, _LEN)
            prefix = bytes(f.length_delimited(_MAX_PREFIX_BYTES, "CID prefix"))
        elif number == 2:
            _expect(number, wire, _LEN)
            data = f.length_delimited(MAX_BLOCK_BYTES, "block")
        else:
            f.skip(wire)
    if prefix is None:
        raise BitswapError("block without a CID prefix")
    block = bytes(data) if data is not None else b""
    return BlockPayload(CidPrefix.from_bytes(prefix).cid_for(block), block)


def _decode_presence(buf: memoryview) -> BlockPresence:
    f = _Fields(buf)
    cid: bytes | None = None
    kind = 0
    while (key := f.next()) is not None:
        number, wire = key
        if number == 1:
            _expect(number, wire, _LEN)
            cid = bytes(f.length_delimited(MAX_CID_BYTES, "presence CID"))
        elif number == 2:
            _expect(number, wire, _VARINT)
            kind = _enum(f.varint(), PresenceType)
        else:
            f.skip(wire)
    if cid is None:
        raise BitswapError("block presence without a CID")
    return BlockPresence(cid, PresenceType(kind))


_V0_PREFIX = CidPrefix(0, _DAG_PB, _SHA2_256, 32)


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one message body; BitswapError (only) on anything malformed or over a cap."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise BitswapError(f"message of {len(data)} bytes (max {MAX_MESSAGE_BYTES})")
    f = _Fields(memoryview(data))
    wantlist: Wantlist | None = None
    blocks: list[BlockPayload] = []
    presences: list[BlockPresence] = []
    pending = 0
    while (key := f.next()) is not None:
        number, wire = key
        if number == 1:
            _expect(number, wire, _LEN)
            if wantlist is not None:
                raise BitswapError("two wantlists in one message")
            wantlist = _decode_wantlist(f.length_delimited(MAX_MESSAGE_BYTES, "wantlist"))
        elif number in (2, 3):
            _expect(number, wire, _LEN)
            if len(blocks) >= MAX_BLOCKS_PER_MESSAGE:
                raise BitswapError(f"more than {MAX_BLOCKS_PER_MESSAGE} blocks in one message")
            if number == 2:  # Bitswap 1.0.0: raw CIDv0 (dag-pb, sha2-256) block data
                raw = bytes(f.length_delimited(MAX_BLOCK_BYTES, "block"))
                blocks.append(BlockPayload(_V0_PREFIX.cid_for(raw), raw))
            else:
                blocks.append(_decode_payload(f.length_delimited(MAX_BLOCK_BYTES + 64, "block payload")))
        elif number == 4:
            _expect(number, wire, _LEN)
            if len(presences) >= MAX_PRESENCES_PER_MESSAGE:
                raise BitswapError(f"more than {MAX_PRESENCES_PER_MESSAGE} presences in one message")
            presences.append(_decode_presence(f.length_delimited(MAX_CID_BYTES + 16, "block presence")))
        elif number == 5:
            _expect(number, wire, _VARINT)
            pending = _int32(f.varint())
        else:
            f.skip(wire)
    return Message(wantlist or Wantlist(), tuple(blocks), tuple(presences), pending)


# -- framing -------------------------------------------------------------------


def frame(message: Message) -> bytes:
    """`message` as it goes on a stream: uvarint length, then the protobuf bytes."""
    body = encode(message)
    return varint.encode(len(body)) + body


_MAX_HEADER_BYTES: Final = len(varint.encode(MAX_MESSAGE_BYTES))


class FrameReader:
    """Sans-IO reader of length-prefixed messages: feed bytes, get messages.

    Holds at most one partial message (<= MAX_MESSAGE_BYTES + its header)
    beyond what one `feed` call brings; a declared length over the cap is
    refused as soon as the length's bytes are in, before the body is waited
    for or buffered. After a BitswapError the stream is unusable: close it.
    """

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        if not 0 < max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError("max_message_bytes out of range")
        self._max = max_message_bytes
        self._buf = bytearray()
        self._need: int | None = None  # body length of the frame being read
        self._broken = False

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as messages."""
        return len(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Message]:
        """Add received bytes; return every message they complete, in order."""
        if self._broken:
            raise BitswapError("the stream already broke the framing")
        self._buf += data
        out: list[Message] = []
        try:
            while (message := self._next()) is not None:
                out.append(message)
        except BitswapError:
            self._broken = True
            raise
        return out

    def _next(self) -> Message | None:
        if self._need is None:
            header_len = self._header()
            if header_len is None:
                return None
        assert self._need is not None
        if len(self._buf) < self._need:
            return None
        body = bytes(self._buf[:self._need])
        del self._buf[:self._need]
        self._need = None
        return decode(body)

    def _header(self) -> int | None:
        """Read the uvarint length if all of it is here; None if more bytes are needed."""
        for i in range(min(len(self._buf), _MAX_HEADER_BYTES)):
            if not self._buf[i] & 0x80:
                length, end = _uvarint(bytes(self._buf[:i + 1]), 0)
                if length > self._max:
                    raise BitswapError(f"message of {length} bytes announced (max {self._max})")
                del self._buf[:end]
                self._need = length
                return end
        if len(self._buf) >= _MAX_HEADER_BYTES:
            raise BitswapError("message length prefix too long")
        return None

    def at_boundary(self) -> bool:
        """True if no partial message is buffered (a clean place for the stream to end)."""
        return not self._buf and self._need is None
