"""`shoal demo`: a local multi-peer swarm showing what Shoal does, end to end.

Real `shoal node` processes (not threads, not mocks) on loopback in a
temporary directory: start three peers, put a generated model-weights file
on one, fetch it on another, check the bytes; then more peers join for the
later chapters (replication, a private swarm); clean everything up — on
success, on error and on Ctrl-C alike. The help and the opening line state
no number of peers (chapters add their own); the closing line counts them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from shoal.cli.args import size
from shoal.cli.output import human_size

if TYPE_CHECKING:  # the swarm (and httpx under it) loads only when a demo runs
    from shoal.cli.swarm import LocalSwarm


def register(sub: Any) -> None:
    p = sub.add_parser("demo", help="run a local swarm of real peers in a temp directory: put, fetch, "
                                    "replication with audits and repair, energy, a private swarm")
    p.add_argument("--size", type=demo_size, default=DEFAULT_SIZE,
                   help=f"size of the generated model file, {human_size(MIN_SIZE)} or more "
                        "(default: 48M)")
    p.add_argument("--keep", action="store_true", help="keep the temp directory (logs, repos) afterwards")
    p.set_defaults(handler=cmd_demo, json_unsupported=True)


DEFAULT_SIZE = 48 * 1024 * 1024
# Smaller and the demo's numbers mean nothing: the repair step deletes a
# fifth of a holder's block files (at least one), and throughput of a
# few KiB is start-up noise.
MIN_SIZE = 1024 * 1024


def demo_size(text: str) -> int:
    """argparse type for --size: a size of at least MIN_SIZE."""
    value = size(text)
    if value < MIN_SIZE:
        raise argparse.ArgumentTypeError(f"the demo needs a file of at least {human_size(MIN_SIZE)}, not {text!r}")
    return value


def write_fake_model(path: Path, size: int, seed: int = 7) -> None:
    """A valid safetensors file of float16 tensors, `size` bytes of data in all."""
    rng = random.Random(seed)
    tensor_bytes = 4 * 1024 * 1024
    names: list[tuple[str, int]] = []
    offset = 0
    header: dict[str, Any] = {"__metadata__": {"format": "pt", "generator": "shoal demo"}}
    i = 0
    while offset < size:
        n = min(tensor_bytes, size - offset)
        n -= n % 2
        if n <= 0:
            break
        name = f"model.layers.{i}.weight"
        header[name] = {"dtype": "F16", "shape": [n // 2], "data_offsets": [offset, offset + n]}
        names.append((name, n))
        offset += n
        i += 1
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little"))
        f.write(raw)
        for _name, n in names:
            f.write(rng.randbytes(n))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def say(text: str) -> None:
    print(text, flush=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from shoal.cli.swarm import LocalSwarm

    root = Path(tempfile.mkdtemp(prefix="shoal-demo-")).absolute()  # the nodes get absolute paths
    try:
        with LocalSwarm(root) as swarm:
            run_demo(swarm, root, args.size)
    except KeyboardInterrupt:
        say("interrupted: stopping the swarm and cleaning up")
        raise
    finally:
        if args.keep:
            say(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def run_demo(swarm: LocalSwarm, root: Path, size: int) -> None:
    say("== Shoal demo: real node processes on this machine; three peers start now, more join later ==")
    a = swarm.add("alice")
    b = swarm.add("bob", bootstrap=a.addrs[:1])
    c = swarm.add("carol", bootstrap=b.addrs[:1])
    for n in (a, b, c):
        say(f"  {n.name:<6} {n.peer_id}  {n.addrs[0].rsplit('/p2p/', 1)[0]}")
    swarm.wait_connected(c, 2)
    say("  carol bootstrapped to bob only, and found alice through peer exchange")

    model = root / "model.safetensors"
    write_fake_model(model, size)
    t0 = time.monotonic()
    # Fixed-size chunks, not the default "auto" (tensor-aware for a safetensors
    # file): the demo shows the CID `ipfs add` gives, and demo_replication
    # replicates this same CID.
    put = a.call("POST", "/v1/put", {"path": str(model), "chunker": "fixed"})
    say(f"alice put {model.name} ({human_size(put['size'])}) in {time.monotonic() - t0:.2f}s")
    say(f"  CID {put['cid']}  (the same CID `ipfs add` with the unixfs-v1-2025 profile gives)")

    out = root / "carol-copy.safetensors"
    t0 = time.monotonic()
    got = c.call("POST", "/v1/get", {"cid": put["cid"], "output": str(out)})
    took = time.monotonic() - t0
    same = _sha256(out) == _sha256(model)
    say(f"carol got it from {got['holders']} holder(s): {got['fetched_blocks']} blocks, "
        f"{human_size(got['fetched_bytes'])} in {took:.2f}s "
        f"({got['fetched_bytes'] / max(took, 1e-9) / 1e6:.0f} MB/s), every block hash-verified")
    say(f"  bytes identical: {'yes' if same else 'NO'}")
    if not same:
        raise SystemExit("demo failed: the copy differs")
    for hook in _later_steps():
        hook(swarm, root, put["cid"])
    say(f"== done: stopping all {len(swarm.nodes)} peers and removing the temp directory ==")


def _later_steps() -> list[Any]:
    """The steps after put/get, imported only when a demo runs: replication
    (issue 4: put with replicas, audit, break a holder, repair), then energy
    (issue 5), whose report sums up the steps before it, then a separate
    private swarm that a keyless peer cannot join (issue 12)."""
    from shoal.cli.commands_energy import demo_step as energy_step
    from shoal.cli.demo_private import private_swarm_step
    from shoal.cli.demo_replication import replication_step

    return [replication_step, energy_step, private_swarm_step]
