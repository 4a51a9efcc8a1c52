"""Sans-IO Noise XX secure channel, as libp2p-noise specifies it.

Two layers, both pure (bytes in, bytes out, no sockets, no clock):

* `CipherState`, `SymmetricState`, `HandshakeState`: the Noise Protocol
  Framework (revision 34) objects for `Noise_XX_25519_ChaChaPoly_SHA256`
  (what libp2p-noise specifies) and `Noise_XX_25519_AESGCM_SHA256` (which
  two Shoal nodes with AES hardware negotiate, see
  `shoal.p2p.secure.cipher_choice`), named and ordered as in the spec so
  they can be checked line by line and against the published test vectors
  (fixed keys are injectable).
* `NoiseHandshake`: the libp2p layer. It adds the `NoiseHandshakePayload`
  that binds the per-session X25519 static key to the node's Ed25519
  identity, checks the dialled PeerId, and yields a `SecureSession`.

Deliberately not here: framing, timeouts and I/O (`shoal.p2p.secure.secure_stream`),
other patterns, PSKs, rekeying, and early-data extensions (we
ignore the remote's and send none).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from typing import Callable, Final, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM as AesGcm, ChaCha20Poly1305

from shoal.p2p.errors import (
    DecryptError, HandshakeError, LocalProtocolError, P2PError, PeerIdMismatch,
)
from shoal.p2p.secure.identity import (
    Identity, PeerId, decode_public_key, protobuf_bytes_field, protobuf_fields,
)

__all__ = [
    "CipherState",
    "HandshakeState",
    "MAX_MESSAGE",
    "MAX_PLAINTEXT",
    "NoiseCipher",
    "NoiseHandshake",
    "Role",
    "SecureSession",
    "SymmetricState",
]

MAX_MESSAGE: Final = 65535
TAG_LEN: Final = 16
MAX_PLAINTEXT: Final = MAX_MESSAGE - TAG_LEN
DHLEN: Final = 32
HASHLEN: Final = 32
_MAX_NONCE: Final = 2**64 - 1  # reserved by the spec; reaching it ends the session
_SIG_PREFIX: Final = b"noise-libp2p-static-key:"

# XX: -> e ; <- e, ee, s, es ; -> s, se
_XX: Final = (("e",), ("e", "ee", "s", "es"), ("s", "se"))


NonceOrder = Literal["little", "big"]


class NoiseCipher(enum.Enum):
    """The AEAD of a Noise session (Noise section 12.3 and 12.4).

    The two differ only in the primitive and the nonce's byte order:
    ChaChaPoly puts the 64-bit counter little-endian after 4 zero bytes,
    AESGCM big-endian. Both take a 32-byte key and a 16-byte tag, so frame
    sizes are the same.
    """

    CHACHAPOLY = "ChaChaPoly"
    AESGCM = "AESGCM"

    @property
    def protocol_name(self) -> bytes:
        """The Noise protocol name, which is hashed into the handshake."""
        return b"Noise_XX_25519_" + self.value.encode() + b"_SHA256"

    @property
    def nonce_order(self) -> NonceOrder:
        return "little" if self is NoiseCipher.CHACHAPOLY else "big"

    def aead(self, key: bytes) -> "ChaCha20Poly1305 | AesGcm":
        return ChaCha20Poly1305(key) if self is NoiseCipher.CHACHAPOLY else AesGcm(key)


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise's HKDF with two outputs (HMAC-SHA256, no info, counter bytes)."""
    temp = hmac.digest(chaining_key, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    out2 = hmac.digest(temp, out1 + b"\x02", "sha256")
    return out1, out2


def _public_bytes(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # low-order point: an all-zero shared secret
        raise HandshakeError("remote sent an invalid X25519 public key") from None


class CipherState:
    """A key and a strictly increasing 64-bit nonce (Noise section 5.1).

    A failed decryption does not advance the nonce but poisons the state:
    the spec requires the session to end, and refusing every later frame
    makes a retry of a tampered or replayed frame impossible by construction.
    """

    __slots__ = ("_aead", "_n", "_broken", "_order", "cipher")

    def __init__(self, key: bytes | None = None, cipher: NoiseCipher = NoiseCipher.CHACHAPOLY) -> None:
        self.cipher = cipher
        self._aead = cipher.aead(key) if key is not None else None
        self._order: NonceOrder = cipher.nonce_order
        self._n = 0
        self._broken = False

    @property
    def has_key(self) -> bool:
        return self._aead is not None

    def fail(self) -> None:
        """Refuse all further decryption (the session must end)."""
        self._broken = True

    @property
    def nonce(self) -> int:
        return self._n

    def _nonce_bytes(self) -> bytes:
        if self._n >= _MAX_NONCE:
            raise LocalProtocolError("nonce space exhausted; the session must end")
        return b"\x00\x00\x00\x00" + self._n.to_bytes(8, self._order)

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        if self._aead is None:
            return plaintext
        out = self._aead.encrypt(self._nonce_bytes(), plaintext, ad)
        self._n += 1
        return out

    def encrypt_with_ad_into(self, ad: bytes, plaintext: bytes, out: memoryview) -> None:
        """`encrypt_with_ad`, writing the ciphertext into `out` (exactly
        len(plaintext) + 16 bytes): no ciphertext object per frame, so a
        sender can fill one wire buffer with many frames."""
        if self._aead is None:
            raise LocalProtocolError("encrypt_with_ad_into needs a key")
        self._aead.encrypt_into(self._nonce_bytes(), plaintext, ad, out)
        self._n += 1

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        if self._aead is None:
            return ciphertext
        if self._broken:
            raise DecryptError("session already failed authentication")
        try:
            out = self._aead.decrypt(self._nonce_bytes(), ciphertext, ad)
        except (InvalidTag, LocalProtocolError):
            self.fail()
            raise DecryptError(
                "frame failed authentication (tampered, replayed or reordered)"
            ) from None
        self._n += 1
        return out


    def decrypt_many(self, ad: bytes, messages: "list[memoryview] | list[bytes]",
                     out: "list[bytes]") -> None:
        """`decrypt_with_ad` of each message in order, appending the non-empty
        plaintexts to `out`; raises DecryptError (the state poisoned) at the
        first that fails, with the plaintexts before it already in `out`.

        Why one call for many: a receiver decrypts every frame of a 1 MiB read
        at once, and three Python calls per ~64 KiB frame (wrapper, nonce,
        bookkeeping) were a measurable share of the receive path's Python.
        """
        aead = self._aead
        if aead is None:
            raise LocalProtocolError("decrypt_many needs a key")
        if self._broken:
            raise DecryptError("session already failed authentication")
        decrypt = aead.decrypt
        append = out.append
        order = self._order
        n = self._n
        try:
            for message in messages:
                if n >= _MAX_NONCE:
                    raise LocalProtocolError("nonce space exhausted")
                plain = decrypt(b"\x00\x00\x00\x00" + n.to_bytes(8, order), message, ad)
                n += 1
                if plain:
                    append(plain)
        except (InvalidTag, LocalProtocolError):
            self.fail()
            raise DecryptError(
                "frame failed authentication (tampered, replayed or reordered)"
            ) from None
        finally:
            self._n = n


class SymmetricState:
    """Chaining key, handshake hash and the current CipherState (section 5.2)."""

    __slots__ = ("ck", "h", "cipher", "_kind")

    def __init__(self, kind: NoiseCipher = NoiseCipher.CHACHAPOLY) -> None:
        protocol_name = kind.protocol_name
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        self._kind = kind
        self.cipher = CipherState(None, kind)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf2(self.ck, ikm)
        self.cipher = CipherState(temp_k, self._kind)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf2(self.ck, b"")
        return CipherState(k1, self._kind), CipherState(k2, self._kind)


class HandshakeState:
    """The XX handshake state machine (section 5.3), without libp2p payloads.

    `write_message(payload)` / `read_message(message)` alternate as the
    pattern dictates; after the third message `split()` gives the initiator's
    sending and receiving CipherStates (swapped for the responder).
    `ephemeral_key` exists only so tests can replay published vectors.
    """

    def __init__(
        self,
        initiator: bool,
        static_key: X25519PrivateKey,
        prologue: bytes = b"",
        *,
        ephemeral_key: X25519PrivateKey | None = None,
        cipher: NoiseCipher = NoiseCipher.CHACHAPOLY,
    ) -> None:
        self.initiator = initiator
        self._s = static_key
        self._e = ephemeral_key
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self._sym = SymmetricState(cipher)
        self._sym.mix_hash(prologue)
        self._step = 0

    @property
    def step(self) -> int:
        """How many handshake messages have been written or read (0..3)."""
        return self._step

    @property
    def finished(self) -> bool:
        return self._step == len(_XX)

    @property
    def my_turn(self) -> bool:
        """True if the next handshake message is ours to write."""
        return not self.finished and (self._step % 2 == 0) == self.initiator

    @property
    def handshake_hash(self) -> bytes:
        return self._sym.h

    def _dh_token(self, token: str) -> bytes:
        # es: initiator's e with responder's s; se: initiator's s with responder's e.
        if token == "ee":
            mine, theirs = self._e, self.re
        elif (token == "es") == self.initiator:
            mine, theirs = self._e, self.rs
        else:
            mine, theirs = self._s, self.re
        assert mine is not None and theirs is not None
        return _dh(mine, theirs)

    def write_message(self, payload: bytes = b"") -> bytes:
        if not self.my_turn:
            raise LocalProtocolError("not our turn to write a handshake message")
        out = bytearray()
        for token in _XX[self._step]:
            if token == "e":
                if self._e is None:
                    self._e = X25519PrivateKey.generate()
                e_pub = _public_bytes(self._e)
                out += e_pub
                self._sym.mix_hash(e_pub)
            elif token == "s":
                out += self._sym.encrypt_and_hash(_public_bytes(self._s))
            else:
                self._sym.mix_key(self._dh_token(token))
        out += self._sym.encrypt_and_hash(payload)
        if len(out) > MAX_MESSAGE:
            raise LocalProtocolError("handshake message exceeds 65535 bytes")
        self._step += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if self.finished or self.my_turn:
            raise LocalProtocolError("not expecting a handshake message now")
        if len(message) > MAX_MESSAGE:
            raise HandshakeError("handshake message exceeds 65535 bytes")
        pos = 0
        for token in _XX[self._step]:
            if token == "e":
                self.re = self._take(message, pos, DHLEN)
                pos += DHLEN
                self._sym.mix_hash(self.re)
            elif token == "s":
                size = DHLEN + TAG_LEN if self._sym.cipher.has_key else DHLEN
                self.rs = self._sym.decrypt_and_hash(self._take(message, pos, size))
                pos += size
            else:
                self._sym.mix_key(self._dh_token(token))
        payload = self._sym.decrypt_and_hash(message[pos:])
        self._step += 1
        return payload

    @staticmethod
    def _take(message: bytes, pos: int, size: int) -> bytes:
        if len(message) < pos + size:
            raise HandshakeError("handshake message truncated")
        return message[pos : pos + size]

    def split(self) -> tuple[CipherState, CipherState]:
        """(initiator-to-responder, responder-to-initiator) CipherStates."""
        if not self.finished:
            raise LocalProtocolError("handshake not finished")
        return self._sym.split()


class Role(enum.Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class SecureSession:
    """Transport phase: encrypt what we send, decrypt what we receive.

    Each call handles one whole Noise transport message (at most 65535 bytes
    including the 16-byte tag). Nonces are implicit and strictly increasing,
    so a replayed, reordered, dropped-then-resent or altered message raises
    DecryptError, after which the session refuses everything.
    """

    __slots__ = ("_send", "_recv", "remote_peer", "handshake_hash")

    def __init__(
        self, send: CipherState, recv: CipherState, remote_peer: PeerId, handshake_hash: bytes
    ) -> None:
        self._send = send
        self._recv = recv
        self.remote_peer = remote_peer
        self.handshake_hash = handshake_hash

    @property
    def cipher(self) -> NoiseCipher:
        """The AEAD this session encrypts with."""
        return self._send.cipher

    def encrypt(self, plaintext: bytes) -> bytes:
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"plaintext over {MAX_PLAINTEXT} bytes; split it")
        return self._send.encrypt_with_ad(b"", plaintext)

    def encrypt_into(self, plaintext: bytes, out: memoryview) -> None:
        """`encrypt`, writing the message into `out`, which must be exactly
        len(plaintext) + 16 bytes (the cipher refuses any other size)."""
        if len(plaintext) > MAX_PLAINTEXT:
            raise LocalProtocolError(f"plaintext over {MAX_PLAINTEXT} bytes; split it")
        self._send.encrypt_with_ad_into(b"", plaintext, out)

    def decrypt(self, ciphertext: bytes) -> bytes:
        if not TAG_LEN <= len(ciphertext) <= MAX_MESSAGE:
            self._recv.fail()
            raise DecryptError(f"transport message of {len(ciphertext)} bytes")
        return self._recv.decrypt_with_ad(b"", ciphertext)

    def decrypt_many(self, messages: "list[memoryview] | list[bytes]", out: "list[bytes]") -> None:
        """`decrypt` of each message in order (bytes or views), appending the
        non-empty plaintexts to `out`. At the first message that fails (a
        wrong size or authentication) DecryptError is raised and the session
        refuses everything after; `out` then holds exactly the plaintexts of
        the messages before it, as one `decrypt` per message would have given.
        """
        for i, message in enumerate(messages):
            if not TAG_LEN <= len(message) <= MAX_MESSAGE:
                self._recv.decrypt_many(b"", messages[:i], out)
                self._recv.fail()
                raise DecryptError(f"transport message of {len(message)} bytes")
        self._recv.decrypt_many(b"", messages, out)


def _encode_payload(identity: Identity, static_pub: bytes) -> bytes:
    sig = identity.sign(_SIG_PREFIX + static_pub)
    return protobuf_bytes_field(1, identity.public_key_proto) + protobuf_bytes_field(2, sig)


def _verify_payload(payload: bytes, remote_static: bytes) -> PeerId:
    """Check the remote's NoiseHandshakePayload; return the PeerId it proves."""
    key_proto = sig = None
    try:
        for number, value in protobuf_fields(payload):
            if number == 1 and isinstance(value, bytes):
                key_proto = value
            elif number == 2 and isinstance(value, bytes):
                sig = value
        if key_proto is None or sig is None:
            raise ValueError("payload lacks identity_key or identity_sig")
        key = decode_public_key(key_proto)
    except ValueError as exc:
        raise HandshakeError(f"bad handshake payload: {exc}") from None
    # Verify with the key itself: RSA and ECDSA ids are hashes that cannot.
    peer = PeerId.from_public_key(key)
    if not key.verify(sig, _SIG_PREFIX + remote_static):
        raise HandshakeError("remote's identity signature over its static key is invalid")
    return peer


class NoiseHandshake:
    """libp2p-noise XX handshake, driven like h11: it never touches a socket.

    Usage (either role)::

        while not hs.complete:
            if hs.my_turn:
                send(hs.write_message())
            else:
                hs.read_message(receive())
        session = hs.session()

    A fresh X25519 static key is made per handshake (libp2p-noise advises not
    to persist it); the Ed25519 identity signs it. The initiator checks
    `expected_peer` as soon as it reads message 2, before revealing its own
    identity in message 3. Any error leaves the handshake dead: every later
    call raises LocalProtocolError.
    """

    def __init__(
        self,
        role: Role,
        identity: Identity,
        expected_peer: PeerId | None = None,
        prologue: bytes = b"",
        *,
        static_key: X25519PrivateKey | None = None,
        ephemeral_key: X25519PrivateKey | None = None,
        cipher: NoiseCipher = NoiseCipher.CHACHAPOLY,
    ) -> None:
        """`cipher` must be what both sides agreed on before the handshake
        (multistream-select's protocol id): a mismatch fails message 2's
        authentication, as it changes the handshake hash and every key."""
        if expected_peer is not None and role is not Role.INITIATOR:
            raise LocalProtocolError("only the dialling side can expect a peer id")
        self.role = role
        self._identity = identity
        self._expected = expected_peer
        static = static_key or X25519PrivateKey.generate()
        self._static_pub = _public_bytes(static)
        self._hs = HandshakeState(
            role is Role.INITIATOR, static, prologue, ephemeral_key=ephemeral_key, cipher=cipher
        )
        self._remote: PeerId | None = None
        self._failed = False
        self._session: SecureSession | None = None

    @property
    def complete(self) -> bool:
        return self._hs.finished and not self._failed

    @property
    def my_turn(self) -> bool:
        return not self._failed and self._hs.my_turn

    @property
    def remote_peer(self) -> PeerId | None:
        """The remote's proven PeerId, once its payload has been checked."""
        return self._remote

    def write_message(self) -> bytes:
        """The next handshake message to send (unframed)."""
        self._check_alive()
        payload = b"" if self._hs.step == 0 else _encode_payload(self._identity, self._static_pub)
        return self._guard(self._hs.write_message, payload)

    def read_message(self, message: bytes) -> None:
        """Consume one handshake message (unframed) from the remote."""
        self._check_alive()
        payload = self._guard(self._hs.read_message, message)
        if self._hs.step == 1:
            # Message 1 carries only an ephemeral key; libp2p sends no payload
            # there, and anything it held would be unauthenticated anyway.
            return
        assert self._hs.rs is not None
        try:
            peer = _verify_payload(payload, self._hs.rs)
            if self._expected is not None and peer != self._expected:
                raise PeerIdMismatch(f"dialled {self._expected} but the remote proved {peer}")
        except P2PError:
            self._failed = True
            raise
        self._remote = peer

    def session(self) -> SecureSession:
        """The transport-phase session; only once `complete`.

        Always the same object: splitting twice would restart the nonces
        at zero under the same keys, which breaks ChaCha20-Poly1305.
        """
        if not self.complete or self._remote is None:
            raise LocalProtocolError("handshake not complete")
        if self._session is None:
            c1, c2 = self._hs.split()
            send, recv = (c1, c2) if self.role is Role.INITIATOR else (c2, c1)
            self._session = SecureSession(send, recv, self._remote, self._hs.handshake_hash)
        return self._session

    def _check_alive(self) -> None:
        if self._failed:
            raise LocalProtocolError("handshake already failed")

    def _guard(self, step: Callable[[bytes], bytes], arg: bytes) -> bytes:
        try:
            return step(arg)
        except HandshakeError:
            self._failed = True
            raise
