"""Planning and executing runs: rules x grid points x seeds.

``make_plan`` resolves a paradigm's configuration (defaults <- preset <- explicit settings; the
default grid <- preset grid <- explicit grid, where a fixed setting collapses its axis to one value)
into a list of runs. ``execute`` deals the runs to MPI ranks, groups each rank's runs that share a
rule and every structural hyperparameter into one engine program, and gathers the measures into
full arrays on rank 0. ``run`` does all of it and returns (and by default writes) the results.
"""
from __future__ import annotations

import itertools
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .distributed import Communicator, deal, guarded, world
from .paradigm import Paradigm
from .registry import paradigm_class

#: the largest number of runs one engine program takes (memory bound, not semantics)
MAX_RUNS_PER_PROGRAM = 100_000


@dataclass(frozen=True)
class RunSpec:
    """One run: a rule, a grid point (indices into the grid axes), a seed, and its full settings."""

    index: int
    rule: str
    rule_index: int
    seed: int
    seed_index: int
    grid_index: Tuple[int, ...]
    settings: Mapping[str, Any]


@dataclass
class Plan:
    paradigm: str
    preset: Optional[str]
    rules: Tuple[str, ...]
    seeds: Tuple[int, ...]
    grid: Dict[str, Tuple[Any, ...]]
    settings: Dict[str, Any]
    runs: List[RunSpec] = field(default_factory=list)

    def config(self) -> Dict[str, Any]:
        """The fully resolved configuration, as plain JSON-able data."""
        return {
            "paradigm": self.paradigm,
            "preset": self.preset,
            "rules": list(self.rules),
            "seeds": list(self.seeds),
            "grid": {k: list(v) for k, v in self.grid.items()},
            "settings": dict(self.settings),
        }

    def to_json(self) -> str:
        return json.dumps(self.config(), sort_keys=True)


def _seed_list(seeds: Union[None, int, Sequence[int]], default: int) -> Tuple[int, ...]:
    if seeds is None:
        seeds = default
    if isinstance(seeds, (int, np.integer)) and not isinstance(seeds, bool):
        if seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {seeds}")
        return tuple(range(int(seeds)))
    out = tuple(int(s) for s in seeds)
    if not out:
        raise ValueError("no seeds given")
    if len(set(out)) != len(out):
        raise ValueError(f"duplicate seeds in {list(out)}")
    return out


def _rule_list(cls, rule: Union[str, Sequence[str]]) -> Tuple[str, ...]:
    if isinstance(rule, str):
        if rule == "all":
            return tuple(cls.rules)
        rule = [r.strip() for r in rule.split(",")]
    if not rule:
        raise ValueError(f"no rule given (choose from {', '.join(cls.rules)}, all)")
    for r in rule:
        if r not in cls.rules:
            raise ValueError(f"rule {r!r} is not available for {cls.name!r} (choose from {', '.join(cls.rules)}, all)")
    return tuple(r for r in cls.rules if r in rule)


