"""Wall time of the behavioural grids and fits (issue aims, one CPU core).

    OMP_NUM_THREADS=1 python benchmarks/behaviour_fits.py [--only fear_fit,sensorimotor_grid,sensorimotor_refine]

Prints, each with its aim:
  1. fear_fit: the full fear fit of `run_paradigm.py fear_conditioning --fit` — grid stage (both rules,
     64 points x 8 seeds), 2 refinement rounds of 32 settings, 4 finalists per rule on 100 fresh seeds
     and a 200-sample seed bootstrap;                                               aim: < 2 minutes
  2. sensorimotor_grid: the whole sensorimotor grid, 432 settings x 24 seeds x both rules;  aim: < 5 min
  3. sensorimotor_refine: the sensorimotor refinement after the grid (both rules, 24 seeds: 2 rounds of
     32 settings), with the finalists' confirmation on 100 fresh seeds timed separately; aim: < 30 min
These are single wall-clock measurements of whole workloads (minutes long), not ratios: run them on an
otherwise idle machine and read them as such.
"""
from __future__ import annotations

import argparse
import time

import torch

import pcneuro
from pcneuro.fits.analysis import candidates_from_results
from pcneuro.fits.search import SearchConfig, search
from pcneuro.fits.workflow import condition_coords, fit_paradigm, fit_spec, load_data, observed
from pcneuro.runner import make_plan

AIMS = {"fear_fit": 120.0, "sensorimotor_grid": 300.0, "sensorimotor_refine": 1800.0}


def fear_fit() -> float:
    start = time.perf_counter()
    _, report = fit_paradigm("fear_conditioning", device="cpu", write=False, quiet=True)
    elapsed = time.perf_counter() - start
    print(report.table().splitlines()[2:5])
    return elapsed


def sensorimotor(refine: bool) -> dict:
    times = {}
    start = time.perf_counter()
    ds = pcneuro.run("sensorimotor_adaptation", device="cpu", write=False, quiet=True)
    times["sensorimotor_grid"] = time.perf_counter() - start
    if not refine:
        return times
    cls = pcneuro.paradigm_class("sensorimotor_adaptation")
    spec = fit_spec(cls)
    plan = make_plan(cls)
    coords = condition_coords(cls, spec, plan.runs[0].settings)
    data, source = load_data(cls, spec, None, coords)
    obs = observed(data, spec, list(coords[spec.conditions[0]]), source, 3)
    screen = candidates_from_results(ds, spec, obs.labels, list(plan.grid))
    start = time.perf_counter()
    search(cls, spec, plan, screen, obs, obs.labels, SearchConfig(confirm_seeds=0, n_boot=0), device="cpu",
           quiet=True, progress=print)
    times["sensorimotor_refine"] = time.perf_counter() - start
    start = time.perf_counter()
    search(cls, spec, plan, screen, obs, obs.labels, SearchConfig(refine_rounds=0), device="cpu",
           quiet=True, progress=print)
    times["sensorimotor_confirm (100 seeds, bootstrap 200)"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="fear_fit,sensorimotor_grid,sensorimotor_refine")
    args = parser.parse_args()
    torch.set_num_threads(1)
    which = set(args.only.split(","))
    times = {}
    if "fear_fit" in which:
        times["fear_fit"] = fear_fit()
    if which & {"sensorimotor_grid", "sensorimotor_refine"}:
        times.update(sensorimotor("sensorimotor_refine" in which))
    print(f"{'workload':<48} {'seconds':>9} {'aim':>9}")
    for name, seconds in times.items():
        aim = AIMS.get(name)
        print(f"{name:<48} {seconds:9.1f} {'' if aim is None else f'< {aim:.0f}':>9}")


if __name__ == "__main__":
    main()
