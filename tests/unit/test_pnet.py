"""Private swarms: XSalsa20 against NaCl's vectors, the swarm.key format, the
sans-IO protector, its trio wrapper, Noise over it, and the peer allowlist."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from trio.testing import lockstep_stream_pair, memory_stream_pair

from shoal.p2p.secure.allowlist import AllowlistError, load_allowlist, parse_allowlist
from shoal.p2p.errors import HandshakeError
from shoal.p2p.secure.identity import Identity
from shoal.p2p.secure.noise import NoiseHandshake, Role
from shoal.p2p.secure.pnet import (
    NONCE_BYTES, PnetCipher, SwarmKey, SwarmKeyError, XSalsa20, hsalsa20, load_swarm_key,
    parse_swarm_key,
)
from shoal.p2p.secure.pnet_stream import PnetStream
from shoal.p2p.secure.secure_stream import (
    FIRST_MESSAGE_BYTES, FrameDecoder, SecureStream, encode_frame, secure_accept, secure_dial,
)

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
KEY = SwarmKey(bytes(range(32)))
OTHER_KEY = SwarmKey(bytes(range(1, 33)))

# -- XSalsa20: NaCl's own test vectors (tests/core1.c, core2.c, stream.c, stream3.c;
#    the same ones libsodium runs as test/default/core1..2 and stream) ----------------

NACL_SHARED = bytes.fromhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")
NACL_FIRSTKEY = bytes.fromhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
NACL_NONCE = bytes.fromhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
NACL_SECONDKEY = bytes.fromhex("dc908dda0b9344a953629b733820778880f3ceb421bb61b91cbd4c3e66256ce4")


def test_hsalsa20_matches_nacl_core1_and_core2() -> None:
    assert hsalsa20(NACL_SHARED, bytes(16)) == NACL_FIRSTKEY
    assert hsalsa20(NACL_FIRSTKEY, NACL_NONCE[:16]) == NACL_SECONDKEY


def test_xsalsa20_keystream_matches_nacl_stream_and_stream3() -> None:
    stream = XSalsa20(NACL_FIRSTKEY, NACL_NONCE).xor(bytes(4_194_304))
    # stream3.c: the first 32 bytes; stream.c: SHA-256 of 4 MiB of keystream.
    assert stream[:32].hex() == "eea6a7251c1e72916d11c2cb214d3c252539121d8e234e652d651fa4c8cff880"
    assert hashlib.sha256(stream).hexdigest() == (
        "662b9d0e3463029156069b12f918691a98f7dfb2ca0393c96bbfc6b1fbd630a2")


@settings(max_examples=50)
@given(st.lists(st.integers(0, 300), max_size=12))
def test_xsalsa20_state_carries_across_calls(cuts: list[int]) -> None:
    whole = XSalsa20(NACL_FIRSTKEY, NACL_NONCE).xor(bytes(sum(cuts)))
    stream = XSalsa20(NACL_FIRSTKEY, NACL_NONCE)
    assert b"".join(stream.xor(bytes(n)) for n in cuts) == whole


def test_fingerprint_matches_go_and_rust_libp2p() -> None:
    # The value rust-libp2p's pnet tests check "against go-ipfs output".
    key = parse_swarm_key(b"/key/swarm/psk/1.0.0/\n/base16/\n"
                          b"6189c5cf0b87fb800c1a9feeda73c6ab5e998db48fb9e6a978575c770ceef683")
    assert key.fingerprint() == "45fc986bbc9388a11d939df26f730f0c"
    assert "6189c5cf" not in repr(key) and key.fingerprint() in repr(key)  # never print the key


# -- the swarm.key file ---------------------------------------------------------------------


def test_key_file_round_trips_and_reads_every_encoding() -> None:
    key = SwarmKey.generate()
    assert parse_swarm_key(key.encode()) == key
    assert key.encode().startswith(b"/key/swarm/psk/1.0.0/\n/base16/\n")
    header = b"/key/swarm/psk/1.0.0/\n"
    assert parse_swarm_key(header + b"/base64/\n" + base64.b64encode(key.psk) + b"\n") == key
    assert parse_swarm_key(header + b"/bin/\n" + key.psk) == key
    crlf = key.encode().replace(b"\n", b"\r\n")
    assert parse_swarm_key(crlf) == key
    assert parse_swarm_key(header + b"/base16/\n" + key.psk.hex().upper().encode()) == key


@pytest.mark.parametrize("text, message", [
    (b"", "first line"),
    (b"/key/swarm/psk/2.0.0/\n/base16/\n" + b"00" * 32, "first line"),
    (b"/key/swarm/psk/1.0.0/", "first line"),
    (b"/key/swarm/psk/1.0.0/\n/base16/", "ends before the key"),
    (b"/key/swarm/psk/1.0.0/\n/base32/\n" + b"00" * 32, "unknown swarm key encoding"),
    (b"/key/swarm/psk/1.0.0/\n/base16/\n" + b"00" * 31, "64 hex digits, not 62"),
    (b"/key/swarm/psk/1.0.0/\n/base16/\n" + b"zz" * 32, "not valid base16"),
    (b"/key/swarm/psk/1.0.0/\n/base64/\n" + base64.b64encode(bytes(31)), "32 bytes, not 31"),
    (b"/key/swarm/psk/1.0.0/\n/bin/\n" + bytes(31), "needs 32 bytes"),
])
def test_bad_key_files_are_refused_with_a_reason(text: bytes, message: str) -> None:
    with pytest.raises(SwarmKeyError, match=message):
        parse_swarm_key(text)


def test_load_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(SwarmKeyError, match="cannot read swarm key .*missing.key"):
        load_swarm_key(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    bad.write_bytes(b"hello\n")
    with pytest.raises(SwarmKeyError, match="bad.key: not a swarm key"):
        load_swarm_key(bad)
    good = tmp_path / "swarm.key"
    good.write_bytes(KEY.encode())
    assert load_swarm_key(good) == KEY


# -- the sans-IO protector ------------------------------------------------------------------


def test_nonce_goes_out_once_then_only_ciphertext() -> None:
    nonce = bytes(range(100, 124))
    cipher = PnetCipher(KEY, nonce=nonce)
    first = cipher.seal(b"hello")
    assert first[:NONCE_BYTES] == nonce and len(first) == NONCE_BYTES + 5
    second = cipher.seal(b"world")
    assert len(second) == 5
    assert first[NONCE_BYTES:] + second == XSalsa20(KEY.psk, nonce).xor(b"helloworld")
    assert PnetCipher(KEY, nonce=nonce).seal(b"") == nonce  # an empty send still opens the stream


@settings(max_examples=100)
@given(data=st.binary(max_size=2000), cuts_a=st.lists(st.integers(1, 97)), cuts_b=st.lists(st.integers(1, 97)))
def test_pair_round_trips_however_the_bytes_are_cut(data: bytes, cuts_a: list[int], cuts_b: list[int]) -> None:
    """Whatever the sender's writes and the network's segments, the receiver gets the bytes back."""
    sender, receiver = PnetCipher(KEY), PnetCipher(KEY)
    wire = bytearray()
    pos = 0
    for n in cuts_a + [len(data)]:
        wire += sender.seal(data[pos:pos + n])
        pos += n
        if pos >= len(data):
            break
    got = bytearray()
    pos = 0
    for n in cuts_b + [len(wire)]:
        got += receiver.open(bytes(wire[pos:pos + n]))
        pos += n
        if pos >= len(wire):
            break
    assert bytes(got) == data
    assert receiver.remote_nonce_received


def test_a_partial_nonce_yields_nothing_yet() -> None:
    receiver = PnetCipher(KEY)
    wire = PnetCipher(KEY, nonce=bytes(24)).seal(b"abc")
    assert receiver.open(wire[:10]) == b""
    assert not receiver.remote_nonce_received
    assert receiver.open(wire[10:]) == b"abc"


def test_another_key_reads_only_noise() -> None:
    message = encode_frame(b"\x00" * 32)
    wire = PnetCipher(KEY).seal(message)
    assert PnetCipher(OTHER_KEY).open(wire) != message
    assert PnetCipher(KEY).open(wire) == message


def test_a_keyless_noise_hello_decrypts_to_a_length_that_is_refused() -> None:
    """What a keyed responder makes of a keyless initiator's message 1 (fixed keys: no chance)."""
    ephemeral = X25519PrivateKey.from_private_bytes(bytes(range(32)))
    hs = NoiseHandshake(Role.INITIATOR, ALICE, ephemeral_key=ephemeral)
    hello = encode_frame(hs.write_message())
    assert len(hello) == 2 + FIRST_MESSAGE_BYTES
    seen = PnetCipher(KEY).open(hello)  # 24 bytes taken as a nonce, the rest "decrypted"
    assert len(seen) == len(hello) - NONCE_BYTES
    decoder = FrameDecoder()
    decoder.feed(seen)
    assert decoder.declared_size() not in (None, FIRST_MESSAGE_BYTES)