def make_plan(paradigm: Union[str, type], rule: Union[str, Sequence[str]] = "all",
              seeds: Union[None, int, Sequence[int]] = None, preset: Optional[str] = None,
              settings: Optional[Mapping[str, Any]] = None,
              grid: Optional[Mapping[str, Sequence[Any]]] = None) -> Plan:
    cls = paradigm_class(paradigm) if isinstance(paradigm, str) else paradigm
    fixed: Dict[str, Any] = {k: h.default for k, h in cls.hyperparameters.items()}
    axes: Dict[str, Tuple[Any, ...]] = {k: tuple(v) for k, v in cls.grid.items()}
    preset_seeds = None
    if preset is not None:
        if preset not in cls.presets:
            raise ValueError(f"unknown preset {preset!r} for {cls.name!r} (choose from {', '.join(cls.presets)})")
        p = cls.presets[preset]
        fixed.update(cls.validate(p.settings))
        if p.grid is not None:
            axes = {k: tuple(cls.validate({k: v})[k] for v in vals) for k, vals in p.grid.items()}
        preset_seeds = p.seeds
    explicit = cls.validate(settings or {})
    fixed.update(explicit)
    for key in explicit:
        if key in axes:
            axes[key] = (explicit[key],)  # a fixed value collapses its grid axis
    for key, values in (grid or {}).items():
        values = list(values)
        if not values:
            raise ValueError(f"grid axis {key!r} has no values")
        parsed = tuple(cls.validate({key: v})[key] for v in values)
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"grid axis {key!r} repeats a value: {list(values)}")
        if key in explicit:
            raise ValueError(f"{key!r} is both fixed (--set) and a grid axis (--grid)")
        axes[key] = parsed
    for key in axes:
        fixed.pop(key, None)
    rules = _rule_list(cls, rule)
    seed_list = _seed_list(seeds, preset_seeds or cls.default_seeds)
    plan = Plan(cls.name, preset, rules, seed_list, axes, fixed)
    names = list(axes)
    _check_dims_fixed(cls, fixed, axes)
    index = 0
    for ri, r in enumerate(rules):
        for gi in itertools.product(*[range(len(axes[n])) for n in names]):
            point = {n: axes[n][i] for n, i in zip(names, gi)}
            cls.check_settings({**fixed, **point})
            for si, s in enumerate(seed_list):
                plan.runs.append(RunSpec(index, r, ri, s, si, tuple(gi), {**fixed, **point}))
                index += 1
    return plan


def _check_dims_fixed(cls, fixed: Mapping[str, Any], axes: Mapping[str, Tuple[Any, ...]]) -> None:
    """One results file holds one set of paradigm dims: a grid axis may not change them."""
    paradigm = cls()
    base = {**fixed, **{k: v[0] for k, v in axes.items()}}
    reference = {d: list(c) for d, c in paradigm.coords(base).items()}
    for key, values in axes.items():
        for value in values[1:]:
            coords = {d: list(c) for d, c in paradigm.coords({**base, key: value}).items()}
            if coords != reference:
                changed = ", ".join(d for d in reference if coords.get(d) != reference[d])
                raise ValueError(f"grid axis {key}={value!r} changes the paradigm's dims ({changed}); "
                                 f"run its values as separate commands with --set {key}=...")


