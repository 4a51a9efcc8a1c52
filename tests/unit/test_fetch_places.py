"""A fetch ranks each block by its place in the DAG's depth-first walk
(shoal.p2p.exchange.fetch.child_place), so the planner requests blocks in the
order an export writes them whatever order their parents arrived in."""

from __future__ import annotations

from typing import Any

from hypothesis import assume, given, settings, strategies as st

from shoal.p2p.exchange.fetch import MAX_PLACE_DEPTH, child_place

# A tree: a list of subtrees (a leaf is the empty list).
trees = st.recursive(st.just([]), lambda kids: st.lists(kids, max_size=5), max_leaves=30)


def _depth(tree: list[Any]) -> int:
    return 1 + max((_depth(child) for child in tree), default=0)


def _preorder_with_places(tree: list[Any], place: tuple[int, ...], out: list[tuple[tuple[int, ...], int]],
                          counter: list[int]) -> None:
    me = counter[0]
    counter[0] += 1
    out.append((place, me))
    for i, child in enumerate(tree):
        _preorder_with_places(child, child_place(place, i), out, counter)


@given(trees)
@settings(max_examples=200, deadline=None)
def test_sorting_by_place_is_the_depth_first_pre_order(tree: list[Any]) -> None:
    assume(_depth(tree) <= MAX_PLACE_DEPTH)
    visited: list[tuple[tuple[int, ...], int]] = []
    _preorder_with_places(tree, (), visited, [0])
    # Blocks arrive in any order; sorted by place they come back in walk order.
    assert len({p for p, _ in visited}) == len(visited)  # one place per block
    shuffled = sorted(visited, key=lambda pv: hash(pv) % 7919)
    assert [v for _, v in sorted(shuffled, key=lambda pv: pv[0])] == [v for _, v in visited]


def test_a_deep_chain_keeps_places_short() -> None:
    place: tuple[int, ...] = ()
    for depth in range(10 * MAX_PLACE_DEPTH):
        place = child_place(place, depth % 3)
        assert len(place) <= MAX_PLACE_DEPTH
    assert len(place) == MAX_PLACE_DEPTH


def test_below_the_cap_children_share_their_ancestors_place() -> None:
    deep = tuple(range(MAX_PLACE_DEPTH))
    assert child_place(deep, 0) == child_place(deep, 9) == deep
    assert child_place(deep[:-1], 4) == deep[:-1] + (4,)
