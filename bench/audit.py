"""Cost of one proof-of-storage audit on a large object (default 1 GiB).

Measures, in process CPU seconds (robust on a shared machine):
- commitment build (streaming `MerkleBuilder`, 1 MiB buffers) against a plain
  SHA-256 of the same bytes, both in the same pass;
- the prover's one-off setup (tree from the stored leaf hashes; `SparseTree`
  by default, which keeps ~1 MiB per GiB in memory; --tree full for all levels);
- per audit: prover time (read the challenged segments, pick nodes, encode),
  proof bytes on the wire, verifier time (bounded decode + verify), per
  audit and per challenge.

The object is a deterministic ChaCha20 keystream (key = sha256(seed)) that
can be read at any offset, so only the leaf hashes are held in memory, never
the object; --file measures a real file instead (read through mmap).
Prints a table, or JSON with --json. Writes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms  # noqa: E402

from shoal.store.proofs.challenge import default_k
from shoal.store.proofs.commitment import (
    DEFAULT_SEGMENT_SIZE, LeafHashes, MerkleBuilder, MerkleTree, SparseTree,
)
from shoal.store.proofs.proof import Proof, make_proof, verify_proof

MIB = 1 << 20
HOLDER = bytes.fromhex("0024080112") + bytes(range(33))  # PeerId-shaped, 38 bytes


class Keystream:
    """Random-access deterministic bytes: ChaCha20 block counter = offset / 64."""

    def __init__(self, length: int, seed: bytes = b"shoal-audit-bench") -> None:
        self.length = length
        self.key = hashlib.sha256(seed).digest()

    def read(self, offset: int, n: int) -> bytes:
        n = max(0, min(n, self.length - offset))
        block, skip = divmod(offset, 64)
        nonce = block.to_bytes(4, "little") + bytes(12)
        enc = Cipher(algorithms.ChaCha20(self.key, nonce), None).encryptor()
        return enc.update(bytes(skip + n))[skip:]

    def chunks(self) -> Iterator[bytes]:
        enc = Cipher(algorithms.ChaCha20(self.key, bytes(16)), None).encryptor()
        for off in range(0, self.length, MIB):
            yield enc.update(bytes(min(MIB, self.length - off)))


class FileSource:
    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self.length = path.stat().st_size
        self._m = mmap.mmap(self._f.fileno(), 0, access=mmap.ACCESS_READ) if self.length else b""

    def read(self, offset: int, n: int) -> bytes:
        return bytes(self._m[offset : offset + n])

    def chunks(self) -> Iterator[bytes]:
        for off in range(0, self.length, MIB):
            yield self.read(off, MIB)


def run(
    source: Keystream | FileSource, segment_size: int, k: int, audits: int, tree_kind: str = "sparse"
) -> dict[str, Any]:
    leaf_buf = bytearray()
    builder = MerkleBuilder(segment_size, leaf_sink=leaf_buf.extend)
    plain = hashlib.sha256()
    t_plain = t_build = 0.0
    clock = time.process_time
    for chunk in source.chunks():
        t0 = clock()
        plain.update(chunk)
        t1 = clock()
        builder.update(chunk)
        t2 = clock()
        t_plain += t1 - t0
        t_build += t2 - t1
    t0 = clock()
    commitment = builder.finish()
    t_build += clock() - t0
    plain.digest()

    t0 = clock()
    leaves = LeafHashes(bytes(leaf_buf), commitment)
    tree: MerkleTree | SparseTree
    if tree_kind == "full":
        tree = MerkleTree.from_leaf_hashes(leaves)
    else:
        tree = SparseTree(leaves.read, commitment)
    t_tree = clock() - t0

    def read_segment(i: int) -> bytes:
        return source.read(i * segment_size, segment_size)

    read: Callable[[int], bytes] = read_segment
    t_prove = t_verify = 0.0
    proof_bytes = 0
    for a in range(audits):
        nonce = hashlib.sha256(b"audit nonce %d" % a).digest()
        t0 = clock()
        wire = make_proof(read, tree, nonce, HOLDER, k).encode()
        t1 = clock()
        ok = verify_proof(commitment, nonce, HOLDER, k, Proof.decode(wire, commitment, max_k=k))
        t2 = clock()
        if not ok:
            raise SystemExit("an honest proof failed to verify")
        t_prove += t1 - t0
        t_verify += t2 - t1
        proof_bytes += len(wire)

    gib = commitment.length / (1 << 30) or 1.0
    return dict(
        object_bytes=commitment.length,
        segment_size=segment_size,
        segments=commitment.n_segments,
        k=k,
        audits=audits,
        commitment_bytes=len(commitment.encode()),
        leaf_hash_file_bytes=len(leaf_buf),
        plain_sha256_s=round(t_plain, 3),
        build_s=round(t_build, 3),
        build_vs_plain=round(t_build / t_plain, 3) if t_plain else 0.0,
        build_s_per_gib=round(t_build / gib, 3),
        prover_tree=tree_kind,
        prover_tree_setup_s=round(t_tree, 3),
        proof_bytes_per_audit=round(proof_bytes / audits),
        prover_ms_per_audit=round(1000 * t_prove / audits, 3),
        verifier_ms_per_audit=round(1000 * t_verify / audits, 3),
        verifier_us_per_challenge=round(1e6 * t_verify / audits / k, 2),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="size of the generated object")
    ap.add_argument("--file", type=Path, help="measure this file instead of generated bytes")
    ap.add_argument("--segment-size", type=int, default=DEFAULT_SEGMENT_SIZE)
    ap.add_argument("--k", type=int, default=default_k())
    ap.add_argument("--audits", type=int, default=50)
    ap.add_argument("--tree", choices=["sparse", "full"], default="sparse",
                    help="prover tree: levels >= 3 in memory (sparse) or every level (full)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write", action="store_true",
                    help="also write bench/results/audit.json and the '## audit' section of bench/RESULTS.md")
    args = ap.parse_args(argv)

    source: Keystream | FileSource
    source = FileSource(args.file) if args.file else Keystream(int(args.gib * (1 << 30)))
    r = run(source, args.segment_size, args.k, args.audits, args.tree)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    rows = [
        ("object", f"{r['object_bytes']:,} B, {r['segments']:,} segments of {r['segment_size']} B"),
        ("verifier state (commitment)", f"{r['commitment_bytes']} B"),
        ("leaf-hash file (holder)", f"{r['leaf_hash_file_bytes']:,} B"),
        ("plain sha256 (CPU)", f"{r['plain_sha256_s']:.3f} s"),
        ("commitment build (CPU)", f"{r['build_s']:.3f} s = {r['build_vs_plain']:.2f}x plain"),
        (f"prover setup: {r['prover_tree']} tree", f"{r['prover_tree_setup_s']:.3f} s (once per object)"),
        (f"proof size at k={r['k']}", f"{r['proof_bytes_per_audit']:,} B ({r['proof_bytes_per_audit'] / 1024:.1f} KiB)"),
        ("prover per audit", f"{r['prover_ms_per_audit']:.2f} ms"),
        ("verifier per audit", f"{r['verifier_ms_per_audit']:.2f} ms"),
        ("verifier per challenge", f"{r['verifier_us_per_challenge']:.1f} us"),
    ]
    width = max(len(a) for a, _ in rows)
    print(f"audit benchmark, {r['audits']} audits, CPU time")
    for a, b in rows:
        print(f"  {a:<{width}}  {b}")
    if args.write:
        write_results(r, rows)
    return 0


def write_results(r: dict[str, Any], rows: list[tuple[str, str]]) -> None:
    """Record the run in bench/results/audit.json and bench/RESULTS.md."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.common import machine_info, machine_line, markdown_table, update_results_section, write_json

    info = machine_info()
    write_json(Path(__file__).resolve().parent / "results" / "audit.json", {"machine": info, "result": r})
    per_challenge_ms = r["verifier_us_per_challenge"] / 1000
    proof_kib = r["proof_bytes_per_audit"] / 1024
    targets = [
        ("verify under 1 ms per challenge", f"{per_challenge_ms * 1000:.1f} us", "met" if per_challenge_ms < 1 else "NOT met"),
        (f"proof under 256 KiB per audit at k={r['k']}", f"{proof_kib:.1f} KiB", "met" if proof_kib < 256 else "NOT met"),
    ]
    body = (
        f"Written by `bench/audit.py --write` ({r['audits']} audits of a {r['object_bytes'] / (1 << 30):.2f} GiB object, "
        f"process CPU time). {machine_line(info)}\n\n"
        + markdown_table(["quantity", "value"], rows) + "\n\n"
        + markdown_table(["target", "measured", "result"], targets) + "\n\n"
        f"The commitment build here is a pass of its own (MerkleBuilder): the SHA-256 states of each 1 MiB "
        f"piece in 2 KiB steps plus a 4-ary tree over them, {r['build_vs_plain']:.2f}x a plain SHA-256 of the "
        "object. A put does not pay that pass: its helpers hash each block once, for its CID and its leaves "
        "(bench/put.py, '## put'). A proof carries each challenged segment, the leaf before it when that is "
        "not challenged too (the state the verifier resumes SHA-256 from), and the 4-ary multi-proof's "
        "siblings; 2 KiB segments keep it under the 256 KiB budget at k=66 (4 KiB segments alone would be "
        "264 KiB).\n"
    )
    update_results_section("audit", body)


if __name__ == "__main__":
    raise SystemExit(main())