def resolve_device(requested: str, comm: Communicator) -> torch.device:
    """``auto``: this rank's GPU (local rank modulo GPU count) if any, else the CPU."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{comm.local_rank() % torch.cuda.device_count()}")
        return torch.device("cpu")
    if requested == "cpu":
        return torch.device("cpu")
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"--device {requested}: no CUDA device is available here")
        dev = torch.device(requested)
        if dev.index is None:
            dev = torch.device(f"cuda:{comm.local_rank() % torch.cuda.device_count()}")
        if dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {requested}: only {torch.cuda.device_count()} CUDA device(s)")
        return dev
    raise ValueError(f"--device {requested!r} is not one of auto, cpu, cuda, cuda:I")


def _groups(cls, runs: Sequence[RunSpec]) -> List[List[RunSpec]]:
    structural = [k for k, h in cls.hyperparameters.items() if h.structural]
    groups: Dict[Tuple, List[RunSpec]] = {}
    for r in runs:
        key = (r.rule, tuple(r.settings[k] for k in structural))
        groups.setdefault(key, []).append(r)
    out = []
    for members in groups.values():
        for i in range(0, len(members), MAX_RUNS_PER_PROGRAM):
            out.append(members[i : i + MAX_RUNS_PER_PROGRAM])
    return out


def _simulate_share(paradigm: Paradigm, runs: Sequence[RunSpec], device: torch.device,
                    show_progress: bool) -> List[Tuple[int, Dict[str, np.ndarray]]]:
    groups = _groups(type(paradigm), runs)
    total = sum(paradigm.n_progress_steps(g[0].settings) for g in groups)
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=paradigm.name, unit="step", file=sys.stderr, leave=False)
    results: List[Tuple[int, Dict[str, np.ndarray]]] = []
    try:
        for members in groups:
            out = paradigm.simulate(members[0].rule, [r.settings for r in members], [r.seed for r in members],
                                    device, (bar.update if bar is not None else (lambda n: None)))
            for name in paradigm.measures:
                if name not in out:
                    raise RuntimeError(f"paradigm {paradigm.name!r} did not return measure {name!r}")
            for i, r in enumerate(members):
                results.append((r.index, {k: np.asarray(v[i]) for k, v in out.items()}))
    finally:
        if bar is not None:
            bar.close()
    return results


def _execute_runs(cls, runs: Sequence[RunSpec], device: str, comm: Communicator, quiet: bool,
                  deterministic: bool) -> Optional[Dict[int, Dict[str, np.ndarray]]]:
    """Simulate ``runs`` dealt over the ranks; on rank 0 return {run index: {measure: array}}, else None."""
    paradigm = cls()

    def work():
        dev = resolve_device(device, comm)
        if dev.type == "cpu" and comm.size > 1:
            torch.set_num_threads(1)
        if dev.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        share = deal(runs, comm.rank, comm.size)
        if not deterministic:
            return _simulate_share(paradigm, share, dev, show_progress=not quiet and comm.is_root)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            return _simulate_share(paradigm, share, dev, show_progress=not quiet and comm.is_root)
        finally:
            torch.use_deterministic_algorithms(before)

    local = guarded(comm, work)
    gathered = comm.gather(local)
    if not comm.is_root:
        return None
    return {i: m for part in gathered for i, m in part}


def _assemble(cls, runs: Sequence[RunSpec], by_index, shape: Tuple[int, ...], position) -> Dict[str, np.ndarray]:
    """Full arrays ``shape + measure shape`` from per-run results, ``position(run)`` its lead index."""
    arrays: Dict[str, np.ndarray] = {}
    for name in cls.measures:
        sample = by_index[runs[0].index][name]
        full = np.empty(shape + sample.shape, dtype=sample.dtype)
        for r in runs:
            value = by_index[r.index][name]
            if value.shape != sample.shape:
                raise RuntimeError(f"measure {name!r} changes shape between runs ({sample.shape} vs {value.shape})")
            full[position(r)] = value
        arrays[name] = full
    return arrays


def execute(plan: Plan, device: str = "auto", comm: Optional[Communicator] = None,
            quiet: bool = True, deterministic: bool = False) -> Optional[Dict[str, np.ndarray]]:
    """Simulate the plan; on rank 0 return {measure: array[rule, seed, *grid, *dims]}, else None.

    Numerics (engine spec §4.2 item 9): TF32 is off; ``deterministic`` also switches on
    ``torch.use_deterministic_algorithms`` (CUDA then needs CUBLAS_WORKSPACE_CONFIG, set here)."""
    comm = comm or Communicator(None)
    cls = paradigm_class(plan.paradigm)
    by_index = _execute_runs(cls, plan.runs, device, comm, quiet, deterministic)
    if by_index is None:
        return None
    shape = (len(plan.rules), len(plan.seeds), *[len(v) for v in plan.grid.values()])
    return _assemble(cls, plan.runs, by_index, shape, lambda r: (r.rule_index, r.seed_index, *r.grid_index))


def simulate_points(paradigm: Union[str, type], rule: str, points: Sequence[Mapping[str, Any]],
                    seeds: Sequence[int], device: str = "auto", comm: Optional[Communicator] = None,
                    quiet: bool = True, deterministic: bool = False) -> Optional[Dict[str, np.ndarray]]:
    """Simulate arbitrary settings (not a grid) of one rule: ``points`` are complete or partial
    settings (missing keys take the defaults), each run for every seed. Runs that share the
    structural settings share one engine program, as in :func:`execute`. On rank 0 returns
    {measure: array[point, seed, *dims]}, else None. Used by the fitting layer's searches."""
    comm = comm or Communicator(None)
    cls = paradigm_class(paradigm) if isinstance(paradigm, str) else paradigm
    rules = _rule_list(cls, rule)
    if len(rules) != 1:
        raise ValueError(f"simulate_points takes one rule, got {rule!r}")
    seed_list = _seed_list(list(seeds), cls.default_seeds)
    defaults = {k: h.default for k, h in cls.hyperparameters.items()}
    runs: List[RunSpec] = []
    for pi, point in enumerate(points):
        settings = {**defaults, **cls.validate(point)}
        cls.check_settings(settings)
        for si, s in enumerate(seed_list):
            runs.append(RunSpec(len(runs), rules[0], 0, s, si, (pi,), settings))
    if not runs:
        raise ValueError("simulate_points: no points given")
    by_index = _execute_runs(cls, runs, device, comm, quiet, deterministic)
    if by_index is None:
        return None
    return _assemble(cls, runs, by_index, (len(points), len(seed_list)), lambda r: (r.grid_index[0], r.seed_index))


