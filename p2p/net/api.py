"""The node's local control API: a tiny ASGI app served by hypercorn on trio.

Why ASGI + hypercorn: HTTP parsing is done by an established server
(hypercorn runs natively under trio); this module only routes requests to
the node's operations and turns results into JSON. It listens on loopback
only and every request must carry `Authorization: Bearer <token>`, the token
being the one written to `<repo>/api` (mode 0600) when the node is ready.

Routes (all JSON unless noted):
  GET  /v1/id                      GET /v1/peers                 GET /v1/stats
  GET  /v1/node/status             (uptime, peers, worst event-loop stall of the last minute)
  POST /v1/put      {path, profile, chunker, replicas, follow_symlinks}
  POST /v1/get      {cid, output, max_size, umask, gateways}   (umask: the client's, for the files' modes;
                   gateways: trustless gateway URLs asked beside peers and [fetch] gateways)
  GET  /v1/cat?cid=&offset=&length=&tensor=   (streams raw bytes)
  GET  /v1/ls[?cid=]  (streams NDJSON rows; a late failure is a last `{"error": ...}` row)
  GET  /v1/pins[?cid=]
  POST /v1/pin/add {cid}           POST /v1/pin/rm {cid}
  POST /v1/gc                      POST /v1/verify
  POST /v1/car/export {cid, output}  POST /v1/car/import {path}
  GET  /v1/status?cid=             POST /v1/audit {cid}
  GET  /v1/energy
Errors: `{"error": message, "hint": hint, "kind": ExceptionName}` with a 4xx/5xx status.

A client that goes away (Ctrl-C of `shoal put`/`get`, a dropped connection)
cancels its request: every handler runs in a cancel scope that a watcher
task cancels on the ASGI `http.disconnect` event, and handlers' thread work
(shoal.p2p.net.thread_work.run_sync_cancellable) stops at its next block. Work a client no
longer waits for never runs to completion, so nobody can make the node
write or list without bound by asking and hanging up.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from contextlib import aclosing
from typing import Any, AsyncGenerator, AsyncIterator, Awaitable, Callable, Protocol
from urllib.parse import parse_qs

import trio

from shoal.store.errors import BlockNotFound, InvalidCID, NotPinned, StoreError

from shoal.p2p.errors import P2PError

log = logging.getLogger("shoal.api")

MAX_BODY_BYTES = 64 * 1024  # requests carry paths and CIDs, never data
MAX_JSON_DEPTH = 16  # a request is one flat object of strings and numbers; room to spare

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
JsonHandler = Callable[[dict[str, Any]], Awaitable[Any]]


class ByteChunks(Protocol):
    """What a stream handler returns: async chunks that can be closed early
    (an async generator, or NdjsonStream around one)."""

    def __aiter__(self) -> AsyncIterator[bytes]: ...

    async def __anext__(self) -> bytes: ...

    async def aclose(self) -> None: ...


StreamHandler = Callable[[dict[str, Any]], Awaitable[ByteChunks]]


class ApiError(P2PError):
    """A bad API request (missing field, wrong type); maps to HTTP 400."""


def _status_for(exc: BaseException) -> int:
    if isinstance(exc, (BlockNotFound, NotPinned)):
        return 404
    if isinstance(exc, (ApiError, InvalidCID)):
        return 400
    return 409 if isinstance(exc, (StoreError, P2PError)) else 500


class ControlApi:
    """Routes: (method, path) -> handler taking the merged query/body params."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()
        self._json_routes: dict[tuple[str, str], JsonHandler] = {}
        self._stream_routes: dict[tuple[str, str], StreamHandler] = {}

    def json_route(self, method: str, path: str, handler: JsonHandler) -> None:
        self._json_routes[(method, path)] = handler

    def stream_route(self, method: str, path: str, handler: StreamHandler) -> None:
        self._stream_routes[(method, path)] = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        if not self._authorized(scope):
            await _send_json(send, 401, {"error": "missing or wrong API token", "kind": "Unauthorized"})
            return
        key = (scope["method"], scope["path"])
        try:
            params = await _params(scope, receive)
        except (StoreError, P2PError) as exc:
            await _send_error(send, exc)
            return
        if await run_until_client_leaves(receive, send, lambda s: self._dispatch(key, scope, params, s)):
            log.info("%s %s: client went away, request cancelled", scope["method"], scope["path"])

    async def _dispatch(self, key: tuple[str, str], scope: Scope, params: dict[str, Any], send: Send) -> None:
        try:
            if key in self._json_routes:
                result = await self._json_routes[key](params)
                await _send_json(send, 200, result)
            elif key in self._stream_routes:
                chunks = await self._stream_routes[key](params)
                await _send_stream(send, chunks, _content_type(chunks))
            else:
                await _send_json(send, 404, {"error": f"no route {scope['method']} {scope['path']}", "kind": "NotFound"})
        except (StoreError, P2PError) as exc:
            await _send_error(send, exc)
        except OSError as exc:
            await _send_json(send, 409, {"error": f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "),
                                         "hint": "", "kind": "OSError", "errno": exc.errno})

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization" and value.startswith(b"Bearer "):
                return hmac.compare_digest(value[7:], self._token)
        return False


