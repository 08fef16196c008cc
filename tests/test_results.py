"""The result schema of DESIGN.md: dims, coords, attrs, atomic NetCDF4."""
import json
import os

import numpy as np
import pytest
import xarray as xr

import pcneuro


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
