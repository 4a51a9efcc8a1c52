"""The libp2p-noise handshake and transport session, sans IO (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shoal.p2p.errors import DecryptError, HandshakeError, LocalProtocolError, PeerIdMismatch
from shoal.p2p.secure.identity import Identity, protobuf_bytes_field, protobuf_fields
from shoal.p2p.secure.noise import (
    MAX_MESSAGE, MAX_PLAINTEXT, TAG_LEN, NoiseCipher, NoiseHandshake, Role, SecureSession,
    _encode_payload,
)

ALICE = Identity.from_seed(b"a" * 32)
BOB = Identity.from_seed(b"b" * 32)
MALLORY = Identity.from_seed(b"m" * 32)


def run(init: NoiseHandshake, resp: NoiseHandshake) -> tuple[SecureSession, SecureSession]:
    """Pump messages between two handshakes until both complete."""
    for _ in range(3):
        sender, receiver = (init, resp) if init.my_turn else (resp, init)
        receiver.read_message(sender.write_message())
    assert init.complete and resp.complete
    return init.session(), resp.session()


def pair(cipher: NoiseCipher = NoiseCipher.CHACHAPOLY) -> tuple[SecureSession, SecureSession]:
    return run(
        NoiseHandshake(Role.INITIATOR, ALICE, BOB.peer_id, cipher=cipher),
        NoiseHandshake(Role.RESPONDER, BOB, cipher=cipher),
    )


def test_handshake_proves_both_identities() -> None:
    a, b = pair()
    assert a.remote_peer == BOB.peer_id
    assert b.remote_peer == ALICE.peer_id
    assert a.handshake_hash == b.handshake_hash


def test_transport_both_directions() -> None:
    a, b = pair()
    for i in range(5):
        assert b.decrypt(a.encrypt(b"ping %d" % i)) == b"ping %d" % i
        assert a.decrypt(b.encrypt(b"pong %d" % i)) == b"pong %d" % i
    assert b.decrypt(a.encrypt(b"")) == b""


def test_first_message_is_bare_ephemeral_key() -> None:
    hs = NoiseHandshake(Role.INITIATOR, ALICE)
    assert len(hs.write_message()) == 32  # no key yet, so the empty payload adds no tag


def test_wrong_expected_peer_fails_before_revealing_identity() -> None:
    init = NoiseHandshake(Role.INITIATOR, ALICE, MALLORY.peer_id)
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    resp.read_message(init.write_message())
    with pytest.raises(PeerIdMismatch):
        init.read_message(resp.write_message())
    assert not init.complete and not init.my_turn
    with pytest.raises(LocalProtocolError):
        init.write_message()


@pytest.mark.parametrize("step", [0, 1, 2])
def test_tampered_handshake_message(step: int) -> None:
    init = NoiseHandshake(Role.INITIATOR, ALICE)
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    hss = [init, resp]
    for i in range(3):
        sender, receiver = hss[i % 2], hss[(i + 1) % 2]
        msg = sender.write_message()
        if i == step:
            msg = msg[:-1] + bytes([msg[-1] ^ 1])
            if step == 0:
                # Message 1 is a bare ephemeral key; a flipped bit changes the
                # key, which only shows when the initiator reads message 2.
                receiver.read_message(msg)
                with pytest.raises(HandshakeError):
                    sender.read_message(receiver.write_message())
                return
            with pytest.raises(DecryptError):
                receiver.read_message(msg)
            return
        receiver.read_message(msg)


@pytest.mark.parametrize("cut", [0, 10, 31, 33, 80])
def test_truncated_handshake_message_two(cut: int) -> None:
    init = NoiseHandshake(Role.INITIATOR, ALICE)
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    resp.read_message(init.write_message())
    with pytest.raises(HandshakeError):
        init.read_message(resp.write_message()[:cut])


def test_oversized_handshake_message() -> None:
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    with pytest.raises(HandshakeError):
        resp.read_message(b"\x09" * (MAX_MESSAGE + 1))


def test_payload_signed_over_another_static_key_is_refused() -> None:
    """A responder replaying someone else's signed payload cannot pass."""
    init = NoiseHandshake(Role.INITIATOR, ALICE)
    resp = NoiseHandshake(Role.RESPONDER, MALLORY)
    # Mallory presents Bob's identity with a signature over a different static key.
    other_static = X25519PrivateKey.generate().public_key().public_bytes_raw()
    stolen = _encode_payload(BOB, other_static)
    resp.read_message(init.write_message())
    msg = resp._hs.write_message(stolen)
    with pytest.raises(HandshakeError):
        init.read_message(msg)


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xff",
        protobuf_bytes_field(1, BOB.public_key_proto),
        protobuf_bytes_field(2, b"\x00" * 64),
        protobuf_bytes_field(1, b"\x08\x00\x12\x00") + protobuf_bytes_field(2, b"\x00" * 64),
    ],
)
def test_malformed_payload_is_refused(payload: bytes) -> None:
    init = NoiseHandshake(Role.INITIATOR, ALICE)
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    resp.read_message(init.write_message())
    with pytest.raises(HandshakeError):
        init.read_message(resp._hs.write_message(payload))


