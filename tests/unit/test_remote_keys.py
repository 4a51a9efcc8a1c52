"""Remote RSA, secp256k1 and ECDSA identities (peer-ids spec key types 0, 2, 3).

Public IPFS nodes, the bootstrap peers among them, use these key types; a
node joining the public DHT must verify them in Noise and identify.
"""

from __future__ import annotations

from typing import Callable

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from shoal.p2p.errors import HandshakeError
from shoal.p2p.libp2p.identify import IdentifyInfo
from shoal.p2p.secure.identity import (
    Identity,
    PeerId,
    decode_public_key,
    protobuf_bytes_field,
)
from shoal.p2p.secure.noise import NoiseHandshake, Role, _SIG_PREFIX

_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
_POINT = serialization.PublicFormat.CompressedPoint
_X962 = serialization.Encoding.X962

RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
K1_KEY = ec.generate_private_key(ec.SECP256K1())
P256_KEY = ec.generate_private_key(ec.SECP256R1())


def _proto(key_type: int, data: bytes) -> bytes:
    return bytes([0x08, key_type]) + protobuf_bytes_field(2, data)


def rsa_proto(key: rsa.RSAPrivateKey = RSA_KEY) -> bytes:
    return _proto(0, key.public_key().public_bytes(_DER, _SPKI))


def k1_proto() -> bytes:
    return _proto(2, K1_KEY.public_key().public_bytes(_X962, _POINT))


def p256_proto() -> bytes:
    return _proto(3, P256_KEY.public_key().public_bytes(_DER, _SPKI))


def rsa_sign(data: bytes) -> bytes:
    return RSA_KEY.sign(data, padding.PKCS1v15(), hashes.SHA256())


def k1_sign(data: bytes) -> bytes:
    return K1_KEY.sign(data, ec.ECDSA(hashes.SHA256()))


def p256_sign(data: bytes) -> bytes:
    return P256_KEY.sign(data, ec.ECDSA(hashes.SHA256()))


KINDS: list[tuple[str, Callable[[], bytes], Callable[[bytes], bytes], str]] = [
    ("rsa", rsa_proto, rsa_sign, "Qm"),
    ("secp256k1", k1_proto, k1_sign, "16Uiu2"),
    ("ecdsa", p256_proto, p256_sign, "Qm"),
]


@pytest.mark.parametrize(("name", "proto", "sign", "prefix"), KINDS)
def test_key_decodes_verifies_and_names_its_peer(
    name: str, proto: Callable[[], bytes], sign: Callable[[bytes], bytes], prefix: str
) -> None:
    raw = proto()
    key = decode_public_key(raw)
    assert key.to_proto() == raw
    assert key.verify(sign(b"msg"), b"msg")
    assert not key.verify(sign(b"msg"), b"other")
    assert not key.verify(b"\x30\x00", b"msg")
    peer = PeerId.from_public_key(key)
    assert str(peer).startswith(prefix)
    assert PeerId.from_string(str(peer)) == peer
    assert peer.matches(key)


def test_small_key_ids_are_inline_and_big_ones_hashed() -> None:
    k1 = PeerId.from_public_key(decode_public_key(k1_proto()))
    assert k1.to_bytes()[:2] == bytes([0x00, 37]) and k1.to_bytes()[2:] == k1_proto()
    # An inline secp256k1 id can verify by itself; hashed ids cannot.
    assert k1.verify(k1_sign(b"x"), b"x")
    rsa_id = PeerId.from_public_key(decode_public_key(rsa_proto()))
    assert rsa_id.to_bytes()[:2] == bytes([0x12, 32])
    assert not rsa_id.verify(rsa_sign(b"x"), b"x")


def test_small_rsa_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="bits"):
        decode_public_key(rsa_proto(small))


def test_huge_rsa_public_exponent_is_refused() -> None:
    """A verify with a 2047-bit exponent costs as much as signing: refused up front."""
    n = RSA_KEY.public_key().public_numbers().n
    slow = rsa.RSAPublicNumbers((1 << 2046) + 1, n).public_key()
    with pytest.raises(ValueError, match="exponent"):
        decode_public_key(_proto(0, slow.public_bytes(_DER, _SPKI)))


