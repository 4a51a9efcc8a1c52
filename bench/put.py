"""`shoal put` against the hashing limit and the IPFS JS importer, same run.

What is measured, each `--repeats` times (interleaved, so a noisy moment on
a shared machine hits every contender, not one):

- `shoal put FILE --quiet`: the real CLI, offline, into a fresh repo each
  time (init is not timed). Wall time of the whole child process
  (interpreter start included), its CPU time (`os.wait4`) and its peak RSS
  (VmHWM polled from /proc). Durable: every block's data synced before its
  rename, names fsync'd, then one SQLite transaction. Block files go out
  with O_DIRECT (shoal.store.persist.direct_io); the same put with `SHOAL_DIRECT_IO=0`
  (through the page cache) is a second row, so the effect is measured.
- `openssl dgst -sha256 FILE`: the hashing limit (one core, SHA extensions).
- coreutils `sha256sum FILE`: no SHA extensions here, for scale.
- the npm importer (`ipfs-unixfs-importer` 17.1.1, profile
  'unixfs-v1-2025') writing to a `blockstore-fs` 4.0.1 store
  (bench/importer_baseline.mjs). It never fsyncs, so `sync -f` of its store
  is timed right after and reported as a second, durable-equivalent row.
- the proof-of-storage commitment (`shoal.store.proofs.commitment.MerkleBuilder`, segment
  `DEFAULT_SEGMENT_SIZE`) over the same bytes, in its own child process:
  `put + commitment` (a second pass after the put) is compared with `put`.
- `shoal put` of an empty file: the fixed cost (interpreter, imports, repo
  open, index transaction) inside every put's wall time.
- `Repo.add` in a child process, with and without the commitment built in
  the same pass: `Repo.add(..., commit=True)` (what a node's put with
  replicas does) with `shoal.store.proofs.commit_files.COMMIT_PROCESS_ABOVE = 0`, the default
  path for files of 16 MiB or more: helper processes hash each 1 MiB piece
  once, for the block's CID and the commitment's leaves
  (store/proofs/piece_hashers.py); and with `COMMIT_PROCESS_ABOVE = None`, an
  in-process MerkleBuilder on the reading thread, which hashes the bytes a
  second time. Both save the leaf file and the commitment record durably.
  The helpers' CPU time is in the CPU column (`os.wait4` of the child
  counts its reaped children); their ~10 MiB RSS each is not in the peak
  RSS column.
- the disk's share: `dd bs=1M conv=fsync` of the file (one file), the same
  with `oflag=direct`, and the
  file written as 1,024 one-MiB files over 256 directories then one syncfs
  (what a one-file-per-block layout pays before hashing anything).
- with `--compare-root DIR`: `shoal put` from another checkout (e.g. the
  code before a change), in the same run.

Every contender's output (repos, block stores, copies) is kept until the
end of the run and removed with the work directory: this VM's root file
system is ext4 without a journal, where a file created within ~30 s of
thousands of deletions makes inode allocation skip each recently deleted
inode (ext4 `recently_deleted`; a quarter of a put's CPU in `perf`), so
deleting between contenders charged each one for its predecessor's
clean-up. The run needs about 11x the file size of free disk per repeat.

The file is generated once (deterministic: `random.Random(seed)`) and kept
in `--data-dir`; it is read once before measuring so that every contender
reads it from the page cache. The page cache is not dropped (that needs
root and would only add the disk's read speed to every row alike).

Usage:
    .venv/bin/python bench/put.py                  # 1 GiB, 3 repeats
    .venv/bin/python bench/put.py --size 256M --repeats 1 --no-results
    .venv/bin/python bench/put.py --profile        # + py-spy of one extra put
    .venv/bin/python bench/put.py --compare-root /tmp/shoal-old   # old code, same run
    .venv/bin/python bench/put.py --render bench/results/put.json # re-render RESULTS.md only
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    GIB, MIB, PROJECT_ROOT, Cleanup, human_bytes, machine_info, machine_line, markdown_table,
    mb_per_s, peak_rss, system_load, update_results_section, write_json, write_pseudorandom,
)

RESULTS_JSON = PROJECT_ROOT / "bench" / "results" / "put.json"
INTEROP_DIR = PROJECT_ROOT / "tests" / "interop"
NPM_SCRIPT = PROJECT_ROOT / "bench" / "importer_baseline.mjs"
SHOAL = [sys.executable, "-m", "shoal.cli.main"]
DEFAULT_DATA_DIR = Path("/var/tmp/shoal-bench")

TARGETS = {
    "put_over_openssl_max": 1.5,
    "put_over_npm_max": 1.0,
    "peak_rss_mib_max": 200,
    "commitment_overhead_max": 0.25,
}


def log(msg: str) -> None:
    print(f"[put] {msg}", file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": MIB, "G": GIB}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


# -- children ------------------------------------------------------------------------


class _HwmPoller(threading.Thread):
    """Polls VmHWM of a child until it exits; the last reading is its peak RSS.

    Why not ru_maxrss: Linux carries the parent's high-water mark into a
    (v)forked child across exec, so every small child would report this
    benchmark's own peak. VmHWM belongs to the exec'd image alone; polling
    every 5 ms misses at most the growth of the child's last 5 ms.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self._done = pid, 0, threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            hwm = peak_rss(self.pid)
            if hwm:
                self.peak = max(self.peak, hwm)
            self._done.wait(0.005)

    def stop(self) -> int:
        self._done.set()
        self.join()
        return self.peak


