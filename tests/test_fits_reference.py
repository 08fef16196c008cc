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


# --------------------------------------------------------------------------- §0.4.7 selection

from pcneuro.fits import (REVERSAL_REFERENCE_MAPS, apply_reversal_map, reversal_grid,  # noqa: E402
                          reversal_reference_fit, select_best)


def test_select_best_structural_bp_tie():
    """§1.6/§1.7.1: BP's E = 149.614 at every setting with LN+ = LN+,L- ≠ N+: a tie in project
    mode, broken by |k|·S̄, never by floating-point noise."""
    settings = [(0.3, 0.7), (1.2, 0.4), (-0.5, 2.0), (0.0123, 0.0124), (0.9, 0.1)]
    sems = [{"LN+": s, "LN+,L-": s, "N+": s} for s in (0.02, 0.01, 0.03, 0.0001, 0.05)]
    fits = [closed_form_fit({"LN+": a, "LN+,L-": a, "N+": c}, DATA, sim_sems=s)
            for (a, c), s in zip(settings, sems)]
    # a clearly worse setting at the front (not structural: N+ == LN+)
    worse = closed_form_fit({"LN+": 0.5, "LN+,L-": 0.6, "N+": 0.5}, DATA,
                            sim_sems={"LN+": 0.0, "LN+,L-": 0.0, "N+": 0.0})
    errors = [worse.error] + [f.error for f in fits]
    fsems = [worse.fitted_sem] + [f.fitted_sem for f in fits]
    assert worse.error > 149.7
    sel = select_best(errors, fsems)
    assert sel.is_tie and sel.ties == (1, 2, 3, 4, 5) and sel.mode == "project"
    key = [abs(s) for s in fsems]
    assert sel.index == 1 + int(np.argmin(key[1:])) and sel.remaining == (sel.index,)
    assert abs(sel.error - 149.614) < 1e-3
    compat = select_best(errors, fsems, compat=True)
    # compat: exact equality only; its tie set is a subset of the project's
    assert set(compat.ties) <= set(sel.ties) and compat.index in sel.ties
    assert errors[compat.index] == min(errors)


def test_select_best_signed_vs_abs_tie_break():
    errors = [2.0, 1.0, 1.0, 1.0]
    fsems = [-9.0, 0.5, -0.8, 0.6]
    project = select_best(errors, fsems)
    compat = select_best(errors, fsems, compat=True)
    assert project.index == 1 and project.ties == (1, 2, 3) and project.remaining == (1,)
    assert compat.index == 2 and compat.ties == (1, 2, 3) and compat.mode == "compat"


def test_select_best_remaining_ties_and_rtol():
    # equal E and equal |k|·S̄: reported as remaining, first in table order wins
    sel = select_best([3.0, 1.0, 1.0], [0.0, -0.4, 0.4])
    assert sel.index == 1 and sel.remaining == (1, 2) and sel.unresolved
    assert select_best([3.0, 1.0, 1.0], [0.0, -0.4, 0.4], compat=True).remaining == (1,)
    errors = [1.0 + 1e-12, 1.0, 1.0 + 1e-6]
    assert select_best(errors).ties == (0, 1) and select_best(errors).index == 0
    assert select_best(errors, rtol=0.0).ties == (1,)
    assert select_best(errors, compat=True).ties == (1,) and not select_best(errors, compat=True).is_tie
    assert select_best(errors, rtol=1e-5).ties == (0, 1, 2)
    # without SEMs, ties go to table order
    assert select_best([1.0, 1.0]).index == 0


def test_select_best_nan_never_wins():
    sel = select_best([np.nan, 2.0, 1.0, np.nan], [-100.0, 0.0, 1.0, -100.0])
    assert sel.index == 2 and sel.ties == (2,)
    # a NaN fitted SEM loses the tie-break in both modes
    assert select_best([1.0, 1.0], [np.nan, 5.0]).index == 1
    assert select_best([1.0, 1.0], [np.nan, 5.0], compat=True).index == 1
    with pytest.raises(ValueError, match="NaN"):
        select_best([np.nan, np.nan])
    with pytest.raises(ValueError, match="1-D"):
        select_best(np.ones((2, 2)))
    with pytest.raises(ValueError, match="shape"):
        select_best([1.0, 2.0], [1.0])


# --------------------------------------------------------------------------- §3.6 reversal grid

# §3.4 data and §3.5 published raw means, both in the cell order ps, ns, pw, nw
# (punish/stay, next/stay, punish/switch, next/switch).
REV_DATA = np.array([0.07656332326255083, -0.1794935997796775,
                     -0.05977541312190382, 0.030083598201063405])