async def serve_lifespan(receive: Receive, send: Send) -> None:
    """Answer an ASGI lifespan scope (nothing to set up or tear down)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return

async def run_until_client_leaves(receive: Receive, send: Send, serve: Callable[[Send], Awaitable[None]]) -> bool:
    """Run `serve(send)`; cancel it if the client disconnects before the last
    byte of its answer went out. True if it was cancelled that way.

    Why: work for a client that left (a fetch, an export, a put) must stop
    (issue 12). A client that hangs up once answered cancels nothing: what
    still runs then is the end of work it already has every byte of (the
    last stores, a cache pin), which must not be left half done.
    """
    answered = False

    async def send_tracked(message: dict[str, Any]) -> None:
        nonlocal answered
        if message["type"] == "http.response.body" and not message.get("more_body", False):
            answered = True
        await send(message)

    async def watch_disconnect(work: trio.CancelScope) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        if not answered:
            work.cancel()

    work = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_disconnect, work)
        with work:
            await serve(send_tracked)
        nursery.cancel_scope.cancel()  # served: stop watching
    return work.cancelled_caught


def json_depth(body: bytes) -> int:
    """How deeply arrays and objects nest in a JSON text (strings skipped).

    Checked before `json.loads`, whose recursive decoder raises
    RecursionError (and so an HTTP 500) on 64 KiB of `[`: issue 12.
    Malformed text gets some number; json.loads judges it afterwards.
    """
    depth = deepest = 0
    for token in _BRACKETS.findall(_STRINGS.sub(b'""', body)):
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(rb"[\[\]{}]")


async def _params(scope: Scope, receive: Receive) -> dict[str, Any]:
    try:
        query = scope.get("query_string", b"").decode()
    except UnicodeDecodeError:
        raise ApiError("query string is not UTF-8") from None
    params: dict[str, Any] = {k: v[-1] for k, v in parse_qs(query).items()}
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise ApiError("request body too large")
        if not message.get("more_body"):
            break
    if body:
        if json_depth(bytes(body)) > MAX_JSON_DEPTH:
            raise ApiError(f"request body nests deeper than {MAX_JSON_DEPTH} levels")
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError):
            raise ApiError("request body is not JSON") from None
        if not isinstance(doc, dict):
            raise ApiError("request body must be a JSON object")
        params.update(doc)
    return params


async def _send_json(send: Send, status: int, doc: Any) -> None:
    body = json.dumps(doc).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, exc: BaseException) -> None:
    await _send_json(send, _status_for(exc), {
        "error": str(exc) or type(exc).__name__,
        "hint": getattr(exc, "hint", ""),
        "kind": type(exc).__name__,
    })


class NdjsonStream:
    """A stream handler's result that is newline-delimited JSON, not raw bytes."""

    content_type = b"application/x-ndjson"

    def __init__(self, chunks: AsyncGenerator[bytes, None]) -> None:
        self._chunks = chunks

    def __aiter__(self) -> "NdjsonStream":
        return self

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        await self._chunks.aclose()


def _content_type(chunks: Any) -> bytes:
    return chunks.content_type if isinstance(chunks, NdjsonStream) else b"application/octet-stream"


async def _send_stream(send: Send, chunks: ByteChunks, content_type: bytes) -> None:
    # aclosing: the handler's generator may hold the store guard; it is
    # released here, at once, whether the response ends, fails or is
    # cancelled, not whenever the garbage collector finalises it.
    async with aclosing(chunks):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type)]})
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def param(params: dict[str, Any], name: str, kind: type = str, default: Any = ..., ) -> Any:
    """A typed request parameter; ApiError (HTTP 400) if missing or of the wrong type."""
    if name not in params or params[name] is None:
        if default is ...:
            raise ApiError(f"missing parameter: {name}")
        return default
    value = params[name]
    if kind is int:
        if isinstance(value, bool):
            raise ApiError(f"parameter {name} must be an integer")
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ApiError(f"parameter {name} must be an integer") from None
        if value < 0:
            raise ApiError(f"parameter {name} must not be negative")
        return value
    if not isinstance(value, kind):
        raise ApiError(f"parameter {name} must be a {kind.__name__}")
    return value
