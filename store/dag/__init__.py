"""UnixFS DAGs built from files (importer) and read back as bytes, ranges and tensors (exporter), or written out as files (disk_export)."""
