"""Seeded fuzz of FrameDecoder + decode: only RemoteProtocolError, bounded memory.

Over 100,000 frames, most of them mutations of valid encodings of every
message type (bit flips, truncations, splices, type and version swaps,
structure-aware field swaps, huge declared lengths inside msgpack, lying
frame lengths), pushed through one FrameDecoder per "connection" in random
chunk sizes. A framing error ends the connection, as in the node. The seed is
fixed so any failure reproduces; set SHOAL_FUZZ_SEED (and SHOAL_FUZZ_FRAMES)
to explore further.
"""

from __future__ import annotations

import os
import random
import time
import tracemalloc
from collections.abc import Callable

import msgpack

from shoal.p2p.wire import limits as L
from shoal.p2p.wire.codec import decode, encode
from shoal.p2p.errors import RemoteProtocolError
from shoal.p2p.wire.framing import FrameDecoder, encode_frame
from shoal.p2p.wire.messages import (
    MESSAGE_TYPES, AuditChallenge, AuditProof, Block, BlockMissing, DontHave, Error, GetLanes, GetPeers, Lanes,
    EcMapGet, EcMapPush, EcMapReply, Have, Hello, LedgerEntry, LedgerSummary, LedgerSummaryRequest, Message, NameAck, NamePublish, PeerInfo, Peers, Ping,
    Pong, ReleaseRequest, ReleaseResponse, StoreRequest, StoreResponse, WantBlock, WantHave,
)

SEED = int(os.environ.get("SHOAL_FUZZ_SEED", "20261128"))
FRAMES = int(os.environ.get("SHOAL_FUZZ_FRAMES", "100000"))
PEAK_BOUND = 8 * L.MAX_FRAME_BYTES  # the biggest legal frame is held a few times at most


def corpus(rng: random.Random) -> list[bytes]:
    """Valid encodings of every message type, small and near the caps."""

    def cid() -> bytes:
        return b"\x01\x55\x12\x20" + rng.randbytes(32)

    msgs: list[Message] = [
        Error(0, 1, "bad"), Error(9, 5, "busy " * 50),
        Hello(0, (1, 2), ("/ip4/10.0.0.1/tcp/4101", "/ip6/::1/tcp/4101"), "shoal/0.1", 10**12, 10**9),
        Ping(1, rng.randbytes(8)), Pong(1, b""),
        GetPeers(2, 64), GetLanes(2), Lanes(2, tuple(f"/ip4/10.0.0.1/tcp/{4102 + i}" for i in range(8))),
        Peers(2, tuple(PeerInfo(rng.randbytes(38), ("/ip4/1.2.3.4/tcp/1", "/dns4/x/tcp/2")) for _ in range(5))),
        WantHave(3, tuple(cid() for _ in range(40))), Have(0, (cid(),)), DontHave(3, (cid(), cid())),
        WantBlock(4, tuple(cid() for _ in range(16))),
        Block(4, cid(), rng.randbytes(1000)), Block(4, cid(), rng.randbytes(256 * 1024)), BlockMissing(4, cid()),
        StoreRequest(5, cid(), 2**40, rng.randbytes(300), rng.randbytes(64)),
        StoreResponse(5, True, "", rng.randbytes(64)), StoreResponse(5, False, "no space", b""),
        ReleaseRequest(8, cid(), rng.randbytes(64)), ReleaseResponse(8, cid(), True),
        AuditChallenge(6, cid(), rng.randbytes(32), 66, 30_000),
        AuditProof(6, cid(), rng.randbytes(32), rng.randbytes(5000), rng.randbytes(64)),
        LedgerSummaryRequest(7),
        LedgerSummary(7, (LedgerEntry("put", 12.5, 10**9), LedgerEntry("audit", 0.25, 4096))),
        NamePublish(10, rng.randbytes(3000)), NameAck(10, True),
        EcMapGet(11, cid()), EcMapPush(12, rng.randbytes(3000), rng.randbytes(20000)), EcMapReply(11, rng.randbytes(3000)),
        EcMapReply(12, b""),
    ]
    assert {type(m) for m in msgs} == set(MESSAGE_TYPES.values())
    return [encode(m) for m in msgs]


_WEIRD: list[object] = [
    0, 1, -1, 2**32, 2**64 - 1, -(2**63), True, False, None, 1.5, float("nan"), float("inf"),
    "", "x" * 300, "/ip4", b"", b"\x00" * 31, b"\x00" * 36, b"\x00" * 65, [], [b"x"], [[[]]],
    ["/a"], [[b"ab", ["/a"]]], [["put", 1.0, 1]], msgpack.ExtType(5, b"x"),
]


def mutate_structure(rng: random.Random, valid: bytes) -> bytes:
    """Replace one value anywhere in the message tree with a value of another shape."""
    obj = msgpack.unpackb(valid, raw=False)
    holder, index = obj, rng.randrange(len(obj))
    while isinstance(holder[index], list) and holder[index] and rng.random() < 0.5:
        holder, index = holder[index], rng.randrange(len(holder[index]))
    choice = rng.randrange(4)
    if choice == 0:
        holder[index] = rng.choice(_WEIRD)
    elif choice == 1:
        del holder[index]
    elif choice == 2:
        holder.insert(index, rng.choice(_WEIRD))
    else:
        holder[index] = {"k": holder[index]}
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def huge_length(rng: random.Random, valid: bytes) -> bytes:
    """Splice a msgpack header that claims a huge bin/str/array/map/ext."""
    token = rng.choice([
        b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff",
        b"\xdf\xff\xff\xff\xff", b"\xc9\xff\xff\xff\xff\x01", b"\xc5\xff\xff", b"\xdc\xff\xff",
        b"\xc6" + (L.MAX_FRAME_BYTES - 10).to_bytes(4, "big"),
    ])
    at = rng.randrange(len(valid) + 1)
    return valid[:at] + token + valid[at:]