def run_child(cmd: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
              out_dir: Path) -> dict[str, Any]:
    """Run `cmd` to completion; wall seconds, exit code, output and its own peak RSS.

    The child is reaped with `os.wait4`, which also gives its CPU time
    (exactly this child's, not RUSAGE_CHILDREN's running total); peak RSS
    comes from `_HwmPoller`. stdout and stderr go to files: a pipe would
    need reading while we wait.
    """
    out_path, err_path = out_dir / "stdout", out_dir / "stderr"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), cwd=cwd, env=env, stdout=out, stderr=err)
        poller = _HwmPoller(proc.pid)
        poller.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            peak = poller.stop()
        seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, tell Popen
    return {
        "seconds": seconds,
        "code": proc.returncode,
        "peak_rss": peak,
        "ru_maxrss": usage.ru_maxrss * 1024,  # KiB on Linux; includes the parent's mark, see _HwmPoller
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "stdout": out_path.read_text(errors="replace"),
        "stderr": err_path.read_text(errors="replace"),
    }


def checked(result: dict[str, Any], what: str) -> dict[str, Any]:
    if result["code"] != 0:
        raise RuntimeError(f"{what} failed (exit {result['code']}): {result['stderr'].strip()[-2000:]}")
    return result


SHOAL_ROOT = PROJECT_ROOT  # --shoal-root: run the CLI from another checkout (before/after)


def shoal_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SHOAL_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.pop("SHOAL_REPO", None)
    return env


# -- contenders -------------------------------------------------------------------------


def shoal_put(work: Path, data: Path, tag: str, root: Path | None = None,
              direct_io: bool = True) -> dict[str, Any]:
    """`shoal put` from `root` (default: SHOAL_ROOT) into a fresh repo; init is not timed.

    `direct_io=False` runs it with SHOAL_DIRECT_IO=0: block files written
    through the page cache, as before shoal.store.persist.direct_io (the same-run comparison).
    """
    root = root or SHOAL_ROOT
    repo = work / f"repo-{tag}"
    env = shoal_env()
    env["SHOAL_DIRECT_IO"] = "1" if direct_io else "0"
    env["PYTHONPATH"] = str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")
    checked(run_child(SHOAL + ["--repo", str(repo), "init"], cwd=root, env=env, out_dir=work), "shoal init")
    r = checked(run_child(SHOAL + ["--repo", str(repo), "put", str(data), "--quiet"],
                          cwd=root, env=env, out_dir=work), "shoal put")
    r["cid"] = r["stdout"].strip()
    return r


def openssl(work: Path, data: Path) -> dict[str, Any]:
    r = checked(run_child(["openssl", "dgst", "-sha256", str(data)], out_dir=work), "openssl")
    r["sha256"] = r["stdout"].strip().rsplit(" ", 1)[-1]
    return r


def durable_copy(work: Path, data: Path, tag: str) -> dict[str, Any]:
    """`dd ... conv=fsync`: the same bytes written durably with no hashing: the disk's share."""
    out = work / f"copy-{tag}.bin"
    r = checked(run_child(["dd", f"if={data}", f"of={out}", "bs=1M", "conv=fsync"], out_dir=work), "dd")
    return r


def direct_copy(work: Path, data: Path, tag: str) -> dict[str, Any]:
    """`dd ... oflag=direct conv=fsync`: the same durable copy past the page cache."""
    out = work / f"dcopy-{tag}.bin"
    r = checked(run_child(["dd", f"if={data}", f"of={out}", "bs=1M", "oflag=direct", "conv=fsync"],
                          out_dir=work), "dd direct")
    return r


def files_floor(work: Path, data: Path, tag: str) -> dict[str, Any]:
    """The flatfs layout's disk floor: the file as 1 MiB files in shard dirs, one syncfs, no hashing."""
    out = work / f"floor-{tag}"
    r = checked(run_child([sys.executable, str(Path(__file__).resolve()), "--floor-child", str(data), str(out)],
                          cwd=PROJECT_ROOT, env=shoal_env(), out_dir=work), "floor child")
    return r


