"""Run a node as a foreground service: repo lock, identity, API, api file, signals.

Start-up order: lock the repo, load the identity, open the peer listeners,
start the control API, and only then write `<repo>/api` (address + token,
mode 0600, temp + rename) — so a client that finds the file finds a node
that answers. On SIGINT/SIGTERM: stop accepting, let in-flight store writes
finish (they run in threads that trio waits for), remove the api file, exit 0.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
from pathlib import Path
from typing import Any, Callable

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from shoal.store.persist.durable import write_durably
from shoal.store.persist.repo import Repo

from shoal.p2p.errors import P2PError
from shoal.p2p.secure.identity import Identity
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.net.node_api import build_api

log = logging.getLogger("shoal.service")


def parse_api_bind(text: str) -> tuple[str, int]:
    """HOST:PORT for the control API; only loopback hosts are allowed."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise P2PError(f"--api expects HOST:PORT, got {text!r}")
    host = host.strip("[]")
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise P2PError(f"the control API must listen on loopback, not {host!r}")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


def parse_gateway_bind(text: str) -> tuple[str, int]:
    """HOST:PORT for the HTTP gateway; any host (0.0.0.0 serves the LAN), as asked."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise P2PError(f"--gateway expects HOST:PORT, got {text!r}")
    host = host.strip("[]")
    return ("127.0.0.1" if host == "localhost" else host), int(port)


async def _start_gateway(nursery: trio.Nursery, node: Node, gateway: Any, shutdown: trio.Event) -> None:
    """Serve the read-only gateway (shoal.p2p.gateway.app) on its own address;
    record its URL where `/v1/id` finds it."""
    from shoal.p2p.gateway.app import GatewayApp

    config = HypercornConfig()
    host = f"[{gateway.host}]" if ":" in gateway.host else gateway.host
    config.bind = [f"{host}:{gateway.port}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("shoal.gateway.server")
    config.graceful_timeout = 5
    app: Any = GatewayApp(node, gateway)
    binds = await nursery.start(lambda task_status: serve(
        app, config, shutdown_trigger=shutdown.wait, task_status=task_status))
    node.options.extra["gateway_url"] = binds[0]
    log.info("gateway listening on %s (at most %d requests at once)", binds[0], gateway.max_requests)


def write_api_file(path: Path, url: str, token: str) -> None:
    """Write `<repo>/api` (mode 0600: it holds the token) durably (persist.durable)."""
    write_durably(path, json.dumps({"url": url, "token": token, "pid": os.getpid()}).encode(), mode=0o600)


async def run_node(
    repo: Repo,
    options: NodeOptions,
    api_bind: tuple[str, int],
    *,
    on_ready: Callable[[Node], None] | None = None,
    setup: Callable[[Node], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. The caller holds the repo open (and locked)."""
    identity = Identity.load_or_create(repo.identity_path)
    node = Node(repo, identity, options)
    if setup is not None:
        setup(node)
    token = secrets.token_urlsafe(32)
    api_file = repo.api_path
    shutdown = trio.Event()
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(node.run)
                config = HypercornConfig()
                config.bind = [f"{api_bind[0]}:{api_bind[1]}"]
                config.accesslog = None
                config.errorlog = logging.getLogger("shoal.api.server")
                config.graceful_timeout = 5
                app: Any = build_api(node, token)  # a plain ASGI callable; hypercorn's types are narrower
                binds = await nursery.start(lambda task_status: serve(
                    app, config, shutdown_trigger=shutdown.wait, task_status=task_status))
                gateway = options.extra.get("gateway")
                if gateway is not None:
                    await _start_gateway(nursery, node, gateway, shutdown)
                write_api_file(api_file, binds[0], token)
                if on_ready is not None:
                    on_ready(node)
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    break
                shutdown.set()
                node.cancel()
                nursery.cancel_scope.deadline = trio.current_time() + 10
        finally:
            api_file.unlink(missing_ok=True)
