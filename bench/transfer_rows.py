"""Pure parts of bench/transfer.py's holders x lanes rows (unit-tested in
tests/unit/test_bench_transfer_rows.py).

- `parse_rows`, `parse_cpu_list`: the `--rows 1x1,4x4` and `--taskset 0-1` options.
- `ProcStat`, `parse_stat`, `TreeCpu`: CPU seconds of every process of a node
  (its main process and everything it started: lanes, hashing helpers) over a
  time window, from repeated snapshots of /proc/PID/stat. A process that exits
  takes its counters with it, so the window's CPU of a process is its last
  observed value minus its value at the start (or minus 0 if it was born inside
  the window, e.g. a lane that replaced a killed one): sampling often bounds
  what an exiting process can hide to one sampling interval.
- `paired_ratios`, `median`, `row_targets`, `scaling_target`: the report's
  numbers and the targets of issue 15 as met / NOT met.
- `shard_plan`, `shard_header`, `write_model`: a model directory of
  safetensors shards with real headers (the tensor-aware chunker applies),
  totalling exactly the requested size.

Standard library only: no Shoal import, so these run anywhere the bench does.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

MIB = 1 << 20
GIB = 1 << 30
MAX_HOLDERS = 16
MAX_LANES = 64

# Targets of issue 15 item 2 (stated per row; scaling between two rows).
TARGET_GET_VS_RAW_TCP = 0.25  # get MB/s >= 25 % of raw TCP (receiver discards)
TARGET_CPU_VS_FLOOR = 1.5  # CPU s/GiB of both sides (every process) <= 1.5x the floor
TARGET_MAIN_CPU_PER_GIB = 0.3  # the fetching node's main process: <= 0.3 CPU s/GiB
TARGET_SCALING = 3.0  # the 4x4 row moves >= 3x the 1x1 row
SCALING_ROWS = ((1, 1), (4, 4))


# -- options ------------------------------------------------------------------------------


def parse_rows(text: str) -> list[tuple[int, int]]:
    """`1x1,2x2,4x4` -> [(holders, lanes), ...] in the order given; ValueError on anything else."""
    rows: list[tuple[int, int]] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", part)
        if not m:
            raise ValueError(f"row {part.strip()!r} is not HOLDERSxLANES (e.g. 2x2)")
        h, lanes = int(m.group(1)), int(m.group(2))
        if not 1 <= h <= MAX_HOLDERS:
            raise ValueError(f"row {part.strip()}: holders must be 1..{MAX_HOLDERS}")
        if not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"row {part.strip()}: lanes must be 1..{MAX_LANES}")
        if (h, lanes) in rows:
            raise ValueError(f"row {h}x{lanes} is given twice (use --repeat to run a row again)")
        rows.append((h, lanes))
    return rows


def row_label(holders: int, lanes: int) -> str:
    return f"{holders}x{lanes}"


def parse_cpu_list(text: str) -> set[int]:
    """A taskset-style CPU list: `0`, `0-1`, `0,2-3` -> {0, 2, 3}; ValueError on anything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ValueError(f"CPU list item {part.strip()!r} is not N or N-M")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise ValueError(f"CPU range {lo}-{hi} is empty")
        cpus.update(range(lo, hi + 1))
    return cpus


# -- process trees -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    """What /proc/PID/stat says about one process (times in clock ticks)."""

    pid: int
    name: str
    ppid: int
    sid: int
    cpu_ticks: int  # utime + stime, all threads
    start_ticks: int  # since boot

    @property
    def key(self) -> tuple[int, int]:
        """A pid is reused after its process exits; (pid, start time) is not."""
        return (self.pid, self.start_ticks)


def parse_stat(pid: int, text: str) -> ProcStat:
    """Parse the contents of /proc/PID/stat (the name may hold spaces and parentheses)."""
    name = text[text.index("(") + 1 : text.rindex(")")]
    f = text[text.rindex(")") + 2 :].split()
    # f[0] is field 3 of proc(5): state, ppid, pgrp, session, ... utime (14), stime (15), starttime (22)
    return ProcStat(pid=pid, name=name, ppid=int(f[1]), sid=int(f[3]), cpu_ticks=int(f[11]) + int(f[12]),
                    start_ticks=int(f[19]))


@dataclass
class _Seen:
    root: str
    stat: ProcStat
    base_ticks: int  # CPU ticks at the window's start (0 for a process born inside it)
    last_ticks: int
    born_in_window: bool
    last_round: int


