"""IPFS trustless gateways as a block source: the httpx driver on trio.

One `GatewayClient` per fetch, over one httpx.AsyncClient (httpx runs on
trio through anyio; a trio cancellation closes the request). Each call
fetches ONE raw block: the response's head is judged, the body streamed
into a `BodyReader` that stops at the bound, the bytes hash-checked (in a
worker thread), all by the sans-IO rules of shoal.p2p.exchange.gateway_source.
Concurrency is the fetch planner's per-holder in-flight cap (a gateway is a
holder); the connection pool only has room for it.
"""

from __future__ import annotations

import contextlib
from typing import AsyncIterator, Literal

import httpx
import trio

from shoal.store.errors import HashMismatch
from shoal.store.ipld.cid import CID

from shoal.p2p.exchange.gateway_source import (
    MAX_GATEWAY_BLOCK_BYTES, BadGateway, BodyReader, Gateway, block_url, check_head, request_headers,
    verify_gateway_block,
)

__all__ = ["GatewayAnswer", "GatewayClient", "open_gateway_client"]

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 20.0
BLOCK_TIMEOUT_S = 30.0
"""A whole block request, head to last byte: a gateway that trickles a block
in tiny chunks (each within the read timeout) still ends here."""

GatewayAnswer = tuple[Literal["block", "missing", "fail", "corrupt", "timeout"], "bytes | None", str]
"""(kind, the verified block for "block", why otherwise)."""


class GatewayClient:
    """Fetches single verified raw blocks from gateways."""

    def __init__(self, client: httpx.AsyncClient, max_bytes: int = MAX_GATEWAY_BLOCK_BYTES,
                 timeout: float = BLOCK_TIMEOUT_S) -> None:
        self._client = client
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def fetch_block(self, gateway: Gateway, cid: CID) -> GatewayAnswer:
        """Ask `gateway` for `cid`; the block only if its hash matches.

        Never raises for what the gateway or the network does: every outcome
        is an answer the fetch planner understands (a lie is "corrupt").
        """
        data: bytes | None = None
        with trio.move_on_after(self.timeout):
            try:
                data = await self._read(gateway, cid)
            except BadGateway as exc:
                return exc.kind, None, f"gateway {gateway} {exc}"  # type: ignore[return-value]
            except httpx.TimeoutException:
                return "timeout", None, f"gateway {gateway} timed out on {cid}"
            except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
                return "fail", None, f"gateway {gateway} failed on {cid}: {exc or type(exc).__name__}"
        if data is None:
            return "timeout", None, f"gateway {gateway} took over {self.timeout:g}s for {cid}"
        try:
            await trio.to_thread.run_sync(verify_gateway_block, cid, data)
        except HashMismatch:
            return "corrupt", None, f"gateway {gateway} sent bytes that do not match {cid}"
        except BadGateway as exc:
            return exc.kind, None, f"gateway {gateway}: {exc}"  # type: ignore[return-value]
        return "block", data, ""

    async def _read(self, gateway: Gateway, cid: CID) -> bytes:
        async with self._client.stream("GET", block_url(gateway, cid), headers=request_headers()) as resp:
            declared = check_head(cid, resp.status_code, resp.headers, self.max_bytes)
            body = BodyReader(cid, declared, self.max_bytes)
            # aiter_raw: the bytes as sent; we asked for no encoding and
            # check_head refused any, so nothing is inflated past the bound.
            async for chunk in resp.aiter_raw():
                body.feed(chunk)
            return body.finish()


@contextlib.asynccontextmanager
async def open_gateway_client(gateways: int, per_gateway: int) -> AsyncIterator[GatewayClient]:
    """A client with pool room for `per_gateway` requests to each of `gateways`.

    No environment proxies (trust_env=False): a LAN gateway must not be sent
    through a proxy meant for the internet. No redirects: the URL the user
    gave is the source; a redirect is a failed request.
    """
    most = max(1, gateways * per_gateway)
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False,
                                 follow_redirects=False) as client:
        yield GatewayClient(client)
