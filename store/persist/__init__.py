"""Local persistence: the blockstore interface, flatfs on disk, direct I/O, the SQLite index, the repo and its config."""
