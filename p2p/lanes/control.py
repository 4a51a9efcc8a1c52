"""The node<->lane control channel: messages and their sans-IO codec.

Wire form: length-prefixed frames (shoal.p2p.wire.framing, 4-byte big-endian
length) each holding one msgpack array `[tag, field1, field2, ...]`, fields
in dataclass order. The same rules as the peer protocol (docs/PROTOCOL.md
§5): no maps or extension types, bounded depth and object count (checked on
the raw bytes before msgpack builds anything), msgpack's own length caps,
fixed arity, and every message validated when built. The channel joins two
processes of one node (a socketpair), so a bad message is a bug, not an
attack; it is still bounded, because a lane that misbehaves must not be able
to make the node allocate without limit.

Messages (node -> lane): Config (first), Job, AdmitAnswer, Stop.
(lane -> node): Ready (once, after Config), Result, AdmitRequest, CpuStats.

Not here: any I/O (shoal.p2p.lanes.worker and shoal.p2p.lanes.pool drive it).
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import msgpack

from shoal.store.ipld.cid import CID, cid_from_bytes
from shoal.store.errors import StoreError

from shoal.p2p.errors import ControlProtocolError, P2PError, RemoteProtocolError
from shoal.p2p.lanes.api import LaneJob, LaneResult, Outcome, Sink
from shoal.p2p.secure.identity import PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.wire import codec, limits as L
from shoal.p2p.wire.framing import FrameDecoder, encode_frame

__all__ = [
    "AdmitAnswer", "AdmitRequest", "Config", "ControlDecoder", "ControlMessage", "CpuStats", "Job",
    "MAX_CONTROL_FRAME", "Ready", "Result", "Stop", "decode", "encode",
]

MAX_SINKS = 64
"""Sinks per job: the files one block is written to (a block shared by files
of an export). More is refused, not truncated."""
MAX_HOLDER_ADDRS = 16
"""Lane addresses of one holder (as many as a Hello may list)."""
MAX_PATH_BYTES = 4096
MAX_DETAIL_BYTES = 512
MAX_HOST_BYTES = 256
MAX_ID = 2**53
"""Job and admission request ids (node-chosen counters)."""
MAX_CONTROL_FRAME = L.MAX_BLOCK_BYTES + 64 * 1024
"""A Result carrying a block's bytes (want_data) is the largest message."""
_MAX_STR = max(MAX_PATH_BYTES, L.MAX_ADDR_BYTES, MAX_DETAIL_BYTES)
_LIMITS = dict(max_str_len=_MAX_STR, max_bin_len=L.MAX_BLOCK_BYTES, max_array_len=max(MAX_SINKS, 16),
               max_map_len=0, max_ext_len=0)


def _bad(name: str, why: str) -> ControlProtocolError:
    return ControlProtocolError(f"control message field {name}: {why}")


def _int(name: str, v: object, lo: int, hi: int) -> None:
    if type(v) is not int or not lo <= v <= hi:
        raise _bad(name, f"expected an int in [{lo}, {hi}], got {v!r:.40}")


def _bool(name: str, v: object) -> None:
    if type(v) is not bool:
        raise _bad(name, "expected a bool")


def _float(name: str, v: object, lo: float, hi: float) -> None:
    if type(v) is not float or not math.isfinite(v) or not lo <= v <= hi:
        raise _bad(name, f"expected a finite float in [{lo}, {hi}]")


def _text(name: str, v: object, most: int) -> None:
    if type(v) is not str or len(v.encode("utf-8", "surrogatepass")) > most:
        raise _bad(name, f"expected a str of at most {most} bytes")


def _bin(name: str, v: object, most: int, least: int = 0) -> None:
    if type(v) is not bytes or not least <= len(v) <= most:
        raise _bad(name, f"expected bytes of length [{least}, {most}]")


def _seq(name: str, v: object, most: int) -> tuple[object, ...]:
    if type(v) is not tuple or len(v) > most:
        raise _bad(name, f"expected a tuple of at most {most} items")
    return v


class ControlMessage(abc.ABC):
    """Base of the control messages: frozen dataclasses, validated when built."""

    __slots__ = ()
    TAG: ClassVar[int]

    def __post_init__(self) -> None:
        self._validate()

    @abc.abstractmethod
    def _validate(self) -> None:
        """ControlProtocolError if a field breaks its bound."""


@dataclass(frozen=True, slots=True)
class Config(ControlMessage):
    """node -> lane, first: what the lane needs to open the repo and listen.

    `port`: where the lane of this index listened before it died (0: any),
    so a replacement keeps the address the node's peers were told."""

    TAG: ClassVar[int] = 1
    repo: str
    host: str
    port: int
    peer_id: bytes
    swarm_psk: bytes | None
    send_budget: int
    stall_timeout: float
    index: int

    def _validate(self) -> None:
        _text("repo", self.repo, MAX_PATH_BYTES)
        if not self.repo.startswith("/"):
            raise _bad("repo", "must be an absolute path")
        _text("host", self.host, MAX_HOST_BYTES)
        _int("port", self.port, 0, 65535)
        _bin("peer_id", self.peer_id, 64, 2)
        if self.swarm_psk is not None:
            _bin("swarm_psk", self.swarm_psk, 32, 32)
        _int("send_budget", self.send_budget, L.MAX_FRAME_BYTES, 2**40)
        _float("stall_timeout", self.stall_timeout, 0.001, 86400.0)
        _int("index", self.index, 0, 1023)


