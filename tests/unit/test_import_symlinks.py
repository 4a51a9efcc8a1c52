"""Model folders: symlinks followed (Hugging Face cache snapshots), loop-safe,
refused with follow_symlinks=False; the "auto" chunker picks per file
(issue 12, item 24)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import pytest

from shoal.store.persist.blockstore import MemoryBlockstore
from shoal.store.chunking.choice import PerFileChunker, chunker_for, is_safetensors
from shoal.store.errors import InvalidInput
from shoal.store.dag.disk_export import export_to_path
from shoal.store.dag.exporter import list_dir
from shoal.store.dag.importer import import_path
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.chunking.safetensors import SafetensorsChunker


def safetensors_bytes(n_floats: int = 3000) -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [n_floats], "data_offsets": [0, 4 * n_floats]},
                         "b": {"dtype": "F32", "shape": [2], "data_offsets": [4 * n_floats, 4 * n_floats + 8]}})
    raw = header.encode()
    return struct.pack("<Q", len(raw)) + raw + os.urandom(4 * n_floats + 8)


def hf_cache(root: Path) -> Path:
    """models--org--name/{blobs,snapshots/<commit>} as huggingface_hub lays it out."""
    repo = root / "models--org--name"
    blobs = repo / "blobs"
    blobs.mkdir(parents=True)
    (blobs / "aaa").write_bytes(safetensors_bytes())
    (blobs / "bbb").write_bytes(b'{"hidden": 8}\n')
    (blobs / "ccc").write_bytes(os.urandom(3 * 1024 * 1024 + 1))
    snap = repo / "snapshots" / "0123abcd"
    (snap / "tokenizer").mkdir(parents=True)
    (snap / "model.safetensors").symlink_to("../../blobs/aaa")
    (snap / "config.json").symlink_to("../../blobs/bbb")
    (snap / "tokenizer" / "vocab.bin").symlink_to("../../../blobs/ccc")
    return snap


def copy_dereferenced(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=False)
    return dst


def test_hugging_face_snapshot_imports_as_its_files(tmp_path: Path) -> None:
    snap = hf_cache(tmp_path)
    plain = copy_dereferenced(snap, tmp_path / "plain")
    bs = MemoryBlockstore()
    via_links = import_path(snap, bs)
    assert via_links.cid == import_path(plain, MemoryBlockstore()).cid
    export_to_path(bs, via_links.cid, tmp_path / "out")
    assert (tmp_path / "out" / "tokenizer" / "vocab.bin").read_bytes() == (plain / "tokenizer" / "vocab.bin").read_bytes()
    assert not (tmp_path / "out" / "config.json").is_symlink()


def test_no_follow_refuses_symlinks(tmp_path: Path) -> None:
    snap = hf_cache(tmp_path)
    with pytest.raises(InvalidInput, match="no-follow"):
        import_path(snap, MemoryBlockstore(), follow_symlinks=False)


def test_symlink_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_bytes(b"f")
    (tmp_path / "d" / "sub" / "up").symlink_to("..")
    with pytest.raises(InvalidInput, match="loop"):
        import_path(tmp_path / "d", MemoryBlockstore())
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "self").symlink_to(".")
    with pytest.raises(InvalidInput, match="loop"):
        import_path(tmp_path / "e", MemoryBlockstore())


def test_dangling_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "gone").symlink_to("nowhere")
    with pytest.raises(InvalidInput, match="broken symlink"):
        import_path(tmp_path / "d", MemoryBlockstore())


def test_fanned_out_symlinks_cost_their_distinct_targets(tmp_path: Path) -> None:
    """Each level links the next twice: 2^24 paths, 25 directories. Imported once each."""
    levels = 24
    for i in range(levels + 1):
        (tmp_path / f"l{i}").mkdir()
    (tmp_path / f"l{levels}" / "leaf").write_bytes(b"leaf")
    for i in range(levels):
        for name in ("a", "b"):
            (tmp_path / f"l{i}" / name).symlink_to(f"../l{i + 1}")
    bs = MemoryBlockstore()
    result = import_path(tmp_path / "l0", bs)
    assert [e.name for e in list_dir(bs, result.cid)] == ["a", "b"]
    assert len(result.keys) == levels + 2  # one block per directory, plus the leaf


def test_auto_chunker_per_file(tmp_path: Path) -> None:
    d = tmp_path / "model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(safetensors_bytes())
    (d / "config.json").write_bytes(b'{"a": 1}\n')
    (d / "weights.bin").write_bytes(os.urandom(2 * 1024 * 1024 + 3))
    auto = chunker_for("auto", DEFAULT_PROFILE, d)
    assert isinstance(auto, PerFileChunker)
    bs = MemoryBlockstore()
    root = import_path(d, bs, chunker=auto)
    entries = {e.name: e.cid for e in list_dir(bs, root.cid)}
    tensor_chunker = SafetensorsChunker(tensor_chunk_size=DEFAULT_PROFILE.chunk_size)
    assert entries["model.safetensors"] == import_path(d / "model.safetensors", MemoryBlockstore(),
                                                       chunker=tensor_chunker).cid
    assert entries["model.safetensors"] != import_path(d / "model.safetensors", MemoryBlockstore()).cid
    for name in ("config.json", "weights.bin"):  # fixed chunks: the IPFS CIDs
        assert entries[name] == import_path(d / name, MemoryBlockstore()).cid


def test_auto_without_safetensors_is_the_plain_import(tmp_path: Path) -> None:
    d = tmp_path / "data"
    (d / "sub").mkdir(parents=True)
    (d / "a.bin").write_bytes(os.urandom(1024 * 1024 + 1))
    (d / "sub" / "b.txt").write_bytes(b"b")
    assert import_path(d, MemoryBlockstore(), chunker=chunker_for("auto", DEFAULT_PROFILE, d)).cid == \
        import_path(d, MemoryBlockstore()).cid
    assert chunker_for("auto", DEFAULT_PROFILE, d / "a.bin") is None
    assert chunker_for("safetensors", DEFAULT_PROFILE, d).__class__ is PerFileChunker
    assert chunker_for("cdc", DEFAULT_PROFILE, d) is not None  # cdc now applies per file in a directory


def test_is_safetensors(tmp_path: Path) -> None:
    (tmp_path / "s").write_bytes(safetensors_bytes(4))
    (tmp_path / "t").write_bytes(safetensors_bytes(4)[:-1])
    (tmp_path / "j").write_bytes(b"{}")
    assert is_safetensors(tmp_path / "s")
    assert not is_safetensors(tmp_path / "t")
    assert not is_safetensors(tmp_path / "j")
    assert not is_safetensors(tmp_path / "missing")
