"""Sans-IO: a trustless-gateway request, parsed and validated, and its headers.

Everything a client controls (path, query string, Accept, Cache-Control,
If-None-Match) is bounded and checked here, before any block is read, and
every refusal is a `GatewayRequestError` carrying its HTTP status. The
driver (`shoal.p2p.gateway.app`) turns a `GatewayRequest` into a response;
nothing here touches sockets, trio or the store, so unit and property tests
cover every rule.

Implemented of the IPFS trustless gateway spec: `/ipfs/{cid}` with the
response format chosen by `?format=raw|car` or the Accept header
(`application/vnd.ipld.raw`, `application/vnd.ipld.car` with `version`,
`order`, `dups` parameters), `dag-scope=block|entity|all`,
`entity-bytes=from:to` (inclusive, `*`, negative `from`), and the
`car-version`, `car-order`, `car-dups` query parameters.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterable
from urllib.parse import parse_qsl, unquote

from shoal.p2p.errors import P2PError

MAX_PATH_BYTES = 4096
MAX_QUERY_BYTES = 2048
MAX_HEADER_VALUE_BYTES = 4096
MAX_ACCEPT_ITEMS = 32
MAX_QUERY_PARAMS = 16
MAX_ENTITY_INT = 2**63 - 1

RAW_TYPE = "application/vnd.ipld.raw"
CAR_TYPE = "application/vnd.ipld.car"
IMMUTABLE_CACHE = "public, max-age=29030400, immutable"

SCOPES = ("block", "entity", "all")


class GatewayRequestError(P2PError):
    """A request the gateway refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EntityBytes:
    """`entity-bytes=from:to`: `start` may be negative (from the end);
    `end` is inclusive, None for `*`, and may be negative too."""

    start: int
    end: int | None

    def window(self, size: int) -> tuple[int, int]:
        """(offset, length) of this range in an entity of `size` bytes, clamped.

        Per the spec, a range past the end is clamped to the entity, not an
        error: a negative `start` counts from the end, `end` is inclusive.
        """
        lo = self.start if self.start >= 0 else max(0, size + self.start)
        if self.end is None:
            hi = size
        elif self.end >= 0:
            hi = min(size, self.end + 1)
        else:
            hi = max(0, size + self.end + 1)
        lo = min(lo, size)
        return lo, max(0, hi - lo)

    def text(self) -> str:
        return f"{self.start}:{'*' if self.end is None else self.end}"


@dataclass(frozen=True)
class GatewayRequest:
    """A validated `/ipfs/...` request."""

    head: bool
    cid_text: str
    path: tuple[str, ...]
    """Path segments after the CID, percent-decoded (empty for the trustless routes)."""
    format: str | None
    """'raw', 'car', or None: no verifiable format asked for (a path-gateway request)."""
    scope: str = "all"
    entity_bytes: EntityBytes | None = None
    dups: bool = False
    only_if_cached: bool = False
    if_none_match: str | None = None
    range_header: str | None = None
    html: bool = False
    """A directory listing is wanted as HTML (Accept prefers text/html over JSON)."""

    def content_type(self) -> str:
        if self.format == "raw":
            return RAW_TYPE
        if self.format == "car":
            return f"{CAR_TYPE}; version=1; order=dfs; dups={'y' if self.dups else 'n'}"
        return "application/octet-stream"

    def etag(self, cid: str) -> str:
        """An ETag that names the CID and every parameter that changes the bytes."""
        if self.format == "raw":
            return f'"{cid}.raw"'
        if self.format == "car":
            spec = f"{self.scope}|{self.entity_bytes.text() if self.entity_bytes else ''}|{int(self.dups)}|dfs|1"
            return f'"{cid}.car.{hashlib.sha256(spec.encode()).hexdigest()[:16]}"'
        return f'"{cid}.html"' if self.html else f'"{cid}"'  # (an HTML listing is another representation)

    def filename(self, cid: str) -> str:
        return f"{cid}.{'car' if self.format == 'car' else 'bin'}"

    def headers(self, cid: str) -> list[tuple[bytes, bytes]]:
        """The headers every successful response to this request carries."""
        pairs = [
            ("content-type", self.content_type()),
            ("etag", self.etag(cid)),
            ("cache-control", IMMUTABLE_CACHE),
            ("x-content-type-options", "nosniff"),
            ("x-ipfs-path", "/ipfs/" + cid + "".join("/" + p for p in self.path)),
            ("vary", "Accept"),
        ]
        if self.format in ("raw", "car"):
            pairs.append(("content-disposition", f'attachment; filename="{self.filename(cid)}"'))
        return [(k.encode(), v.encode()) for k, v in pairs]

    def not_modified(self, cid: str) -> bool:
        """If-None-Match names this response's ETag (or `*`): answer 304."""
        if self.if_none_match is None:
            return False
        tags = [t.strip() for t in self.if_none_match.split(",")]
        mine = self.etag(cid)
        return "*" in tags or mine in tags or ("W/" + mine) in tags


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of one header (repeated ones joined with commas), bounded."""
    values = [v for k, v in headers if k.lower() == name]
    if not values:
        return None
    joined = b", ".join(values)
    if len(joined) > MAX_HEADER_VALUE_BYTES:
        raise GatewayRequestError(400, f"header {name.decode()} is too long")
    return joined.decode("latin-1")


def parse_media_ranges(accept: str) -> list[tuple[str, dict[str, str]]]:
    """`Accept` as [(type, params)] in the client's order of preference (q=0 dropped)."""
    items: list[tuple[float, int, str, dict[str, str]]] = []
    for index, part in enumerate(accept.split(",")):
        if index >= MAX_ACCEPT_ITEMS:
            raise GatewayRequestError(400, "Accept lists too many media types")
        fields = [f.strip() for f in part.split(";")]
        mtype = fields[0].lower()
        if not mtype:
            continue
        params: dict[str, str] = {}
        for f in fields[1:]:
            key, sep, value = f.partition("=")
            if sep:
                params[key.strip().lower()] = value.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if not 0 <= q <= 1 or q != q:
            q = 1.0
        if q > 0:
            items.append((-q, index, mtype, params))
    items.sort(key=lambda t: (t[0], t[1]))
    return [(m, p) for _, _, m, p in items]