@dataclass
class TreeCpu:
    """CPU of named process trees (a node: its main pid and every process it
    started, found by parent chain or by session) over a window.

    Feed it snapshots with `observe` (the first one opens the window): a
    snapshot may be the whole process table (finds new members) or just the
    known members (cheap); `start_ticks` is the window's start in clock ticks
    since boot, so a process first seen later but started after it counts from
    zero, and one started before it counts from its first sighting.
    """

    roots: Mapping[str, int]  # name -> pid of the tree's main process
    start_ticks: int
    seen: dict[tuple[int, int], _Seen] = field(default_factory=dict)
    rounds: int = 0

    def observe(self, snapshot: Iterable[ProcStat]) -> None:
        by_pid = {p.pid: p for p in snapshot}
        live_member = {key: s.root for key, s in self.seen.items()}
        root_of_pid = {pid: name for name, pid in self.roots.items()}
        first = self.rounds == 0
        self.rounds += 1
        for p in by_pid.values():
            root = self._root_of(p, by_pid, root_of_pid, live_member)
            if root is None:
                continue
            s = self.seen.get(p.key)
            if s is None:
                born = not first and p.start_ticks >= self.start_ticks
                self.seen[p.key] = _Seen(root, p, 0 if born else p.cpu_ticks, p.cpu_ticks, born, self.rounds)
            else:
                s.last_ticks = max(s.last_ticks, p.cpu_ticks)
                s.stat = p
                s.last_round = self.rounds

    @staticmethod
    def _root_of(p: ProcStat, by_pid: Mapping[int, ProcStat], root_of_pid: Mapping[int, str],
                 live_member: Mapping[tuple[int, int], str]) -> str | None:
        q: ProcStat | None = p
        for _ in range(64):  # a parent chain longer than this is not one of ours
            if q is None:
                return None
            if q.pid in root_of_pid:
                return root_of_pid[q.pid]
            if q.sid in root_of_pid:  # a node started in its own session leads it
                return root_of_pid[q.sid]
            if q.key in live_member:  # known member (same pid AND start time: pids are reused)
                return live_member[q.key]
            q = by_pid.get(q.ppid)
        return None

    def member_pids(self) -> list[int]:
        """Pids of the members seen in the latest round (what a cheap snapshot should read)."""
        return sorted({s.stat.pid for s in self.seen.values() if s.last_round == self.rounds})

    def result(self, ticks_per_second: float) -> dict[str, dict[str, Any]]:
        """Per tree: CPU seconds of the main process, of the others, and each process's share."""
        out: dict[str, dict[str, Any]] = {}
        for name, pid in self.roots.items():
            procs = [s for s in self.seen.values() if s.root == name]
            main = sum(s.last_ticks - s.base_ticks for s in procs if s.stat.pid == pid)
            others = [s for s in procs if s.stat.pid != pid]
            out[name] = {
                "main_cpu_seconds": main / ticks_per_second,
                "children_cpu_seconds": sum(s.last_ticks - s.base_ticks for s in others) / ticks_per_second,
                "processes": [{"pid": s.stat.pid, "name": s.stat.name,
                               "cpu_seconds": round((s.last_ticks - s.base_ticks) / ticks_per_second, 3),
                               "born_in_window": s.born_in_window,
                               "gone_by_end": s.last_round != self.rounds}
                              for s in sorted(others, key=lambda s: s.stat.key)],
            }
        return out


# -- summaries and targets -----------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def paired_ratios(per_rep: Sequence[Mapping[str, float]], base: str) -> dict[str, list[float]]:
    """For each repetition (a dict row -> MB/s measured in that round), every row over the base row
    of the SAME round: interleaved rounds share the machine's state, so a paired ratio is less noisy
    than a ratio of medians."""
    out: dict[str, list[float]] = {}
    for rep in per_rep:
        b = rep.get(base)
        if not b:
            continue
        for label, value in rep.items():
            out.setdefault(label, []).append(round(value / b, 3))
    return out


def row_targets(mbps: float, raw_tcp_mbps: float | None, cpu_both_per_gib: float, floor_cpu: float | None,
                main_cpu_per_gib: float) -> dict[str, dict[str, Any]]:
    """The per-row targets: measured value, the bound, and met or not (None: not measurable)."""

    def verdict(ok: bool | None) -> str:
        return "unknown" if ok is None else ("met" if ok else "NOT met")

    vs_tcp = mbps / raw_tcp_mbps if raw_tcp_mbps else None
    vs_floor = cpu_both_per_gib / floor_cpu if floor_cpu else None
    return {
        "get_vs_raw_tcp": {"measured": None if vs_tcp is None else round(vs_tcp, 3),
                           "target": f">= {TARGET_GET_VS_RAW_TCP}",
                           "result": verdict(None if vs_tcp is None else vs_tcp >= TARGET_GET_VS_RAW_TCP)},
        "cpu_both_vs_floor": {"measured": None if vs_floor is None else round(vs_floor, 2),
                              "target": f"<= {TARGET_CPU_VS_FLOOR}",
                              "result": verdict(None if vs_floor is None else vs_floor <= TARGET_CPU_VS_FLOOR)},
        "fetcher_main_cpu_s_per_GiB": {"measured": round(main_cpu_per_gib, 3),
                                       "target": f"<= {TARGET_MAIN_CPU_PER_GIB}",
                                       "result": verdict(main_cpu_per_gib <= TARGET_MAIN_CPU_PER_GIB)},
    }


