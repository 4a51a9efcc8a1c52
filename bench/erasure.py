"""Erasure coding: Shoal's codec against zfec's own, same run, same bytes.

What is measured, for EC 4+2, 8+4 and 10+6, each `--repeats` times
(interleaved, so a noisy moment hits every contender), on one object of
`--size` bytes (pseudorandom, imported with the default profile: 1 MiB raw
leaves) held in memory:

- `zfec encode`: zfec.Encoder over the same stream, cut into the same
  stripes (K pieces of the layout's piece size), parity only: the library's
  own speed, no hashing, no layout, nothing written.
- `shoal encode`: shoal.store.erasure.codec.encode: blocks checked against
  the layout (CID, length, sha256), stripes filled, parity, each piece
  hashed, each shard's sha256, headers; sinks discard the bytes (no I/O on
  either side).
- `zfec decode`: zfec.Decoder from the worst K shards (the first M data
  shards lost, so M of K pieces per stripe come from parity).
- `shoal reconstruct`: codec.reconstruct from the same K shards (in memory):
  every piece checked against the table, decode, blocks cut, each block
  hashed against its CID and walked from the root.
- `shoal reconstruct (data shards)`: from the K data shards: the systematic
  path, no decoding.
- `shoal rebuild 1`: codec.rebuild of one lost data shard from K healthy ones.

MB/s are object bytes (decimal MB) per wall second, and per CPU second
(process CPU time; the codec is single-threaded, so on a machine shared
with other work the CPU figure is the steadier one); the ratios are zfec's
time over ours for the same parameters (below 1: slower than zfec). Peak memory is tracemalloc's peak of
Python allocations during one extra, untimed run (zfec's output buffers are
Python bytes, so they count). The zfec baselines' input, the whole stream
already in memory, is not in their figure; the codec's rows include
everything it holds: about one stripe of K + M pieces and one block.

Storage and repair (computed from the shards actually written): stored bytes
per object byte, shard headers included; repair traffic for one lost
holder: an EC repair reads K shards of ~1/K of the object each (one object
size over the network) and writes one shard; a replica repair copies one
whole object. The durability column is docs/DURABILITY.md's model (10 %
annual failure probability, one-week repair).

The same schemes end to end on real nodes (put --ec 4+2 vs --replicas 3,
bytes on the wire, CPU of every node, joules, repair after a kill):
bench/erasure_swarm.py, a sibling because it needs a process swarm.

Usage:
    .venv/bin/python bench/erasure.py                   # 256 MiB, 3 repeats
    .venv/bin/python bench/erasure.py --size 64M --repeats 1
    .venv/bin/python bench/erasure.py --json bench/results/erasure.json
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

import zfec  # noqa: E402

from bench.common import MIB, format_table, human_bytes, machine_info, machine_line, mb_per_s, write_json  # noqa: E402
from shoal.store.dag.importer import import_bytes  # noqa: E402
from shoal.store.erasure import codec, durability  # noqa: E402
from shoal.store.erasure.layout import Layout, dag_blocks  # noqa: E402
from shoal.store.erasure.shard import ShardReader  # noqa: E402
from shoal.store.ipld.cid import CID  # noqa: E402
from shoal.store.persist.blockstore import MemoryBlockstore  # noqa: E402

SCHEMES = ((4, 2), (8, 4), (10, 6))


class _Discard:
    """A sink that keeps nothing (encode's output is hashed inside the codec)."""

    def write(self, data: bytes | memoryview) -> int:
        return len(data)


class _Case:
    """One scheme over one object: the layout, the shards, the raw stream."""

    def __init__(self, root: CID, store: MemoryBlockstore, blocks: list[tuple[CID, bytes]], stream: bytes,
                 k: int, m: int) -> None:
        self.k, self.m, self.root, self.blocks = k, m, root, blocks
        self.layout: Layout = codec.plan_object(root, store.get, store.size, k, m)
        sinks = [io.BytesIO() for _ in range(k + m)]
        self.infos = codec.encode(self.layout, blocks, sinks)  # type: ignore[arg-type]
        self.shards = [s.getvalue() for s in sinks]
        # views into one stream shared by every case; only the last, padded stripe is a copy
        view = memoryview(stream)
        p, sb = self.layout.piece_size, self.layout.stripe_bytes
        self.stripes = []
        for s in range(self.layout.stripes):
            chunk = view[s * sb:(s + 1) * sb]
            if len(chunk) < sb:
                chunk = memoryview(bytes(chunk) + bytes(sb - len(chunk)))
            self.stripes.append(tuple(chunk[j * p:(j + 1) * p] for j in range(k)))
        self.parity = [zfec.Encoder(k, k + m).encode(st, tuple(range(k, k + m))) for st in self.stripes]
        self.worst = list(range(m, k + m))  # first M data shards lost

    def zfec_encode(self) -> None:
        enc = zfec.Encoder(self.k, self.k + self.m)
        want = tuple(range(self.k, self.k + self.m))
        for st in self.stripes:
            enc.encode(st, want)

    def zfec_decode(self) -> None:
        dec = zfec.Decoder(self.k, self.k + self.m)
        idx = tuple(self.worst)
        for st, par in zip(self.stripes, self.parity):
            pieces = tuple(st[i] if i < self.k else par[i - self.k] for i in idx)
            dec.decode(pieces, idx)

    def shoal_encode(self) -> None:
        codec.encode(self.layout, self.blocks, [_Discard() for _ in range(self.k + self.m)])  # type: ignore[misc]

    def _readers(self, which: list[int]) -> list[ShardReader]:
        return [ShardReader(io.BytesIO(self.shards[i])) for i in which]

    def shoal_reconstruct(self) -> None:
        for _ in codec.reconstruct(self._readers(self.worst), self.root):
            pass

    def shoal_reconstruct_data(self) -> None:
        for _ in codec.reconstruct(self._readers(list(range(self.k))), self.root):
            pass

    def shoal_rebuild(self) -> None:
        codec.rebuild([0], self._readers(list(range(1, self.k + 1))), [_Discard()])  # type: ignore[list-item]


CONTENDERS: list[tuple[str, str, str | None]] = [
    # (row label, method, baseline method for the ratio)
    ("zfec encode", "zfec_encode", None),
    ("shoal encode", "shoal_encode", "zfec_encode"),
    ("zfec decode (M data lost)", "zfec_decode", None),
    ("shoal reconstruct (M data lost)", "shoal_reconstruct", "zfec_decode"),
    ("shoal reconstruct (data shards)", "shoal_reconstruct_data", "zfec_decode"),
    ("shoal rebuild 1 shard", "shoal_rebuild", "zfec_decode"),
]


def _time(fn: Callable[[], None]) -> tuple[float, float]:
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def _peak(fn: Callable[[], None]) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def run(size: int, repeats: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    data = b"".join(rng.randbytes(min(MIB, size - at)) for at in range(0, size, MIB))
    store = MemoryBlockstore()
    root = import_bytes(data, store).cid
    del data
    blocks = list(dag_blocks(root, store.get))
    stream = b"".join(d for _, d in blocks)
    cases = {f"{k}+{m}": _Case(root, store, blocks, stream, k, m) for k, m in SCHEMES}
    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(repeats):
        for name, case in cases.items():
            for _, method, _ in CONTENDERS:
                times.setdefault((name, method), []).append(_time(getattr(case, method)))
    obj_bytes = cases[next(iter(cases))].layout.data_length
    rows = []
    for name, case in cases.items():
        medians = {method: statistics.median(w for w, _ in times[(name, method)]) for _, method, _ in CONTENDERS}
        cpus = {method: statistics.median(c for _, c in times[(name, method)]) for _, method, _ in CONTENDERS}
        for label, method, base in CONTENDERS:
            wall = medians[method]
            cpu = cpus[method]
            rows.append({
                "scheme": name, "contender": label, "wall_s": wall, "cpu_s": cpu,
                "mb_s": mb_per_s(obj_bytes, wall), "mb_cpu_s": mb_per_s(obj_bytes, cpu),
                "ratio": (medians[base] / wall) if base else None,
                "cpu_ratio": (cpus[base] / cpu) if base and cpu > 0 else None,
                "peak_bytes": _peak(getattr(case, method)),
            })
    storage = []
    for name, case in cases.items():
        shard_total = sum(len(s) for s in case.shards)
        storage.append({
            "scheme": f"EC {name}", "stored_per_byte": shard_total / obj_bytes,
            "shard_bytes": len(case.shards[0]),
            "repair_read": case.k * len(case.shards[0]), "repair_write": len(case.shards[0]),
            "loss_p": durability.loss_probability([0.1] * (case.k + case.m), case.m, 168),
        })
    for n in (2, 3):
        storage.append({
            "scheme": f"replicas {n}", "stored_per_byte": float(n), "shard_bytes": obj_bytes,
            "repair_read": obj_bytes, "repair_write": obj_bytes,
            "loss_p": durability.loss_probability([0.1] * n, n - 1, 168),
        })
    return {"machine": machine_info(), "size": size, "object_bytes": obj_bytes, "blocks": len(blocks),
            "repeats": repeats, "rows": rows, "storage": storage}


def render(doc: dict[str, Any]) -> str:
    out = [machine_line(doc["machine"]),
           f"object: {human_bytes(doc['object_bytes'])} in {doc['blocks']} blocks; median of {doc['repeats']}", ""]
    out.append(format_table(
        ["scheme", "contender", "MB/s", "MB per CPU-s", "wall s", "CPU s", "vs zfec (wall)", "vs zfec (CPU)",
         "peak mem"],
        [[r["scheme"], r["contender"], f"{r['mb_s']:.0f}", f"{r['mb_cpu_s']:.0f}", f"{r['wall_s']:.3f}",
          f"{r['cpu_s']:.3f}", "" if r["ratio"] is None else f"{r['ratio']:.2f}x",
          "" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.2f}x", human_bytes(r["peak_bytes"])]
         for r in doc["rows"]]))
    out.append("")
    obj = doc["object_bytes"]
    out.append(format_table(
        ["scheme", "stored / object", "per holder", "repair reads", "repair writes", "reads / object",
         "P(loss)/yr @10% AFR, 1 wk repair"],
        [[s["scheme"], f"{s['stored_per_byte']:.3f}x", human_bytes(s["shard_bytes"]), human_bytes(s["repair_read"]),
          human_bytes(s["repair_write"]), f"{s['repair_read'] / obj:.3f}", f"{s['loss_p']:.1e}"]
         for s in doc["storage"]]))
    return "\n".join(out)


def _size(text: str) -> int:
    units = {"K": 1 << 10, "M": MIB, "G": 1 << 30}
    return int(float(text[:-1]) * units[text[-1].upper()]) if text[-1].upper() in units else int(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=_size, default=256 * MIB)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    doc = run(args.size, args.repeats, args.seed)
    print(render(doc))
    if args.json:
        write_json(args.json, doc)


if __name__ == "__main__":
    main()
