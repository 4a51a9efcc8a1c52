"""What a `shoal` process loads before it runs a command.

Every command builds the whole argument parser, so whatever a command
module imports at its top is paid by every `shoal put` (bench/put.py counts
the fixed cost of an empty put). These modules are each needed by only a
few commands and load in their handlers; this test keeps it that way.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

LOADED_BY_THEIR_COMMANDS_ONLY = [
    "shoal.store.dag.exporter",  # get, cat, ls
    "shoal.store.energy.report",  # energy
    "shoal.cli.energy_report",
    "shoal.store.energy.model",
    "p2p",  # node and the commands that reach one
    "httpx",
    "trio",
    "cryptography",
    "rich",
]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_building_the_parser_loads_no_command_only_module() -> None:
    loaded = _modules_after("from shoal.cli.main import build_parser\nbuild_parser()")
    assert "shoal.cli.commands_store" in loaded  # the probe did build the parser
    assert sorted(m for m in LOADED_BY_THEIR_COMMANDS_ONLY if m in loaded) == []


def test_an_offline_put_loads_no_exporter_or_report(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 1000)
    code = (
        "import contextlib, io\n"
        "from shoal.cli.main import main\n"
        f"main(['--repo', {str(tmp_path / 'repo')!r}, 'init'])\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['--repo', {str(tmp_path / 'repo')!r}, 'put', '--quiet', {str(tmp_path / 'f')!r}])\n"
    )
    loaded = _modules_after(code)
    assert "shoal.store.dag.importer" in loaded  # the put did run
    assert "shoal.store.dag.exporter" not in loaded and "shoal.store.energy.report" not in loaded
