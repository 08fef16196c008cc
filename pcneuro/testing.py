"""The paradigm plugin contract, as checks (docs/plugins.md).

Three checks, used by pcneuro itself and by plugin authors in their own tests:

* :func:`check_paradigm` (the class): metadata, rules, hyperparameters, grid, presets (``quick``
  and ``paper`` required), measures, the summary-figure fields and the :class:`~pcneuro.FitSpec`
  agree with each other, and the default configuration and every preset plan. The registry runs it
  when a class is registered (``@pcneuro.register``: an error; an entry-point plugin: a warning in
  ``list_paradigms`` and one line in ``make``).
* :func:`check_simulate_output` (one ``simulate`` call): every declared measure, nothing else, each
  an array ``[runs, *measure dims]`` whose floating-point type is the paradigm's ``dtype``. The
  runner applies it to every call. Non-finite values pass: a diverging run is data (the runner
  warns), and NaN is an empty cell for measures with ``nan_is_empty``.
* :func:`run_quick` (end to end): the ``quick`` preset run without writing, its dataset's dims and
  dtypes, the summary table and figure, the progress ticks of one ``simulate`` call, and that a
  run's values do not depend on which runs share its call.

Problems are reported as one line each, naming the paradigm, the field, and what was expected.
"""
from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Type, Union

import numpy as np
import torch

from .paradigm import FitSpec, Hyper, Measure, Paradigm, Preset

REQUIRED_PRESETS = ("quick", "paper")
#: dims every results file has before the grid axes and the paradigm's own dims
RESERVED_DIMS = ("rule", "seed")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ParadigmContractError(TypeError):
    """A paradigm class breaks the plugin contract; ``problems`` lists every breach."""

    def __init__(self, cls: type, problems: Sequence[str]):
        self.problems = list(problems)
        name = getattr(cls, "name", "") or "?"
        where = f"{cls.__module__}.{cls.__qualname__}" if isinstance(cls, type) else repr(cls)
        super().__init__(f"paradigm {name!r} ({where}) breaks the plugin contract: " + "; ".join(self.problems))


# --------------------------------------------------------------------------------------- the class
def _is_names(value: Any) -> bool:
    """A tuple or list of strings (a bare string is the classic slip: ``("trial")``)."""
    return isinstance(value, (tuple, list)) and all(isinstance(v, str) for v in value)


def _parse_all(cls, where: str, values: Mapping[str, Any], problems: List[str]) -> bool:
    ok = True
    for key, value in values.items():
        if key not in cls.hyperparameters:
            problems.append(f"{where}: {key!r} is not a hyperparameter")
            ok = False
            continue
        try:
            cls.hyperparameters[key].parse(key, value)
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            ok = False
    return ok


def _check_axes(cls, where: str, grid: Any, problems: List[str]) -> None:
    if not isinstance(grid, Mapping):
        problems.append(f"{where} must be a dict {{hyperparameter: values}}, got {type(grid).__name__}")
        return
    for key, values in grid.items():
        if key not in cls.hyperparameters:
            problems.append(f"{where}: axis {key!r} is not a hyperparameter")
        elif isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
            problems.append(f"{where}: axis {key!r} needs a non-empty tuple of values, got {values!r}")
        else:
            for value in values:
                _parse_all(cls, where, {key: value}, problems)
            if len(set(values)) != len(values):
                problems.append(f"{where}: axis {key!r} repeats a value: {list(values)}")


