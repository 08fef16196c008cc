"""The fitting layer end to end: fit(results, data), run_paradigm.py --fit, bad data, recovery."""
import numpy as np
import pytest
import xarray as xr

import pcneuro
from pcneuro.fits.analysis import Candidates, analyse_rule
from pcneuro.fits.bootstrap import bootstrap_indices
from pcneuro.fits.readout import ObservedData
from pcneuro.fits.workflow import fit
from pcneuro.paradigms.fear_conditioning import FearConditioning, GROUPS

from conftest import run_cli

PC_POINT = dict(lr_perception=0.001, lr_mix_L=0.001, lr_mix_N=1.0)


@pytest.fixture(scope="module")
def fear_grid():
    """The default fear grid, both rules, 8 seeds (3072 networks, a few seconds)."""
    return pcneuro.run("fear_conditioning", device="cpu", write=False)


@pytest.fixture(scope="module")
def fear_report(fear_grid):
    return fear_grid, fit(fear_grid, n_boot=100)


def test_fit_reproduces_the_reference_baseline(fear_report):
    """The baseline is the reference's §0.4 fit: PC's best grid point is the spec's config, BP is a
    structural tie at E = ½(d̄_{LN+,L-} − d̄_{LN+})² over every grid point (reported as a tie)."""
    ds, rep = fear_report
    pc, bp = rep.screen["pc"].baseline, rep.screen["bp"].baseline
    assert rep.screen["pc"].candidates.settings[pc.best] == PC_POINT
    d = rep.data.means[[rep.data.labels.index(g) for g in ("LN+,L-", "LN+")]]
    assert bp.error[bp.best] == pytest.approx(0.5 * (d[0] - d[1]) ** 2, rel=1e-9)
    assert len(bp.ties) == 64
    assert "a tie of 64 settings" in rep.table()


def test_project_fit_statistics(fear_report):
    _, rep = fear_report
    pc, bp = rep.final["pc"], rep.final["bp"]
    # honest identifiability: 3 conditions, 2 read-out + 3 searched learning rates
    assert pc.readout.nvarys_total == 5 and pc.readout.dof_conditions == -2 and not pc.readout.identified
    assert pc.readout.ndata == 15
    # PC reproduces the pattern, BP cannot separate LN+ from LN+,L-
    f = dict(zip(rep.data.labels, pc.readout.fitted))
    assert f["LN+,L-"] - f["LN+"] > 10
    g = dict(zip(rep.data.labels, bp.readout.fitted))
    assert g["LN+,L-"] == pytest.approx(g["LN+"], abs=1e-9)
    assert len(bp.ties) == 64  # every grid point fits BP equally: reported, not hidden
    assert pc.readout.chisqr < bp.readout.chisqr
    comp = rep.comparison()
    assert comp["delta_aic"] == pytest.approx(pc.readout.aic - bp.readout.aic)
    assert len(comp["delta_chisqr_samples"]) == 100
    # BP's confidence set covers the whole tie
    assert len(rep.confidence_set("bp")) == 64


