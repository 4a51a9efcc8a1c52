"""IPFS trustless gateways as a block source: the httpx driver on trio.

One `GatewayClient` per fetch, over one httpx.AsyncClient (httpx runs on
trio through anyio; a trio cancellation closes the request). Each call
fetches ONE raw block: the response's head is judged, the body streamed
into a `BodyReader` that stops at the bound, the bytes hash-checked (in a
worker thread), all by the sans-IO rules of shoal.p2p.exchange.gateway_source.
The fetch planner keeps up to its per-holder cap of requests outstanding
per gateway (a gateway is a holder); at most `PER_GATEWAY` of them are on
the wire at once, the rest wait their turn here, so the next request is
ready the moment one ends. A busy answer (429/503, as a Shoal gateway gives
past its request cap) is retried after its Retry-After, within the block's
time limit.
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

PER_GATEWAY = 8
"""Requests on the wire to one gateway at once: a Shoal gateway serves 8 by
default ([gateway] max_requests) and kubo's is similar, so more only earns 503s."""
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
                 timeout: float = BLOCK_TIMEOUT_S, per_gateway: int = PER_GATEWAY) -> None:
        self._client = client
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.per_gateway = per_gateway
        self._slots: dict[Gateway, trio.Semaphore] = {}

    async def fetch_block(self, gateway: Gateway, cid: CID) -> GatewayAnswer:
        """Ask `gateway` for `cid`; the block only if its hash matches.

        Never raises for what the gateway or the network does: every outcome
        is an answer the fetch planner understands (a lie is "corrupt").
        """
        data: bytes | None = None
        slots = self._slots.setdefault(gateway, trio.Semaphore(self.per_gateway))
        with trio.move_on_after(self.timeout):
            try:
                while data is None:
                    try:
                        async with slots:
                            data = await self._read(gateway, cid)
                    except BadGateway as exc:
                        if exc.kind != "busy":
                            raise
                        await trio.sleep(exc.retry_after)  # outside the slot: others may go first
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
    """A client with room for `per_gateway` (at most `PER_GATEWAY`) requests on
    the wire to each of `gateways`.

    No environment proxies (trust_env=False): a LAN gateway must not be sent
    through a proxy meant for the internet. No redirects: the URL the user
    gave is the source; a redirect is a failed request.
    """
    each = max(1, min(per_gateway, PER_GATEWAY))
    most = gateways * each
    timeout = httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False,
                                 follow_redirects=False) as client:
        yield GatewayClient(client, per_gateway=each)