@dataclass(frozen=True, slots=True)
class Ready(ControlMessage):
    """lane -> node, once: listening at `addr` (a multiaddr without /p2p)."""

    TAG: ClassVar[int] = 2
    addr: str
    pid: int

    def _validate(self) -> None:
        _text("addr", self.addr, L.MAX_ADDR_BYTES)
        _int("pid", self.pid, 1, 2**31)


@dataclass(frozen=True, slots=True)
class Job(ControlMessage):
    """node -> lane: one LaneJob under a node-chosen id (see `from_job`/`to_job`)."""

    TAG: ClassVar[int] = 3
    job_id: int
    cid: bytes
    holder: bytes | None
    holder_addrs: tuple[str, ...]
    sinks: tuple[tuple[str, int], ...]
    want_data: bool
    store: bool
    timeout: float

    def _validate(self) -> None:
        _int("job_id", self.job_id, 1, MAX_ID)
        _bin("cid", self.cid, L.MAX_CID_BYTES, L.MIN_CID_BYTES)
        if self.holder is not None:
            _bin("holder", self.holder, 64, 2)
        for i, a in enumerate(_seq("holder_addrs", self.holder_addrs, MAX_HOLDER_ADDRS)):
            _text(f"holder_addrs[{i}]", a, L.MAX_ADDR_BYTES)
        if self.holder is None and self.holder_addrs:
            raise _bad("holder_addrs", "must be empty when there is no holder")
        for i, s in enumerate(_seq("sinks", self.sinks, MAX_SINKS)):
            if type(s) is not tuple or len(s) != 2:
                raise _bad(f"sinks[{i}]", "expected (path, offset)")
            _text(f"sinks[{i}].path", s[0], MAX_PATH_BYTES)
            _int(f"sinks[{i}].offset", s[1], 0, 2**62)
        _bool("want_data", self.want_data)
        _bool("store", self.store)
        _float("timeout", self.timeout, 0.001, 86400.0)

    @classmethod
    def from_job(cls, job_id: int, job: LaneJob) -> "Job":
        """The message for `job` (ControlProtocolError if it breaks a bound).

        Addresses travel without their /p2p part (the holder's id is its own
        field, and every address is the holder's): the base58 of a peer id,
        encoded here and decoded in the lane for each address of each job,
        cost more CPU than the rest of the job's control traffic together."""
        return cls(job_id, bytes(job.cid), job.holder.multihash if job.holder is not None else None,
                   tuple(_bare(a) for a in job.holder_addrs), tuple((s.path, s.offset) for s in job.sinks),
                   bool(job.want_data), bool(job.store), float(job.timeout))

    def to_job(self) -> LaneJob:
        """Back to a LaneJob (addresses pinned to the holder's id); ControlProtocolError
        if a CID, peer id or address does not parse."""
        try:
            holder = PeerId.from_bytes(self.holder) if self.holder is not None else None
            addrs = tuple(_parse_bare(a).with_peer(holder) for a in self.holder_addrs) if holder is not None else ()
            sinks = tuple(Sink(p, o) for p, o in self.sinks)
            return LaneJob(self.cid_obj(), holder, addrs, sinks, self.want_data, self.store, self.timeout)
        except (P2PError, ValueError) as exc:
            raise ControlProtocolError(f"job {self.job_id}: {exc}") from None

    def cid_obj(self) -> CID:
        try:
            return cid_from_bytes(self.cid)
        except (StoreError, ValueError) as exc:
            raise ControlProtocolError(f"job {self.job_id}: bad CID: {exc}") from None


def _bare(addr: Multiaddr) -> str:
    """`addr` as text without its /p2p part."""
    return f"/{addr.family}/{addr.host}/tcp/{addr.port}"


@functools.lru_cache(maxsize=256)
def _parse_bare(text: str) -> Multiaddr:
    """A lane sees the same few holder addresses job after job."""
    addr = Multiaddr.parse(text)
    if addr.peer_id is not None:
        raise ControlProtocolError("a job's holder addresses carry no /p2p part")
    return addr


_OUTCOMES = {o.value for o in Outcome}


@dataclass(frozen=True, slots=True)
class Result(ControlMessage):
    """lane -> node: how job `job_id` ended."""

    TAG: ClassVar[int] = 4
    job_id: int
    outcome: str
    size: int
    data: bytes | None
    detail: str

    def _validate(self) -> None:
        _int("job_id", self.job_id, 1, MAX_ID)
        if self.outcome not in _OUTCOMES:
            raise _bad("outcome", f"unknown outcome {self.outcome!r:.40}")
        _int("size", self.size, 0, L.MAX_BLOCK_BYTES)
        if self.data is not None:
            _bin("data", self.data, L.MAX_BLOCK_BYTES)
        _text("detail", self.detail, MAX_DETAIL_BYTES)

    @classmethod
    def from_result(cls, job_id: int, result: LaneResult) -> "Result":
        """The message for `result`; a too-long detail is cut (it is only for people)."""
        detail = result.detail.encode("utf-8", "replace")[:MAX_DETAIL_BYTES].decode("utf-8", "ignore")
        return cls(job_id, result.outcome.value, result.size, result.data, detail)

    def to_result(self) -> LaneResult:
        return LaneResult(Outcome(self.outcome), self.size, self.data, self.detail)


