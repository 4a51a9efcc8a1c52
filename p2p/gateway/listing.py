"""Sans-IO: directory listings of the path gateway, as JSON or HTML.

JSON is the default (scripts, `{"cid", "path", "entries": [...]}`); HTML is
served when the client's `Accept` prefers `text/html` over JSON (a browser,
or fsspec's HTTPFileSystem `ls`, which reads `<a href>` links; the choice is
`GatewayRequest.html`, made in shoal.p2p.gateway.params).

Entry names come from the DAG, so from whoever published it: in HTML every
name is escaped (`html.escape`, quotes too) and every link is built from
percent-encoded path segments, so a name such as `<script>` or `x" onclick=`
is shown as text and can neither add markup nor leave its attribute. Links
are absolute paths under the listing's own `/ipfs/{cid}/{path}`, so they work
whether or not the request URL ended in `/`. The page carries a
Content-Security-Policy that allows no script at all, in case.

The listing is streamed: a head, one fragment per entry, a tail.
"""

from __future__ import annotations

import html
import json
from typing import Protocol
from urllib.parse import quote

HTML_TYPE = "text/html; charset=utf-8"
JSON_TYPE = "application/json"
HTML_CSP = "default-src 'none'; style-src 'unsafe-inline'"
HTML_TAIL = "</tbody></table></body></html>\n"


class Entry(Protocol):
    """What a listing shows of one directory entry (exporter.DirEntry has these)."""

    @property
    def name(self) -> str: ...
    @property
    def cid(self) -> object: ...
    @property
    def kind(self) -> str: ...
    @property
    def size(self) -> int | None: ...


def href(ipfs_path: str, name: str) -> str:
    """The link to `name` inside the directory at `ipfs_path` (already a safe path)."""
    return ipfs_path.rstrip("/") + "/" + quote(name, safe="")


def quote_path(ipfs_path: str) -> str:
    """`/ipfs/{cid}/{path}` with each segment percent-encoded (for use in a link)."""
    return "/".join(quote(seg, safe="") for seg in ipfs_path.split("/"))


def html_head(ipfs_path: str, cid: str) -> str:
    """The page up to the first entry: title, the CID, a link to the parent."""
    title = html.escape(ipfs_path, quote=True)
    linked = quote_path(ipfs_path)
    parent = ""
    segments = [s for s in linked.split("/") if s]
    if len(segments) > 2:  # under /ipfs/{cid}/...: the parent directory
        parent = f'<tr><td><a href="{html.escape("/" + "/".join(segments[:-1]), quote=True)}">..</a></td>' \
                 '<td></td><td></td><td></td></tr>'
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
        f"<title>Index of {title}</title></head><body>"
        f"<h1>Index of {title}</h1><p>CID <code>{html.escape(cid, quote=True)}</code></p>"
        "<table><thead><tr><th>name</th><th>kind</th><th>size</th><th>cid</th></tr></thead><tbody>"
        + parent
    )


def html_row(ipfs_path: str, entry: Entry) -> str:
    """One `<tr>`: the escaped name linked to its path, its kind, size and CID."""
    link = html.escape(href(quote_path(ipfs_path), entry.name), quote=True)
    size = "" if entry.size is None else str(entry.size)
    return (f'<tr><td><a href="{link}">{html.escape(entry.name, quote=True)}</a></td>'
            f"<td>{html.escape(entry.kind, quote=True)}</td><td>{size}</td>"
            f"<td><code>{html.escape(str(entry.cid), quote=True)}</code></td></tr>")


def json_head(ipfs_path: str, cid: str) -> str:
    return json.dumps({"cid": cid, "path": ipfs_path})[:-1] + ', "entries": ['


def json_row(entry: Entry, first: bool) -> str:
    row = {"name": entry.name, "cid": str(entry.cid), "kind": entry.kind, "size": entry.size}
    return ("" if first else ",") + json.dumps(row)


JSON_TAIL = "]}"
