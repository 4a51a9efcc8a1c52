"""Our Noise core against published Noise_XX_25519_{ChaChaPoly,AESGCM}_SHA256 vectors.

The vectors (cacophony and snow, see the file's `_source`) fix every key and
the prologue; each handshake and transport message must match byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shoal.p2p.secure.noise import CipherState, HandshakeState, NoiseCipher

VECTOR_DIR = Path(__file__).parent / "vectors"
FILES = {NoiseCipher.CHACHAPOLY: VECTOR_DIR / "noise_xx_25519_chachapoly_sha256.json",
         NoiseCipher.AESGCM: VECTOR_DIR / "noise_xx_25519_aesgcm_sha256.json"}
VECTORS: list[tuple[NoiseCipher, dict[str, Any]]] = [
    (cipher, v) for cipher, path in FILES.items() for v in json.loads(path.read_text())["vectors"]]


def _key(hex_key: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(hex_key))


@pytest.mark.parametrize("cipher", list(NoiseCipher))
def test_vector_files_are_not_empty(cipher: NoiseCipher) -> None:
    mine = [v for c, v in VECTORS if c is cipher]
    assert len(mine) >= 2
    assert all(v["protocol_name"].encode() == cipher.protocol_name for v in mine)


@pytest.mark.parametrize("cipher,vector", VECTORS, ids=lambda x: x.value if isinstance(x, NoiseCipher)
                         else x["init_ephemeral"][:8])
def test_vector(cipher: NoiseCipher, vector: dict[str, Any]) -> None:
    assert not vector.get("init_psks") and not vector.get("resp_psks")
    init = HandshakeState(
        True,
        _key(vector["init_static"]),
        bytes.fromhex(vector["init_prologue"]),
        ephemeral_key=_key(vector["init_ephemeral"]),
        cipher=cipher,
    )
    resp = HandshakeState(
        False,
        _key(vector["resp_static"]),
        bytes.fromhex(vector["resp_prologue"]),
        ephemeral_key=_key(vector["resp_ephemeral"]),
        cipher=cipher,
    )
    messages = vector["messages"]
    transports: dict[bool, tuple[CipherState, CipherState]] = {}
    for i, msg in enumerate(messages):
        payload = bytes.fromhex(msg["payload"])
        expected = bytes.fromhex(msg["ciphertext"])
        # Turns alternate for the whole exchange, initiator first.
        from_initiator = i % 2 == 0
        if i < 3:
            sender, receiver = (init, resp) if from_initiator else (resp, init)
            assert sender.write_message(payload) == expected, f"handshake message {i}"
            assert receiver.read_message(expected) == payload
            if i == 2:
                assert init.finished and resp.finished
                if "handshake_hash" in vector:
                    assert init.handshake_hash.hex() == vector["handshake_hash"]
                assert init.handshake_hash == resp.handshake_hash
                i_c1, i_c2 = init.split()
                r_c1, r_c2 = resp.split()
                transports = {True: (i_c1, r_c1), False: (r_c2, i_c2)}
        else:
            send, recv = transports[from_initiator]
            assert send.encrypt_with_ad(b"", payload) == expected, f"transport message {i}"
            assert recv.decrypt_with_ad(b"", expected) == payload
    assert len(messages) > 3