# -- the trio wrapper and Noise over it ---------------------------------------------------------


async def test_stream_round_trip_and_eof() -> None:
    left, right = memory_stream_pair()
    a, b = PnetStream(left, PnetCipher(KEY)), PnetStream(right, PnetCipher(KEY))
    await a.send_all(b"over the wire")
    assert await b.receive_some(100) == b"over the wire"
    await b.send_all(b"x" * 5000)
    got = b""
    while len(got) < 5000:
        got += await a.receive_some(1000)
    assert got == b"x" * 5000
    await a.aclose()
    assert await b.receive_some(10) == b""


async def test_eof_inside_the_nonce_is_eof() -> None:
    left, right = memory_stream_pair()
    await left.send_all(b"short")  # fewer than 24 bytes, then gone
    await left.aclose()
    assert await PnetStream(right, PnetCipher(KEY)).receive_some(100) == b""


async def test_concurrent_senders_are_refused() -> None:
    left, right = lockstep_stream_pair()  # a send blocks until the other side reads
    stream = PnetStream(left, PnetCipher(KEY))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.send_all, b"first")
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await stream.send_all(b"second")
        assert PnetCipher(KEY).open(await right.receive_some(100)) == b"first"


async def _handshake_both(left_key: SwarmKey | None, right_key: SwarmKey | None,
                          timeout: float = 10) -> tuple[object, object]:
    left, right = memory_stream_pair()
    out: list[object] = [None, None]

    async def run(i: int, coro: object) -> None:
        try:
            out[i] = await coro  # type: ignore[misc]
        except Exception as exc:
            out[i] = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, 0, secure_dial(left, ALICE, BOB.peer_id, timeout=timeout, swarm_key=left_key))
        nursery.start_soon(run, 1, secure_accept(right, BOB, timeout=timeout, swarm_key=right_key))
    return out[0], out[1]


