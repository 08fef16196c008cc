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

The lmfit fitting of §0.5 reproduces these numbers first (relative tolerance 1e-9); the
best-config selection of §0.4.7 is not here.

>>> fit = closed_form_fit({"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 5.0})
>>> (fit.k, fit.b, fit.error)
(2.0, 1.0, 0.0)
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Mapping

import numpy as np

__all__ = ["ClosedFormFit", "closed_form_fit", "seed_stats", "condition_stats"]


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
