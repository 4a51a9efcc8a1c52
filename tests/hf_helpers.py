"""Shared by the Hugging Face route tests: a model folder, and name records made the way
`shoal hf import` makes them (sha256, git blob sha1 and CID of every file)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import PROJECT_ROOT, write_random

OLD_HF = PROJECT_ROOT / ".venv" / "hf-old"  # huggingface_hub 0.20.x, installed by scripts/setup.sh


def make_model(root: Path, big: int = 2 * 1024 * 1024 + 4321) -> dict[str, bytes]:
    """A small HF-shaped repo: config, a multi-block safetensors (LFS), a nested file (not LFS)."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "config.json": json.dumps({"model_type": "shoal-test", "hidden": 8}).encode(),
        "model.safetensors": write_random(root / "model.safetensors", big, seed=11),
        "tokenizer/vocab.txt": b"".join(b"tok%d\n" % i for i in range(3000)),
        "README.md": b"# test model\n",
    }
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists():
            p.write_bytes(data)
    return files


@dataclass(frozen=True)
class FileRow:
    path: str
    size: int
    sha256: str
    git_sha1: str
    cid: str


@dataclass(frozen=True)
class Record:
    repo: str
    kind: str
    revision: str
    cid: str
    commit: str
    files: tuple[FileRow, ...]


class Resolver:
    """What `resolver_of(node)` gives, over a fixed list of records."""

    def __init__(self, records: list[Record]) -> None:
        self.records = records

    def resolve(self, kind: str, repo: str, revision: str) -> Record | None:
        for r in self.records:
            if r.kind == kind and r.repo == repo and revision in (r.revision, r.commit):
                return r
        return None

    def repos(self) -> list[Record]:
        return list(self.records)


def file_rows(folder: Path, cids: dict[str, str]) -> tuple[FileRow, ...]:
    rows = []
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            rel = p.relative_to(folder).as_posix()
            rows.append(FileRow(rel, len(data), hashlib.sha256(data).hexdigest(),
                                hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest(), cids[rel]))
    return tuple(sorted(rows, key=lambda r: r.path))


def make_record(repo: str, kind: str, folder: Path, dir_cid: str, cids: dict[str, str],
                revision: str = "main") -> Record:
    commit = hashlib.sha1(f"{repo}\0{dir_cid}".encode()).hexdigest()
    return Record(repo, kind, revision, dir_cid, commit, file_rows(folder, cids))


def run_client(code: str, endpoint: str, cache: Path, old: bool = False, timeout: float = 240,
               args: list[str] | None = None) -> Any:
    """Run `code` (which prints one JSON line last) with the real huggingface_hub in a fresh process."""
    env = dict(os.environ)
    env.update({"HF_ENDPOINT": endpoint, "HF_HUB_CACHE": str(cache), "HF_HOME": str(cache / "home"),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
                "HF_HUB_ETAG_TIMEOUT": "60", "HF_HUB_DOWNLOAD_TIMEOUT": "60", "NO_PROXY": "*"})
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        env.pop(var, None)
    if old:
        env["PYTHONPATH"] = str(OLD_HF)
    proc = subprocess.run([sys.executable, "-c", code, *(args or [])], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=str(cache))
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])
