"""IPLD formats: varints, CIDs, dag-pb, UnixFS, HAMT directories and CAR files."""
