"""Sans-IO: the Hugging Face Hub routes of the gateway, parsed and shaped.

`huggingface_hub` pointed at the gateway (`HF_ENDPOINT=http://HOST:PORT` or
`endpoint=`) calls, for a repo `org/name` (or `name`), `kind` model or dataset:

- `GET /api/models/{repo}[/revision/{rev}]` (`/api/datasets/...`): the repo
  info (`id`, `sha` = the commit, `siblings[].rfilename`; with `?blobs=1`
  also `size`, `blobId`, `lfs`), which `snapshot_download` of 0.x clients
  lists files from;
- `GET /api/models/{repo}/tree/{rev}[/{path}]?recursive=...`: the tree
  (`type`, `path`, `size`, `oid`, `lfs{oid,size,pointerSize}`), paginated
  with `Link: <...>; rel="next"` (what 1.x `snapshot_download` lists from);
- `HEAD|GET /{repo}/resolve/{rev}/{path}` (`/datasets/{repo}/resolve/...`):
  the file, with `X-Repo-Commit`, `ETag` / `X-Linked-Etag`, `X-Linked-Size`,
  `Content-Length`, `Range`.

Errors are 404s with `X-Error-Code` (`RepoNotFound`, `RevisionNotFound`,
`EntryNotFound`), which the client turns into its own exception types. No
Xet headers are ever sent, so clients use plain HTTP; no redirect either
(the bytes are served on the request's own URL).

Which files carry an LFS oid (the sha256, used by clients as the ETag and
the cache blob name) follows what huggingface.co would store in LFS for a
repo created with its default `.gitattributes`: files over 10 MiB (the Hub
refuses larger plain git blobs) and files whose name matches the default
LFS patterns (`*.safetensors`, `*.bin`, ...). Every other file's ETag is its
git blob sha1, as on the Hub. So a client's cache filled from Shoal names
its blobs as one filled from huggingface.co does, and the tree's `lfs`
entries agree with the resolve ETags.

Nothing here touches sockets, trio or the store: the driver
(`shoal.p2p.gateway.hf_app`) resolves names and streams the bytes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Iterable, Protocol, Sequence
from urllib.parse import parse_qsl, quote, unquote

from shoal.p2p.gateway.params import MAX_PATH_BYTES, MAX_QUERY_BYTES, MAX_QUERY_PARAMS, GatewayRequestError

KINDS = {"models": "model", "datasets": "dataset"}
LFS_THRESHOLD = 10 * 1024 * 1024
LFS_POINTER_SIZE = 134  # an LFS pointer file: "version ...\noid sha256:<64>\nsize <n>\n" with a ~9-digit size
# The patterns of huggingface.co's default .gitattributes that a file name can match by its suffix.
LFS_SUFFIXES = (
    ".7z", ".arrow", ".bin", ".bz2", ".ckpt", ".ftz", ".gz", ".h5", ".joblib", ".mlmodel", ".model",
    ".msgpack", ".npy", ".npz", ".onnx", ".ot", ".parquet", ".pb", ".pickle", ".pkl", ".pt", ".pth",
    ".rar", ".safetensors", ".tar", ".tflite", ".tgz", ".wasm", ".xz", ".zip", ".zst", ".gguf",
)
DEFAULT_PAGE_SIZE = 1000
MAX_REPO_SEGMENT = 96
MAX_REVISION = 256
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_COMMIT = re.compile(r"[0-9a-f]{40}")
TRUE_VALUES = ("1", "true", "True", "yes")


class RepoFileLike(Protocol):
    """The fields of `shoal.store.names.records.RepoFile` the routes read."""

    @property
    def path(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def sha256(self) -> str: ...
    @property
    def git_sha1(self) -> str: ...
    @property
    def cid(self) -> str: ...


class NameRecordLike(Protocol):
    """The fields of `shoal.store.names.records.NameRecord` the routes read."""

    @property
    def repo(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def cid(self) -> str: ...
    @property
    def commit(self) -> str: ...
    @property
    def files(self) -> Sequence[RepoFileLike]: ...


class HfError(GatewayRequestError):
    """A refusal the Hub client understands: `code` goes out as `X-Error-Code`."""

    def __init__(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(status, message)
        self.code = code
        self.commit = commit

    def headers(self) -> list[tuple[bytes, bytes]]:
        pairs = [(b"x-error-code", self.code.encode()),
                 (b"x-error-message", _header_safe(str(self)).encode())]
        if self.commit is not None:
            pairs.append((b"x-repo-commit", self.commit.encode()))
        return pairs

    def body(self) -> bytes:
        return json.dumps({"error": str(self)}).encode()


@dataclass(frozen=True)
class HfRequest:
    """A validated Hub request: `action` is 'info', 'tree' or 'resolve'."""

    action: str
    kind: str
    repo: str
    revision: str
    path: str = ""
    """the file (resolve) or folder (tree, "" = the root), a posix path inside the repo"""
    head: bool = False
    recursive: bool = False
    blobs: bool = False
    cursor: int = 0
    """tree pagination: the index of the first entry of this page"""


def parse_hf_request(method: str, raw_path: str, query: bytes) -> HfRequest | None:
    """The Hub request `raw_path` (percent-encoded, no query) names, or None if it is no Hub route.

    Raises GatewayRequestError (400/405/414) for a Hub route that is malformed.
    """
    if len(raw_path.encode("latin-1", "replace")) > MAX_PATH_BYTES:
        raise GatewayRequestError(414, f"path longer than {MAX_PATH_BYTES} bytes")
    parts = raw_path.split("/")[1:]
    if not parts or not parts[0]:
        return None
    if parts[0] == "api":
        if len(parts) < 3 or parts[1] not in KINDS:
            return None
        kind, rest = KINDS[parts[1]], parts[2:]
        found = _split_repo(rest, ("revision", "tree"))
        if found is None:
            if 1 <= len(rest) <= 2 and all(_SEGMENT.fullmatch(s) for s in rest):
                found = ("/".join(rest), "", [])  # /api/models/{repo}: the default revision
            else:
                return None
        repo, word, tail = found
        if word == "":
            action, revision, path = "info", "main", ""
        elif word == "revision":
            if len(tail) != 1:
                return None
            action, revision, path = "info", _revision(tail[0]), ""
        else:
            if not tail:
                return None
            action, revision = "tree", _revision(tail[0])
            path = _repo_path([unquote(s) for s in tail[1:]], allow_empty=True)
    else:
        kind, rest = "model", parts
        if parts[0] == "datasets":
            kind, rest = "dataset", parts[1:]
        found = _split_repo(rest, ("resolve",))
        if found is None:
            return None
        repo, _word, tail = found
        if len(tail) < 2:
            return None
        action, revision = "resolve", _revision(tail[0])
        path = _repo_path([unquote(s) for s in tail[1:]], allow_empty=False)
    if method not in ("GET", "HEAD"):
        raise GatewayRequestError(405, f"{method} is not served: the gateway is read-only")
    params = _query(query)
    return HfRequest(action=action, kind=kind, repo=repo, revision=revision, path=path,
                     head=method == "HEAD", recursive=params.get("recursive", "") in TRUE_VALUES,
                     blobs=params.get("blobs", "") in TRUE_VALUES, cursor=_cursor(params.get("cursor")))


def _split_repo(parts: list[str], words: tuple[str, ...]) -> tuple[str, str, list[str]] | None:
    """(repo, keyword, the segments after it) for `org/name/<word>/...` or `name/<word>/...`."""
    for n in (2, 1):
        if len(parts) > n and parts[n] in words and all(_SEGMENT.fullmatch(s) and len(s) <= MAX_REPO_SEGMENT
                                                       for s in parts[:n]):
            return "/".join(parts[:n]), parts[n], parts[n + 1:]
    return None


def _revision(segment: str) -> str:
    text = unquote(segment)  # clients send refs/pr/1 as refs%2Fpr%2F1
    if not text or len(text) > MAX_REVISION or any(ord(c) < 0x21 or c in "\\" for c in text) or ".." in text:
        raise GatewayRequestError(400, "invalid revision")
    return text


def _repo_path(segments: list[str], allow_empty: bool) -> str:
    """A posix path inside the repo: no empty, '.' or '..' segment, no control character."""
    if allow_empty and not segments:
        return ""
    parts: list[str] = []
    for seg in segments:
        parts.extend(seg.split("/"))  # a tree path arrives as one %2F-encoded segment
    if allow_empty and parts == [""]:
        return ""
    for p in parts:
        if p in ("", ".", "..") or any(ord(c) < 0x20 for c in p):
            raise GatewayRequestError(400, "invalid path in repo")
    return "/".join(parts)


def _query(query: bytes) -> dict[str, str]:
    if len(query) > MAX_QUERY_BYTES:
        raise GatewayRequestError(414, f"query longer than {MAX_QUERY_BYTES} bytes")
    pairs = parse_qsl(query.decode("latin-1"), keep_blank_values=True)
    if len(pairs) > MAX_QUERY_PARAMS:
        raise GatewayRequestError(400, f"more than {MAX_QUERY_PARAMS} query parameters")
    return dict(pairs)


def _cursor(text: str | None) -> int:
    if text is None:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise GatewayRequestError(400, "invalid cursor")
    return int(text)


def _header_safe(text: str) -> str:
    return "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)[:512]


# ---------------------------------------------------------------- shaping answers


def is_lfs(file: RepoFileLike) -> bool:
    """Would huggingface.co keep this file in LFS (default .gitattributes)? See the module docstring."""
    name = file.path.rsplit("/", 1)[-1].lower()
    return file.size > LFS_THRESHOLD or name.endswith(LFS_SUFFIXES) or ".tar." in name or "tfevents" in name


def etag_of(file: RepoFileLike) -> str:
    """What the Hub sends as the file's (linked) ETag: the sha256 for LFS files, the git blob sha1 otherwise."""
    return file.sha256 if is_lfs(file) else file.git_sha1


