"""Bounded memory and resumable runs: the chunk size is a function of the configuration and the
device type's total memory (``--chunk N`` overrides); finished chunks are checkpointed next to the
output; Ctrl-C prints one line and exits 130; ``--resume`` finishes the file with the same data."""
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import xarray as xr

from conftest import ROOT, cli_env, find_mpiexec, run_cli
from pcneuro import checkpoint
from pcneuro.distributed import Communicator
from pcneuro.registry import paradigm_class
from pcneuro.runner import (CPU_BUDGET_BYTES, MAX_RUNS_PER_PROGRAM, default_chunk_size, make_plan,
                            memory_budget, resolve_chunk_size, run)

GRID = ["fear_conditioning", "--preset", "quick", "--grid", "n_hidden=2,4,6", "--quiet", "--no-figure"]


class _Ranks(Communicator):
    """A one-process communicator that claims ``size`` ranks (the chunk size must not notice)."""

    def __init__(self, size):
        super().__init__(None)
        self.size = size


def test_chunk_size_depends_on_configuration_and_device_type_only(monkeypatch):
    cls = paradigm_class("fear_conditioning")
    plan = make_plan(cls, preset="quick")
    cpu = torch.device("cpu")
    assert memory_budget(cpu) == CPU_BUDGET_BYTES
    per_run = cls().bytes_per_run(plan.runs[0].settings)  # the paradigm's own estimate
    expected = min(MAX_RUNS_PER_PROGRAM, CPU_BUDGET_BYTES // per_run)
    assert default_chunk_size(cls, plan.runs, memory_budget(cpu)) == expected
    sizes = {resolve_chunk_size(cls, plan.runs, "cpu", _Ranks(k)) for k in (1, 2, 7)}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (1, 1), raising=False)  # free memory: ignored
    sizes.add(resolve_chunk_size(cls, plan.runs, "cpu", _Ranks(3)))
    assert sizes == {expected}
    monkeypatch.setattr(cls, "bytes_per_run", lambda self, s: 1 << 30)  # a paradigm's estimate is honoured
    assert default_chunk_size(cls, plan.runs, 4 << 30) == 4
    assert default_chunk_size(cls, plan.runs, 1) == 1  # never below one run
    assert resolve_chunk_size(cls, plan.runs, "cpu", _Ranks(2), chunk=5) == 5  # --chunk overrides
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="--chunk"):
            resolve_chunk_size(cls, plan.runs, "cpu", _Ranks(1), chunk=bad)


def test_chunk_override_cuts_programs_and_is_recorded(tmp_path):
    ds = run("fear_conditioning", preset="quick", rule="bp", chunk=5, out=tmp_path / "r.nc", figure=False)
    plan = json.loads(ds.attrs["chunk_plan"])
    assert ds.attrs["chunk_size"] == 5
    assert [c["runs"] for c in plan] == [5, 5, 5, 1]  # 16 BP runs in chunks of at most 5
    assert not checkpoint.checkpoint_dir(tmp_path / "r.nc").exists()  # removed after a successful write
    whole = run("fear_conditioning", preset="quick", rule="bp", write=False)
    np.testing.assert_array_equal(ds.fear_to_N.values, whole.fear_to_N.values)