def test_fit_results_roundtrip_netcdf(fear_report, tmp_path):
    ds, rep = fear_report
    fit_ds = rep.to_dataset()
    merged = xr.merge([ds, fit_ds], combine_attrs="override")
    merged.attrs.update(fit_ds.attrs)
    path = tmp_path / "f.nc"
    merged.to_netcdf(path)
    with xr.open_dataset(path) as back:
        assert float(back["fit_k"].sel(rule="pc")) == pytest.approx(rep.final["pc"].readout.k)
        assert back["screen_chisqr"].dims == ("rule", "lr_perception", "lr_mix_L", "lr_mix_N")
        assert "PC vs BP" in back.attrs["fit_report"]
        assert back["fit_fitted_ci"].dims == ("rule", "fit_condition", "bound")
    png = rep.figure(tmp_path / "fit.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_fit_writes_one_file_with_the_fit(tmp_path):
    out = tmp_path / "fear.nc"
    res = run_cli("fear_conditioning", "--fit", "--preset", "quick", "--confirm-seeds", "12", "--bootstrap", "40",
                  "--population", "8", "--out", out)
    assert res.returncode == 0, res.stderr
    assert "PC vs BP" in res.stdout and "confirmed on 12 fresh seeds" in res.stdout
    with xr.open_dataset(out) as ds:
        assert "fear_to_N" in ds and "fit_aic" in ds and "candidate_chisqr" in ds
        assert ds.sizes["fit_seed"] == 12
        assert set(ds["candidate_stage"].values.ravel()) >= {"grid", "refine"}
        assert ds.attrs["fit_confirmed"] == 1
    assert out.with_name("fear-fit.png").exists()


@pytest.mark.parametrize("text, fragment", [
    ("group,value\nN+,1\nXX,2\n", "unknown group label 'XX'"),
    ("grp,value\nN+,1\n", "no column 'group'"),
    ("group,value\nN+,abc\n", "'abc'"),
    ("group,value\nN+,1\nLN+,2\n", "fewer than the 5 free parameters"),
])
def test_bad_data_is_one_line_exit_2_nothing_written(tmp_path, text, fragment):
    data = tmp_path / "bad.csv"
    data.write_text(text)
    out = tmp_path / "out"
    res = run_cli("fear_conditioning", "--fit", "--preset", "quick", "--data", data, "--out", f"{out}/")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and str(data) in lines[0], res.stderr
    assert not out.exists()


def test_missing_data_file_and_paradigm_without_fit(tmp_path):
    res = run_cli("fear_conditioning", "--fit", "--data", tmp_path / "nope.csv", "--out", f"{tmp_path}/o/")
    assert res.returncode == 2 and "nope.csv" in res.stderr and len(res.stderr.strip().splitlines()) == 1
    res = run_cli("fear_conditioning", "--data", tmp_path / "x.csv")
    assert res.returncode == 2 and "--data needs --fit" in res.stderr


def test_recovery_true_setting_in_confidence_set(fear_grid):
    """Parameter recovery: data simulated from a known PC setting (seeds disjoint from the fit's,
    subject noise at the recorded within-condition SD, 5 subjects per group) fall inside the fit's
    95 % bootstrap confidence set in most of 20 repetitions."""
    from pcneuro.datasets import load_behaviour

    real = ObservedData.from_dataset(load_behaviour("fear_conditioning"), list(GROUPS))
    truth = pcneuro.run("fear_conditioning", rule="pc", seeds=range(1000, 1100), settings=PC_POINT,
                        device="cpu", write=False)
    m_true = truth["fear_to_N"].isel(trial=-1).squeeze().mean("seed").sel(group=list(GROUPS)).values
    # a realistic read-out: the true setting's fit to the real rat data
    w = real.counts
    A = np.stack([m_true, np.ones(3)], axis=1)
    k, b = np.linalg.lstsq(A * np.sqrt(w)[:, None], real.means * np.sqrt(w), rcond=None)[0]
    pc = fear_grid.sel(rule="pc")
    grid_axes = ["lr_perception", "lr_mix_L", "lr_mix_N"]
    values = pc["fear_to_N"].isel(trial=-1).transpose(*grid_axes, "seed", "group").sel(group=list(GROUPS)).values
    values = values.reshape(-1, pc.sizes["seed"], 3)
    settings = [dict(zip(grid_axes, v)) for v in
                np.array(np.meshgrid(*[pc[a].values for a in grid_axes], indexing="ij")).reshape(3, -1).T]
    truth_index = settings.index({a: float(PC_POINT[a]) for a in grid_axes})
    cand = Candidates("pc", settings, values, tuple(range(pc.sizes["seed"])), ["grid"] * len(settings))
    rng = np.random.default_rng(7)
    covered, sizes = 0, []
    for rep in range(20):
        y = np.repeat(k * m_true + b, 5) + rng.normal(0.0, real.scale, 15)
        data = ObservedData.from_points(y, np.repeat(np.arange(3), 5), list(GROUPS))
        indices = bootstrap_indices(cand.values.shape[1], data, 200, seed=rep)
        f = analyse_rule(cand, data, FearConditioning.fit, n_hyper=3, indices=indices)
        members = set(f.boot.confidence_set(0.95))
        members |= {j for j in range(len(f.chi2)) for i in list(members)
                    if abs(f.chi2[j] - f.chi2[i]) <= 1e-9 * abs(f.chi2[i])}
        covered += truth_index in members
        sizes.append(len(members))
    print(f"recovery coverage: {covered}/20, confidence-set size {np.mean(sizes):.1f} of {len(settings)} on average")
    assert covered >= 16
    assert np.mean(sizes) < len(settings) / 4  # the set is informative, not the whole grid


def test_a_setting_with_a_diverged_seed_never_wins():
    """NaN from divergence is not an empty cell: a setting where one seed diverged is left out of
    the fit (its surviving seeds would otherwise favour a fragile setting)."""
    ds = pcneuro.run("fear_conditioning", rule="pc", seeds=2, grid={"lr_mix_N": (8.0, 9.37664246)},
                     settings={"T": 20, "lr_perception": 0.001, "lr_mix_L": 0.001, "init_sd": 0.5},
                     device="cpu", write=False)
    values = ds["fear_to_N"].isel(trial=-1).sel(rule="pc", lr_mix_N=9.37664246).values
    assert np.isnan(values).any() and np.isfinite(values).any()  # one seed diverged, one did not
    rep = fit(ds, n_boot=20)
    f = rep.screen["pc"]
    assert list(f.candidates.diverged) == [False, True]
    assert np.isfinite(f.chi2[0]) and np.isnan(f.chi2[1])
    assert f.best == 0 and set(f.boot.best) == {0}
    assert "1 of 2 grid settings diverged" in rep.table()


def test_reversal_data_without_every_cell_is_refused_before_simulating(tmp_path):
    data = tmp_path / "three_cells.csv"
    data.write_text("at,choice,value\npunish,stay,0.1\nnext,stay,-0.1\npunish,switch,0.0\n")
    res = run_cli("reversal_learning", "--fit", "--preset", "quick", "--data", data, "--out", f"{tmp_path}/o/")
    assert res.returncode == 2 and "needs every cell" in res.stderr and "next" in res.stderr
    assert not (tmp_path / "o").exists()


def test_polish_finds_a_smooth_optimum_within_the_grid_bounds():
    """lmfit's Nelder-Mead over log10 axes, bounded by the grid's range, one evaluation per setting."""
    import math

    from pcneuro.fits.search import polish

    axes = {"lr": (-4.0, 0.0, 1.0), "sd": (-3.0, -1.0, 1.0)}
    calls = []

    def chi2(p):
        calls.append(p)
        return (math.log10(p["lr"]) + 2.3) ** 2 + (math.log10(p["sd"]) + 0.5) ** 2  # sd's optimum is outside

    point, value, n_eval = polish({"lr": 1e-3, "sd": 1e-2, "other": 7}, axes, chi2, max_nfev=150)
    assert math.log10(point["lr"]) == pytest.approx(-2.3, abs=1e-2)
    assert math.log10(point["sd"]) == pytest.approx(-1.0, abs=1e-2)  # held at the grid's edge
    assert point["other"] == 7 and value == pytest.approx(0.25, abs=1e-3)
    assert n_eval == len(calls) <= 150
