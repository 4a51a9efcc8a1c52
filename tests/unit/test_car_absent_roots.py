"""A CAR whose header names a root it does not carry (issue 12).

Such a root used to import silently (and be pinned if a block of that CID
happened to be stored). Now the result lists it in `absent_roots`, the repo
pins only roots the file carries, and `shoal car import` warns on stderr.
Fuzz-style: hypothesis picks which blocks go into the CAR and which roots
its header names.
"""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.ipld.car import import_car, write_car
from shoal.store.ipld.cid import CID, make_cid
from shoal.store.persist.repo import Repo
from tests.helpers import run_shoal

BLOCKS = [(make_cid("raw", b"block %d" % i), b"block %d" % i) for i in range(6)]


def _car(roots: list[CID], blocks: list[tuple[CID, bytes]]) -> bytes:
    out = io.BytesIO()
    write_car(out, roots, blocks)
    return out.getvalue()


@settings(max_examples=150, deadline=None)
@given(inside=st.sets(st.integers(0, 5)), named=st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True))
def test_absent_roots_are_exactly_the_named_roots_not_in_the_file(inside: set[int], named: list[int]) -> None:
    roots = [BLOCKS[i][0] for i in named]
    result = import_car(io.BytesIO(_car(roots, [BLOCKS[i] for i in sorted(inside)])), MemoryBlockstore())
    assert [str(r) for r in result.absent_roots] == [str(BLOCKS[i][0]) for i in named if i not in inside]
    assert result.roots == roots


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(inside=st.sets(st.integers(0, 5)), named=st.lists(st.integers(0, 5), min_size=1, max_size=4, unique=True),
       stored=st.sets(st.integers(0, 5)))
def test_the_repo_pins_only_roots_the_file_carries(tmp_path_factory: object, inside: set[int], named: list[int],
                                                   stored: set[int]) -> None:
    path = tmp_path_factory.mktemp("repo")  # type: ignore[attr-defined]
    with Repo.init(path / "r") as repo:
        for i in stored:  # a block of that CID may already be here: still not the CAR's to pin
            repo.blockstore.put(*BLOCKS[i])
        roots = [BLOCKS[i][0] for i in named]
        result = repo.import_car(io.BytesIO(_car(roots, [BLOCKS[i] for i in sorted(inside)])))
        carried = [str(BLOCKS[i][0]) for i in named if i in inside]
        assert [str(r) for r in result.pinned] == carried
        assert sorted(p.cid for p in repo.pins()) == sorted(carried)
        assert result.as_json()["absent_roots"] == [str(BLOCKS[i][0]) for i in named if i not in inside]


def test_car_import_warns_about_a_root_not_in_the_file(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert run_shoal(repo, "init").code == 0
    present, absent = BLOCKS[0], BLOCKS[1]
    car = tmp_path / "lying.car"
    car.write_bytes(_car([present[0], absent[0]], [present]))
    r = run_shoal(repo, "car", "import", str(car))
    assert r.code == 0, r.err
    warnings = [line for line in r.err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(absent[0]) in warnings[0] and "not pinned" in warnings[0], r.err
    pins = run_shoal(repo, "pin", "ls", "--json")
    assert pins.code == 0, pins.err
    assert str(absent[0]) not in pins.text and str(present[0]) in pins.text
