"""Fitting simulated behaviour to recorded behaviour, one learning rule at a time (behaviour spec §0.4-0.5).

The unit of work is a :class:`Candidates` table: for one rule, S candidate settings of the
searched hyperparameters and the per-seed simulated measure at each, ``values[S, seed, C]`` over
the C conditions the data has. :func:`analyse_rule` fits it:

* the project's fit (§0.5): at every candidate the linear read-out (``k·m + b`` or ``k·m``) of the
  seed means, with residuals per recorded data point scaled by the pooled within-condition SD;
  the best candidate is refitted with lmfit (standard errors, correlations, χ², AIC and BIC counting
  every varied parameter);
* a seed bootstrap (seeds and data points resampled, the best candidate re-selected in every
  resample) for confidence intervals and a confidence set of candidates;
* the reference's own fit as the baseline: the §0.4 closed form on seed means with its best-setting
  rule (ties reported as ties), or for reversal learning the §3.6 grid search on pooled means.

Results datasets are the interface: :func:`candidates_from_results` reads the grid of a results
file, :func:`candidates_from_arrays` the arrays of :func:`pcneuro.runner.simulate_points`.
"""
from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import xarray as xr

from .bootstrap import BootstrapResult, bootstrap_fits
from .readout import ObservedData, ReadoutFit, fit_readout, readout_grid
from .reference import closed_form_fit, reversal_reference_fit, select_best


@dataclass
class Candidates:
    """Per-seed simulated values of one rule at S candidate settings.

    ``settings``: the searched hyperparameters of each candidate; ``values`` [S, n_seeds, C] in the
    order of the data's condition labels; ``counts`` the same shape (events behind each value) or
    None; ``stage``: where each candidate came from (``grid``, ``refine``, ``confirm``)."""

    rule: str
    settings: List[Dict[str, Any]]
    values: np.ndarray
    seeds: Tuple[int, ...]
    stage: List[str]
    counts: Optional[np.ndarray] = None
    diverged: np.ndarray = field(init=False, repr=False)  # [S] a seed diverged at this setting

    def __post_init__(self):
        if self.values.ndim != 3 or self.values.shape[0] != len(self.settings):
            raise ValueError(f"values must be [S={len(self.settings)}, seeds, conditions], got {self.values.shape}")
        if self.values.shape[1] != len(self.seeds):
            raise ValueError(f"values have {self.values.shape[1]} seeds, {len(self.seeds)} seed ids given")
        # A non-finite value is a diverged run, unless it is an empty cell (count 0). A setting with a
        # diverged seed cannot be fitted on the seeds that survived (that would favour fragile
        # settings): all its values become NaN, so it never wins a fit or a bootstrap resample.
        bad = ~np.isfinite(self.values)
        if self.counts is not None:
            bad &= self.counts > 0
        self.diverged = bad.any(axis=(1, 2))
        if self.diverged.any():
            self.values = np.where(self.diverged[:, None, None], np.nan, self.values)

    @property
    def n(self) -> int:
        return len(self.settings)

    def concat(self, other: "Candidates") -> "Candidates":
        if other.seeds != self.seeds or other.rule != self.rule:
            raise ValueError("candidates of different rules or seed sets cannot be pooled")
        counts = None
        if self.counts is not None and other.counts is not None:
            counts = np.concatenate([self.counts, other.counts])
        return Candidates(self.rule, self.settings + other.settings, np.concatenate([self.values, other.values]),
                          self.seeds, self.stage + other.stage, counts)


# -- reading simulations ---------------------------------------------------------------------------
def label_of(values: Sequence[Any]):
    """A condition label: the value for one condition dim, the tuple of values for several."""
    values = tuple(str(v) for v in values)
    return values[0] if len(values) == 1 else values


def label_text(label) -> str:
    return label if isinstance(label, str) else ", ".join(label)


def labels_from_coords(coords: Mapping[str, Sequence[Any]], conditions: Sequence[str]) -> List[Any]:
    """Every condition label of ``coords`` (labels per condition dim), in coordinate order."""
    return [label_of(v) for v in itertools.product(*[[str(x) for x in coords[d]] for d in conditions])]


def simulation_labels(da: xr.DataArray, conditions: Sequence[str]) -> List[Any]:
    """Every condition label the simulation has, in its coordinate order."""
    missing = [d for d in conditions if d not in da.dims]
    if missing:
        raise ValueError(f"the simulated measure has no condition dim(s) {missing} (dims: {list(da.dims)})")
    return labels_from_coords({d: da[d].values for d in conditions}, conditions)


