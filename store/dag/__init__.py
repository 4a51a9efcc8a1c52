"""UnixFS DAGs built from files (importer) and read back as bytes, ranges and tensors (exporter)."""
