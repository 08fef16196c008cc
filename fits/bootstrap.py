"""Seed (and data) bootstrap of the grid read-out fit (specs/behaviour.md §0.2, §0.5).

A fit picks, over a table of S simulated settings, the setting whose seed means best fit the
recorded data, then reads out k, b and fitted values there. Both the seeds and the data points
are samples, so the bootstrap resamples both and **re-selects** the best setting each time:

1. :func:`bootstrap_indices` draws, once, seed resamples [n_boot, n_seeds] (with replacement)
   and data-point resamples [n_boot, N] (with replacement within each condition). Use the same
   indices for every rule: seeds are paired across rules by design, and ΔE needs the same data.
2. :func:`bootstrap_fits` recomputes, per resample, every setting's seed means (NaN-aware), the
   resampled data's condition means, the closed-form read-out (:func:`readout_closed_form`'s
   formula) at every setting, and the best setting by the rule of :func:`select_best`.
3. :class:`BootstrapResult` gives percentile CIs (68 % to compare with figures, 95 % for claims,
   §0.2), the frequency with which each setting is best and a confidence set of settings;
   :func:`delta_error` the per-resample ΔE between two rules.

The residual scale s is held at the full-sample pooled SD in every resample (a unit of the
data, not a fitted parameter), so χ² stays comparable across resamples and rules.

Vectorised: seed resamples are multiplicity weights, so every setting's resampled means are one
matrix product ([n_boot, n_seeds] @ [n_seeds, S·C]).

>>> import numpy as np
>>> from pcneuro.fits import ObservedData
>>> data = ObservedData.from_points([1.0, 2.0, 4.0, 5.0], [0, 0, 1, 1], ["a", "b"])
>>> sim = np.array([[[0.0, 1.0]] * 3, [[0.0, -1.0]] * 3])   # S=2 settings, 3 seeds, C=2
>>> idx = bootstrap_indices(3, data, n_boot=50, seed=0)
>>> res = bootstrap_fits(sim, data, "affine", idx)
>>> res.point.index, res.argmin_frequency.tolist()
(0, [1.0, 0.0])
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .readout import ObservedData, _check_kind, _closed_form, readout_grid
from .reference import _select_rows, select_best

__all__ = ["BootstrapIndices", "BootstrapResult", "PointEstimate", "DeltaError",
           "bootstrap_indices", "bootstrap_fits", "delta_error", "percentile_ci"]


@dataclass(frozen=True, eq=False)
class BootstrapIndices:
    """Resampling indices shared by every rule (:func:`bootstrap_indices`).

    ``seeds`` [n_boot, n_seeds]: positions along the seed axis; ``points`` [n_boot, N]:
    positions into the data points, each drawn within its own condition (the identity where a
    condition has one point, or everywhere when ``data_resampled`` is False).
    """

    seeds: np.ndarray
    points: np.ndarray
    n_seeds: int
    n_points: int
    seed: int
    data_resampled: bool

    @property
    def n_boot(self) -> int:
        return int(self.seeds.shape[0])

    def same_as(self, other: "BootstrapIndices") -> bool:
        """True when both draw exactly the same resamples."""
        return self is other or (np.array_equal(self.seeds, other.seeds)
                                 and np.array_equal(self.points, other.points))


def bootstrap_indices(n_seeds: int, data: ObservedData, n_boot: int = 200, seed: int = 0,
                      resample_data: bool = True) -> BootstrapIndices:
    """Draw seed and data-point resamples from ``numpy.random.default_rng(seed)`` (§0.5).

    Seeds: ``rng.integers(0, n_seeds, (n_boot, n_seeds))``. Data: then, for each condition in
    label order with n_c ≥ 2, ``rng.integers(0, n_c, (n_boot, n_c))`` picks among its points;
    conditions with one point keep it (so cell-means-only data are never resampled).
    ``resample_data=False``: seed bootstrap only (points are the identity).
    """
    for name, v, lo in (("n_seeds", n_seeds, 1), ("n_boot", n_boot, 1)):
        if not (isinstance(v, (int, np.integer)) and v >= lo):
            raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
    rng = np.random.default_rng(seed)
    seeds = rng.integers(0, n_seeds, size=(n_boot, n_seeds))
    N = data.n_points
    points = np.broadcast_to(np.arange(N), (n_boot, N)).copy()
    resampled = False
    if resample_data:
        for c in range(data.n_conditions):
            members = np.flatnonzero(data.cond == c)
            if members.size >= 2:
                points[:, members] = members[rng.integers(0, members.size, size=(n_boot, members.size))]
                resampled = True
    seeds.setflags(write=False)
    points.setflags(write=False)
    return BootstrapIndices(seeds=seeds, points=points, n_seeds=int(n_seeds), n_points=N,
                            seed=seed, data_resampled=resampled)


def percentile_ci(values, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over axis 0 (resamples), NaN-aware: ``(lo, hi)`` at
    ``(1 − level)/2`` and ``(1 + level)/2``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    v = np.asarray(values, dtype=np.float64)
    q = [50.0 * (1.0 - level), 50.0 * (1.0 + level)]
    if v.size and np.all(np.isnan(v)):
        nan = np.full(v.shape[1:], np.nan)
        return nan, nan.copy()
    lo, hi = np.nanpercentile(v, q, axis=0)
    return lo, hi


@dataclass(frozen=True, eq=False)
class PointEstimate:
    """The full-sample fit (all seeds, the data as recorded), selected by the same rule.

    ``index`` (setting), ``ties`` and ``remaining`` as in :class:`pcneuro.fits.Selection`;
    ``chi2``, ``k``, ``b``, ``fitted`` [C] at ``index``; ``chi2_all`` [S] at every setting.
    """

    index: int
    ties: tuple
    remaining: tuple
    chi2: float
    k: float
    b: float
    fitted: np.ndarray
    chi2_all: np.ndarray


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Per-resample best settings and read-outs (:func:`bootstrap_fits`).

    Arrays over resamples: ``best`` [n_boot] (setting index, −1 where every setting is NaN),
    ``chi2_best``, ``k``, ``b`` [n_boot], ``fitted`` [n_boot, C] (k·m̄_c + b at the best),
    ``n_ties`` [n_boot] (settings tied on χ² with the best, itself included), ``chi2_all``
    [n_boot, S]. ``point``: the full-sample :class:`PointEstimate`.
    """

    kind: str
    n_settings: int
    labels: tuple
    best: np.ndarray
    chi2_best: np.ndarray
    k: np.ndarray
    b: np.ndarray
    fitted: np.ndarray
    n_ties: np.ndarray
    chi2_all: np.ndarray = field(repr=False)
    point: PointEstimate = field(repr=False, default=None)
    indices: BootstrapIndices = field(repr=False, default=None)
    data: ObservedData = field(repr=False, default=None)
    compat: bool = False
    rtol: float = 1e-9

    @property
    def n_boot(self) -> int:
        return int(self.best.size)

    @property
    def argmin_frequency(self) -> np.ndarray:
        """[S] fraction of resamples in which each setting is the best (resamples where every
        setting is NaN count for none, so the fractions may sum to < 1)."""
        valid = self.best[self.best >= 0]
        return np.bincount(valid, minlength=self.n_settings) / self.n_boot

    @property
    def tie_fraction(self) -> float:
        """Fraction of resamples whose best was tied on χ² with another setting."""
        return float(np.mean(self.n_ties > 1))

    def confidence_set(self, level: float = 0.95) -> tuple:
        """The smallest set of settings that holds the bootstrap best in ≥ ``level`` of the
        resamples, most frequent first (equal frequencies in table order). If the settings
        that are ever best do not reach ``level`` (NaN resamples), all of them are returned."""
        if not 0.0 < level <= 1.0:
            raise ValueError(f"level must be in (0, 1], got {level!r}")
        counts = np.bincount(self.best[self.best >= 0], minlength=self.n_settings)
        order = np.argsort(-counts, kind="stable")
        need = math.ceil(level * self.n_boot - 1e-9)
        cum = np.cumsum(counts[order])
        reached = np.flatnonzero(cum >= need)
        size = int(reached[0]) + 1 if reached.size else int(np.count_nonzero(counts))
        return tuple(int(i) for i in order[:size])

    def ci(self, values="chi2_best", level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """Percentile interval over resamples of ``values``: an array [n_boot, ...] (e.g. the
        hyperparameter values of ``best``) or the name of an attribute (``"k"``, ``"b"``,
        ``"chi2_best"``, ``"fitted"``). Use level 0.68 to compare with figures, 0.95 for claims."""
        if isinstance(values, str):
            if values not in ("chi2_best", "k", "b", "fitted"):
                raise ValueError(f"unknown bootstrap quantity {values!r}; use chi2_best, k, b or fitted")
            values = getattr(self, values)
        v = np.asarray(values, dtype=np.float64)
        if v.ndim == 0 or v.shape[0] != self.n_boot:
            raise ValueError(f"values must have {self.n_boot} resamples along axis 0, got shape {v.shape}")
        return percentile_ci(v, level)


def bootstrap_fits(sim, data: ObservedData, kind: Literal["affine", "scale"],
                   indices: BootstrapIndices, compat: bool = False,
                   rtol: float = 1e-9) -> BootstrapResult:
    """Refit every resample of ``indices`` over all settings (§0.5 seed and data bootstrap).

    ``sim`` [S, n_seeds, C]: per-seed values of the S settings (NaN: a seed without an event in
    that cell, skipped in the seed mean). Per resample: seed means over the resampled seeds,
    the resampled data's condition means, the closed-form read-out χ², k, b at every setting,
    and the best setting re-selected by :func:`select_best`'s rule (``compat``, ``rtol``; the
    tie-break uses the resampled fitted SEM k·S̄); a setting with a NaN condition mean never
    wins. Also computes the full-sample :class:`PointEstimate`.
    """
    _check_kind(kind)
    x = np.asarray(sim, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"sim must be [S, n_seeds, C], got shape {x.shape}")
    S, n_seeds, C = x.shape
    if C != data.n_conditions:
        raise ValueError(f"sim has {C} conditions, data has {data.n_conditions} labels")
    if n_seeds != indices.n_seeds or data.n_points != indices.n_points:
        raise ValueError(f"indices were drawn for {indices.n_seeds} seeds and {indices.n_points} "
                         f"points, got {n_seeds} seeds and {data.n_points} points")
    B = indices.n_boot

    # Full-sample point estimate (same selection rule).
    grid = readout_grid(x, data, kind)
    finite = np.isfinite(grid.chi2)
    if finite.any():
        sel = select_best(grid.chi2, grid.fitted_sem, compat=compat, rtol=rtol)
        i = sel.index
        point = PointEstimate(index=i, ties=sel.ties, remaining=sel.remaining,
                              chi2=float(grid.chi2[i]), k=float(grid.k[i]), b=float(grid.b[i]),
                              fitted=grid.fitted(i), chi2_all=grid.chi2)
    else:
        point = PointEstimate(index=-1, ties=(), remaining=(), chi2=math.nan, k=math.nan,
                              b=math.nan, fitted=np.full(C, np.nan), chi2_all=grid.chi2)

    # Seed resamples as multiplicity weights: Wt[r, j] = times seed j is drawn in resample r.
    flat = (np.arange(B)[:, None] * n_seeds + indices.seeds).ravel()
    Wt = np.bincount(flat, minlength=B * n_seeds).reshape(B, n_seeds).astype(np.float64)
    ok = ~np.isnan(x)
    centre = np.where(np.isnan(grid.means), 0.0, grid.means)            # [S, C], for accuracy
    x0 = np.where(ok, x - centre[:, None, :], 0.0)                      # [S, n_seeds, C]
    to_mat = lambda a: a.transpose(1, 0, 2).reshape(n_seeds, S * C)      # noqa: E731
    n = (Wt @ to_mat(ok.astype(np.float64))).reshape(B, S, C)
    s1 = (Wt @ to_mat(x0)).reshape(B, S, C)
    s2 = (Wt @ to_mat(x0 * x0)).reshape(B, S, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        d = s1 / n
        means = centre + d                                              # NaN where n = 0
        var = np.maximum(s2 - s1 * d, 0.0) / (n - 1)
        sems = np.sqrt(var / n)
    sems = np.where(n == 1, -1.0, sems)

    # Resampled data summaries, then the closed form at every (resample, setting).
    ybar, ss = data.resampled_summaries(indices.points)                 # [B, C], [B]
    k, b, chi2 = _closed_form(means, data.counts, ybar[:, None, :], ss[:, None], data.scale, kind)
    with np.errstate(invalid="ignore"):
        fitted_sem = k * sems.mean(axis=-1)

    best, ties, _ = _select_rows(chi2, fitted_sem, compat, rtol)
    ok_row = best >= 0
    at = np.where(ok_row, best, 0)
    rows = np.arange(B)
    nan_if = lambda a: np.where(ok_row, a, np.nan)                       # noqa: E731
    k_best, b_best = nan_if(k[rows, at]), nan_if(b[rows, at])
    fitted = k_best[:, None] * means[rows, at] + b_best[:, None]
    for a in (best, k_best, b_best, fitted, chi2):
        a.setflags(write=False)
    return BootstrapResult(
        kind=kind, n_settings=S, labels=data.labels, best=best,
        chi2_best=nan_if(chi2[rows, at]), k=k_best, b=b_best, fitted=fitted,
        n_ties=ties.sum(axis=1), chi2_all=chi2, point=point, indices=indices, data=data,
        compat=compat, rtol=rtol)


@dataclass(frozen=True, eq=False)
class DeltaError:
    """Per-resample ΔE = χ²_best(a) − χ²_best(b) (:func:`delta_error`); negative favours a.

    ``delta`` [n_boot]; ``point``: the full-sample ΔE; ``ci68``, ``ci95``: percentile
    intervals; ``frac_negative``: fraction of (valid) resamples with ΔE < 0; ``n_valid``:
    resamples where both rules have a best setting.
    """

    delta: np.ndarray
    point: float
    ci68: tuple
    ci95: tuple
    frac_negative: float
    n_valid: int

    def ci(self, level: float = 0.95) -> tuple[float, float]:
        lo, hi = percentile_ci(self.delta, level)
        return float(lo), float(hi)


def delta_error(boot_a: BootstrapResult, boot_b: BootstrapResult) -> DeltaError:
    """Bootstrap distribution of ΔE between two rules fitted to the same data with the same
    resamples (checked: identical indices and data, else ``ValueError``)."""
    if not boot_a.indices.same_as(boot_b.indices):
        raise ValueError("delta_error needs both bootstraps drawn with the same indices "
                         "(use one bootstrap_indices(...) for both rules)")
    da, db = boot_a.data, boot_b.data
    if not (da is db or (np.array_equal(da.y, db.y) and np.array_equal(da.cond, db.cond)
                         and da.scale == db.scale)):
        raise ValueError("delta_error needs both bootstraps fitted to identical data (y, cond, scale)")
    delta = boot_a.chi2_best - boot_b.chi2_best
    valid = ~np.isnan(delta)
    n_valid = int(valid.sum())
    lo68, hi68 = percentile_ci(delta, 0.68)
    lo95, hi95 = percentile_ci(delta, 0.95)
    frac = float(np.mean(delta[valid] < 0.0)) if n_valid else math.nan
    delta.setflags(write=False)
    return DeltaError(delta=delta, point=boot_a.point.chi2 - boot_b.point.chi2,
                      ci68=(float(lo68), float(hi68)), ci95=(float(lo95), float(hi95)),
                      frac_negative=frac, n_valid=n_valid)
