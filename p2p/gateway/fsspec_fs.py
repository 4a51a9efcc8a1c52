"""`shoal://` for fsspec: read a node's content through its HTTP path gateway.

    import fsspec
    with fsspec.open("shoal://bafy.../model.safetensors") as f:
        f.seek(8); header = f.read(1024)
    fsspec.open_local("simplecache::shoal://bafy.../model.safetensors")

Registered under the `fsspec.specs` entry point (pyproject.toml), so fsspec
finds the protocol without Shoal being imported first. Only this module
imports fsspec (the `fsspec` extra); the rest of Shoal runs without it.

It is an HTTP client of the path gateway (`GET|HEAD /ipfs/{cid}[/{path}]`,
docs/GATEWAY.md), not of the store: `info` is a HEAD, `ls` the gateway's JSON
listing, `cat_file(start, end)` and every buffered read one `Range` GET. The
node verifies every block it reads or fetches from peers; this client trusts
the node it talks to (pick a gateway you trust: your own node).

Which gateway: the storage option `gateway="http://HOST:PORT"`, else
`$SHOAL_GATEWAY`, else the gateway of the node running on the repo (storage
option `repo`, else `$SHOAL_REPO`, else `~/.shoal`), learnt as `shoal id
--json` learns it: `<repo>/api` names the control API, whose `/v1/id` has
`"gateway"` when the node serves one.

Read-only: opening for writing and every mutating call raise PermissionError
(EROFS); content under a CID never changes, so listings, sizes and CIDs are
cached for the life of the filesystem object (bounded).

Deliberately not done: `/ipns/`, verifying blocks on the client side (use
the trustless routes, `?format=car`, for that), writing.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import threading
import time
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterator
from urllib.parse import quote, urlsplit

import httpx
from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

from shoal.store.errors import InvalidCID
from shoal.store.ipld.cid import parse_cid

from shoal.p2p.errors import P2PError

__all__ = ["ShoalFileSystem", "ShoalFile", "GatewayNotFound", "GatewayError", "ENV_GATEWAY"]

log = logging.getLogger(__name__)

ENV_GATEWAY = "SHOAL_GATEWAY"
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 300.0
"""Between two bytes of a response: the node may be fetching the blocks from peers."""
API_TIMEOUT_S = 5.0
MAX_LISTING_BYTES = 64 * 1024 * 1024
"""A listing's JSON (the gateway lists at most 100,000 entries, ~150 bytes each)."""
MAX_ERROR_BYTES = 4096
BUSY_RETRIES = 10
"""The gateway answers 503 (Retry-After) when it runs its maximum of requests."""
MAX_RETRY_AFTER_S = 5.0
INFO_CACHE = 65_536
LISTING_CACHE = 256
DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024
START_HINT = "start one with `shoal node start --gateway 127.0.0.1:8080`"
ROUTE_HINT = (f"or pass the storage option gateway=\"http://HOST:PORT\", or set ${ENV_GATEWAY}")


class GatewayError(P2PError, OSError):
    """The gateway could not be reached, refused in a way no builtin error
    names, or sent a reply that breaks the protocol (truncated, malformed)."""


class GatewayNotFound(GatewayError, ConnectionError):
    """No gateway to read through: none given, and no running node with one."""


def normalize_gateway(url: str) -> str:
    """`http://HOST:PORT` (a bare `HOST:PORT` gets `http://`), without a trailing slash."""
    text = url.strip()
    if "://" not in text:
        text = "http://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"shoal: gateway must be http://HOST:PORT, not {url!r}")
    return text.rstrip("/")


def gateway_of_repo(repo: str | os.PathLike[str] | None = None) -> str:
    """The gateway URL of the node running on `repo` ($SHOAL_REPO, ~/.shoal).

    Asks the node's control API (`<repo>/api`: its URL and token) for `/v1/id`,
    as `shoal id --json` does; GatewayNotFound says what to start or set.
    """
    from shoal.store.persist.repo import resolve_repo_path

    path = resolve_repo_path(os.fspath(repo) if repo is not None else None)
    try:
        doc = json.loads((path / "api").read_text())
        url, token = doc["url"], doc["token"]
        if not isinstance(url, str) or not isinstance(token, str):
            raise ValueError("api file fields")
    except (OSError, ValueError, KeyError, TypeError):
        raise GatewayNotFound(f"shoal: no gateway to read through: no node is running on repo {path} "
                              f"({START_HINT}, {ROUTE_HINT})") from None
    try:
        with httpx.Client(timeout=API_TIMEOUT_S) as client:
            resp = client.get(url.rstrip("/") + "/v1/id", headers={"Authorization": f"Bearer {token}"})
            resp.raise_for_status()
            ident = resp.json()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        raise GatewayNotFound(f"shoal: the node of repo {path} does not answer at {url} ({exc}): "
                              f"{START_HINT}, {ROUTE_HINT}") from None
    gateway = ident.get("gateway") if isinstance(ident, dict) else None
    if not isinstance(gateway, str) or not gateway:
        raise GatewayNotFound(f"shoal: the node of repo {path} serves no gateway: restart it with "
                              f"`shoal node start --gateway 127.0.0.1:8080` (or [gateway] listen in "
                              f"config.toml), {ROUTE_HINT}")
    return normalize_gateway(gateway)


