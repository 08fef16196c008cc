"""Numerical core of pcneuro.fits (specs/behaviour.md §0.2, §0.4, §0.5): per-point read-out
(closed form and lmfit), AIC/BIC and degrees of freedom, seed/data bootstrap, profiles and
model comparison. Synthetic numbers only."""
import dataclasses
import doctest
import math

import numpy as np
import pytest
import xarray as xr

import pcneuro.fits as fits
from pcneuro.fits import (ObservedData, bootstrap_fits, bootstrap_indices, closed_form_fit,
                          compare_models, delta_error, fit_readout, profile, readout_closed_form,
                          readout_grid, seed_summary, select_best)

REL = 1e-9
FEAR_LABELS = ["LN+", "LN+,L-", "N+"]
# §1.4, 5 values per group
FEAR_Y = [47.24872978275533, 23.47713468720331, 19.880670399836205, 13.862975007958582,
          24.757350992262996, 49.84528803043753, 51.442164621276824, 40.05602559086313,
          46.52921815201096, 27.845251568225706, 51.77500851953603, 50.038818231666866,
          35.143724222268034, 42.84476774272263, 42.02041322905141]
FEAR = ObservedData.from_points(FEAR_Y, np.repeat([0, 1, 2], 5), FEAR_LABELS)


def _unequal():
    rng = np.random.default_rng(5)
    counts = [25, 23, 26, 22]
    cond = np.repeat(np.arange(4), counts)
    y = np.array([0.22, 0.18, 0.10, 0.05])[cond] + rng.normal(0, 0.09, cond.size)
    return ObservedData.from_points(y, cond, ["1+", "2+", "1-", "2-"])


UNEQUAL = _unequal()
# a clear, non-monotonic pattern (condition SE ≈ 0.01) for planted-best tests
_rng = np.random.default_rng(6)
_cond = np.repeat(np.arange(4), [20, 22, 21, 19])
CLEAR = ObservedData.from_points(np.array([0.40, 0.10, 0.30, 0.0])[_cond] + _rng.normal(0, 0.05, _cond.size),
                                 _cond, ["1+", "2+", "1-", "2-"])
CELLS = ObservedData.from_points([0.0766, -0.1795, -0.0598, 0.0301], [0, 1, 2, 3],
                                 ["ps", "ns", "pw", "nw"])
SIM_MEANS = {3: np.array([0.9731, 1.0123, 1.0187]),
             4: np.array([2.1e-4, 1.7e-4, 0.9e-4, 0.5e-4])}


def _lstsq_points(means, data, kind):
    """Independent check: ordinary least squares on the per-point design matrix."""
    x = np.asarray(means)[data.cond]
    a = np.column_stack([x, np.ones_like(x)]) if kind == "affine" else x[:, None]
    coef = np.linalg.lstsq(a, data.y, rcond=None)[0]
    k, b = coef[0], (coef[1] if kind == "affine" else 0.0)
    return k, b, float(np.sum(((k * x + b) - data.y) ** 2)) / data.scale ** 2


# --------------------------------------------------------------------------- ObservedData


def test_observed_data_summaries():
    d = UNEQUAL
    assert d.counts.tolist() == [25, 23, 26, 22] and d.n_points == 96 and d.n_conditions == 4
    for c in range(4):
        yc = d.y[d.cond == c]
        assert math.isclose(d.means[c], yc.mean(), rel_tol=1e-13)
        assert math.isclose(d.ss_within[c], ((yc - yc.mean()) ** 2).sum(), rel_tol=1e-12)
    pooled = np.sqrt(sum(np.var(d.y[d.cond == c], ddof=1) * (d.counts[c] - 1) for c in range(4)) / (96 - 4))
    assert math.isclose(d.scale, pooled, rel_tol=1e-12) and d.scaled
    assert not CELLS.scaled and CELLS.scale == 1.0
    with pytest.raises(ValueError):
        d.y[0] = 1.0  # read-only


def test_observed_data_errors():
    with pytest.raises(ValueError, match="'b' has no data"):
        ObservedData.from_points([1.0, 2.0], [0, 0], ["a", "b"])
    with pytest.raises(ValueError, match="not an index"):
        ObservedData.from_points([1.0, 2.0], [0, 2], ["a", "b"])
    with pytest.raises(ValueError, match="finite"):
        ObservedData.from_points([1.0, np.nan], [0, 1], ["a", "b"])
    with pytest.raises(ValueError, match="duplicate"):
        ObservedData.from_points([1.0, 2.0], [0, 1], ["a", "a"])
    with pytest.raises(ValueError, match="zero within-condition spread"):
        ObservedData.from_points([1.0, 1.0, 2.0], [0, 0, 1], ["a", "b"])