def _interrupt(out, *extra):
    """Start the CLI on a 12-chunk grid and send SIGINT once the first chunk is checkpointed."""
    cmd = [sys.executable, str(ROOT / "run_paradigm.py"), *GRID, "--chunk", "8", "--out", str(out), *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
    first = checkpoint.checkpoint_dir(out) / "chunk-000000.npz"
    deadline = time.time() + 120
    while not first.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return proc.returncode, stdout, stderr


def _assert_same_data(a_path, b_path):
    with xr.open_dataset(a_path) as a, xr.open_dataset(b_path) as b:
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        for coord in a.coords:
            np.testing.assert_array_equal(a[coord].values, b[coord].values)
        assert a.attrs["config"] == b.attrs["config"] and a.attrs["chunk_plan"] == b.attrs["chunk_plan"]
        return json.loads(b.attrs["chunks_resumed"]), json.loads(b.attrs["chunks_simulated"])


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "whole.nc"
    res = run_cli(*GRID, "--chunk", "8", "--out", out)
    assert res.returncode == 0, res.stderr
    return out


def test_interrupted_grid_resumes_to_the_uninterrupted_data(tmp_path, uninterrupted):
    out = tmp_path / "grid.nc"
    folder = checkpoint.checkpoint_dir(out)
    code, stdout, stderr = _interrupt(out)
    assert code == 130, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("interrupted: ") and "of 12 chunks done" in lines[0] and "--resume" in lines[0]
    assert not out.exists()
    saved = sorted(p.name for p in folder.glob("chunk-*.npz"))
    assert saved and len(saved) < 12  # some but not all chunks were saved
    assert (folder / "plan.json").is_file()

    again = run_cli(*GRID, "--chunk", "8", "--out", out)  # forgetting --resume is refused, nothing lost
    assert again.returncode == 2 and "--resume" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    quick = dict(preset="quick", out=out, quiet=True, figure=False, resume=True)
    with pytest.raises(ValueError, match=r"differs .* in config\.grid\.n_hidden \(checkpoint \[2, 4, 6\], now \[2, 4\]\)"):
        run("fear_conditioning", grid={"n_hidden": [2, 4]}, chunk=8, **quick)
    with pytest.raises(ValueError, match=r"config\.seeds"):
        run("fear_conditioning", grid={"n_hidden": [2, 4, 6]}, seeds=3, chunk=8, **quick)
    with pytest.raises(ValueError, match="chunk size differs.*--chunk 8"):
        run("fear_conditioning", grid={"n_hidden": [2, 4, 6]}, chunk=6, **quick)
    assert sorted(p.name for p in folder.glob("chunk-*.npz")) == saved  # refusals touch nothing

    done = run_cli(*GRID, "--chunk", "8", "--out", out, "--resume")
    assert done.returncode == 0, done.stderr
    resumed, simulated = _assert_same_data(uninterrupted, out)
    assert resumed == [int(n[6:12]) for n in saved]  # loaded, not recomputed
    assert sorted(resumed + simulated[0]) == list(range(12))
    assert not folder.exists()  # cleaned up after the successful write


def test_resume_needs_checkpoints_and_a_file(tmp_path):
    quick = dict(preset="quick", quiet=True, figure=False)
    with pytest.raises(ValueError, match="no checkpoints"):
        run("fear_conditioning", out=tmp_path / "none.nc", resume=True, **quick)
    with pytest.raises(ValueError, match="--out FILE.nc"):
        run("fear_conditioning", out=tmp_path, resume=True, **quick)
    with pytest.raises(ValueError, match="not --out"):
        run("fear_conditioning", out=tmp_path / "y.nc", resume=tmp_path / "x.nc.chunks", **quick)
    with pytest.raises(ValueError, match="checkpoint folder"):
        run("fear_conditioning", resume=tmp_path / "x.txt", **quick)
    with pytest.raises(ValueError, match="write=True"):
        run("fear_conditioning", write=False, resume=True, **quick)
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.skipif(find_mpiexec() is None, reason="mpiexec not installed")
def test_resume_under_two_ranks_gives_the_same_data(tmp_path, uninterrupted):
    out = tmp_path / "grid.nc"
    code, _, stderr = _interrupt(out)
    assert code == 130, stderr
    folder = checkpoint.checkpoint_dir(out)
    res = run_cli(*GRID, "--chunk", "8", "--resume", folder, mpi_ranks=2)  # the folder names the output
    assert res.returncode == 0, res.stderr
    resumed, simulated = _assert_same_data(uninterrupted, out)
    assert resumed and sorted(resumed + [i for share in simulated for i in share]) == list(range(12))
    assert not folder.exists()


def _rank_pid(marker: str, rank: int):
    """The pid of MPI rank ``rank`` of the job started with ``PCNEURO_TEST_JOB=marker`` (from /proc)."""
    from pathlib import Path

    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PCNEURO_TEST_JOB={marker}".encode() in env and f"PMI_RANK={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.skipif(find_mpiexec() is None or not __import__("os").path.isdir("/proc"),
                    reason="needs mpiexec and /proc")
def test_sigkill_of_one_rank_then_resume_gives_the_same_data(tmp_path, uninterrupted):
    """A rank killed outright (SIGKILL: no handler runs) ends the job with nothing written; the
    chunks finished before are kept, and --resume finishes the file with the uninterrupted data."""
    import os
    import uuid

    out = tmp_path / "grid.nc"
    folder = checkpoint.checkpoint_dir(out)
    marker = uuid.uuid4().hex
    cmd = [find_mpiexec(), "-n", "2", sys.executable, str(ROOT / "run_paradigm.py"), *GRID, "--chunk", "8",
           "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=dict(cli_env(), PCNEURO_TEST_JOB=marker))
    deadline = time.time() + 120
    while not list(folder.glob("chunk-*.npz")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    victim = _rank_pid(marker, 1)
    assert victim is not None and proc.poll() is None, "the job ended before a rank could be killed"
    os.kill(victim, signal.SIGKILL)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert not out.exists()
    saved = sorted(p.name for p in folder.glob("chunk-*.npz"))
    assert 1 <= len(saved) < 12
    res = run_cli(*GRID, "--chunk", "8", "--out", out, "--resume", mpi_ranks=2)
    assert res.returncode == 0, res.stderr
    resumed, simulated = _assert_same_data(uninterrupted, out)
    assert set(resumed) >= {int(n[6:12]) for n in saved}  # kept, not recomputed
    assert sorted(resumed + [i for share in simulated for i in share]) == list(range(12))
    assert not folder.exists()
