"""Fitting simulated behaviour to recorded behaviour (installed as ``pcneuro.fits``).

specs/behaviour.md §0.4 (the reference's closed-form read-out fit) and §0.5 (the project's
lmfit fitting). The closed-form fit lives in :mod:`pcneuro.fits.reference`:

>>> from pcneuro.fits import closed_form_fit, seed_stats
>>> fit = closed_form_fit({"N+": 1.0, "LN+": 0.5}, {"N+": 44.0, "LN+": 26.0})
>>> fit.k, fit.b
(36.0, 8.0)
"""
from .reference import ClosedFormFit, closed_form_fit, condition_stats, seed_stats

__all__ = ["ClosedFormFit", "closed_form_fit", "condition_stats", "seed_stats"]
