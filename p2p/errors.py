"""The one exception hierarchy of `p2p/`."""

from __future__ import annotations


class P2PError(Exception):
    """Base class for every error raised on purpose by `p2p/`."""

    hint: str = ""


class ProtocolError(P2PError):
    """The remote (or local) side broke the wire protocol. Close or ERROR."""


class LocalProtocolError(ProtocolError):
    """We tried to send something the protocol forbids (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The remote sent bytes that break the protocol (malformed, too big...).

    `code` is the wire ErrorCode to answer with (1 = malformed) and
    `request_id` the id the bad message carried (0 if unreadable), so the
    sender's request fails at once instead of waiting for its timeout.
    """

    def __init__(self, message: str, *, code: int = 1, request_id: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.request_id = request_id


class DecoderBug(ProtocolError):
    """Our decoder failed in a way no input may cause: a bug on our side.

    Raised by `codec.decode` for an exception class the decoder does not
    expect from bad input (KeyError, AttributeError...). The peer is not to
    blame: the node answers INTERNAL, logs the traceback, and neither counts
    it as the peer's malformed message nor closes the connection for it.
    `request_id` is the id the message carried (0 if unreadable).
    """

    def __init__(self, message: str, *, request_id: int = 0) -> None:
        super().__init__(message)
        self.request_id = request_id


class HandshakeError(P2PError):
    """The Noise handshake failed: bad bytes, bad signature, wrong peer id."""


class DecryptError(HandshakeError):
    """An encrypted frame failed authentication (tampered or replayed)."""


class PeerIdMismatch(HandshakeError):
    """The remote proved an identity other than the one we dialled."""


class InvalidMultiaddr(P2PError):
    hint = "addresses look like /ip4/127.0.0.1/tcp/4101/p2p/12D3KooW..."


class NoPeers(P2PError):
    hint = "start other nodes and pass --bootstrap, or check `shoal peers`"


class NodeNotRunning(P2PError):
    hint = "start one with `shoal node start`"


class InvalidPeerId(InvalidMultiaddr):
    """Text or bytes that are not a libp2p peer id."""

    hint = "peer ids look like 12D3KooW... (Ed25519, base58btc)"


class KeyFileError(P2PError):
    """The identity key file is unreadable, corrupt or readable by others."""

    hint = "chmod 600 it if it has not leaked, or delete it to create a new identity"


class NotReplicated(P2PError):
    """The node has no replication record for this object."""

    hint = "put it with `shoal put PATH --replicas N` on a running node"


class Released(P2PError):
    """The owner gave this object's replicas back (pin rm): nothing to audit."""

    hint = "put it again with `shoal put PATH --replicas N` to replicate it anew"


class NotOwner(P2PError):
    """Audits run on the object's owner (or its deputy), not on a holder."""

    hint = "run it on the owner's node; `shoal status CID` there shows the holders"


class LaneError(P2PError):
    """A lane process (shoal.p2p.lanes) could not start, or broke its control channel."""

    hint = "see the node's log; `shoal node start --lanes 1` runs without lane processes"


class ControlProtocolError(LaneError):
    """A malformed or oversized message on a node<->lane control channel."""
