"""The one depth-first DAG walk: which CID to visit next, nothing else.

Why one: fetch, range fetch, their completeness checks, commitment
building, CAR export and import each walked a DAG with their own stack and
their own `seen` set, and each had to get the same details right (visit
order, what counts as the same block, when to stop). `DagWalk` holds only
that part. It is sans-IO: it never reads a block, never checks a store,
never waits. The caller visits each CID it hands out and then says which
links to follow (`push`), so

- a full walk pushes every link of a block it read;
- a range walk pushes only the children whose byte span covers the range;
- a fetch pushes nothing for a block it does not have yet ("fetch it,
  come back later") and pushes its links when it arrives, on the same walk;
- a check that only needs presence pushes nothing for a raw leaf.

Order: depth-first pre-order, links in their stored order, exactly as a
stack fed `reversed(links)` gives it (CAR export's section order, which the
interop tests compare with @ipld/car byte for byte, depends on it).

Dedupe: a CID whose key (`key=`) was handed out before is skipped, so each
block is visited once however often it is linked. What counts as "the same
block" is the caller's choice: `cid_key` (the binary CID: CIDv0 and CIDv1
are two visits), `block_identity` (codec + multihash: one visit), or no
dedupe (`key=None`: a range walk visits a block once per byte span it
covers). Seen means handed out, never "stored": whether a walk succeeded is
a question for the store (the fetches re-walk it at the end, with a fresh
`DagWalk`), not for this set.

Budget: `budget=n` ends the walk with WalkBudgetExceeded when an (n+1)th
CID would be handed out, so a caller that must bound its work against a
hostile DAG (many distinct blocks from few bytes) need not count itself.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence

from shoal.store.errors import StoreError
from shoal.store.ipld.cid import CID

__all__ = ["DagWalk", "WalkBudgetExceeded", "cid_key", "block_identity"]


class WalkBudgetExceeded(StoreError):
    """A walk would visit more blocks than its caller allowed."""


def cid_key(cid: CID) -> Hashable:
    """The binary CID: a CIDv0 and a CIDv1 of one block are different visits."""
    return bytes(cid)


def block_identity(cid: CID) -> Hashable:
    """Codec and multihash: a CIDv0 and a CIDv1 of one dag-pb block are one
    visit, while a raw reading of the same bytes (no links) is another."""
    return (int(cid.codec.code), bytes(cid.digest))


class DagWalk:
    """Depth-first pre-order over CIDs, deduplicated, driven by the caller.

    Iterate it for the CIDs to visit; after each, `push` the links to
    follow (possibly none, possibly later: pushing after the iteration
    ended resumes it on the next `next()`/`for`). Pushed CIDs are visited
    before anything pushed earlier, in the order given.
    """

    def __init__(self, roots: Iterable[CID] = (), *, key: Callable[[CID], Hashable] | None = cid_key,
                 budget: int | None = None) -> None:
        if budget is not None and budget < 0:
            raise ValueError("budget must be non-negative")
        self._stack: list[CID] = []
        self._key = key
        self._seen: set[Hashable] = set()
        self._budget = budget
        self.visited = 0
        """CIDs handed out so far."""
        self.push(list(roots))

    def push(self, cids: Sequence[CID]) -> None:
        """Visit `cids` next, in this order, each (unless seen) before anything pending."""
        self._stack.extend(reversed(cids))

    def seen(self, cid: CID) -> bool:
        """Whether a CID with this key was handed out already (always False without dedupe)."""
        return self._key is not None and self._key(cid) in self._seen

    @property
    def pending(self) -> bool:
        """Whether CIDs wait on the stack (some may turn out seen and be skipped)."""
        return bool(self._stack)

    def stop(self) -> None:
        """Drop everything pending: the walk ends (a later `push` starts it again)."""
        self._stack.clear()

    def __iter__(self) -> Iterator[CID]:
        return self

    def __next__(self) -> CID:
        stack = self._stack
        while stack:
            cid = stack.pop()
            key = None if self._key is None else self._key(cid)
            if key is not None and key in self._seen:
                continue
            if self._budget is not None and self.visited >= self._budget:
                stack.append(cid)  # still pending: the walk did not move
                raise WalkBudgetExceeded(f"walk of more than {self._budget} blocks")
            if key is not None:
                self._seen.add(key)
            self.visited += 1
            return cid
        raise StopIteration