def find_file(record: NameRecordLike, path: str) -> RepoFileLike | None:
    for f in record.files:
        if f.path == path:
            return f
    return None


def repo_info(request: HfRequest, record: NameRecordLike) -> bytes:
    """The JSON of `GET /api/{kind}s/{repo}/revision/{rev}`."""
    siblings: list[dict[str, object]] = []
    for f in record.files:
        row: dict[str, object] = {"rfilename": f.path}
        if request.blobs:
            row["size"] = f.size
            row["blobId"] = f.git_sha1
            if is_lfs(f):
                row["lfs"] = {"sha256": f.sha256, "size": f.size, "pointerSize": LFS_POINTER_SIZE}
        siblings.append(row)
    author = record.repo.split("/", 1)[0] if "/" in record.repo else None
    doc: dict[str, object] = {
        "_id": record.commit[:24], "id": record.repo, "author": author, "sha": record.commit,
        "private": False, "disabled": False, "gated": False, "tags": [], "downloads": 0, "likes": 0,
        "siblings": siblings, "shoal": {"cid": record.cid, "revision": record.revision},
    }
    if record.kind == "model":
        doc["modelId"] = record.repo
    return json.dumps(doc).encode()


def _tree_entries(record: NameRecordLike, base: str, recursive: bool) -> list[dict[str, object]] | None:
    """Entries under `base` ("" = root), folders before files at each level as the Hub lists them;
    None when `base` is neither the root nor a folder of the repo."""
    prefix = base + "/" if base else ""
    files = [f for f in record.files if f.path.startswith(prefix)]
    if base and not files:
        return None
    folders: dict[str, list[RepoFileLike]] = {}
    direct: list[RepoFileLike] = []
    for f in files:
        rel = f.path[len(prefix):]
        parts = rel.split("/")
        if len(parts) == 1:
            direct.append(f)
        # every folder on the way (only the first level when not recursive)
        for depth in range(1, len(parts) if recursive else min(2, len(parts))):
            folders.setdefault(prefix + "/".join(parts[:depth]), []).append(f)
    out: list[dict[str, object]] = []
    for folder in sorted(folders):
        out.append({"type": "directory", "oid": _folder_oid(folder, folders[folder]), "size": 0, "path": folder})
    chosen = files if recursive else direct
    for f in sorted(chosen, key=lambda f: f.path):
        entry: dict[str, object] = {"type": "file", "oid": f.git_sha1, "size": f.size, "path": f.path}
        if is_lfs(f):
            entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": LFS_POINTER_SIZE}
        out.append(entry)
    return out


