"""Thin trio driver for the private-swarm layer: a `trio.abc.Stream` over `PnetCipher`.

It sits between the TCP stream and Noise (`shoal.p2p.secure.secure_stream`), so every
byte on the wire, the Noise handshake included, is XORed with the XSalsa20
keystream. All protocol decisions live in `shoal.p2p.secure.pnet`; this module only moves
bytes and refuses concurrent use (two sends at once would interleave the
keystream and corrupt the connection for good).
"""

from __future__ import annotations

import trio

from shoal.p2p.secure.pnet import PnetCipher, SwarmKey

__all__ = ["PnetStream", "protect"]


class PnetStream(trio.abc.Stream):
    """`transport` with every byte in both directions passed through a `PnetCipher`."""

    def __init__(self, transport: trio.abc.Stream, cipher: PnetCipher) -> None:
        self.transport = transport
        self._cipher = cipher
        self._sending = False
        self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            # Encrypt only once the send is ours: the keystream advances with it.
            wire = self._cipher.seal(data)
            if wire:
                await self.transport.send_all(wire)
            else:
                await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        await self.transport.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """Decrypted bytes; b"" at EOF (also when it comes inside the remote's nonce)."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            while True:
                data = await self.transport.receive_some(max_bytes)
                if not data:
                    return b""
                plain = self._cipher.open(data)
                if self._cipher.remote_nonce_received and not self._cipher.nonce_sent:
                    # The peer's nonce is in: answer with ours now, even if we have
                    # nothing to say yet. js-libp2p's protector waits for our nonce
                    # before it sends a byte, and a multistream-select listener
                    # waits for the dialer's header: without this they deadlock.
                    # (A prober that sent 24 bytes learns 24 random ones, no more.)
                    await self.transport.send_all(self._cipher.seal(b""))
                if plain:
                    return plain
                # Only nonce bytes so far: read again rather than return b"" (EOF).
        finally:
            self._receiving = False

    async def aclose(self) -> None:
        await self.transport.aclose()


def protect(transport: trio.abc.Stream, key: SwarmKey | None) -> trio.abc.Stream:
    """`transport` behind the swarm key's protector, or unchanged without a key."""
    return transport if key is None else PnetStream(transport, PnetCipher(key))
