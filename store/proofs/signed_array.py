"""The canonical, owner-signed msgpack array that manifests are encoded as.

Why one module: a replica manifest (shoal.store.proofs.manifest) and an
erasure manifest (shoal.store.erasure.manifest) are both "what an owner
states, and signs, about one object", and must both be canonical: one
value, one byte string, one signature. They share the envelope: a msgpack
array in fixed field order (no maps, so no key-order ambiguity), ints in
msgpack's shortest form, bytes as bin, text as str, the version first and
the signature last; the signed bytes are a domain tag plus the same array
without the signature; decoding is bounded (input size, string, bin and
array lengths) and strict (it re-encodes and refuses anything that is not
byte-identical); and the same checks of the root CID, owner, creation time
and signature. What differs (the fields between, their limits, the error
type) is passed in.

Not here: signing and verifying (the p2p identity does that).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Sequence

import msgpack

from shoal.store.errors import InvalidCID
from shoal.store.ipld.cid import parse_cid

__all__ = ["SignedArray", "MAX_CID_TEXT", "MAX_OWNER", "MAX_SIGNATURE", "check_envelope", "is_int", "pack",
           "signing_bytes", "unpack_array"]

MAX_CID_TEXT = 128
MAX_OWNER = 128  # PeerId bytes; Ed25519 ones are 38
MAX_SIGNATURE = 128  # Ed25519 signatures are 64

Error = Callable[[str], Exception]
"""The caller's error type (a subclass of its package's error), built from a message."""


def is_int(v: object) -> bool:
    """An int that is not a bool (msgpack and Python both let True pass for 1)."""
    return isinstance(v, int) and not isinstance(v, bool)


def pack(fields: Sequence[object]) -> bytes:
    """Canonical bytes of a field array."""
    out: bytes = msgpack.packb(list(fields), use_bin_type=True)
    return out


def signing_bytes(domain: bytes, unsigned_fields: Sequence[object]) -> bytes:
    """What the owner's identity key signs: a domain tag, then the array without the signature."""
    return domain + pack(unsigned_fields)


def check_envelope(error: Error, root_cid: object, owner: object, created: object, signature: object) -> None:
    """The checks every signed manifest makes of the fields it shares with the others."""
    if not (isinstance(root_cid, str) and 0 < len(root_cid) <= MAX_CID_TEXT):
        raise error("bad root CID")
    try:
        parse_cid(root_cid)
    except InvalidCID as exc:
        raise error(f"bad root CID: {exc}") from None
    if not (isinstance(owner, bytes) and 0 < len(owner) <= MAX_OWNER):
        raise error("bad owner id")
    if not (isinstance(created, int) and is_int(created) and 0 <= created < 1 << 63):
        raise error("created out of range")
    if not (isinstance(signature, bytes) and len(signature) <= MAX_SIGNATURE):
        raise error("bad signature")


def unpack_array(data: bytes, *, error: Error, what: str, version: int, fields: int, max_bytes: int,
                 max_bin_len: int, max_array_len: int) -> list[Any]:
    """Strict, bounded decode of a field array; returns the fields after the version.

    Any: they are msgpack's, unchecked; the caller's constructor validates
    them. The caller builds its value from them and must then check that it
    re-encodes to exactly `data` (`pack` of its fields).
    """
    if len(data) > max_bytes:
        raise error("manifest too large")
    try:
        v = msgpack.unpackb(
            data, raw=False, use_list=True, strict_map_key=True,
            max_str_len=MAX_CID_TEXT, max_bin_len=max_bin_len,
            max_array_len=max_array_len, max_map_len=0, max_ext_len=0,
        )
    except Exception as exc:  # msgpack raises several unrelated types
        raise error(f"not {what}: {type(exc).__name__}") from None
    if not (isinstance(v, list) and len(v) == fields):
        raise error(f"manifest must be an array of {fields} elements")
    if not (is_int(v[0]) and v[0] == version):
        raise error("unknown manifest version")
    return list(v[1:])


class SignedArray(ABC):
    """Base of a signed manifest: `encode` and `signing_bytes` from its `_fields`.

    A subclass (a frozen dataclass) sets `sign_domain` and lists its fields,
    the signature last when `with_signature`.
    """

    sign_domain: ClassVar[bytes]

    @abstractmethod
    def _fields(self, with_signature: bool) -> list[object]:
        """The manifest's fields in wire order, the signature last when `with_signature`."""

    def encode(self) -> bytes:
        """Canonical bytes, signature included."""
        return pack(self._fields(True))

    def signing_bytes(self) -> bytes:
        """What the owner's identity key signs: everything but the signature."""
        return signing_bytes(self.sign_domain, self._fields(False))
