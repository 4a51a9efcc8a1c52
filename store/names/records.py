"""Name records: (kind, org/name, revision) -> a directory CID, signed by a publisher.

A record says "publisher P states that the `kind` repository `repo` at
revision `revision` is the directory `cid`, git-like commit `commit`, with
these files", numbered by `seq` so that a publisher's newer statement about
the same (kind, repo, revision) replaces its older one. The signature is
made and checked in p2p/ (the store holds no keys); here is only what it
covers: `signing_bytes()`, a domain tag followed by the canonical msgpack
of every field but the signature, so a signature over a record can never be
replayed as a signature over anything else the node signs.

Codec: one msgpack array, hashes as raw bytes. `decode` refuses input over
MAX_RECORD_BYTES before unpacking and gives msgpack a cap for every string,
byte string and array, so a hostile record costs at most its own size in
memory; every field is then validated as when a record is built. Limits
are chosen so that a record of MAX_FILES files fits in one wire frame.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import msgpack

from shoal.store.errors import InvalidCID, InvalidInput
from shoal.store.ipld.cid import parse_cid

__all__ = [
    "RepoFile", "NameRecord", "InvalidNameRecord", "KINDS", "SIGNING_DOMAIN",
    "MAX_FILES", "MAX_RECORD_BYTES", "MAX_PATH_BYTES", "MAX_REPO_BYTES", "MAX_REVISION_BYTES",
    "validate_repo", "validate_revision",
]

SIGNING_DOMAIN = b"shoal/name-record/v1\x00"
"""Prefix of the signed bytes: separates name records from every other signed object."""

FORMAT_VERSION = 1
KINDS = ("model", "dataset")

MAX_RECORD_BYTES = 2 * 1024 * 1024 - 64 * 1024
"""An encoded record fits in one wire frame (2 MiB of block plus slack) with room for its envelope."""
MAX_FILES = 10_000
"""Files in one repository snapshot. HF model repos hold tens; large dataset
repos a few thousand. More is refused rather than silently truncated."""
MAX_PATH_BYTES = 1024
MAX_REPO_BYTES = 200
"""HF caps org and name at 96 characters each."""
MAX_REVISION_BYTES = 255
MAX_CID_BYTES = 128
MAX_PUBLISHER_BYTES = 128
MAX_SIGNATURE_BYTES = 64
MAX_SEQ = 2**63 - 1
MAX_FILE_SIZE = 2**63 - 1

_REPO_RE = re.compile(r"^[\w.-]+/[\w.-]+$", re.ASCII)
_REVISION_RE = re.compile(r"^[\w.-]+(/[\w.-]+)*$", re.ASCII)
_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_PEER_RE = re.compile(r"^[1-9A-HJ-NP-Za-km-z]+$")  # base58btc alphabet


class InvalidNameRecord(InvalidInput):
    """A name record (built or decoded) that breaks a rule of this module."""


def validate_repo(repo: str) -> str:
    """`org/name` as the Hub accepts it: word characters, `.` and `-`, one slash, no `..`."""
    if (not isinstance(repo, str) or len(repo.encode()) > MAX_REPO_BYTES
            or not _REPO_RE.match(repo) or ".." in repo):
        raise InvalidNameRecord(f"bad repository name {repo!r}: expected ORG/NAME "
                                "(letters, digits, '_', '.', '-'; no '..')")
    return repo


def validate_revision(revision: str) -> str:
    """A branch or tag name (`main`, `v1.0`, `refs/pr/1`): no empty segments, no `..`."""
    if (not isinstance(revision, str) or len(revision.encode()) > MAX_REVISION_BYTES
            or not _REVISION_RE.match(revision) or ".." in revision):
        raise InvalidNameRecord(f"bad revision {revision!r}: expected a branch or tag name "
                                "(letters, digits, '_', '.', '-', '/'; no '..')")
    return revision


def _check_path(path: str) -> None:
    if not isinstance(path, str) or not path or len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidNameRecord(f"bad file path {path!r}")
    for part in path.split("/"):
        if part in ("", ".", "..") or "\x00" in part or "\\" in part:
            raise InvalidNameRecord(f"bad file path {path!r}: empty, '.', '..' or NUL segment")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidNameRecord(f"file path {path!r} is not valid UTF-8") from None


def _check_cid(text: str, what: str) -> None:
    if not isinstance(text, str) or not text or len(text) > MAX_CID_BYTES:
        raise InvalidNameRecord(f"bad {what} CID {text!r}")
    try:
        parse_cid(text)
    except InvalidCID as exc:
        raise InvalidNameRecord(f"bad {what} CID {text!r}: {exc}") from None


def _check_int(value: int, what: str, top: int) -> None:
    if type(value) is not int or not 0 <= value <= top:
        raise InvalidNameRecord(f"bad {what} {value!r}")


@dataclass(frozen=True)
class RepoFile:
    """One file of a repository snapshot, with the ids Hugging Face clients check."""

    path: str       # posix path inside the repo: "config.json", "sub/dir/x.safetensors"
    size: int       # bytes
    sha256: str     # 64 lowercase hex: sha256 of the content (HF's LFS oid)
    git_sha1: str   # 40 lowercase hex: git blob id, sha1(b"blob %d\0" % size + content)
    cid: str        # the file's own CID (text) inside the directory DAG

    def __post_init__(self) -> None:
        _check_path(self.path)
        _check_int(self.size, "file size", MAX_FILE_SIZE)
        if not isinstance(self.sha256, str) or not _HEX64.match(self.sha256):
            raise InvalidNameRecord(f"{self.path}: sha256 must be 64 lowercase hex")
        if not isinstance(self.git_sha1, str) or not _HEX40.match(self.git_sha1):
            raise InvalidNameRecord(f"{self.path}: git_sha1 must be 40 lowercase hex")
        _check_cid(self.cid, f"{self.path!r} file")

    def _wire(self) -> list[Any]:
        return [self.path, self.size, bytes.fromhex(self.sha256), bytes.fromhex(self.git_sha1), self.cid]


@dataclass(frozen=True)
class NameRecord:
    """A publisher's signed statement that (kind, repo, revision) is directory `cid`."""

    repo: str        # "org/name"
    kind: str        # "model" | "dataset"
    revision: str    # branch/tag name, default "main"
    cid: str         # directory CID (text) of the whole snapshot
    commit: str      # 40 lowercase hex
    files: tuple[RepoFile, ...]   # sorted by path
    publisher: str   # peer id text of the signer
    seq: int         # per (publisher, kind, repo, revision), higher wins
    signature: bytes = field(default=b"")  # ed25519 over signing_bytes(), empty until signed

    def __post_init__(self) -> None:
        validate_repo(self.repo)
        if self.kind not in KINDS:
            raise InvalidNameRecord(f"bad repository type {self.kind!r}: expected model or dataset")
        validate_revision(self.revision)
        _check_cid(self.cid, "directory")
        if not isinstance(self.commit, str) or not _HEX40.match(self.commit):
            raise InvalidNameRecord(f"bad commit {self.commit!r}: expected 40 lowercase hex")
        if not isinstance(self.files, tuple) or len(self.files) > MAX_FILES:
            raise InvalidNameRecord(f"a record lists at most {MAX_FILES} files")
        previous = None
        for f in self.files:
            if not isinstance(f, RepoFile):
                raise InvalidNameRecord("files must be RepoFile values")
            key = f.path.encode()
            if previous is not None and key <= previous:
                raise InvalidNameRecord(f"files must be sorted by path without duplicates (at {f.path!r})")
            previous = key
        if (not isinstance(self.publisher, str) or not 0 < len(self.publisher) <= MAX_PUBLISHER_BYTES
                or not _PEER_RE.match(self.publisher)):
            raise InvalidNameRecord(f"bad publisher peer id {self.publisher!r}")
        _check_int(self.seq, "sequence number", MAX_SEQ)
        if not isinstance(self.signature, bytes) or len(self.signature) > MAX_SIGNATURE_BYTES:
            raise InvalidNameRecord("bad signature field")

    def _body(self) -> list[Any]:
        return [FORMAT_VERSION, self.repo, self.kind, self.revision, self.cid,
                bytes.fromhex(self.commit), [f._wire() for f in self.files], self.publisher, self.seq]

    def signing_bytes(self) -> bytes:
        """What the publisher signs: domain tag + canonical msgpack of all fields but the signature."""
        body: bytes = msgpack.packb(self._body(), use_bin_type=True)
        return SIGNING_DOMAIN + body

    def encode(self) -> bytes:
        """msgpack, for the wire and the book; InvalidNameRecord if over MAX_RECORD_BYTES."""
        data: bytes = msgpack.packb(self._body() + [self.signature], use_bin_type=True)
        if len(data) > MAX_RECORD_BYTES:
            raise InvalidNameRecord(f"record of {len(data)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
        return data

    @classmethod
    def decode(cls, data: bytes) -> "NameRecord":
        """The record in `data`; InvalidNameRecord for anything malformed or over a limit."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidNameRecord("a name record is bytes")
        if len(data) > MAX_RECORD_BYTES:
            raise InvalidNameRecord(f"record of {len(data)} bytes is over the {MAX_RECORD_BYTES}-byte limit")
        try:
            obj = msgpack.unpackb(
                bytes(data), raw=False, use_list=True, strict_map_key=True,
                max_str_len=max(MAX_PATH_BYTES, MAX_REVISION_BYTES, MAX_REPO_BYTES),
                max_bin_len=max(32, MAX_SIGNATURE_BYTES), max_array_len=max(MAX_FILES, 10),
                max_map_len=0, max_ext_len=0,
            )
        except Exception as exc:  # msgpack raises several unrelated types for bad input
            raise InvalidNameRecord(f"undecodable name record: {type(exc).__name__}") from None
        if not isinstance(obj, list) or len(obj) != 10:
            raise InvalidNameRecord("a name record is a 10-element array")
        version, repo, kind, revision, cid, commit, files, publisher, seq, signature = obj
        if version != FORMAT_VERSION:
            raise InvalidNameRecord(f"unknown name record version {version!r}")
        if not isinstance(commit, bytes) or len(commit) != 20:
            raise InvalidNameRecord("commit must be 20 bytes")
        if not isinstance(files, list):
            raise InvalidNameRecord("files must be an array")
        parsed = []
        for item in files:
            if not isinstance(item, list) or len(item) != 5:
                raise InvalidNameRecord("a file entry is a 5-element array")
            path, size, sha256, sha1, fcid = item
            if not isinstance(sha256, bytes) or len(sha256) != 32 or not isinstance(sha1, bytes) or len(sha1) != 20:
                raise InvalidNameRecord("bad file hash lengths")
            parsed.append(RepoFile(path, size, sha256.hex(), sha1.hex(), fcid))
        if not isinstance(signature, bytes):
            raise InvalidNameRecord("signature must be bytes")
        return cls(repo, kind, revision, cid, commit.hex(), tuple(parsed), publisher, seq, signature)
