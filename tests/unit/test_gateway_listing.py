"""Directory listings of the path gateway (shoal.p2p.gateway.listing): HTML
with escaped names and safe links, JSON by default, the Accept choice."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.p2p.gateway import listing
from shoal.p2p.gateway.params import parse_request, wants_html

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
CHILD = "bafkreidon73zkcrwdb5iafqtijxildoonbwnpv7dyd6ef3qdgads2jc4su"


@dataclass(frozen=True)
class FakeEntry:
    name: str
    cid: str = CHILD
    kind: str = "file"
    size: int | None = 42


class Page(HTMLParser):
    """Collects every start tag, every href and the text of each link."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.link_texts: list[str] = []
        self._in_a = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for key, value in attrs:
            assert key in ("href", "charset"), (tag, attrs)  # no attribute a name could have injected
            if key == "href":
                self.hrefs.append(value or "")
        self._in_a = tag == "a"

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._in_a = False

    def handle_data(self, data: str) -> None:
        if self._in_a:
            self.link_texts.append(data)


def render(path: str, entries: list[FakeEntry]) -> Page:
    page = Page()
    page.feed(listing.html_head(path, CID) + "".join(listing.html_row(path, e) for e in entries)
              + listing.HTML_TAIL)
    page.close()
    return page


HOSTILE = ['<script>alert("x")</script>', "a\" onclick=\"alert(1)", "it's", "x'><img src=y>", "&amp;",
           "sp ace?#%", "naïve ü.bin"]


def test_html_listing_escapes_hostile_names() -> None:
    entries = [FakeEntry(name) for name in HOSTILE]
    text = listing.html_head(f"/ipfs/{CID}", CID) + "".join(listing.html_row(f"/ipfs/{CID}", e)
                                                                for e in entries) + listing.HTML_TAIL
    assert "<script" not in text and "<img" not in text and 'onclick="' not in text
    page = render(f"/ipfs/{CID}", entries)
    assert "script" not in page.tags and "img" not in page.tags
    assert page.link_texts == HOSTILE  # shown as text, exactly
    # Each link is the entry's own path under the directory, percent-encoded as one segment.
    assert [unquote(h) for h in page.hrefs] == [f"/ipfs/{CID}/{name}" for name in HOSTILE]
    assert all(h.count("/") == 3 for h in page.hrefs)


def test_html_listing_links_are_under_the_listed_path() -> None:
    page = render(f"/ipfs/{CID}/sub/we ird", [FakeEntry("model.safetensors", kind="unknown", size=None)])
    # the parent link first, then the entry: both absolute paths under /ipfs/{cid}
    assert page.hrefs == [f"/ipfs/{CID}/sub", f"/ipfs/{CID}/sub/we%20ird/model.safetensors"]
    assert page.link_texts == ["..", "model.safetensors"]
    top = render(f"/ipfs/{CID}", [FakeEntry("a")])
    assert top.hrefs == [f"/ipfs/{CID}/a"]  # no parent above the root


@given(st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s and "\x00" not in s))
def test_html_row_never_leaks_markup(name: str) -> None:
    page = Page()
    page.feed(listing.html_row(f"/ipfs/{CID}", FakeEntry(name)))
    page.close()
    assert page.tags == ["tr", "td", "a", "td", "td", "td", "code"]
    assert unquote(page.hrefs[0]) == f"/ipfs/{CID}/{name}"


def test_json_listing_rows() -> None:
    body = listing.json_head(f"/ipfs/{CID}", CID) + listing.json_row(FakeEntry("<a>"), True) \
        + listing.json_row(FakeEntry("b", kind="unknown", size=None), False) + listing.JSON_TAIL
    doc = json.loads(body)
    assert doc == {"cid": CID, "path": f"/ipfs/{CID}", "entries": [
        {"name": "<a>", "cid": CHILD, "kind": "file", "size": 42},
        {"name": "b", "cid": CHILD, "kind": "unknown", "size": None}]}


@pytest.mark.parametrize("accept, html", [
    (None, False),
    ("*/*", False),
    ("application/json", False),
    ("text/html", True),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", True),  # a browser
    ("application/json, text/html;q=0.5", False),
    ("application/json;q=0.4, text/html", True),
    ("text/html;q=0", False),
    ("application/xhtml+xml", True),
])
def test_accept_chooses_the_listing(accept: str | None, html: bool) -> None:
    assert wants_html(accept) is html
    headers = [] if accept is None else [(b"accept", accept.encode())]
    request = parse_request("GET", f"/ipfs/{CID}/sub", b"", headers)
    assert request.html is html
    assert request.etag(CID) == (f'"{CID}.html"' if html else f'"{CID}"')


def test_a_verifiable_format_is_never_an_html_listing() -> None:
    request = parse_request("GET", f"/ipfs/{CID}", b"format=car", [(b"accept", b"text/html")])
    assert request.format == "car" and not request.html