@dataclass
class _CarOptions:
    version: str | None = None
    order: str | None = None
    dups: str | None = None


def _negotiate(accept: str | None, fmt: str | None, car: _CarOptions) -> str | None:
    """'raw', 'car' or None. `?format=` wins over Accept (as boxo does)."""
    if fmt is not None:
        if fmt not in ("raw", "car"):
            raise GatewayRequestError(400, f"unsupported format {fmt[:40]!r}: raw or car")
        return fmt
    if accept is None:
        return None
    for mtype, params in parse_media_ranges(accept):
        if mtype == RAW_TYPE:
            return "raw"
        if mtype == CAR_TYPE:
            car.version = car.version or params.get("version")
            car.order = car.order or params.get("order")
            car.dups = car.dups or params.get("dups")
            return "car"
    return None


def wants_html(accept: str | None) -> bool:
    """True when `Accept` ranks text/html (or XHTML) above application/json.

    The first of those the client prefers decides; neither named (curl's
    `*/*`, no header) means JSON, the listing's default.
    """
    if accept is None:
        return False
    for mtype, _params in parse_media_ranges(accept):
        if mtype in ("text/html", "application/xhtml+xml"):
            return True
        if mtype == "application/json":
            return False
    return False


def parse_entity_bytes(text: str) -> EntityBytes:
    """`from:to`, inclusive; `to` may be `*`; both may be negative (from the end)."""
    start_text, sep, end_text = text.partition(":")
    if not sep:
        raise GatewayRequestError(400, "entity-bytes must be from:to")

    def integer(t: str, what: str) -> int:
        body = t[1:] if t.startswith("-") else t
        if not body.isascii() or not body.isdigit() or len(body) > 19:
            raise GatewayRequestError(400, f"entity-bytes {what} must be an integer")
        value = int(t)
        if abs(value) > MAX_ENTITY_INT:
            raise GatewayRequestError(400, f"entity-bytes {what} is out of range")
        return value

    start = integer(start_text, "from")
    end = None if end_text == "*" else integer(end_text, "to")
    if end is not None and end >= 0 and start >= 0 and end < start:
        raise GatewayRequestError(400, "entity-bytes to must not be below from")
    if end is not None and end < 0 and start < 0 and end < start:
        raise GatewayRequestError(400, "entity-bytes to must not be below from")
    return EntityBytes(start, end)


