"""A libp2p host: listen and dial over TCP, serving ping and identify on every connection.

The registry `handlers` (protocol id -> coroutine taking a `YamuxStream`)
is shared by all connections, so a service can add its protocol at any time.
Every connection runs in the host's nursery; `serve` reports its listening
addresses through `task_status.started()`.
The node (`shoal.p2p.net.node`) runs every connection through a host: it
accepts and upgrades sockets itself (admission decides first) and hands
them to `run_connection`; `serve` and `dial` are the standalone paths.
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import trio

from shoal.p2p.errors import P2PError
from shoal.p2p.libp2p.connection import (
    Libp2pConnection, StreamHandler, YamuxStream, upgrade_inbound, upgrade_outbound,
)
from shoal.p2p.libp2p.identify import (
    IDENTIFY_PROTOCOL, PING_PROTOCOL, PROTOCOL_VERSION, IdentifyInfo, agent_version,
    encode_multiaddr, ping_handler, send_identify,
)
from shoal.p2p.libp2p.yamux import DEFAULT_WINDOW
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.secure.multiaddr import Multiaddr
from shoal.p2p.secure.pnet import SwarmKey
from shoal.p2p.secure.secure_stream import DEFAULT_HANDSHAKE_TIMEOUT

__all__ = ["Libp2pHost"]

log = logging.getLogger("shoal.libp2p")


def _as_multiaddr(addr: tuple[str, int]) -> Multiaddr:
    host = addr[0]
    return Multiaddr(host, addr[1], None, "ip6" if ":" in host else "ip4")


class Libp2pHost:
    """One identity's libp2p endpoint: connections in `nursery`, shared handlers."""

    def __init__(
        self,
        identity: Identity,
        nursery: trio.Nursery,
        *,
        swarm_key: SwarmKey | None = None,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_connections: int = 256,
        receive_window: int = DEFAULT_WINDOW,
        security: Sequence[str] | None = None,
    ) -> None:
        """`security`: the Noise protocol ids to offer and accept (default: by this CPU,
        `shoal.p2p.secure.cipher_choice`); tests pin it to meet either cipher."""
        self.identity = identity
        self.security = security
        self.nursery = nursery
        self.swarm_key = swarm_key
        self.handshake_timeout = handshake_timeout
        self.receive_window = receive_window  # per stream: what one stream may buffer
        self.listen_addrs: list[Multiaddr] = []
        self.connections: set[Libp2pConnection] = set()
        self.on_connection: Callable[[Libp2pConnection], None] | None = None
        self._slots = trio.Semaphore(max_connections)
        self.handlers: dict[str, StreamHandler] = {
            PING_PROTOCOL: ping_handler,
            IDENTIFY_PROTOCOL: self._identify_handler,
        }

    @property
    def peer_id(self) -> PeerId:
        return self.identity.peer_id

    def identify_info(self, conn: Libp2pConnection | None) -> IdentifyInfo:
        """What we tell a peer on `/ipfs/id/1.0.0` (its address as we see it included)."""
        observed = None
        if conn is not None and conn.remote_addr is not None:
            observed = encode_multiaddr(_as_multiaddr(conn.remote_addr))
        return IdentifyInfo(
            public_key=self.identity.public_key_proto,
            listen_addrs=tuple(encode_multiaddr(a) for a in self.listen_addrs),
            protocols=tuple(sorted(self.handlers)),
            observed_addr=observed,
            protocol_version=PROTOCOL_VERSION,
            agent_version=agent_version(),
        )

    async def _identify_handler(self, stream: YamuxStream) -> None:
        await send_identify(stream, self.identify_info(stream.conn))

    async def serve(
        self, host: str = "127.0.0.1", port: int = 0,
        *, task_status: trio.TaskStatus[list[Multiaddr]] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept libp2p connections until cancelled; reports the bound addresses."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        bound = []
        for listener in listeners:
            sockname = listener.socket.getsockname()
            bound.append(_as_multiaddr((str(sockname[0]), int(sockname[1]))))
        self.listen_addrs.extend(bound)
        task_status.started([a.with_peer(self.peer_id) for a in bound])
        await trio.serve_listeners(self._accept, listeners)

    async def _accept(self, tcp: trio.SocketStream) -> None:
        if self._slots.value == 0:
            await tcp.aclose()
            return
        async with self._slots:
            try:
                conn = await upgrade_inbound(tcp, self.identity, self.handlers,
                                             swarm_key=self.swarm_key,
                                             timeout=self.handshake_timeout,
                                             receive_window=self.receive_window,
                                             security=self.security)
            except (P2PError, trio.TooSlowError, trio.BrokenResourceError,
                    trio.ClosedResourceError, OSError) as exc:
                log.debug("inbound upgrade failed: %s", exc)
                return
            await self._run(conn)

    async def run_connection(self, conn: Libp2pConnection,
                             task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve an upgraded connection (ours or a caller's) until it ends, tracked in `connections`.

        For a caller that upgrades connections itself (the node: admission
        decides before a connection runs), so every connection the host
        serves gets the same handlers, identify and `on_connection`.
        """
        await self._run(conn, task_status)

    async def _run(self, conn: Libp2pConnection,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.connections.add(conn)
        try:
            if self.on_connection is not None:
                self.on_connection(conn)
            await conn.run(task_status=task_status)
        finally:
            self.connections.discard(conn)

    async def dial(self, addr: Multiaddr | str) -> Libp2pConnection:
        """Connect and upgrade; the connection then runs in the host's nursery.

        With a `/p2p/` part, the remote must prove that PeerId.
        """
        if isinstance(addr, str):
            addr = Multiaddr.parse(addr)
        tcp = await trio.open_tcp_stream(addr.host, addr.port)
        conn = await upgrade_outbound(tcp, self.identity, self.handlers,
                                      expected_peer=addr.peer_id, swarm_key=self.swarm_key,
                                      timeout=self.handshake_timeout,
                                      receive_window=self.receive_window,
                                      security=self.security)
        await self.nursery.start(self._run, conn)
        return conn
