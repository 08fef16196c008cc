"""Profiles over hyperparameter grids and model comparison (specs/behaviour.md §0.5).

* :func:`profile` — the best error along each hyperparameter of a grid (minimum over all other
  axes): a flat profile is how a hyperparameter the data cannot identify is reported.
* :func:`compare_models` — ΔAIC, ΔBIC and AIC/BIC weights of two :class:`ReadoutFit` on
  identical residuals (PC vs BP, §0.5), never from one seed set alone.

>>> import numpy as np
>>> errors = np.array([[3.0, 1.0], [2.0, np.nan]])        # axes lr (2 values) x init_sd (2)
>>> p = profile(errors, {"lr": [0.1, 0.01], "init_sd": [0.1, 0.01]})
>>> p["lr"].best.tolist(), p["lr"].argmin.tolist(), p["init_sd"].best.tolist()
([1.0, 2.0], [1, 2], [2.0, 1.0])
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from .readout import ReadoutFit

__all__ = ["AxisProfile", "profile", "ModelComparison", "compare_models"]


class AxisProfile(NamedTuple):
    """Profile of one hyperparameter: its grid ``values`` [n], the ``best`` error at each value
    (minimum over all other axes; NaN where all are NaN) and ``argmin`` [n], the flat index in
    table (C) order of the setting attaining it (−1 where all are NaN; first on exact ties;
    ``numpy.unravel_index(argmin, shape)`` gives the grid position)."""

    values: np.ndarray
    best: np.ndarray
    argmin: np.ndarray


def profile(errors, axes: Mapping[str, Sequence], shape: Sequence[int] | None = None) -> dict:
    """Best error along each hyperparameter axis of a grid of errors.

    ``errors``: one dim per axis in the order of ``axes`` ({name: grid values}), or a flat
    table [S] in C order together with ``shape`` (checked against the axes' lengths). Returns
    ``{name: AxisProfile(values, best, argmin)}``, NaN-aware.
    """
    e = np.asarray(errors, dtype=np.float64)
    names = list(axes)
    values = [np.asarray(axes[n]) for n in names]
    lengths = tuple(v.size for v in values)
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if shape != lengths:
            raise ValueError(f"shape {shape} does not match the axes' lengths {lengths}")
        if e.size != math.prod(shape):
            raise ValueError(f"errors has {e.size} values, shape {shape} needs {math.prod(shape)}")
        e = e.reshape(shape)
    if e.shape != lengths:
        raise ValueError(f"errors shape {e.shape} does not match the axes' lengths {lengths} "
                         f"(axes {names})")
    filled = np.where(np.isnan(e), np.inf, e)
    flat_index = np.arange(e.size).reshape(e.shape)
    out = {}
    for ax, name in enumerate(names):
        moved = np.moveaxis(filled, ax, 0).reshape(lengths[ax], -1)
        moved_idx = np.moveaxis(flat_index, ax, 0).reshape(lengths[ax], -1)
        pos = np.argmin(moved, axis=1)                      # first minimum in table order
        rows = np.arange(lengths[ax])
        best = moved[rows, pos]
        arg = moved_idx[rows, pos]
        # moveaxis keeps the other axes in C order, so "first" is first in table order
        none = ~np.isfinite(best)
        out[name] = AxisProfile(values=values[ax], best=np.where(none, np.nan, best),
                                argmin=np.where(none, -1, arg))
    return out


@dataclass(frozen=True)
class ModelComparison:
    """ΔAIC, ΔBIC (a − b; negative favours a) and Akaike/Schwarz weights of (a, b).

    ``indicative``: the data are cell means only (unscaled residuals), so the comparison is
    indicative only (§0.5); ``identified``: both fits have positive condition dof.
    """

    delta_aic: float
    delta_bic: float
    aic_weights: tuple
    bic_weights: tuple
    ndata: int
    nvarys: tuple
    indicative: bool
    identified: bool

    def report(self) -> str:
        note = " (indicative only: cell means)" if self.indicative else ""
        ident = "" if self.identified else "; a fit is NOT identified (condition dof <= 0)"
        return (f"ΔAIC = {self.delta_aic:+.4f}, ΔBIC = {self.delta_bic:+.4f} (a − b) on "
                f"N = {self.ndata}, free parameters {self.nvarys[0]} vs {self.nvarys[1]}; "
                f"AIC weights {self.aic_weights[0]:.3f}/{self.aic_weights[1]:.3f}{note}{ident}")


def _weights(a: float, b: float) -> tuple[float, float]:
    lo = min(a, b)
    wa, wb = math.exp(-0.5 * (a - lo)), math.exp(-0.5 * (b - lo))
    return wa / (wa + wb), wb / (wa + wb)


def compare_models(fit_a: ReadoutFit, fit_b: ReadoutFit) -> ModelComparison:
    """Compare two read-out fits (e.g. PC and BP at their best settings) by AIC and BIC.

    Only valid on identical residual definitions: both fits must share the same data (N, y,
    condition indices and scale s), else ``ValueError``. AIC/BIC count all varied parameters
    (:attr:`ReadoutFit.nvarys_total`).
    """
    da, db = fit_a.data, fit_b.data
    if fit_a.ndata != fit_b.ndata:
        raise ValueError(f"fits have different numbers of data points: {fit_a.ndata} vs {fit_b.ndata}")
    if not (da is db or (np.array_equal(da.y, db.y) and np.array_equal(da.cond, db.cond))):
        raise ValueError("fits were made on different data (y or conditions differ)")
    if fit_a.scale != fit_b.scale:
        raise ValueError(f"fits use different residual scales: {fit_a.scale!r} vs {fit_b.scale!r}")
    return ModelComparison(
        delta_aic=fit_a.aic - fit_b.aic, delta_bic=fit_a.bic - fit_b.bic,
        aic_weights=_weights(fit_a.aic, fit_b.aic), bic_weights=_weights(fit_a.bic, fit_b.bic),
        ndata=fit_a.ndata, nvarys=(fit_a.nvarys_total, fit_b.nvarys_total),
        indicative=not (fit_a.scaled and fit_b.scaled),
        identified=fit_a.identified and fit_b.identified)
