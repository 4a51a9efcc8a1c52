"""The name book (shoal.store.names.book) and `Repo.names`."""

from __future__ import annotations

from pathlib import Path

from shoal.store.names.book import BOOK_FILE, NameBook
from shoal.store.persist.repo import Repo

from tests.unit.test_name_records import DIR_CID, PEER, cid_of, record

OTHER = "12D3KooWAaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"


def test_newest_seq_per_publisher_and_name_wins(tmp_path: Path) -> None:
    with NameBook(tmp_path / "b.sqlite") as book:
        assert book.put(record(seq=2))
        assert not book.put(record(seq=1, cid=cid_of(b"old"))), "an older record must not replace a newer one"
        assert not book.put(record(seq=2, cid=cid_of(b"same seq"))), "a same-seq record must not replace"
        assert book.resolve("model", "org/model", "main") == record(seq=2)
        assert book.put(record(seq=5, cid=cid_of(b"new")))
        got = book.resolve("model", "org/model", "main")
        assert got is not None and got.seq == 5 and got.cid == cid_of(b"new")
        assert book.latest_seq(PEER, "model", "org/model", "main") == 5
        assert book.latest_seq(PEER, "model", "org/model", "v2") is None


def test_resolve_by_revision_or_commit_kind_and_repo_exact(tmp_path: Path) -> None:
    with NameBook(tmp_path / "b.sqlite") as book:
        book.put(record(commit="12" * 20))
        assert book.resolve("model", "org/model", "12" * 20) == record(commit="12" * 20)
        assert book.resolve("model", "org/model", "34" * 20) is None
        assert book.resolve("dataset", "org/model", "main") is None
        assert book.resolve("model", "org/other", "main") is None
        assert book.resolve("model", "org/model", "v1") is None


def test_trust_filters_and_ties_are_deterministic(tmp_path: Path) -> None:
    with NameBook(tmp_path / "b.sqlite") as book:
        mine = record(seq=1)
        theirs = record(seq=7, publisher=OTHER, cid=cid_of(b"theirs"))
        book.put(mine)
        book.put(theirs)
        assert book.resolve("model", "org/model", "main") == theirs
        assert book.resolve("model", "org/model", "main", trusted=lambda p: p == PEER) == mine
        assert book.resolve("model", "org/model", "main", trusted=lambda p: False) is None
        tie = record(seq=1, publisher=OTHER, cid=cid_of(b"tie"), revision="v1")
        book.put(tie)
        book.put(record(seq=1, revision="v1"))
        best = book.resolve("model", "org/model", "v1")
        assert best is not None and best.publisher == min(PEER, OTHER)


def test_repos_lists_one_record_per_name(tmp_path: Path) -> None:
    with NameBook(tmp_path / "b.sqlite") as book:
        book.put(record(seq=1))
        book.put(record(seq=2, publisher=OTHER))
        book.put(record(kind="dataset", repo="org/data"))
        book.put(record(revision="v1"))
        listed = [(r.kind, r.repo, r.revision, r.publisher) for r in book.repos()]
        assert listed == [("dataset", "org/data", "main", PEER), ("model", "org/model", "main", OTHER),
                          ("model", "org/model", "v1", PEER)]
        assert [r.publisher for r in book.repos(trusted=lambda p: p == PEER)] == [PEER, PEER, PEER]
        assert [r.publisher for r in book.own_records(OTHER, 10)] == [OTHER]


def test_book_persists_and_a_missing_read_only_book_is_empty(tmp_path: Path) -> None:
    assert NameBook(tmp_path / "absent.sqlite", read_only=True).repos() == []
    assert not (tmp_path / "absent.sqlite").exists()
    with NameBook(tmp_path / "b.sqlite") as book:
        book.put(record())
    with NameBook(tmp_path / "b.sqlite", read_only=True) as ro:
        assert ro.resolve("model", "org/model", "main") == record()


def test_repo_names_is_opened_lazily_and_closed_with_the_repo(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    with Repo.init(path) as repo:
        assert not (path / BOOK_FILE).exists()
        assert repo.names.put(record())
        assert repo.names is repo.names
    with Repo.open(path, lock=False) as reader:
        got = reader.names.resolve("model", "org/model", "main")
        assert got is not None and got.cid == DIR_CID
    with Repo.open(path) as repo:
        assert repo.names.repos() == [record()]