def split_path(path: str) -> tuple[str, tuple[str, ...]]:
    """(CID text, path segments) of a stripped `CID/a/b`; ValueError if it is not one."""
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("shoal: a path needs a CID: shoal://CID[/path]")
    head, segments = parts[0], tuple(parts[1:])
    try:
        parse_cid(head)
    except InvalidCID:
        raise ValueError(f"shoal: {head[:80]!r} is not a CID (paths are shoal://CID[/path])") from None
    for seg in segments:
        if seg in (".", "..") or "\x00" in seg:
            raise ValueError(f"shoal: path segment {seg[:80]!r} is not allowed in {path[:200]!r}")
    return head, segments


def url_path(cid: str, segments: tuple[str, ...] = ()) -> str:
    """`/ipfs/{cid}/{seg}...`, every segment percent-encoded."""
    return "/ipfs/" + quote(cid, safe="") + "".join("/" + quote(s, safe="") for s in segments)


def _safe_name(name: Any) -> bool:
    """A listing entry name that can be a path segment (a hostile directory
    could name a child `..` or `a/b`, which `get` would turn into a local path)."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\x00" not in name


def _content_range_start(value: str | None) -> tuple[int, int] | None:
    """(first, last) of `bytes first-last/total`, None if malformed."""
    if value is None or not value.startswith("bytes "):
        return None
    span = value[6:].split("/", 1)[0]
    first, sep, last = span.partition("-")
    if not sep or not first.isdigit() or not last.isdigit():
        return None
    return int(first), int(last)


def _content_range_total(value: str | None, name: str) -> int:
    """The total of `bytes first-last/total`."""
    total = (value or "").rpartition("/")[2]
    if not total.isdigit():
        raise GatewayError(f"shoal: gateway sent no usable Content-Range for {name}: {value!r}")
    return int(total)


def _etag_cid(value: str | None) -> str | None:
    if value is None:
        return None
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"') or None


class _Lru(OrderedDict[str, Any]):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.lock = threading.Lock()

    def get_item(self, key: str) -> Any:
        with self.lock:
            value = self.get(key)
            if value is not None:
                self.move_to_end(key)
            return value

    def put(self, key: str, value: Any) -> None:
        with self.lock:
            self[key] = value
            self.move_to_end(key)
            while len(self) > self.limit:
                self.popitem(last=False)


class ShoalFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """Read-only `shoal://CID[/path]` over a Shoal node's HTTP path gateway.

    Storage options: `gateway` (URL), `repo` (whose running node's gateway to
    use when no gateway is given), `timeout` (seconds between two bytes of a
    response, default 300: the node may be fetching from peers).
    """

    protocol = "shoal"
    root_marker = ""
    blocksize = DEFAULT_BLOCK_SIZE

    def __init__(self, gateway: str | None = None, repo: str | os.PathLike[str] | None = None,
                 timeout: float = READ_TIMEOUT_S, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._explicit = normalize_gateway(gateway) if gateway else None
        self._repo = repo
        self._timeout = float(timeout)
        self._gateway: str | None = self._explicit
        self._client: httpx.Client | None = None
        self._pid = 0
        self._lock = threading.Lock()
        self._infos = _Lru(INFO_CACHE)
        self._listings = _Lru(LISTING_CACHE)

    # -- where and how to talk ------------------------------------------------

    @property
    def gateway(self) -> str:
        """The gateway's base URL (found on first use when not given)."""
        with self._lock:
            if self._gateway is None:
                env = os.environ.get(ENV_GATEWAY)
                self._gateway = normalize_gateway(env) if env else gateway_of_repo(self._repo)
            return self._gateway

    def _http(self) -> httpx.Client:
        """One pooled client per process (a forked worker must not share the parent's sockets)."""
        gateway = self.gateway
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                self._client = httpx.Client(
                    base_url=gateway, follow_redirects=False,
                    timeout=httpx.Timeout(self._timeout, connect=CONNECT_TIMEOUT_S),
                    limits=httpx.Limits(max_connections=16, max_keepalive_connections=8))
                self._pid = os.getpid()
            return self._client

    def _forget_gateway(self) -> bool:
        """After a refused connection to a gateway found through the repo: look
        again next time (the node may have restarted on another port)."""
        with self._lock:
            if self._explicit is not None or os.environ.get(ENV_GATEWAY):
                return False
            self._gateway = None
            if self._client is not None:
                self._client.close()
            self._client = None
            return True

    @contextmanager
    def _stream(self, method: str, url: str, name: str, headers: dict[str, str] | None = None,
                ) -> Iterator[httpx.Response]:
        """A streamed request; 503 (busy) retried after Retry-After; transport
        errors, before or while the body is read, become GatewayError."""
        rediscovered = False
        attempt = 0
        while True:
            delay = 0.0
            try:
                with self._http().stream(method, url, headers=headers) as resp:
                    if resp.status_code == 503 and attempt < BUSY_RETRIES:
                        delay = _retry_after(resp.headers.get("retry-after"))
                    else:
                        yield resp
                        return
            except httpx.ConnectError as exc:
                if not rediscovered and self._forget_gateway():
                    rediscovered = True
                    continue
                raise GatewayError(f"shoal: gateway {self.gateway} refused the connection for {name}: {exc}") from None
            except httpx.HTTPError as exc:
                raise GatewayError(f"shoal: gateway {self.gateway} failed while reading {name}: "
                                   f"{type(exc).__name__}: {exc}") from None
            attempt += 1
            time.sleep(delay)

    def _check(self, resp: httpx.Response, name: str) -> None:
        """Raise the error a status means (the gateway's text in the message)."""
        status = resp.status_code
        if status in (200, 206):
            return
        text = _bounded_text(resp)
        if status == 404:
            raise FileNotFoundError(errno.ENOENT, f"shoal: not found: {text}", name)
        if status in (400, 414):
            raise ValueError(f"shoal: the gateway refused {name!r}: {text}")
        raise GatewayError(f"shoal: gateway {self.gateway} answered HTTP {status} for {name}: {text}")

    # -- paths ----------------------------------------------------------------

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        """`shoal://CID/a/b`, `shoal::CID/a/b`, `/CID/a/b/` and `CID/a/b` are all `CID/a/b`."""
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
        for prefix in ("shoal://", "shoal::"):
            if text.startswith(prefix):
                text = text[len(prefix):]
                break
        return "/".join(p for p in text.split("/") if p)

    @staticmethod
    def _get_kwargs_from_urls(path: str) -> dict[str, Any]:
        return {}  # the URL's "host" is the CID, never a server

    def _url(self, name: str) -> str:
        return url_path(*split_path(name))

    # -- reading --------------------------------------------------------------

    def info(self, path: Any, **kwargs: Any) -> dict[str, Any]:
        """{"name", "size", "type" ("file", "directory" or "other" for a
        symlink), "cid"} from one HEAD (cached: content under a CID never changes)."""
        name = self._strip_protocol(path)
        cached = self._infos.get_item(name)
        if cached is not None:
            return dict(cached)
        return dict(self._head(name, self._url(name)))

    def _head(self, name: str, url: str) -> dict[str, Any]:
        with self._stream("HEAD", url, name) as resp:
            if resp.status_code == 501:  # the path gateway serves no symlinks
                _bounded_text(resp)
                found: dict[str, Any] = {"name": name, "size": 0, "type": "other", "cid": None}
            else:
                self._check(resp, name)
                found = _info_from_headers(name, resp.headers)
                resp.read()  # the empty body's end: without it the connection is not reused
        self._infos.put(name, found)
        return found

    def exists(self, path: Any, **kwargs: Any) -> bool:
        """False for a path that is not there or cannot be one; a gateway that
        cannot be reached is an error, not a False (fsspec's default hides it)."""
        try:
            self.info(path)
        except (FileNotFoundError, ValueError):
            return False
        return True

    def ls(self, path: Any, detail: bool = True, **kwargs: Any) -> list[Any]:
        """A directory's entries (a file: itself). With `detail`, an entry the
        listing does not describe (a multi-block file, a directory) costs one HEAD."""
        name = self._strip_protocol(path)
        known = self._infos.get_item(name)
        entries = None if known is not None and known["type"] != "directory" else self._listing(name)
        if entries is None:  # a file
            return [self.info(name)] if detail else [name]
        if not detail:
            return [f"{name}/{e['name']}" for e in entries]
        out = []
        for e in entries:
            full = f"{name}/{e['name']}"
            if e["kind"] == "file" and isinstance(e["size"], int):
                found = {"name": full, "size": e["size"], "type": "file", "cid": e["cid"]}
                self._infos.put(full, found)
            else:
                found = self._infos.get_item(full) or self._head(full, url_path(e["cid"]))
                found = dict(found, name=full)
                self._infos.put(full, found)
            out.append(dict(found))
        return out

    def _listing(self, name: str) -> list[dict[str, Any]] | None:
        """The raw listing entries of a directory, None if `name` is a file."""
        cached = self._listings.get_item(name)
        if cached is not None:
            return list(cached)
        # A listing ignores Range; a file then answers one byte, not all of them.
        with self._stream("GET", self._url(name), name, {"Range": "bytes=0-0"}) as resp:
            if resp.status_code == 416:  # an empty file
                _bounded_text(resp)
                self._head(name, self._url(name))
                return None
            self._check(resp, name)
            if "accept-ranges" in resp.headers:
                found = _info_from_headers(name, resp.headers)
                if resp.status_code == 206:
                    found["size"] = _content_range_total(resp.headers.get("content-range"), name)
                    _read_bounded(resp, 1, f"the first byte of {name}")  # to the end, so the connection is reused
                self._infos.put(name, found)
                return None
            body = _read_bounded(resp, MAX_LISTING_BYTES, f"the listing of {name}")
        entries = _parse_listing(body, name)
        self._listings.put(name, entries)
        return list(entries)

    def cat_file(self, path: Any, start: int | None = None, end: int | None = None,
                 **kwargs: Any) -> bytes:
        """Bytes `start` to `end` (exclusive; negative: from the end; None: the
        edges) in one Range GET, never reading more than that off the wire."""
        name = self._strip_protocol(path)
        if (start is not None and start < 0) or (end is not None and end < 0):
            size = self.size(name)
            if start is not None and start < 0:
                start = max(0, size + start)
            if end is not None and end < 0:
                end = max(0, size + end)
        return self._read_range(name, start or 0, end)

    def _read_range(self, name: str, start: int, end: int | None) -> bytes:
        if end is not None and end <= start:
            return b""
        headers = {}
        if start > 0 or end is not None:
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self._stream("GET", self._url(name), name, headers) as resp:
            if resp.status_code == 416:
                return b""  # starts at or past the end, like reading past EOF
            self._check(resp, name)
            if "accept-ranges" not in resp.headers:
                raise IsADirectoryError(errno.EISDIR, "shoal: a directory, not a file", name)
            if resp.status_code == 206:
                span = _content_range_start(resp.headers.get("content-range"))
                if span is None or span[0] != start or span[1] < start or (end is not None and span[1] >= end):
                    raise GatewayError(f"shoal: gateway answered bytes {resp.headers.get('content-range')!r} "
                                       f"for {name} when asked for {headers['Range']!r}")
                # the body is the window: read it to its end, so the connection goes back to the pool
                return _read_window(resp, 0, span[1] - span[0] + 1, name, drain=True)
            # the whole file (no Range asked, or the gateway ignored it): only as far as needed
            total = _content_length(resp)
            stop = total if end is None else min(end, total)
            return _read_window(resp, start, max(0, stop - start), name, drain=stop == total)

    def _open(self, path: Any, mode: str = "rb", block_size: int | None = None,
              autocommit: bool = True, cache_options: dict[str, Any] | None = None,
              **kwargs: Any) -> "ShoalFile":
        name = self._strip_protocol(path)
        if mode != "rb":
            raise PermissionError(errno.EROFS, f"shoal:// is read-only: cannot open with mode {mode!r} "
                                               "(add content with `shoal put`)", name)
        found = self.info(name)
        if found["type"] == "directory":
            raise IsADirectoryError(errno.EISDIR, "shoal: a directory, not a file", name)
        if found["type"] != "file":
            raise GatewayError(f"shoal: {name} is a {found['type']} the gateway does not serve")
        return ShoalFile(self, name, mode, block_size or self.blocksize, autocommit,
                         cache_options=cache_options, size=found["size"], **kwargs)

    def ukey(self, path: Any) -> str:
        """The CID: content-addressed, so it changes exactly when the bytes do."""
        return str(self.info(path)["cid"])

    def invalidate_cache(self, path: str | None = None) -> None:
        """Nothing under a CID changes; forgetting only frees memory."""
        for cache in (self._infos, self._listings):
            with cache.lock:
                cache.clear()
        super().invalidate_cache(path)

    # -- everything that would write ------------------------------------------

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise PermissionError(errno.EROFS, "shoal:// is read-only (add content with `shoal put`)")

    mkdir = makedirs = rmdir = rm_file = rm = _rm = touch = _read_only
    cp_file = copy = mv = pipe_file = pipe = put_file = put = _read_only