def _static_problems(cls: Type[Paradigm]) -> List[str]:
    """Problems visible in the class attributes alone."""
    p: List[str] = []
    if not isinstance(cls.name, str) or not _NAME_RE.match(cls.name):
        p.append(f"name must be letters, digits, '_', '.' or '-' (it names the results folder), got {cls.name!r}")
    if not isinstance(cls.title, str):
        p.append(f"title must be a string, got {cls.title!r}")
    if not _is_names(cls.tags):
        p.append(f"tags must be a tuple of strings, got {cls.tags!r}")
    if not _is_names(cls.rules) or not cls.rules:
        p.append(f"rules must be a non-empty tuple of rule names, got {cls.rules!r}")
    else:
        bad = [r for r in cls.rules if r == "all" or not _KEY_RE.match(r)]
        if bad:
            p.append(f"rules {bad} are not usable names ('all' is reserved; no commas or spaces)")
        if len(set(cls.rules)) != len(cls.rules):
            p.append(f"rules repeat a name: {list(cls.rules)}")
    extra = getattr(cls, "extra_rules", ())
    if not _is_names(extra) or any(r == "all" or not _KEY_RE.match(r) or r in cls.rules for r in extra):
        p.append(f"extra_rules must be a tuple of rule names not in rules, got {extra!r}")
    if not isinstance(cls.dtype, str) or cls.dtype not in ("float32", "float64"):
        p.append(f"dtype must be 'float64' or 'float32', got {cls.dtype!r}")
    if cls.simulate is Paradigm.simulate:
        p.append("simulate(rule, settings, seeds, device, progress) is not implemented")

    hypers = cls.hyperparameters
    if not isinstance(hypers, Mapping) or not all(isinstance(h, Hyper) for h in hypers.values()):
        p.append("hyperparameters must be a dict {name: Hyper(...)}")
        return p  # everything below reads them
    for key, h in hypers.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            p.append(f"hyperparameter name {key!r} is not an identifier")
            continue
        try:
            h.parse(key, h.default)
        except ValueError as exc:
            p.append(f"hyperparameters[{key!r}]: the default is invalid ({exc})")

    _check_axes(cls, "grid", cls.grid, p)
    if not isinstance(cls.presets, Mapping) or not all(isinstance(v, Preset) for v in cls.presets.values()):
        p.append("presets must be a dict {name: Preset(...)}")
    else:
        missing = [k for k in REQUIRED_PRESETS if k not in cls.presets]
        if missing:
            p.append(f"presets lack {' and '.join(map(repr, missing))} (required: 'quick' for tests and a first "
                     f"look on a CPU, 'paper' for the published scale)")
        for key, preset in cls.presets.items():
            if preset.seeds is not None and (not isinstance(preset.seeds, int) or preset.seeds < 1):
                p.append(f"presets[{key!r}].seeds must be None or an int >= 1, got {preset.seeds!r}")
            _parse_all(cls, f"presets[{key!r}].settings", preset.settings, p)
            if preset.grid is not None:
                _check_axes(cls, f"presets[{key!r}].grid", preset.grid, p)
    if not isinstance(cls.default_seeds, int) or isinstance(cls.default_seeds, bool) or cls.default_seeds < 1:
        p.append(f"default_seeds must be an int >= 1, got {cls.default_seeds!r}")
    _parse_all(cls, "figure_point", cls.figure_point, p)
    if cls.dataset is not None and not isinstance(cls.dataset, str):
        p.append(f"dataset must be a packaged dataset name or None, got {cls.dataset!r}")

    measures = cls.measures
    if not isinstance(measures, Mapping) or not measures or not all(isinstance(m, Measure) for m in measures.values()):
        p.append("measures must be a non-empty dict {name: Measure(dims, long_name)}")
        return p
    # a grid axis becomes a dim of the results, beside the measures' own dims. Any hyperparameter can
    # be made one (--grid); only the declared axes are checked here, so that reversal_learning's
    # hyperparameter "choice" beside its dim "choice" passes (it breaks under --grid choice=...).
    gridded = set(cls.grid) if isinstance(cls.grid, Mapping) else set()
    if isinstance(cls.presets, Mapping):
        gridded |= {k for v in cls.presets.values() if isinstance(v, Preset) and isinstance(v.grid, Mapping)
                    for k in v.grid}
    for key, m in measures.items():
        if not isinstance(key, str) or not _KEY_RE.match(key):
            p.append(f"measure name {key!r} is not an identifier")
        if not _is_names(m.dims):
            p.append(f"measures[{key!r}].dims must be a tuple of dim names, got {m.dims!r} (one dim: ('trial',))")
            continue
        clash = [d for d in m.dims if d in RESERVED_DIMS or d in gridded or d in hypers or d in measures]
        if clash:
            p.append(f"measures[{key!r}] dims {clash} clash with 'rule', 'seed', a hyperparameter (any may "
                     f"become a grid axis) or a measure")
        if len(set(m.dims)) != len(m.dims):
            p.append(f"measures[{key!r}] repeats a dim: {list(m.dims)}")
    clash = [k for k in measures if k in hypers or k in RESERVED_DIMS]
    if clash:
        p.append(f"measures {clash} are named like a hyperparameter or 'rule'/'seed'")
    if any(not _is_names(m.dims) for m in measures.values()):
        return p
    main = measures.get(cls.main_measure)
    if main is None:
        p.append(f"main_measure {cls.main_measure!r} is not one of the measures ({', '.join(measures)})")
    else:
        bad = {k: v for k, v in cls.summary_isel.items() if k not in main.dims or not isinstance(v, int)}
        if bad:
            p.append(f"summary_isel {bad} must map dims of {cls.main_measure!r} {tuple(main.dims)} to int positions")
        if cls.figure_x is not None and cls.figure_x not in main.dims:
            p.append(f"figure_x {cls.figure_x!r} is not a dim of {cls.main_measure!r} {tuple(main.dims)}")
    if cls.fit is not None:
        p.extend(_fit_problems(cls))
    return p


