"""The result schema of DESIGN.md: dims, coords, attrs, atomic NetCDF4."""
import json
import os

import numpy as np
import pytest
import xarray as xr

import pcneuro
from pcneuro.results import compressed, write_netcdf


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("res") / "sub" / "fear.nc"
    ds = pcneuro.run("fear_conditioning", preset="quick", device="cpu", out=out, command="test command")
    return ds, out


def test_file_reopens_with_the_same_content(written):
    ds, out = written
    assert ds.encoding["source"] == str(out)
    with xr.open_dataset(out) as back:
        xr.testing.assert_identical(back.load().drop_encoding() if hasattr(back, "drop_encoding") else back, ds)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fear.nc", "fear.png"]  # no temporary files left
    assert ds.encoding["figure"] == str(out.with_suffix(".png"))
    with open(out, "rb") as f:
        assert f.read(4) == b"\x89HDF"  # NetCDF4 (HDF5 container)
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask  # not the 0600 of a temporary file


def test_dims_coords_and_units(written):
    ds, _ = written
    f = ds["fear_to_N"]
    assert f.dims == ("rule", "seed", "lr_perception", "lr_mix_L", "lr_mix_N", "group", "trial")
    assert list(ds["rule"].values) == ["pc", "bp"]
    assert list(ds["seed"].values) == [0, 1]
    assert f.attrs["long_name"] and f.attrs["units"]
    assert ds["lr_mix_N"].attrs["long_name"]


def test_global_attrs_record_what_ran(written):
    ds, _ = written
    a = ds.attrs
    for key in ("paradigm", "paradigm_version", "config", "command", "pcneuro_version", "git_commit",
                "torch_version", "device", "mpi_size", "start_time", "end_time", "elapsed_seconds",
                "tf32", "deterministic", "dtype"):
        assert key in a, key
    config = json.loads(a["config"])
    assert config["paradigm"] == "fear_conditioning" and config["seeds"] == [0, 1]
    assert config["settings"]["T"] == 200 and "lr_mix_N" in config["grid"]
    assert a["command"] == "test command" and a["mpi_size"] == 1 and a["device"] == "cpu"
    assert a["pcneuro_version"] == pcneuro.__version__


def test_same_command_same_data(written, tmp_path):
    ds, _ = written
    again = pcneuro.run("fear_conditioning", preset="quick", device="cpu", write=False)
    np.testing.assert_array_equal(again["fear_to_N"].values, ds["fear_to_N"].values)


def test_plan_counts_runs():
    plan = pcneuro.make_plan("fear_conditioning")
    assert len(plan.runs) == 2 * 64 * 8  # x 3 groups simulated inside each run = 3072 networks
    with pytest.raises(ValueError, match="repeats a value"):
        pcneuro.make_plan("fear_conditioning", grid={"init_sd": [0.1, 0.1]})
    with pytest.raises(ValueError, match="both fixed"):
        pcneuro.make_plan("fear_conditioning", settings={"init_sd": 0.1}, grid={"init_sd": [0.1, 0.2]})


def test_deterministic_mode_is_recorded_and_restored(written):
    import torch

    ds, _ = written
    assert ds.attrs["deterministic"] == 0 and ds.attrs["tf32"] == 0
    det = pcneuro.run("fear_conditioning", preset="quick", seeds=1, device="cpu", write=False, deterministic=True)
    assert det.attrs["deterministic"] == 1
    assert not torch.are_deterministic_algorithms_enabled()  # global torch state left as it was
    np.testing.assert_array_equal(det["fear_to_N"].values, ds["fear_to_N"].sel(seed=[0]).values)


def test_measures_are_written_compressed_and_the_dataset_is_left_as_it_was(written, tmp_path):
    ds, out = written
    with xr.open_dataset(out) as back:
        encoding = back["fear_to_N"].encoding
        first = back.load()
    assert encoding["zlib"] and encoding["shuffle"] and encoding["complevel"] == 4
    assert "zlib" not in ds["fear_to_N"].encoding  # the returned dataset is not changed by writing
    assert compressed(ds)["rule"].encoding == {}  # only numeric data variables are compressed
    plain = tmp_path / "plain.nc"
    ds.to_netcdf(plain, engine="netcdf4", format="NETCDF4")
    assert out.stat().st_size < 0.8 * plain.stat().st_size  # small file: the attributes weigh a lot here
    write_netcdf(first, tmp_path / "again.nc")  # a reopened dataset (carrying its file's encoding) writes again
    with xr.open_dataset(tmp_path / "again.nc") as again:
        xr.testing.assert_identical(again.load(), first)


