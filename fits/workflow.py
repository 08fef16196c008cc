"""Entry points of the fitting layer: :func:`fit` on existing results, :func:`fit_paradigm` for ``--fit``.

``fit(results, data)`` fits an open results Dataset (or a path to one) to recorded data — the
paradigm's packaged data by default, a Dataset in the long format of
:func:`pcneuro.datasets.read_behaviour_csv`, or a CSV path — over the settings the results hold.

``fit_paradigm(name, ...)`` is what ``run_paradigm.py NAME --fit`` does: validate the data, screen the
grid for every rule, refine around the best settings, confirm the finalists on ≥ 100 fresh seeds
(:mod:`pcneuro.fits.search`), then write one NetCDF file holding the screen's simulations and the fit
(variables and attributes), the usual summary figure and the fit figure.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import xarray as xr

from .analysis import analyse_rule, candidates_from_results, labels_from_coords, simulation_labels
from .bootstrap import bootstrap_indices
from .readout import ObservedData
from .report import FitReport
from .search import SearchConfig, search, varied_count

DataArg = Union[None, str, os.PathLike, xr.Dataset]


def fit_spec(cls):
    spec = getattr(cls, "fit", None)
    if spec is None:
        raise ValueError(f"paradigm {cls.name!r} declares no fit (no FitSpec: it has no recorded behaviour "
                         f"to be fitted to)")
    return spec


def condition_coords(cls, spec, settings: Mapping[str, Any]) -> Dict[str, List[str]]:
    """The simulation's labels per condition dim (what a data file may use)."""
    coords = cls().coords(settings)
    missing = [d for d in spec.conditions if d not in coords]
    if missing:
        raise ValueError(f"paradigm {cls.name!r}: FitSpec conditions {missing} are not among its dims "
                         f"{sorted(coords)}")
    return {d: [str(v) for v in coords[d]] for d in spec.conditions}


def load_data(cls, spec, data: DataArg, coords: Mapping[str, Sequence[str]]) -> Tuple[xr.Dataset, str]:
    """The recorded data as a long-format Dataset, validated against the simulation's labels."""
    from pcneuro import datasets

    if data is None:
        if spec.dataset is None:
            raise ValueError(f"paradigm {cls.name!r} ships no recorded data: give --data FILE.csv")
        ds = datasets.load_behaviour(spec.dataset)
        source = f"pcneuro.datasets {spec.dataset}"
    elif isinstance(data, xr.Dataset):
        ds, source = data, data.attrs.get("source_file", data.attrs.get("name", "the given dataset"))
    else:
        path = Path(data)
        if path.suffix.lower() != ".csv":
            raise ValueError(f"--data {path}: expected a .csv file (format: docs/data_format.md)")
        ds = datasets.read_behaviour_csv(path, conditions=list(spec.conditions), labels=coords,
                                         value=spec.measure)
        source = str(path)
    if "point" not in ds.dims or "value" not in ds:
        raise ValueError(f"{source}: not in the long format (dim 'point', variable 'value')")
    missing = [d for d in spec.conditions if d not in ds.coords]
    if missing:
        raise ValueError(f"{source}: no condition column {missing} for paradigm {cls.name!r} "
                         f"(it pairs data with its dims {list(spec.conditions)})")
    for d in spec.conditions:
        bad = sorted({str(v) for v in ds[d].values} - set(coords[d]))
        if bad:
            raise ValueError(f"{source}: unknown {d} label {bad[0]!r} (allowed: {', '.join(coords[d])})")
    return ds, source


def observed(ds: xr.Dataset, spec, sim_labels: Sequence[Any], source: str, n_hyper: int) -> ObservedData:
    """ObservedData over the simulation's labels that the data has, in the simulation's order."""
    point_labels = {tuple(str(ds[d].values[i]) for d in spec.conditions) for i in range(ds.sizes["point"])}
    labels = [l for l in sim_labels if ((l,) if isinstance(l, str) else tuple(l)) in point_labels]
    data = ObservedData.from_dataset(ds, labels, condition_dims=list(spec.conditions))
    if spec.reference == "pooled_grid" and len(labels) != len(list(sim_labels)):
        missing = [l for l in sim_labels if l not in labels]
        raise ValueError(f"{source}: the reference's fit (§3.6) needs every cell; no data for "
                         f"{', '.join(map(str, missing))}")
    n_readout = 2 if spec.readout == "affine" else 1
    if len(data.y) < n_readout + n_hyper:
        raise ValueError(f"{source}: {len(data.y)} data point(s), fewer than the {n_readout + n_hyper} free "
                         f"parameters of the fit ({n_readout} read-out + {n_hyper} searched hyperparameters)")
    return data


def _grid_of(ds: xr.Dataset, measure: str) -> Dict[str, Tuple[Any, ...]]:
    """The grid axes of a results file, in the order of the measure's dims (the plan's order)."""
    from pcneuro.results import grid_dims

    axes = set(grid_dims(ds))
    return {d: tuple(v.item() if hasattr(v, "item") else v for v in ds[d].values)
            for d in ds[measure].dims if d in axes}