def test_observed_data_from_dataset():
    ds = xr.Dataset({"value": ("point", [1.0, 2.0, 4.0, 7.0, 5.0])},
                    coords={"at": ("point", ["p", "n", "p", "n", "p"]),
                            "choice": ("point", ["stay", "stay", "switch", "switch", "stay"]),
                            "subject": ("point", [1, 2, 3, 4, 5])},
                    attrs={"condition_dims": '["at", "choice"]'})
    labels = [("n", "switch"), ("p", "stay"), ("n", "stay"), ("p", "switch")]
    d = ObservedData.from_dataset(ds, labels)
    assert d.labels == tuple(labels)
    assert d.cond.tolist() == [1, 2, 3, 0, 1] and d.means.tolist() == [7.0, 3.0, 2.0, 4.0]
    # inferred condition dims (no attrs): the string coords other than subject
    bare = ds.copy()
    bare.attrs = {}
    assert ObservedData.from_dataset(bare, labels).cond.tolist() == d.cond.tolist()
    assert ObservedData.from_dataset(bare, labels, condition_dims=["at", "choice"]).labels == tuple(labels)
    with pytest.raises(ValueError, match=r"data label \('p', 'switch'\)"):
        ObservedData.from_dataset(ds, labels[:3])
    with pytest.raises(ValueError, match="has no data"):
        ObservedData.from_dataset(ds, labels + [("x", "stay")])
    one = xr.Dataset({"value": ("point", [1.0, 3.0, 2.0])}, coords={"group": ("point", ["a", "a", "b"])})
    d1 = ObservedData.from_dataset(one, ["b", "a"])
    assert d1.labels == ("b", "a") and d1.counts.tolist() == [1, 2]
    with pytest.raises(ValueError, match="variable"):
        ObservedData.from_dataset(one, ["a", "b"], variable="fear")


# --------------------------------------------------------------------------- read-out


@pytest.mark.parametrize("kind", ["affine", "scale"])
@pytest.mark.parametrize("which", ["equal", "unequal", "cells"])
def test_closed_form_matches_lmfit_and_lstsq(kind, which):
    data = {"equal": FEAR, "unequal": UNEQUAL, "cells": CELLS}[which]
    means = SIM_MEANS[data.n_conditions]
    k, b, chi2 = readout_closed_form(means, data, kind)
    k_ls, b_ls, chi2_ls = _lstsq_points(means, data, kind)
    assert math.isclose(k, k_ls, rel_tol=1e-8) and math.isclose(chi2, chi2_ls, rel_tol=1e-8)
    assert math.isclose(b, b_ls, rel_tol=1e-8, abs_tol=1e-12)
    # lmfit from the closed form and from a distant start land on the closed form
    for start in (None, (1.0, 0.0)):
        fit = fit_readout(means, data, kind, start=start)
        assert fit.success and fit.kind == kind
        assert math.isclose(fit.k, k, rel_tol=REL)
        assert math.isclose(fit.b, b, rel_tol=REL, abs_tol=1e-12 * abs(data.means).max())
        assert math.isclose(fit.chisqr, chi2, rel_tol=REL)
    np.testing.assert_allclose(fit.residuals, (k * means[data.cond] + b - data.y) / data.scale, rtol=1e-7)
    np.testing.assert_allclose(fit.fitted, fit.k * means + fit.b, rtol=1e-15)
    if kind == "scale":
        assert fit.b == 0.0 and math.isnan(fit.b_stderr) and math.isnan(fit.correl)
    else:
        assert np.isfinite(fit.b_stderr) and -1.0 <= fit.correl <= 1.0
    assert fit.k_stderr > 0


@pytest.mark.parametrize("kind", ["affine", "scale"])
def test_equal_counts_match_reference_closed_form(kind):
    """§0.4.4: with equal counts the per-point fit has the reference's k and b, and
    χ²·s² = n·E + SS_within."""
    means = SIM_MEANS[3]
    ref = closed_form_fit(dict(zip(FEAR_LABELS, means)), dict(zip(FEAR_LABELS, FEAR.means)), kind)
    k, b, chi2 = readout_closed_form(means, FEAR, kind)
    fit = fit_readout(means, FEAR, kind)
    for v in (k, fit.k):
        assert math.isclose(v, ref.k, rel_tol=REL)
    for v in (b, fit.b):
        assert math.isclose(v, ref.b, rel_tol=REL, abs_tol=1e-12)
    assert math.isclose(chi2 * FEAR.scale ** 2, 5 * ref.error + FEAR.ss_within.sum(), rel_tol=REL)


