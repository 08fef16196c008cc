"""The command line as a user types it."""
import json
import os
import subprocess
import sys

import pytest
import xarray as xr

from conftest import cli_env, run_cli


def test_help_explains_usage():
    res = run_cli("--help")
    assert res.returncode == 0
    for flag in ("--rule", "--seeds", "--preset", "--set", "--grid", "--device", "--out", "--quiet", "--list"):
        assert flag in res.stdout


def test_list_shows_tags_and_titles():
    res = run_cli("--list")
    assert res.returncode == 0, res.stderr
    assert "fear_conditioning" in res.stdout and "behaviour" in res.stdout
    bench = run_cli("--list", "--tag", "benchmark").stdout
    assert "cifar10_cnn" in bench and "fear_conditioning" not in bench
    assert run_cli("--list", "--tag", "no_such_tag").stdout.strip().startswith("no paradigms")


def test_info_lists_hyperparameters():
    res = run_cli("fear_conditioning", "--info")
    assert res.returncode == 0 and "lr_mix_N" in res.stdout and "quick" in res.stdout


def test_run_prints_table_and_writes_netcdf(tmp_path):
    out = tmp_path / "fear.nc"
    res = run_cli("fear_conditioning", "--rule", "pc", "--preset", "quick", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "fear_to_N at trial=-1" in res.stdout
    assert "LN+,L-" in res.stdout and res.stdout.count("\npc ") == 1
    assert f"wrote {out}" in res.stdout
    figure = out.with_suffix(".png")
    assert f"figure {figure}" in res.stdout
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with xr.open_dataset(out) as ds:
        assert list(ds["rule"].values) == ["pc"]
        assert ds.sizes["seed"] == 2
        assert "run_paradigm.py fear_conditioning --rule pc --preset quick" in ds.attrs["command"]
        assert json.loads(ds.attrs["config"])["preset"] == "quick"


def test_default_output_location(tmp_path):
    res = run_cli("fear_conditioning", "--preset", "quick", "--seeds", "1", "--quiet", "--no-figure", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    files = list((tmp_path / "results" / "fear_conditioning").iterdir())
    assert len(files) == 1 and files[0].suffix == ".nc" and str(files[0].relative_to(tmp_path)) in res.stdout
    assert "fear_to_N" not in res.stdout  # --quiet: no table


def test_set_collapses_and_grid_adds_axes(tmp_path):
    out = tmp_path / "g.nc"
    res = run_cli("fear_conditioning", "--preset", "quick", "--rule", "bp", "--quiet", "--out", out,
                  "--set", "lr_mix_N=0.5", "--grid", "init_sd=0.1,0.01")
    assert res.returncode == 0, res.stderr
    with xr.open_dataset(out) as ds:
        assert ds.sizes["lr_mix_N"] == 1 and float(ds["lr_mix_N"].values[0]) == 0.5
        assert list(ds["init_sd"].values) == [0.1, 0.01]
        assert ds["fear_to_N"].dims[:6] == ("rule", "seed", "lr_perception", "lr_mix_L", "lr_mix_N", "init_sd")


@pytest.mark.parametrize("args, needle", [
    (["fear_conditionin"], "fear_conditionin"),
    (["fear_conditioning", "--rule", "hebb"], "hebb"),
    (["fear_conditioning", "--set", "lr_mixN=1"], "lr_mixN"),
    (["fear_conditioning", "--set", "lr_mix_N=fast"], "fast"),
    (["fear_conditioning", "--set", "lr_mix_N=-0.1"], "-0.1"),
    (["fear_conditioning", "--set", "n_hidden=3"], "n_hidden=3"),
    (["fear_conditioning", "--grid", "init_sd=0.1,x"], "x"),
    (["fear_conditioning", "--seeds", "0"], "--seeds 0"),
    (["fear_conditioning", "--preset", "huge"], "huge"),
    (["fear_conditioning", "--device", "tpu"], "tpu"),
    (["fear_conditioning", "--out", "/proc/forbidden/f.nc"], "/proc/forbidden/f.nc"),
    (["fear_conditioning", "--seeds", "abc"], "'abc'"),
    (["fear_conditioning", "--sed", "3"], "--sed"),
    (["fear_conditioning", "--grid", "n_extinction=0,4"], "n_extinction=4"),
])
def test_bad_input_is_one_line_naming_the_value(tmp_path, args, needle):
    res = run_cli(*args, "--quiet", cwd=tmp_path)
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("run_paradigm.py: error:") and needle in lines[0], res.stderr
    assert not (tmp_path / "results").exists()  # nothing partial written


def test_console_script_equals_the_script():
    exe = os.path.join(os.path.dirname(sys.executable), "run-paradigm")
    if not os.path.exists(exe):
        pytest.fail("the run-paradigm console script is not installed (pip install -e .)")
    a = subprocess.run([exe, "--list"], capture_output=True, text=True, env=cli_env())
    b = run_cli("--list")
    assert a.returncode == 0 and a.stdout == b.stdout


def test_out_folder_gets_a_run_id_file(tmp_path):
    res = run_cli("fear_conditioning", "--preset", "quick", "--seeds", "1", "--quiet", "--no-figure",
                  "--out", f"{tmp_path / 'new'}{os.sep}")
    assert res.returncode == 0, res.stderr
    files = list((tmp_path / "new").iterdir())
    assert len(files) == 1 and files[0].suffix == ".nc"


def test_out_without_nc_suffix_is_a_folder(tmp_path):
    res = run_cli("fear_conditioning", "--preset", "quick", "--seeds", "1", "--rule", "bp", "--quiet",
                  "--out", "results", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    files = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert len(files) == 2 and files[0].endswith(".nc") and files[1] == files[0][:-3] + ".png"
    assert f"wrote results{os.sep}{files[0]}" in res.stdout


def test_out_naming_an_existing_file_without_nc_suffix_is_refused(tmp_path):
    (tmp_path / "notes").write_text("keep me")
    res = run_cli("fear_conditioning", "--preset", "quick", "--quiet", "--out", "notes", cwd=tmp_path)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 1 and "--out notes is an existing file without the .nc suffix" in lines[0]
    assert (tmp_path / "notes").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes"]
