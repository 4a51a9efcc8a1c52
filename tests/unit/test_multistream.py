"""Sans-IO multistream-select 1.0: both roles, fallback, ls, bounds and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from shoal.p2p.errors import LocalProtocolError, RemoteProtocolError
from shoal.p2p.libp2p import multistream as mss


def run(dialer: mss.Dialer, listener: mss.Listener, chunk: int = 1 << 20) -> tuple[mss.Event, mss.Event]:
    """Shuttle bytes between the two machines in `chunk`-sized pieces until both decide."""
    d_ev: mss.Event = mss.NeedData()
    l_ev: mss.Event = mss.NeedData()
    for _ in range(1000):
        to_l = dialer.data_to_send()
        for i in range(0, len(to_l), chunk):
            if isinstance(l_ev, mss.NeedData):
                l_ev = listener.receive_data(to_l[i : i + chunk])
        to_d = listener.data_to_send()
        for i in range(0, len(to_d), chunk):
            if isinstance(d_ev, mss.NeedData):
                d_ev = dialer.receive_data(to_d[i : i + chunk])
        if not isinstance(d_ev, mss.NeedData) and not to_l and not to_d:
            return d_ev, l_ev
    raise AssertionError("negotiation did not finish")


def test_wire_bytes_of_a_first_choice_match() -> None:
    dialer = mss.Dialer(["/noise"])
    assert dialer.data_to_send() == b"\x13/multistream/1.0.0\n\x07/noise\n"
    listener = mss.Listener(["/noise", "/tls/1.0.0"])
    assert listener.data_to_send() == b""  # silent until the dialer's header has arrived
    ev = listener.receive_data(b"\x13/multistream/1.0.0\n\x07/noise\nNOISE-BYTES")
    assert ev == mss.Selected("/noise", b"NOISE-BYTES")
    assert listener.data_to_send() == b"\x13/multistream/1.0.0\n\x07/noise\n"
    assert dialer.receive_data(b"\x13/multistream/1.0.0\n\x07/noise\nrest") == mss.Selected("/noise", b"rest")


@pytest.mark.parametrize("chunk", [1, 2, 7, 1 << 20])
def test_na_falls_back_to_the_second_protocol(chunk: int) -> None:
    d, l = run(mss.Dialer(["/a/2.0.0", "/a/1.0.0"]), mss.Listener(["/a/1.0.0"]), chunk)
    assert d == mss.Selected("/a/1.0.0") and l == mss.Selected("/a/1.0.0")


def test_rejected_when_nothing_matches() -> None:
    d, l = run(mss.Dialer(["/x", "/y"]), mss.Listener(["/z"]))
    assert d == mss.Rejected(("/x", "/y"))
    assert isinstance(l, mss.NeedData)


def test_ls_is_answered_or_refused() -> None:
    listener = mss.Listener(["/b", "/a"])
    listener.data_to_send()
    assert listener.receive_data(mss.encode_message(mss.HEADER) + mss.encode_message("ls")) == mss.NeedData()
    out = listener.data_to_send()
    header = mss.encode_message(mss.HEADER)
    assert out.startswith(header)
    length, body = out[len(header)], out[len(header) + 1:]
    assert length == len(body)
    assert mss.parse_ls_response(body) == ["/a", "/b"]

    closed = mss.Listener(["/a"], allow_ls=False)
    closed.data_to_send()
    closed.receive_data(mss.encode_message(mss.HEADER) + mss.encode_message("ls"))
    assert closed.data_to_send() == mss.encode_message(mss.HEADER) + mss.encode_message("na")


@pytest.mark.parametrize("role", ["listener", "dialer"])
def test_a_wrong_first_byte_is_refused_at_once_and_the_listener_says_nothing(role: str) -> None:
    """Noise from a peer without the swarm key: refused on its first byte that
    cannot start the header (not after waiting for a claimed 1 KiB message),
    and a listener has sent nothing by then."""
    header = mss.encode_message(mss.HEADER)
    for garbage in (b"\x7f", b"\x13/multistream/2", b"\x05hello", header[:10] + b"X"):
        machine = mss.Listener(["/a"]) if role == "listener" else mss.Dialer(["/a"])
        machine.data_to_send()
        with pytest.raises(RemoteProtocolError):
            for i in range(len(garbage)):  # byte by byte: refused as soon as it is wrong
                machine.receive_data(garbage[i : i + 1])
        assert i == next(j for j, b in enumerate(garbage) if b != header[j])
        if role == "listener":
            assert machine.data_to_send() == b""
    listener = mss.Listener(["/a"])
    assert listener.receive_data(header[:7]) == mss.NeedData()  # a right prefix waits
    assert listener.data_to_send() == b""


def test_bounds() -> None:
    listener = mss.Listener(["/a"])
    with pytest.raises(RemoteProtocolError):  # length 1025 refused on its prefix alone
        listener.receive_data(b"\x81\x08")
    with pytest.raises(RemoteProtocolError):  # a 3-byte varint is never a valid length
        mss.Listener(["/a"]).receive_data(b"\x80\x80\x01")
    flood = mss.Listener(["/a"])
    flood.receive_data(mss.encode_message(mss.HEADER))
    with pytest.raises(RemoteProtocolError):
        flood.receive_data(b"".join(mss.encode_message(f"/p{i}") for i in range(mss.MAX_PROPOSALS + 1)))
    with pytest.raises(RemoteProtocolError):
        mss.Listener(["/a"]).receive_data(mss.encode_message("/multistream/2.0.0"))
    with pytest.raises(RemoteProtocolError):  # no trailing newline
        mss.Dialer(["/a"]).receive_data(b"\x02/a")
    with pytest.raises(LocalProtocolError):
        mss.Dialer([f"/p{i}" for i in range(mss.MAX_PROPOSALS + 1)])
    with pytest.raises(LocalProtocolError):
        mss.Dialer(["/" + "x" * 1023])
    with pytest.raises(LocalProtocolError):
        mss.Dialer(["/a\n"])


def test_dialer_refuses_an_answer_it_did_not_propose() -> None:
    dialer = mss.Dialer(["/a"])
    with pytest.raises(RemoteProtocolError):
        dialer.receive_data(mss.encode_message(mss.HEADER) + mss.encode_message("/b"))


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_fuzz_random_bytes_raise_only_protocol_errors(pieces: list[bytes]) -> None:
    for machine in (mss.Dialer(["/a", "/b"]), mss.Listener(["/a", "/b"])):
        try:
            for piece in pieces:
                ev = machine.receive_data(piece)
                if not isinstance(ev, mss.NeedData):
                    break
        except RemoteProtocolError:
            pass


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["/a", "/b", "/c", "ls", "na", "/x/1.0.0"]), min_size=1, max_size=6),
       st.binary(max_size=40), st.integers(1, 9))
def test_fuzz_valid_framing_random_content(words: list[str], tail: bytes, chunk: int) -> None:
    wire = mss.encode_message(mss.HEADER) + b"".join(mss.encode_message(w) for w in words) + tail
    listener = mss.Listener(["/c"])
    try:
        for i in range(0, len(wire), chunk):
            ev = listener.receive_data(wire[i : i + chunk])
            if isinstance(ev, mss.Selected):
                assert ev.protocol == "/c"
                break
    except RemoteProtocolError:
        pass