def per_seed_values(da: xr.DataArray, conditions: Sequence[str], labels: Sequence[Any],
                    lead: Sequence[str]) -> np.ndarray:
    """``da`` as an array [*lead, seed, C], one column per label (in ``labels`` order)."""
    columns = []
    for label in labels:
        parts = (label,) if isinstance(label, str) else tuple(label)
        sel = {d: _coord_value(da, d, v) for d, v in zip(conditions, parts)}
        columns.append(da.sel(sel).transpose(*lead, "seed").values)
    return np.stack(columns, axis=-1).astype(np.float64)


def _coord_value(da: xr.DataArray, dim: str, text: str):
    for v in da[dim].values:
        if str(v) == text:
            return v
    raise KeyError(f"{dim}={text!r} not in the simulation")


def _measure_arrays(ds: xr.Dataset, spec, labels, lead) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    da = ds[spec.measure].isel({k: v for k, v in spec.isel.items() if k in ds[spec.measure].dims})
    values = per_seed_values(da, spec.conditions, labels, lead)
    counts = None
    if spec.count is not None:
        c = ds[spec.count].isel({k: v for k, v in spec.isel.items() if k in ds[spec.count].dims})
        counts = per_seed_values(c.broadcast_like(da), spec.conditions, labels, lead)
    return values, counts


def candidates_from_results(ds: xr.Dataset, spec, labels, grid_axes: Sequence[str]) -> Dict[str, Candidates]:
    """One :class:`Candidates` per rule from a results file's grid (grid points in C order)."""
    out = {}
    lead = list(grid_axes)
    axes_values = [list(ds[a].values) for a in lead]
    points = [dict(zip(lead, (v.item() if hasattr(v, "item") else v for v in combo)))
              for combo in itertools.product(*axes_values)] if lead else [{}]
    seeds = tuple(int(s) for s in ds["seed"].values)
    for rule in ds["rule"].values:
        sub = ds.sel(rule=rule)
        values, counts = _measure_arrays(sub, spec, labels, lead)
        S = len(points)
        values = values.reshape(S, len(seeds), len(labels))
        counts = None if counts is None else counts.reshape(S, len(seeds), len(labels))
        out[str(rule)] = Candidates(str(rule), points, values, seeds, ["grid"] * S, counts)
    return out


def candidates_from_arrays(arrays: Mapping[str, np.ndarray], coords: Mapping[str, Sequence[Any]], measures,
                           spec, labels, rule: str, points: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                           stage: str) -> Candidates:
    """A :class:`Candidates` table from :func:`pcneuro.runner.simulate_points` output."""
    data_vars = {}
    for name in {spec.measure, *([spec.count] if spec.count else [])}:
        dims = ("point", "seed", *measures[name].dims)
        data_vars[name] = (dims, arrays[name])
    ds = xr.Dataset(data_vars, coords={d: list(v) for d, v in coords.items()})
    values, counts = _measure_arrays(ds, spec, labels, ["point"])
    return Candidates(rule, [dict(p) for p in points], values, tuple(int(s) for s in seeds),
                      [stage] * len(points), counts)


# -- fitting one rule ------------------------------------------------------------------------------
@dataclass
class Baseline:
    """The reference's fit (§0.4 or §3.6) at every candidate, and its choice."""

    kind: str  # "closed_form" or "pooled_grid"
    error: np.ndarray  # [S]
    k: np.ndarray  # [S] (w for the pooled grid)
    b: np.ndarray  # [S]
    best: int  # -1 when no candidate has a finite reference fit
    ties: List[int]  # candidates tied on the error with the best (within 1e-9), best included
    remaining: List[int]  # ties left after the |k|·S̄ tie-break (§0.5: reported)
    fitted: np.ndarray  # [C] at best
    edge: Optional[np.ndarray] = None  # pooled grid: optimum on the grid's edge, per candidate


@dataclass
class RuleFit:
    """The fit of one rule: project criterion per candidate, the best, its lmfit read-out, the
    seed bootstrap and the baseline."""

    rule: str
    candidates: Candidates
    chi2: np.ndarray  # [S] χ² of the per-point residuals (project criterion)
    best: int
    ties: List[int]  # candidates whose χ² equals the best's within 1e-9 (relative), best included
    readout: ReadoutFit
    boot: Optional[BootstrapResult]
    baseline: Baseline
    n_hyper: int
    seed_fitted: np.ndarray = field(repr=False)  # [n_seeds, C] per-seed fitted values at best
    fitted_sem: np.ndarray = field(repr=False)  # [C] SEM over seeds of the fitted values at best

    @property
    def best_setting(self) -> Dict[str, Any]:
        return self.candidates.settings[self.best]