def parse_request(method: str, raw_path: str, query_string: bytes,
                  headers: Iterable[tuple[bytes, bytes]]) -> GatewayRequest:
    """Validate an `/ipfs/...` request; GatewayRequestError (with its status) if refused."""
    if method not in ("GET", "HEAD"):
        raise GatewayRequestError(405, f"method {method[:16]} not allowed: the gateway is read-only")
    if len(raw_path.encode("utf-8", "surrogateescape")) > MAX_PATH_BYTES:
        raise GatewayRequestError(414, "path too long")
    if len(query_string) > MAX_QUERY_BYTES:
        raise GatewayRequestError(414, "query string too long")
    headers = list(headers)
    if not raw_path.startswith("/ipfs/"):
        raise GatewayRequestError(404, "no such route: the gateway serves /ipfs/{cid}")
    segments = raw_path[len("/ipfs/"):].split("/")
    cid_text = segments[0]
    if not cid_text:
        raise GatewayRequestError(400, "missing CID in /ipfs/{cid}")
    path: list[str] = []
    for seg in segments[1:]:
        if seg == "":
            continue
        name = unquote(seg, errors="strict") if "%" in seg else seg
        if name in (".", "..") or "/" in name or "\x00" in name:
            raise GatewayRequestError(400, f"invalid path segment {seg[:40]!r}")
        path.append(name)
    try:
        query = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, strict_parsing=False,
                          max_num_fields=MAX_QUERY_PARAMS)
    except (UnicodeDecodeError, ValueError):
        raise GatewayRequestError(400, "query string is malformed or has too many parameters") from None
    params: dict[str, str] = {}
    for key, value in query:
        if key in params and params[key] != value:
            raise GatewayRequestError(400, f"parameter {key[:40]} given twice")
        params[key] = value
    car = _CarOptions(params.get("car-version"), params.get("car-order"), params.get("car-dups"))
    accept = _header(headers, b"accept")
    fmt = _negotiate(accept, params.get("format"), car)
    if fmt != "car" and any(k in params for k in ("dag-scope", "entity-bytes", "car-version", "car-order",
                                                   "car-dups")):
        raise GatewayRequestError(400, "dag-scope, entity-bytes and car-* need a CAR response (format=car)")
    scope = params.get("dag-scope", "all")
    if scope not in SCOPES:
        raise GatewayRequestError(400, "dag-scope must be block, entity or all")
    entity = parse_entity_bytes(params["entity-bytes"]) if "entity-bytes" in params else None
    if entity is not None and scope != "entity":
        raise GatewayRequestError(400, "entity-bytes needs dag-scope=entity")
    if car.version not in (None, "1"):
        raise GatewayRequestError(400, f"car-version {car.version[:8]!r} not supported: only 1")
    if car.order not in (None, "dfs", "unk"):
        raise GatewayRequestError(400, f"car-order {car.order[:8]!r} not supported: dfs or unk")
    if car.dups not in (None, "y", "n"):
        raise GatewayRequestError(400, "car-dups must be y or n")
    cache_control = (_header(headers, b"cache-control") or "").lower()
    return GatewayRequest(
        head=method == "HEAD",
        cid_text=cid_text,
        path=tuple(path),
        format=fmt,
        scope=scope,
        entity_bytes=entity,
        dups=car.dups == "y",
        only_if_cached="only-if-cached" in cache_control,
        if_none_match=_header(headers, b"if-none-match"),
        range_header=_header(headers, b"range"),
        html=fmt is None and wants_html(accept),
    )


@dataclass(frozen=True)
class ByteRange:
    """A satisfiable single `Range: bytes=` request, as [start, end] inclusive."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The `Range` header against an entity of `size` bytes (RFC 9110 §14).

    None: serve the whole entity (no header, another unit, several ranges —
    which a server may ignore — or a syntax it does not parse). A single
    byte range that starts past the end is a 416 (GatewayRequestError).
    """
    if header is None:
        return None
    unit, sep, spec = header.strip().partition("=")
    if not sep or unit.strip().lower() != "bytes" or "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    if not dash or len(first) > 19 or len(last) > 19:
        return None
    if not (first == "" or (first.isascii() and first.isdigit())) or \
            not (last == "" or (last.isascii() and last.isdigit())):
        return None
    if first == "":
        if last == "":
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            raise GatewayRequestError(416, "range not satisfiable")
        return ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if last != "" and int(last) < start:
        return None  # invalid: ignored, as RFC 9110 allows
    if start >= size:
        raise GatewayRequestError(416, "range not satisfiable")
    return ByteRange(start, end)
