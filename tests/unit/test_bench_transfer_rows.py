"""bench/transfer_rows.py, the pure parts of bench/transfer.py's holders x lanes
rows (issue 15 items 2 and 3): the row and CPU-list options, the per-process
CPU accounting of a node and everything it started (lanes that exit or start
mid-window included, pids reused by strangers excluded), paired ratios and the
targets, and the model directory of safetensors shards that Shoal's
tensor-aware chunker must accept. One test runs real processes through
bench/transfer.py's sampler: a child that burns CPU and exits inside the
window is still counted."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.transfer_rows import (
    ProcStat,
    TreeCpu,
    paired_ratios,
    parse_cpu_list,
    parse_rows,
    parse_stat,
    row_targets,
    scaling_target,
    shard_header,
    shard_name,
    shard_sizes,
    tree_bytes,
    write_model,
)
from shoal.store.chunking.choice import PerFileChunker, is_safetensors
from shoal.store.chunking.profiles import DEFAULT_PROFILE
from shoal.store.chunking.safetensors import SafetensorsChunker, parse_header

MIB = 1 << 20


# -- options --------------------------------------------------------------------------------------


def test_parse_rows_keeps_order_and_refuses_what_is_not_a_row() -> None:
    assert parse_rows("1x1,2x2, 4X4") == [(1, 1), (2, 2), (4, 4)]
    assert parse_rows("3x1") == [(3, 1)]
    for bad, match in [("1x", "HOLDERSxLANES"), ("2", "HOLDERSxLANES"), ("0x1", "holders"), ("1x0", "lanes"),
                       ("1x1,1x1", "twice"), ("17x1", "holders"), ("1x65", "lanes"), ("", "HOLDERSxLANES")]:
        with pytest.raises(ValueError, match=match):
            parse_rows(bad)


def test_parse_cpu_list() -> None:
    assert parse_cpu_list("0") == {0}
    assert parse_cpu_list("0-1") == {0, 1}
    assert parse_cpu_list("0,2-3") == {0, 2, 3}
    for bad in ("", "a", "3-1", "1-", "0,,1"):
        with pytest.raises(ValueError):
            parse_cpu_list(bad)


# -- per-process CPU of a node's tree ---------------------------------------------------------------


def test_parse_stat_takes_a_name_with_spaces_and_parentheses() -> None:
    fields = ["S", "7", "9", "11"] + ["0"] * 7 + ["120", "30"] + ["0"] * 6 + ["5555"] + ["0"] * 10
    p = parse_stat(42, "42 (python -m (lane)) " + " ".join(fields))
    assert p == ProcStat(pid=42, name="python -m (lane)", ppid=7, sid=11, cpu_ticks=150, start_ticks=5555)


def st(pid: int, ppid: int, sid: int, cpu: int, start: int, name: str = "p") -> ProcStat:
    return ProcStat(pid=pid, name=name, ppid=ppid, sid=sid, cpu_ticks=cpu, start_ticks=start)


def test_tree_counts_lanes_that_die_or_start_mid_window_and_nothing_else() -> None:
    t = TreeCpu({"B": 100, "H1": 300}, start_ticks=1000)
    # At the start: node B (its own session), its lane 101, holder H1, and strangers.
    t.observe([st(100, 1, 100, 50, 10), st(101, 100, 100, 10, 20), st(300, 1, 300, 5, 30),
               st(200, 1, 1, 5, 40), st(1, 0, 1, 999, 0)])
    # Mid-way: a replacement lane 102 is born; it starts a helper 103 in a session of its own.
    t.observe([st(100, 1, 100, 80, 10), st(101, 100, 100, 40, 20), st(102, 100, 100, 7, 1500),
               st(103, 102, 103, 3, 1510), st(300, 1, 300, 9, 30), st(200, 1, 1, 60, 40)])
    # Lane 101 was killed; a stranger got pid 101 (another start time); 103 is found through known 102.
    t.observe([st(100, 1, 100, 90, 10), st(101, 1, 1, 500, 2000), st(102, 100, 100, 20, 1500),
               st(103, 102, 103, 4, 1510), st(300, 1, 300, 12, 30)])
    res = t.result(ticks_per_second=10)
    b = res["B"]
    assert b["main_cpu_seconds"] == pytest.approx(4.0)  # 90 - 50 ticks
    by_pid = {p["pid"]: p for p in b["processes"]}
    assert set(by_pid) == {101, 102, 103}
    assert by_pid[101]["cpu_seconds"] == pytest.approx(3.0) and by_pid[101]["gone_by_end"]
    assert not by_pid[101]["born_in_window"]
    assert by_pid[102]["cpu_seconds"] == pytest.approx(2.0) and by_pid[102]["born_in_window"]  # counted from 0
    assert by_pid[103]["cpu_seconds"] == pytest.approx(0.4) and not by_pid[103]["gone_by_end"]
    assert b["children_cpu_seconds"] == pytest.approx(5.4)
    assert res["H1"] == {"main_cpu_seconds": pytest.approx(0.7), "children_cpu_seconds": 0, "processes": []}
    assert t.member_pids() == [100, 102, 103, 300]


def test_tree_counts_a_process_older_than_the_window_from_its_first_sighting() -> None:
    t = TreeCpu({"B": 100}, start_ticks=1000)
    t.observe([st(100, 1, 100, 0, 10)])
    t.observe([st(100, 1, 100, 0, 10), st(104, 100, 100, 70, 900)])  # missed at the start
    t.observe([st(100, 1, 100, 0, 10), st(104, 100, 100, 75, 900)])
    assert t.result(10)["B"]["children_cpu_seconds"] == pytest.approx(0.5)


def test_sampler_counts_a_child_that_burns_cpu_and_exits_inside_the_window(tmp_path: Path) -> None:
    """Real processes: a 'node' starts a 'lane' that burns ~1 CPU s and exits before the window
    closes; its CPU would vanish from /proc with it, but the sampler saw it while it ran."""
    from bench import transfer

    lane = "import time\nwhile time.process_time() < 1.0: pass\n"
    node = textwrap.dedent(f"""
        import subprocess, sys
        sys.stdin.readline()
        subprocess.run([sys.executable, "-c", {lane!r}], check=True)
        print("lane done", flush=True)
        sys.stdin.readline()
    """)
    proc = subprocess.Popen([sys.executable, "-c", node], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        with transfer.TreeSampler({"node": proc.pid}, interval=0.02) as sampler:
            proc.stdin.write("go\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == "lane done\n"
        res = sampler.result()["node"]
        assert len(res["processes"]) == 1
        (child,) = res["processes"]
        assert child["born_in_window"] and child["gone_by_end"]
        assert 0.6 <= child["cpu_seconds"] <= 2.0, res
        assert res["main_cpu_seconds"] < 0.5  # the node itself only waited
    finally:
        proc.kill()
        proc.wait(10)


# -- summaries and targets ----------------------------------------------------------------------------


def test_paired_ratios_divide_by_the_base_row_of_the_same_round() -> None:
    rounds = [{"1x1": 100.0, "2x2": 180.0}, {"2x2": 150.0, "1x1": 50.0}, {"2x2": 10.0}]
    assert paired_ratios(rounds, "1x1") == {"1x1": [1.0, 1.0], "2x2": [1.8, 3.0]}


def test_row_targets_say_met_or_not_met() -> None:
    t = row_targets(mbps=800, raw_tcp_mbps=3000, cpu_both_per_gib=3.0, floor_cpu=2.5, main_cpu_per_gib=0.2)
    assert t["get_vs_raw_tcp"]["result"] == "met" and t["get_vs_raw_tcp"]["measured"] == pytest.approx(0.267)
    assert t["cpu_both_vs_floor"]["result"] == "met" and t["cpu_both_vs_floor"]["measured"] == 1.2
    assert t["fetcher_main_cpu_s_per_GiB"]["result"] == "met"
    t = row_targets(mbps=250, raw_tcp_mbps=3000, cpu_both_per_gib=6.0, floor_cpu=2.5, main_cpu_per_gib=3.0)
    assert [v["result"] for v in t.values()] == ["NOT met"] * 3
    t = row_targets(mbps=250, raw_tcp_mbps=None, cpu_both_per_gib=6.0, floor_cpu=None, main_cpu_per_gib=0.1)
    assert [v["result"] for v in t.values()] == ["unknown", "unknown", "met"]


def test_scaling_target_uses_the_paired_ratio_of_4x4_over_1x1() -> None:
    assert scaling_target({"4x4": [3.2, 2.9, 3.1]}, {"1x1": 100, "4x4": 300})["result"] == "met"
    low = scaling_target({"4x4": [1.1, 1.3]}, {"1x1": 100, "4x4": 120})
    assert low["result"] == "NOT met" and low["measured"] == 1.2
    assert scaling_target({}, {"1x1": 100, "2x2": 150})["result"].startswith("not run")


# -- the model directory --------------------------------------------------------------------------------


def test_shard_sizes_add_up() -> None:
    assert shard_sizes(8 * MIB + 3, 8) == [MIB + 1] * 3 + [MIB] * 5
    with pytest.raises(ValueError):
        shard_sizes(100, 8)


@pytest.mark.parametrize("size", [2 << 30 >> 3, (96 * MIB) + 3, 32 * MIB + 8 + 200, 4096])
def test_shard_header_is_a_valid_safetensors_header_of_exactly_the_size(size: int) -> None:
    head, tensors = shard_header(size, 2, 8)
    header = parse_header(head, file_size=size)  # Shoal's own strict parser: layout checked against the size
    assert header.file_size == size and header.data_start == len(head) and header.data_start % 8 == 0
    assert [(t.name, t.nbytes) for t in header.tensors] == tensors
    assert header.metadata == {"format": "pt", "shard": "3/8"}
    assert all(t.nbytes <= 32 * MIB for t in header.tensors)


def test_write_model_makes_shards_the_tensor_aware_chunker_cuts(tmp_path: Path) -> None:
    model = tmp_path / "model"
    paths = write_model(model, 8 * 300_001, shards=8, seed=1)
    assert [p.name for p in paths] == [shard_name(i, 8) for i in range(8)]
    assert sum(p.stat().st_size for p in paths) == 8 * 300_001
    assert tree_bytes(model) > 8 * 300_001  # + model.safetensors.index.json
    per_file = PerFileChunker(DEFAULT_PROFILE)
    contents = set()
    for p in paths:
        assert is_safetensors(p)
        chunker = per_file.for_file(p)
        assert isinstance(chunker, SafetensorsChunker)
        with open(p, "rb") as f:
            header = parse_header(f)
        with open(p, "rb") as f:
            chunks = list(chunker.chunks(f))
        assert sum(map(len, chunks)) == p.stat().st_size == header.file_size
        contents.add(p.read_bytes()[header.data_start:])
    assert len(contents) == 8  # every shard's tensors differ: no block is shared between shards
    again = write_model(tmp_path / "again", 8 * 300_001, shards=8, seed=1)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]  # deterministic