def _folder_oid(folder: str, files: Iterable[RepoFileLike]) -> str:
    """A deterministic 40-hex id of a folder's content (not git's tree hash, which the client never checks)."""
    h = hashlib.sha1(b"shoal-hf-tree\0" + folder.encode())
    for f in sorted(files, key=lambda f: f.path):
        h.update(f"{f.path}\0{f.git_sha1}\0".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class TreePage:
    body: bytes
    next_cursor: int | None


def tree_page(request: HfRequest, record: NameRecordLike, page_size: int = DEFAULT_PAGE_SIZE) -> TreePage:
    """One page of `GET /api/{kind}s/{repo}/tree/{rev}[/{path}]`; EntryNotFound for a path that is no folder."""
    entries = _tree_entries(record, request.path, request.recursive)
    if entries is None:
        raise HfError(404, "EntryNotFound", f"{request.path}: no such folder in {record.repo}@{record.commit}",
                      record.commit)
    page = entries[request.cursor:request.cursor + page_size]
    more = request.cursor + page_size < len(entries)
    return TreePage(json.dumps(page).encode(), request.cursor + page_size if more else None)


def next_link(base_url: str, raw_path: str, request: HfRequest, cursor: int) -> str:
    """The `Link` header value pointing at the next tree page, on this gateway."""
    query = f"recursive={'true' if request.recursive else 'false'}&expand=false&cursor={cursor}"
    return f'<{base_url}{raw_path}?{query}>; rel="next"'


def base_url(host_header: str | None, fallback: str) -> str:
    """`http://{Host}` when the Host header is a plain host[:port], else `fallback`."""
    if host_header and re.fullmatch(r"[A-Za-z0-9.\-]+(:[0-9]{1,5})?|\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?", host_header):
        return "http://" + host_header
    return fallback


def resolve_headers(record: NameRecordLike, file: RepoFileLike, immutable: bool) -> list[tuple[bytes, bytes]]:
    """The headers of `HEAD|GET /{repo}/resolve/{rev}/{path}` a Hub client reads (no Xet ones)."""
    tag = f'"{etag_of(file)}"'
    pairs = [("x-repo-commit", record.commit), ("etag", tag), ("accept-ranges", "bytes"),
             ("x-content-type-options", "nosniff"),
             ("cache-control", "public, max-age=29030400, immutable" if immutable else "no-cache"),
             ("x-shoal-cid", file.cid)]
    if is_lfs(file):
        pairs += [("x-linked-etag", tag), ("x-linked-size", str(file.size))]
    return [(k.encode(), v.encode()) for k, v in pairs]


def json_headers(length: int, commit: str | None = None) -> list[tuple[bytes, bytes]]:
    pairs = [(b"content-type", b"application/json; charset=utf-8"), (b"content-length", str(length).encode())]
    if commit is not None:
        pairs.append((b"x-repo-commit", commit.encode()))
    return pairs


def is_commit(revision: str) -> bool:
    return _COMMIT.fullmatch(revision) is not None


def url_path(request: HfRequest) -> str:
    """The canonical path of a tree request (for the next-page link)."""
    kind = "models" if request.kind == "model" else "datasets"
    tail = "/" + quote(request.path, safe="") if request.path else ""
    return f"/api/{kind}/{request.repo}/tree/{quote(request.revision, safe='')}{tail}"
