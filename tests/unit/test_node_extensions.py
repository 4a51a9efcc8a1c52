"""The node's typed extension points (shoal.p2p.net.hooks, issue 13 item 5).

- No code in p2p/ or cli/ takes an untyped node (`node: Any`), reaches into
  one with `getattr(node, ...)`, or replaces a node method from outside
  (energy accounting used to swap `node._serve_blocks` for a wrapper).
- Services register with `Node.register`: attached once, before the node
  runs, started with it and cancelled when it stops; their handlers, routes,
  serve observers and typed slots (replication, energy) reach the node.
"""

from __future__ import annotations

import ast
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pytest
import trio

from shoal.store.energy.accounting import Bytes
from shoal.store.ipld.cid import CID, RAW, make_cid
from shoal.store.persist.repo import Repo

from shoal.p2p.errors import P2PError
from shoal.p2p.net.connection import SendBudget
from shoal.p2p.net.node import Node
from shoal.p2p.net.node_config import NodeOptions
from shoal.p2p.net.node_api import build_api
from shoal.p2p.net.hooks import EnergyApi, NodeService, ReplicationApi, SentBytes, ServeObserver
from shoal.p2p.secure.identity import Identity, PeerId
from shoal.p2p.wire import limits as L
from shoal.p2p.wire.messages import Block, Message, Ping, Pong, WantBlock

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(30)


# -- the source check ---------------------------------------------------------------------


def _is_node(expr: ast.expr) -> bool:
    """`node`, `self.node` or `self._node`."""
    if isinstance(expr, ast.Name):
        return expr.id == "node"
    return isinstance(expr, ast.Attribute) and expr.attr in ("node", "_node")


def _is_any(annotation: ast.expr | None) -> bool:
    if annotation is None:
        return False
    if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
        return annotation.value.strip() in ("Any", "typing.Any")
    return (isinstance(annotation, ast.Name) and annotation.id == "Any") or (
        isinstance(annotation, ast.Attribute) and annotation.attr == "Any")


