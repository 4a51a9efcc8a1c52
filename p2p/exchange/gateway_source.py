"""IPFS trustless gateways as a block source: the sans-IO half.

A fetch (shoal.p2p.exchange.fetch) can ask HTTP gateways for blocks beside
its connected peers: `GET {url}/ipfs/{cid}?format=raw` with `Accept:
application/vnd.ipld.raw` (specs.ipfs.tech/http-gateways/trustless-gateway)
answers one raw block, which we check against its CID like a block from a
peer. A gateway is only a transport: nothing it says is believed but
bytes whose hash matches.

This module builds the request and judges the response — status, headers,
the body as it streams in (bounded before it is read) and the block's hash
— without sockets, so every rule is unit-tested with plain values. The
httpx/trio driver is shoal.p2p.exchange.gateway_client.

Not done here: CAR responses (one request per block keeps a lying gateway's
damage to one block and lets the planner spread blocks over sources),
`/ipns/`, hashes other than sha2-256 and identity.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

from shoal.store.errors import HashMismatch
from shoal.store.ipld.cid import CID, multihash_digest

from shoal.p2p.errors import P2PError
from shoal.p2p.wire import limits as L

__all__ = [
    "ACCEPT_RAW", "BadGateway", "BodyReader", "Gateway", "GatewayUrlError", "MAX_GATEWAY_BLOCK_BYTES",
    "MAX_RETRY_AFTER_S", "block_url", "check_head", "parse_gateway_url", "request_headers", "retry_after",
    "verify_gateway_block",
]

ACCEPT_RAW = "application/vnd.ipld.raw"
MAX_GATEWAY_BLOCK_BYTES = L.MAX_BLOCK_BYTES
"""The biggest block a gateway may send: what the swarm itself carries. A
block over it could not be stored or served on anyway."""
MAX_URL_CHARS = 1024
# Verifiable formats a gateway might answer instead of the raw block we asked
# for: never a raw block, so refused at once instead of read and hashed.
_OTHER_FORMATS = frozenset({
    "application/vnd.ipld.car", "application/vnd.ipld.dag-json", "application/vnd.ipld.dag-cbor",
    "application/vnd.ipfs.ipns-record", "text/html",
})
_MISSING_STATUSES = frozenset({404, 410, 451})
_BUSY_STATUSES = frozenset({429, 503})
MAX_RETRY_AFTER_S = 5.0
DEFAULT_RETRY_AFTER_S = 0.5


class GatewayUrlError(P2PError):
    """A gateway URL that cannot be used (scheme, host, query...)."""

    hint = "give a gateway as http://HOST:PORT or https://HOST[/PREFIX]"


class BadGateway(P2PError):
    """A gateway's answer for one block that is not that block.

    `kind` says what the fetch makes of it:
    - "missing": the gateway says it does not have the block (404/410/451);
      another source may.
    - "busy": 429/503, the gateway sheds load (a Shoal gateway answers 503
      past its request cap): asked again after `retry_after` seconds.
    - "fail": an error status, another format, a block too big for us, a
      truncated body: no proof of bad faith, the block is retried elsewhere.
    - "corrupt": bytes that do not hash to the CID, or a body longer than the
      Content-Length it declared: the gateway lies, and is dropped for the
      rest of the fetch.
    """

    def __init__(self, kind: str, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.kind = kind
        self.retry_after = retry_after


@dataclass(frozen=True)
class Gateway:
    """One gateway, a holder in the fetch planner (hashable, by its URL)."""

    url: str

    def __str__(self) -> str:
        return self.url


def parse_gateway_url(text: str) -> Gateway:
    """Check and normalise a gateway base URL: http(s), a host, no query,
    fragment or credentials; a path prefix is kept, its trailing '/' dropped."""
    text = text.strip()
    if not text or len(text) > MAX_URL_CHARS:
        raise GatewayUrlError(f"not a gateway URL: {text[:80]!r}")
    try:
        parts = urlsplit(text)
        port = parts.port  # ValueError for a bad port
    except ValueError:
        raise GatewayUrlError(f"not a gateway URL: {text[:80]!r}") from None
    if parts.scheme not in ("http", "https"):
        raise GatewayUrlError(f"gateway URL {text[:80]!r} must start with http:// or https://")
    if not parts.hostname:
        raise GatewayUrlError(f"gateway URL {text[:80]!r} names no host")
    if parts.username is not None or parts.password is not None:
        raise GatewayUrlError(f"gateway URL {parts.hostname} must not carry credentials")
    if parts.query or parts.fragment:
        raise GatewayUrlError(f"gateway URL {text[:80]!r} must not have a query or fragment")
    path = parts.path.rstrip("/")
    if path.endswith("/ipfs"):
        path = path[: -len("/ipfs")]  # "http://gw/ipfs" is the same gateway as "http://gw"
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    return Gateway(f"{parts.scheme}://{netloc.lower()}{path}")


def block_url(gateway: Gateway, cid: CID) -> str:
    """Where `gateway` serves `cid` as a raw block (`?format=raw`: some
    gateways ignore Accept, the spec says the query wins)."""
    return f"{gateway.url}/ipfs/{cid}?format=raw"


def request_headers() -> dict[str, str]:
    """Headers of a block request: the raw format again in Accept (for gateways
    that read only it) and no compression (a block is incompressible, and a
    compressed body would get past the size bound before it is inflated)."""
    return {"Accept": ACCEPT_RAW, "Accept-Encoding": "identity"}


def check_head(cid: CID, status: int, headers: Mapping[str, str], max_bytes: int = MAX_GATEWAY_BLOCK_BYTES
               ) -> int | None:
    """Judge a response before its body is read: the declared length (None if
    not declared), or BadGateway.

    The Content-Type is only advisory: a gateway that labels a raw block
    `application/octet-stream` (or not at all) is tolerated, since the hash
    decides; one that answers another verifiable format (a CAR, DAG-JSON) or
    an HTML page is refused without reading it.
    """
    if status in _MISSING_STATUSES:
        raise BadGateway("missing", f"does not have {cid} (HTTP {status})")
    lowered = {k.lower(): v for k, v in headers.items()}
    if status in _BUSY_STATUSES:
        raise BadGateway("busy", f"is busy (HTTP {status}) for {cid}", retry_after(lowered.get("retry-after")))
    if status != 200:
        raise BadGateway("fail", f"answered HTTP {status} for {cid}")
    media = lowered.get("content-type", "").split(";", 1)[0].strip().lower()
    if media in _OTHER_FORMATS:
        raise BadGateway("fail", f"answered {media} for {cid}, not a raw block")
    encoding = lowered.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise BadGateway("fail", f"answered {cid} with Content-Encoding {encoding}")
    declared = lowered.get("content-length")
    if declared is None:
        return None
    declared = declared.strip()
    if not declared.isdigit() or len(declared) > 18:
        raise BadGateway("corrupt", f"sent a malformed Content-Length {declared[:40]!r} for {cid}")
    length = int(declared)
    if length > max_bytes:
        raise BadGateway("fail", f"declared a {length}-byte block for {cid}, over the {max_bytes}-byte limit")
    return length


def retry_after(value: str | None) -> float:
    """Seconds to wait before asking a busy gateway again: its Retry-After
    in seconds, bounded to `MAX_RETRY_AFTER_S` (an HTTP date, or nothing,
    gets the default) so a gateway cannot park a fetch."""
    if value is not None and value.strip().isdigit() and len(value.strip()) < 10:
        return min(float(value.strip()), MAX_RETRY_AFTER_S)
    return DEFAULT_RETRY_AFTER_S


class BodyReader:
    """Collects a block's body as it streams in, never past the bound.

    `feed` raises BadGateway as soon as the body outgrows the declared
    Content-Length (a lie: "corrupt") or, without one, `max_bytes` (a block
    we would refuse: "fail"), so a gateway cannot make us buffer more than
    one block's worth; `finish` refuses a body shorter than declared.
    """

    def __init__(self, cid: CID, declared: int | None, max_bytes: int = MAX_GATEWAY_BLOCK_BYTES) -> None:
        self.cid = cid
        self.declared = declared
        self.limit = max_bytes if declared is None else min(declared, max_bytes)
        self._parts: list[bytes] = []
        self.received = 0

    def feed(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            self._parts.clear()
            if self.declared is not None:
                raise BadGateway("corrupt", f"sent more than the {self.declared} bytes it declared for {self.cid}")
            raise BadGateway("fail", f"sent over {self.limit} bytes for {self.cid}, more than any block we take")
        self._parts.append(chunk)

    def finish(self) -> bytes:
        if self.declared is not None and self.received != self.declared:
            raise BadGateway("fail", f"sent {self.received} of the {self.declared} bytes it declared for {self.cid}")
        return b"".join(self._parts)


def verify_gateway_block(cid: CID, data: bytes) -> None:
    """Check `data` is the block `cid` names: sha2-256 or identity; any other
    hash function is refused (we cannot check it, so we never use it).

    Raises HashMismatch (the store's error, as for a block from a peer) or
    BadGateway("fail") for a hash we do not support.
    """
    name = cid.hashfun.name
    digest = multihash_digest(cid)
    if name == "sha2-256":
        if hashlib.sha256(data).digest() != digest:
            raise HashMismatch(cid, "from a gateway")
    elif name == "identity":
        if data != digest:
            raise HashMismatch(cid, "from a gateway")
    else:
        raise BadGateway("fail", f"cannot check {cid}: hash {name} is not supported (sha2-256 and identity are)")
