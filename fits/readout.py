"""The project's read-out fit on recorded data points (specs/behaviour.md §0.5; §1.5, §2.5, §3.6).

A simulated measure (seed mean m̄_c per condition c) is mapped onto recorded values by a linear
read-out ``k·m̄_c + b`` (``"affine"``) or ``k·m̄_c`` (``"scale"``, b = 0). Unlike the reference fit
(§0.4, :mod:`pcneuro.fits.reference`, on condition means), the project fits **per data point**
where points exist (fear conditioning 15, COIN 96): residual ``(k·m̄_{c(i)} + b − y_i)/s`` with s
the pooled within-condition SD, so that χ², AIC and BIC mean what lmfit says they mean. With cell
means only (reversal learning, 4 values) s = 1 and AIC/BIC are indicative only.

Because every point of a condition shares one prediction,
``Σ_i (k·m̄_{c(i)} + b − y_i)² = Σ_c n_c (k·m̄_c + b − ȳ_c)² + SS_within``: the point fit is a
weighted least-squares fit on condition means (weights n_c) plus a constant. With equal counts it
gives the same k and b as the reference closed form (§0.4.4).

* :class:`ObservedData` — the recorded points (y, condition index, labels) and their summaries;
* :func:`seed_summary` — seed means and SEMs per condition (§0.4.2), NaN-aware, vectorised;
* :func:`readout_closed_form` — k, b, χ² at every setting of a grid at once;
* :func:`readout_grid` — the same from per-seed simulations, with the fitted SEM k·S̄ (§0.4.5);
* :func:`fit_readout` — the lmfit fit at one setting, with stderrs, AIC/BIC counting the search's
  hyperparameters and the honest degrees of freedom (:class:`ReadoutFit`).

>>> data = ObservedData.from_points([1.0, 3.0, 5.0, 9.0], [0, 0, 1, 1], ["a", "b"])
>>> (data.counts.tolist(), data.means.tolist(), data.scale)
([2, 2], [2.0, 7.0], 2.23606797749979)
>>> k, b, chi2 = readout_closed_form(np.array([1.0, 2.0]), data, "affine")
>>> (float(k), float(b), round(float(chi2), 12))
(5.0, -3.0, 2.0)
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

__all__ = [
    "ObservedData", "ReadoutFit", "GridReadout",
    "seed_summary", "readout_closed_form", "readout_grid", "fit_readout",
]

KINDS = ("affine", "scale")


def _check_kind(kind) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be 'affine' or 'scale', got {kind!r}")
    return kind


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.setflags(write=False)
    return a


def _label_key(value):
    """A hashable plain-Python label (numpy scalars → Python scalars, lists → tuples)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (list, tuple, np.ndarray)):
        return tuple(_label_key(v) for v in value)
    return value


# --------------------------------------------------------------------------- data


