"""Seeds spread over MPI ranks (pip-installed mpich): same file as one process; failures end the job."""
import numpy as np
import xarray as xr

from conftest import run_cli


def test_two_ranks_write_the_one_process_file(tmp_path):
    one, two = tmp_path / "one.nc", tmp_path / "two.nc"
    args = ["fear_conditioning", "--preset", "quick", "--seeds", "3", "--quiet"]
    r1 = run_cli(*args, "--out", one)
    r2 = run_cli(*args, "--out", two, mpi_ranks=2)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("wrote ") == 1  # only rank 0 writes and reports
    with xr.open_dataset(one) as a, xr.open_dataset(two) as b:
        assert a.attrs["mpi_size"] == 1 and b.attrs["mpi_size"] == 2
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            assert a[name].dims == b[name].dims
            np.testing.assert_array_equal(a[name].values, b[name].values)
        for coord in a.coords:
            np.testing.assert_array_equal(a[coord].values, b[coord].values)
        assert a.attrs["config"] == b.attrs["config"]


def test_a_failing_rank_ends_the_job_with_its_message(plugin_path, tmp_path):
    out = tmp_path / "never.nc"
    res = run_cli("tiny_plugin", "--set", "fail_on_rank=1", "--out", out, "--quiet", mpi_ranks=2,
                  extra_path=plugin_path, timeout=120)  # a hang would hit the timeout
    assert res.returncode != 0
    assert "deliberate failure on rank 1" in res.stderr
    assert "rank 1 of 2 failed" in res.stderr
    assert not out.exists()


def test_bad_input_under_mpi_is_reported_once(tmp_path):
    res = run_cli("fear_conditioning", "--set", "lr_mix_N=oops", mpi_ranks=2, cwd=tmp_path, timeout=120)
    assert res.returncode != 0
    assert res.stderr.count("lr_mix_N='oops'") == 1


def test_fit_under_two_ranks_equals_one_process(tmp_path):
    """--fit under mpiexec: every rank takes part in the screen, refinement and confirmation; rank 0
    fits and writes one file equal to the one-process fit."""
    one, two = tmp_path / "one.nc", tmp_path / "two.nc"
    args = ["fear_conditioning", "--fit", "--preset", "quick", "--confirm-seeds", "6", "--population", "4",
            "--bootstrap", "20", "--quiet", "--no-figure"]
    r1 = run_cli(*args, "--out", one)
    r2 = run_cli(*args, "--out", two, mpi_ranks=2)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout.count("wrote ") == 1
    with xr.open_dataset(one) as a, xr.open_dataset(two) as b:
        assert set(a.data_vars) == set(b.data_vars)
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        assert a.attrs["fit_report"] == b.attrs["fit_report"]