def test_unknown_payload_fields_are_ignored() -> None:
    """Extensions (field 4) from other libp2p implementations must not break us."""
    init = NoiseHandshake(Role.INITIATOR, ALICE, BOB.peer_id)
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    resp.read_message(init.write_message())
    static_pub = resp._static_pub
    payload = _encode_payload(BOB, static_pub) + protobuf_bytes_field(4, b"\x12\x05/yamux")
    init.read_message(resp._hs.write_message(payload))
    assert init.remote_peer == BOB.peer_id


def test_out_of_turn_calls_are_local_errors() -> None:
    init = NoiseHandshake(Role.INITIATOR, ALICE)
    with pytest.raises(LocalProtocolError):
        init.read_message(b"x" * 48)
    with pytest.raises(LocalProtocolError):
        init.session()
    with pytest.raises(LocalProtocolError):
        NoiseHandshake(Role.RESPONDER, BOB, ALICE.peer_id)


def test_replayed_frame_fails() -> None:
    a, b = pair()
    frame = a.encrypt(b"once")
    assert b.decrypt(frame) == b"once"
    with pytest.raises(DecryptError):
        b.decrypt(frame)


def test_reordered_frames_fail() -> None:
    a, b = pair()
    first, second = a.encrypt(b"1"), a.encrypt(b"2")
    with pytest.raises(DecryptError):
        b.decrypt(second)
    with pytest.raises(DecryptError):  # the session is dead after a failure
        b.decrypt(first)


def test_tampered_frame_fails() -> None:
    a, b = pair()
    frame = bytearray(a.encrypt(b"payload"))
    frame[0] ^= 0x80
    with pytest.raises(DecryptError):
        b.decrypt(bytes(frame))


def test_frame_from_own_direction_fails() -> None:
    a, b = pair()
    with pytest.raises(DecryptError):
        a.decrypt(a.encrypt(b"reflected"))


@pytest.mark.parametrize("size", [0, 15, MAX_MESSAGE + 1])
def test_bad_frame_sizes(size: int) -> None:
    _, b = pair()
    with pytest.raises(DecryptError):
        b.decrypt(b"\x00" * size)


def test_message_size_bound() -> None:
    a, b = pair()
    big = b"\x01" * MAX_PLAINTEXT
    frame = a.encrypt(big)
    assert len(frame) == MAX_MESSAGE
    assert b.decrypt(frame) == big
    with pytest.raises(LocalProtocolError):
        a.encrypt(big + b"\x01")


def test_sessions_are_independent() -> None:
    a1, _ = pair()
    _, b2 = pair()
    with pytest.raises(DecryptError):
        b2.decrypt(a1.encrypt(b"cross-session"))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_message_one_only_raises_handshake_errors(data: bytes) -> None:
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    try:
        resp.read_message(data)
    except HandshakeError:
        return
    assert len(data) >= 32 and resp.my_turn


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(list(NoiseCipher)))
def test_fuzz_message_two_only_raises_handshake_errors(data: bytes, cipher: NoiseCipher) -> None:
    init = NoiseHandshake(Role.INITIATOR, ALICE, cipher=cipher)
    init.write_message()
    with pytest.raises(HandshakeError):
        init.read_message(data)


@given(st.binary(max_size=200))
def test_fuzz_protobuf_fields_only_raises_value_error(data: bytes) -> None:
    try:
        list(protobuf_fields(data))
    except ValueError:
        pass


@settings(max_examples=30, deadline=None)
@given(st.lists(st.binary(max_size=2000), max_size=10), st.sampled_from(list(NoiseCipher)))
def test_property_transport_round_trip(messages: list[bytes], cipher: NoiseCipher) -> None:
    a, b = pair(cipher)
    for m in messages:
        assert b.decrypt(a.encrypt(m)) == m
        assert a.decrypt(b.encrypt(m)) == m


