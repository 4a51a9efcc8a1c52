"""The control API answers 400 JSON to any request body, however nested (issue 12).

Nested JSON used to reach `json.loads`, whose recursion ran out: a
RecursionError escaped the ASGI app and the client got a bare HTTP 500.
Fuzz-style: hypothesis builds nested documents and mangled bodies, and every
one gets a JSON answer with status 200, 400 or 413-like 400, never a crash.
"""

from __future__ import annotations

import json
from typing import Any

import trio
from hypothesis import given, settings, strategies as st

from shoal.p2p.net.api import MAX_BODY_BYTES, MAX_JSON_DEPTH, ControlApi, json_depth

TOKEN = "t0ken"


async def _call(app: ControlApi, body: bytes, query: bytes = b"") -> tuple[int, Any]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/echo", "query_string": query,
             "headers": [(b"authorization", f"Bearer {TOKEN}".encode())]}
    await app(scope, receive, send)
    status = sent[0]["status"]
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(payload)


def _app() -> ControlApi:
    app = ControlApi(TOKEN)

    async def echo(params: dict[str, Any]) -> Any:
        return {"keys": sorted(params)}

    app.json_route("POST", "/v1/echo", echo)
    return app


def _nest(depth: int, opener: str, inner: str = "1") -> bytes:
    closer = "]" if opener == "[" else "}"
    prefix = "[" if opener == "[" else '{"a":'
    return (prefix * depth + inner + closer * depth).encode()


async def test_deep_nesting_is_a_400_json_answer_not_a_500() -> None:
    app = _app()
    for body in (b"[" * (MAX_BODY_BYTES - 1), _nest(30_000, "["), _nest(10_000, "{"),
                 b'{"path": ' + _nest(5_000, "[") + b"}"):
        status, doc = await _call(app, body)
        assert status == 400, doc
        assert doc["kind"] == "ApiError" and "deeper" in doc["error"]


async def test_ordinary_requests_still_work() -> None:
    status, doc = await _call(_app(), b'{"path": "/tmp/x [with] {brackets}", "replicas": 3}')
    assert (status, doc) == (200, {"keys": ["path", "replicas"]})
    status, doc = await _call(_app(), b'{"a": [[["ok"]]]}')
    assert status == 200


async def test_a_query_string_that_is_not_utf8_is_a_400() -> None:
    status, doc = await _call(_app(), b"", query=b"cid=\xff\xfe")
    assert status == 400 and doc["kind"] == "ApiError"


_json = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8)),
                     lambda inner: st.one_of(st.lists(inner, max_size=3),
                                             st.dictionaries(st.text(max_size=4), inner, max_size=3)),
                     max_leaves=60)


@settings(max_examples=200, deadline=None)
@given(doc=_json, depth=st.integers(0, 3000), cut=st.integers(0, 50), noise=st.binary(max_size=20))
def test_fuzz_every_body_gets_a_json_answer(doc: object, depth: int, cut: int, noise: bytes) -> None:
    body = b'{"x": ' + b"[" * depth + json.dumps(doc).encode() + b"]" * depth + b"}"
    for candidate in (body, body[: max(0, len(body) - cut)] + noise):
        status, answer = trio.run(_call, _app(), candidate)
        assert status in (200, 400), (status, answer)
        if status == 200:
            assert json_depth(candidate) <= MAX_JSON_DEPTH
