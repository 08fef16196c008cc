"""Shared test helpers: running the command line as a user types it."""
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
torch.set_num_threads(1)


def write_generated_cifar10(folder, per_class_train: int = 20, per_class_test: int = 10, seed: int = 0) -> Path:
    """A tiny CIFAR-10 in the real batch-file layout under ``folder`` (the data root), with a
    learnable signal: each class brightens its own band of one colour plane."""
    import numpy as np

    from pcneuro.datasets.images import write_cifar10

    rng = np.random.default_rng(seed)

    def make(per_class):
        labels = np.tile(np.arange(10), per_class)
        images = rng.integers(0, 200, (len(labels), 3, 32, 32), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, c % 3, (c // 3) * 8:(c // 3) * 8 + 8, :] = 250
        return images, labels

    write_cifar10(folder, train=make(per_class_train), test=make(per_class_test))
    return Path(folder)


def write_generated_fashion_mnist(folder, per_class_train: int = 30, per_class_test: int = 10, seed: int = 0) -> Path:
    """A tiny Fashion-MNIST (gzipped IDX) under ``folder`` (the data root), with a learnable signal:
    each class brightens its own band of rows."""
    import numpy as np

    from pcneuro.datasets.images import write_fashion_mnist

    rng = np.random.default_rng(seed)

    def make(per_class):
        labels = np.tile(np.arange(10), per_class).astype(np.uint8)
        images = rng.integers(0, 120, (len(labels), 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 4:2 * c + 7, :] = 255
        return images, labels

    write_fashion_mnist(folder, train=make(per_class_train), test=make(per_class_test), gzip=True)
    return Path(folder)


# Every test (and every command it starts) reads datasets from a generated data root, never downloads.
# Tests of the real Fashion-MNIST point at the Debian package's folder themselves (tests/test_images.py).
_DATA_ROOT = Path(tempfile.mkdtemp(prefix="pcneuro-test-data-"))
write_generated_cifar10(_DATA_ROOT)
write_generated_fashion_mnist(_DATA_ROOT)
atexit.register(shutil.rmtree, _DATA_ROOT, True)
os.environ["PCNEURO_DATA"] = str(_DATA_ROOT)
os.environ["PCNEURO_NO_DOWNLOAD"] = "1"
os.environ["PCNEURO_CACHE"] = str(_DATA_ROOT / "cache")  # e.g. concept_drift's pre-trained weights


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
