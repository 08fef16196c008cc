"""Summary figures of a results file: the paradigm's main measure, one panel per rule.

The figure shows the seed mean ± SEM of the main measure per condition, along the paradigm's
``figure_x`` dim (e.g. trials) when it has one, else as bars at ``summary_isel``. Grid axes are
selected at the paradigm's ``figure_point`` where that point is in the grid (the configuration the
paper highlights), and at their first value otherwise (a mean over settings would mix runs that
need not belong together, diverged ones included); the title says which.

Curves that coincide must both stay visible (under BP, fear conditioning's LN+ and LN+,L- are one
curve: that is the finding). Each condition's line is drawn thinner than the one before and in its
own style (solid, dashed, dotted, dash-dot), so an earlier line shows around and between the dashes
of a later one lying on it; a curve equal to an earlier one at every point says so in its panel's
legend (``LN+,L- (= LN+)``).
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import xarray as xr

from .results import grid_dims, stack_conditions


def _select_grid(ds: xr.Dataset, da: xr.DataArray, figure_point) -> Tuple[xr.DataArray, List[str]]:
    notes = []
    for axis in grid_dims(ds):
        values = list(ds[axis].values)
        if len(values) == 1:
            da = da.isel({axis: 0})
            notes.append(f"{axis}={values[0]:g}" if isinstance(values[0], float) else f"{axis}={values[0]}")
        elif axis in figure_point and figure_point[axis] in values:
            da = da.sel({axis: figure_point[axis]})
            notes.append(f"{axis}={figure_point[axis]}")
        else:  # one setting, not a mean over settings that may not belong together (or diverge)
            da = da.isel({axis: 0})
            v = values[0]
            notes.append(f"{axis}={v:g} (first of {len(values)})" if isinstance(v, float)
                         else f"{axis}={v} (first of {len(values)})")
    return da, notes


#: (line style, line width) per condition, in drawing order: later lines thinner and broken
LINE_STYLES = (("-", 3.0), ("--", 2.2), (":", 1.8), ("-.", 1.3))


def line_style(j: int) -> Tuple[str, float]:
    """The (linestyle, linewidth) of the ``j``-th condition's line."""
    style, width = LINE_STYLES[j % len(LINE_STYLES)]
    return style, max(width - 0.2 * (j // len(LINE_STYLES)), 0.8)


def equal_to_earlier(curves: List[np.ndarray]) -> List[Optional[int]]:
    """For each curve, the first earlier curve it equals at every point (NaN equal to NaN), or None."""
    out: List[Optional[int]] = []
    for j, c in enumerate(curves):
        out.append(next((i for i in range(j) if np.array_equal(curves[i], c, equal_nan=True)), None))
    return out


def summary_figure(ds: xr.Dataset, path) -> Path:
    """Draw the summary figure of ``ds`` and save it to ``path`` (PNG); return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .registry import paradigm_class

    cls = paradigm_class(ds.attrs["paradigm"])
    custom = cls.summary_plot(ds, path)
    if custom is not None:
        return Path(custom)
    measure = ds[cls.main_measure]
    da, notes = _select_grid(ds, measure, cls.figure_point)
    x_dim = cls.figure_x if cls.figure_x in da.dims else None
    if x_dim is None:
        da = da.isel({k: v for k, v in cls.summary_isel.items() if k in da.dims})
    n_seeds = da.sizes["seed"]
    with np.errstate(over="ignore", invalid="ignore"):  # diverged runs are data: plotted as they are
        mean = da.mean("seed")
        sem = da.std("seed", ddof=1) / np.sqrt(n_seeds) if n_seeds > 1 else xr.zeros_like(mean)
    cond_dims = [d for d in mean.dims if d not in ("rule", x_dim)]
    rules = list(ds["rule"].values)
    # each rule on its own scale: the rules' raw outputs can differ by orders of magnitude
    fig, axes = plt.subplots(1, len(rules), figsize=(4.2 * len(rules), 3.4), squeeze=False)
    for k, (ax, rule) in enumerate(zip(axes[0], rules)):
        m, s = mean.sel(rule=rule), sem.sel(rule=rule)
        m, labels = stack_conditions(m, cond_dims, cls.main_measure)
        s = stack_conditions(s, cond_dims, cls.main_measure)[0]
        same = equal_to_earlier([m.isel(_cond=j).values for j in range(len(labels))])
        for j, label in enumerate(labels):
            mj, sj = m.isel(_cond=j), s.isel(_cond=j)
            if x_dim:
                x = ds[x_dim].values
                style, width = line_style(j)
                shown = label if same[j] is None else f"{label} (= {labels[same[j]]})"
                ax.plot(x, mj.values, label=shown, linestyle=style, linewidth=width, color=f"C{j}", zorder=2 + j)
                ax.fill_between(x, (mj - sj).values, (mj + sj).values, alpha=0.2, color=f"C{j}", linewidth=0)
            else:
                ax.bar(j, float(mj), yerr=float(sj), capsize=3, label=label)
        if not x_dim:
            ax.set_xticks(range(len(labels)), [label.replace(", ", "\n") for label in labels])
        elif k == len(rules) - 1 or any(i is not None for i in same):  # a panel's own coincidences are named there
            ax.legend(fontsize=8)
        ax.set_title(str(rule).upper())
        ax.set_xlabel(x_dim or "")
        ax.grid(alpha=0.3)
    for ax in axes[0]:
        ax.set_ylabel(measure.attrs.get("long_name", cls.main_measure).split(":")[0])
    import textwrap

    width = int(4.2 * len(rules) * 14)  # characters that fit across the figure at this font size
    subtitle = textwrap.fill(f"{', '.join(notes) or 'single setting'}; mean ± SEM over {n_seeds} seeds", width)
    fig.suptitle(f"{textwrap.fill(cls.title, width)}\n{subtitle}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig, path) -> Path:
    """Save ``fig`` as a PNG atomically (:func:`pcneuro.results.atomic_write`) and close it; return the path."""
    import matplotlib.pyplot as plt

    from .results import atomic_write

    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
    finally:
        plt.close(fig)
