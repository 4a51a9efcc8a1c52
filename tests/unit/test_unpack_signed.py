"""unpack_signed: the one bounded msgpack decode that offers and shard maps
(and the owner's pushed offer lists) go through."""

from __future__ import annotations

import msgpack
import pytest

from shoal.p2p.errors import ProtocolError
from shoal.p2p.replication.ec_map import EcMap
from shoal.p2p.replication.signed import Offer, unpack_signed


def test_limits_and_one_error_type() -> None:
    assert unpack_signed(msgpack.packb([1, b"x"]), "thing", max_bin_len=4, max_array_len=2) == [1, b"x"]
    for bad in (msgpack.packb([b"12345"]), msgpack.packb([1, 2, 3]), msgpack.packb(["text"]),
                msgpack.packb({b"k": 1}), b"\xc1", b""):
        with pytest.raises(ProtocolError, match="^thing is not valid msgpack"):
            unpack_signed(bad, "thing", max_bin_len=4, max_array_len=2)


@pytest.mark.parametrize("decode,what", [(Offer.decode, "offer"), (EcMap.decode, "shard map")])
def test_offers_and_shard_maps_refuse_text_maps_and_junk_alike(decode: object, what: str) -> None:
    assert callable(decode)
    for bad in (msgpack.packb([1, "text"]), msgpack.packb({b"k": 1}), b"\xc1"):
        with pytest.raises(ProtocolError, match=f"^{what} is not valid msgpack"):
            decode(bad)