def _packaged_datasets() -> List[str]:
    """Names of pcneuro's packaged datasets, without importing the loaders (pandas)."""
    spec = importlib.util.find_spec("pcneuro.datasets")
    folders = list(spec.submodule_search_locations or []) if spec else []
    return sorted({f.stem for folder in folders for f in Path(folder).glob("*.csv")})


def _fit_problems(cls) -> List[str]:
    fit, measures, p = cls.fit, cls.measures, []
    if not isinstance(fit, FitSpec):
        return [f"fit must be a FitSpec or None, got {type(fit).__name__}"]
    m = measures.get(fit.measure)
    if m is None:
        return [f"fit.measure {fit.measure!r} is not one of the measures ({', '.join(measures)})"]
    if not _is_names(fit.conditions):
        return [f"fit.conditions must be a tuple of dims of {fit.measure!r}, got {fit.conditions!r}"]
    bad = [d for d in fit.conditions if d not in m.dims]
    if bad:
        p.append(f"fit.conditions {bad} are not dims of {fit.measure!r} {tuple(m.dims)}")
    bad_isel = {k: v for k, v in fit.isel.items() if k not in m.dims or k in fit.conditions or not isinstance(v, int)}
    if bad_isel:
        p.append(f"fit.isel {bad_isel} must map dims of {fit.measure!r} that are not conditions to int positions")
    left = [d for d in m.dims if d not in fit.conditions and d not in fit.isel]
    if left:
        p.append(f"fit: dims {left} of {fit.measure!r} are neither conditions nor fixed by isel")
    if fit.count is not None:
        c = measures.get(fit.count)
        if c is None:
            p.append(f"fit.count {fit.count!r} is not one of the measures ({', '.join(measures)})")
        elif any(d not in m.dims for d in c.dims if d not in fit.isel):
            p.append(f"fit.count {fit.count!r} {tuple(c.dims)} has dims the fitted measure {tuple(m.dims)} lacks")
    if fit.search is not None:
        bad = [k for k in fit.search if k not in cls.hyperparameters]
        if bad or not _is_names(fit.search):
            p.append(f"fit.search {bad or fit.search!r} must be a tuple of hyperparameter names")
    if fit.dataset is not None or cls.dataset is not None:
        if fit.dataset is not None and cls.dataset is not None and fit.dataset != cls.dataset:
            p.append(f"fit.dataset {fit.dataset!r} differs from dataset {cls.dataset!r}")
        known = _packaged_datasets()
        for name in {fit.dataset, cls.dataset} - {None}:
            if name not in known:
                p.append(f"dataset {name!r} is not packaged with pcneuro ({', '.join(known) or 'none'}); "
                         f"use dataset=None and --data FILE.csv for your own")
    return p


def _dynamic_problems(cls: Type[Paradigm]) -> List[str]:
    """Problems that show when the class is used: defaults, coords, and every preset's plan."""
    from .runner import make_plan

    p: List[str] = []
    defaults = {k: h.default for k, h in cls.hyperparameters.items()}
    try:
        cls.check_settings(defaults)
        paradigm = cls()
        coords = paradigm.coords(defaults)
        steps = paradigm.n_progress_steps(defaults)
    except Exception as exc:  # noqa: BLE001 - reported, one line
        return [f"the default configuration fails: {type(exc).__name__}: {exc}"]
    if not isinstance(coords, Mapping):
        p.append(f"coords(settings) must return a dict {{dim: labels}}, got {type(coords).__name__}")
    else:
        dims = {d for m in cls.measures.values() for d in m.dims}
        extra = [d for d in coords if d not in dims]
        if extra:
            p.append(f"coords(settings) gives {extra}, which no measure has (measure dims: {sorted(dims)})")
    if not isinstance(steps, (int, np.integer)) or isinstance(steps, bool) or steps < 0:
        p.append(f"n_progress_steps(settings) must return an int >= 0, got {steps!r}")
    for preset in (None, *cls.presets):
        try:
            make_plan(cls, rule=cls.rules[0], seeds=1, preset=preset)
        except Exception as exc:  # noqa: BLE001 - reported, one line
            where = "the default grid" if preset is None else f"preset {preset!r}"
            p.append(f"{where} does not plan: {type(exc).__name__}: {exc}")
    return p


