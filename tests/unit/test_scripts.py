"""scripts/demo.sh installs only what the demo needs; scripts/test.sh
everything the tests need (issue 12, item 28).

The scripts run for real, in a copy of scripts/ whose `.venv/bin/python`,
`.venv/bin/shoal` and `npm` are stand-ins that record how they were called:
what is checked is what each script asks for, not pip's or npm's work.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

RECORDER = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
"""


def _project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    shutil.copytree(ROOT / "scripts", project / "scripts")
    (project / "tests" / "interop").mkdir(parents=True)
    bins = [project / ".venv" / "bin" / "python", project / ".venv" / "bin" / "shoal", tmp_path / "bin" / "npm"]
    for path in bins:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(RECORDER)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, CALLS=str(tmp_path / "calls"), PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    return project, env


def _run(tmp_path: Path, script: str, *args: str) -> list[str]:
    project, env = _project(tmp_path)
    subprocess.run(["bash", str(project / "scripts" / script), *args], env=env, check=True,
                   timeout=60, capture_output=True)
    return (tmp_path / "calls").read_text().splitlines()


def test_demo_installs_only_the_runtime_and_runs_the_demo(tmp_path: Path) -> None:
    calls = _run(tmp_path, "demo.sh", "--size", "8M")
    installs = [c for c in calls if " pip install " in c and "--upgrade pip" not in c]
    assert installs == ["python -m pip install -q -e ."], calls
    assert not [c for c in calls if c.startswith("npm ")], calls
    assert calls[-1] == "shoal demo --size 8M", calls


def test_tests_install_the_test_extras_and_the_npm_packages(tmp_path: Path) -> None:
    calls = _run(tmp_path, "test.sh", "-k", "x")
    installs = [c for c in calls if " pip install " in c and "--upgrade pip" not in c]
    # The package with its test extras, and the old Hub client the HF
    # mirror tests run beside the pinned one (docs/GATEWAY.md).
    assert installs == ["python -m pip install -q -e .[test,plot]",
                        "python -m pip install -q --target .venv/hf-old huggingface_hub==0.20.3"], calls
    assert "npm ci --no-audit --no-fund --loglevel=error" in calls, calls
    # Two xdist workers, the multi-node modules kept to one of them; the caller's arguments last.
    assert calls[-1] == "python -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup -k x", calls


def test_setup_refuses_an_unknown_option(tmp_path: Path) -> None:
    project, env = _project(tmp_path)
    r = subprocess.run(["bash", str(project / "scripts" / "setup.sh"), "--bogus"], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown option" in r.stderr, r.stderr
