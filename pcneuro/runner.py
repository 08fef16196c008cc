"""Planning and executing runs: rules x grid points x seeds.

``make_plan`` resolves a paradigm's configuration (defaults <- preset <- explicit settings; the
default grid <- preset grid <- explicit grid, where a fixed setting collapses its axis to one value)
into a list of runs. ``chunk_plan`` cuts the runs into chunks, each one engine program (one rule,
one set of structural settings, at most ``MAX_RUNS_PER_PROGRAM`` runs), whatever the number of
ranks; ``execute`` deals whole chunks to the MPI ranks balanced by ``chunk_cost`` and gathers the
measures into full arrays on rank 0. ``run`` does all of it and returns (and by default writes) the
results.
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

from .distributed import Communicator, deal_chunks, guarded, on_root, world
from .paradigm import DIVERGED, MidRunState, Paradigm
from .registry import paradigm_class
from .testing import check_simulate_output

#: the largest number of runs one engine program (one chunk) takes: a memory bound, not semantics,
#: and never dependent on the number of ranks (the chunk plan must be the same for any K)
MAX_RUNS_PER_PROGRAM = 100_000
#: the memory one engine program may plan for on the CPU: a fixed, nominal 4 GiB, never the machine's
#: free memory (the chunk plan, and so the bits, must not depend on what else runs there)
CPU_BUDGET_BYTES = 4 << 30
#: the share of a GPU's *total* memory (a property of the device type) one engine program may plan for
GPU_BUDGET_FRACTION = 0.5


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
    """``"all"``: the rules the paradigm compares (``rules``); by name also its ``extra_rules``."""
    if isinstance(rule, str):
        if rule == "all":
            return tuple(cls.rules)
        rule = [r.strip() for r in rule.split(",")]
    known = tuple(cls.rules) + tuple(cls.extra_rules)
    if not rule:
        raise ValueError(f"no rule given (choose from {', '.join(known)}, all)")
    for r in rule:
        if r not in known:
            raise ValueError(f"rule {r!r} is not available for {cls.name!r} (choose from {', '.join(known)}, all)")
    return tuple(r for r in known if r in rule)


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
            cls.check_rule_settings(r, {**fixed, **point})
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


def structural_settings(cls, settings: Mapping[str, Any]) -> Dict[str, Any]:
    """The settings that change tensor shapes or the protocol (``Hyper.structural``)."""
    return {k: settings[k] for k, h in cls.hyperparameters.items() if h.structural}


def program_key(cls, run: RunSpec) -> Tuple:
    """Runs with equal keys can share one engine program: same rule, same structural settings."""
    return (run.rule, tuple(structural_settings(cls, run.settings).values()))


def chunk_plan(cls, runs: Sequence[RunSpec], max_runs: int = MAX_RUNS_PER_PROGRAM) -> List[List[RunSpec]]:
    """Runs -> the ordered chunks they are simulated in, each one engine program.

    A chunk holds runs of one rule that share every structural hyperparameter (``Hyper.structural``:
    tensor shapes and protocol), in plan order, at most ``max_runs`` of them; chunks come in the order
    their first run appears. Pure: it depends on the runs only, never on the number of ranks or the
    device, so the programs (and the engine's layout choice, which depends on R) are the same for
    one process and for K ranks (DESIGN.md, Determinism)."""
    if isinstance(max_runs, bool) or int(max_runs) != max_runs or max_runs < 1:
        raise ValueError(f"max_runs must be a positive integer, got {max_runs!r}")
    groups: Dict[Tuple, List[RunSpec]] = {}
    for r in runs:
        groups.setdefault(program_key(cls, r), []).append(r)
    chunks = []
    for members in groups.values():
        for i in range(0, len(members), int(max_runs)):
            chunks.append(members[i : i + int(max_runs)])
    return chunks


def memory_budget(device: torch.device) -> int:
    """Bytes one engine program may use on ``device``: :data:`GPU_BUDGET_FRACTION` of a GPU's total
    memory, :data:`CPU_BUDGET_BYTES` on the CPU. Never the free memory, so it is the same for every
    device of a type, whenever and wherever the job runs."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory * GPU_BUDGET_FRACTION)
    return CPU_BUDGET_BYTES


def default_chunk_size(cls, runs: Sequence[RunSpec], budget: int) -> int:
    """The largest chunk (runs per engine program) that fits ``budget`` bytes by the paradigm's
    :meth:`~pcneuro.paradigm.Paradigm.bytes_per_run` (the largest over the runs' structural groups),
    capped at :data:`MAX_RUNS_PER_PROGRAM`. A function of the configuration and the budget only."""
    paradigm = cls()
    per_group: Dict[Tuple, int] = {}
    for r in runs:
        key = program_key(cls, r)
        if key not in per_group:
            per_group[key] = int(paradigm.bytes_per_run(r.settings))
    per_run = max(1, max(per_group.values(), default=1))
    return int(max(1, min(MAX_RUNS_PER_PROGRAM, int(budget) // per_run)))


def resolve_chunk_size(cls, runs: Sequence[RunSpec], device: str, comm: Communicator,
                       chunk: Optional[int] = None) -> int:
    """``chunk`` (``--chunk N``) if given, else :func:`default_chunk_size` for the memory budget of
    rank 0's device type (:func:`memory_budget`), the same on every rank."""
    if chunk is not None:
        if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
            raise ValueError(f"--chunk {chunk!r}: must be a positive integer (runs per engine program)")
        return int(chunk)
    size = on_root(comm, lambda: default_chunk_size(cls, runs, memory_budget(resolve_device(device, comm))))
    return int(comm.bcast(size))


#: rules whose engine program makes one step per batch whatever T is (``build_rule`` sets T=1)
_ONE_STEP_RULES = ("bp",)
#: what one progress step costs besides its T inference steps, in inference steps: the feed-forward
#: pass, the weight update and the paradigm's own work (tests, bookkeeping). Measured on the paper
#: grids: a BP chunk took 1/4.3 of the PC chunk's time at T = 64 (small_data) and about 1/20 at
#: T = 128 (deep_fashion_mnist), not 1/64 and 1/128
BATCH_OVERHEAD_STEPS = 8


def chunk_cost(paradigm: Paradigm, chunk: Sequence[RunSpec]) -> float:
    """Estimated cost of simulating ``chunk``, used only to balance the ranks:
    runs x ``paradigm.n_progress_steps`` (e.g. trials) x (T + :data:`BATCH_OVERHEAD_STEPS`) x
    ``paradigm.step_cost``, where T is the ``T`` hyperparameter (inference steps per trial) if the
    paradigm has one and the rule iterates (every rule but BP), else 1, and ``step_cost`` the
    paradigm's relative cost of one step under the chunk's structural settings (1.0 unless the
    paradigm says otherwise, e.g. per weight layer)."""
    settings = chunk[0].settings
    steps = "T" in type(paradigm).hyperparameters and chunk[0].rule not in _ONE_STEP_RULES
    cost = float(paradigm.step_cost(settings))
    if not (cost >= 0.0 and cost != float("inf")):
        raise ValueError(f"paradigm {paradigm.name!r}: step_cost returned {cost!r} for {dict(settings)}; "
                         f"it must be finite and non-negative")
    inference = int(settings["T"]) if steps else 1
    return len(chunk) * int(paradigm.n_progress_steps(settings)) * (inference + BATCH_OVERHEAD_STEPS) * cost


@dataclass
class Distribution:
    """How a job's chunks were spread over the ranks (recorded in the results' attributes)."""

    chunks: List[Dict[str, Any]]  # per chunk id: rule, structural settings, number of runs, estimated cost
    chunks_per_rank: List[List[int]]  # the assignment of :func:`deal_chunks`
    chunks_simulated: List[List[int]]  # the chunk ids each rank handed to ``simulate``, counted by that rank
    devices: List[str]  # each rank's device, in rank order
    chunk_size: int = MAX_RUNS_PER_PROGRAM  # the most runs one chunk holds
    chunks_resumed: List[int] = field(default_factory=list)  # chunk ids loaded from checkpoints

    def attrs(self) -> Dict[str, Any]:
        """NetCDF attributes (JSON text, and the chunk size as a number)."""
        return {"devices": json.dumps(self.devices), "chunk_plan": json.dumps(self.chunks),
                "chunk_size": int(self.chunk_size), "chunks_per_rank": json.dumps(self.chunks_per_rank),
                "chunks_simulated": json.dumps(self.chunks_simulated),
                "chunks_resumed": json.dumps(self.chunks_resumed)}


def _simulate_share(paradigm: Paradigm, chunks: Mapping[int, Sequence[RunSpec]], device: torch.device,
                    show_progress: bool, store=None) -> Tuple[List[Tuple[int, Dict[str, np.ndarray]]], List[int]]:
    """Simulate this rank's chunks ({chunk id: runs}), one engine program each; return the per-run
    measures and the ids of the chunks simulated, in order. With a checkpoint ``store``
    (:class:`pcneuro.checkpoint.CheckpointStore`) each chunk is saved as soon as it is done."""
    total = sum(paradigm.n_progress_steps(members[0].settings) for members in chunks.values())
    bar = None
    if show_progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, desc=paradigm.name, unit="step", file=sys.stderr, leave=False)
    results: List[Tuple[int, Dict[str, np.ndarray]]] = []
    simulated: List[int] = []
    try:
        for chunk_id, members in chunks.items():
            indices = [r.index for r in members]
            paradigm._midrun = None if store is None else MidRunState(store, chunk_id, indices)
            try:
                out = paradigm.simulate(members[0].rule, [r.settings for r in members], [r.seed for r in members],
                                        device, (bar.update if bar is not None else (lambda n: None)))
            finally:
                paradigm._midrun = None
            simulated.append(chunk_id)
            out = check_simulate_output(paradigm, out, [r.settings for r in members])  # the plugin contract
            if store is not None:
                store.save(chunk_id, indices, out)
                store.remove_state(chunk_id)
            for i, r in enumerate(members):
                results.append((r.index, {k: np.asarray(v[i]) for k, v in out.items()}))
    finally:
        if bar is not None:
            bar.close()
    return results, simulated


def _execute_runs(cls, runs: Sequence[RunSpec], device: str, comm: Communicator, quiet: bool,
                  deterministic: bool, chunk_size: Optional[int] = None,
                  store=None) -> Tuple[Optional[Dict[int, Dict[str, np.ndarray]]], Optional[Distribution]]:
    """Simulate ``runs``: cut into chunks of at most ``chunk_size`` runs (:func:`chunk_plan`; default
    :func:`resolve_chunk_size`), whole chunks dealt to the ranks by estimated cost
    (:func:`deal_chunks`, :func:`chunk_cost`). With a checkpoint ``store``, chunks it holds already
    are loaded on rank 0 instead of simulated, and every chunk simulated is saved to it by its rank.
    On rank 0 return ({run index: {measure: array}}, Distribution), elsewhere (None, None)."""
    paradigm = cls()
    if chunk_size is None:
        chunk_size = resolve_chunk_size(cls, runs, device, comm)
    # pure, so every rank computes the same plan
    chunks = guarded(comm, lambda: chunk_plan(cls, runs, chunk_size))
    loaded: Dict[int, Dict[str, np.ndarray]] = {}
    if store is not None and comm.is_root:
        for cid, c in enumerate(chunks):
            got = store.load(cid, [r.index for r in c], list(cls.measures))
            if got is not None:
                loaded[cid] = got
    done = set(comm.bcast(sorted(loaded)))

    def deal():  # pure too: every rank computes the same assignment
        costs = [chunk_cost(paradigm, c) for c in chunks]
        todo = [i for i in range(len(chunks)) if i not in done]
        shares = deal_chunks([costs[i] for i in todo], comm.size)
        return costs, [[todo[j] for j in share] for share in shares]

    costs, assignment = guarded(comm, deal)

    def work():
        dev = resolve_device(device, comm)
        if dev.type == "cpu" and comm.size > 1:
            torch.set_num_threads(1)
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
            torch.backends.cuda.matmul.allow_tf32 = False
            torch.backends.cudnn.allow_tf32 = False
        share = {i: chunks[i] for i in assignment[comm.rank]}
        show = not quiet and comm.is_root
        if not deterministic:
            return (*_simulate_share(paradigm, share, dev, show_progress=show, store=store), str(dev))
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        before = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True)
        try:
            return (*_simulate_share(paradigm, share, dev, show_progress=show, store=store), str(dev))
        finally:
            torch.use_deterministic_algorithms(before)

    local = guarded(comm, work)
    gathered = comm.gather(local)
    if not comm.is_root:
        return None, None
    distribution = Distribution(
        chunks=[{"rule": c[0].rule, "structural": structural_settings(cls, c[0].settings),
                 "runs": len(c), "cost": cost} for c, cost in zip(chunks, costs)],
        chunks_per_rank=assignment, chunks_simulated=[part[1] for part in gathered],
        devices=[part[2] for part in gathered], chunk_size=chunk_size, chunks_resumed=sorted(loaded))
    by_index = {i: m for part in gathered for i, m in part[0]}
    for cid, measures in loaded.items():
        for j, r in enumerate(chunks[cid]):
            by_index[r.index] = {k: v[j] for k, v in measures.items()}
    return by_index, distribution


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
    return _execute(plan, device, comm, quiet, deterministic)[0]


def _execute(plan: Plan, device: str, comm: Optional[Communicator], quiet: bool, deterministic: bool,
             chunk_size: Optional[int] = None,
             store=None) -> Tuple[Optional[Dict[str, np.ndarray]], Optional[Distribution]]:
    """:func:`execute`, also returning (on rank 0) how the chunks were distributed."""
    comm = comm or Communicator(None)
    cls = paradigm_class(plan.paradigm)
    by_index, distribution = _execute_runs(cls, plan.runs, device, comm, quiet, deterministic, chunk_size, store)
    if by_index is None:
        return None, None
    shape = (len(plan.rules), len(plan.seeds), *[len(v) for v in plan.grid.values()])
    arrays = _assemble(cls, plan.runs, by_index, shape, lambda r: (r.rule_index, r.seed_index, *r.grid_index))
    return arrays, distribution


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
        cls.check_rule_settings(rules[0], settings)
        for si, s in enumerate(seed_list):
            runs.append(RunSpec(len(runs), rules[0], 0, s, si, (pi,), settings))
    if not runs:
        raise ValueError("simulate_points: no points given")
    by_index, _ = _execute_runs(cls, runs, device, comm, quiet, deterministic)
    if by_index is None:
        return None
    return _assemble(cls, runs, by_index, (len(points), len(seed_list)), lambda r: (r.grid_index[0], r.seed_index))


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`run`: ``done`` of ``total`` chunks are checkpointed in ``folder``."""

    def __init__(self, done: int, total: int, folder: Path, partial: int = 0):
        super().__init__(f"{done} of {total} chunks done")
        self.done, self.total, self.folder, self.partial = done, total, Path(folder), partial

    def message(self) -> str:
        part = f", {self.partial} part-way" if self.partial else ""
        return (f"interrupted: {self.done} of {self.total} chunks done{part} (checkpoints in {self.folder}); "
                f"rerun the same command with --resume {self.folder} to finish")


def _resume_output(out, resume) -> Optional[Union[str, os.PathLike]]:
    """The output to write when resuming: ``out`` (a ``.nc`` file) for ``resume=True``; for a path,
    the checkpoint folder's output or that ``.nc`` file itself (and ``out``, if given, must agree)."""
    from .checkpoint import SUFFIX, output_of

    if resume is None or resume is False:
        return out
    if resume is True:
        if out is None or Path(os.fspath(out)).suffix.lower() != ".nc":
            raise ValueError("--resume needs --out FILE.nc (the interrupted run's output) or --resume PATH "
                             "(its checkpoint folder)")
        return out
    target = Path(os.fspath(resume))
    if target.name.endswith(SUFFIX):
        target = output_of(target)
    elif target.suffix.lower() != ".nc":
        raise ValueError(f"--resume {resume}: give the checkpoint folder (*{SUFFIX}) or the output file (*.nc)")
    if out is not None and Path(os.fspath(out)) != target:
        raise ValueError(f"--resume {resume} belongs to {target}, not --out {out}")
    return target


def run(paradigm: Union[str, type], *, rule: Union[str, Sequence[str]] = "all",
        seeds: Union[None, int, Sequence[int]] = None, preset: Optional[str] = None,
        settings: Optional[Mapping[str, Any]] = None, grid: Optional[Mapping[str, Sequence[Any]]] = None,
        device: str = "auto", out: Optional[Union[str, os.PathLike]] = None, write: bool = True,
        figure: bool = True, quiet: bool = True, deterministic: bool = False, command: Optional[str] = None,
        comm: Optional[Communicator] = None, chunk: Optional[int] = None,
        resume: Union[None, bool, str, os.PathLike] = None, data_dir: Optional[Union[str, os.PathLike]] = None,
        download: Optional[bool] = None):
    """Plan, simulate and collect a paradigm's runs; return the xarray.Dataset (on rank 0).

    ``settings`` fixes hyperparameters (a fixed grid axis collapses to that value), ``grid`` makes
    hyperparameters axes. With ``write`` (default) the dataset is written atomically to ``out`` or
    to ``results/<paradigm>/<run-id>.nc``; its path is in ``ds.encoding["source"]``. With ``figure``
    (default) a summary figure goes next to it as ``<run-id>.png`` (``ds.encoding["figure"]``). Bad input
    raises ``ValueError``/``LookupError`` before anything is simulated or written.

    Chunks (engine programs) hold at most ``chunk`` runs (default: :func:`resolve_chunk_size`, from
    the configuration and the device type's total memory; recorded as the ``chunk_size`` attribute).
    With ``write``, each finished chunk is checkpointed in ``<out>.chunks/`` (:mod:`pcneuro.checkpoint`),
    removed once the file is written. ``resume`` (True with ``out`` naming a ``.nc`` file, or the path
    of the checkpoint folder or of its output) loads the finished chunks, simulates the rest and
    writes the same data as an uninterrupted run; a changed configuration is a ``ValueError``. An
    interruption (Ctrl-C) raises :class:`Interrupted` saying how many chunks are saved.

    ``data_dir`` and ``download`` (``--data-dir``, ``--no-download``) say where datasets are found
    and whether missing ones may be downloaded (:func:`pcneuro.datasets.images.data_options`); the
    paradigm's :meth:`~pcneuro.paradigm.Paradigm.prepare` fetches or checks them on rank 0 before
    anything is written, so missing data end the job with one line and nothing on disk.
    """
    from pcneuro.datasets.images import data_options

    with data_options(data_dir, download):
        return _run(paradigm, rule, seeds, preset, settings, grid, device, out, write, figure, quiet,
                    deterministic, command, comm, chunk, resume)


def divergence_warning(cls, arrays: Mapping[str, np.ndarray], n_lead: int, n_runs: int) -> Optional[str]:
    """One line on the runs that diverged, or None: a run counts once, whether a measure of it is
    non-finite (NaN ignored in ``nan_is_empty`` measures) or the paradigm flagged it in its boolean
    :data:`~pcneuro.paradigm.DIVERGED` measure; ``n_lead`` = the run dims (rule, seed, grid axes)."""
    runs_bad, reasons = None, []
    for name, values in arrays.items():
        values = np.asarray(values)
        flag = name == DIVERGED and values.dtype == np.bool_
        if flag:
            bad = values
        elif cls.measures[name].nan_is_empty:
            bad = np.isinf(values)  # NaN is an empty cell there, not divergence
        else:
            bad = ~np.isfinite(values)
        per_run = bad.reshape(*bad.shape[:n_lead], -1).any(-1)
        if per_run.any():
            reasons.append(f"flagged in '{name}'" if flag else f"non-finite {name}")
            runs_bad = per_run if runs_bad is None else runs_bad | per_run
    if runs_bad is None:
        return None
    return (f"{int(runs_bad.sum())} of {n_runs} runs diverged ({', '.join(reasons)}); "
            "kept as data in the results")


def _run(paradigm, rule, seeds, preset, settings, grid, device, out, write, figure, quiet, deterministic,
         command, comm, chunk, resume):
    """:func:`run` inside its data options."""
    from . import results
    from .checkpoint import CheckpointStore, checkpoint_dir, chunk_ids, plan_record

    comm = comm or world()
    plan = make_plan(paradigm, rule=rule, seeds=seeds, preset=preset, settings=settings, grid=grid)
    resolve_device(device, comm)  # a bad --device fails here, before anything is written
    cls = paradigm_class(plan.paradigm)
    on_root(comm, lambda: cls.prepare([r.settings for r in plan.runs]))  # data fetched once, before writing
    chunk_size = resolve_chunk_size(cls, plan.runs, device, comm, chunk)
    if resume and not write:
        raise ValueError("resume needs write=True (it finishes a results file)")
    started = time.time()
    path = results.prepare_output(plan, _resume_output(out, resume), comm) if write else None
    store = None
    if write:
        store = CheckpointStore(checkpoint_dir(path))
        chunks = chunk_plan(cls, plan.runs, chunk_size)
        n_chunks = len(chunks)
        record = plan_record(plan.config(), chunk_size, chunk_ids(chunks))
        on_root(comm, (lambda: store.open(record)) if resume else (lambda: store.create(record)))
    try:
        arrays, distribution = _execute(plan, device, comm, quiet, deterministic, chunk_size, store)
    except KeyboardInterrupt:
        if store is None or not comm.is_root:
            raise
        raise Interrupted(store.count_done(n_chunks), n_chunks, store.folder, store.count_partial(n_chunks)) from None
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
        **distribution.attrs(),
    }
    ds = results.build_dataset(plan, arrays, meta)
    warning = divergence_warning(cls, arrays, n_lead=2 + len(plan.grid), n_runs=len(plan.runs))
    if warning:
        sys.stderr.write(f"pcneuro: warning: {warning}\n")
    if write:
        results.write_netcdf(ds, path)
        ds.encoding["source"] = str(path)
        store.remove()  # the file holds everything now
        if figure:
            from .plotting import summary_figure

            ds.encoding["figure"] = str(summary_figure(ds, Path(path).with_suffix(".png")))
    return ds