class ShoalFile(AbstractBufferedFile):  # type: ignore[misc]  # fsspec is untyped
    """A file opened for reading: each buffer fill is one Range GET."""

    def _fetch_range(self, start: int, end: int) -> bytes:
        fs: ShoalFileSystem = self.fs
        return fs._read_range(self.path, start, end)


def _info_from_headers(name: str, headers: httpx.Headers) -> dict[str, Any]:
    """A file answers with Accept-Ranges and Content-Length; a directory (its
    JSON listing) without Accept-Ranges. The Etag is the CID."""
    cid = _etag_cid(headers.get("etag"))
    if "accept-ranges" in headers:
        length = headers.get("content-length", "")
        if not length.isdigit():
            raise GatewayError(f"shoal: gateway sent no usable Content-Length for {name}")
        return {"name": name, "size": int(length), "type": "file", "cid": cid}
    return {"name": name, "size": 0, "type": "directory", "cid": cid}


def _parse_listing(body: bytes, name: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(body)
        raw = doc["entries"]
        if not isinstance(raw, list):
            raise TypeError("entries")
    except (ValueError, KeyError, TypeError):
        raise GatewayError(f"shoal: gateway sent a malformed listing for {name}") from None
    entries = []
    for e in raw:
        if not isinstance(e, dict) or not isinstance(e.get("cid"), str):
            raise GatewayError(f"shoal: gateway sent a malformed listing entry for {name}")
        if not _safe_name(e.get("name")):
            log.warning("shoal: skipping an entry of %s whose name cannot be a path segment: %r",
                        name, str(e.get("name"))[:80])
            continue
        size = e.get("size")
        entries.append({"name": e["name"], "cid": e["cid"], "kind": str(e.get("kind")),
                        "size": size if isinstance(size, int) and size >= 0 else None})
    return entries


def _retry_after(value: str | None) -> float:
    try:
        return min(MAX_RETRY_AFTER_S, max(0.05, float(value or 1)))
    except ValueError:
        return 1.0


def _content_length(resp: httpx.Response) -> int:
    value = resp.headers.get("content-length", "")
    if not value.isdigit():
        raise GatewayError("shoal: gateway sent no usable Content-Length")
    return int(value)


def _bounded_text(resp: httpx.Response) -> str:
    data = b""
    for chunk in resp.iter_bytes():
        data += chunk
        if len(data) >= MAX_ERROR_BYTES:
            break
    return data[:MAX_ERROR_BYTES].decode("utf-8", "replace").strip() or f"HTTP {resp.status_code}"


def _read_bounded(resp: httpx.Response, limit: int, what: str) -> bytes:
    out = bytearray()
    for chunk in resp.iter_bytes():
        out += chunk
        if len(out) > limit:
            raise GatewayError(f"shoal: {what} is larger than {limit} bytes")
    return bytes(out)


def _read_window(resp: httpx.Response, skip: int, want: int, name: str, drain: bool) -> bytes:
    """`want` bytes after the first `skip` of the body. With `drain` the window
    ends the body: read on to its end (nothing more may come), so the
    connection is reused; without, stop reading once there (the connection is
    then closed rather than reading bytes nobody asked for)."""
    out = bytearray()
    for chunk in resp.iter_bytes():
        if skip:
            drop = min(skip, len(chunk))
            chunk, skip = chunk[drop:], skip - drop
        if len(out) + len(chunk) > want:
            if drain:
                raise GatewayError(f"shoal: gateway sent more than the {want} bytes asked of {name}")
            out += chunk[: want - len(out)]
        else:
            out += chunk
        if len(out) >= want and not drain:
            return bytes(out)
    if len(out) < want:
        raise GatewayError(f"shoal: gateway sent {len(out)} of {want} bytes of {name} (truncated)")
    return bytes(out)
