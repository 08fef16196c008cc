"""One batch's T-step loop captured once and replayed (CUDA graphs; DESIGN "Speed").

An eager PC inference step on a small network is a dozen or more tiny kernels, and on a GPU each
costs a launch: small programs are launch-bound. :class:`GraphedBatches` records one batch of an
:class:`~pcneuro.engine.core.Engine` as a CUDA graph per input signature (shapes and dtypes of the
input, target and output mask) and replays it for every later batch of that signature:

- the batch tensors are copied into static input buffers, which the graph reads;
- the parameters and the weight optimiser's state are updated in place (the engine's in-place
  update path, ``Engine(capture="inplace")``, equal to the functional one: see the tests), so the
  graph's pointers stay valid from batch to batch;
- the records the graph writes are static too, and are copied out after each replay.

Capturing needs warm-up batches (lazy library initialisation happens outside a capture); they run
on the real state, which is snapshotted before and restored after, so the first captured batch
computes what an eager first batch would. A parameter or optimiser state that the caller replaced
between batches (``engine.params[name] = ...``, ``reset_weight_optimizer()``) is copied into the
static storage before the next replay.

Modes (``Engine(capture=...)``): ``"auto"`` (the default: a CUDA graph on CUDA devices unless the
environment variable ``PCNEURO_CUDA_GRAPHS`` is ``0``; the CLI's ``--no-cuda-graphs`` sets it),
``"graph"`` (CUDA only), ``"off"`` (eager, functional updates), ``"inplace"`` (eager, in-place
updates) and ``"emulate"``, for CPU tests of this module: the "graph" re-runs the recorded batch on
the static buffers at each replay and writes into the same static outputs.
"""
from __future__ import annotations

import os
from dataclasses import fields
from typing import Callable, Dict, List, Optional, Tuple

import torch

Tensor = torch.Tensor

MODES = ("auto", "graph", "off", "inplace", "emulate")
ENV_SWITCH = "PCNEURO_CUDA_GRAPHS"
WARMUP_BATCHES = 2


def resolve_mode(mode: str, device: torch.device) -> str:
    """The effective mode: ``"graph"``, ``"emulate"``, ``"inplace"`` or ``"off"``."""
    if mode not in MODES:
        raise ValueError(f"capture must be one of {', '.join(MODES)}; got {mode!r}")
    if mode == "auto":
        off = os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "off", "false", "no")
        if device.type != "cuda" or off:
            return "off"
        # a CUDA device without CUDA (the fake device of the CPU tests) runs the path a graph records
        return "graph" if torch.cuda.is_available() else "inplace"
    if mode == "graph" and device.type != "cuda":
        raise ValueError(f"capture='graph' needs a CUDA device, the engine is on {device}")
    return mode


class _CudaGraph:
    """torch.cuda.CUDAGraph behind the two calls :class:`GraphedBatches` makes."""

    def __init__(self):
        self.graph = None

    def capture(self, fn: Callable[[], object]) -> object:
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            return fn()

    def replay(self) -> None:
        self.graph.replay()


class _EmulatedGraph:
    """A CPU stand-in with a graph's contract: capture returns static outputs; replay re-reads the
    static inputs and overwrites those outputs (by running the recorded function again)."""

    def __init__(self):
        self.fn = None
        self.out = None

    def capture(self, fn: Callable[[], object]) -> object:
        self.fn = fn
        self.out = _copy_record(fn())  # own storage (a record may hold expanded views)
        return self.out

    def replay(self) -> None:
        for dst, src in zip(_tensors(self.out), _tensors(self.fn())):
            dst.copy_(src)


def _tensors(record) -> List[Tensor]:
    """The tensors of a BatchRecord in a fixed order (lists of per-node tensors flattened)."""
    out: List[Tensor] = []
    for f in fields(record):
        v = getattr(record, f.name)
        if isinstance(v, Tensor):
            out.append(v)
        elif isinstance(v, list):
            out.extend(v)
    return out


def _copy_record(record):
    """A BatchRecord whose tensors are fresh copies (the graph's own are overwritten at each replay)."""
    values = {}
    for f in fields(record):
        v = getattr(record, f.name)
        if isinstance(v, Tensor):
            v = v.clone()
        elif isinstance(v, list):
            v = [t.clone() for t in v]
        values[f.name] = v
    return type(record)(**values)


def _signature(*tensors: Optional[Tensor]) -> Tuple:
    return tuple(None if t is None else (tuple(t.shape), t.dtype, t.device) for t in tensors)


class GraphedBatches:
    """The captured batches of one engine: one graph per input signature."""

    def __init__(self, engine, emulate: bool = False):
        self.engine = engine
        self.emulate = emulate
        self._graphs: Dict[Tuple, tuple] = {}
        # the static storage every graph of this engine reads and writes
        self._params = dict(engine.params)
        self._opt = {n: dict(st) for n, st in engine.opt_state.items()}

    # -- state that lives at fixed addresses -----------------------------------------------------------
    def _adopt_state(self) -> None:
        """Copy parameters or optimiser state the caller replaced into the static storage."""
        eng = self.engine
        for n, static in self._params.items():
            p = eng.params[n]
            if p is not static:
                static.copy_(p)
                eng.params[n] = static
        for n, st in self._opt.items():
            current = eng.opt_state[n]
            for k, static in st.items():
                if current[k] is not static:
                    static.copy_(current[k])
            eng.opt_state[n] = st

    def _snapshot(self) -> List[Tensor]:
        return [t.clone() for t in self._state_tensors()]

    def _restore(self, snap: List[Tensor]) -> None:
        for dst, src in zip(self._state_tensors(), snap):
            dst.copy_(src)

    def _state_tensors(self) -> List[Tensor]:
        return list(self._params.values()) + [t for st in self._opt.values() for t in st.values()]

    # -- capture and replay ------------------------------------------------------------------------------
    def _capture(self, key: Tuple, x0: Tensor, y: Tensor, mask: Optional[Tensor]) -> tuple:
        eng = self.engine
        static_in = [None if t is None else t.clone() for t in (x0, y, mask)]
        snap = self._snapshot()
        eng.backend_reset()

        def batch():
            return eng._run_batch(*static_in)

        if self.emulate:
            graph = _EmulatedGraph()
            out = graph.capture(batch)
        else:
            stream = torch.cuda.Stream(device=eng.device)
            stream.wait_stream(torch.cuda.current_stream(eng.device))
            with torch.cuda.stream(stream):
                for _ in range(WARMUP_BATCHES):
                    batch()
            torch.cuda.current_stream(eng.device).wait_stream(stream)
            self._restore(snap)
            eng.backend_reset()
            graph = _CudaGraph()
            out = graph.capture(batch)
        self._restore(snap)  # a CUDA capture ran nothing; the emulated one ran a batch: undo it
        eng.backend_reset()
        entry = (graph, static_in, out)
        self._graphs[key] = entry
        return entry

    def __call__(self, x0: Tensor, y: Tensor, mask: Optional[Tensor]):
        self._adopt_state()
        key = _signature(x0, y, mask)
        entry = self._graphs.get(key) or self._capture(key, x0, y, mask)
        graph, static_in, out = entry
        for dst, src in zip(static_in, (x0, y, mask)):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        return _copy_record(out)