@pytest.mark.parametrize(
    "bad",
    [
        # uncompressed secp256k1 point: decodable, but not the canonical form
        _proto(2, K1_KEY.public_key().public_bytes(_X962, serialization.PublicFormat.UncompressedPoint)),
        _proto(2, b"\x02" + b"\xff" * 32),  # not on the curve
        _proto(0, P256_KEY.public_key().public_bytes(_DER, _SPKI)),  # RSA type, EC key
        _proto(3, RSA_KEY.public_key().public_bytes(_DER, _SPKI)),  # ECDSA type, RSA key
        _proto(3, K1_KEY.public_key().public_bytes(_DER, _SPKI)),  # ECDSA type, secp256k1
        _proto(0, RSA_KEY.public_key().public_bytes(_DER, serialization.PublicFormat.PKCS1)),
        _proto(0, RSA_KEY.public_key().public_bytes(_DER, _SPKI) + b"\x00"),  # trailing byte
        b"\x08\x80\x00" + protobuf_bytes_field(2, RSA_KEY.public_key().public_bytes(_DER, _SPKI)),
        _proto(0, RSA_KEY.public_key().public_bytes(_DER, _SPKI)) + b"\x18\x01",  # extra field
        _proto(4, b"\x00" * 32),  # unknown type
        _proto(0, b"\x30" + b"\x00" * 3000),  # over the size bound
    ],
    # Named, not by their bytes: the keys are made at import, so byte ids
    # differ between pytest-xdist workers, which must collect the same tests.
    ids=["k1-uncompressed", "k1-off-curve", "rsa-type-ec-key", "ecdsa-type-rsa-key", "ecdsa-type-k1-key",
         "rsa-pkcs1", "rsa-trailing-byte", "overlong-type-varint", "extra-field", "unknown-type", "oversized"],
)
def test_non_canonical_or_wrong_keys_are_refused(bad: bytes) -> None:
    with pytest.raises(ValueError):
        decode_public_key(bad)


def _valid_protos() -> list[bytes]:
    return [rsa_proto(), k1_proto(), p256_proto(), Identity.from_seed(b"f" * 32).public_key_proto]


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(_valid_protos()),
    st.integers(min_value=0, max_value=400),
    st.integers(min_value=0, max_value=255),
    st.integers(min_value=0, max_value=400),
)
def test_decoder_fuzz_mutations(base: bytes, pos: int, value: int, cut: int) -> None:
    """Flipped bytes and truncations: ValueError or the same canonical bytes back."""
    data = bytearray(base)
    data[pos % len(data)] = value
    for candidate in (bytes(data), base[: cut % (len(base) + 1)]):
        try:
            key = decode_public_key(candidate)
        except ValueError:
            continue
        assert key.to_proto() == candidate


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decoder_fuzz_random(data: bytes) -> None:
    try:
        key = decode_public_key(data)
    except ValueError:
        return
    assert key.to_proto() == data


@pytest.mark.parametrize(("name", "proto", "sign", "prefix"), KINDS)
def test_noise_handshake_with_remote_key(
    name: str, proto: Callable[[], bytes], sign: Callable[[bytes], bytes], prefix: str
) -> None:
    """An initiator accepts a responder proving an RSA/secp256k1/ECDSA identity."""
    alice = Identity.from_seed(b"a" * 32)
    init = NoiseHandshake(Role.INITIATOR, alice)
    resp = NoiseHandshake(Role.RESPONDER, Identity.from_seed(b"b" * 32))
    resp.read_message(init.write_message())
    static = resp._static_pub
    payload = protobuf_bytes_field(1, proto()) + protobuf_bytes_field(2, sign(_SIG_PREFIX + static))
    init.read_message(resp._hs.write_message(payload))
    assert init.remote_peer == PeerId.from_public_key(decode_public_key(proto()))
    # The same payload signed over another static key is refused.
    init2 = NoiseHandshake(Role.INITIATOR, alice)
    resp2 = NoiseHandshake(Role.RESPONDER, Identity.from_seed(b"c" * 32))
    resp2.read_message(init2.write_message())
    with pytest.raises(HandshakeError):
        init2.read_message(resp2._hs.write_message(payload))


@pytest.mark.parametrize(("name", "proto", "sign", "prefix"), KINDS)
def test_identify_peer_id_of_remote_key(
    name: str, proto: Callable[[], bytes], sign: Callable[[bytes], bytes], prefix: str
) -> None:
    info = IdentifyInfo(public_key=proto())
    assert str(info.peer_id()).startswith(prefix)
    assert info.peer_id() == PeerId.from_public_key(decode_public_key(proto()))
