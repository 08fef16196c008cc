"""The paradigm plugin interface: an environment plus a protocol, declared as data.

A paradigm subclasses :class:`Paradigm`, declares its metadata, hyperparameters, default grid,
presets, measures and (optionally) the recorded data it is fitted to, and implements
:meth:`Paradigm.simulate` for a batch of runs of one rule. Register it with
``@pcneuro.register`` (built-ins live in ``paradigms/``; other packages use the entry-point group
``pcneuro.paradigms``). Nothing else in pcneuro changes for a new paradigm.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: its default, type, allowed range and meaning.

    ``structural``: changing it changes tensor shapes or the protocol's structure, so runs that
    differ in it are simulated in separate engine programs (they cannot share a run axis).
    """

    default: Any
    doc: str
    type: type = float
    min: Optional[float] = None
    max: Optional[float] = None
    choices: Optional[Tuple[Any, ...]] = None
    structural: bool = False
    units: str = ""

    def parse(self, name: str, value: Any) -> Any:
        """Convert (from a string if need be) and validate; raise ValueError naming the bad value."""
        v = value
        if isinstance(value, str):
            text = value.strip()
            try:
                if self.type is bool:
                    low = text.lower()
                    if low not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError
                    v = low in ("true", "1", "yes")
                elif self.type is int:
                    v = int(text)
                elif self.type is float:
                    v = float(text)
                else:
                    v = text
            except ValueError:
                raise ValueError(f"{name}={value!r} is not a valid {self.type.__name__}") from None
        else:
            if self.type is float and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool):
                v = float(v)
            elif self.type is int and isinstance(v, (int, np.integer)) and not isinstance(v, bool):
                v = int(v)
            elif not isinstance(v, self.type):
                raise ValueError(f"{name}={value!r} is not a valid {self.type.__name__}")
        if self.type is float and not np.isfinite(v):
            raise ValueError(f"{name}={value!r} must be finite")
        if self.min is not None and v < self.min:
            raise ValueError(f"{name}={value!r} is below the minimum {self.min}")
        if self.max is not None and v > self.max:
            raise ValueError(f"{name}={value!r} is above the maximum {self.max}")
        if self.choices is not None and v not in self.choices:
            raise ValueError(f"{name}={value!r} is not one of {', '.join(map(str, self.choices))}")
        return v


#: the name of a paradigm's own divergence flag: a boolean measure (one value per run) that the
#: runner's divergence warning counts beside non-finite values
DIVERGED = "diverged"


@dataclass(frozen=True)
class Measure:
    """A recorded quantity: its paradigm dims (after the run axis), meaning and units.

    ``nan_is_empty``: NaN marks a cell without events (e.g. a seed that never switched after a
    punishment), not a diverged run, so the runner's divergence warning ignores it."""

    dims: Tuple[str, ...]
    long_name: str
    units: str = "arbitrary units"
    nan_is_empty: bool = False


@dataclass(frozen=True)
class Preset:
    """A named scale: seeds, fixed settings and grid axes that replace the defaults."""

    seeds: Optional[int] = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    grid: Optional[Mapping[str, Sequence[Any]]] = None
    doc: str = ""


@dataclass(frozen=True)
class FitSpec:
    """How a paradigm's simulations are fitted to recorded behaviour (specs/behaviour.md §0.4-0.5).

    ``measure``: the measure fitted; ``conditions``: its dims that pair with the data's condition
    columns (labels must match, e.g. ``("group",)`` or ``("at", "choice")``); ``isel``: positions
    selected first (e.g. ``{"trial": -1}``); ``readout``: ``"affine"`` (k·m + b) or ``"scale"`` (k·m);
    ``dataset``: the packaged recorded data (:func:`pcneuro.datasets.load_behaviour`);
    ``search``: hyperparameters the fit searches (log10, bounded by their grid), default the grid
    axes; ``count``: a measure holding the number of events behind each seed's value (cells with
    0 events are NaN and are skipped in seed means; pooled means weight by it);
    ``reference``: the reference's own fit, the baseline: ``"closed_form"`` (§0.4, on seed means)
    or ``"pooled_grid"`` (§3.6: a grid search of w·v + b on pooled means, weighted by ``count``).
    """

    measure: str
    conditions: Tuple[str, ...]
    readout: str = "affine"
    isel: Mapping[str, int] = field(default_factory=dict)
    dataset: Optional[str] = None
    search: Optional[Tuple[str, ...]] = None
    count: Optional[str] = None
    reference: str = "closed_form"

    def __post_init__(self):
        if self.readout not in ("affine", "scale"):
            raise ValueError(f"FitSpec.readout must be 'affine' or 'scale', got {self.readout!r}")
        if self.reference not in ("closed_form", "pooled_grid"):
            raise ValueError(f"FitSpec.reference must be 'closed_form' or 'pooled_grid', got {self.reference!r}")
        if self.reference == "pooled_grid" and self.count is None:
            raise ValueError("FitSpec.reference='pooled_grid' needs the count measure")


