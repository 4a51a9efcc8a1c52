"""Content addressing and local persistence for Shoal.

Role: chunk bytes, build IPFS-compatible UnixFS DAGs, store and verify blocks,
keep the repo index (objects, pins, reference counts), read objects back, and
move DAGs in and out as CARv1.

Deliberately not here: any network code, any trio code, any threads other than
those used to hash or write large data. `p2p/` builds on this package; this
package never imports `p2p/`.
"""