@dataclass(frozen=True, eq=False)
class ObservedData:
    """Recorded data points and their per-condition summaries (§0.5 residuals).

    Build with :meth:`from_points` or :meth:`from_dataset`; arrays are read-only.

    Attributes
    ----------
    y
        [N] float64, the recorded values.
    cond
        [N] int, index into ``labels`` of each point's condition.
    labels
        The C condition labels, in the order of the simulation's per-condition arrays (a label
        is a tuple when there are several condition dims).
    counts
        [C] int, n_c (every condition has ≥ 1 point).
    means
        [C] float64, ȳ_c.
    ss_within
        [C] float64, Σ_{i∈c} (y_i − ȳ_c)².
    scale
        s, the pooled within-condition SD ``sqrt(Σ ss_within / (N − C))`` when some condition
        has ≥ 2 points; else 1.0.
    scaled
        False for cell means only (every n_c = 1): residuals unscaled, AIC/BIC indicative only.
    """

    y: np.ndarray
    cond: np.ndarray
    labels: tuple
    counts: np.ndarray = field(repr=False)
    means: np.ndarray = field(repr=False)
    ss_within: np.ndarray = field(repr=False)
    scale: float = 1.0
    scaled: bool = False

    @property
    def n_points(self) -> int:
        """N, the number of data points."""
        return int(self.y.size)

    @property
    def n_conditions(self) -> int:
        """C, the number of conditions."""
        return len(self.labels)

    @classmethod
    def from_points(cls, y, cond, labels: Sequence) -> "ObservedData":
        """Data from points: ``y`` [N] values, ``cond`` [N] indices into ``labels`` [C].

        Raises a one-line ``ValueError`` for non-finite values, a bad index, duplicate labels,
        a label without data, or zero within-condition spread (s = 0 cannot scale residuals).
        """
        labels = tuple(_label_key(lab) for lab in labels)
        if not labels:
            raise ValueError("labels is empty: need at least one condition")
        if len(set(labels)) != len(labels):
            dupes = sorted({repr(lab) for lab in labels if labels.count(lab) > 1})
            raise ValueError(f"duplicate condition label(s) {', '.join(dupes)}")
        y = np.asarray(y, dtype=np.float64)
        cond_in = np.asarray(cond)
        if y.ndim != 1 or cond_in.shape != y.shape:
            raise ValueError(f"y and cond must be 1-D of equal length, got shapes {y.shape} and {cond_in.shape}")
        if y.size == 0:
            raise ValueError("no data points")
        if not np.all(np.isfinite(y)):
            bad = int(np.flatnonzero(~np.isfinite(y))[0])
            raise ValueError(f"y[{bad}] = {y[bad]!r} is not a finite number")
        if cond_in.dtype.kind not in "iu" and not (
                cond_in.dtype.kind == "f" and np.all(cond_in == np.round(cond_in))):
            raise ValueError(f"cond must hold integer condition indices, got dtype {cond_in.dtype}")
        cond_i = cond_in.astype(np.int64)
        C = len(labels)
        out = (cond_i < 0) | (cond_i >= C)
        if np.any(out):
            bad = int(np.flatnonzero(out)[0])
            raise ValueError(f"cond[{bad}] = {cond_i[bad]} is not an index into {C} labels")
        counts = np.bincount(cond_i, minlength=C)
        if np.any(counts == 0):
            missing = labels[int(np.flatnonzero(counts == 0)[0])]
            raise ValueError(f"label {missing!r} has no data points")
        means = np.bincount(cond_i, weights=y, minlength=C) / counts
        ss = np.bincount(cond_i, weights=(y - means[cond_i]) ** 2, minlength=C)
        N = y.size
        if np.any(counts >= 2):
            scale = math.sqrt(float(ss.sum()) / (N - C))
            if not scale > 0.0:
                raise ValueError("data have zero within-condition spread (pooled SD s = 0); "
                                 "cannot scale residuals — pass cell means (one point per condition)")
            scaled = True
        else:
            scale, scaled = 1.0, False
        return cls(y=_frozen(y), cond=_frozen(cond_i), labels=labels, counts=_frozen(counts),
                   means=_frozen(means), ss_within=_frozen(ss), scale=scale, scaled=scaled)

    @classmethod
    def from_dataset(cls, ds, labels: Sequence, variable: str = "value",
                     condition_dims: Sequence[str] | str | None = None) -> "ObservedData":
        """Data from a long-format ``xarray.Dataset`` (:func:`pcneuro.datasets.load_behaviour`).

        ``ds`` has dim ``point``, data variable ``variable`` (default ``"value"``) and one
        coordinate along ``point`` per condition dim. ``condition_dims`` defaults to the JSON
        list in ``ds.attrs["condition_dims"]``, else every non-numeric coordinate along ``point``
        other than ``subject``. With one condition dim a point's label is its coordinate value;
        with several it is the tuple of values and ``labels`` is a list of tuples. Points whose
        value is NaN are dropped (missing). One-line ``ValueError`` for a data label not in
        ``labels`` or a label in ``labels`` without data.
        """
        if variable not in ds.data_vars:
            raise ValueError(f"dataset has no variable {variable!r} (variables: {list(ds.data_vars)})")
        da = ds[variable]
        if da.dims != ("point",):
            raise ValueError(f"variable {variable!r} must have the single dim 'point', got {da.dims}")
        if condition_dims is None:
            attr = ds.attrs.get("condition_dims")
            if attr is not None:
                condition_dims = json.loads(attr) if isinstance(attr, str) else list(attr)
            else:
                condition_dims = [name for name, c in ds.coords.items()
                                  if c.dims == ("point",) and name not in ("point", "subject")
                                  and c.dtype.kind not in "biufc"]
        elif isinstance(condition_dims, str):
            condition_dims = [condition_dims]
        condition_dims = list(condition_dims)
        if not condition_dims:
            raise ValueError("no condition coordinate along 'point'; pass condition_dims=")
        for name in condition_dims:
            if name not in ds.coords or ds.coords[name].dims != ("point",):
                raise ValueError(f"no coordinate {name!r} along 'point' "
                                 f"(coordinates: {list(ds.coords)})")
        labels = [_label_key(lab) for lab in labels]
        columns = [ds.coords[name].values.tolist() for name in condition_dims]
        use_tuples = len(condition_dims) > 1 or (bool(labels) and isinstance(labels[0], tuple))
        keys = [tuple(_label_key(v) for v in vals) if use_tuples else _label_key(vals[0])
                for vals in zip(*columns)]
        y = np.asarray(da.values, dtype=np.float64)
        keep = ~np.isnan(y)
        index = {lab: i for i, lab in enumerate(labels)}
        if len(index) != len(labels):
            raise ValueError(f"duplicate condition label(s) in {labels}")
        cond = np.empty(y.size, dtype=np.int64)
        for p, key in enumerate(keys):
            if not keep[p]:
                cond[p] = 0
                continue
            if key not in index:
                raise ValueError(f"data label {key!r} (point {p}) is not among labels {labels}")
            cond[p] = index[key]
        return cls.from_points(y[keep], cond[keep], labels)

    def resampled_summaries(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Condition means [B, C] and total within SS [B] of resampled data ``y[points]``,
        ``points`` [B, N] (resampled within condition, so counts are unchanged)."""
        yb = self.y[points]                                     # [B, N]
        cond_b = self.cond[points]                              # [B, N]
        if not np.array_equal(cond_b, np.broadcast_to(self.cond, cond_b.shape)):
            raise ValueError("points must resample within conditions (cond[points] != cond)")
        onehot = np.zeros((self.n_points, self.n_conditions))
        onehot[np.arange(self.n_points), self.cond] = 1.0
        means = (yb @ onehot) / self.counts                     # [B, C]
        ss = ((yb - means[:, self.cond]) ** 2).sum(axis=1)      # [B]
        return means, ss


# --------------------------------------------------------------------------- closed forms


def seed_summary(sim) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed mean, SEM and count per condition of ``sim`` [..., n_seeds, C] (§0.4.2), NaN-aware.

    NaN marks a seed without an event in a cell and is skipped. SEM = SD (ddof 1)/√n; −1 where
    n = 1 (the reference's sentinel); mean and SEM are NaN where n = 0. Returns
    ``(means, sems, n)``, each [..., C].
    """
    x = np.asarray(sim, dtype=np.float64)
    if x.ndim < 2:
        raise ValueError(f"sim must be [..., n_seeds, C], got shape {x.shape}")
    ok = ~np.isnan(x)
    n = ok.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(ok, x, 0.0).sum(axis=-2) / n
        dev = np.where(ok, x - np.expand_dims(means, -2), 0.0)
        var = (dev ** 2).sum(axis=-2) / (n - 1)
        sems = np.sqrt(var / n)
    sems = np.where(n == 1, -1.0, sems)
    sems = np.where(n == 0, np.nan, sems)
    means = np.where(n == 0, np.nan, means)
    return means, sems, n


def _closed_form(means, counts, ybar, ss_within, scale, kind):
    """Weighted LS read-out on condition means (weights n_c), broadcasting over leading dims.

    means [..., C]; ybar [..., C] and ss_within [...] broadcastable against them. Returns
    (k, b, chi2), NaN where degenerate (affine: all m̄_c equal; scale: Σ n_c m̄_c² = 0).
    """
    m = np.asarray(means, dtype=np.float64)
    w = np.asarray(counts, dtype=np.float64)
    W = w.sum()
    with np.errstate(invalid="ignore", divide="ignore"):
        if kind == "affine":
            m_w = (w * m).sum(axis=-1, keepdims=True) / W
            y_w = (w * ybar).sum(axis=-1, keepdims=True) / W
            dm = m - m_w
            den = (w * dm * dm).sum(axis=-1)
            k = (w * dm * (ybar - y_w)).sum(axis=-1) / den
            # all m̄ exactly equal → degenerate even if rounding leaves den > 0
            degenerate = (den == 0.0) | np.all(m == m[..., :1], axis=-1)
            b = y_w[..., 0] - k * m_w[..., 0]
        else:
            den = (w * m * m).sum(axis=-1)
            k = (w * m * ybar).sum(axis=-1) / den
            degenerate = den == 0.0
            b = np.zeros_like(k)
        k = np.where(degenerate, np.nan, k)
        b = np.where(np.isnan(k), np.nan, b)          # degenerate or a NaN mean
        fitted = k[..., None] * m + b[..., None]
        chi2 = ((w * (fitted - ybar) ** 2).sum(axis=-1) + ss_within) / (scale * scale)
    return k, b, chi2


def readout_closed_form(means, data: ObservedData, kind: Literal["affine", "scale"] = "affine"):
    """k, b and χ² of the per-point read-out at every setting, in closed form (§0.5).

    ``means`` [..., C]: simulated condition means (seed means), conditions in ``data.labels``
    order. Minimises ``χ² = Σ_i (k·m̄_{c(i)} + b − y_i)²/s²`` (b = 0 for ``"scale"``); this is
    weighted LS on condition means with weights n_c, computed in centred form. Returns arrays
    ``(k, b, chi2)`` of the leading shape; NaN where degenerate (affine: all m̄_c equal, or one
    condition; scale: all m̄_c = 0) or where a mean is NaN — so such settings never win a
    minimum-χ² selection.
    """
    _check_kind(kind)
    m = np.asarray(means, dtype=np.float64)
    if m.ndim == 0 or m.shape[-1] != data.n_conditions:
        raise ValueError(f"means must be [..., {data.n_conditions}] (one per label), got shape {m.shape}")
    return _closed_form(m, data.counts, data.means, float(data.ss_within.sum()), data.scale, kind)


@dataclass(frozen=True, eq=False)
class GridReadout:
    """Closed-form read-out at every setting of a grid (:func:`readout_grid`).

    ``means``, ``sems``, ``n_seeds`` [..., C] from :func:`seed_summary`; ``k``, ``b``, ``chi2``
    [...] from :func:`readout_closed_form`; ``fitted_sem`` [...] = k·S̄ (signed k, S̄ the mean
    SEM over conditions, §0.4.5) — pass ``chi2`` and ``fitted_sem`` to
    :func:`pcneuro.fits.select_best`.
    """

    kind: str
    means: np.ndarray
    sems: np.ndarray
    n_seeds: np.ndarray
    k: np.ndarray
    b: np.ndarray
    chi2: np.ndarray
    fitted_sem: np.ndarray

    def fitted(self, index) -> np.ndarray:
        """Per-condition fitted values k·m̄_c + b at setting ``index`` [C]."""
        return self.k[index] * self.means[index] + self.b[index]


def readout_grid(sim, data: ObservedData, kind: Literal["affine", "scale"] = "affine") -> GridReadout:
    """Seed summaries and closed-form read-out of ``sim`` [..., n_seeds, C] at every setting."""
    _check_kind(kind)
    means, sems, n = seed_summary(sim)
    k, b, chi2 = readout_closed_form(means, data, kind)
    with np.errstate(invalid="ignore"):
        fitted_sem = k * sems.mean(axis=-1)
    return GridReadout(kind=kind, means=means, sems=sems, n_seeds=n, k=k, b=b, chi2=chi2,
                       fitted_sem=fitted_sem)


# --------------------------------------------------------------------------- lmfit


@dataclass(frozen=True, eq=False)
class ReadoutFit:
    """lmfit read-out fit at one setting (:func:`fit_readout`, §0.5).

    ``chisqr`` = Σ residual², residual_i = (k·m̄_{c(i)} + b − y_i)/s. ``aic``, ``bic``: lmfit's
    formulas ``N·ln(χ²/N) + 2·p`` and ``N·ln(χ²/N) + ln(N)·p`` with p = ``nvarys_total`` =
    ``n_readout`` + ``n_hyper`` (hyperparameters varied by the search count as free
    parameters); ``redchi`` = χ²/(N − p) (NaN if N ≤ p). ``k_stderr``, ``b_stderr``,
    ``correl``: lmfit's (covariance scaled by its reduced χ², conditional on the
    hyperparameters); NaN where lmfit gives none or b is fixed (``"scale"``).
    ``dof_conditions`` = C − p: the honest degrees of freedom, since the prediction varies only
    between conditions; ``identified`` is False when it is ≤ 0. ``scaled`` False (cell means
    only): χ², AIC and BIC are indicative only.
    """

    kind: str
    k: float
    b: float
    k_stderr: float
    b_stderr: float
    correl: float
    chisqr: float
    redchi: float
    ndata: int
    n_conditions: int
    n_readout: int
    n_hyper: int
    nvarys_total: int
    aic: float
    bic: float
    dof_conditions: int
    identified: bool
    scale: float
    scaled: bool
    labels: tuple
    means: np.ndarray = field(repr=False)
    fitted: np.ndarray = field(repr=False)
    residuals: np.ndarray = field(repr=False)
    success: bool = True
    data: ObservedData = field(repr=False, default=None)
    result: object = field(repr=False, default=None)

    def report(self) -> str:
        """A few readable lines: parameters, χ², AIC/BIC, degrees of freedom, fitted values."""
        def pm(v, e):
            return f"{v:.6g}" if not np.isfinite(e) else f"{v:.6g} ± {e:.2g}"
        lines = []
        if self.kind == "affine":
            corr = f" (corr {self.correl:+.3f})" if np.isfinite(self.correl) else ""
            lines.append(f"read-out affine: k = {pm(self.k, self.k_stderr)}, "
                         f"b = {pm(self.b, self.b_stderr)}{corr}")
        else:
            lines.append(f"read-out scale: k = {pm(self.k, self.k_stderr)}, b = 0 (fixed)")
        s = (f"s = {self.scale:.4g} (pooled within-condition SD)" if self.scaled
             else "unscaled: cell means only, AIC/BIC indicative only")
        lines.append(f"chi-square {self.chisqr:.6g} on N = {self.ndata} points, {s}; "
                     f"reduced {self.redchi:.4g}")
        lines.append(f"free parameters {self.n_readout} read-out + {self.n_hyper} hyper = "
                     f"{self.nvarys_total}; AIC {self.aic:.4f}, BIC {self.bic:.4f}")
        ident = "" if self.identified else " — NOT identified: free parameters >= conditions"
        lines.append(f"condition dof {self.n_conditions} − {self.nvarys_total} = "
                     f"{self.dof_conditions}{ident}")
        lines.append("fitted: " + " | ".join(f"{lab}: {f:.4g} (data {d:.4g})" for lab, f, d in
                                             zip(self.labels, self.fitted, self.data.means)))
        if not self.success:
            lines.append("WARNING: lmfit reports no success")
        return "\n".join(lines)


def _aic_bic(chisqr: float, ndata: int, nvarys: int) -> tuple[float, float]:
    """lmfit's AIC/BIC (MinimizerResult._calculate_statistics), with its χ² floor."""
    chisqr = max(chisqr, 1.e-250 * ndata)
    neg2 = ndata * math.log(chisqr / ndata)
    return neg2 + 2 * nvarys, neg2 + math.log(ndata) * nvarys


def fit_readout(means, data: ObservedData, kind: Literal["affine", "scale"] = "affine",
                n_hyper: int = 0, start: tuple[float, float] | None = None) -> ReadoutFit:
    """Fit the read-out at one setting with lmfit (§0.5): Parameters k (and b; b fixed at 0 for
    ``"scale"``), residuals per data point ``(k·m̄_{c(i)} + b − y_i)/s``, Levenberg–Marquardt
    with the analytic Jacobian, started from :func:`readout_closed_form` (or ``start`` = (k, b)).

    ``means`` [C]: the simulated seed means in ``data.labels`` order. ``n_hyper``: the number of
    simulation hyperparameters the search varied to reach this setting (counted in AIC/BIC and
    the degrees of freedom). Raises ``ValueError`` for NaN means or a degenerate read-out (all
    means equal for ``"affine"``, all zero for ``"scale"``).
    """
    import lmfit

    _check_kind(kind)
    m = np.asarray(means, dtype=np.float64)
    C = data.n_conditions
    if m.shape != (C,):
        raise ValueError(f"means must have shape ({C},) (one per label), got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError(f"means contain a non-finite value: {m.tolist()}")
    if not (isinstance(n_hyper, (int, np.integer)) and n_hyper >= 0):
        raise ValueError(f"n_hyper must be a non-negative integer, got {n_hyper!r}")
    k0, b0, _ = readout_closed_form(m, data, kind)
    if not np.isfinite(k0):
        raise ValueError(f"degenerate {kind} read-out: simulated means {m.tolist()} "
                         f"{'are all equal' if kind == 'affine' else 'are all zero'}")
    if start is not None:
        k0, b0 = float(start[0]), (float(start[1]) if kind == "affine" else 0.0)

    m_pt = m[data.cond]
    y, s = data.y, data.scale
    params = lmfit.Parameters()
    params.add("k", value=float(k0))
    params.add("b", value=float(b0), vary=(kind == "affine"))

    def residual(p):
        return (p["k"].value * m_pt + p["b"].value - y) / s

    def jacobian(p):
        cols = [m_pt / s]
        if kind == "affine":
            cols.append(np.full_like(m_pt, 1.0 / s))
        return np.column_stack(cols)

    minimizer = lmfit.Minimizer(residual, params)
    result = minimizer.minimize(method="leastsq", Dfun=jacobian, col_deriv=False,
                                xtol=1e-14, ftol=1e-14)
    k = float(result.params["k"].value)
    b = float(result.params["b"].value)

    def _err(name):
        e = result.params[name].stderr
        return float(e) if (e is not None and result.params[name].vary) else math.nan

    correl = math.nan
    if kind == "affine":
        c = (result.params["k"].correl or {}).get("b")
        correl = float(c) if c is not None else math.nan
    resid = np.asarray(result.residual, dtype=np.float64)
    chisqr = float(np.sum(resid ** 2))
    N = data.n_points
    n_readout = 2 if kind == "affine" else 1
    p = n_readout + int(n_hyper)
    aic, bic = _aic_bic(chisqr, N, p)
    dof = C - p
    return ReadoutFit(
        kind=kind, k=k, b=b, k_stderr=_err("k"), b_stderr=_err("b"), correl=correl,
        chisqr=chisqr, redchi=chisqr / (N - p) if N > p else math.nan, ndata=N, n_conditions=C,
        n_readout=n_readout, n_hyper=int(n_hyper), nvarys_total=p, aic=aic, bic=bic,
        dof_conditions=dof, identified=dof > 0, scale=data.scale, scaled=data.scaled,
        labels=data.labels, means=_frozen(m), fitted=_frozen(k * m + b), residuals=_frozen(resid),
        success=bool(result.success), data=data, result=result)