async def test_noise_over_the_same_key_works() -> None:
    a, b = await _handshake_both(KEY, KEY)
    assert isinstance(a, SecureStream) and isinstance(b, SecureStream)
    assert a.remote_peer == BOB.peer_id and b.remote_peer == ALICE.peer_id
    await a.send_all(b"private hello")
    assert await b.receive_some(100) == b"private hello"


@pytest.mark.parametrize("dial_key, accept_key", [(None, KEY), (OTHER_KEY, KEY), (KEY, None)])
async def test_a_peer_without_the_key_fails_at_once(
        autojump_clock: trio.testing.MockClock, dial_key: SwarmKey | None, accept_key: SwarmKey | None) -> None:
    """Both sides fail, and on the first bytes, not after the handshake timeout."""
    a, b = await _handshake_both(dial_key, accept_key, timeout=10)
    assert isinstance(a, HandshakeError) and isinstance(b, HandshakeError), (a, b)
    assert "not a Noise handshake" in str(b), b
    assert trio.current_time() < 1, "the responder waited for the timeout instead of refusing"
    if accept_key is not None:
        assert "same swarm key" in str(b)


async def test_a_keyless_prober_receives_nothing_but_a_nonce() -> None:
    """The keyed node writes nothing to a peer that cannot speak the key but
    its own random 24-byte nonce, sent once the peer's nonce is in (libp2p's
    protector: js-libp2p waits for it before it says anything)."""
    left, right = memory_stream_pair()
    hello = encode_frame(NoiseHandshake(Role.INITIATOR, ALICE).write_message())
    received = bytearray()

    async def prober() -> None:
        await left.send_all(hello)
        while chunk := await left.receive_some(4096):
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(prober)
        with pytest.raises(HandshakeError):
            await secure_accept(right, BOB, timeout=10, swarm_key=KEY)
    assert len(received) == 24  # the nonce: random bytes, no handshake byte after it


# -- the allowlist ---------------------------------------------------------------------------------


def test_allowlist_parses_ids_comments_and_blank_lines(tmp_path: Path) -> None:
    text = f"# lab machines\n{ALICE.peer_id}  # alice's box\n\n   {BOB.peer_id}\n#{ALICE.peer_id}\n"
    assert parse_allowlist(text) == {ALICE.peer_id, BOB.peer_id}
    path = tmp_path / "peers.txt"
    path.write_text(text)
    assert load_allowlist(path) == {ALICE.peer_id, BOB.peer_id}


def test_allowlist_refuses_junk_and_empty_lists(tmp_path: Path) -> None:
    with pytest.raises(AllowlistError, match="line 2: 'not-a-peer'"):
        parse_allowlist(f"{ALICE.peer_id}\nnot-a-peer\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody yet\n")
    with pytest.raises(AllowlistError, match="no peer ids"):
        load_allowlist(empty)
    with pytest.raises(AllowlistError, match="cannot read"):
        load_allowlist(tmp_path / "missing.txt")