@dataclass(frozen=True, slots=True)
class AdmitRequest(ControlMessage):
    """lane -> node: may `peer` use this lane? (asked once per new remote peer)"""

    TAG: ClassVar[int] = 5
    req_id: int
    peer: bytes

    def _validate(self) -> None:
        _int("req_id", self.req_id, 1, MAX_ID)
        _bin("peer", self.peer, 64, 2)


@dataclass(frozen=True, slots=True)
class AdmitAnswer(ControlMessage):
    """node -> lane: the answer to AdmitRequest `req_id`."""

    TAG: ClassVar[int] = 6
    req_id: int
    allowed: bool

    def _validate(self) -> None:
        _int("req_id", self.req_id, 1, MAX_ID)
        _bool("allowed", self.allowed)


@dataclass(frozen=True, slots=True)
class CpuStats(ControlMessage):
    """lane -> node, now and then: the lane's own CPU seconds (getrusage) and byte counts."""

    TAG: ClassVar[int] = 7
    cpu_s: float
    served_bytes: int
    fetched_bytes: int

    def _validate(self) -> None:
        _float("cpu_s", self.cpu_s, 0.0, 1e12)
        _int("served_bytes", self.served_bytes, 0, 2**63)
        _int("fetched_bytes", self.fetched_bytes, 0, 2**63)


@dataclass(frozen=True, slots=True)
class Stop(ControlMessage):
    """node -> lane: finish now (closing the channel means the same)."""

    TAG: ClassVar[int] = 8

    def _validate(self) -> None:
        pass


_TYPES: dict[int, type[ControlMessage]] = {
    c.TAG: c for c in (Config, Ready, Job, Result, AdmitRequest, AdmitAnswer, CpuStats, Stop)
}
_ARITY = {tag: len(dataclasses.fields(c)) for tag, c in _TYPES.items()}  # type: ignore[arg-type]
"""Fields per tag (the ClassVar TAG is not a field)."""


def _to_wire(v: object) -> object:
    if isinstance(v, tuple):
        return [_to_wire(x) for x in v]
    return v


def _tuplify(v: object) -> object:
    if type(v) is list:
        return tuple(_tuplify(x) for x in v)
    return v


def encode(msg: ControlMessage) -> bytes:
    """One framed message (length prefix included)."""
    fields = [_to_wire(getattr(msg, f.name)) for f in dataclasses.fields(msg)]  # type: ignore[arg-type]
    payload: bytes = msgpack.packb([msg.TAG, *fields], use_bin_type=True)
    return encode_frame(payload, MAX_CONTROL_FRAME)


def decode(payload: bytes) -> ControlMessage:
    """One frame's payload to a message; ControlProtocolError on anything malformed."""
    try:
        codec.check_shape(payload)
        obj = msgpack.unpackb(payload, raw=False, use_list=True, strict_map_key=True, **_LIMITS)
    except RemoteProtocolError as exc:
        raise ControlProtocolError(f"control frame: {exc}") from None
    except (ValueError, TypeError, OverflowError, msgpack.UnpackException) as exc:
        raise ControlProtocolError(f"control frame: bad msgpack: {type(exc).__name__}") from None
    if type(obj) is not list or not obj or type(obj[0]) is not int:
        raise ControlProtocolError("control frame is not a [tag, ...] array")
    cls = _TYPES.get(obj[0])
    if cls is None:
        raise ControlProtocolError(f"unknown control message tag {obj[0]}")
    fields = obj[1:]
    if len(fields) != _ARITY[obj[0]]:
        raise ControlProtocolError(f"{cls.__name__} needs {_ARITY[obj[0]]} fields, got {len(fields)}")
    make: Any = cls  # the dataclass constructor, checked by each class's _validate
    msg: ControlMessage = make(*[_tuplify(f) for f in fields])
    return msg


class ControlDecoder:
    """Bytes in, messages out (sans-IO); poisoned after the first error."""

    def __init__(self) -> None:
        self._frames = FrameDecoder(MAX_CONTROL_FRAME)

    def feed(self, data: bytes | bytearray | memoryview) -> list[ControlMessage]:
        """Consume `data`; every message it completed, in order (ControlProtocolError)."""
        try:
            payloads = self._frames.feed(data)
        except RemoteProtocolError as exc:
            raise ControlProtocolError(f"control channel framing: {exc}") from None
        return [decode(p) for p in payloads]

    def end_of_stream(self) -> None:
        """At EOF: ControlProtocolError if the other side stopped mid-frame."""
        try:
            self._frames.end_of_stream()
        except RemoteProtocolError as exc:
            raise ControlProtocolError(f"control channel: {exc}") from None
