"""Helpers shared by the benchmarks in bench/.

- `machine_info()`: what the numbers were measured on (CPU, cores, RAM,
  kernel, Python, the Shoal commit).
- `ProcSample` / `cpu_seconds` / `peak_rss`: CPU time (utime + stime, all
  threads) and peak resident set (VmHWM) of a running process, read from
  /proc so they work for long-lived child processes we do not reap.
- `Cleanup`: owns every child process, node swarm and temp dir a benchmark
  makes and removes them on normal exit, on an exception and on SIGINT / SIGTERM.
- `print_table`, `write_json`, `update_results_section`: output.

Standard library only, so it also runs under the separate baseline venv.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

BENCH_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCH_DIR.parent
RESULTS_MD = BENCH_DIR / "RESULTS.md"
MIB = 1 << 20
GIB = 1 << 30
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine ----------------------------------------------------------------------


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = 0
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    try:
        commit = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "--short", "HEAD"],
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(PROJECT_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "cpu_model": cpu,
        "cpu_cores": os.cpu_count(),
        "ram_gib": round(mem_kib / (1 << 20), 1),
        "kernel": platform.release(),
        "os": platform.system(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "shoal_commit": commit,
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def machine_line(info: dict[str, Any]) -> str:
    return (f"{info['cpu_model']}, {info['cpu_cores']} cores, {info['ram_gib']} GiB RAM, "
            f"Linux {info['kernel']}, {info['python_impl']} {info['python']}, "
            f"Shoal {info['shoal_commit'] or '?'}, {info['date_utc']}")


# -- per-process accounting ---------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` (all its threads), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # the command name may hold spaces
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / _CLK_TCK


def peak_rss(pid: int) -> int:
    """VmHWM (peak resident set) of `pid`, in bytes; 0 if unreadable."""
    for line in _read(f"/proc/{pid}/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


@dataclass
class ProcSample:
    """CPU seconds of a set of processes at one moment."""

    cpu: dict[int, float]

    @classmethod
    def take(cls, pids: Iterable[int]) -> "ProcSample":
        return cls({pid: cpu_seconds(pid) for pid in pids})

    def delta(self, later: "ProcSample") -> dict[int, float]:
        return {pid: later.cpu[pid] - self.cpu[pid] for pid in self.cpu}


# -- cleanup --------------------------------------------------------------------------


class Cleanup:
    """Owns child processes and temp dirs; tears them down whatever happens.

    Use as a context manager. SIGTERM is turned into KeyboardInterrupt so the
    `with` block unwinds the same way as on Ctrl-C.
    """

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []
        self.dirs: list[Path] = []
        self.callbacks: list[Callable[[], None]] = []
        self._old_term: Any = None
        self._old_int: Any = None

    def __enter__(self) -> "Cleanup":
        def on_term(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt(f"signal {signum}")

        self._old_term = signal.signal(signal.SIGTERM, on_term)
        # Ctrl-C must unwind us even when started from a shell that ignores SIGINT for background jobs.
        self._old_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.close()
        finally:
            signal.signal(signal.SIGTERM, self._old_term)
            signal.signal(signal.SIGINT, self._old_int)

    def tempdir(self, prefix: str = "shoal-bench-", parent: str | None = None) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
        self.dirs.append(path)
        return path

    def popen(self, cmd: Sequence[str], **kwargs: Any) -> subprocess.Popen:
        proc = subprocess.Popen(list(cmd), **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen, timeout: float = 15.0) -> None:
        """SIGTERM, wait, then SIGKILL: only this process, by its pid."""
        if proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass

    def on_close(self, callback: Callable[[], None]) -> None:
        """Run `callback` at close, before the processes and dirs go (e.g. stopping a node swarm)."""
        self.callbacks.append(callback)

    def close(self) -> None:
        for callback in reversed(self.callbacks):
            try:
                callback()
            except Exception as exc:  # keep cleaning up the rest
                print(f"cleanup: {callback!r} failed: {exc}", file=sys.stderr)
        self.callbacks.clear()
        for proc in reversed(self.procs):
            try:
                self.stop(proc)
            except Exception as exc:  # keep cleaning up the rest
                print(f"cleanup: could not stop pid {proc.pid}: {exc}", file=sys.stderr)
        self.procs.clear()
        for path in reversed(self.dirs):
            shutil.rmtree(path, ignore_errors=True)
        self.dirs.clear()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05,
             details: Callable[[], str] | None = None) -> Any:
    """Poll `predicate` until it returns something truthy (returned) or `timeout` passes.

    `details`, if given, is called on timeout and its text added to the
    error (say, the nodes' logs), so a failed run says why.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            more = f":\n{details()}" if details is not None else ""
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}{more}")
        time.sleep(interval)


