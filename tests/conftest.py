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


def run_cli(*args, mpi_ranks=None, extra_path=None, timeout=300, cwd=None):
    """``python run_paradigm.py ARGS`` (under ``mpiexec -n K`` if asked); returns CompletedProcess."""
    cmd = [sys.executable, str(ROOT / "run_paradigm.py"), *map(str, args)]
    if mpi_ranks:
        mpiexec = shutil.which("mpiexec")
        if mpiexec is None:
            pytest.fail("mpiexec not found: install it with `pip install mpi4py mpich`")
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
