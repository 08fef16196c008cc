"""Closed-form reference fit (specs/behaviour.md §0.4, §1.5, §1.6)."""
import math

import numpy as np
import pytest
import xarray as xr

from pcneuro.fits import ClosedFormFit, closed_form_fit, condition_stats, seed_stats

REL = 1e-9
# Fear-conditioning data means (specs/behaviour.md §1.4).
DATA = {"LN+": 25.845372174003284, "LN+,L-": 43.14358959256283, "N+": 44.36454638904899}
# PC-like simulated seed means: raw outputs near 1 (§1.6: k >> 1, b << 0).
SIM = {"LN+": 0.9731, "LN+,L-": 1.0123, "N+": 1.0187}


def _lstsq(sim, data, intercept):
    keys = list(data)
    m = np.array([sim[c] for c in keys])
    d = np.array([data[c] for c in keys])
    a = np.column_stack([m, np.ones_like(m)]) if intercept else m[:, None]
    coef = np.linalg.lstsq(a, d, rcond=None)[0]
    k, b = (coef[0], coef[1]) if intercept else (coef[0], 0.0)
    return k, b, float(np.sum((k * m + b - d) ** 2))


def test_affine_matches_least_squares_and_hand_formula():
    fit = closed_form_fit(SIM, DATA, kind="affine")
    assert isinstance(fit, ClosedFormFit) and fit.kind == "affine" and not fit.degenerate
    k, b, e = _lstsq(SIM, DATA, intercept=True)
    assert math.isclose(fit.k, k, rel_tol=REL)
    assert math.isclose(fit.b, b, rel_tol=REL)
    assert math.isclose(fit.error, e, rel_tol=REL)
    # §0.4.4 written out by hand
    m = np.array([SIM[c] for c in DATA]); d = np.array(list(DATA.values())); n = 3
    k_hand = (n * (m * d).sum() - m.sum() * d.sum()) / (n * (m ** 2).sum() - m.sum() ** 2)
    b_hand = (d.sum() - k_hand * m.sum()) / n
    assert math.isclose(fit.k, k_hand, rel_tol=REL)
    assert math.isclose(fit.b, b_hand, rel_tol=REL)
    assert fit.k > 1 and fit.b < 0
    # fitted values and E (no 1/2)
    for c in DATA:
        assert math.isclose(fit.fitted[c], fit.k * SIM[c] + fit.b, rel_tol=REL)
    e_hand = sum((fit.fitted[c] - DATA[c]) ** 2 for c in DATA)
    assert math.isclose(fit.error, e_hand, rel_tol=REL)
    assert list(fit.fitted) == list(DATA) and fit.conditions == tuple(DATA)


def test_scale_only_fit():
    fit = closed_form_fit(SIM, DATA, kind="scale")
    k, b, e = _lstsq(SIM, DATA, intercept=False)
    assert fit.b == 0.0 and not fit.degenerate
    assert math.isclose(fit.k, k, rel_tol=REL)
    m = np.array([SIM[c] for c in DATA]); d = np.array(list(DATA.values()))
    assert math.isclose(fit.k, (m * d).sum() / (m ** 2).sum(), rel_tol=REL)
    assert math.isclose(fit.error, e, rel_tol=REL)


def test_conditions_paired_by_key_not_order():
    shuffled = {"N+": SIM["N+"], "LN+": SIM["LN+"], "LN+,L-": SIM["LN+,L-"]}
    a = closed_form_fit(SIM, DATA)
    b = closed_form_fit(shuffled, DATA)
    assert math.isclose(a.k, b.k, rel_tol=1e-12) and math.isclose(a.error, b.error, rel_tol=1e-12)
    # Labels whose sorted order differs from the data's order still pair by key.
    sim = {"z": 1.0, "a": 2.0, "m": 4.0}
    data = {"a": 5.0, "m": 9.0, "z": 3.0}  # exactly d = 2m + 1
    fit = closed_form_fit(sim, data)
    assert math.isclose(fit.k, 2.0, rel_tol=REL) and math.isclose(fit.b, 1.0, rel_tol=REL)
    assert fit.error < 1e-20


def test_mismatched_conditions_rejected():
    with pytest.raises(ValueError, match="conditions differ"):
        closed_form_fit({"N+": 1.0, "LN+": 0.5}, DATA)
    with pytest.raises(ValueError, match="kind"):
        closed_form_fit(SIM, DATA, kind="linear")
    with pytest.raises(TypeError):
        closed_form_fit([1.0, 2.0, 3.0], DATA)


