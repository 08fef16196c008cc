"""Shared test helpers: running the command line as a user types it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def cli_env(extra_path=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def find_mpiexec():
    """The ``mpiexec`` next to the running Python (``pip install mpich`` puts it in the venv's bin, so
    ``venv/bin/python -m pytest`` works without an activated venv), else the first on PATH, else None."""
    beside = Path(sys.executable).parent / ("mpiexec.exe" if os.name == "nt" else "mpiexec")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("mpiexec")


def run_cli(*args, mpi_ranks=None, extra_path=None, timeout=300, cwd=None):
    """``python run_paradigm.py ARGS`` (under ``mpiexec -n K`` if asked); returns CompletedProcess."""
    cmd = [sys.executable, str(ROOT / "run_paradigm.py"), *map(str, args)]
    if mpi_ranks:
        mpiexec = find_mpiexec()
        if mpiexec is None:
            pytest.fail("mpiexec not found next to the running Python or on PATH: install it with "
                        "`pip install mpi4py mpich`")
        cmd = [mpiexec, "-n", str(mpi_ranks), *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=cli_env(extra_path),
                          cwd=cwd or ROOT)


@pytest.fixture(scope="session")
def plugin_path(tmp_path_factory):
    """The test plugin package (tests/plugin_pkg) installed with pip into a private folder."""
    target = tmp_path_factory.mktemp("plugin_site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT / "tests" / "plugin_pkg")], check=True,
                   capture_output=True, text=True)
    return target


def fake_plugin_dist(folder, dist_name: str, entry_points: str) -> None:
    """Make ``folder`` look like an installed distribution whose entry points are ``entry_points``
    (e.g. ``"broken = no_such_module:Thing"`` in the ``pcneuro.paradigms`` group)."""
    dist = Path(folder) / f"{dist_name.replace('-', '_')}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[pcneuro.paradigms]\n{entry_points}\n")
