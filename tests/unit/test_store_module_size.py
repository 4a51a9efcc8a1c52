"""store/ modules stay small enough to read as one job each (issue 13, item 3).

A module past the bound has grown a second job: split it along its jobs
(as proofs/commitment.py -> commitment, challenge, proof; persist/flatfs.py
-> flatfs, group_sync, stager; persist/repo.py -> repo, repo_lock,
maintenance; dag/importer.py -> importer, dag_writer, file_stream,
tree_import; dag/exporter.py -> exporter, disk_export) rather than raise it.
"""

from __future__ import annotations

from pathlib import Path

STORE = Path(__file__).resolve().parents[2] / "store"
MAX_LINES = 600  # "~500 lines", with room for a docstring or two


def test_no_store_module_is_over_the_bound() -> None:
    sizes = {str(p.relative_to(STORE)): len(p.read_text().splitlines()) for p in STORE.rglob("*.py")}
    assert sizes, STORE
    over = {name: n for name, n in sizes.items() if n > MAX_LINES}
    assert over == {}, f"split these along their jobs: {over}"
