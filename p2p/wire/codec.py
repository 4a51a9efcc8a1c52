"""Messages to and from msgpack bytes: the only place raw wire data exists.

Wire form: one msgpack array per message, `[version, type, request_id,
field1, field2, ...]`, fields in dataclass order; nested records (PeerInfo,
LedgerEntry) are arrays too. Arrays, not maps: no key strings repeated in
every message, a fixed arity to check, and no dicts to leak past the codec.
Maps and extension types never appear on the wire and are rejected.

`decode` blames the right side. Bad input from the peer (undecodable
msgpack, a wrong type or arity, a value its message's validation refuses)
raises RemoteProtocolError; any other exception class from inside the
decoder is a bug of ours and raises DecoderBug, so a decoder bug is never
reported to (or counted against) the peer as its protocol error. Before msgpack builds
any Python object, a small pre-scan walks the bytes and refuses maps,
extension types, nesting deeper than MAX_WIRE_DEPTH and more than
MAX_WIRE_OBJECTS objects, so a 2 MiB frame can never turn into a hundred
megabytes of tiny lists. msgpack then unpacks with explicit length caps.

Each RemoteProtocolError from `decode` carries `code` (an ErrorCode) and
`request_id` (0 if unknown), read with `error_code()` and
`error_request_id()`, so the node can reply Error(request_id, code, ...).
"""

from __future__ import annotations

import dataclasses
import msgpack

from shoal.p2p.wire import limits as L
from shoal.p2p.errors import DecoderBug, LocalProtocolError, RemoteProtocolError
from shoal.p2p.wire.messages import (
    MESSAGE_TYPES, ErrorCode, LedgerEntry, LedgerSummary, Message, PeerInfo, Peers,
)

__all__ = ["encode", "encode_parts", "decode", "error_code", "error_request_id", "check_shape"]

_MAX_STR = max(L.MAX_ERROR_MESSAGE_BYTES, L.MAX_ADDR_BYTES, L.MAX_REASON_BYTES, L.MAX_AGENT_BYTES)
_MAX_BIN = max(L.MAX_BLOCK_BYTES, L.MAX_PROOF_BYTES, L.MAX_MANIFEST_BYTES, L.MAX_NAME_RECORD_BYTES, L.MAX_EC_MAP_BYTES, L.MAX_EC_OFFERS_BYTES)
_MAX_ARRAY = max(
    L.MAX_ENVELOPE_FIELDS, L.MAX_CIDS_PER_WANT_HAVE, L.MAX_CIDS_PER_WANT_BLOCK,
    L.MAX_PEERS_PER_REPLY, L.MAX_ADDRS_PER_PEER, L.MAX_LISTEN_ADDRS, L.MAX_VERSIONS,
    L.MAX_LEDGER_KINDS,
)
_PEEK_BYTES = 32  # enough for the array header and three ints
_LIMITS = dict(
    max_str_len=_MAX_STR, max_bin_len=_MAX_BIN, max_array_len=_MAX_ARRAY,
    max_map_len=0, max_ext_len=0,
)
_BAD_MSGPACK = (ValueError, TypeError, OverflowError, msgpack.UnpackException)
"""What msgpack raises for bytes it cannot unpack (ExtraData, FormatError,
StackError and UnicodeDecodeError are ValueErrors; unhashable keys TypeError)."""
_NESTED: dict[type[Message], type] = {Peers: PeerInfo, LedgerSummary: LedgerEntry}
_ARITY: dict[type[Message], int] = {
    cls: len(dataclasses.fields(cls)) - 1 for cls in MESSAGE_TYPES.values()
}


def encode(msg: Message) -> bytes:
    """Serialize a (valid by construction) message; LocalProtocolError if unknown."""
    cls = type(msg)
    if MESSAGE_TYPES.get(getattr(cls, "TYPE", None)) is not cls:  # type: ignore[arg-type]
        raise LocalProtocolError(f"not a wire message: {cls.__name__}")
    body = [_to_wire(getattr(msg, f.name)) for f in dataclasses.fields(msg)[1:]]
    out: bytes = msgpack.packb([L.PROTOCOL_VERSION, cls.TYPE, msg.request_id, *body], use_bin_type=True)
    return out


# Top-level bytes fields at least this long (block data) are not copied into
# msgpack's buffer by `encode_parts`: they go out as their own part.
_SPLIT_BIN = 64 * 1024