def untyped_node_uses(source: str, filename: str) -> list[str]:
    """Every `node: Any`, `getattr(node, ...)` / `setattr(node, ...)`, `getattr(self,
    "replication"|"energy"|...)` and assignment to a node's `_serve_blocks` in `source`."""
    found: list[str] = []
    for n in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(n, 'lineno', '?')}"
        if isinstance(n, ast.arg) and n.arg == "node" and _is_any(n.annotation):
            found.append(f"{where}: parameter `node: Any`")
        elif isinstance(n, ast.AnnAssign) and _is_node(n.target) and _is_any(n.annotation):
            found.append(f"{where}: attribute `node: Any`")
        elif isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in ("getattr", "setattr", "hasattr") \
                and n.args:
            first = n.args[0]
            name = n.args[1].value if len(n.args) > 1 and isinstance(n.args[1], ast.Constant) else None
            if _is_node(first):
                found.append(f"{where}: {n.func.id}(node, ...)")
            elif isinstance(first, ast.Name) and first.id == "self" and name in (
                    "replication", "energy", "extra_routes", "extra_handlers", "_serve_blocks"):
                found.append(f"{where}: {n.func.id}(self, {name!r})")
        elif isinstance(n, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = n.targets if isinstance(n, ast.Assign) else [n.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and t.attr == "_serve_blocks":
                    found.append(f"{where}: replaces {ast.unparse(t)}")
    return found


def test_no_untyped_node_in_p2p_or_cli() -> None:
    found: list[str] = []
    for folder in ("p2p", "cli"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += untyped_node_uses(path.read_text(), str(path.relative_to(ROOT)))
    assert found == [], "use the node's typed extension points (shoal.p2p.net.hooks):\n" + "\n".join(found)


@pytest.mark.parametrize("snippet", [
    "def install(node: Any) -> None: ...",
    "def install(node: 'Any') -> None: ...",
    "class S:\n    def __init__(self, n):\n        self.node: Any = n",
    "placer = getattr(node, 'replication', None)",
    "routes = getattr(self.node, 'extra_routes', [])",
    "node._serve_blocks = wrap(node._serve_blocks)",
    "r = getattr(self, 'replication', None)",
])
def test_the_source_check_catches_each_pattern(snippet: str) -> None:
    assert untyped_node_uses(snippet, "x.py")


def test_the_source_check_lets_typed_code_pass() -> None:
    ok = ("def install(node: 'Node') -> None:\n    node.register(S(node))\n"
          "x = getattr(options, 'extra', {})\n")
    assert untyped_node_uses(ok, "x.py") == []


# -- registration -------------------------------------------------------------------------


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    repo = Repo.init(tmp_path / "repo")
    try:
        yield Node(repo, Identity.generate(), NodeOptions())
    finally:
        repo.close()


class Recorder:
    """A NodeService that records its life: attached, running, stopped."""

    def __init__(self) -> None:
        self.attached: list[Node] = []
        self.running = trio.Event()
        self.stopped = False

    def attach(self, node: Node) -> None:
        self.attached.append(node)

        async def echo(conn: Any, msg: Message) -> list[Message]:
            assert isinstance(msg, Ping)
            return [Pong(msg.request_id, msg.payload[::-1])]

        async def hello(p: dict[str, Any]) -> Any:
            return {"hello": p.get("who", "world")}

        node.add_handler(Ping, echo)  # Ping is the node's own: a service handler does not shadow it
        node.add_route("GET", "/v1/hello", hello)

    async def run(self) -> None:
        self.running.set()
        try:
            await trio.sleep_forever()
        finally:
            self.stopped = True


def test_register_attaches_once_and_refuses_a_second_time(node: Node) -> None:
    service = Recorder()
    as_protocol: NodeService = service  # structurally a NodeService (mypy checks this line)
    node.register(as_protocol)
    assert service.attached == [node] and node.services == [service]
    with pytest.raises(P2PError, match="registered already"):
        node.register(service)
    assert service.attached == [node]


def test_one_handler_and_one_route_per_key(node: Node) -> None:
    node.register(Recorder())

    async def other(conn: Any, msg: Message) -> list[Message]:
        return []

    with pytest.raises(P2PError, match="already has a handler"):
        node.add_handler(Ping, other)
    with pytest.raises(P2PError, match="already has a handler"):
        node.add_route("GET", "/v1/hello", lambda p: other(None, Ping(0, b"")))
    assert node.wrap_handler(WantBlock, lambda h: h) is False  # nothing to wrap: nothing changes
    assert WantBlock not in node.handlers


async def test_services_run_with_the_node_and_stop_with_it(node: Node) -> None:
    service = Recorder()
    node.register(service)
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        with trio.fail_after(5):
            await service.running.wait()
        with pytest.raises(P2PError, match="before the node runs"):
            node.register(Recorder())
        node.cancel()
    assert service.stopped


async def test_a_service_route_is_served_by_the_control_api(node: Node) -> None:
    node.register(Recorder())
    app = build_api(node, "tok")
    sent: list[dict[str, Any]] = []
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/v1/hello", "query_string": b"who=shoal",
             "headers": [(b"authorization", b"Bearer tok")]}
    await app(scope, receive, send)
    assert sent[0]["status"] == 200
    assert json.loads(b"".join(m.get("body", b"") for m in sent[1:])) == {"hello": "shoal"}


async def test_wrapped_handler_answers_requests(node: Node) -> None:
    node.register(Recorder())
    seen: list[Message] = []

    def wrap(handler: Any) -> Any:
        async def wrapped(conn: Any, msg: Message) -> Any:
            seen.append(msg)
            return await handler(conn, msg)
        return wrapped

    assert node.wrap_handler(Ping, wrap) is True
    (reply,) = await node.handlers[Ping](None, Ping(3, b"ab"))  # type: ignore[arg-type]
    assert reply == Pong(3, b"ba") and seen == [Ping(3, b"ab")]


class FakeConn:
    def __init__(self, peer: PeerId) -> None:
        self.remote_peer = peer
        self.send_budget = SendBudget(L.SEND_BUDGET_BYTES)
        self.sent: list[Message] = []
        self.closed = False

    async def reply(self, msg: Message) -> bool:
        self.sent.append(msg)
        return True


class Watcher:
    def __init__(self) -> None:
        self.opened: list[PeerId] = []
        self.counters: list[Bytes] = []

    @contextmanager
    def serving(self, peer: PeerId) -> Iterator[SentBytes]:
        self.opened.append(peer)
        op = Bytes()
        yield op
        self.counters.append(op)


async def test_serve_observers_see_every_block_sent_to_whom(node: Node) -> None:
    watcher = Watcher()
    as_protocol: ServeObserver = watcher
    node.add_serve_observer(as_protocol)
    blocks = [b"a" * 700, b"b" * 300]
    cids = []
    for data in blocks:
        cid = make_cid(RAW, data)
        node.repo.blockstore.put(cid, data)
        cids.append(bytes(cid))
    absent = bytes(make_cid(RAW, b"not here"))
    peer = Identity.generate().peer_id
    conn = FakeConn(peer)
    replies = await node._handle_request(conn, WantBlock(9, (*cids, absent)))  # type: ignore[arg-type]
    assert replies == []  # sent one by one
    assert [type(m) for m in conn.sent][:2] == [Block, Block]
    assert watcher.opened == [peer]
    assert [c.bytes_sent for c in watcher.counters] == [1000]
    assert node.served_bytes == 1000


class FakeReplication:
    def held_bytes(self) -> int:
        return 12345

    def places(self, cid: CID) -> bool:
        return False

    async def place(self, cid: CID, replicas: int) -> dict[str, Any]:
        return {}

    async def release_object(self, cid: CID) -> dict[str, Any] | None:
        return None

    async def place_ec(self, cid: CID, k: int, m: int, drop_local: bool = False,
                       threshold: int | None = None) -> dict[str, Any]:
        return {}

    async def recover_ec(self, cid: CID) -> dict[str, Any]:
        raise P2PError("no shards")


def test_typed_slots_hold_one_service_each(node: Node) -> None:
    assert node.replication is None and node.energy is None and node.held_for_others() == 0
    replication: ReplicationApi = FakeReplication()
    node.provide_replication(replication)
    assert node.replication is replication
    assert node.held_for_others() == 12345  # the quota counts what the service holds
    with pytest.raises(P2PError, match="replication service already"):
        node.provide_replication(FakeReplication())


def test_energy_service_takes_the_energy_slot_and_observes_serving(node: Node) -> None:
    from shoal.p2p.net.energy_service import EnergyService

    service = EnergyService(node)
    node.register(service)
    slot: EnergyApi | None = node.energy
    assert slot is service
    assert node.serve_observers == [service]
    assert [(r.method, r.path) for r in node.routes] == [("GET", "/v1/energy")]
