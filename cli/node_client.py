"""Talk to a running node through its local API (`<repo>/api`).

If the api file is missing or the node does not answer, `connect` returns
None and the command runs offline on the repo (the repo lock then tells the
user if a node that does not answer still holds it).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from shoal.cli.errors import CliError

if TYPE_CHECKING:  # imported at run time only where a node is there to talk to
    import httpx

API_FILE = "api"
CONNECT_TIMEOUT = 2.0


class NodeClient:
    """A synchronous client for the node's control API."""

    def __init__(self, url: str, token: str) -> None:
        import httpx

        self.url = url.rstrip("/")
        self._client = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT),
        )

    def close(self) -> None:
        self._client.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, **query: Any) -> Any:
        """One JSON request; errors from the node become CliError with its message."""
        import httpx

        params = {k: v for k, v in query.items() if v is not None}
        try:
            resp = self._client.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise CliError(f"node at {self.url} did not answer: {exc}") from None
        return _decode(resp)

    @contextmanager
    def _get_stream(self, path: str, query: dict[str, Any]) -> Iterator[httpx.Response]:
        """A streamed GET whose status is checked (the node's error as CliError);
        a transport error, before or while reading, is one CliError too."""
        import httpx

        params = {k: v for k, v in query.items() if v is not None}
        try:
            with self._client.stream("GET", path, params=params) as resp:
                if resp.status_code != 200:
                    resp.read()
                    _decode(resp)
                yield resp
        except httpx.HTTPError as exc:
            raise CliError(f"node at {self.url} did not answer: {exc}") from None

    def stream(self, path: str, **query: Any) -> Iterator[bytes]:
        """A streamed raw-bytes GET (cat)."""
        with self._get_stream(path, query) as resp:
            yield from resp.iter_bytes()

    def lines(self, path: str, **query: Any) -> Iterator[Any]:
        """A streamed NDJSON GET (ls): one decoded document per line, as they arrive.

        A line `{"error": ...}` is the node's failure after the stream began."""
        with self._get_stream(path, query) as resp:
            for line in resp.iter_lines():
                if not line:
                    continue
                try:
                    doc = json.loads(line)
                except ValueError:
                    raise CliError("node sent a malformed listing line") from None
                if isinstance(doc, dict) and "error" in doc:
                    raise CliError(str(doc["error"]), hint=str(doc.get("hint", "")))
                yield doc


def _decode(resp: httpx.Response) -> Any:
    try:
        doc = resp.json()
    except ValueError:
        raise CliError(f"node sent a non-JSON reply (HTTP {resp.status_code})") from None
    if resp.status_code >= 400:
        message = doc.get("error", f"HTTP {resp.status_code}") if isinstance(doc, dict) else str(doc)
        hint = doc.get("hint", "") if isinstance(doc, dict) else ""
        raise CliError(message, hint=hint)
    return doc


def read_api_file(repo: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads((repo / API_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("url"), str) or not isinstance(doc.get("token"), str):
        return None
    return doc


def connect(repo: Path) -> NodeClient | None:
    """A client for the repo's running node, or None if none answers."""
    doc = read_api_file(repo)
    if doc is None:
        return None
    import httpx

    # A damaged or hand-edited api file (a URL httpx cannot parse, a token
    # that is no header value) names no node either: httpx raises InvalidURL
    # or UnicodeEncodeError for those, not an HTTPError.
    try:
        client = NodeClient(doc["url"], doc["token"])
    except (httpx.InvalidURL, ValueError):
        return None
    try:
        client._client.get("/v1/id", timeout=CONNECT_TIMEOUT).raise_for_status()
    except (httpx.HTTPError, httpx.InvalidURL, ValueError):
        client.close()
        return None
    return client