def contract_problems(cls: Any) -> List[str]:
    """Every way ``cls`` breaks the paradigm class contract (empty: it keeps it)."""
    if not (isinstance(cls, type) and issubclass(cls, Paradigm)):
        return [f"{cls!r} is not a subclass of pcneuro.Paradigm"]
    problems = _static_problems(cls)
    return problems or _dynamic_problems(cls)


def check_paradigm(cls: Type[Paradigm]) -> Type[Paradigm]:
    """Raise :class:`ParadigmContractError` listing every breach of the class contract; return ``cls``.

    Checked: a name usable as a folder; tags and rules as tuples of names; valid hyperparameter
    defaults; grid and preset values valid for their hyperparameters; presets ``quick`` and ``paper``;
    measures with tuple dims that do not clash with ``rule``, ``seed`` or the grid axes;
    ``main_measure``, ``summary_isel`` and ``figure_x`` referring to the main measure's dims;
    ``figure_point`` valid settings; the ``FitSpec`` consistent with the measures (its conditions
    and ``isel`` cover the fitted measure's dims) and its dataset packaged; ``simulate`` implemented;
    and the default configuration plus every preset accepted by ``check_settings`` and ``coords``.
    """
    problems = contract_problems(cls)
    if problems:
        raise ParadigmContractError(cls, problems)
    return cls


# ---------------------------------------------------------------------------- one simulate call
def _dtype_error(paradigm: Paradigm, key: str, actual: str) -> ValueError:
    fix = (f": compute in self.torch_dtype() or declare dtype = {actual!r}" if actual in ("float32", "float64")
           else "")
    return ValueError(f"paradigm {paradigm.name!r}: simulate returned measure {key!r} as {actual}, expected "
                      f"{paradigm.dtype} (the paradigm's dtype; integer or bool for counts){fix}")


def check_simulate_output(paradigm: Paradigm, out: Any, settings: Sequence[Mapping[str, Any]]) -> Dict[str, np.ndarray]:
    """``out`` of one ``simulate`` call for ``len(settings)`` runs, checked; returns numpy arrays.

    Raises ``ValueError`` (one line naming the paradigm, the measure, expected and actual) for a
    missing or undeclared measure, a shape that is not ``[runs, *dims]`` (dims with coordinates
    have their coordinates' lengths for ``settings[0]``), or a floating-point type other than the
    paradigm's ``dtype``. Integer and boolean measures (counts, flags) are accepted as they are.
    Torch tensors are copied to host numpy arrays. NaN and inf pass (see the module docstring).
    """
    name = paradigm.name
    if not isinstance(out, Mapping):
        raise ValueError(f"paradigm {name!r}: simulate returned {type(out).__name__}, expected a dict "
                         f"{{measure: array[runs, *dims]}} with {', '.join(paradigm.measures)}")
    missing = [m for m in paradigm.measures if m not in out]
    extra = [m for m in out if m not in paradigm.measures]
    if missing or extra:
        parts = ([f"did not return {', '.join(map(repr, missing))}"] if missing else []) + \
                ([f"returned undeclared {', '.join(map(repr, extra))}"] if extra else [])
        raise ValueError(f"paradigm {name!r}: simulate {' and '.join(parts)} "
                         f"(declared measures: {', '.join(paradigm.measures)})")
    coords = paradigm.coords(settings[0])
    want_float = np.dtype(paradigm.dtype)
    checked: Dict[str, np.ndarray] = {}
    for key, measure in paradigm.measures.items():
        value = out[key]
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and value.dtype not in (torch.float32, torch.float64):
                raise _dtype_error(paradigm, key, str(value.dtype).replace("torch.", ""))
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if array.dtype.kind not in "biuf" or (array.dtype.kind == "f" and array.dtype != want_float):
            raise _dtype_error(paradigm, key, str(array.dtype))
        expected = (len(settings), *[len(coords[d]) if d in coords else None for d in measure.dims])
        if array.ndim != len(expected) or any(e is not None and a != e for a, e in zip(array.shape, expected)):
            shown = ", ".join("any" if e is None else str(e) for e in expected)
            dims = ", ".join(["runs", *measure.dims])
            raise ValueError(f"paradigm {name!r}: simulate returned measure {key!r} with shape {tuple(array.shape)}, "
                             f"expected ({shown}) for dims ({dims})")
        checked[key] = array
    return checked


