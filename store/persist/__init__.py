"""Local persistence: blockstores (flatfs, group sync, staging), direct I/O, durable writes, the SQLite index, the repo (lock, guard, maintenance) and its config."""
