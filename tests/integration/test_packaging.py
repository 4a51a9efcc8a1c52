"""The built wheel installs one import name, `shoal`, and works without the checkout.

pip does not check file clashes between distributions, so top-level packages
named `store`, `p2p` or `cli` would clobber (or be clobbered by) any other
distribution that uses those generic names. The wheel must hold `shoal/` and
its dist-info only; installed into a fresh venv (not editable, run from a
folder outside the checkout) `shoal put` and `shoal get` must work, and a put
big enough for the piece-hashing helper processes must get its
proof-of-storage commitment from them (the helpers start with `-I -S`, so
they find the package on their own; a trial rename once made them fail
silently and the put returned without a commitment).
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# One worker builds the wheel and the venv once for the whole module (module fixtures).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600), pytest.mark.xdist_group("packaging")]


def _run(cmd: list[str], cwd: Path, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    build = tmp_path_factory.mktemp("build")
    # Build from a copy of the tracked sources so the checkout gets no build/ or egg-info.
    files = subprocess.run(["git", "ls-files", "pyproject.toml", "README.md", "store", "p2p", "cli"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        dst = build / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes((ROOT / name).read_bytes())
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), "."],
         cwd=build)
    (found,) = out.glob("shoal-*.whl")
    return found


def test_wheel_has_one_top_level_name(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        tops = {name.split("/", 1)[0] for name in zf.namelist()}
        names = set(zf.namelist())
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert len(dist_info) == 1
    assert tops - dist_info == {"shoal"}
    # every package folder of the checkout is in the wheel (pyproject lists them by hand)
    for init in sorted(ROOT.glob("*/**/__init__.py")):
        rel = init.relative_to(ROOT)
        if rel.parts[0] in ("store", "p2p", "cli") and "__pycache__" not in rel.parts:
            assert "shoal/" + rel.as_posix() in names, f"{rel} is missing from the wheel"
    assert "shoal/store/energy/coefficients.toml" in names


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed (not editable).

    Its dependencies come from this interpreter's site-packages through a
    plain path entry: a .pth line adds the folder but does not run the .pth
    files in it, so the checkout's editable-install finder stays out.
    """
    env_dir = tmp_path_factory.mktemp("venv") / "v"
    _run([sys.executable, "-m", "venv", str(env_dir)], cwd=env_dir.parent)
    py = env_dir / "bin" / "python"
    target = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                  cwd=env_dir.parent).stdout.strip()
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(target) / "deps-from-test.pth").write_text("\n".join(deps) + "\n")
    _run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], cwd=env_dir.parent)
    return env_dir


def test_installed_wheel_puts_and_gets(venv: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHOAL_REPO")}
    shoal = str(venv / "bin" / "shoal")
    where = _run([str(venv / "bin" / "python"), "-c", "import shoal.store, shoal.p2p, shoal.cli; "
                  "print(shoal.store.__file__)"], cwd=tmp_path, env=env).stdout.strip()
    assert where.startswith(str(venv)), where  # the installed copy, not the checkout
    repo = tmp_path / "repo"
    _run([shoal, "--repo", str(repo), "init"], cwd=tmp_path, env=env)
    data = os.urandom(3 * (1 << 20) + 17)
    (tmp_path / "model.bin").write_bytes(data)
    cid = _run([shoal, "--repo", str(repo), "put", "--quiet", "model.bin"], cwd=tmp_path, env=env).stdout.strip()
    assert cid.startswith("bafy")
    _run([shoal, "--repo", str(repo), "get", cid, "-o", "copy.bin"], cwd=tmp_path, env=env)
    assert (tmp_path / "copy.bin").read_bytes() == data


def test_installed_wheel_commitment_comes_from_the_helpers(venv: Path, tmp_path: Path) -> None:
    script = textwrap.dedent("""
        import logging, os, sys
        from pathlib import Path
        import shoal.store.persist.repo as repo_mod
        from shoal.store.proofs import commit_files
        from shoal.store.proofs import piece_hashers
        started = []
        real = piece_hashers.PieceHashers._start
        def spy(self):
            real(self)
            started.append(len(self._helpers))
        piece_hashers.PieceHashers._start = spy
        warnings = []
        class Catch(logging.Handler):
            def emit(self, record):
                warnings.append(record.getMessage())
        logging.getLogger("shoal").addHandler(Catch())
        root = Path(sys.argv[1])
        repo = repo_mod.Repo.init(root / "repo")
        src = root / "big.bin"
        src.write_bytes(os.urandom(commit_files.COMMIT_PROCESS_ABOVE + 3 * (1 << 20)))
        result = repo.add(src, commit=True)
        assert started and started[0] > 0, started
        assert not warnings, warnings
        assert result.commitment is not None, "no commitment from the helpers"
        assert commit_files.commitment_file(repo.path, result.cid).exists()
        print("ok", started[0])
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SHOAL_REPO")}
    out = _run([str(venv / "bin" / "python"), "-c", script, str(tmp_path)], cwd=tmp_path, env=env).stdout
    assert out.startswith("ok ")