# -------------------------------------------------------------------------------------- end to end
def run_quick(paradigm: Union[str, Type[Paradigm]], device: str = "cpu"):
    """Run the ``quick`` preset of ``paradigm`` (a registered name or a class) end to end without
    writing, check what came back, and return the dataset.

    On top of :func:`check_paradigm` and the runner's per-call :func:`check_simulate_output`, it
    checks the dataset's dims and dtypes, that the summary table and figure draw, that one
    ``simulate`` call reports exactly ``n_progress_steps(settings[0])`` progress ticks, and that a
    run's values do not depend on which runs share its call (random draws from
    ``self.generator(seed, purpose)``, never from a global stream). A class not yet registered is
    registered (which checks it); a name registered to another class is a ``ValueError``.
    Raises ``AssertionError`` naming what differs, so it reads well in pytest.
    """
    from . import registry
    from .runner import make_plan, run

    if isinstance(paradigm, str):
        cls = check_paradigm(registry.paradigm_class(paradigm))
    else:
        cls = check_paradigm(paradigm)
        try:
            known = registry.paradigm_class(cls.name)
        except registry.UnknownParadigmError:
            known = registry.register(cls)
        if known is not cls:
            raise ValueError(f"run_quick: the name {cls.name!r} is registered to {known.__module__}.{known.__qualname__}, "
                             f"not to {cls.__module__}.{cls.__qualname__}")
    ds = run(cls.name, preset="quick", device=device, write=False, quiet=True)
    plan = make_plan(cls, preset="quick")
    lead = ["rule", "seed", *plan.grid]
    for key, measure in cls.measures.items():
        da = ds[key]
        assert da.dims == (*lead, *measure.dims), f"{cls.name}: {key} has dims {da.dims}, expected {(*lead, *measure.dims)}"
        if da.dtype.kind == "f":
            assert da.dtype == np.dtype(cls.dtype), f"{cls.name}: {key} is {da.dtype}, expected {cls.dtype}"
    from .cli import summary_text
    from .plotting import summary_figure

    summary_text(ds)
    with tempfile.TemporaryDirectory() as folder:
        summary_figure(ds, Path(folder) / "summary.png")
    _probe_one_call(cls, plan, torch.device(device))
    return ds


def _probe_one_call(cls: Type[Paradigm], plan, device: torch.device) -> None:
    """Progress ticks of one call, and one run simulated with a batch-mate equals it alone."""
    from .runner import program_key  # runner imports this module: import it late

    first = plan.runs[0]
    group = [r for r in plan.runs if program_key(cls, r) == program_key(cls, first)]
    pair = [group[0], group[-1]] if len(group) > 1 else [group[0]]
    paradigm = cls()
    ticks = []
    both = paradigm.simulate(first.rule, [r.settings for r in pair], [r.seed for r in pair], device, ticks.append)
    both = check_simulate_output(paradigm, both, [r.settings for r in pair])
    expected = paradigm.n_progress_steps(first.settings)
    assert sum(ticks) == expected, (f"{cls.name}: one simulate call reported {sum(ticks)} progress ticks, "
                                    f"expected n_progress_steps(settings[0]) = {expected}")
    if len(pair) < 2:
        return
    alone = paradigm.simulate(first.rule, [pair[1].settings], [pair[1].seed], device, lambda n: None)
    alone = check_simulate_output(paradigm, alone, [pair[1].settings])
    for key in cls.measures:
        a, b = both[key][1], alone[key][0]
        close = np.allclose(a, b, rtol=1e-5, atol=1e-8, equal_nan=True) if a.dtype.kind == "f" else np.array_equal(a, b)
        assert close, (f"{cls.name}: measure {key!r} of run (seed {pair[1].seed}) differs when simulated alone and "
                       f"with another run: draw random numbers from self.generator(seed, purpose), per run")
