"""Which Noise cipher a connection negotiates (shoal.p2p.secure.cipher_choice)."""

from __future__ import annotations

import os

import pytest
import trio

from shoal.p2p.errors import P2PError
from shoal.p2p.libp2p.host import Libp2pHost
from shoal.p2p.secure.cipher_choice import (
    NOISE_AESGCM_PROTOCOL, NOISE_PROTOCOL, aes_hardware, cipher_for, security_protocols,
)
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.noise import NoiseCipher
from shoal.p2p.secure.secure_stream import SecureStream

X86_AES = "processor\t: 0\nflags\t\t: fpu sse2 pclmulqdq ssse3 aes avx2 sha_ni\n"
X86_NO_CLMUL = "flags\t\t: fpu sse2 ssse3 aes avx2\n"
X86_NONE = "flags\t\t: fpu sse2 ssse3\n"
ARM_AES = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32\n"
ARM_NONE = "Features\t: fp asimd evtstrm crc32\n"


@pytest.mark.parametrize("text,expected", [
    (X86_AES, True), (X86_NO_CLMUL, False), (X86_NONE, False), (ARM_AES, True), (ARM_NONE, False),
    ("", False), ("garbage without colons\n", False), ("flags:\n", False),
])
def test_aes_hardware_reads_cpu_flags(text: str, expected: bool) -> None:
    assert aes_hardware(text) is expected


def test_offers_aes_first_only_with_hardware_and_always_noise() -> None:
    assert security_protocols(True) == [NOISE_AESGCM_PROTOCOL, NOISE_PROTOCOL]
    assert security_protocols(False) == [NOISE_PROTOCOL]


@pytest.mark.parametrize("value,expected", [("0", [NOISE_PROTOCOL]),
                                            ("1", [NOISE_AESGCM_PROTOCOL, NOISE_PROTOCOL])])
def test_the_environment_overrides_the_cpu_check(monkeypatch: pytest.MonkeyPatch, value: str,
                                                 expected: list[str]) -> None:
    monkeypatch.setenv("SHOAL_NOISE_AESGCM", value)
    assert security_protocols() == expected


def test_cipher_for_maps_ids_and_refuses_others() -> None:
    assert cipher_for(NOISE_PROTOCOL) is NoiseCipher.CHACHAPOLY
    assert cipher_for(NOISE_AESGCM_PROTOCOL) is NoiseCipher.AESGCM
    with pytest.raises(ValueError):
        cipher_for("/tls/1.0.0")


WITH_AES = [NOISE_AESGCM_PROTOCOL, NOISE_PROTOCOL]
WITHOUT = [NOISE_PROTOCOL]


@pytest.mark.parametrize("dialer,listener,expected", [
    (WITH_AES, WITH_AES, NoiseCipher.AESGCM),
    (WITH_AES, WITHOUT, NoiseCipher.CHACHAPOLY),  # a listener that never heard of it: "na", then /noise
    (WITHOUT, WITH_AES, NoiseCipher.CHACHAPOLY),  # a plain libp2p dialer (kubo, Helia)
    (WITHOUT, WITHOUT, NoiseCipher.CHACHAPOLY),
])
async def test_two_hosts_agree_on_the_cipher_and_carry_data(dialer: list[str], listener: list[str],
                                                             expected: NoiseCipher) -> None:
    async def echo(stream) -> None:  # type: ignore[no-untyped-def]
        while data := await stream.receive_some():
            await stream.send_all(data)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5, security=dialer)
            b = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5, security=listener)
            b.handlers["/shoal/test/echo/1.0.0"] = echo
            addrs = await nursery.start(b.serve)
            conn = await a.dial(addrs[0])
            assert isinstance(conn.secure, SecureStream)
            assert conn.secure.cipher is expected
            (back,) = b.connections
            assert isinstance(back.secure, SecureStream) and back.secure.cipher is expected
            stream = await conn.open_stream("/shoal/test/echo/1.0.0")
            payload = os.urandom(300_000)
            await stream.send_all(payload)
            got = bytearray()
            while len(got) < len(payload):
                got += await stream.receive_some()
            assert bytes(got) == payload
            nursery.cancel_scope.cancel()


async def test_a_dialer_offering_only_aes_to_a_plain_listener_fails_cleanly() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            a = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5, security=[NOISE_AESGCM_PROTOCOL])
            b = Libp2pHost(Identity.generate(), nursery, handshake_timeout=5, security=WITHOUT)
            addrs = await nursery.start(b.serve)
            with pytest.raises(P2PError):
                await a.dial(addrs[0])
            nursery.cancel_scope.cancel()