def test_session_is_created_once() -> None:
    """A second split would reuse nonces under the same keys."""
    init = NoiseHandshake(Role.INITIATOR, ALICE)
    resp = NoiseHandshake(Role.RESPONDER, BOB)
    run(init, resp)
    assert init.session() is init.session()


@pytest.mark.parametrize("cipher", list(NoiseCipher))
def test_decrypt_many_is_decrypt_of_each(cipher: NoiseCipher) -> None:
    """One call for the frames of a read gives what one `decrypt` each does;
    empty plaintexts (a bare tag) are checked but not appended."""
    a, b = pair(cipher)
    plains = [b"one", b"", b"x" * 65519, b"two"]
    frames = [a.encrypt(p) for p in plains]
    out: list[bytes] = [b"earlier"]
    b.decrypt_many([memoryview(f) for f in frames], out)
    assert out == [b"earlier", b"one", b"x" * 65519, b"two"]
    assert b.decrypt(a.encrypt(b"next")) == b"next"  # the nonces went on


@pytest.mark.parametrize("bad_at", [0, 1, 3])
@pytest.mark.parametrize("how", ["tampered", "short", "replayed"])
def test_decrypt_many_stops_at_the_first_bad_frame(bad_at: int, how: str) -> None:
    """The plaintexts before the bad frame are out, then DecryptError, and the
    session refuses everything after (as one `decrypt` per frame)."""
    a, b = pair()
    frames = [a.encrypt(b"%d" % i) for i in range(4)]
    if how == "tampered":
        frames[bad_at] = frames[bad_at][:-1] + bytes([frames[bad_at][-1] ^ 1])
    elif how == "short":
        frames[bad_at] = frames[bad_at][:TAG_LEN - 1]
    else:
        frames[bad_at] = frames[bad_at - 1] if bad_at else a.encrypt(b"later")
    out: list[bytes] = []
    with pytest.raises(DecryptError):
        b.decrypt_many(frames, out)
    assert out == [b"%d" % i for i in range(bad_at)]
    with pytest.raises(DecryptError):
        b.decrypt_many([a.encrypt(b"after")], out)
    with pytest.raises(DecryptError):
        b.decrypt(a.encrypt(b"after"))


@pytest.mark.parametrize("cipher", list(NoiseCipher))
def test_each_cipher_handshakes_and_carries_frames(cipher: NoiseCipher) -> None:
    a, b = pair(cipher)
    assert a.cipher is b.cipher is cipher
    big = bytes(range(256)) * 256
    for i in range(3):
        frame = a.encrypt(big[: MAX_PLAINTEXT - i])
        assert len(frame) == MAX_PLAINTEXT - i + TAG_LEN
        assert b.decrypt(frame) == big[: MAX_PLAINTEXT - i]
        assert a.decrypt(b.encrypt(b"pong %d" % i)) == b"pong %d" % i


def test_the_ciphers_give_different_keys_and_frames() -> None:
    """The cipher's name is hashed into the handshake: same keys, different sessions."""
    def session(cipher: NoiseCipher) -> tuple[SecureSession, SecureSession]:
        keys = {k: X25519PrivateKey.from_private_bytes(bytes([k]) * 32) for k in (1, 2, 3, 4)}
        return run(NoiseHandshake(Role.INITIATOR, ALICE, static_key=keys[1], ephemeral_key=keys[2], cipher=cipher),
                   NoiseHandshake(Role.RESPONDER, BOB, static_key=keys[3], ephemeral_key=keys[4], cipher=cipher))
    chacha, aes = session(NoiseCipher.CHACHAPOLY), session(NoiseCipher.AESGCM)
    assert chacha[0].handshake_hash != aes[0].handshake_hash
    assert chacha[0].encrypt(b"same") != aes[0].encrypt(b"same")


def test_a_cipher_mismatch_fails_the_handshake_at_message_two() -> None:
    """Ends that disagree on the cipher never get a session: message 2 fails to authenticate."""
    init = NoiseHandshake(Role.INITIATOR, ALICE, cipher=NoiseCipher.AESGCM)
    resp = NoiseHandshake(Role.RESPONDER, BOB, cipher=NoiseCipher.CHACHAPOLY)
    resp.read_message(init.write_message())
    with pytest.raises(HandshakeError):
        init.read_message(resp.write_message())
    assert not init.complete