def parse_size(text: str) -> int:
    """A size from the command line: 4096, 1.5M, 2GiB, 512kb (binary units)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    unit = t[-1] if t and t[-1] in units else ""
    return int(float(t[: len(t) - len(unit)] if unit else t) * units[unit])


def make_log(name: str) -> Callable[[str], None]:
    """A bench script's progress log: `[name HH:MM:SS] msg` on stderr (stdout is for results)."""

    def log(msg: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


def write_pseudorandom(path: Path, size: int, seed: int = 0) -> None:
    """`size` deterministic incompressible bytes (random.Random(seed)), written in 16 MiB pieces."""
    import random

    rng = random.Random(seed)
    step = 16 * MIB
    with open(path, "wb") as f:
        for start in range(0, size, step):
            f.write(rng.randbytes(min(step, size - start)))


# -- output -------------------------------------------------------------------------------


def mb_per_s(nbytes: int, seconds: float) -> float:
    """Decimal megabytes per second (1 MB = 10^6 bytes)."""
    return nbytes / seconds / 1e6 if seconds > 0 else float("nan")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(str(h) for h in headers) + " |",
           "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def write_json(path: Path, doc: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def update_results_section(name: str, body: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the section `## name` of bench/RESULTS.md, leaving the others alone."""
    header = f"## {name}"
    if path.exists():
        lines = path.read_text().splitlines()
    else:
        lines = ["# Shoal benchmark results", "",
                 "Each section is written by the benchmark named in it; every baseline is",
                 "measured in the same run as the Shoal numbers it is compared with.", ""]
    start = next((i for i, l in enumerate(lines) if l.strip() == header), None)
    new = [header, ""] + body.strip("\n").splitlines() + [""]
    if start is None:
        if lines and lines[-1].strip():
            lines.append("")
        lines += new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = new
    path.write_text("\n".join(lines).rstrip("\n") + "\n")


def system_load(sample_s: float = 1.0) -> dict[str, Any]:
    """1-minute load average and how busy all CPUs were over `sample_s` while we slept.

    Benchmarks on a shared machine are only as good as its quiet: the report
    carries this so a reader can tell a clean run from a contended one.
    """

    def snap() -> tuple[int, int]:
        fields = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    t1, i1 = snap()
    time.sleep(sample_s)
    t2, i2 = snap()
    busy = 1.0 - (i2 - i1) / (t2 - t1) if t2 > t1 else 0.0
    return {"loadavg_1min": round(os.getloadavg()[0], 2), "cpu_busy_fraction_while_idle": round(busy, 2)}


def add_result_options(ap: Any, results_json: Path) -> None:
    """The options every bench that writes a RESULTS.md section shares: --no-write, --report-only, --wait-quiet."""
    ap.add_argument("--no-write", action="store_true", help="write neither the JSON nor RESULTS.md")
    ap.add_argument("--report-only", action="store_true",
                    help=f"measure nothing: rewrite the RESULTS.md section from results/{results_json.name}")
    ap.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                    help="first wait up to SECONDS for the CPUs to be under 25%% busy with other work")


def wait_quiet(seconds: float, log: Callable[[str], None]) -> None:
    """Wait up to `seconds` (0: not at all) for the CPUs to be under 25 % busy with other work."""
    deadline = time.monotonic() + seconds
    while seconds > 0 and time.monotonic() < deadline:
        load = system_load(3.0)
        if load["cpu_busy_fraction_while_idle"] <= 0.25:
            return
        log(f"waiting for a quiet machine: {load}")
        time.sleep(7)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM of `pid` to its current RSS (Linux >= 4.0, needs ptrace rights); False if refused."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False
