"""A static Hugging Face–shaped mirror: the baseline of bench/gateway.py.

`python -m http.server` with the Hub's routes: a stdlib ThreadingHTTPServer
serving one folder as `org/name` (model, and the same as a dataset) —
`GET /api/{models,datasets}/{repo}[/revision/{rev}]`, `/tree/{rev}[/{path}]`
and `HEAD|GET /{repo}/resolve/{rev}/{path}` with the same headers the Shoal
gateway sends (`X-Repo-Commit`, `ETag`/`X-Linked-Etag`, `X-Linked-Size`,
single `Range`). Route parsing and JSON shaping are the gateway's own
sans-IO functions (shoal.p2p.gateway.hf_routes), so both servers answer
with identical metadata and differ only in where the bytes come from: here
a plain file read (1 MiB at a time), the ceiling of a
plain HTTP mirror on one machine.

    python bench/hf_static.py FOLDER RECORD_JSON   # prints "http://127.0.0.1:PORT", serves until killed
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from shoal.p2p.gateway.hf_routes import (
    HfError,
    base_url,
    find_file,
    is_commit,
    json_headers,
    next_link,
    parse_hf_request,
    repo_info,
    resolve_headers,
    tree_page,
    url_path,
)
from shoal.p2p.gateway.params import GatewayRequestError, parse_range

COPY_BUF = 1 << 20


@dataclass(frozen=True)
class File:
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
    files: tuple[File, ...]


def load(path: Path) -> list[Record]:
    docs = json.loads(path.read_text())
    return [Record(d["repo"], d["kind"], d["revision"], d["cid"], d["commit"],
                   tuple(File(f["path"], f["size"], f["sha256"], f["git_sha1"], f["cid"]) for f in d["files"]))
            for d in docs]


def make_handler(folder: Path, records: list[Record]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            self._serve("HEAD")

        def do_GET(self) -> None:
            self._serve("GET")

        def _send(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> None:
            self.send_response(status)
            for k, v in headers:
                self.send_header(k.decode(), v.decode())
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)

        def _serve(self, method: str) -> None:
            path, _, query = self.path.partition("?")
            try:
                req = parse_hf_request(method, path, query.encode())
                if req is None:
                    raise GatewayRequestError(404, "not a Hub route")
                record = next((r for r in records if r.kind == req.kind and r.repo == req.repo
                               and req.revision in (r.revision, r.commit)), None)
                if record is None:
                    raise HfError(404, "RepoNotFound", f"{req.repo}: unknown")
                if req.action == "info":
                    body = repo_info(req, record)
                    self._send(200, json_headers(len(body), record.commit), body)
                elif req.action == "tree":
                    page = tree_page(req, record)
                    extra = []
                    if page.next_cursor is not None:
                        link = next_link(base_url(self.headers.get("Host"), ""), url_path(req), req, page.next_cursor)
                        extra.append((b"link", link.encode()))
                    self._send(200, json_headers(len(page.body), record.commit) + extra, page.body)
                else:
                    entry = find_file(record, req.path)
                    if entry is None:
                        raise HfError(404, "EntryNotFound", f"{req.path}: no such file", record.commit)
                    wanted = parse_range(self.headers.get("Range"), entry.size)
                    status, offset, length = (200, 0, entry.size) if wanted is None else \
                        (206, wanted.start, wanted.length)
                    headers = resolve_headers(record, entry, is_commit(req.revision)) + [
                        (b"content-type", b"application/octet-stream"), (b"content-length", str(length).encode())]
                    if wanted is not None:
                        headers.append((b"content-range", wanted.content_range(entry.size).encode()))
                    self._send(status, headers)
                    if method == "GET" and length:
                        with open(folder / req.path, "rb") as fh:
                            fh.seek(offset)
                            try:
                                _copy(fh, self.wfile, length)
                            except (BrokenPipeError, ConnectionResetError):
                                self.close_connection = True  # the client left mid-body (a TTFB probe)
            except HfError as exc:
                body = exc.body()
                self._send(exc.status, json_headers(len(body)) + exc.headers(), body)
            except GatewayRequestError as exc:
                body = (str(exc) + "\n").encode()
                self._send(exc.status, [(b"content-length", str(len(body)).encode())], body)

    return Handler


def _copy(src: Any, dst: Any, length: int) -> None:
    left = length
    while left > 0:
        chunk = src.read(min(COPY_BUF, left))
        if not chunk:
            raise OSError("file shorter than its record")
        dst.write(chunk)
        left -= len(chunk)


def main() -> None:
    folder, record_file = Path(sys.argv[1]), Path(sys.argv[2])
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(folder, load(record_file)))
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
