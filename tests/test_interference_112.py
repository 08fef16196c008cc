"""The 1-1-2 interference example (theory spec §4, fig 3a/3d): claims, oracles, end to end, bad input.

The protocol is deterministic (fixed initial weights, one sample, no draws): a seed changes nothing,
which one test checks, so the claims are tested over settings (learning rates) rather than seeds.
"""
import numpy as np
import pytest
import xarray as xr

import pcneuro
from pcneuro.paradigms.interference_112 import FIRST_STEP_LRS, Interference112
from conftest import run_cli

CLAIM_LRS = (0.5, 0.2, 0.1, 0.05, 0.01, 0.005)  # fig 3a's 0.2 and fig 3d's sweep


def converged_pc(lr, n_updates):
    """Spec §4's PC oracle under converged inference: outputs after 0..n_updates updates."""
    w, v, y = 1.0, np.array([1.0, 1.0]), np.array([0.0, 1.0])
    out = [v * w]
    for _ in range(n_updates):
        h = (w + v @ y) / (1 + v @ v)
        w, v = w + lr * (h - w), v + lr * (y - v * h) * h
        out.append(v * w)
    return np.array(out)


@pytest.fixture(scope="module")
def sweep():
    """Both rules at fig 3a's and fig 3d's lrs, 256 logged points (past every dip: the slowest, PC at
    lr 0.005, bottoms out near iteration 240), two seeds to show that seeds change nothing."""
    return pcneuro.run("interference_112", seeds=2, settings={"iterations": 256}, grid={"lr": CLAIM_LRS},
                       device="cpu", write=False)


def test_pc_protects_the_correct_output_and_bp_disturbs_it(sweep):
    lowest = sweep["min_correct_output"]
    assert lowest.dims == ("rule", "seed", "lr")
    pc, bp = lowest.sel(rule="pc").values, lowest.sel(rule="bp").values
    assert (pc > 0.9).all(), pc
    assert (bp < 0.85).all(), bp
    # the measure is the lowest logged o_2, and each dip is over before the last point
    o2 = sweep["output"].sel(unit=2)
    np.testing.assert_array_equal(lowest.values, o2.min("step").values)
    assert (o2.argmin("step").values < 250).all()


def test_seeds_change_nothing(sweep):
    out = sweep["output"]
    np.testing.assert_array_equal(out.isel(seed=0).values, out.isel(seed=1).values)


def test_published_minima_are_reproduced(sweep):
    """Fig 3a (lr 0.2): BP ≈ 0.76, PC ≈ 0.93; fig 3d (lr ≤ 0.1): BP ≈ 0.79–0.80, PC ≈ 0.94 (read ±0.01)."""
    lowest = sweep["min_correct_output"].isel(seed=0)
    assert float(lowest.sel(rule="bp", lr=0.2)) == pytest.approx(0.76, abs=0.01)
    assert float(lowest.sel(rule="pc", lr=0.2)) == pytest.approx(0.93, abs=0.01)
    for lr in (0.1, 0.05, 0.01, 0.005):
        assert 0.78 <= float(lowest.sel(rule="bp", lr=lr)) <= 0.81
        assert float(lowest.sel(rule="pc", lr=lr)) == pytest.approx(0.94, abs=0.01)


def test_fig3a_converges_to_the_target_within_64_iterations(sweep):
    final = sweep["output"].sel(lr=0.2, step=63).isel(seed=0)
    np.testing.assert_allclose(final.values, [[0.0, 1.0], [0.0, 1.0]], atol=1e-3)


def test_bp_first_step_is_on_the_square_root_curve(sweep):
    """One SGD step on ½‖y − v·w‖² from w = 1, v = (1, 1): o = ((1 − η)², 1 − η)."""
    for lr in CLAIM_LRS:
        o = sweep["output"].sel(rule="bp", lr=lr, step=1).isel(seed=0).values
        np.testing.assert_allclose(o, [(1 - lr) ** 2, 1 - lr], rtol=0, atol=1e-14)


def test_pc_matches_the_converged_inference_oracle(sweep):
    for lr in CLAIM_LRS:
        o = sweep["output"].sel(rule="pc", lr=lr).isel(seed=0).values
        np.testing.assert_allclose(o, converged_pc(lr, 255), rtol=0, atol=1e-7)


def test_first_step_sweep_reproduces_the_published_pc_points():
    ds = pcneuro.run("interference_112", rule="pc", preset="first_step", settings={"T": 128}, device="cpu",
                     write=False)
    assert ds.sizes["step"] == 2
    after = ds["output"].sel(step=1).isel(rule=0, seed=0)
    np.testing.assert_allclose(after.sel(lr=2.75).values, [-0.019, 0.135], atol=0.001)
    np.testing.assert_allclose(after.sel(lr=2.5).values, [-0.019, 0.259], atol=0.001)
    np.testing.assert_allclose(after.sel(lr=3.0).values, [0.0, 0.0], atol=1e-7)  # the hidden weight hits 0
    # every PC point lies above BP's curve o_2 = √o_1 (for o_1 ≥ 0) or left of it
    for lr in FIRST_STEP_LRS["pc"]:
        o1, o2 = after.sel(lr=lr).values
        assert o1 < 0 or o2 > np.sqrt(o1), (lr, o1, o2)


def test_quick_preset_writes_results_and_figure(tmp_path):
    ds = pcneuro.run("interference_112", preset="quick", out=tmp_path / "quick.nc", device="cpu")
    saved = xr.open_dataset(ds.encoding["source"])
    assert set(saved.data_vars) == set(Interference112.measures)
    assert saved["output"].dims == ("rule", "seed", "lr", "step", "unit")
    png = tmp_path / "quick.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert "published min o2" in Interference112.summary_table(saved)
    saved.close()


@pytest.mark.parametrize("setting, named", [("lr=-0.1", "lr='-0.1'"), ("iterations=0", "iterations='0'")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, setting, named):
    """A negative learning rate or zero iterations: one line naming the value, exit status 2."""
    res = run_cli("interference_112", "--set", setting, "--out", tmp_path / "bad.nc")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "minimum" in lines[0], res.stderr
    assert not (tmp_path / "bad.nc").exists()
