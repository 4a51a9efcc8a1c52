"""The one table of Shoal protocol ids (shoal.p2p.wire.protocols): every
message type is on it, a request and its answers share a protocol, and a
node serves a family only when something handles its requests."""

from __future__ import annotations

import re
import sys

from shoal.p2p.wire import protocols as P
from shoal.p2p.wire.messages import (
    MESSAGE_TYPES, RESPONSES, Block, Error, Hello, Message, NamePublish, Ping, StoreRequest, WantHave,
)


def _subclasses(cls: type[Message]) -> set[type[Message]]:
    """Every Message class Shoal defines (not a test's own, and not the
    class a slots dataclass replaced, which lingers among the subclasses)."""
    out: set[type[Message]] = set()
    for sub in cls.__subclasses__():
        out |= _subclasses(sub)
        module = sys.modules.get(sub.__module__)
        if sub.__module__.startswith("shoal.") and getattr(module, sub.__name__, None) is sub:
            out.add(sub)
    return out


def test_every_message_type_has_its_protocol() -> None:
    kinds = _subclasses(Message)
    assert kinds, "no Message subclasses found"
    missing = sorted(k.__name__ for k in kinds if k not in P.PROTOCOL_OF)
    assert not missing, f"add these to shoal.p2p.wire.protocols.PROTOCOL_OF: {missing}"
    assert set(MESSAGE_TYPES.values()) == set(P.PROTOCOL_OF)
    # Only ERROR travels on every stream.
    assert [k for k, p in P.PROTOCOL_OF.items() if p is None] == [Error]


def test_protocol_ids_are_shoal_ids_and_every_one_is_used() -> None:
    assert len(set(P.ALL)) == len(P.ALL) and P.ALL[0] == P.SESSION
    for protocol in P.ALL:
        assert re.fullmatch(r"/shoal/[a-z]+/1\.0\.0", protocol), protocol
    used = {p for p in P.PROTOCOL_OF.values() if p is not None}
    assert used == set(P.ALL)
    assert P.BUILT_IN <= set(P.ALL) and P.BULK == {P.EXCHANGE}


def test_a_request_and_its_answers_share_one_protocol() -> None:
    for request, answers in RESPONSES.items():
        assert request.ROLE == "request"
        for answer in answers:
            assert P.carries(P.protocol_of(request) or "", answer), (request.__name__, answer.__name__)


def test_carries() -> None:
    assert P.carries(P.SESSION, Hello) and P.carries(P.SESSION, Ping)
    assert not P.carries(P.SESSION, WantHave) and not P.carries(P.EXCHANGE, Hello)
    assert P.carries(P.EXCHANGE, Block) and P.carries(P.NAMES, Error) and P.carries(P.EXCHANGE, Error)


def test_served_protocols_follow_the_handlers() -> None:
    assert P.served([]) == [P.SESSION, P.EXCHANGE]
    assert P.served([NamePublish]) == [P.SESSION, P.EXCHANGE, P.NAMES]
    assert P.served([StoreRequest, NamePublish, Ping]) == [P.SESSION, P.EXCHANGE, P.REPLICATION, P.NAMES]
