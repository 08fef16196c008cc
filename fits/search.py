"""The batched hyperparameter search behind ``run_paradigm.py NAME --fit`` (behaviour spec §0.2, §0.5).

Three stages, each one batched simulation per rule (all candidate settings on the engine's run axis):

1. **screen**: the paradigm's grid (its default, a preset's or the user's) with the screening seeds;
2. **refine**: a population search in log10 space around the best candidates so far, bounded by the
   grid's range on every searched axis (``refine_rounds`` rounds of ``population`` points, the spread
   halving each round), on the same seeds so candidates compare on equal terms;
3. **confirm**: the ``finalists`` best candidates of each rule rerun with ``confirm_seeds`` (≥ 100)
   fresh seeds, disjoint from the screening seeds, so the reported fit is not the winner's curse of
   the screen. The best finalist is chosen and reported on these seeds, with a seed bootstrap.

The objective (χ² of the read-out at a setting, over fixed seeds) is a discontinuous function of the
learning rates — PC's latent-rate rule compares F strictly — so the settings are searched by the
batched population, not by lmfit's local minimisers; lmfit fits the read-out at every reported point.
Under MPI every rank takes part in every simulation; rank 0 analyses and broadcasts the next points.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from pcneuro.distributed import Communicator, on_root
from pcneuro.runner import Plan, simulate_points

from .analysis import Candidates, RuleFit, analyse_rule, candidates_from_arrays
from .readout import readout_grid
from .bootstrap import bootstrap_indices
from .readout import ObservedData


@dataclass(frozen=True)
class SearchConfig:
    """Settings of the fit pipeline; the defaults are the spec's (§0.2: ≥ 100 confirmation seeds).

    ``polish``: at most this many simulations of lmfit's Nelder–Mead from each rule's best
    finalist, over the log10 search axes within the grid's range, on the confirmation seeds (0: off).
    Each evaluation is one simulation of one setting, so it is worth it where that is cheap and the
    χ² surface is smooth (fear conditioning: the χ² along lr_mix_N is smooth to 3e-3)."""

    refine_rounds: int = 2
    population: int = 32
    centres: int = 4
    finalists: int = 4
    confirm_seeds: int = 100
    n_boot: int = 200
    level: float = 0.95
    seed: int = 0
    compat: bool = False
    polish: int = 0

    def __post_init__(self):
        for name in ("refine_rounds", "population", "centres", "finalists", "confirm_seeds", "n_boot", "polish"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r} must be an int >= 0")
        if self.population < 1 and self.refine_rounds > 0:
            raise ValueError("population must be >= 1 when refine_rounds > 0")
        if self.finalists < 1:
            raise ValueError(f"finalists={self.finalists} must be >= 1")
        if not 0 < self.level < 1:
            raise ValueError(f"level={self.level} must be between 0 and 1")


def log_search_axes(cls, spec, grid: Mapping[str, Sequence[Any]]) -> Dict[str, Tuple[float, float, float]]:
    """Searched axes that the refinement moves in log10: (low, high, grid spacing) per axis.

    An axis is moved when it is searched (the FitSpec's ``search``, default the grid axes), is a grid
    axis with ≥ 2 values, is a float hyperparameter, and every grid value is > 0."""
    search = spec.search if spec.search is not None else tuple(grid)
    out = {}
    for axis in search:
        values = grid.get(axis)
        if values is None or len(values) < 2 or cls.hyperparameters[axis].type is not float:
            continue
        v = np.array(sorted(float(x) for x in values))
        if (v <= 0).any():
            continue
        logs = np.log10(v)
        out[axis] = (float(logs[0]), float(logs[-1]), float(np.median(np.diff(logs))))
    return out


def varied_count(spec, grid: Mapping[str, Sequence[Any]]) -> int:
    """Hyperparameters the fit chooses among several values (each counts as a free parameter in
    AIC/BIC): every grid axis with ≥ 2 values, searched in log10 or not (e.g. init_sd in a sweep)."""
    return sum(1 for values in grid.values() if len(values) > 1)


def propose(cand: Candidates, chi2: np.ndarray, axes: Mapping[str, Tuple[float, float, float]], n: int,
            centres: int, spread: float, rng: np.random.Generator) -> List[Dict[str, Any]]:
    """Up to ``n`` new settings around the ``centres`` best candidates: each searched axis moves by
    N(0, (spread·grid spacing)²) in log10, clipped to the grid's range; other axes keep the centre's.
    Settings already simulated (or drawn twice) are dropped."""
    order = [int(i) for i in np.argsort(np.where(np.isfinite(chi2), chi2, np.inf)) if np.isfinite(chi2[i])]
    tops = order[:max(1, centres)]
    points, seen = [], {tuple(sorted(s.items())) for s in cand.settings}
    for j in range(n):
        centre = cand.settings[tops[j % len(tops)]]
        p = dict(centre)
        for axis, (lo, hi, step) in axes.items():
            x = math.log10(float(centre[axis])) + rng.normal(0.0, spread * step)
            p[axis] = float(10 ** min(max(x, lo), hi))
        key = tuple(sorted(p.items()))
        if key not in seen:  # clipping at the grid's edge can repeat a point: simulate it once
            seen.add(key)
            points.append(p)
    return points


def finalists(cand: Candidates, chi2: np.ndarray, k: int) -> List[Dict[str, Any]]:
    """The ``k`` best distinct candidate settings by χ² (NaN last, never chosen)."""
    out, seen = [], set()
    for i in np.argsort(np.where(np.isfinite(chi2), chi2, np.inf)):
        if not np.isfinite(chi2[i]):
            break
        key = tuple(sorted(cand.settings[int(i)].items()))
        if key not in seen:
            seen.add(key)
            out.append(dict(cand.settings[int(i)]))
        if len(out) == k:
            break
    return out


def polish(start: Mapping[str, Any], axes: Mapping[str, Tuple[float, float, float]], evaluate,
           max_nfev: int) -> Tuple[Dict[str, Any], float, int]:
    """lmfit Nelder–Mead over the log10 ``axes`` (bounded by the grid's range) from ``start``;
    ``evaluate(setting) -> χ²`` simulates one setting. Returns (best setting, its χ², evaluations)."""
    import lmfit

    params = lmfit.Parameters()
    names = {axis: f"log10_{axis}" for axis in axes}
    for axis, (lo, hi, _) in axes.items():
        params.add(names[axis], value=min(max(math.log10(float(start[axis])), lo), hi), min=lo, max=hi)
    seen: Dict[tuple, float] = {}

    def setting(p) -> Dict[str, Any]:
        return {**start, **{axis: float(10 ** p[name].value) for axis, name in names.items()}}

    def objective(p):
        point = setting(p)
        key = tuple(sorted(point.items()))
        if key not in seen:
            chi2 = evaluate(point)
            seen[key] = chi2 if np.isfinite(chi2) else 1e300  # a diverged setting is just very bad
        return seen[key]

    objective(params)
    lmfit.minimize(objective, params, method="nelder", max_nfev=max(max_nfev - 1, 1))  # the start counts
    best_key = min(seen, key=seen.get)
    return dict(best_key), seen[best_key], len(seen)


@dataclass
class SearchResult:
    """Everything the search made, per rule: the screen fit (grid), the pooled candidates after
    refinement with their χ², and the confirmed fit on fresh seeds."""

    screen: Dict[str, RuleFit]
    searched: Dict[str, Candidates]
    searched_chi2: Dict[str, np.ndarray]
    final: Dict[str, RuleFit]
    confirm_seeds: Tuple[int, ...]
    log_axes: Dict[str, Tuple[float, float, float]]
    n_hyper: int


def search(cls, spec, plan: Plan, screen: Dict[str, Candidates], data: ObservedData, labels: Sequence[Any],
           config: SearchConfig, *, device: str = "auto", comm: Optional[Communicator] = None,
           quiet: bool = True, deterministic: bool = False, progress=None) -> Optional[SearchResult]:
    """Refine and confirm after the screen (every rank calls this; rank 0 gets the result)."""
    comm = comm or Communicator(None)
    say = progress or (lambda text: None)
    grid = plan.grid
    axes = log_search_axes(cls, spec, grid)
    n_hyper = varied_count(spec, grid)
    fixed = dict(plan.settings)
    paradigm = cls()
    rng = np.random.default_rng(config.seed)
    rules = list(plan.rules)
    screen_fits: Dict[str, RuleFit] = {}
    pools: Dict[str, Candidates] = {}
    chi2s: Dict[str, np.ndarray] = {}
    seeds = tuple(plan.seeds)

    def analyse_screen():
        indices = bootstrap_indices(len(seeds), data, config.n_boot, config.seed) if config.n_boot else None
        for rule in rules:
            screen_fits[rule] = analyse_rule(screen[rule], data, spec, n_hyper=n_hyper, indices=indices,
                                             compat=config.compat)
            pools[rule], chi2s[rule] = screen[rule], screen_fits[rule].chi2

    on_root(comm, analyse_screen)

    def simulate(rule, points, seed_list, stage):
        full = [{**fixed, **p} for p in points]
        arrays = simulate_points(cls, rule, full, seed_list, device=device, comm=comm, quiet=quiet,
                                 deterministic=deterministic)
        return on_root(comm, lambda: candidates_from_arrays(arrays, paradigm.coords(full[0]), cls.measures, spec,
                                                            labels, rule, points, seed_list, stage))

    def pool(rule, new):
        pools[rule] = pools[rule].concat(new)
        chi2s[rule] = np.concatenate([chi2s[rule], readout_grid(new.values, data, spec.readout).chi2])

    for round_ in range(config.refine_rounds if axes else 0):
        spread = 0.5 ** (round_ + 1)
        for rule in rules:
            points = on_root(comm, lambda: propose(pools[rule], chi2s[rule], axes, config.population,
                                                   config.centres, spread, rng))
            points = comm.bcast(points)
            if not points:
                continue
            say(f"refine round {round_ + 1}/{config.refine_rounds}: {rule}, {len(points)} settings x "
                f"{len(seeds)} seeds")
            new = simulate(rule, points, seeds, "refine")
            on_root(comm, lambda: pool(rule, new))

    confirm_seeds = tuple(range(max(seeds) + 1, max(seeds) + 1 + config.confirm_seeds)) \
        if config.confirm_seeds else seeds
    final: Dict[str, RuleFit] = {}
    confirmed: Dict[str, Candidates] = {}
    for rule in rules:
        points = on_root(comm, lambda: finalists(pools[rule], chi2s[rule], config.finalists))
        points = comm.bcast(points)
        say(f"confirm: {rule}, {len(points)} finalist(s) x {len(confirm_seeds)} fresh seeds")
        confirmed[rule] = simulate(rule, points, confirm_seeds, "confirm")

    if config.polish and axes:
        # rank 0 drives lmfit, one single-process simulation per evaluation; the other ranks wait
        simulated: Dict[tuple, Candidates] = {}  # each polish point's simulation, kept for the final fit

        def evaluate(rule, point):
            full = [{**fixed, **point}]
            arrays = simulate_points(cls, rule, full, confirm_seeds, device=device, comm=Communicator(None),
                                     quiet=True, deterministic=deterministic)
            c = candidates_from_arrays(arrays, paradigm.coords(full[0]), cls.measures, spec, labels, rule, [point],
                                       confirm_seeds, "polish")
            simulated[(rule, tuple(sorted(point.items())))] = c
            return float(readout_grid(c.values, data, spec.readout).chi2[0])

        def run_polish():
            for rule in rules:
                chi2 = readout_grid(confirmed[rule].values, data, spec.readout).chi2
                if not np.isfinite(chi2).any():
                    continue
                start = confirmed[rule].settings[int(np.nanargmin(chi2))]
                say(f"polish: {rule}, lmfit Nelder-Mead from the best finalist, <= {config.polish} simulations")
                point, value, n_eval = polish(start, axes, lambda q: evaluate(rule, q), config.polish)
                if value < float(np.nanmin(chi2)):
                    confirmed[rule] = confirmed[rule].concat(simulated[(rule, tuple(sorted(point.items())))])
                say(f"polish: {rule}, chi2 {float(np.nanmin(chi2)):.4g} -> {min(value, float(np.nanmin(chi2))):.4g} "
                    f"in {n_eval} simulations")

        on_root(comm, run_polish)

    def analyse_final():
        indices = bootstrap_indices(len(confirm_seeds), data, config.n_boot, config.seed + 1) if config.n_boot else None
        for rule in rules:
            final[rule] = analyse_rule(confirmed[rule], data, spec, n_hyper=n_hyper, indices=indices,
                                       compat=config.compat)

    on_root(comm, analyse_final)
    if not comm.is_root:
        return None
    return SearchResult(screen_fits, pools, chi2s, final, confirm_seeds, axes, n_hyper)