def floor_child(data: Path, out: Path) -> None:
    """Entry point: write `data` as 1 MiB files over 256 directories, syncfs once, fsync the dirs.

    What any durable one-file-per-block store pays on this filesystem before
    hashing a byte (the names are sequence numbers; no temp files, no renames).
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    out.mkdir()
    dirs = [out / f"{i:02x}" for i in range(256)]
    for d in dirs:
        d.mkdir()
    with open(data, "rb", buffering=0) as f:
        i = 0
        while piece := f.read(MIB):
            fd = os.open(dirs[i % 256] / f"{i}.data", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            os.write(fd, piece)
            os.close(fd)
            i += 1
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    finally:
        os.close(fd)
    from concurrent.futures import ThreadPoolExecutor

    def fsync_dir(path: Path) -> None:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fsync_dir, dirs + [out]))


def sha256sum(work: Path, data: Path) -> dict[str, Any]:
    r = checked(run_child(["sha256sum", str(data)], out_dir=work), "sha256sum")
    r["sha256"] = r["stdout"].split()[0]
    return r


def npm_importer(work: Path, data: Path, tag: str) -> dict[str, Any]:
    """The JS importer into blockstore-fs, then `sync -f` of its store (timed apart)."""
    store = work / f"npm-{tag}"
    r = checked(run_child(["node", str(NPM_SCRIPT), str(data), str(store)], cwd=INTEROP_DIR,
                          out_dir=work), "npm importer")
    doc = json.loads(r["stdout"].strip().splitlines()[-1])
    r["cid"] = doc["cid"]
    r["import_seconds"] = doc["seconds"]
    r["blocks"] = doc["blocks"]
    s = checked(run_child(["sync", "-f", str(store)], out_dir=work), "sync -f")
    r["sync_seconds"] = s["seconds"]
    return r


def merkle(work: Path, data: Path) -> dict[str, Any]:
    """MerkleBuilder over the file in its own process; `seconds` is the in-process time."""
    r = checked(run_child([sys.executable, str(Path(__file__).resolve()), "--merkle-child", str(data)],
                          cwd=PROJECT_ROOT, env=shoal_env(), out_dir=work), "merkle child")
    doc = json.loads(r["stdout"].strip().splitlines()[-1])
    r["process_seconds"] = r["seconds"]
    r.update(doc)
    return r


def lib_put(work: Path, data: Path, tag: str, commit: bool | str) -> dict[str, Any]:
    """`Repo.add` in a child, optionally with the commitment built in the same pass:
    "repo" is `Repo.add(..., commit=True)` on the reading thread (leaf file and
    record saved durably before the index transaction); "helper" the same with
    the piece-hashing helper processes."""
    repo = work / f"librepo-{tag}"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--lib-put-child", str(data), str(repo)]
    extra = {"repo": ["--commit-repo"], "helper": ["--commit-repo", "--commit-helper"]}.get(str(commit), [])
    r = checked(run_child(cmd + extra, cwd=SHOAL_ROOT, env=shoal_env(),
                          out_dir=work), "library put child")
    r.update(json.loads(r["stdout"].strip().splitlines()[-1]))
    return r


def lib_put_child(data: Path, repo_path: Path, via_repo: bool = False, helper: bool = False) -> None:
    """Entry point: init a repo, `Repo.add` the file; with `via_repo`,
    `Repo.add(..., commit=True)`, with `helper` on the piece-hashing helpers."""
    import shoal.store.proofs.commit_files

    shoal.store.proofs.commit_files.COMMIT_PROCESS_ABOVE = 0 if helper else None  # each row measures one path
    from shoal.store.persist.repo import Repo

    with Repo.init(repo_path) as repo:
        started = time.perf_counter()
        if via_repo:
            result = repo.add(data, commit=True)
            assert result.commitment is not None
            root = result.commitment.root.hex()
        else:
            result = repo.add(data)
            root = ""
        seconds = time.perf_counter() - started
    print(json.dumps({"seconds_in_process": seconds, "cid": str(result.cid), "commitment_root": root}))


def merkle_child(path: Path) -> None:
    """Entry point of the commitment child: feed 1 MiB reads (the chunker's pieces) to MerkleBuilder."""
    from shoal.store.proofs.commitment import DEFAULT_SEGMENT_SIZE, MerkleBuilder

    started = time.perf_counter()
    builder = MerkleBuilder(DEFAULT_SEGMENT_SIZE)
    with open(path, "rb", buffering=0) as f:
        while piece := f.read(MIB):
            builder.update(piece)
    commitment = builder.finish()
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "segment_size": DEFAULT_SEGMENT_SIZE,
                      "segments": commitment.n_segments, "root": commitment.root.hex()}))


# -- data and machine -----------------------------------------------------------------------


def ensure_data(data_dir: Path, size: int, seed: int) -> Path:
    """The deterministic input, generated once and reused by later runs."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"put-{size}-seed{seed}.bin"
    if not path.exists() or path.stat().st_size != size:
        log(f"generating {human_bytes(size)} of pseudorandom data in {path}")
        tmp = path.with_name(path.name + ".part")
        write_pseudorandom(tmp, size, seed)
        os.replace(tmp, path)
    return path


def settle(work: Path) -> None:
    """Untimed: sync the filesystem so the previous contender's leftovers (its deleted
    1 GiB: discards on a `discard` mount, journal commits) are not charged to the next."""
    subprocess.run(["sync", "-f", str(work)], check=False)
    time.sleep(0.2)


def warm(path: Path) -> float:
    """Read the file once so every contender reads it from the page cache."""
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as f:
        while f.read(16 * MIB):
            pass
    return time.perf_counter() - started


def disk_info(path: Path) -> dict[str, Any]:
    """Filesystem and block device under `path`, as far as /proc and /sys tell."""
    best, fstype, device, options = "", "?", "?", ""
    target = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        dev, mnt, fs, opts = line.split()[:4]
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
            best, fstype, device, options = mnt, fs, dev, opts
    info: dict[str, Any] = {"mount": best, "fstype": fstype, "device": device, "mount_options": options}
    name = Path(device).name
    queue = Path("/sys/block") / name / "queue"
    if queue.is_dir():
        def read(p: Path) -> str:
            try:
                return p.read_text().strip()
            except OSError:
                return "?"
        info["rotational_flag"] = read(queue / "rotational")
        info["write_cache"] = read(queue / "write_cache")
        info["scheduler"] = read(queue / "scheduler")
        info["model"] = read(Path("/sys/block") / name / "device" / "model")
        driver = Path("/sys/block") / name / "device" / "driver"
        info["driver"] = driver.resolve().name if driver.exists() else "?"
    if name.startswith("vd"):
        info["kind"] = ("virtio block device (a VM disk: the host decides what is behind it; "
                        "the rotational flag of a virtio disk means nothing)")
    return info


# -- profile ---------------------------------------------------------------------------------


def pyspy_bin() -> str | None:
    cand = PROJECT_ROOT / ".venv" / "bin" / "py-spy"
    return str(cand) if cand.exists() else shutil.which("py-spy")


_PARKED = ("_worker (concurrent/futures/thread.py)", "wait (threading.py)", "get (queue.py)")


def summarize_raw(path: Path, top: int = 12) -> dict[str, Any]:
    """Where samples land in py-spy's collapsed output: by leaf function, per thread group.

    Recorded with --idle, so blocking calls (write, fsync, waits) count: the
    main thread's breakdown is then a wall-time breakdown of the put.
    """
    per_group: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f]
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        group = "workers" if "shoal-import" in thread else "flush" if "shoal-flush" in thread else "main"
        leaf = _short(frames[-1])
        # Attribute samples in C calls to the innermost Shoal frame too, for readability.
        shoal = next((_short(f) for f in reversed(frames) if "/work/" in f or "store/" in f or "cli/" in f), "")
        key = leaf if not shoal or shoal == leaf else f"{leaf} <- {shoal}"
        per_group[group][key] += int(count)
    out: dict[str, Any] = {}
    for group, counter in per_group.items():
        total = sum(counter.values())
        parked = sum(c for k, c in counter.items() if k.split(" <- ")[0] in _PARKED)
        out[group] = {
            "samples": total,
            "top": [(k, round(100.0 * c / total, 1)) for k, c in counter.most_common(top)],
            "parked_percent": round(100.0 * parked / total, 1) if total else 0.0,
        }
    return out


def _short(frame: str) -> str:
    name, _, where = frame.partition(" (")
    file = where.rstrip(")").rsplit(":", 1)[0]
    parts = Path(file).parts
    return f"{name} ({'/'.join(parts[-2:]) if len(parts) >= 2 else file})"


def profile_put(work: Path, data: Path) -> dict[str, Any]:
    spy = pyspy_bin()
    if spy is None:
        return {"error": "py-spy not found (.venv/bin/pip install py-spy)"}
    repo = work / "repo-profile"
    env = shoal_env()
    checked(run_child(SHOAL + ["--repo", str(repo), "init"], cwd=PROJECT_ROOT, env=env, out_dir=work), "shoal init")
    raw = work / "put.pyspy.txt"
    r = run_child([spy, "record", "--format", "raw", "--rate", "250", "--idle", "--threads", "--nonblocking",
                   "-o", str(raw), "--"] + SHOAL + ["--repo", str(repo), "put", str(data), "--quiet"],
                  cwd=PROJECT_ROOT, env=env, out_dir=work)
    shutil.rmtree(repo, ignore_errors=True)
    if r["code"] != 0 or not raw.exists():
        return {"error": f"py-spy failed: {r['stderr'].strip()[-500:]}"}
    keep = PROJECT_ROOT / "bench" / "results" / "put.pyspy.txt"
    shutil.copyfile(raw, keep)
    return {"seconds_while_profiled": round(r["seconds"], 3), "raw": str(keep.relative_to(PROJECT_ROOT)),
            **summarize_raw(raw)}


# -- the run ----------------------------------------------------------------------------------


def _git_commit(root: Path) -> str | None:
    """The short commit of a --compare-root checkout, for the row's label."""
    r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return r.stdout.strip() or None if r.returncode == 0 else None


