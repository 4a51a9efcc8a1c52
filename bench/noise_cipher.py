"""Noise with AES-GCM vs ChaCha20-Poly1305: one `shoal get` between two real nodes, paired.

Both ends of a block transfer pay the cipher on every byte (the holder
seals, the fetcher opens), so the cipher two Shoal nodes negotiate
(shoal.p2p.secure.cipher_choice) is a per-byte cost of every transfer.
This bench measures what AES-GCM saves against libp2p-noise's ChaCha20-Poly1305.

Setup: holder A (which offers both) holds a 1 GiB pseudorandom file. Each
round starts two fresh fetchers, one with SHOAL_NOISE_AESGCM=0 (it offers
only `/noise`, so the connection is ChaCha20-Poly1305) and one with =1 (AES-GCM), in
alternating order, and times `POST /v1/get` of the file on each. Reported per
cipher: wall seconds, MB/s, CPU seconds of the holder and of the fetcher
(utime + stime from /proc), the fetcher's peak RSS; per round the paired
ratio ChaCha time / AES time, and their median. Also the ciphers alone on
one core (CPU s per GiB of 65,519-byte frames, as Noise sends them).

    .venv/bin/python bench/noise_cipher.py                 # 1 GiB, 3 rounds
    .venv/bin/python bench/noise_cipher.py --size 256M --rounds 1 --no-write

Writes bench/results/noise_cipher.json and the RESULTS.md section
"Noise with AES-GCM" (unless --no-write).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402

from shoal.cli.swarm import LocalSwarm, node_env  # noqa: E402
from shoal.cli.swarm import NodeProcess  # noqa: E402

from common import (  # noqa: E402
    add_result_options,
    BENCH_DIR, GIB, PROJECT_ROOT, Cleanup, ProcSample, format_table, machine_info, machine_line,
    make_log, markdown_table, mb_per_s, parse_size, peak_rss, system_load, update_results_section,
    wait_quiet, write_json, write_pseudorandom,
)

RESULTS_JSON = BENCH_DIR / "results" / "noise_cipher.json"
SHOAL_PY = PROJECT_ROOT / ".venv" / "bin" / "python"
NODE_READY_S = 60.0
CIPHERS = {"chachapoly": "0", "aesgcm": "1"}  # label -> SHOAL_NOISE_AESGCM of the fetcher
log = make_log("noise_cipher")


def cipher_alone() -> dict[str, float]:
    """CPU seconds per GiB to seal 65,519-byte frames with each AEAD, on one core."""
    frame = os.urandom(65519)
    count = 4096  # 256 MiB
    out: dict[str, float] = {}
    for name, aead in (("chachapoly", ChaCha20Poly1305(os.urandom(32))), ("aesgcm", AESGCM(os.urandom(32)))):
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            for i in range(count):
                aead.encrypt(i.to_bytes(12, "big"), frame, None)
            best = min(best, time.process_time() - t)
        out[name] = round(best * GIB / (count * len(frame)), 3)
    return out


def fetcher(swarm: LocalSwarm, name: str, holder: NodeProcess, aes: str) -> NodeProcess:
    node = swarm.node(name, [holder.addr])
    node.env = {**node_env(), "SHOAL_NOISE_AESGCM": aes}
    node.start(timeout=NODE_READY_S)
    swarm.wait_connected(node, [holder.peer_id], 30)
    return node


def one_get(swarm: LocalSwarm, work: Path, name: str, holder: NodeProcess, aes: str, cid: str,
            size: int) -> dict[str, Any]:
    node = fetcher(swarm, name, holder, aes)
    out = work / f"out-{name}"
    before = ProcSample.take([holder.pid, node.pid])
    t = time.perf_counter()
    node.call("POST", "/v1/get", {"cid": cid, "output": str(out)})
    seconds = time.perf_counter() - t
    cpu = before.delta(ProcSample.take([holder.pid, node.pid]))
    if out.stat().st_size != size:
        raise RuntimeError(f"{name}: got {out.stat().st_size} bytes, wanted {size}")
    rss = peak_rss(node.pid)
    node.stop(15)
    out.unlink()
    return {"seconds": round(seconds, 3), "MBps": round(mb_per_s(size, seconds), 1),
            "cpu_seconds": {"holder": round(cpu[holder.pid], 2), "fetcher": round(cpu[node.pid], 2)},
            "fetcher_peak_rss_MiB": round(rss / 2**20, 1)}


def report(doc: dict[str, Any]) -> str:
    rows = []
    for label in CIPHERS:
        runs = [r[label] for r in doc["rounds"]]
        rows.append([label, round(statistics.median(r["seconds"] for r in runs), 3),
                     round(statistics.median(r["MBps"] for r in runs), 1),
                     round(statistics.median(r["cpu_seconds"]["holder"] for r in runs), 2),
                     round(statistics.median(r["cpu_seconds"]["fetcher"] for r in runs), 2),
                     max(r["fetcher_peak_rss_MiB"] for r in runs)])
    headers = ["cipher", "median s", "median MB/s", "holder CPU s", "fetcher CPU s", "fetcher peak RSS MiB"]
    return "\n".join([
        f"{machine_line(doc['machine'])}; {doc['bytes'] / GIB:.2f} GiB, {len(doc['rounds'])} rounds, "
        f"load before {doc['load_before']}",
        "",
        markdown_table(headers, rows),
        "",
        f"Paired ratio ChaCha20-Poly1305 time / AES-GCM time per round: {doc['paired_ratios']} "
        f"(median **{doc['median_ratio']}x**); CPU of holder + fetcher per GiB, median: "
        f"ChaCha {doc['median_cpu_per_GiB']['chachapoly']}, AES-GCM {doc['median_cpu_per_GiB']['aesgcm']}.",
        f"The ciphers alone, one core, CPU s per GiB of 65,519-byte frames: {doc['cipher_alone']}.",
    ])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="1G", help="file size (default 1G)")
    ap.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    add_result_options(ap, RESULTS_JSON)
    args = ap.parse_args(argv)
    if args.report_only:
        text = report(json.loads(RESULTS_JSON.read_text()))
        print(text)
        update_results_section("Noise with AES-GCM", "Written by bench/noise_cipher.py.\n\n" + text)
        return 0
    size = parse_size(args.size)
    wait_quiet(args.wait_quiet, log)
    doc: dict[str, Any] = {"benchmark": "noise_cipher", "bytes": size, "machine": machine_info(),
                           "load_before": system_load(), "cipher_alone": cipher_alone(), "rounds": []}
    with Cleanup() as cl:
        work = cl.tempdir("shoal-bench-cipher-")
        data = work / "data.bin"
        write_pseudorandom(data, size, seed=7)
        with LocalSwarm(work / "nodes") as swarm:
            holder = swarm.node("A")
            holder.env = {**node_env(), "SHOAL_NOISE_AESGCM": "1"}
            holder.start(timeout=NODE_READY_S)
            put = subprocess.run([str(SHOAL_PY), "-m", "shoal.cli.main", "--repo", str(holder.repo), "put",
                                  str(data), "--json"], capture_output=True, text=True, check=True)
            cid = json.loads(put.stdout)["cid"]
            data.unlink()
            log("warm-up get (not timed): the holder's blocks into the page cache")
            one_get(swarm, work, "W", holder, "1", cid, size)
            for i in range(args.rounds):
                order = list(CIPHERS) if i % 2 == 0 else list(reversed(CIPHERS))
                result: dict[str, Any] = {}
                for label in order:
                    result[label] = one_get(swarm, work, f"F{i}{label}", holder, CIPHERS[label], cid, size)
                    log(f"round {i + 1} {label}: {result[label]}")
                doc["rounds"].append(result)
    doc["load_after"] = system_load()
    doc["paired_ratios"] = [round(r["chachapoly"]["seconds"] / r["aesgcm"]["seconds"], 2) for r in doc["rounds"]]
    doc["median_ratio"] = round(statistics.median(doc["paired_ratios"]), 2)
    doc["median_cpu_per_GiB"] = {
        label: round(statistics.median(sum(r[label]["cpu_seconds"].values()) for r in doc["rounds"]) * GIB / size, 2)
        for label in CIPHERS}
    text = report(doc)
    print(text)
    if not args.no_write:
        write_json(RESULTS_JSON, doc)
        update_results_section("Noise with AES-GCM", "Written by bench/noise_cipher.py.\n\n" + text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