def bit_flips(rng: random.Random, valid: bytes) -> bytes:
    buf = bytearray(valid)
    for _ in range(rng.randint(1, 8)):
        i = rng.randrange(min(len(buf), 64) if rng.random() < 0.7 else len(buf))
        buf[i] ^= 1 << rng.randrange(8)
    return bytes(buf)


def type_swap(rng: random.Random, valid: bytes) -> bytes:
    """A valid body under another (known or unknown) type code, or another version."""
    buf = bytearray(valid)
    slot = 2 if rng.random() < 0.8 else 1  # [array header, version, type, ...]
    buf[slot] = rng.choice([*MESSAGE_TYPES, 0, 0x7F, 0xCC, 0xC0, 0xA0])
    return bytes(buf)


MUTATORS: list[Callable[[random.Random, bytes], bytes]] = [
    mutate_structure,
    huge_length,
    bit_flips,
    type_swap,
    lambda rng, v: v[: rng.randrange(len(v))] or b"\x90",  # truncation
    lambda rng, v: v + rng.randbytes(rng.randint(1, 16)),  # trailing junk
    lambda rng, v: v[: rng.randrange(len(v))] + rng.choice([b"\x90", b"\x91" * 40, b"\xc1", b"\x80"]),
    lambda rng, v: rng.randbytes(rng.randint(1, 200)),  # pure noise
    lambda rng, v: b"\x9f" + b"\x9f" * rng.randint(1, 400),  # nesting bombs
    lambda rng, v: b"\x94\x01\x21\x01\xdc\x00\xff" + b"\x90" * 255,  # 255 empty lists as CIDs
    lambda rng, v: v,  # valid frames keep the streams realistic
]


def frame(rng: random.Random, payload: bytes) -> bytes:
    """Usually an honest length; sometimes a lie, zero or a huge value."""
    r = rng.random()
    if r < 0.94 or not payload:
        return encode_frame(payload or b"\xc0")
    if r < 0.97:
        lie = max(1, len(payload) + rng.randint(-8, 8))
        return lie.to_bytes(4, "big") + payload
    return rng.choice([0, L.MAX_FRAME_BYTES + 1, 2**32 - 1, 2**31]).to_bytes(4, "big") + payload


def test_fuzz_only_remote_protocol_error_escapes_and_memory_is_bounded() -> None:
    rng = random.Random(SEED)
    valid = corpus(rng)
    sent = decoded = rejected = framing_errors = 0
    decoder = FrameDecoder()
    tracemalloc.start()
    started = time.perf_counter()
    try:
        while sent < FRAMES:
            batch = [rng.choice(MUTATORS)(rng, rng.choice(valid)) for _ in range(rng.randint(1, 16))]
            stream = b"".join(frame(rng, p) for p in batch)
            sent += len(batch)
            pos = 0
            while pos < len(stream):
                step = rng.choice([1, 3, 7, 64, 1500, 65536, len(stream)])
                step = max(step, len(stream) // 64)  # byte-at-a-time only on small streams
                chunk, pos = stream[pos : pos + step], pos + step
                try:
                    payloads = decoder.feed(chunk)
                except RemoteProtocolError:
                    framing_errors += 1
                    decoder = FrameDecoder()  # the node closes the connection; a new one starts clean
                    break
                assert decoder.buffered <= L.MAX_DECODER_BUFFER_BYTES
                for payload in payloads:
                    try:
                        msg = decode(payload)
                    except RemoteProtocolError:
                        rejected += 1
                        continue
                    assert isinstance(msg, Message)
                    decoded += 1
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    print(
        f"\nfuzz seed={SEED}: {sent} frames in {elapsed:.1f}s ({sent / elapsed:,.0f} frames/s, "
        f"under tracemalloc); decoded {decoded}, rejected {rejected}, "
        f"framing errors {framing_errors}, peak {peak / 2**20:.1f} MiB"
    )
    assert sent >= FRAMES
    assert peak < PEAK_BOUND, f"peak traced memory {peak} bytes"
    assert rejected > FRAMES // 4 and decoded > FRAMES // 20  # the mutators really mutate
    assert framing_errors > 100


def test_every_single_byte_truncation_and_flip_of_every_type() -> None:
    """Exhaustive on the small encodings: every prefix and every one-bit flip."""
    for valid in corpus(random.Random(SEED)):
        if len(valid) > 2048:
            continue
        for cut in range(len(valid)):
            try:
                decode(valid[:cut])
            except RemoteProtocolError:
                pass
        for i in range(min(len(valid), 256)):
            for bit in range(8):
                buf = bytearray(valid)
                buf[i] ^= 1 << bit
                try:
                    decode(bytes(buf))
                except RemoteProtocolError:
                    pass
