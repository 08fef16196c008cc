"""The reference's closed-form read-out fit (specs/behaviour.md §0.4, used by §1.5 and §2.5).

The simulated measure is mapped onto the recorded one by a linear read-out ``k·m + b``, fitted
in closed form to the per-condition seed means:

* §0.4.2 — per condition, the seed mean m̄_c and SEM_c (ddof 1; −1 if there is one seed),
  :func:`seed_stats`; S̄ is the mean of SEM_c over conditions;
* §0.4.3 — d̄_c is the data mean per condition; conditions are paired **by key** (the reference
  pairs them by sorted order, which is the same only when both sides use identical labels);
* §0.4.4 — affine: ``k = (nΣm̄d̄ − Σm̄Σd̄)/(nΣm̄² − (Σm̄)²)``, ``b = (Σd̄ − kΣm̄)/n``;
  scale: ``k = Σm̄d̄/Σm̄²``, ``b = 0``; a zero denominator is flagged as degenerate;
* §0.4.5 — fitted values ``k·m̄_c + b`` per condition (``k·metric + b`` per seed,
  :meth:`ClosedFormFit.predict`); fitted SEM ``k·S̄`` with the signed k;
* §0.4.6 — ``E = Σ_c(k·m̄_c + b − d̄_c)²`` (no ½).

It also holds the best-config selection of §0.4.7 (:func:`select_best`, with the project's
default tie handling of §0.5 and §1.7) and the reversal-learning grid fit of §3.6
(:func:`reversal_reference_fit`, :data:`REVERSAL_REFERENCE_MAPS`). The lmfit fitting of §0.5
(:mod:`pcneuro.fits.readout`) reproduces these numbers first (relative tolerance 1e-9).

>>> fit = closed_form_fit({"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 5.0})
>>> (fit.k, fit.b, fit.error)
(2.0, 1.0, 0.0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np

__all__ = [
    "ClosedFormFit", "closed_form_fit", "seed_stats", "condition_stats",
    "Selection", "select_best",
    "ReversalFit", "REVERSAL_REFERENCE_MAPS", "reversal_grid", "reversal_reference_fit",
    "apply_reversal_map",
]


@dataclass(frozen=True)
class ClosedFormFit:
    """Result of :func:`closed_form_fit` (specs/behaviour.md §0.4.4–6).

    Attributes
    ----------
    kind
        ``"affine"`` (k and b fitted) or ``"scale"`` (b = 0).
    k, b
        Read-out slope and offset; NaN when ``degenerate``.
    error
        ``E = Σ_c(k·m̄_c + b − d̄_c)²`` (no ½); NaN when ``degenerate``, so a degenerate fit never
        wins a minimum-E selection.
    fitted
        Per condition ``k·m̄_c + b``, keyed and ordered as ``data_means``.
    degenerate
        True when the denominator of k is zero (affine: all m̄_c equal, or a single condition;
        scale: Σm̄² = 0).
    fitted_sem
        ``k·S̄`` (signed k), S̄ the mean of the per-condition SEMs; None when no SEMs were given.
    conditions
        The condition keys, in the order used for the sums (that of ``data_means``).
    """

    kind: str
    k: float
    b: float
    error: float
    fitted: dict = field(repr=False)
    degenerate: bool
    fitted_sem: float | None = None
    conditions: tuple = ()

    def predict(self, values):
        """``k·values + b`` — e.g. per-seed fitted values (§0.4.5). Accepts scalars, arrays or
        xarray objects."""
        return self.k * values + self.b


def _sum(values) -> float:
    """Left-to-right float sum (Python >= 3.12's ``sum`` compensates; keep one behaviour)."""
    total = 0.0
    for v in values:
        total += v
    return total


def _as_mapping(obj, what: str) -> dict:
    """A plain {key: float} from a Mapping or a 1-D labelled array (xarray.DataArray,
    pandas.Series)."""
    if isinstance(obj, Mapping):
        items = obj.items()
    elif hasattr(obj, "dims") and hasattr(obj, "coords"):  # xarray.DataArray
        if len(obj.dims) != 1:
            raise ValueError(f"{what} must be 1-D over the conditions, got dims {obj.dims}")
        dim = obj.dims[0]
        items = zip(obj[dim].values.tolist(), obj.values.tolist())
    elif hasattr(obj, "index") and hasattr(obj, "tolist"):  # pandas.Series
        items = zip(obj.index.tolist(), obj.tolist())
    else:
        raise TypeError(f"{what} must be a mapping condition -> value or a 1-D labelled array, "
                        f"got {type(obj).__name__}")
    out = {}
    for key, value in items:
        if key in out:
            raise ValueError(f"{what}: duplicate condition {key!r}")
        out[key] = float(value)
    return out


def closed_form_fit(
    sim_means,
    data_means,
    kind: Literal["affine", "scale"] = "affine",
    sim_sems=None,
) -> ClosedFormFit:
    """Closed-form read-out fit of simulated condition means to data means (§0.4.3–6).

    Parameters
    ----------
    sim_means
        m̄_c, the seed mean of the simulated measure per condition: a mapping
        ``{condition: value}`` or a 1-D DataArray/Series labelled by condition.
    data_means
        d̄_c, the recorded mean per condition, same form. Conditions are paired by key
        (§0.4.3); both sides must have exactly the same keys.
    kind
        ``"affine"``: k and b fitted; ``"scale"``: b = 0 (§0.4.4).
    sim_sems
        Optional SEM_c per condition (from :func:`seed_stats`, −1 for one seed); gives
        ``fitted_sem = k·S̄`` with S̄ their mean over conditions (§0.4.2, §0.4.5).

    Sums run over the conditions in the order of ``data_means``. A zero denominator gives
    ``degenerate=True`` with k, b, E and the fitted values NaN.
    """
    if kind not in ("affine", "scale"):
        raise ValueError(f"kind must be 'affine' or 'scale', got {kind!r}")
    m_map = _as_mapping(sim_means, "sim_means")
    d_map = _as_mapping(data_means, "data_means")
    missing = [c for c in d_map if c not in m_map]
    extra = [c for c in m_map if c not in d_map]
    if missing or extra:
        raise ValueError(f"conditions differ between simulation and data: "
                         f"missing from sim_means {missing}, not in data_means {extra}")
    conditions = tuple(d_map)
    n = len(conditions)
    if n == 0:
        raise ValueError("no conditions to fit")
    m = [m_map[c] for c in conditions]
    d = [d_map[c] for c in conditions]

    # Left-to-right float sums in condition order (the formulas of §0.4.4 as written).
    sum_m = _sum(m)
    sum_d = _sum(d)
    sum_md = _sum(mi * di for mi, di in zip(m, d))
    sum_mm = _sum(mi * mi for mi in m)

    if kind == "affine":
        denominator = n * sum_mm - sum_m * sum_m
        # Mathematically zero iff all m̄ are equal; rounding can leave a tiny non-zero value,
        # so the exact condition is checked as well.
        degenerate = denominator == 0.0 or all(mi == m[0] for mi in m)
        if degenerate:
            k = b = math.nan
        else:
            k = (n * sum_md - sum_m * sum_d) / denominator
            b = (sum_d - k * sum_m) / n
    else:
        denominator = sum_mm
        degenerate = denominator == 0.0
        if degenerate:
            k = b = math.nan
        else:
            k = sum_md / denominator
            b = 0.0

    fitted = {c: k * mi + b for c, mi in zip(conditions, m)}
    error = math.nan if degenerate else _sum((fitted[c] - di) ** 2 for c, di in zip(conditions, d))

    fitted_sem = None
    if sim_sems is not None:
        s_map = _as_mapping(sim_sems, "sim_sems")
        absent = [c for c in conditions if c not in s_map]
        if absent:
            raise ValueError(f"sim_sems has no value for condition(s) {absent}")
        s_bar = _sum(s_map[c] for c in conditions) / n
        fitted_sem = k * s_bar

    return ClosedFormFit(kind=kind, k=k, b=b, error=error, fitted=fitted,
                         degenerate=degenerate, fitted_sem=fitted_sem, conditions=conditions)


def seed_stats(values) -> tuple[float, float]:
    """Mean and SEM over seeds of one condition's metric (§0.4.2).

    SEM = sample SD (ddof 1) / √n; with a single seed the SEM is −1, as in the reference
    (a sentinel, not a spread). NaNs propagate. Raises ``ValueError`` for an empty or
    non-1-D input.
    """
    a = np.asarray(getattr(values, "values", values), dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"seed_stats expects a 1-D array over seeds, got shape {a.shape}")
    n = a.size
    if n == 0:
        raise ValueError("seed_stats: no seeds")
    mean = float(a.mean())
    if n == 1:
        return mean, -1.0
    return mean, float(a.std(ddof=1) / math.sqrt(n))


def condition_stats(measure, condition_dim: str, seed_dim: str = "seed") -> tuple[dict, dict]:
    """Per-condition seed mean and SEM (§0.4.2) of a DataArray with dims
    ``(condition_dim, seed_dim)`` in any order; returns ``(means, sems)`` dicts keyed by the
    condition labels, ready for :func:`closed_form_fit`. Select the rule/config first
    (``ds.fear_to_N.sel(rule="pc", ...)``) so that only these two dims remain.
    """
    dims = set(measure.dims)
    if dims != {condition_dim, seed_dim}:
        raise ValueError(f"expected dims ({condition_dim!r}, {seed_dim!r}), got {measure.dims}; "
                         f"select the other dims first")
    means, sems = {}, {}
    for label in measure[condition_dim].values.tolist():
        mean, sem = seed_stats(measure.sel({condition_dim: label}).transpose(seed_dim).values)
        means[label], sems[label] = mean, sem
    return means, sems


# --------------------------------------------------------------------------- §0.4.7 selection


@dataclass(frozen=True)
class Selection:
    """Best setting of a table of settings (:func:`select_best`, §0.4.7).

    Attributes
    ----------
    index
        The selected setting (position in table order).
    error
        Its E.
    ties
        Settings whose E ties with the minimum (compat: exactly equal; project: within ``rtol``),
        in table order, ``index`` included.
    remaining
        Those of ``ties`` that also tie on the tie-break key (compat: signed fitted SEM, exact;
        project: |fitted SEM| within ``rtol``), ``index`` included: the ties the rule could not
        resolve, settled by table order and to be **reported** (§1.7 item 1).
    is_tie
        ``len(ties) > 1``: the minimum of E alone did not pick the setting.
    mode
        ``"project"`` or ``"compat"``.
    """

    index: int
    error: float
    ties: tuple
    remaining: tuple
    is_tie: bool
    mode: str

    @property
    def unresolved(self) -> bool:
        """True when several settings remain tied after the tie-break."""
        return len(self.remaining) > 1


def _select_rows(errors: np.ndarray, fitted_sems, compat: bool, rtol: float):
    """Vectorised §0.4.7 over rows: ``errors`` [B, S], ``fitted_sems`` [B, S] or None.

    Returns ``(best [B] int, -1 where every E is NaN; ties [B, S] bool; remaining [B, S] bool)``.
    NaN (and +inf) errors never win; NaN fitted SEMs lose every tie-break.
    """
    e = np.where(np.isnan(errors), np.inf, errors)
    mn = e.min(axis=1, keepdims=True)
    valid = np.isfinite(mn)
    if compat:
        ties = (e == mn) & valid
    else:
        with np.errstate(invalid="ignore"):
            ties = (e - mn <= rtol * np.abs(mn)) & np.isfinite(e) & valid
    if fitted_sems is None:
        remaining = ties
    else:
        key = np.asarray(fitted_sems, dtype=np.float64)
        key = np.broadcast_to(key if compat else np.abs(key), e.shape)
        key = np.where(np.isnan(key), np.inf, key)
        masked = np.where(ties, key, np.inf)
        kmin = masked.min(axis=1, keepdims=True)
        if compat:
            close = masked == kmin
        else:
            with np.errstate(invalid="ignore"):
                close = masked - kmin <= rtol * np.abs(kmin)
        # every tied key NaN → nothing to break the tie with: all ties remain
        remaining = np.where(np.isfinite(kmin), ties & close, ties)
    best = np.where(valid[:, 0], np.argmax(remaining, axis=1), -1)
    return best, ties, remaining


def select_best(errors, fitted_sems=None, compat: bool = False, rtol: float = 1e-9) -> Selection:
    """Best setting over a 1-D table of settings (§0.4.7; project policy §0.5, §1.7).

    ``errors`` [S]: E (or χ²) per setting in table order; NaN never wins. ``fitted_sems`` [S]:
    the signed fitted SEM k·S̄ per setting (§0.4.5), or None (ties then go to table order).

    * ``compat=True`` (the reference): minimal E by exact equality, then the minimal **signed**
      fitted SEM (a negative k wins), then the first in table order.
    * default (project): settings whose E agree with the minimum within ``rtol`` (relative) are
      ties; among them the minimal ``|k|·S̄`` = |fitted SEM| (within ``rtol``); remaining ties
      go to the first in table order and are reported in :attr:`Selection.remaining`.

    Raises ``ValueError`` if ``errors`` is not 1-D or every E is NaN.
    """
    e = np.asarray(errors, dtype=np.float64)
    if e.ndim != 1 or e.size == 0:
        raise ValueError(f"errors must be a non-empty 1-D array over settings, got shape {e.shape}")
    sems = None
    if fitted_sems is not None:
        sems = np.asarray(fitted_sems, dtype=np.float64)
        if sems.shape != e.shape:
            raise ValueError(f"fitted_sems shape {sems.shape} differs from errors shape {e.shape}")
        sems = sems[None, :]
    if not rtol >= 0.0:
        raise ValueError(f"rtol must be >= 0, got {rtol!r}")
    best, ties, remaining = _select_rows(e[None, :], sems, compat, rtol)
    index = int(best[0])
    if index < 0:
        raise ValueError("no setting has a finite error (all E are NaN)")
    tie_idx = tuple(int(i) for i in np.flatnonzero(ties[0]))
    rem_idx = tuple(int(i) for i in np.flatnonzero(remaining[0]))
    return Selection(index=index, error=float(e[index]), ties=tie_idx, remaining=rem_idx,
                     is_tie=len(tie_idx) > 1, mode="compat" if compat else "project")


# --------------------------------------------------------------------------- §3.6 reversal grid

#: The reversal-learning maps (w, b) actually applied in the reference (§3.6), hard-coded there.
REVERSAL_REFERENCE_MAPS = {"pc": (5.06, -0.30), "bp": (33.3, -0.41)}

# Grids of §3.6 as (w0_num, w_den, n_w, b0_num, b_den, n_b): w_i = (w0_num + i)/w_den etc.
_REVERSAL_GRIDS = {
    "pc": (500, 100, 21, -40, 100, 20),   # w = 5.00 + 0.01 i, b = -0.40 + 0.01 j
    "bp": (300, 10, 40, -50, 100, 20),    # w = 30.0 + 0.1 i,  b = -0.50 + 0.01 j
}


def _rule(rule: str) -> str:
    key = str(rule).lower()
    if key not in _REVERSAL_GRIDS:
        raise ValueError(f"rule must be 'pc' or 'bp', got {rule!r}")
    return key


def reversal_grid(rule: str) -> tuple[np.ndarray, np.ndarray]:
    """The §3.6 grids (w [n_w], b [n_b]) of ``rule``, built by integer index: each value is the
    double nearest the decimal (PC w_i = 5.00 + 0.01·i computed as (500 + i)/100), so no
    rounding accumulates and the reference maps lie exactly on the grid."""
    w0, wd, nw, b0, bd, nb = _REVERSAL_GRIDS[_rule(rule)]
    return (w0 + np.arange(nw)) / wd, (b0 + np.arange(nb)) / bd


@dataclass(frozen=True)
class ReversalFit:
    """Result of :func:`reversal_reference_fit` (§3.6).

    ``w``, ``b``: the grid optimum (grid indices ``i``, ``j``); ``error`` = ½Σ(w·v + b − d)²;
    ``fitted`` [4]; ``errors`` [n_w, n_b] over the whole grid; ``on_edge``: the optimum lies on
    the grid edge (``edge`` names which: ``"w_min"``, ``"w_max"``, ``"b_min"``, ``"b_max"``),
    so the hand-set range may have cut off the true optimum; ``n_ties``: grid points with the
    same minimal error (the first in (i, j) order is returned).
    """

    rule: str
    w: float
    b: float
    error: float
    i: int
    j: int
    on_edge: bool
    edge: tuple
    n_ties: int
    fitted: np.ndarray = field(repr=False)
    errors: np.ndarray = field(repr=False)


def reversal_reference_fit(values, data, rule: str) -> ReversalFit:
    """Grid-search the reversal read-out ``ŷ = w·v + b`` (§3.6) on the pooled cell means.

    ``values`` [4]: the simulated pooled cell means v; ``data`` [4]: the recorded cell means d,
    paired position by position. Error ``½Σ_4(ŷ − d)²`` at every point of the ``rule``'s grid
    (:func:`reversal_grid`); returns the minimum (first in (i, j) order on exact ties).
    """
    key = _rule(rule)
    v = np.asarray(values, dtype=np.float64)
    d = np.asarray(data, dtype=np.float64)
    if v.shape != (4,) or d.shape != (4,):
        raise ValueError(f"values and data must each hold the 4 cell means, got shapes {v.shape} and {d.shape}")
    if not (np.all(np.isfinite(v)) and np.all(np.isfinite(d))):
        raise ValueError(f"non-finite cell mean in values {v.tolist()} or data {d.tolist()}")
    w_grid, b_grid = reversal_grid(key)
    pred = w_grid[:, None, None] * v + b_grid[None, :, None]        # [n_w, n_b, 4]
    errors = 0.5 * ((pred - d) ** 2).sum(axis=-1)
    flat = int(np.argmin(errors))
    i, j = divmod(flat, b_grid.size)
    edge = tuple(name for name, hit in (("w_min", i == 0), ("w_max", i == w_grid.size - 1),
                                        ("b_min", j == 0), ("b_max", j == b_grid.size - 1)) if hit)
    w, b = float(w_grid[i]), float(b_grid[j])
    return ReversalFit(rule=key, w=w, b=b, error=float(errors[i, j]), i=i, j=j,
                       on_edge=bool(edge), edge=edge, n_ties=int(np.sum(errors == errors[i, j])),
                       fitted=w * v + b, errors=errors)


def apply_reversal_map(values, rule: str, maps=None):
    """``w·values + b`` with the reference map of ``rule`` (:data:`REVERSAL_REFERENCE_MAPS`, or
    ``maps`` = {rule: (w, b)}, e.g. from :func:`reversal_reference_fit`). Accepts scalars,
    arrays or xarray objects."""
    key = _rule(rule)
    table = REVERSAL_REFERENCE_MAPS if maps is None else {str(r).lower(): m for r, m in maps.items()}
    if key not in table:
        raise ValueError(f"no map for rule {rule!r} in {sorted(table)}")
    w, b = table[key]
    return w * values + b