def run(paradigm: Union[str, type], *, rule: Union[str, Sequence[str]] = "all",
        seeds: Union[None, int, Sequence[int]] = None, preset: Optional[str] = None,
        settings: Optional[Mapping[str, Any]] = None, grid: Optional[Mapping[str, Sequence[Any]]] = None,
        device: str = "auto", out: Optional[Union[str, os.PathLike]] = None, write: bool = True,
        figure: bool = True, quiet: bool = True, deterministic: bool = False, command: Optional[str] = None,
        comm: Optional[Communicator] = None):
    """Plan, simulate and collect a paradigm's runs; return the xarray.Dataset (on rank 0).

    ``settings`` fixes hyperparameters (a fixed grid axis collapses to that value), ``grid`` makes
    hyperparameters axes. With ``write`` (default) the dataset is written atomically to ``out`` or
    to ``results/<paradigm>/<run-id>.nc``; its path is in ``ds.encoding["source"]``. With ``figure``
    (default) a summary figure goes next to it as ``<run-id>.png`` (``ds.encoding["figure"]``). Bad input
    raises ``ValueError``/``LookupError`` before anything is simulated or written.
    """
    from . import results

    comm = comm or world()
    plan = make_plan(paradigm, rule=rule, seeds=seeds, preset=preset, settings=settings, grid=grid)
    resolve_device(device, comm)  # a bad --device fails here, before anything is written
    started = time.time()
    path = results.prepare_output(plan, out, comm) if write else None
    arrays = execute(plan, device=device, comm=comm, quiet=quiet, deterministic=deterministic)
    if not comm.is_root:
        return None
    finished = time.time()
    meta = {
        "command": command if command is not None else " ".join(sys.argv),
        "device": str(resolve_device(device, comm)),
        "mpi_size": comm.size,
        "start_time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "end_time": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(finished)),
        "elapsed_seconds": round(finished - started, 3),
        "tf32": int(torch.backends.cuda.matmul.allow_tf32),
        "deterministic": int(deterministic or torch.are_deterministic_algorithms_enabled()),
    }
    ds = results.build_dataset(plan, arrays, meta)
    measures = paradigm_class(plan.paradigm).measures
    for name, values in arrays.items():
        if measures[name].nan_is_empty:
            values = np.where(np.isnan(values), 0.0, values)  # NaN is an empty cell there, not divergence
        bad = ~np.isfinite(values)
        if bad.any():
            n_lead = 2 + len(plan.grid)
            runs_bad = int(bad.reshape(*bad.shape[:n_lead], -1).any(-1).sum())
            sys.stderr.write(f"pcneuro: warning: {runs_bad} of {len(plan.runs)} runs diverged "
                             f"(non-finite {name}); kept as NaN/inf in the results\n")
    if write:
        results.write_netcdf(ds, path)
        ds.encoding["source"] = str(path)
        if figure:
            from .plotting import summary_figure

            ds.encoding["figure"] = str(summary_figure(ds, Path(path).with_suffix(".png")))
    return ds