def test_closed_form_vectorised_and_degenerate():
    rng = np.random.default_rng(2)
    means = rng.normal(1.0, 0.1, size=(3, 5, 4))
    means[0, 0] = 0.7                       # all equal: affine degenerate
    means[1, 1] = 0.0                       # all zero: both degenerate
    means[2, 2, 1] = np.nan
    for kind in ("affine", "scale"):
        k, b, chi2 = readout_closed_form(means, UNEQUAL, kind)
        assert k.shape == (3, 5)
        for idx in np.ndindex(3, 5):
            if np.isnan(means[idx]).any() or (means[idx] == 0).all() or (
                    kind == "affine" and (means[idx] == means[idx][0]).all()):
                assert np.isnan(k[idx]) and np.isnan(b[idx]) and np.isnan(chi2[idx])
                continue
            k1, b1, c1 = _lstsq_points(means[idx], UNEQUAL, kind)
            assert math.isclose(k[idx], k1, rel_tol=1e-8) and math.isclose(chi2[idx], c1, rel_tol=1e-8)
    assert np.isfinite(readout_closed_form(means[0, 0], UNEQUAL, "scale")[0])
    with pytest.raises(ValueError, match="degenerate"):
        fit_readout(means[0, 0], UNEQUAL, "affine")
    with pytest.raises(ValueError, match="one per label"):
        readout_closed_form(means[..., :3], UNEQUAL)
    with pytest.raises(ValueError, match="kind"):
        readout_closed_form(means, UNEQUAL, "linear")


@pytest.mark.parametrize("kind", ["affine", "scale"])
def test_aic_bic_and_degrees_of_freedom(kind):
    means = SIM_MEANS[3]
    base = fit_readout(means, FEAR, kind)
    # n_hyper = 0: lmfit's own statistics
    assert base.n_readout == base.result.nvarys == (2 if kind == "affine" else 1)
    assert base.aic == pytest.approx(base.result.aic, rel=1e-12, abs=1e-12)
    assert base.bic == pytest.approx(base.result.bic, rel=1e-12, abs=1e-12)
    assert base.redchi == pytest.approx(base.result.redchi, rel=1e-12)
    assert base.chisqr == pytest.approx(base.result.chisqr, rel=1e-12)
    assert base.ndata == base.result.ndata == 15
    for n_hyper in (1, 3):
        f = fit_readout(means, FEAR, kind, n_hyper=n_hyper)
        assert f.nvarys_total == base.n_readout + n_hyper
        assert f.aic - base.aic == pytest.approx(2 * n_hyper, rel=1e-12)
        assert f.bic - base.bic == pytest.approx(math.log(15) * n_hyper, rel=1e-12)
        assert f.redchi == pytest.approx(f.chisqr / (15 - f.nvarys_total), rel=1e-12)
        assert f.dof_conditions == 3 - f.nvarys_total
        assert f.identified == (f.dof_conditions > 0)
    assert base.dof_conditions == 3 - base.n_readout and base.identified
    f = fit_readout(means, FEAR, "affine", n_hyper=1)
    assert f.dof_conditions == 0 and not f.identified and "NOT identified" in f.report()
    assert "AIC" in base.report() and "LN+,L-" in base.report()
    with pytest.raises(ValueError, match="n_hyper"):
        fit_readout(means, FEAR, kind, n_hyper=-1)


def test_cell_means_only_fit_is_flagged():
    fit = fit_readout(SIM_MEANS[4], CELLS, "affine")
    assert not fit.scaled and fit.scale == 1.0 and fit.ndata == 4
    assert "indicative" in fit.report()
    assert math.isclose(fit.chisqr, float(np.sum((fit.fitted - CELLS.y) ** 2)), rel_tol=1e-9)