def stats(values: list[float]) -> dict[str, Any]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3), "runs": [round(v, 3) for v in values]}


def run(args: argparse.Namespace) -> dict[str, Any]:
    size, reps = args.size, args.repeats
    with Cleanup() as cl:
        data = ensure_data(args.data_dir, size, args.seed)
        work = cl.tempdir("shoal-bench-put-", parent=str(args.data_dir))
        load_before = system_load()
        warm_s = warm(data)
        log(f"file {data} ({human_bytes(size)}), read once in {warm_s:.2f} s to warm the page cache")
        names = ["shoal_put", "shoal_put_buffered", "openssl", "sha256sum", "npm", "merkle", "put_empty", "lib_put",
                 "lib_put_commit_repo", "lib_put_commit_helper", "dd", "dd_direct", "floor"]
        if args.no_npm:
            names.remove("npm")
        if args.compare_root:
            names.insert(1, "put_compare")
        empty = work / "empty.bin"
        empty.write_bytes(b"")
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        actions: dict[str, Callable[[int], dict[str, Any]]] = {
            "shoal_put": lambda i: shoal_put(work, data, f"{i}"),
            "shoal_put_buffered": lambda i: shoal_put(work, data, f"buf-{i}", direct_io=False),
            "openssl": lambda i: openssl(work, data),
            "sha256sum": lambda i: sha256sum(work, data),
            "npm": lambda i: npm_importer(work, data, f"{i}"),
            "merkle": lambda i: merkle(work, data),
            "put_empty": lambda i: shoal_put(work, empty, f"empty-{i}"),
            "put_compare": lambda i: shoal_put(work, data, f"cmp-{i}", args.compare_root.resolve()),
            "dd": lambda i: durable_copy(work, data, f"{i}"),
            "dd_direct": lambda i: direct_copy(work, data, f"{i}"),
            "floor": lambda i: files_floor(work, data, f"{i}"),
            "lib_put": lambda i: lib_put(work, data, f"{i}", False),
            "lib_put_commit_repo": lambda i: lib_put(work, data, f"r{i}", "repo"),
            "lib_put_commit_helper": lambda i: lib_put(work, data, f"h{i}", "helper"),
        }
        for i in range(reps):
            for n in names:
                settle(work)
                warm(data)  # a contender that wrote 1 GiB may have pushed the input out
                r = actions[n](i)
                runs[n].append(r)
                log(f"run {i + 1}/{reps} {n}: {r['seconds']:.3f} s, peak RSS {human_bytes(r['peak_rss'])}")
        profile = profile_put(work, data) if args.profile else None
        load_after = system_load()

    cids = {r["cid"] for r in runs["shoal_put"]} | {r["cid"] for r in runs["shoal_put_buffered"]}
    sha = {r["sha256"] for r in runs["openssl"]} | {r["sha256"] for r in runs["sha256sum"]}
    if len(cids) != 1 or len(sha) != 1:
        raise RuntimeError(f"contenders disagree: CIDs {cids}, sha256 {sha}")
    npm_cids = {r["cid"] for r in runs.get("npm", [])}
    if npm_cids and npm_cids != cids:
        raise RuntimeError(f"npm importer CID {npm_cids} differs from shoal's {cids}")

    def secs(name: str, key: str = "seconds") -> dict[str, float]:
        return stats([r[key] for r in runs[name]])

    def rss(name: str) -> float:
        return round(float(max(r["peak_rss"] for r in runs[name])) / MIB, 1)

    contenders: dict[str, Any] = {
        "shoal_put": {**secs("shoal_put"), "peak_rss_mib": rss("shoal_put"),
                      "cpu_seconds": secs("shoal_put", "cpu_seconds")},
        "shoal_put_buffered": {**secs("shoal_put_buffered"), "peak_rss_mib": rss("shoal_put_buffered"),
                               "cpu_seconds": secs("shoal_put_buffered", "cpu_seconds")},
        "openssl_sha256": {**secs("openssl"), "peak_rss_mib": rss("openssl")},
        "sha256sum": {**secs("sha256sum"), "peak_rss_mib": rss("sha256sum")},
        "merkle_commitment": {**secs("merkle"), "process_seconds": secs("merkle", "process_seconds"),
                              "peak_rss_mib": rss("merkle"), "segment_size": runs["merkle"][0]["segment_size"],
                              "segments": runs["merkle"][0]["segments"]},
        "shoal_put_empty_file": {**secs("put_empty"), "peak_rss_mib": rss("put_empty")},
        "durable_copy_dd": {**secs("dd"), "peak_rss_mib": rss("dd"), "cpu_seconds": secs("dd", "cpu_seconds")},
        "direct_copy_dd": {**secs("dd_direct"), "peak_rss_mib": rss("dd_direct"),
                           "cpu_seconds": secs("dd_direct", "cpu_seconds")},
        "block_files_floor": {**secs("floor"), "peak_rss_mib": rss("floor"),
                              "cpu_seconds": secs("floor", "cpu_seconds")},
        "library_put": {**secs("lib_put"), "in_process": secs("lib_put", "seconds_in_process"),
                        "peak_rss_mib": rss("lib_put")},
        "library_put_with_commitment_repo": {
            **secs("lib_put_commit_repo"), "in_process": secs("lib_put_commit_repo", "seconds_in_process"),
            "peak_rss_mib": rss("lib_put_commit_repo")},
        "library_put_with_commitment_helper": {
            **secs("lib_put_commit_helper"), "in_process": secs("lib_put_commit_helper", "seconds_in_process"),
            "peak_rss_mib": rss("lib_put_commit_helper")},
    }
    if "put_compare" in runs:
        if {r["cid"] for r in runs["put_compare"]} != cids:
            raise RuntimeError("the --compare-root put made a different CID")
        contenders["shoal_put_compare_root"] = {
            **secs("put_compare"), "peak_rss_mib": rss("put_compare"),
            "cpu_seconds": secs("put_compare", "cpu_seconds"), "root": str(args.compare_root),
            "commit": _git_commit(args.compare_root)}
    roots = ({r["root"] for r in runs["merkle"]}
             | {r["commitment_root"] for r in runs["lib_put_commit_repo"]}
             | {r["commitment_root"] for r in runs["lib_put_commit_helper"]})
    if len(roots) != 1:
        raise RuntimeError(f"commitment roots disagree: {roots}")
    if "npm" in runs:
        durable = [r["seconds"] + r["sync_seconds"] for r in runs["npm"]]
        contenders["npm_importer"] = {**secs("npm"), "import_seconds": secs("npm", "import_seconds"),
                                      "peak_rss_mib": rss("npm"), "sync_f_seconds": secs("npm", "sync_seconds")}
        contenders["npm_importer_plus_sync"] = stats(durable)
    for run_name, key in (("openssl", "openssl_sha256"), ("sha256sum", "sha256sum"), ("npm", "npm_importer"),
                          ("merkle", "merkle_commitment"), ("put_empty", "shoal_put_empty_file"),
                          ("lib_put", "library_put"),
                          ("lib_put_commit_repo", "library_put_with_commitment_repo"),
                          ("lib_put_commit_helper", "library_put_with_commitment_helper")):
        if run_name in runs and key in contenders:
            contenders[key]["cpu_seconds"] = secs(run_name, "cpu_seconds")

    put = contenders["shoal_put"]["median"]

    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    commit_s = contenders["merkle_commitment"]["median"]
    ratios: dict[str, Any] = {
        "put_over_openssl": ratio(put, contenders["openssl_sha256"]["median"]),
        "put_over_sha256sum": ratio(put, contenders["sha256sum"]["median"]),
        "buffered_put_over_put": ratio(contenders["shoal_put_buffered"]["median"], put),
        "put_over_direct_copy": ratio(put, contenders["direct_copy_dd"]["median"]),
        "put_over_durable_copy": ratio(put, contenders["durable_copy_dd"]["median"]),
        "put_over_block_files_floor": ratio(put, contenders["block_files_floor"]["median"]),
        "block_files_floor_over_openssl": ratio(contenders["block_files_floor"]["median"],
                                                contenders["openssl_sha256"]["median"]),
        "put_plus_commitment_over_put": ratio(put + commit_s, put),
        "repo_put_with_commitment_over_put": ratio(
            contenders["library_put_with_commitment_repo"]["median"], contenders["library_put"]["median"]),
        "repo_put_with_commitment_over_put_min_of_each": ratio(
            contenders["library_put_with_commitment_repo"]["min"], contenders["library_put"]["min"]),
        "repo_put_with_commitment_cpu_over_put_cpu": ratio(
            contenders["library_put_with_commitment_repo"]["cpu_seconds"]["median"],
            contenders["library_put"]["cpu_seconds"]["median"]),
        "helper_put_with_commitment_over_put": ratio(
            contenders["library_put_with_commitment_helper"]["median"], contenders["library_put"]["median"]),
        "helper_put_with_commitment_over_put_min_of_each": ratio(
            contenders["library_put_with_commitment_helper"]["min"], contenders["library_put"]["min"]),
        "helper_put_with_commitment_cpu_over_put_cpu": ratio(
            contenders["library_put_with_commitment_helper"]["cpu_seconds"]["median"],
            contenders["library_put"]["cpu_seconds"]["median"]),
        "put_over_openssl_min_of_each": ratio(contenders["shoal_put"]["min"], contenders["openssl_sha256"]["min"]),
    }
    if "shoal_put_compare_root" in contenders:
        ratios["put_over_compare_root_put"] = ratio(put, contenders["shoal_put_compare_root"]["median"])
    if "npm_importer" in contenders:
        ratios["put_over_npm"] = ratio(put, contenders["npm_importer"]["median"])
        ratios["put_over_npm_plus_sync"] = ratio(put, contenders["npm_importer_plus_sync"]["median"])
    met = {
        "put_over_openssl": ratios["put_over_openssl"] <= TARGETS["put_over_openssl_max"],
        "put_faster_than_npm": ratios.get("put_over_npm", 99) < TARGETS["put_over_npm_max"],
        "peak_rss": contenders["shoal_put"]["peak_rss_mib"] < TARGETS["peak_rss_mib_max"],
        "commitment_overhead": ratios["put_plus_commitment_over_put"] - 1 <= TARGETS["commitment_overhead_max"],
        "commitment_overhead_repo": (ratios["repo_put_with_commitment_over_put"] - 1
                                     <= TARGETS["commitment_overhead_max"]),
        "commitment_overhead_helper": (ratios["helper_put_with_commitment_over_put"] - 1
                                       <= TARGETS["commitment_overhead_max"]),
    }
    return {
        "benchmark": "put",
        "size_bytes": size,
        "repeats": reps,
        "seed": args.seed,
        "shoal_root": str(SHOAL_ROOT),
        "data_sha256": sha.pop(),
        "cid": cids.pop(),
        "machine": machine_info(),
        "disk": disk_info(args.data_dir),
        "load_before": load_before,
        "load_after": load_after,
        "page_cache": "file read once before the run and again before each contender; cache never dropped",
        "between_contenders": "untimed `sync -f` of the work filesystem and 0.2 s pause (settle())",
        "contenders": contenders,
        "ratios": ratios,
        "targets": TARGETS,
        "targets_met": met,
        "profile": profile,
    }