def scaling_target(ratios: Mapping[str, Sequence[float]], mbps: Mapping[str, float]) -> dict[str, Any]:
    """The 4x4 row over the 1x1 row: the median paired ratio if both rows ran, else not measured."""
    lo, hi = (row_label(*r) for r in SCALING_ROWS)
    if lo not in mbps or hi not in mbps:
        return {"rows": f"{hi} / {lo}", "measured": None, "target": f">= {TARGET_SCALING}",
                "result": "not run (needs rows 1x1 and 4x4)"}
    paired = median(ratios.get(hi, []))
    value = paired if paired is not None else (mbps[hi] / mbps[lo] if mbps[lo] else None)
    return {"rows": f"{hi} / {lo}", "measured": None if value is None else round(value, 2),
            "target": f">= {TARGET_SCALING}",
            "result": "unknown" if value is None else ("met" if value >= TARGET_SCALING else "NOT met")}


# -- a model directory of safetensors shards -------------------------------------------------------

TENSOR_ROWS, TENSOR_COLS = 4096, 4096  # BF16: 32 MiB per full tensor


def shard_sizes(total: int, shards: int) -> list[int]:
    """`total` bytes split into `shards` files (the first ones take the remainder)."""
    if shards < 1 or total < shards * 1024:
        raise ValueError(f"{total} bytes cannot make {shards} shards of at least 1 KiB")
    base, extra = divmod(total, shards)
    return [base + (1 if i < extra else 0) for i in range(shards)]


def _tensors(data_bytes: int, shard: int) -> list[tuple[str, str, list[int], int]]:
    """(name, dtype, shape, nbytes) covering exactly `data_bytes`: full BF16 matrices, then the rest."""
    full = 2 * TENSOR_ROWS * TENSOR_COLS
    out = []
    n, left = 0, data_bytes
    while left >= full:
        out.append((f"model.layers.{shard}.block.{n}.weight", "BF16", [TENSOR_ROWS, TENSOR_COLS], full))
        n, left = n + 1, left - full
    if left:
        if left % 2 == 0:
            out.append((f"model.layers.{shard}.block.{n}.bias", "BF16", [left // 2], left))
        else:
            out.append((f"model.layers.{shard}.block.{n}.scale", "U8", [left], left))
    return out


def _header_json(tensors: Sequence[tuple[str, str, list[int], int]], metadata: Mapping[str, str]) -> bytes:
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    pos = 0
    for name, dtype, shape, nbytes in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [pos, pos + nbytes]}
        pos += nbytes
    return json.dumps(header, separators=(",", ":")).encode()


def shard_header(size: int, shard: int, shards: int) -> tuple[bytes, list[tuple[str, int]]]:
    """The first bytes of a safetensors file of exactly `size` bytes (8-byte length + JSON header,
    space-padded to 8-byte alignment as the reference writer does) and its tensors (name, nbytes)."""
    meta = {"format": "pt", "shard": f"{shard + 1}/{shards}"}
    # The header of the longest possible data buffer bounds every shorter one's (offsets and
    # shapes have no more digits; +16 covers a BF16 remainder replacing a U8 one).
    bound = len(_header_json(_tensors(size, shard), meta)) + 16
    hlen = bound + (-bound % 8)
    data = size - 8 - hlen
    if data < 0:
        raise ValueError(f"a shard of {size} bytes cannot hold its own header")
    tensors = _tensors(data, shard)
    text = _header_json(tensors, meta)
    assert len(text) <= hlen
    head = hlen.to_bytes(8, "little") + text + b" " * (hlen - len(text))
    return head, [(name, nbytes) for name, _, _, nbytes in tensors]


def shard_name(i: int, shards: int) -> str:
    return f"model-{i + 1:05d}-of-{shards:05d}.safetensors"


def write_model(directory: Path, total: int, shards: int = 8, seed: int = 0) -> list[Path]:
    """Write `shards` safetensors files totalling exactly `total` bytes into `directory`, each
    tensor's bytes pseudo-random (deterministic from seed, shard and tensor: no two blocks alike),
    and the index JSON a Hugging Face sharded checkpoint carries beside them."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    weight_map: dict[str, str] = {}
    for i, size in enumerate(shard_sizes(total, shards)):
        head, tensors = shard_header(size, i, shards)
        path = directory / shard_name(i, shards)
        with open(path, "wb") as f:
            f.write(head)
            for t, (name, nbytes) in enumerate(tensors):
                rng = random.Random(f"{seed}/{i}/{t}")
                for start in range(0, nbytes, 16 * MIB):
                    f.write(rng.randbytes(min(16 * MIB, nbytes - start)))
                weight_map[name] = path.name
        paths.append(path)
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=1) + "\n")
    return paths


def tree_bytes(directory: Path) -> int:
    """Bytes of every regular file under `directory`."""
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def cpu_ticks_per_second() -> int:
    return os.sysconf("SC_CLK_TCK")