def analyse_rule(cand: Candidates, data: ObservedData, spec, *, n_hyper: int, indices=None,
                 compat: bool = False) -> RuleFit:
    """Fit one rule's candidates to ``data`` (see the module docstring)."""
    grid = readout_grid(cand.values, data, spec.readout)
    chi2 = np.asarray(grid.chi2, dtype=np.float64)
    if not np.isfinite(chi2).any():
        n_div = int(cand.diverged.sum())
        why = ("every setting diverged" if n_div == cand.n else
               f"{n_div} of {cand.n} settings diverged, the others leave a condition without events")
        raise ValueError(f"rule {cand.rule}: no setting gives a finite fit ({why})")
    # the same rule as in every bootstrap resample: minimal χ², ties within 1e-9 go to the smallest |k|·S̄
    # (``compat`` concerns the reference's baseline only)
    sel = select_best(chi2, grid.fitted_sem)
    best = sel.index
    readout = fit_readout(grid.means[best], data, spec.readout, n_hyper=n_hyper)
    boot = bootstrap_fits(cand.values, data, spec.readout, indices) if indices is not None else None
    seed_fitted = readout.k * cand.values[best] + readout.b
    n_seed = np.sum(np.isfinite(seed_fitted), axis=0)
    with warnings.catch_warnings():  # a condition without events in any seed is NaN on purpose
        warnings.simplefilter("ignore", RuntimeWarning)
        sem = np.nanstd(seed_fitted, axis=0, ddof=1) / np.sqrt(np.maximum(n_seed, 1))
    baseline = reference_baseline(cand, data, spec, compat=compat)
    return RuleFit(cand.rule, cand, chi2, best, list(sel.ties), readout, boot, baseline, n_hyper, seed_fitted, sem)


def reference_baseline(cand: Candidates, data: ObservedData, spec, compat: bool = False) -> Baseline:
    """The reference's fit of every candidate and its best-setting choice (§0.4.7 / §3.6)."""
    S, C = cand.n, len(data.labels)
    keys = [label_text(l) for l in data.labels]
    d_means = {k: float(m) for k, m in zip(keys, data.means)}
    if spec.reference == "pooled_grid":
        counts = np.where(np.isfinite(cand.values), cand.counts, 0.0)
        weighted = np.where(np.isfinite(cand.values), cand.values * cand.counts, 0.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            pooled = weighted.sum(1) / counts.sum(1)  # [S, C]
        err, w, b = (np.full(S, np.nan) for _ in range(3))
        edge = np.zeros(S, dtype=bool)
        for s in range(S):
            if np.isfinite(pooled[s]).all() and not cand.diverged[s]:
                r = reversal_reference_fit(pooled[s], data.means, cand.rule)
                err[s], w[s], b[s], edge[s] = r.error, r.w, r.b, r.on_edge
        if not np.isfinite(err).any():
            return Baseline("pooled_grid", err, w, b, -1, [], [], np.full(C, np.nan), edge)
        sel = select_best(err, np.zeros(S), compat=compat)
        fitted = w[sel.index] * pooled[sel.index] + b[sel.index]
        return Baseline("pooled_grid", err, w, b, sel.index, list(sel.ties), list(sel.remaining), fitted, edge)
    err, k, b, fsem = (np.full(S, np.nan) for _ in range(4))
    for s in range(S):
        m = cand.values[s]
        if not np.isfinite(m).all():
            continue  # a diverged or empty setting: no reference fit (never best)
        mean = m.mean(axis=0)
        sems = m.std(axis=0, ddof=1) / np.sqrt(m.shape[0]) if m.shape[0] > 1 else np.full(C, -1.0)
        f = closed_form_fit(dict(zip(keys, mean)), d_means, spec.readout, sim_sems=dict(zip(keys, sems)))
        if not f.degenerate:
            err[s], k[s], b[s], fsem[s] = f.error, f.k, f.b, f.fitted_sem
    if not np.isfinite(err).any():
        return Baseline("closed_form", err, k, b, -1, [], [], np.full(C, np.nan))
    sel = select_best(err, fsem, compat=compat)
    fitted = k[sel.index] * cand.values[sel.index].mean(axis=0) + b[sel.index]
    return Baseline("closed_form", err, k, b, sel.index, list(sel.ties), list(sel.remaining), fitted)
