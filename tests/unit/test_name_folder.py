"""Folder and Hugging Face snapshot import for name records (shoal.store.names.folder)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from shoal.store.dag.exporter import read_file
from shoal.store.errors import InvalidInput
from shoal.store.ipld.cid import parse_cid
from shoal.store.names.folder import derived_commit, hash_file, hf_snapshot, import_folder
from shoal.store.persist.repo import Repo

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_snapshot(cache: Path, kind: str = "models") -> tuple[Path, dict[str, bytes]]:
    """A cache laid out as huggingface_hub writes it: snapshot files are relative symlinks to blobs."""
    root = cache / f"{kind}--org--tiny-model"
    contents = {"config.json": b'{"a": 1}', "sub/weights.bin": os.urandom(3 * 1024 * 1024 + 5)}
    (root / "blobs").mkdir(parents=True)
    snap = root / "snapshots" / COMMIT
    for rel, data in contents.items():
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(COMMIT)
    return snap, contents


@pytest.fixture
def repo(tmp_path: Path) -> Repo:
    r = Repo.init(tmp_path / "repo")
    yield r  # type: ignore[misc]
    r.close()


def test_plain_folder_gets_hashes_cids_and_a_derived_commit(tmp_path: Path, repo: Repo) -> None:
    folder = tmp_path / "m"
    (folder / "d").mkdir(parents=True)
    contents = {"a.txt": b"hello", "d/b.bin": os.urandom(2 * 1024 * 1024 + 1), "empty": b""}
    for rel, data in contents.items():
        (folder / rel).write_bytes(data)
    got = import_folder(repo, folder)
    put = repo.add(folder)
    assert got.cid == str(put.cid), "the same directory CID `shoal put DIR` gives"
    assert got.snapshot is None
    assert got.commit == derived_commit(got.cid) and len(got.commit) == 40
    assert [f.path for f in got.files] == ["a.txt", "d/b.bin", "empty"]
    for f in got.files:
        data = contents[f.path]
        assert (f.size, f.sha256, f.git_sha1) == (len(data), hashlib.sha256(data).hexdigest(), git_blob_sha1(data))
        assert b"".join(read_file(repo.blockstore, parse_cid(f.cid))) == data
    assert any(p.cid == got.cid for p in repo.pins())


def test_git_blob_id_matches_git_for_a_known_value(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"hello\n")
    # `echo hello | git hash-object --stdin`
    assert hash_file(p) == (6, hashlib.sha256(b"hello\n").hexdigest(), "ce013625030ba8dba906f756967f9e9ca394464a")


def test_hf_snapshot_is_recognised_and_its_symlinks_followed(tmp_path: Path, repo: Repo) -> None:
    snap, contents = make_snapshot(tmp_path / "hub")
    info = hf_snapshot(snap)
    assert info is not None and (info.kind, info.repo, info.commit) == ("model", "org/tiny-model", COMMIT)
    got = import_folder(repo, snap)
    assert got.commit == COMMIT
    assert {f.path: f.sha256 for f in got.files} == {k: hashlib.sha256(v).hexdigest() for k, v in contents.items()}
    ds, _ = make_snapshot(tmp_path / "hub2", kind="datasets")
    assert hf_snapshot(ds) is not None and hf_snapshot(ds).kind == "dataset"  # type: ignore[union-attr]
    assert hf_snapshot(tmp_path) is None


def test_symlink_out_of_a_plain_folder_is_refused(tmp_path: Path, repo: Repo) -> None:
    secret = tmp_path / "secret.key"
    secret.write_bytes(b"do not publish")
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "ok.txt").write_bytes(b"fine")
    (folder / "inner").symlink_to("ok.txt")
    (folder / "leak").symlink_to(secret)
    with pytest.raises(InvalidInput, match="outside"):
        import_folder(repo, folder)
    assert repo.pins() == [], "nothing imported"
    (folder / "leak").unlink()
    got = import_folder(repo, folder)
    assert [f.path for f in got.files] == ["inner", "ok.txt"]


def test_snapshot_links_outside_the_repo_cache_dir_are_refused(tmp_path: Path, repo: Repo) -> None:
    snap, _ = make_snapshot(tmp_path / "hub")
    (tmp_path / "elsewhere").write_bytes(b"x")
    (snap / "evil").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidInput, match="outside"):
        import_folder(repo, snap)


def test_not_a_directory_and_loops_are_refused(tmp_path: Path, repo: Repo) -> None:
    with pytest.raises(InvalidInput):
        import_folder(repo, tmp_path / "absent")
    (tmp_path / "f").write_bytes(b"x")
    with pytest.raises(InvalidInput):
        import_folder(repo, tmp_path / "f")
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "self").symlink_to(".")
    with pytest.raises(InvalidInput, match="loop"):
        import_folder(repo, loop)