@pytest.mark.parametrize("sim, kind", [
    ({"LN+": 0.1, "LN+,L-": 0.1, "N+": 0.1}, "affine"),  # all equal
    ({"LN+": 0.7, "LN+,L-": 0.7, "N+": 0.7}, "affine"),
    ({"LN+": 0.0, "LN+,L-": 0.0, "N+": 0.0}, "scale"),    # all zero
])
def test_degenerate_flag(sim, kind):
    fit = closed_form_fit(sim, DATA, kind=kind)
    assert fit.degenerate
    assert math.isnan(fit.k) and math.isnan(fit.b) and math.isnan(fit.error)


def test_single_condition_affine_is_degenerate():
    assert closed_form_fit({"N+": 1.0}, {"N+": 44.0}).degenerate
    assert not closed_form_fit({"N+": 1.0}, {"N+": 44.0}, kind="scale").degenerate


def test_bp_structural_error():
    """§1.6: when LN+ = LN+,L- and N+ differs, affine E = ½(d̄_{LN+,L-} − d̄_{LN+})² = 149.614."""
    expected = 0.5 * (DATA["LN+,L-"] - DATA["LN+"]) ** 2
    assert abs(expected - 149.614) < 1e-3
    for shared, n_plus in [(0.3, 0.7), (1.2, 0.4), (-0.5, 2.0), (0.0123, 0.0124)]:
        fit = closed_form_fit({"LN+": shared, "LN+,L-": shared, "N+": n_plus}, DATA)
        assert not fit.degenerate
        assert math.isclose(fit.error, expected, rel_tol=1e-6)
        assert abs(fit.error - 149.614) < 1e-3
        assert math.isclose(fit.fitted["N+"], DATA["N+"], rel_tol=1e-6)
        assert fit.fitted["LN+"] == fit.fitted["LN+,L-"]


def test_fitted_sem_is_signed_k_times_mean_sem():
    sems = {"LN+": 0.01, "LN+,L-": 0.02, "N+": 0.03}
    fit = closed_form_fit(SIM, DATA, sim_sems=sems)
    assert math.isclose(fit.fitted_sem, fit.k * 0.02, rel_tol=REL)
    neg = closed_form_fit({c: -v for c, v in SIM.items()}, DATA, sim_sems=sems)
    assert neg.k < 0 and neg.fitted_sem < 0
    assert closed_form_fit(SIM, DATA).fitted_sem is None


def test_predict_per_seed():
    fit = closed_form_fit(SIM, DATA)
    seeds = np.array([0.95, 1.0, 1.05])
    np.testing.assert_allclose(fit.predict(seeds), fit.k * seeds + fit.b, rtol=1e-15)


def test_seed_stats():
    v = np.array([1.0, 2.0, 4.0, 7.0])
    mean, sem = seed_stats(v)
    assert mean == pytest.approx(3.5, rel=1e-15)
    assert sem == pytest.approx(np.std(v, ddof=1) / 2.0, rel=1e-15)
    assert seed_stats([5.0]) == (5.0, -1.0)
    with pytest.raises(ValueError):
        seed_stats([])
    with pytest.raises(ValueError):
        seed_stats(np.ones((2, 2)))


def test_xarray_inputs():
    rng = np.random.default_rng(0)
    groups = list(DATA)
    values = xr.DataArray(rng.normal(1.0, 0.05, size=(8, 3)), dims=("seed", "group"),
                          coords={"group": groups, "seed": np.arange(8)})
    means, sems = condition_stats(values, condition_dim="group")
    for g in groups:
        m, s = seed_stats(values.sel(group=g).values)
        assert means[g] == m and sems[g] == s
    data_da = xr.DataArray(list(DATA.values()), dims="group", coords={"group": groups})
    sim_da = xr.DataArray([means[g] for g in groups], dims="group", coords={"group": groups})
    a = closed_form_fit(sim_da, data_da, sim_sems=sems)
    b = closed_form_fit(means, DATA, sim_sems=sems)
    assert (a.k, a.b, a.error, a.fitted_sem) == (b.k, b.b, b.error, b.fitted_sem)
    with pytest.raises(ValueError, match="dims"):
        condition_stats(values.expand_dims(rule=["pc"]), condition_dim="group")