def test_seed_summary_matches_seed_stats():
    rng = np.random.default_rng(3)
    sim = rng.normal(size=(2, 6, 3))
    sim[0, :5, 1] = np.nan          # one seed left: SEM sentinel -1
    sim[1, :, 2] = np.nan           # no seed: NaN
    sim[1, 2, 0] = np.nan
    means, sems, n = seed_summary(sim)
    for s in range(2):
        for c in range(3):
            v = sim[s, :, c][~np.isnan(sim[s, :, c])]
            if v.size == 0:
                assert np.isnan(means[s, c]) and np.isnan(sems[s, c]) and n[s, c] == 0
                continue
            m, e = fits.seed_stats(v)
            assert math.isclose(means[s, c], m, rel_tol=1e-13) and n[s, c] == v.size
            assert math.isclose(sems[s, c], e, rel_tol=1e-12)
    grid = readout_grid(sim, ObservedData.from_points([1.0, 2.0, 3.0, 5.0], [0, 1, 2, 2], "abc"))
    assert np.isnan(grid.chi2[1]) and np.isfinite(grid.chi2[0])
    assert math.isclose(grid.fitted_sem[0], grid.k[0] * sems[0].mean(), rel_tol=1e-13)


# --------------------------------------------------------------------------- bootstrap


def _planted(S=12, n_seeds=16, good=7, noise=0.02, seed=0):
    """S settings over CLEAR's 4 conditions; setting ``good`` is an affine map of the data's
    means plus seed noise, the others are random patterns."""
    rng = np.random.default_rng(seed)
    sim = rng.normal(1.0, 0.3, size=(S, 1, 4)) + rng.normal(0, noise, size=(S, n_seeds, 4))
    sim[good] = (CLEAR.means - 0.1) / 0.5 + rng.normal(0, noise, size=(n_seeds, 4))
    return sim


def test_bootstrap_indices():
    idx = bootstrap_indices(10, UNEQUAL, n_boot=30, seed=4)
    assert idx.seeds.shape == (30, 10) and idx.points.shape == (30, 96) and idx.data_resampled
    assert idx.seeds.min() >= 0 and idx.seeds.max() < 10
    assert np.array_equal(UNEQUAL.cond[idx.points], np.broadcast_to(UNEQUAL.cond, (30, 96)))
    assert not np.array_equal(idx.points[0], np.arange(96))
    again = bootstrap_indices(10, UNEQUAL, n_boot=30, seed=4)
    assert again.same_as(idx) and not bootstrap_indices(10, UNEQUAL, 30, seed=5).same_as(idx)
    cells = bootstrap_indices(10, CELLS, n_boot=30, seed=4)
    assert not cells.data_resampled and np.array_equal(cells.points, np.tile(np.arange(4), (30, 1)))
    assert np.array_equal(cells.seeds, idx.seeds)       # seeds drawn first, from the same stream
    seeds_only = bootstrap_indices(10, UNEQUAL, n_boot=30, seed=4, resample_data=False)
    assert not seeds_only.data_resampled and np.array_equal(seeds_only.points[3], np.arange(96))


def test_bootstrap_matches_loop():
    """The vectorised bootstrap equals a plain loop: nanmean over the resampled seeds, refit
    the resampled data, select_best with the resampled fitted SEMs."""
    rng = np.random.default_rng(8)
    S, n_seeds, B = 6, 7, 25
    sim = rng.normal(1.0, 0.4, size=(S, n_seeds, 4))
    sim[2, :, 0] = np.nan
    sim[1, :3, 3] = np.nan
    idx = bootstrap_indices(n_seeds, UNEQUAL, B, seed=1)
    res = bootstrap_fits(sim, UNEQUAL, "affine", idx)
    for r in range(B):
        g = readout_grid(sim[:, idx.seeds[r], :],
                         ObservedData.from_points(UNEQUAL.y[idx.points[r]], UNEQUAL.cond, UNEQUAL.labels),
                         "affine")
        dr = ObservedData.from_points(UNEQUAL.y[idx.points[r]], UNEQUAL.cond, UNEQUAL.labels)
        chi2 = g.chi2 * dr.scale ** 2 / UNEQUAL.scale ** 2       # the bootstrap keeps s fixed
        np.testing.assert_allclose(res.chi2_all[r], chi2, rtol=1e-10)
        sel = select_best(chi2, g.fitted_sem)
        assert res.best[r] == sel.index and res.n_ties[r] == len(sel.ties)
        assert math.isclose(res.k[r], g.k[sel.index], rel_tol=1e-10)
        np.testing.assert_allclose(res.fitted[r], g.fitted(sel.index), rtol=1e-10)
    assert not np.any(res.best == 2)                      # NaN condition: never best