def fit(results: Union[xr.Dataset, str, os.PathLike], data: DataArg = None, *, n_boot: int = 200,
        level: float = 0.95, seed: int = 0, compat: bool = False) -> FitReport:
    """Fit a results file's simulations (every rule, every grid point) to recorded data.

    No simulation happens here: the best setting is chosen among the grid points the results hold,
    on their seeds. ``run_paradigm.py NAME --fit`` also refines the settings and confirms them on
    ≥ 100 fresh seeds. Returns a :class:`~pcneuro.fits.report.FitReport` (``.table()``,
    ``.to_dataset()``, ``.figure(path)``)."""
    from pcneuro.registry import paradigm_class

    ds = xr.open_dataset(results).load() if not isinstance(results, xr.Dataset) else results
    cls = paradigm_class(ds.attrs["paradigm"])
    spec = fit_spec(cls)
    grid = _grid_of(ds, spec.measure)
    da = ds[spec.measure]
    sim_labels = simulation_labels(da, spec.conditions)
    coords = {d: [str(v) for v in da[d].values] for d in spec.conditions}
    data_ds, source = load_data(cls, spec, data, coords)
    n_hyper = varied_count(spec, grid)
    obs = observed(data_ds, spec, sim_labels, source, n_hyper)
    cands = candidates_from_results(ds, spec, obs.labels, list(grid))
    seeds = next(iter(cands.values())).seeds
    indices = bootstrap_indices(len(seeds), obs, n_boot, seed) if n_boot else None
    fits = {r: analyse_rule(c, obs, spec, n_hyper=n_hyper, indices=indices, compat=compat) for r, c in cands.items()}
    notes = [f"best settings chosen among the results' {len(next(iter(cands.values())).settings)} grid point(s) on "
             f"its {len(seeds)} seeds; run_paradigm.py {cls.name} --fit refines them and confirms on >= 100 "
             f"fresh seeds"]
    return FitReport(cls.name, spec, obs, source, grid, fits, fits, level=level, confirmed=False, notes=notes)


def fit_paradigm(name: str, *, data: DataArg = None, rule: Union[str, Sequence[str]] = "all",
                 seeds: Optional[int] = None, preset: Optional[str] = None,
                 settings: Optional[Mapping[str, Any]] = None, grid: Optional[Mapping[str, Sequence[Any]]] = None,
                 config: Optional[SearchConfig] = None, device: str = "auto", out=None, write: bool = True,
                 figure: bool = True, quiet: bool = True, deterministic: bool = False,
                 command: Optional[str] = None, comm=None):
    """Screen, refine, confirm and fit (``run_paradigm.py NAME --fit``); returns (Dataset, FitReport)
    on rank 0, (None, None) elsewhere. Bad input raises ValueError/LookupError before anything runs."""
    from pcneuro import results as results_mod
    from pcneuro.distributed import world
    from pcneuro.registry import paradigm_class
    from pcneuro.runner import make_plan, resolve_device, run

    comm = comm or world()
    config = config or SearchConfig()
    cls = paradigm_class(name)
    spec = fit_spec(cls)
    plan = make_plan(cls, rule=rule, seeds=seeds, preset=preset, settings=settings, grid=grid)
    resolve_device(device, comm)
    coords = condition_coords(cls, spec, plan.runs[0].settings)
    data_ds, source = load_data(cls, spec, data, coords)
    sim_labels = labels_from_coords(coords, spec.conditions)
    obs = observed(data_ds, spec, sim_labels, source, varied_count(spec, plan.grid))
    path = results_mod.prepare_output(plan, out, comm) if write else None
    say = (lambda text: None) if quiet or not comm.is_root else (lambda text: sys.stderr.write(f"fit: {text}\n"))
    started = time.time()
    say(f"screen: {len(plan.runs)} runs ({len(plan.rules)} rule(s) x {len(plan.runs) // len(plan.rules)})")
    ds = run(cls, rule=list(plan.rules), seeds=list(plan.seeds), preset=preset, settings=settings, grid=grid,
             device=device, write=False, figure=False, quiet=quiet, deterministic=deterministic,
             command=command, comm=comm)
    from pcneuro.distributed import on_root

    screen = on_root(comm, lambda: candidates_from_results(ds, spec, obs.labels, list(plan.grid)))
    result = search(cls, spec, plan, screen, obs, obs.labels, config, device=device, comm=comm, quiet=quiet,
                    deterministic=deterministic, progress=say)
    if not comm.is_root:
        return None, None
    searched = {r: (result.searched[r], result.searched_chi2[r]) for r in result.final}
    notes = [f"screen: {len(plan.seeds)} seeds per setting; refine: {config.refine_rounds} round(s) of "
             f"{config.population} settings in log10 over {', '.join(result.log_axes) or 'no axis'}; confirm: "
             f"{config.finalists} finalist(s) per rule on seeds {result.confirm_seeds[0]}..{result.confirm_seeds[-1]}"
             + (f"; polish: lmfit Nelder-Mead, <= {config.polish} simulations per rule" if config.polish else "")]
    report = FitReport(cls.name, spec, obs, source, dict(plan.grid), result.screen, result.final,
                       level=config.level, confirmed=bool(config.confirm_seeds), searched=searched, notes=notes)
    fit_ds = report.to_dataset()
    merged = xr.merge([ds, fit_ds], combine_attrs="override", compat="override")
    merged.attrs.update(ds.attrs)
    merged.attrs.update(fit_ds.attrs)
    merged.attrs["fit_elapsed_seconds"] = round(time.time() - started, 3)
    merged.attrs["fit_config"] = _config_json(config)
    if write:
        results_mod.write_netcdf(merged, path)
        merged.encoding["source"] = str(path)
        if figure:
            from pcneuro.plotting import summary_figure

            merged.encoding["figure"] = str(summary_figure(merged, Path(path).with_suffix(".png")))
            merged.encoding["fit_figure"] = str(report.figure(Path(path).with_name(Path(path).stem + "-fit.png")))
    return merged, report


def _config_json(config: SearchConfig) -> str:
    import dataclasses
    import json

    return json.dumps(dataclasses.asdict(config), sort_keys=True)
