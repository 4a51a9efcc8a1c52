"""STAND-IN until the names helper's `shoal.p2p.names.service.resolver_of` lands (issue 14 item 5).

Reads name records from the JSON file named by $SHOAL_HF_RECORDS (a list of
{"repo", "kind", "revision", "cid", "commit", "files": [{"path", "size",
"sha256", "git_sha1", "cid"}]}); no signatures, no trust policy. Deleted
when the real resolver is on main.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StandinFile:
    path: str
    size: int
    sha256: str
    git_sha1: str
    cid: str


@dataclass(frozen=True)
class StandinRecord:
    repo: str
    kind: str
    revision: str
    cid: str
    commit: str
    files: tuple[StandinFile, ...]


class StandinResolver:
    def __init__(self, records: list[StandinRecord]) -> None:
        self.records = records

    def resolve(self, kind: str, repo: str, revision: str) -> StandinRecord | None:
        for r in self.records:
            if r.kind == kind and r.repo == repo and revision in (r.revision, r.commit):
                return r
        return None

    def repos(self) -> list[StandinRecord]:
        return list(self.records)


def resolver_of(node: Any) -> StandinResolver:
    path = os.environ.get("SHOAL_HF_RECORDS")
    if not path or not os.path.exists(path):
        return StandinResolver([])
    with open(path) as fh:
        docs = json.load(fh)
    return StandinResolver([StandinRecord(d["repo"], d["kind"], d["revision"], d["cid"], d["commit"],
                                          tuple(StandinFile(**f) for f in d["files"])) for d in docs])
