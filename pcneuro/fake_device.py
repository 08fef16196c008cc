"""A fake CUDA device for CPU-only machines: catches CPU/GPU tensor mixing and host reads.

DESIGN.md ("Speed"): code that inspects tensor values (validation) runs on host values before any
device work, and a simulation loop never reads a device value on the host (each read is a
synchronisation that stalls a GPU). Both are easy to break and invisible on a CPU, where every
tensor lives on the host. :class:`FakeCuda` makes them visible there. It is torch's
``FakeTensorMode`` with one change: only the device side is fake.

* Tensors on ``cuda`` are fake: shape, dtype and device, no values, no memory. An op that mixes a
  (non-scalar) CPU tensor with a CUDA one raises torch's device-mismatch error, as on a GPU.
* Host work stays real: an op whose inputs are all real tensors and that names no CUDA device runs
  normally, so host-side random draws, protocols and settings give their true values.
* Reading a device value on the host (``.item()``, ``bool(t)``, ``float(t)``, ``.tolist()``, or an
  op whose output shape depends on values, such as ``nonzero``) raises :class:`HostReadError`,
  naming the line that did it.
* A device→host copy (``.cpu()``, ``.to("cpu")``) gives a real host tensor of the right shape and
  dtype holding placeholders (NaN, or 0 for integers and booleans), so a simulation can hand its
  measures back; while :attr:`FakeCuda.transfers_allowed` is False it raises :class:`HostReadError`.

:func:`simulate` runs one call of a paradigm's ``simulate`` on the fake device and allows
device→host copies only after the paradigm has reported all its progress ticks
(:meth:`Paradigm.n_progress_steps`): the copies of the finished measures, never a read inside the
loop. A paradigm whose environment must live on the host (a gymnasium env steps on host actions)
declares ``host_environment = True``; it is run up to its first host read, which is reported
instead of raised.

Autograd cannot run on fake CUDA tensors in a CPU-only build of torch (it asks for a CUDA
context), so the engine's ``torch.func`` backend (conv nets, connectivity masks) is checked on
``meta``, torch's value-less device, which :class:`FakeCuda` watches the same way.

The values are placeholders: this checks where tensors live and when the host waits, not what a
simulation computes. Fake ops are slow (tens of microseconds each, whatever their size), so check
short protocols (few trials and inference steps); the paths per trial are the same.
"""
from __future__ import annotations

import os
import traceback
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensor,
    FakeTensorMode,
    unset_fake_temporarily,
)
from torch.utils import _pytree as pytree

__all__ = ["FakeCuda", "FakeRun", "HostReadError", "simulate"]

DEVICE = torch.device("cuda")
_aten = torch.ops.aten
_TORCH_DIR = os.path.dirname(torch.__file__)


class HostReadError(RuntimeError):
    """A device value was read on the host where the device program must not wait for it."""