def test_bootstrap_identical_seeds_change_nothing():
    sim = np.repeat(_planted(n_seeds=1, noise=0.0), 24, axis=1)
    idx = bootstrap_indices(24, CLEAR, 40, seed=2, resample_data=False)
    res = bootstrap_fits(sim, CLEAR, "affine", idx)
    pt = res.point
    assert np.all(res.best == pt.index) and pt.index == 7
    np.testing.assert_allclose(res.chi2_all, np.broadcast_to(pt.chi2_all, res.chi2_all.shape), rtol=1e-12)
    np.testing.assert_allclose(res.k, pt.k, rtol=1e-12)
    # with data resampling, the seed draws still do not matter
    idx_d = bootstrap_indices(24, CLEAR, 40, seed=2)
    other = dataclasses.replace(idx_d, seeds=np.full_like(idx_d.seeds, 3))
    a = bootstrap_fits(sim, CLEAR, "affine", idx_d)
    b = bootstrap_fits(sim, CLEAR, "affine", other)
    assert np.array_equal(a.best, b.best)
    np.testing.assert_allclose(a.chi2_best, b.chi2_best, rtol=1e-12)
    assert a.chi2_best.std() > 0                          # the data resampling does vary


def test_bootstrap_planted_best_and_confidence_set():
    sim = _planted(S=30, n_seeds=20, good=7, noise=0.05)
    idx = bootstrap_indices(20, CLEAR, 200, seed=0)
    res = bootstrap_fits(sim, CLEAR, "affine", idx)
    freq = res.argmin_frequency
    assert res.point.index == 7 and freq[7] >= 0.9 and freq.sum() == pytest.approx(1.0)
    assert math.isclose(res.point.k, 0.5, rel_tol=0.1)
    for level in (0.5, 0.68, 0.95, 0.99):
        cs = res.confidence_set(level)
        assert cs[0] == 7
        assert freq[list(cs)].sum() >= level - 1e-12
        assert freq[list(cs[:-1])].sum() < level          # smallest such set
        assert list(freq[list(cs)]) == sorted(freq[list(cs)], reverse=True)
    lo, hi = res.ci("k", 0.95)
    assert lo <= res.point.k <= hi
    lo68, hi68 = res.ci("k", 0.68)
    assert lo <= lo68 <= hi68 <= hi
    assert (lo, hi) == tuple(np.percentile(res.k, [2.5, 97.5]))
    flo, fhi = res.ci("fitted")
    assert flo.shape == (4,) and np.all(flo <= fhi)


def test_bootstrap_confidence_set_with_ambiguity():
    rng = np.random.default_rng(9)
    base = _planted(S=3, n_seeds=1, noise=0.0, good=0)[0, 0]
    sim = np.stack([base + rng.normal(0, 0.3, size=(12, 4)) for _ in range(4)])  # 4 similar settings
    res = bootstrap_fits(sim, CLEAR, "affine", bootstrap_indices(12, CLEAR, 100, seed=3))
    cs = res.confidence_set(0.95)
    assert len(cs) >= 2 and res.argmin_frequency[list(cs)].sum() >= 0.95


def test_bootstrap_nan_setting_never_best():
    sim = _planted(S=5, n_seeds=10, good=2, noise=0.01)
    sim[2, :, 1] = np.nan                 # the planted best lacks a condition entirely
    sim[3, :4, 0] = np.nan                # partial NaN: nanmean over the other seeds
    res = bootstrap_fits(sim, CLEAR, "affine", bootstrap_indices(10, CLEAR, 60, seed=0))
    assert res.point.index != 2 and np.isnan(res.point.chi2_all[2])
    assert np.all(np.isnan(res.chi2_all[:, 2])) and not np.any(res.best == 2)
    assert np.all(np.isfinite(res.chi2_all[:, 3]) | np.all(np.isnan(sim[3, :, 0])))
    # every setting NaN in some resample: no best there, reported as -1 / NaN
    only = sim[[2]]
    res1 = bootstrap_fits(only, CLEAR, "affine", bootstrap_indices(10, CLEAR, 5, seed=0))
    assert np.all(res1.best == -1) and np.all(np.isnan(res1.k)) and res1.point.index == -1
    assert res1.argmin_frequency.sum() == 0.0