# -- report ---------------------------------------------------------------------------------


def markdown(doc: dict[str, Any]) -> str:
    c, r, size = doc["contenders"], doc["ratios"], doc["size_bytes"]
    d = doc["disk"]
    md = [f"Written by `bench/put.py` ({human_bytes(size)} file, {doc['repeats']} runs per row, "
          "interleaved, all rows from the same run). Machine: " + machine_line(doc["machine"]) + ". "
          f"Disk: {d.get('fstype')} on {d.get('device')} ({d.get('kind', d.get('model', '?'))}; "
          f"write cache {d.get('write_cache', '?')}). Load average before/after: "
          f"{doc['load_before']['loadavg_1min']} / {doc['load_after']['loadavg_1min']}, CPUs busy with "
          f"other work in the second before the run: {round(doc['load_before']['cpu_busy_fraction_while_idle'] * 100)} %.", ""]
    rows = []

    def row(label: str, key: str, note: str = "") -> None:
        if key not in c:
            return
        x = c[key]
        rss = x.get("peak_rss_mib", "")
        cpu = x.get("cpu_seconds", {}).get("median", "")
        rows.append([label, x["median"], x["min"], round(mb_per_s(size, x["median"]), 1), cpu, rss, note])

    row("`shoal put` (CLI, durable, fresh repo)", "shoal_put")
    row("`shoal put`, `SHOAL_DIRECT_IO=0` (block files through the page cache)", "shoal_put_buffered",
        "same code, buffered writes")
    cmp_commit = c.get("shoal_put_compare_root", {}).get("commit")
    row(f"`shoal put` from --compare-root ({'commit ' + cmp_commit if cmp_commit else 'the code before this change'})",
        "shoal_put_compare_root", "same run, same repo setup")
    row("`openssl dgst -sha256`", "openssl_sha256")
    row("coreutils `sha256sum`", "sha256sum")
    row("npm ipfs-unixfs-importer 17.1.1 → blockstore-fs 4.0.1", "npm_importer", "no fsync")
    row("… plus `sync -f` of its store", "npm_importer_plus_sync", "durable equivalent")
    row(f"MerkleBuilder, {c['merkle_commitment']['segment_size']} B segments", "merkle_commitment",
        "in-process time")
    row("`dd bs=1M conv=fsync` copy of the file", "durable_copy_dd", "the disk's share: durable write, no hashing")
    row("`dd bs=1M oflag=direct conv=fsync` copy", "direct_copy_dd", "the disk's share past the page cache")
    row("1 MiB files in 256 dirs, then one syncfs + dir fsyncs (Python, one thread, no hashing)",
        "block_files_floor", "naive durable file-per-block write")
    row("`shoal put` of an empty file", "shoal_put_empty_file", "fixed cost per put")
    row("`Repo.add` in a child process (no CLI)", "library_put", "")
    row("… `Repo.add(commit=True)`, piece-hashing helpers (the default for files ≥ 16 MiB)",
        "library_put_with_commitment_helper",
        "each piece hashed once for its CID and its leaves; CPU includes the helpers")
    row("… `Repo.add(commit=True)`, reading thread (`COMMIT_PROCESS_ABOVE = None`)", "library_put_with_commitment_repo",
        "MerkleBuilder on the reading thread: every byte hashed twice")
    md.append(markdown_table(["contender", "median s", "min s", "MB/s (median)", "CPU s (median)", "peak RSS MiB",
                              "note"], rows))
    md.append("")
    t, met = doc["targets"], doc["targets_met"]

    def yes(ok: bool) -> str:
        return "met" if ok else "NOT met"

    md.append(markdown_table(["target", "measured", "result"], [
        [f"put ≤ {t['put_over_openssl_max']}× openssl", f"{r['put_over_openssl']}×", yes(met["put_over_openssl"])],
        ["put faster than the npm importer", f"{r.get('put_over_npm')}× (vs +sync: {r.get('put_over_npm_plus_sync')}×)",
         yes(met["put_faster_than_npm"])],
        [f"put peak RSS < {t['peak_rss_mib_max']} MiB", f"{c['shoal_put']['peak_rss_mib']} MiB", yes(met["peak_rss"])],
        [f"put with its commitment ≤ put + {int(t['commitment_overhead_max'] * 100)} % "
         "(`Repo.add(commit=True)`, the node's put with replicas, default path)",
         f"{_signed_pct(r['helper_put_with_commitment_over_put'])} (min of each: "
         f"{_signed_pct(r['helper_put_with_commitment_over_put_min_of_each'])}; CPU "
         f"{_signed_pct(r['helper_put_with_commitment_cpu_over_put_cpu'])})",
         yes(met["commitment_overhead_helper"])],
        ["(… on the reading thread, `COMMIT_PROCESS_ABOVE = None`: small files and other chunkings)",
         f"{_signed_pct(r['repo_put_with_commitment_over_put'])} (min of each: "
         f"{_signed_pct(r['repo_put_with_commitment_over_put_min_of_each'])}; CPU "
         f"{_signed_pct(r['repo_put_with_commitment_cpu_over_put_cpu'])})", "for scale"],
        ["(put, then the commitment in a second pass)",
         f"+{round((r['put_plus_commitment_over_put'] - 1) * 100)} %", "for scale"],
    ]))
    md.append("")
    md.append(f"Ratios (medians): put / openssl = {r['put_over_openssl']}, buffered put / put = "
              f"{r['buffered_put_over_put']}, put / direct dd copy = {r['put_over_direct_copy']}, put / sha256sum = "
              f"{r['put_over_sha256sum']}, put / durable dd copy = {r['put_over_durable_copy']}, put / block-files floor = "
              f"{r['put_over_block_files_floor']}, block-files floor / openssl = {r['block_files_floor_over_openssl']}, put / npm importer = {r.get('put_over_npm')} "
              f"(/ npm + sync = {r.get('put_over_npm_plus_sync')}), put / put of --compare-root = {r.get('put_over_compare_root_put')}, (put + commitment) / put = "
              f"{r['put_plus_commitment_over_put']}; `Repo.add(commit=True)` / `Repo.add`: with the helpers "
              f"{r['helper_put_with_commitment_over_put']}, on the reading thread "
              f"{r['repo_put_with_commitment_over_put']}.")
    md.append("")
    md.append("Every time is the wall time of the whole child process (interpreter or node start-up "
              "included; the npm importer's own import loop took "
              f"{c.get('npm_importer', {}).get('import_seconds', {}).get('median', '?')} s median). "
              "Peak RSS is the child's VmHWM, polled every 5 ms from /proc (ru_maxrss "
              "would include this benchmark's own peak, which Linux carries into a child across exec). MB/s are decimal. The input was read "
              "once before the run and again before each contender, so every contender hashed from the "
              "page cache; the cache was never dropped. Between contenders an untimed `sync -f` settles the "
              "previous one's writes; every contender's output is kept until the end of the run (on this "
              "journal-less ext4, creating files soon after thousands of deletions makes inode allocation "
              "skip each recently deleted inode, which charged one contender for another's clean-up). The npm blockstore never fsyncs (steno "
              "temp file + rename), Shoal makes every block durable (syncfs rounds or fsync) and fsyncs its "
              "directories before the index transaction, so the `+ sync -f` row is the like-for-like one. The commitment ran in its own "
              "process over the same bytes (1 MiB reads, as the chunker yields them); "
              f"{c['merkle_commitment']['segments']} segments.")
    lp, lh = c["library_put"], c.get("library_put_with_commitment_helper")
    if lh:
        extra_cpu = round(lh["cpu_seconds"]["median"] - lp["cpu_seconds"]["median"], 2)
        md.append("")
        md.append(
            "The commitment during the put: `Repo.add(commit=True)` (a node's put with `--replicas` > 1) reads "
            "each 1 MiB chunk into a slot of a ring that lives in a memfd, and helper processes "
            "(store/proofs/piece_hashers.py, one more than there are cores) hash each chunk once from there, through "
            "libcrypto's SHA256_Update in 2 KiB steps: the states between the steps are the commitment's "
            "leaves and the last one is the block's SHA-256, its CID (store/proofs/commitment.py, tree rules version 2). "
            "The helpers write the leaf file themselves and send back the digest and two tree nodes per piece; "
            "the put folds the nodes into the root and saves the leaf file and `<cid>.commitment` durably "
            "before the index transaction, so `shoal.store.proofs.commit_files.build_commitment` only re-folds the leaf file "
            f"later (no data read). It added {extra_cpu} CPU-s to the put in this run (medians): the interpreter "
            "and cffi work of the 2 KiB steps (two foreign calls each) over one SHA-256 call per block, the "
            "4-ary tree's inner hashes, the helpers' start and the pipes. On the reading thread instead (the second row, "
            "used for files under 16 MiB and chunkings that are not whole pieces) the bytes are hashed a "
            f"second time: {_signed_pct(r['repo_put_with_commitment_over_put'])}. The plain `Repo.add` row "
            f"alone spans {lp['min']}-{lp['max']} s.")
    sp, ossl = c["shoal_put"], c["openssl_sha256"]
    md.append("")
    dd, ddd, buf = c["durable_copy_dd"], c.get("direct_copy_dd"), c.get("shoal_put_buffered")
    md.append(f"Where the time goes: `shoal put` used {sp['cpu_seconds']['median']} CPU-s per run "
              f"(openssl {ossl['cpu_seconds']['median']}) on a 2-core machine; {c['shoal_put_empty_file']['median']} s "
              "of its wall time is the fixed cost (interpreter, imports, repo, index). On this VM a write into "
              "new page-cache pages is expensive: `dd conv=fsync` took "
              f"{dd['median']} s and {dd['cpu_seconds']['median']} CPU-s, the same copy with `oflag=direct` "
              f"{ddd['median'] if ddd else '?'} s and {ddd['cpu_seconds']['median'] if ddd else '?'} CPU-s; "
              "so block files go out with O_DIRECT (store/persist/direct_io.py). The same put through the page cache "
              f"(`SHOAL_DIRECT_IO=0`) took {buf['median'] if buf else '?'} s and "
              f"{buf['cpu_seconds']['median'] if buf else '?'} CPU-s. 1.5x openssl would be "
              f"{round(1.5 * ossl['median'], 2)} s: after the fixed cost, under a second for reading, hashing and "
              "durably writing 1,024 block files with 2 cores shared between the hashing, the copies and the "
              "kernel's file work. The import reads each 1 MiB chunk into a page-aligned slot and hashes and "
              "writes it (O_DIRECT) from there, through flatfs staging: 8 writer threads that never wait for "
              "a sync round, while one namer thread runs the syncfs rounds and renames behind them "
              "(docs/ARCHITECTURE.md, 'Write ordering'). The `--compare-root` row, if present, is the code "
              "before that change in the same run.")
    before = doc.get("before")
    if before:
        b, bc = before["contenders"], before["contenders"]["shoal_put"]
        md.append("")
        md.append("Before this change (the previous flatfs and importer: one fsync per block from "
                  "`cpu_count` workers, 256 serial directory fsyncs in flush), measured by the same script "
                  f"just before (load {before['load_before']['loadavg_1min']} / "
                  f"{before['load_after']['loadavg_1min']}): `shoal put` median {bc['median']} s, min "
                  f"{bc['min']} s, peak RSS {bc['peak_rss_mib']} MiB; openssl in that run "
                  f"{b['openssl_sha256']['median']} s; put / openssl = {before['ratios']['put_over_openssl']}, "
                  f"put / npm = {before['ratios'].get('put_over_npm')}. After / before (put medians): "
                  f"{round(c['shoal_put']['median'] / bc['median'], 2)}.")
    prof = doc.get("profile")
    if prof and "error" not in prof:
        md.append("")
        md.append(f"Profile (py-spy --idle, one extra put, {prof['seconds_while_profiled']} s; raw samples in "
                  f"`{prof['raw']}`):")
        md.append("")
        for group in ("main", "workers", "flush"):
            if group in prof:
                g = prof[group]
                tops = ", ".join(f"{k} {v} %" for k, v in g["top"][:8])
                md.append(f"- {group} thread(s), share of samples: {tops}")
    md.append("")
    md.append("Reproduce: `.venv/bin/python bench/put.py` (`--size 256M --repeats 1` for a quick run, "
              "`--profile` for py-spy).")
    return "\n".join(md)