REV_RAW = {"pc": np.array([0.0789, 0.0284, 0.0437, 0.0600]),
           "bp": np.array([0.0145, 0.0094, 0.0115, 0.0099])}


def test_reversal_grid_built_by_index():
    w, b = reversal_grid("pc")
    assert w.size == 21 and b.size == 20
    assert w[6] == 5.06 == 5.00 + 0.01 * 6 and w[0] == 5.0 and w[-1] == 5.2
    assert b[10] == -0.30 and b[0] == -0.40 and b[-1] == -0.21
    w, b = reversal_grid("BP")
    assert w.size == 40 and b.size == 20
    assert w[33] == 33.3 and w[-1] == 33.9 and b[9] == -0.41 and b[-1] == -0.31
    # every grid value is the double nearest its 2-decimal (w_BP: 1-decimal) value
    for rule, (wd, bd) in {"pc": (2, 2), "bp": (1, 2)}.items():
        w, b = reversal_grid(rule)
        assert all(round(v, wd) == v for v in w.tolist())
        assert all(round(v, bd) == v for v in b.tolist())
        wm, bm = REVERSAL_REFERENCE_MAPS[rule]
        assert wm in w.tolist() and bm in b.tolist()
    with pytest.raises(ValueError, match="rule"):
        reversal_grid("hebb")


@pytest.mark.parametrize("rule", ["pc", "bp"])
def test_reversal_fit_matches_brute_force(rule):
    rng = np.random.default_rng(11)
    v = REV_RAW[rule] + rng.normal(0, 0.002, 4)
    fit = reversal_reference_fit(v, REV_DATA, rule)
    w0, wstep, nw, b0, bstep, nb = {"pc": (5.00, 0.01, 21, -0.40, 0.01, 20),
                                    "bp": (30.0, 0.1, 40, -0.50, 0.01, 20)}[rule]
    best = None
    for i in range(nw):
        for j in range(nb):
            w, b = round(w0 + wstep * i, 2), round(b0 + bstep * j, 2)
            e = 0.5 * sum((w * vi + b - di) ** 2 for vi, di in zip(v, REV_DATA))
            if best is None or e < best[0]:
                best = (e, i, j, w, b)
    assert (fit.i, fit.j) == best[1:3] and fit.w == best[3] and fit.b == best[4]
    assert math.isclose(fit.error, best[0], rel_tol=1e-12)
    assert fit.errors.shape == (nw, nb) and fit.errors.min() == fit.error
    np.testing.assert_allclose(fit.fitted, fit.w * v + fit.b, rtol=1e-15)


def test_reversal_fit_reproduces_reference_maps():
    """§3.5/§3.6: the grid search on the published raw means gives the maps actually applied,
    and the fitted lines of §3.5 (PC stay ≈ +0.10 → −0.16, switch ≈ −0.08 → 0.00; BP stay
    ≈ +0.07 → −0.10, switch ≈ −0.03 → −0.08)."""
    for rule, expected in {"pc": [0.10, -0.16, -0.08, 0.00], "bp": [0.07, -0.10, -0.03, -0.08]}.items():
        fit = reversal_reference_fit(REV_RAW[rule], REV_DATA, rule)
        assert (fit.w, fit.b) == REVERSAL_REFERENCE_MAPS[rule]
        assert not fit.on_edge and fit.n_ties == 1
        np.testing.assert_allclose(fit.fitted, expected, atol=0.006)
        np.testing.assert_allclose(apply_reversal_map(REV_RAW[rule], rule), fit.fitted, rtol=1e-15)


def test_reversal_fit_edges_and_planted_map():
    v = REV_RAW["pc"]
    planted = reversal_reference_fit(v, 5.13 * v - 0.27, "pc")
    assert (planted.w, planted.b) == (5.13, -0.27) and planted.error < 1e-25
    assert not planted.on_edge and planted.edge == ()
    high = reversal_reference_fit(v, 9.0 * v + 0.5, "pc")
    assert high.on_edge and set(high.edge) == {"w_max", "b_max"}
    low = reversal_reference_fit(v, 5.1 * v - 0.9, "pc")
    assert "b_min" in low.edge and low.on_edge
    assert apply_reversal_map(2.0, "pc", maps={"pc": (planted.w, planted.b)}) == 5.13 * 2.0 - 0.27
    with pytest.raises(ValueError, match="4 cell means"):
        reversal_reference_fit(v[:3], REV_DATA[:3], "pc")