def test_delta_error_sign_and_checks():
    good = _planted(S=10, n_seeds=16, good=4, noise=0.02, seed=1)
    bad = _planted(S=10, n_seeds=16, good=4, noise=0.02, seed=1)
    bad[4] = bad[5]                       # BP-like rule: no setting reproduces the pattern
    idx = bootstrap_indices(16, CLEAR, 100, seed=7)
    a = bootstrap_fits(good, CLEAR, "affine", idx)
    b = bootstrap_fits(bad, CLEAR, "affine", idx)
    d = delta_error(a, b)
    assert d.n_valid == 100 and d.frac_negative == 1.0 and d.ci95[1] < 0 and d.point < 0
    assert d.ci95[0] <= d.ci68[0] <= d.ci68[1] <= d.ci95[1]
    np.testing.assert_array_equal(d.delta, a.chi2_best - b.chi2_best)
    assert delta_error(b, a).frac_negative == 0.0
    with pytest.raises(ValueError, match="same indices"):
        delta_error(a, bootstrap_fits(bad, CLEAR, "affine", bootstrap_indices(16, CLEAR, 100, seed=8)))
    shifted = ObservedData.from_points(CLEAR.y + 1.0, CLEAR.cond, CLEAR.labels)
    with pytest.raises(ValueError, match="identical data"):
        delta_error(a, bootstrap_fits(bad, shifted, "affine", idx))
    with pytest.raises(ValueError, match="drawn for"):
        bootstrap_fits(bad[:, :8], CLEAR, "affine", idx)


# --------------------------------------------------------------------------- selection


def test_profile_matches_brute_force():
    rng = np.random.default_rng(4)
    axes = {"lr_in": [1.0, 0.1, 0.01], "lr_out": [0.1, 0.01], "init_sd": [0.1, 0.01, 0.001, 1e-4]}
    shape = (3, 2, 4)
    e = rng.uniform(size=shape)
    e[1, :, :] = np.nan                   # lr_in = 0.1 never gives an event
    e[0, 1, 2] = np.nan
    prof = profile(e, axes)
    flat = profile(e.ravel(), axes, shape=shape)
    for ax, name in enumerate(axes):
        values, best, arg = prof[name]
        assert list(values) == axes[name]
        np.testing.assert_array_equal(flat[name].argmin, arg)
        for v in range(shape[ax]):
            sl = np.take(e, v, axis=ax)
            if np.all(np.isnan(sl)):
                assert np.isnan(best[v]) and arg[v] == -1
                continue
            assert best[v] == np.nanmin(sl)
            assert e.ravel()[arg[v]] == best[v]
            assert np.unravel_index(arg[v], shape)[ax] == v
    # an unidentifiable axis: identical errors along it give a flat profile
    flat_e = np.broadcast_to(rng.uniform(size=(3, 1)), (3, 5))
    p = profile(flat_e, {"a": range(3), "b": range(5)})
    assert np.all(p["b"].best == p["b"].best[0])
    with pytest.raises(ValueError, match="shape"):
        profile(e, {"lr_in": [1, 2], "lr_out": [1, 2], "init_sd": [1, 2, 3, 4]})


def test_compare_models():
    a = fit_readout(SIM_MEANS[3], FEAR, "affine", n_hyper=1)
    b = fit_readout(np.array([0.9, 0.9, 1.0]), FEAR, "affine", n_hyper=2)
    cmp = compare_models(a, b)
    assert cmp.delta_aic == a.aic - b.aic and cmp.delta_bic == a.bic - b.bic
    assert sum(cmp.aic_weights) == pytest.approx(1.0) and sum(cmp.bic_weights) == pytest.approx(1.0)
    assert (cmp.aic_weights[0] > 0.5) == (cmp.delta_aic < 0)
    assert cmp.aic_weights[0] / cmp.aic_weights[1] == pytest.approx(math.exp(-cmp.delta_aic / 2))
    assert cmp.nvarys == (3, 4) and not cmp.indicative and "ΔAIC" in cmp.report()
    other = ObservedData.from_points(np.array(FEAR_Y) + 0.5, FEAR.cond, FEAR_LABELS)
    with pytest.raises(ValueError, match="different data"):
        compare_models(a, fit_readout(SIM_MEANS[3], other, "affine"))
    with pytest.raises(ValueError, match="numbers of data points"):
        compare_models(a, fit_readout(SIM_MEANS[4], UNEQUAL, "affine"))
    cells = compare_models(fit_readout(SIM_MEANS[4], CELLS, "scale"), fit_readout(SIM_MEANS[4], CELLS))
    assert cells.indicative


@pytest.mark.parametrize("module", ["readout", "reference", "bootstrap", "selection"])
def test_module_doctests(module):
    import importlib
    mod = importlib.import_module(f"pcneuro.fits.{module}")
    failed, attempted = doctest.testmod(mod, verbose=False)
    assert attempted > 0 and failed == 0
