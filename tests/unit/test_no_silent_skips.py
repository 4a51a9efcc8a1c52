"""No test may skip itself because one of Shoal's own modules fails to import.

`pytest.importorskip("shoal.store.dag.importer")` in tests/unit/test_repo.py turned an
ImportError of our own code into 30 silent skips (issue 12 item 17): the
suite stayed green while the code it should test could not even load.
importorskip is for optional third-party packages (matplotlib) only.
"""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
OWN_PACKAGES = ("shoal", "store", "p2p", "cli", "bench", "tests")


def _own_importorskips(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "importorskip" and node.args):
            continue
        arg = node.args[0]
        name = arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else "<computed>"
        if name == "<computed>" or name.split(".")[0] in OWN_PACKAGES:
            found.append(f"{path}:{node.lineno}: importorskip({name!r})")
    return found


def test_no_importorskip_of_project_modules() -> None:
    offenders = [hit for path in sorted(TESTS.rglob("*.py")) for hit in _own_importorskips(path)]
    assert offenders == [], "import project modules directly:\n" + "\n".join(offenders)


def test_the_check_sees_an_importorskip(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text('import pytest\nimporter = pytest.importorskip("shoal.store.dag.importer")\n'
                      'plt = pytest.importorskip("matplotlib")\n')
    assert [h.split(": ", 1)[1] for h in _own_importorskips(sample)] == ["importorskip('shoal.store.dag.importer')"]
