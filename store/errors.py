"""The one exception hierarchy of `store/`.

Every error a user can cause (bad CID, missing file, corrupt CAR, locked repo)
is a `StoreError` subclass, so the CLI maps them to one-line messages without
catching unrelated bugs.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base class for every error raised on purpose by `store/`."""

    hint: str = ""


class InvalidCID(StoreError):
    """Text or bytes that are not a CID this store understands."""

    hint = "CIDs look like bafy... (CIDv1, base32) or Qm... (CIDv0)"


class BlockNotFound(StoreError):
    """A block the operation needs is not in the local blockstore."""

    def __init__(self, cid: object) -> None:
        super().__init__(f"block not found: {cid}")
        self.cid = cid


class HashMismatch(StoreError):
    """Block bytes whose hash does not match their CID (corruption or forgery)."""

    def __init__(self, cid: object, detail: str = "") -> None:
        msg = f"block bytes do not match their CID {cid}"
        super().__init__(msg + (f": {detail}" if detail else ""))
        self.cid = cid


class MalformedBlock(StoreError):
    """A block that decodes badly (dag-pb, UnixFS, or an unknown codec)."""


class InvalidInput(StoreError):
    """Input bytes or paths that cannot be imported (e.g. bad safetensors)."""


class CarError(StoreError):
    """A CAR file that is malformed, truncated or holds bad blocks."""


class RepoError(StoreError):
    """Problems with the repo directory itself."""


class RepoNotInitialized(RepoError):
    hint = "run `shoal init` first, or pass --repo DIR"


class RepoNotEmpty(RepoError):
    """`init` on a directory that holds files of its own: never made a repo."""

    hint = "give --repo an empty or new directory"


class RepoLocked(RepoError):
    hint = "another shoal process (a node or an offline command) is using this repo"


class IndexMissing(RepoError):
    """`index.sqlite` of an existing repo is gone or empty: opening it must not
    silently start a fresh one, whose empty pin set would let gc delete every block."""

    hint = "run `shoal repair-index` to rebuild the objects and pins from the blocks (nothing is deleted)"


class IndexCorrupt(RepoError):
    """`index.sqlite` exists but is not a readable SQLite database."""

    hint = "run `shoal repair-index`: it moves the damaged index aside and rebuilds one from the blocks"


class GcRefused(RepoError):
    """gc would delete every block: the index holds no pin and never held one."""

    hint = ("if index.sqlite was lost or replaced, run `shoal repair-index` first; "
            "to delete every block anyway, run `shoal gc --force`")


class NotPinned(StoreError):
    """Unpinning something that is not pinned."""


class StorageFull(StoreError):
    """The disk is full (ENOSPC); nothing partial was committed."""

    hint = ("unpin what you no longer need (`shoal pin rm CID`) and run `shoal gc`, "
            "or free space elsewhere on that disk")


class ProofError(StoreError):
    """A proof of storage or an object manifest that is malformed."""