def _signed_pct(ratio: float) -> str:
    pct = round((ratio - 1) * 100)
    return f"+{pct} %" if pct >= 0 else f"{pct} %"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=parse_size, default=GIB, help="file size (e.g. 1G, 256M); default 1G")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                    help="where the input is kept between runs and the repos are made (same filesystem)")
    ap.add_argument("--no-npm", action="store_true", help="skip the npm importer")
    ap.add_argument("--profile", action="store_true", help="also py-spy one extra put")
    ap.add_argument("--no-results", action="store_true", help="print only; do not write results files")
    ap.add_argument("--json-out", type=Path, help="write the JSON here instead (implies no RESULTS.md update)")
    ap.add_argument("--compare-root", type=Path,
                    help="also time `shoal put` from this other checkout in the same run (e.g. the old code)")
    ap.add_argument("--before", type=Path,
                    help="JSON of an earlier run (e.g. --shoal-root of the old code): shown as 'before'")
    ap.add_argument("--shoal-root", type=Path, default=PROJECT_ROOT,
                    help="run `shoal put` from this checkout (to compare before/after); default: this one")
    ap.add_argument("--render", type=Path, metavar="JSON",
                    help="only re-render the '## put' section from a results JSON (re-reading its py-spy raw file)")
    ap.add_argument("--merkle-child", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--lib-put-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--commit-repo", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--commit-helper", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--floor-child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    global SHOAL_ROOT
    SHOAL_ROOT = args.shoal_root.resolve()
    if args.merkle_child:
        merkle_child(args.merkle_child)
        return 0
    if args.render:
        doc = json.loads(args.render.read_text())
        prof = doc.get("profile")
        if prof and "raw" in prof and (PROJECT_ROOT / prof["raw"]).exists():
            prof.update(summarize_raw(PROJECT_ROOT / prof["raw"]))
            write_json(args.render, doc)
        update_results_section("put", markdown(doc))
        return 0
    if args.floor_child:
        floor_child(args.floor_child[0], args.floor_child[1])
        return 0
    if args.lib_put_child:
        lib_put_child(args.lib_put_child[0], args.lib_put_child[1], args.commit_repo, args.commit_helper)
        return 0
    doc = run(args)
    if args.before:
        old = json.loads(args.before.read_text())
        doc["before"] = {"shoal_root": old.get("shoal_root"), "date_utc": old["machine"]["date_utc"],
                         "load_before": old["load_before"], "load_after": old["load_after"],
                         "contenders": old["contenders"], "ratios": old["ratios"]}
    body = markdown(doc)
    print(body)
    if args.json_out:
        write_json(args.json_out, doc)
    elif not args.no_results:
        write_json(RESULTS_JSON, doc)
        update_results_section("put", body)
        log(f"wrote {RESULTS_JSON.relative_to(PROJECT_ROOT)} and the '## put' section of bench/RESULTS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