ProgressFn = Callable[[int], None]


class MidRunState:
    """Where one ``simulate`` call's mid-run state lives: a chunk of a checkpointed job
    (:class:`pcneuro.checkpoint.CheckpointStore`)."""

    def __init__(self, store, chunk_id: int, run_indices: Sequence[int]):
        self.store, self.chunk_id, self.run_indices = store, int(chunk_id), [int(i) for i in run_indices]

    def load(self) -> Optional[Dict[str, Any]]:
        return self.store.load_state(self.chunk_id, self.run_indices)

    def save(self, state: Mapping[str, Any]) -> None:
        self.store.save_state(self.chunk_id, self.run_indices, state)


#: the default :meth:`Paradigm.bytes_per_run`: 1 MiB, generous for the small behavioural nets
DEFAULT_BYTES_PER_RUN = 1 << 20


class Paradigm:
    """Base class of every paradigm.

    Class attributes (data, no code in strings):
      name, title, tags, citation, figure, version;
      rules: the rules it compares (first is the default order of results; ``--rule all``);
      extra_rules: further rules it offers by name only (e.g. plain ``pc``/``bp`` beside ``ppc``/``rbp``);
      hyperparameters: name -> :class:`Hyper`;
      grid: default grid axes, name -> values;
      presets: name -> :class:`Preset` (at least ``quick`` and ``paper``);
      default_seeds; measures: name -> :class:`Measure`; main_measure (the summary's measure);
      summary_isel: positions selected from the main measure for the summary (e.g. the last trial);
      figure_x: the dim the summary figure runs along (e.g. ``"trial"``), if any;
      figure_point: the grid point the figure shows where it is in the grid (others are averaged);
      dataset: name of the recorded data in :mod:`pcneuro.datasets`, or None;
      fit: a :class:`FitSpec` saying how the measure is fitted to recorded data, or None;
      dtype: ``"float64"`` (default; tiny behavioural nets) or ``"float32"`` (benchmarks);
      host_environment: True when the environment lives on the host (e.g. gymnasium): the fake-device
      check (:mod:`pcneuro.fake_device`) then runs it up to its first host read.

    ``simulate`` is called with runs of one rule that share every structural hyperparameter; it
    returns ``{measure: array[n_runs, *measure.dims]}``.

    Mid-run checkpoints (long paradigms, e.g. one per epoch): inside ``simulate``,
    :meth:`saved_state` returns what :meth:`save_state` last stored for this same call (same runs)
    in an interrupted job that is now resumed, else None; :meth:`save_state` stores a snapshot
    (engine state from :meth:`Engine.state_dict`, generator states, the loop position, the measures
    so far) next to the output. Resumed from it, ``simulate`` must give the same bits as without
    the interruption. Both are no-ops when the job is not checkpointed (``write=False``).
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    tags: ClassVar[Tuple[str, ...]] = ()
    citation: ClassVar[str] = ""
    figure: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    rules: ClassVar[Tuple[str, ...]] = ("pc", "bp")
    extra_rules: ClassVar[Tuple[str, ...]] = ()
    hyperparameters: ClassVar[Dict[str, Hyper]] = {}
    grid: ClassVar[Dict[str, Tuple[Any, ...]]] = {}
    presets: ClassVar[Dict[str, Preset]] = {}
    default_seeds: ClassVar[int] = 8
    measures: ClassVar[Dict[str, Measure]] = {}
    main_measure: ClassVar[str] = ""
    summary_isel: ClassVar[Dict[str, int]] = {}
    figure_x: ClassVar[Optional[str]] = None
    figure_point: ClassVar[Dict[str, Any]] = {}
    dataset: ClassVar[Optional[str]] = None
    fit: ClassVar[Optional[FitSpec]] = None
    dtype: ClassVar[str] = "float64"
    host_environment: ClassVar[bool] = False

    @classmethod
    def torch_dtype(cls) -> torch.dtype:
        """The floating-point type ``simulate`` computes in (recorded in the results' attributes)."""
        return {"float32": torch.float32, "float64": torch.float64}[cls.dtype]

    def __init__(self, **overrides: Any):
        self.settings: Dict[str, Any] = {k: h.default for k, h in self.hyperparameters.items()}
        self.settings.update(self.validate(overrides))

    # -- configuration ----------------------------------------------------------------------------
    @classmethod
    def validate(cls, values: Mapping[str, Any]) -> Dict[str, Any]:
        out = {}
        for key, value in values.items():
            if key not in cls.hyperparameters:
                import difflib

                close = difflib.get_close_matches(key, cls.hyperparameters, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else f"; known: {', '.join(cls.hyperparameters)}"
                raise ValueError(f"unknown hyperparameter {key!r} for paradigm {cls.name!r}{hint}")
            out[key] = cls.hyperparameters[key].parse(key, value)
        return out

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        """Reject combinations no single :class:`Hyper` can judge (raise ValueError naming the value).

        Called for every run's settings while planning, before anything is simulated."""

    @classmethod
    def check_rule_settings(cls, rule: str, settings: Mapping[str, Any]) -> None:
        """Reject settings a rule cannot take (e.g. a linear-only rule on a nonlinear net): a one-line
        ValueError naming rule and value. Called for every (rule, grid point) while planning."""

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        """Coordinates of the paradigm's own dims (may depend on structural settings)."""
        return {}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        """How many progress ticks ``simulate`` reports per call (e.g. trials)."""
        return 1

    def step_cost(self, settings: Mapping[str, Any]) -> float:
        """Relative cost of one progress step of one run under ``settings``, compared only between
        the chunks of one job: it balances the MPI ranks (:func:`pcneuro.runner.chunk_cost`) and
        nothing else. The default, 1.0, says every setting costs the same per step; a paradigm
        whose structural settings change the network (depth, width) returns something proportional
        to the time one step takes, e.g. the number of weight layers."""
        return 1.0

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """A conservative estimate of the device memory one run of ``simulate`` needs at its peak
        (weights, latents, optimiser state and recorded measures). The runner sizes its chunks
        (engine programs) with it. The default, :data:`DEFAULT_BYTES_PER_RUN` (1 MiB), is generous
        for the small behavioural nets; a paradigm with big networks or long recordings overrides it."""
        return DEFAULT_BYTES_PER_RUN

    def simulate(self, rule: str, settings: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                 device: torch.device, progress: ProgressFn) -> Dict[str, np.ndarray]:
        raise NotImplementedError

    @classmethod
    def prepare(cls, settings: Sequence[Mapping[str, Any]]) -> None:
        """Fetch or check what ``simulate`` needs from outside (a dataset), for these runs' settings.

        Called once per job, on rank 0, before anything is written; a missing resource raises
        ``FileNotFoundError`` with one line saying where it looked and how to get it."""

    @classmethod
    def summary_table(cls, ds) -> Optional[str]:
        """The text summary printed after a run (None: the generic table of ``main_measure``)."""
        return None

    @classmethod
    def summary_plot(cls, ds, path) -> Optional[Any]:
        """Draw the summary figure to ``path`` and return the path (None: the generic figure)."""
        return None

    # -- mid-run checkpoints (bound by the runner around each ``simulate`` call) -----------------------
    _midrun: Optional["MidRunState"] = None

    def saved_state(self) -> Optional[Dict[str, Any]]:
        """The state this ``simulate`` call saved before the job was interrupted, or None."""
        return None if self._midrun is None else self._midrun.load()

    def save_state(self, state: Mapping[str, Any]) -> None:
        """Checkpoint this ``simulate`` call's state (tensors, numpy arrays, numbers, strings, and
        lists/tuples/dicts of them; tensors are copied to the host). Written atomically, replacing
        the previous one; a no-op when the job is not checkpointed."""
        if self._midrun is not None:
            self._midrun.save(state)

    # -- helpers for subclasses ---------------------------------------------------------------------
    @classmethod
    def stream_seed(cls, seed: int, purpose: str) -> int:
        """A seed for one random stream, derived from (paradigm, seed, purpose) only.

        Rules and hyperparameters never enter, so PC and BP runs of a seed see the same draws
        (a paired design), and a run's draws do not depend on which other runs are batched with it.
        """
        digest = hashlib.sha256(f"{cls.name}|{int(seed)}|{purpose}".encode()).digest()
        return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)

    @classmethod
    def generator(cls, seed: int, purpose: str) -> torch.Generator:
        return torch.Generator().manual_seed(cls.stream_seed(seed, purpose))


def stack_settings(settings: Sequence[Mapping[str, Any]], key: str, dtype=torch.float64,
                   device="cpu") -> torch.Tensor:
    """One hyperparameter of a batch of runs as an [R] tensor."""
    return torch.tensor([s[key] for s in settings], dtype=dtype, device=device)
