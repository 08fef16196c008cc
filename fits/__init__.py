"""Fitting simulated behaviour to recorded behaviour (installed as ``pcneuro.fits``).

Entry points:

* :func:`fit` — ``pcneuro.fits.fit(results, data=None)`` fits an open results Dataset (or a path)
  to recorded data (the paradigm's packaged data, a long-format Dataset or a CSV path) and returns
  a :class:`FitReport` (``.table()``, ``.to_dataset()``, ``.figure(path)``);
* :func:`fit_paradigm` — what ``run_paradigm.py NAME --fit`` does: screen the grid for every rule,
  refine in log10, confirm the finalists on ≥ 100 fresh seeds (:mod:`~pcneuro.fits.search`), fit,
  and write one NetCDF file with the simulations and the fit.

The stages, one module each (specs/behaviour.md §0.4–0.5); the first four are pure functions on
numpy arrays (no simulation, no files):

* :mod:`~pcneuro.fits.reference` — the reference's closed-form fit on condition means (§0.4),
  its best-config selection (:func:`select_best`, §0.4.7 with the project's tie policy) and the
  reversal-learning grid fit and maps (§3.6);
* :mod:`~pcneuro.fits.readout` — recorded points (:class:`ObservedData`), the per-point
  read-out in closed form over whole grids and with lmfit at one setting (:func:`fit_readout`:
  stderrs, AIC/BIC counting the search's hyperparameters, honest degrees of freedom);
* :mod:`~pcneuro.fits.bootstrap` — seed and data bootstrap with re-selection, confidence sets,
  percentile CIs and ΔE between rules;
* :mod:`~pcneuro.fits.selection` — profiles over hyperparameter grids and ΔAIC/ΔBIC;
* :mod:`~pcneuro.fits.analysis` — one rule's candidate settings fitted (project fit, bootstrap,
  the reference's baseline); :mod:`~pcneuro.fits.search` — the batched screen, refinement and
  confirmation; :mod:`~pcneuro.fits.report` — the report table, NetCDF variables and figure;
  :mod:`~pcneuro.fits.workflow` — the entry points above.

>>> from pcneuro.fits import closed_form_fit, seed_stats
>>> fit = closed_form_fit({"N+": 1.0, "LN+": 0.5}, {"N+": 44.0, "LN+": 26.0})
>>> fit.k, fit.b
(36.0, 8.0)
"""
from .bootstrap import (BootstrapIndices, BootstrapResult, DeltaError, PointEstimate,
                        bootstrap_fits, bootstrap_indices, delta_error, percentile_ci)
from .readout import (GridReadout, ObservedData, ReadoutFit, fit_readout, readout_closed_form,
                      readout_grid, seed_summary)
from .reference import (REVERSAL_REFERENCE_MAPS, ClosedFormFit, ReversalFit, Selection,
                        apply_reversal_map, closed_form_fit, condition_stats,
                        reversal_grid, reversal_reference_fit, seed_stats, select_best)
from .selection import AxisProfile, ModelComparison, compare_models, profile
from .report import FitReport
from .search import SearchConfig
from .workflow import fit, fit_paradigm

__all__ = [
    # entry points
    "fit", "fit_paradigm", "FitReport", "SearchConfig",
    # reference (§0.4, §3.6)
    "ClosedFormFit", "closed_form_fit", "condition_stats", "seed_stats",
    "Selection", "select_best",
    "ReversalFit", "REVERSAL_REFERENCE_MAPS", "reversal_grid", "reversal_reference_fit",
    "apply_reversal_map",
    # read-out (§0.5)
    "ObservedData", "GridReadout", "ReadoutFit",
    "seed_summary", "readout_closed_form", "readout_grid", "fit_readout",
    # bootstrap (§0.5)
    "BootstrapIndices", "BootstrapResult", "PointEstimate", "DeltaError",
    "bootstrap_indices", "bootstrap_fits", "delta_error", "percentile_ci",
    # selection (§0.5)
    "AxisProfile", "profile", "ModelComparison", "compare_models",
]