def encode_parts(msg: Message) -> list[bytes | memoryview]:
    """`encode(msg)` as a list of buffers whose concatenation equals it byte for byte.

    Large top-level bytes fields (a Block's data) are passed through as
    they are instead of being copied into msgpack's growing buffer; the
    bin header before them is the one msgpack itself would write (bin16 up
    to 65535 bytes, bin32 beyond), so a receiver cannot tell the difference.
    """
    cls = type(msg)
    if MESSAGE_TYPES.get(getattr(cls, "TYPE", None)) is not cls:  # type: ignore[arg-type]
        raise LocalProtocolError(f"not a wire message: {cls.__name__}")
    fields = dataclasses.fields(msg)[1:]
    values = [getattr(msg, f.name) for f in fields]
    if not any(type(v) is bytes and len(v) >= _SPLIT_BIN for v in values):
        return [encode(msg)]
    packer = msgpack.Packer(use_bin_type=True, autoreset=True)
    parts: list[bytes | memoryview] = []
    head = [packer.pack_array_header(3 + len(values)), packer.pack(L.PROTOCOL_VERSION),
            packer.pack(cls.TYPE), packer.pack(msg.request_id)]
    for value in values:
        if type(value) is bytes and len(value) >= _SPLIT_BIN:
            size = len(value)
            if size > 0xFFFFFFFF:
                raise LocalProtocolError("bytes field too long for msgpack")
            head.append(b"\xc5" + size.to_bytes(2, "big") if size <= 0xFFFF else b"\xc6" + size.to_bytes(4, "big"))
            parts.append(b"".join(head))
            parts.append(value)
            head = []
        else:
            head.append(packer.pack(_to_wire(value)))
    if head:
        parts.append(b"".join(head))
    return parts


def decode(payload: bytes) -> Message:
    """Parse one frame payload into a message.

    RemoteProtocolError: the peer sent bad bytes. DecoderBug: the decoder
    itself failed (our bug; the traceback is on `__cause__`). Nothing else.
    """
    try:
        return _decode(payload)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # not what bad input raises: ours to fix, not the peer's fault
        try:
            rid = _peek_envelope(bytes(payload))[2]
        except Exception:
            rid = 0
        raise DecoderBug(f"decoder failed on a {len(payload)}-byte message: {type(exc).__name__}: {exc}",
                         request_id=rid) from exc


def error_code(exc: RemoteProtocolError) -> ErrorCode:
    """The ErrorCode to send back for a decode failure (MALFORMED if none)."""
    code = getattr(exc, "code", ErrorCode.MALFORMED)
    return code if isinstance(code, ErrorCode) else ErrorCode.MALFORMED


def error_request_id(exc: RemoteProtocolError) -> int:
    """The request id the failed message carried, or 0 if it was unreadable."""
    rid = getattr(exc, "request_id", 0)
    return rid if type(rid) is int and 0 <= rid <= L.MAX_REQUEST_ID else 0


def _error(code: ErrorCode, message: str, request_id: int) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=code, request_id=request_id)


def _to_wire(value: object) -> object:
    if isinstance(value, tuple):
        return [_to_wire(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [_to_wire(getattr(value, f.name)) for f in dataclasses.fields(value)]
    return value


def _decode(payload: bytes) -> Message:
    if type(payload) is not bytes:
        payload = bytes(payload)
    if not payload:
        raise _error(ErrorCode.MALFORMED, "empty message", 0)
    version, type_code, rid = _peek_envelope(payload)
    if version is not None and version != L.PROTOCOL_VERSION:
        raise _error(ErrorCode.UNSUPPORTED_VERSION, f"unsupported protocol version {version}", rid)
    cls = MESSAGE_TYPES.get(type_code) if type_code is not None else None
    if type_code is not None and cls is None:
        raise _error(ErrorCode.UNKNOWN_TYPE, f"unknown message type {type_code}", rid)
    _prescan(payload, rid)
    try:
        obj = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True, **_LIMITS)
    except _BAD_MSGPACK as exc:
        raise _error(ErrorCode.MALFORMED, f"bad msgpack: {type(exc).__name__}", rid) from exc
    if (type(obj) is not list or len(obj) < 3 or cls is None or type(obj[0]) is not int
            or type(obj[1]) is not int or type(obj[2]) is not int):
        # (the envelope's ints are checked by type: msgpack's true would pass for 1)
        raise _error(ErrorCode.MALFORMED, "message is not a [version, type, request_id, ...] array", rid)
    rid = obj[2]  # the message's own validation range-checks it
    fields = obj[3:]
    if len(fields) != _ARITY[cls]:
        raise _error(ErrorCode.MALFORMED, f"{cls.__name__} needs {_ARITY[cls]} fields, got {len(fields)}", rid)
    args = [_tuplify(f) for f in fields]
    try:
        item_cls = _NESTED.get(cls)
        if item_cls is not None:
            args[0] = _records(item_cls, args[0])
        return cls(rid, *args)
    except LocalProtocolError as exc:
        raise _error(ErrorCode.MALFORMED, f"invalid {cls.__name__}: {exc}", rid) from exc


def _peek_envelope(payload: bytes) -> tuple[int | None, int | None, int]:
    """Read version, type and request id from the first bytes only.

    Done apart from the full decode so that a message of a newer version or
    an unknown type (whose body we cannot judge) still gets the precise
    error code and its request id echoed.
    """
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_PEEK_BYTES, **_LIMITS)
    unpacker.feed(payload[:_PEEK_BYTES])
    try:
        if unpacker.read_array_header() < 3:
            return None, None, 0
        head = [unpacker.unpack() for _ in range(3)]
    except _BAD_MSGPACK:
        return None, None, 0
    version, type_code, rid = (v if type(v) is int else None for v in head)
    if rid is None or not 0 <= rid <= L.MAX_REQUEST_ID:
        rid = 0
    return version, type_code, rid