def _caller() -> str:
    """The innermost stack frame outside torch and this module, as 'file:line (code)'."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(_TORCH_DIR) and frame.filename != __file__:
            return f"{frame.filename}:{frame.lineno} ({(frame.line or '').strip()})"
    return "unknown location"


def _names_cuda(x: Any) -> bool:
    if isinstance(x, torch.device):
        return x.type == "cuda"
    return isinstance(x, str) and x.startswith("cuda")


def _without_values(x: Any) -> bool:
    """A fake tensor (any device) or a meta tensor: no values to read."""
    return isinstance(x, FakeTensor) or (isinstance(x, torch.Tensor) and x.device.type == "meta")


def _on_device(x: Any) -> bool:
    """A tensor of the fake device: a fake CUDA tensor or a meta tensor."""
    return _without_values(x) and x.device.type != "cpu"


def _placeholder(like: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """A real host tensor shaped like ``like``: NaN for floating types, 0 (False) otherwise."""
    dtype = dtype or like.dtype
    fill = float("nan") if (dtype.is_floating_point or dtype.is_complex) else 0
    with unset_fake_temporarily():
        return torch.full(tuple(like.shape), fill, dtype=dtype)


class FakeCuda(FakeTensorMode):
    """``with FakeCuda():`` tensors on ``cuda`` are fake, host tensors are real (see the module doc).

    Tensors on ``meta`` (torch's value-less device) are device tensors too: host reads and
    device→host copies of them are handled as for fake CUDA tensors, their ops run as meta ops.
    Use ``meta`` where fake CUDA cannot go: on a CPU-only build of torch the autograd engine (the
    engine's ``torch.func`` backend: conv nets, connectivity masks) needs a real CUDA context.

    ``transfers_allowed``: whether a device→host copy returns placeholders (True, the default) or
    raises :class:`HostReadError`. ``transfers`` counts the copies made.
    """

    def __init__(self, transfers_allowed: bool = True):
        super().__init__(allow_non_fake_inputs=True)
        self.transfers_allowed = transfers_allowed
        self.transfers = 0

    def _to_host(self, src: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        if not self.transfers_allowed:
            raise HostReadError(f"device->host copy of a {tuple(src.shape)} tensor before the simulation "
                                f"finished, at {_caller()}: keep values on the device until the measures "
                                f"are returned")
        self.transfers += 1
        return _placeholder(src, dtype)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _aten._local_scalar_dense.default and _without_values(args[0]):
            raise HostReadError(f"host read of a device value (.item(), bool(), float(), .tolist()) at "
                                f"{_caller()}: the device would have to finish first; decide from host "
                                f"values (settings) or keep the decision on the device (torch.where)")
        if func is _aten._to_copy.default and _on_device(args[0]):
            target = kwargs.get("device")
            if target is not None and torch.device(target).type == "cpu":
                return self._to_host(args[0], kwargs.get("dtype"))
        if func is _aten.copy_.default and _on_device(args[1]) and not _without_values(args[0]):
            src = self._to_host(args[1])
            with unset_fake_temporarily():
                return args[0].copy_(src)
        leaves = pytree.tree_leaves((args, kwargs))
        if not any(isinstance(x, FakeTensor) or _names_cuda(x) for x in leaves):
            with unset_fake_temporarily():  # host work (real values) and meta ops
                return func(*args, **kwargs)
        try:
            return super().__torch_dispatch__(func, types, args, kwargs)
        except (DataDependentOutputException, DynamicOutputShapeException) as exc:
            raise HostReadError(f"{func} needs the values of a device tensor (a synchronisation) at "
                                f"{_caller()}") from exc


@dataclass
class FakeRun:
    """What :func:`simulate` saw: the returned measures (placeholder values, real shapes), the
    progress ticks reported and expected, and for a ``host_environment`` paradigm the first host
    read that stopped it (``stopped_at``; then ``measures`` is empty)."""

    measures: Dict[str, np.ndarray] = field(default_factory=dict)
    ticks: int = 0
    expected_ticks: int = 0
    stopped_at: Optional[str] = None


def simulate(paradigm, rule: str, settings: Sequence[Mapping[str, Any]], seeds: Sequence[int],
             device: torch.device = DEVICE) -> FakeRun:
    """One ``paradigm.simulate`` call (runs sharing the structural settings) on a fake CUDA device
    (``device="meta"`` for a paradigm whose engine needs autograd, see :class:`FakeCuda`).

    Device→host copies are allowed once the paradigm has reported its ``n_progress_steps`` ticks.
    Raises :class:`HostReadError` for a host read before that (for a paradigm with
    ``host_environment = True``: returns, with ``stopped_at`` set), torch's device-mismatch error
    for CPU/GPU mixing, and ``TypeError`` if a measure is not a numpy array."""
    run = FakeRun(expected_ticks=paradigm.n_progress_steps(settings[0]))
    mode = FakeCuda(transfers_allowed=False)

    def progress(n: int) -> None:
        run.ticks += n
        mode.transfers_allowed = run.ticks >= run.expected_ticks

    try:
        with mode:
            out = paradigm.simulate(rule, list(settings), list(seeds), device, progress)
    except HostReadError as exc:
        if not getattr(paradigm, "host_environment", False):
            raise
        run.stopped_at = str(exc)
        return run
    for name, value in out.items():
        if not isinstance(value, np.ndarray):
            raise TypeError(f"measure {name!r} is a {type(value).__name__}, not a numpy array")
    run.measures = dict(out)
    return run