def test_coinciding_curves_stay_visible_and_are_named(monkeypatch, tmp_path):
    """Under BP, LN+ and LN+,L- are one curve (the finding): both lines must show in the figure."""
    from pcneuro import plotting

    ds = pcneuro.run("fear_conditioning", seeds=2, device="cpu", write=False,
                     settings={"lr_perception": 0.001, "lr_mix_L": 0.001, "lr_mix_N": 1.0})
    captured = {}

    def capture(fig, path):
        captured["fig"] = fig
        return path

    monkeypatch.setattr(plotting, "save_figure", capture)
    plotting.summary_figure(ds, tmp_path / "f.png")
    pc, bp = captured["fig"].axes
    assert pc.get_legend() is None  # PC: the three groups differ at the end; the legend is on the last panel
    labels = [t.get_text() for t in bp.get_legend().get_texts()]
    assert labels == ["N+", "LN+", "LN+,L- (= LN+)"]
    ln, ln_l = bp.get_lines()[1], bp.get_lines()[2]
    np.testing.assert_array_equal(ln.get_ydata(), ln_l.get_ydata())  # the same curve ...
    assert ln_l.get_linewidth() < ln.get_linewidth() and ln_l.get_linestyle() != ln.get_linestyle()  # ... both seen
    assert ln_l.get_zorder() > ln.get_zorder()
    import matplotlib.pyplot as plt

    plt.close(captured["fig"])


def test_divergence_warning_counts_each_run_once_flagged_or_non_finite():
    """A run counts once whether a measure of it is non-finite or the paradigm flagged it in its
    boolean ``diverged`` measure; NaN in a ``nan_is_empty`` measure is an empty cell (dqn_control's
    TD loss before its buffer fills, or after a NaN divergence the flag records), inf is not."""
    from types import SimpleNamespace

    from pcneuro.paradigm import Measure
    from pcneuro.runner import divergence_warning

    cls = SimpleNamespace(measures={"loss": Measure(("episode",), "TD loss", nan_is_empty=True),
                                    "reward": Measure(("episode",), "reward"),
                                    "diverged": Measure((), "flag")})
    shape = (2, 3, 2)  # rule, seed, one grid axis: 12 runs
    loss, reward = np.zeros(shape + (4,)), np.ones(shape + (4,))
    flag = np.zeros(shape, dtype=bool)
    loss[0, 0, 0, :2] = np.nan  # empty cells only: not a divergence
    assert divergence_warning(cls, {"loss": loss, "reward": reward, "diverged": flag}, 3, 12) is None
    loss[1, 2, 1, 3] = np.nan  # a NaN divergence, seen only through the flag
    flag[1, 2, 1] = flag[1, 0, 0] = True
    loss[1, 0, 0, 3] = np.inf  # the same run again: counted once
    reward[0, 1, 1, 2] = np.nan  # a third run, non-finite in a measure without empty cells
    line = divergence_warning(cls, {"loss": loss, "reward": reward, "diverged": flag}, 3, 12)
    assert line == ("3 of 12 runs diverged (non-finite loss, non-finite reward, flagged in 'diverged'); "
                    "kept as data in the results")


def test_a_diverging_grid_finishes_with_one_warning_line(tmp_path, capfd):
    """small_data at lr 1000 diverges under BP: the grid completes, the runs are flagged and kept,
    and stderr says so in one line."""
    ds = pcneuro.run("small_data", preset="quick", rule="bp", grid={"lr": [0.01, 1000.0]},
                     out=tmp_path / "sd.nc", figure=False, quiet=True)
    diverged = ds["diverged"].sel(lr=1000.0)
    assert int(ds["diverged"].sum()) == int(diverged.sum()) >= 1
    assert np.isfinite(ds["min_test_error"]).all()  # diverged runs are recorded (error 1.0 once diverged)
    lines = [line for line in capfd.readouterr().err.splitlines() if "warning" in line]
    assert lines == [f"pcneuro: warning: {int(diverged.sum())} of 8 runs diverged "
                     "(non-finite train_loss, flagged in 'diverged'); kept as data in the results"]
