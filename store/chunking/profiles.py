"""Import profiles: the knobs that decide which CID a given byte string gets.

Two are built in. `unixfs-v1-2025` is Shoal's default and IPFS's 2025
profile (IPIP-499): CIDv1, raw leaves, 1 MiB chunks, 1,024 links per node,
directories sharded (HAMT) above 256 KiB. `kubo-legacy` is what `ipfs add`
did for years: CIDv0, dag-pb leaves, 256 KiB chunks, 174 links per node.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    name: str
    cid_version: int
    chunk_size: int
    max_links: int
    raw_leaves: bool
    hamt_threshold_bytes: int  # shard a directory whose node would exceed this
    hamt_fanout: int = 256

    def with_overrides(self, **changes: int | bool) -> "Profile":
        """A copy with some knobs changed (tests use tiny chunks and fan-outs)."""
        from dataclasses import replace

        return replace(self, **changes)  # type: ignore[arg-type]


UNIXFS_V1_2025 = Profile(
    name="unixfs-v1-2025",
    cid_version=1,
    chunk_size=1024 * 1024,
    max_links=1024,
    raw_leaves=True,
    hamt_threshold_bytes=256 * 1024,
)

KUBO_LEGACY = Profile(
    name="kubo-legacy",
    cid_version=0,
    chunk_size=256 * 1024,
    max_links=174,
    raw_leaves=False,
    hamt_threshold_bytes=256 * 1024,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (UNIXFS_V1_2025, KUBO_LEGACY)}
DEFAULT_PROFILE = UNIXFS_V1_2025
