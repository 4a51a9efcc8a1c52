"""RAPL path on a fake powercap tree (these machines have none), and fallback."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.store.energy.meter import (
    ESTIMATE, RAPL, EnergyMeter, counter_delta_uj, find_package_zones, measure, rapl_available,
)


def make_zone(root: Path, name: str, label: str, energy: int, max_range: int = 1_000_000_000) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(label + "\n")
    (d / "energy_uj").write_text(f"{energy}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    return d


def make_stat(proc: Path, busy_ticks: int) -> None:
    proc.mkdir(exist_ok=True)
    # user nice system idle iowait irq softirq steal guest guest_nice
    (proc / "stat").write_text(f"cpu  {busy_ticks} 0 0 5000 7 0 0 0 0 0\ncpu0 1 0 0 0 0 0 0 0 0 0\n")


def test_counter_delta_plain_and_wrapped() -> None:
    assert counter_delta_uj(100, 350, 1000) == 250
    assert counter_delta_uj(900, 50, 1000) == 150


def test_only_package_zones_are_used(tmp_path: Path) -> None:
    make_zone(tmp_path, "intel-rapl:0", "package-0", 10)
    make_zone(tmp_path, "intel-rapl:1", "package-1", 10)
    make_zone(tmp_path, "intel-rapl:0:0", "core", 10)  # subzone: inside the package
    make_zone(tmp_path, "intel-rapl:2", "psys", 10)  # platform: would double count
    make_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 10)  # second view of package 0
    zones = find_package_zones(tmp_path)
    assert [z.energy_path.parent.name for z in zones] == ["intel-rapl:0", "intel-rapl:1"]


def test_unreadable_or_missing_tree_means_no_rapl(tmp_path: Path) -> None:
    assert not rapl_available(tmp_path / "absent")
    d = make_zone(tmp_path, "intel-rapl:0", "package-0", 10)
    (d / "energy_uj").unlink()  # what a non-root user effectively sees
    assert not rapl_available(tmp_path)


def test_rapl_with_wraparound_package_wide(tmp_path: Path) -> None:
    z0 = make_zone(tmp_path, "intel-rapl:0", "package-0", 999_000_000, max_range=1_000_000_000)
    z1 = make_zone(tmp_path, "intel-rapl:1", "package-1", 5_000_000)
    with EnergyMeter("put", powercap_root=tmp_path, proc_root=tmp_path / "noproc") as m:
        (z0 / "energy_uj").write_text("2000000\n")  # wrapped: +3 J
        (z1 / "energy_uj").write_text("9000000\n")  # +4 J
    r = m.result
    assert r.method == RAPL
    assert r.package_joules == pytest.approx(7.0)
    assert r.joules == pytest.approx(7.0)
    assert r.attribution == "package-wide"


def test_rapl_attributed_by_cpu_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    z0 = make_zone(tmp_path / "pc", "intel-rapl:0", "package-0", 0)
    proc = tmp_path / "proc"
    make_stat(proc, 1000)
    times = iter([10.0, 10.5])  # this process used 0.5 CPU-s
    monkeypatch.setattr("shoal.store.energy.meter.time.process_time", lambda: next(times))
    monkeypatch.setattr("shoal.store.energy.meter.os.sysconf", lambda _: 100)
    with EnergyMeter("serve", powercap_root=tmp_path / "pc", proc_root=proc) as m:
        (z0 / "energy_uj").write_text("20000000\n")  # 20 J package
        make_stat(proc, 1200)  # machine busy 2 CPU-s
    assert m.result.attribution == "cpu-share"
    assert m.result.joules == pytest.approx(20.0 * 0.5 / 2.0)
    assert m.result.package_joules == pytest.approx(20.0)


def test_fallback_estimate_uses_cpu_time(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    times = iter([3.0, 5.0])
    monkeypatch.setattr("shoal.store.energy.meter.time.process_time", lambda: next(times))
    with measure("audit-prove", watts_per_core=2.5, powercap_root=tmp_path) as m:
        pass
    assert m.result.method == ESTIMATE
    assert m.result.cpu_s == pytest.approx(2.0)
    assert m.result.joules == pytest.approx(5.0)
    assert m.result.kind == "audit-prove"


def test_cpu_time_counts_reaped_children(tmp_path: Path) -> None:
    """A put's hashing runs in helper processes; their CPU is the put's too."""
    import subprocess
    import sys

    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass"
    with measure("put", watts_per_core=1.0, powercap_root=tmp_path) as m:
        subprocess.run([sys.executable, "-c", burn], check=True)
    assert m.result.cpu_s >= 0.3


def test_default_watts_come_from_coefficients(tmp_path: Path) -> None:
    with measure("put", powercap_root=tmp_path) as m:
        sum(i * i for i in range(20_000))
    assert m.result.method == ESTIMATE
    assert m.result.joules >= 0
    assert m.watts_per_core == pytest.approx(2.02)


def test_result_before_exit_is_an_error(tmp_path: Path) -> None:
    m = EnergyMeter("put", watts_per_core=1.0, powercap_root=tmp_path)
    with pytest.raises(RuntimeError):
        _ = m.result
