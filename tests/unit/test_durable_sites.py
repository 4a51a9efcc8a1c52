"""Every whole-file write of Shoal goes through shoal.store.persist.durable.

Checked from outside: os.fsync is spied on, and for each site the
directory holding the new file must be fsync'd at a moment when the file
already carries its final name (the rename is then durable), and no temp
file may be left beside it. config.toml, the API file, CAR exports and
exported files used to skip the directory fsync.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Callable

import pytest

from shoal.store.dag.disk_export import export_to_path
from shoal.store.dag.importer import import_path
from shoal.store.ipld.car import export_car_file
from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.persist.config import default_config, save_config
from shoal.store.persist.flatfs import FlatfsBlockstore
from shoal.store.persist.reserve import Reserve
from shoal.store.proofs.commit_files import build_commitment, commitment_file, leaves_file


class DirSyncs:
    """(directory, the names in it when it was fsync'd), for every directory fsync."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.seen: list[tuple[Path, set[str]]] = []
        real = os.fsync

        def spy(fd: int) -> None:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                path = Path(os.readlink(f"/proc/self/fd/{fd}"))
                self.seen.append((path, set(os.listdir(path))))
            real(fd)

        monkeypatch.setattr(os, "fsync", spy)

    def synced_with(self, target: Path) -> bool:
        return any(d == target.parent and target.name in names for d, names in self.seen)


def _no_temps(directory: Path) -> None:
    left = [p.name for p in directory.iterdir() if p.name.endswith((".tmp", ".part", ".partial"))]
    assert left == []


def _stored_file(tmp_path: Path) -> tuple[MemoryBlockstore, object]:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    store = MemoryBlockstore()
    return store, import_path(src, store).cid


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    save_config(path, default_config())
    return path


def _api(tmp_path: Path) -> Path:
    from shoal.p2p.net.service import write_api_file

    path = tmp_path / "api"
    write_api_file(path, "http://127.0.0.1:1", "token")
    assert json.loads(path.read_text())["token"] == "token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    return path


def _car(tmp_path: Path) -> Path:
    store, cid = _stored_file(tmp_path)
    path = tmp_path / "out" / "x.car"
    path.parent.mkdir()
    export_car_file(store, cid, path)  # type: ignore[arg-type]
    return path


def _export(tmp_path: Path) -> Path:
    store, cid = _stored_file(tmp_path)
    path = tmp_path / "out" / "deep" / "x.bin"
    export_to_path(store, cid, path)  # type: ignore[arg-type]
    assert path.stat().st_size == 300_000
    return path


def _export_new_dir(tmp_path: Path) -> Path:
    """A directory the export created must have its own name made durable too."""
    store, cid = _stored_file(tmp_path)
    export_to_path(store, cid, tmp_path / "out" / "deep" / "x.bin")  # type: ignore[arg-type]
    return tmp_path / "out"


def _commitment(tmp_path: Path) -> Path:
    store, cid = _stored_file(tmp_path)
    build_commitment(store, tmp_path / "repo", cid)  # type: ignore[arg-type]
    assert leaves_file(tmp_path / "repo", cid).exists()  # type: ignore[arg-type]
    return commitment_file(tmp_path / "repo", cid)  # type: ignore[arg-type]


def _commitment_new_dir(tmp_path: Path) -> Path:
    """`<repo>/proofs`, created by the first commitment, must be a durable name too."""
    _commitment(tmp_path)
    return tmp_path / "repo" / "proofs"


def _put_commitment_new_dir(tmp_path: Path) -> Path:
    """The same for a put that builds its commitment (Repo.add commit=True)."""
    from shoal.store.persist.repo import Repo

    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(300_000))
    with Repo.init(tmp_path / "repo") as repo:
        assert repo.add(src, commit=True).commitment is not None
    return tmp_path / "repo" / "proofs"


def _reserve(tmp_path: Path) -> Path:
    reserve = Reserve(tmp_path, target=256 * 1024)
    assert reserve.ensure()
    return reserve.path


def _sharding(tmp_path: Path) -> Path:
    FlatfsBlockstore(tmp_path / "blocks").close()
    return tmp_path / "blocks" / "SHARDING"


def _identity(tmp_path: Path) -> Path:
    from shoal.p2p.secure.identity import Identity

    path = tmp_path / "identity.key"
    first = Identity.load_or_create(path)
    assert Identity.load_or_create(path).peer_id == first.peer_id
    return path


SITES: dict[str, Callable[[Path], Path]] = {
    "config": _config, "api-file": _api, "car-export": _car, "export": _export,
    "export-new-dir": _export_new_dir, "commitment": _commitment, "reserve": _reserve,
    "commitment-new-dir": _commitment_new_dir, "put-commitment-new-dir": _put_commitment_new_dir,
    "sharding": _sharding, "identity": _identity,
}


@pytest.mark.parametrize("site", sorted(SITES))
def test_site_fsyncs_the_directory_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    site: str) -> None:
    syncs = DirSyncs(monkeypatch)
    target = SITES[site](tmp_path)
    assert target.exists()
    assert syncs.synced_with(target), (target, syncs.seen)
    _no_temps(target.parent)


@pytest.mark.parametrize("site", ["config", "api-file", "car-export", "export", "commitment"])
def test_site_failing_fsync_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, site: str) -> None:
    """The data fsync fails (an I/O error): the write fails and nothing half-written is left."""
    real = os.fsync

    def broken(fd: int) -> None:
        if stat.S_ISREG(os.fstat(fd).st_mode) and os.fstat(fd).st_size > 0:
            raise OSError(5, "Input/output error")
        real(fd)

    before = {p for p in tmp_path.rglob("*")}
    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(Exception):
        SITES[site](tmp_path)
    monkeypatch.undo()
    new = [p for p in tmp_path.rglob("*") if p not in before and p.is_file() and p.name != "src.bin"]
    assert new == []