def _tuplify(value: object) -> object:
    if type(value) is not list:
        return value
    return tuple([_tuplify(v) if type(v) is list else v for v in value])


def _records(item_cls: type, items: object) -> tuple[object, ...]:
    if type(items) is not tuple or not all(type(i) is tuple for i in items):
        raise LocalProtocolError(f"expected a list of {item_cls.__name__} arrays")
    arity = len(dataclasses.fields(item_cls))
    if any(len(i) != arity for i in items):
        raise LocalProtocolError(f"each {item_cls.__name__} has {arity} fields")
    return tuple(item_cls(*i) for i in items)


_FIXED = {0xC0: 0, 0xC2: 0, 0xC3: 0, 0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8,
          0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8}
_SIZED = {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}  # bin8/16/32, str8/16/32
_ARRAYS = {0xDC: 2, 0xDD: 4}


def check_shape(buf: bytes) -> None:
    """Refuse msgpack bytes Shoal never sends (maps, ext, too deep, too many
    objects, trailing bytes) before any object is built; RemoteProtocolError.

    For other msgpack channels with the same rules (the node<->lane control
    channel, shoal.p2p.lanes.control).
    """
    _prescan(buf, 0)


def _prescan(buf: bytes, rid: int) -> None:
    """Walk the msgpack bytes without building objects; refuse what we never send.

    Hot for batched messages (a WantHave of 256 CIDs is ~260 objects), so the
    loop is kept flat, with the common type bytes tested first.
    """
    end = len(buf)
    pos = 0
    budget = L.MAX_WIRE_OBJECTS
    max_open = L.MAX_WIRE_DEPTH + 1
    sized, fixed, arrays = _SIZED, _FIXED, _ARRAYS
    remaining = [1]  # items still to read in each open array (outermost: the one message)
    why = ""
    while remaining:
        if not remaining[-1]:
            remaining.pop()
            continue
        remaining[-1] -= 1
        budget -= 1
        if budget < 0:
            why = "too many objects"
            break
        if pos >= end:
            why = "truncated"
            break
        b = buf[pos]
        pos += 1
        if b <= 0x7F or b >= 0xE0:
            continue
        width = sized.get(b)
        if width is not None:
            pos += width + int.from_bytes(buf[pos : pos + width], "big")
        elif 0xA0 <= b <= 0xBF:
            pos += b & 0x1F
        elif 0x90 <= b <= 0x9F or b in arrays:
            if b <= 0x9F:
                count = b & 0x0F
            else:
                width = arrays[b]
                count = int.from_bytes(buf[pos : pos + width], "big")
                pos += width
            if len(remaining) >= max_open:
                why = "nested too deeply"
                break
            if count > _MAX_ARRAY or count > end - pos:
                why = "array too long"
                break
            remaining.append(count)
        elif b in fixed:
            pos += fixed[b]
        else:
            why = f"forbidden msgpack type byte 0x{b:02x} (map, ext or reserved)"
            break
        if pos > end:
            why = "truncated"
            break
    if not why and pos != end:
        why = "trailing bytes after the message"
    if why:
        raise _error(ErrorCode.MALFORMED, f"bad msgpack: {why}", rid)
