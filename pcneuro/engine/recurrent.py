"""GeneRec and Almeida–Pineda: recurrent rules with persistent states (theory spec §8, P6).

These two rules are not configurations of the PC engine's loop (:mod:`pcneuro.engine.core`): their
states are not reset to a feed-forward sweep at each batch but **persist across updates**, the
relaxation sweeps the layers **in place** (layer l sees the already updated layer l−1 of the same
sweep: Gauss–Seidel), and the weight change compares two phases instead of reading one energy
gradient. They run on the same run-stacked tensors as the engine ([R, ...] parameters, per-run
rates as [R] tensors, no host reads).

Network (spec §8, row-vector convention). Layers 0 … L (layer 0 the input, L the output), states
x_l of shape [R, B, n_l]; weights W_l of shape [R, n_l, n_{l+1}] for l = 0 … L−1. Layer l+1 receives
f(x_l) W_l, layer l the feedback f(x_{l+1}) W_lᵀ; f acts on every layer, the input included.
Layer 0 is clamped to the data at the start of every update.

GeneRec (both phases, textbook rule), rate γ, ``steps`` sweeps per phase, no discount:

* dynamics x_l += γ(−x_l + f′(x_l) ⊙ [f(x_{l−1})W_{l−1} + f(x_{l+1})W_lᵀ]), no feedback term at the top;
* minus phase: output free, relax layers 1 … L → x⁻; plus phase: from x⁻, clamp the output to the
  target, relax layers 1 … L−1 → x⁺;
* ΔW_l = f(x_l⁺)ᵀ f(x_{l+1}⁺) − f(x_l⁻)ᵀ f(x_{l+1}⁻) (summed over the batch), W_l += η ΔW_l / B.

Almeida–Pineda (both phases, textbook rule), rate γ, ``steps`` sweeps per phase:

* free phase, l = 1 … L: x_l += γ(−x_l + f(x_{l−1})W_{l−1} + f(x_{l+1})W_lᵀ) (no f′, no top feedback);
* adjoint phase with the constant error J = y − x_L, l = 0 … L:
  a_l += γ(−a_l + [0<l<L] f′(x_l) ⊙ a_{l−1}W_{l−1} + [l<L] f′(x_l) ⊙ a_{l+1}W_lᵀ + [l=L] J);
* ΔW_l = f(x_l)ᵀ a_{l+1} (summed over the batch), W_l += η ΔW_l / B.

``free_phase=False`` reproduces the published runs instead (spec §10 #5, below): GR takes only the plus
phase and the Hebbian term f(x_l⁺)ᵀ f(x_{l+1}⁺); AP never relaxes its states (J stays constant).

The adjoints a start as a copy of the states given to :class:`AlmeidaPineda` (spec §8: "a copy of
x"; the paradigm clamps the input before copying, so a_0 starts at the data) and persist too.

Where the published code departs (spec §10 #5): its runs skipped the free/minus phase (AP's forward
states never relaxed, so J stayed constant; GR applied only its plus-phase Hebbian term). This module
implements the intended textbook rules with both phases by default; published GR/AP values are qualitative
only.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import torch

from .activations import ActivationFn, activation

Tensor = torch.Tensor
PerRun = Union[float, Sequence[float], Tensor]

__all__ = ["RecurrentRecord", "GeneRec", "AlmeidaPineda", "generec_relax", "ap_free_relax", "ap_adjoint_relax",
           "generec_delta", "ap_delta", "rate_tensor"]


def rate_tensor(value: PerRun, n_runs: int, dtype, device) -> Tensor:
    """A rate (scalar or one value per run) as an [R, 1, 1] tensor that broadcasts over [R, B, n]."""
    t = torch.as_tensor(value, dtype=dtype).to(device)
    if t.ndim == 0:
        t = t.expand(n_runs)
    if tuple(t.shape) != (n_runs,):
        raise ValueError(f"a per-run rate must be a scalar or have {n_runs} entries, got shape {tuple(t.shape)}")
    return t.reshape(n_runs, 1, 1)


def _check_shapes(weights: Sequence[Tensor], states: Sequence[Tensor]) -> None:
    if len(weights) < 1:
        raise ValueError("a recurrent net needs at least one weight layer")
    if len(states) != len(weights) + 1:
        raise ValueError(f"{len(weights)} weight layers need {len(weights) + 1} state layers, got {len(states)}")
    R, B = states[0].shape[0], states[0].shape[1]
    for l, w in enumerate(weights):
        want = (R, states[l].shape[-1], states[l + 1].shape[-1])
        if tuple(w.shape) != want:
            raise ValueError(f"weight W_{l} has shape {tuple(w.shape)}, expected {want} "
                             f"(row convention [R, n_l, n_l+1])")
    for l, x in enumerate(states):
        if x.ndim != 3 or x.shape[:2] != (R, B):
            raise ValueError(f"state x_{l} has shape {tuple(x.shape)}, expected [R={R}, B={B}, n_{l}]")


# -- the phases (functions of explicit tensors; they rebind list entries, never write into a tensor) -----
def generec_relax(weights: Sequence[Tensor], x: List[Tensor], layers: Sequence[int], steps: int, rate: Tensor,
                  act: ActivationFn) -> List[Tensor]:
    """``steps`` in-place ascending sweeps of the GeneRec dynamics over ``layers`` (others stay clamped).

    x_l += γ(−x_l + f′(x_l) ⊙ [f(x_{l−1})W_{l−1} + f(x_{l+1})W_lᵀ]); the top layer has no feedback term.
    ``x`` (the list) is updated and returned; ``rate`` broadcasts over [R, B, n] (:func:`rate_tensor`)."""
    top = len(weights)
    fx = [act.forward(v) for v in x]
    for _ in range(steps):
        for l in layers:
            drive = torch.matmul(fx[l - 1], weights[l - 1])
            if l < top:
                drive = drive + torch.matmul(fx[l + 1], weights[l].transpose(-1, -2))
            x[l] = x[l] + rate * (act.backward(drive, x[l], fx[l]) - x[l])
            fx[l] = act.forward(x[l])
    return x


def ap_free_relax(weights: Sequence[Tensor], x: List[Tensor], steps: int, rate: Tensor,
                  act: ActivationFn) -> List[Tensor]:
    """AP's free phase: ``steps`` in-place ascending sweeps over layers 1 … L of
    x_l += γ(−x_l + f(x_{l−1})W_{l−1} + f(x_{l+1})W_lᵀ) (no f′, no feedback at the top)."""
    top = len(weights)
    fx = [act.forward(v) for v in x]
    for _ in range(steps):
        for l in range(1, top + 1):
            drive = torch.matmul(fx[l - 1], weights[l - 1])
            if l < top:
                drive = drive + torch.matmul(fx[l + 1], weights[l].transpose(-1, -2))
            x[l] = x[l] + rate * (drive - x[l])
            fx[l] = act.forward(x[l])
    return x


def ap_adjoint_relax(weights: Sequence[Tensor], x: Sequence[Tensor], a: List[Tensor], error: Tensor, steps: int,
                     rate: Tensor, act: ActivationFn) -> List[Tensor]:
    """AP's adjoint phase: ``steps`` in-place ascending sweeps over layers 0 … L of
    a_l += γ(−a_l + [0<l<L] f′(x_l) ⊙ a_{l−1}W_{l−1} + [l<L] f′(x_l) ⊙ a_{l+1}W_lᵀ + [l=L] J),
    with the states x fixed and J = ``error`` (y − x_L) constant."""
    top = len(weights)
    fx = [act.forward(v) for v in x]
    for _ in range(steps):
        for l in range(top + 1):
            if l == top:
                drive = error
            else:
                drive = torch.matmul(a[l + 1], weights[l].transpose(-1, -2))
                if l > 0:
                    drive = drive + torch.matmul(a[l - 1], weights[l - 1])
                drive = act.backward(drive, x[l], fx[l])
            a[l] = a[l] + rate * (drive - a[l])
    return a


def _hebb(pre: Tensor, post: Tensor) -> Tensor:
    """Σ_b preᵀ post: [R, B, n_l] × [R, B, n_{l+1}] → [R, n_l, n_{l+1}]."""
    return torch.matmul(pre.transpose(-1, -2), post)


def generec_delta(minus: Sequence[Tensor], plus: Sequence[Tensor], act: ActivationFn) -> List[Tensor]:
    """ΔW_l = f(x_l⁺)ᵀ f(x_{l+1}⁺) − f(x_l⁻)ᵀ f(x_{l+1}⁻), summed over the batch (not yet / B)."""
    fm = [act.forward(v) for v in minus]
    fp = [act.forward(v) for v in plus]
    return [_hebb(fp[l], fp[l + 1]) - _hebb(fm[l], fm[l + 1]) for l in range(len(minus) - 1)]


def ap_delta(x: Sequence[Tensor], a: Sequence[Tensor], act: ActivationFn) -> List[Tensor]:
    """ΔW_l = f(x_l)ᵀ a_{l+1}, summed over the batch (not yet / B)."""
    return [_hebb(act.forward(x[l]), a[l + 1]) for l in range(len(x) - 1)]


# -- the two rules as run-stacked learners ---------------------------------------------------------------
@dataclass
class RecurrentRecord:
    """One update of R runs: the free-phase (GR: minus-phase) output x_L, [R, B, n_L], read before the
    weights change, and its loss ½ Σ_b ‖y − x_L‖², [R]."""

    output: Tensor
    loss: Tensor


class _PersistentNet:
    """Weights and persistent states of R stacked recurrent nets (see the module docstring)."""

    def __init__(self, weights: Sequence[Tensor], states: Sequence[Tensor], lr: PerRun, rate: PerRun, steps: int,
                 activation_name: str = "tanh"):
        _check_shapes(weights, states)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ValueError(f"steps={steps!r} must be an int >= 1 (relaxation sweeps per phase)")
        self.act = activation(activation_name)
        self.weights: List[Tensor] = [w.clone() for w in weights]
        self.x: List[Tensor] = [v.clone() for v in states]
        R, first = states[0].shape[0], states[0]
        self.n_runs, self.batch = R, states[0].shape[1]
        self.lr = rate_tensor(lr, R, first.dtype, first.device)
        self.rate = rate_tensor(rate, R, first.dtype, first.device)
        self.steps = steps

    @property
    def depth(self) -> int:
        """L, the number of weight layers (the output is layer L)."""
        return len(self.weights)

    def _clamp_input(self, s: Tensor) -> None:
        want = tuple(self.x[0].shape)
        if tuple(s.shape) not in (want, want[1:]):
            raise ValueError(f"input has shape {tuple(s.shape)}, expected {want} or {want[1:]} (shared by the runs)")
        self.x[0] = s.to(dtype=self.x[0].dtype).expand(want)

    def _apply(self, deltas: Sequence[Tensor]) -> None:
        scale = self.lr / self.batch
        self.weights = [w + scale * d for w, d in zip(self.weights, deltas)]

    @staticmethod
    def _record(output: Tensor, y: Tensor) -> RecurrentRecord:
        return RecurrentRecord(output, 0.5 * ((y - output) ** 2).sum((-1, -2)))


class GeneRec(_PersistentNet):
    """GeneRec with both phases (spec §8): ``steps`` sweeps of rate ``rate`` per phase (default 128 at 0.01).

    ``weights``: W_0 … W_{L−1}, each [R, n_l, n_{l+1}]; ``states``: x_0 … x_L, each [R, B, n_l] (x_0 is
    overwritten by the data at every update); ``lr``: η, a scalar or [R]. ``free_phase=False``: the
    published runs' variant (spec §10 #5): no minus phase, ΔW_l = f(x_l⁺)ᵀ f(x_{l+1}⁺)."""

    def __init__(self, weights: Sequence[Tensor], states: Sequence[Tensor], lr: PerRun, rate: PerRun = 0.01,
                 steps: int = 128, activation_name: str = "tanh", free_phase: bool = True):
        super().__init__(weights, states, lr, rate, steps, activation_name)
        self.free_phase = bool(free_phase)

    def minus_phase(self) -> List[Tensor]:
        """Relax layers 1 … L with the output free; returns (and keeps) x⁻."""
        return generec_relax(self.weights, self.x, range(1, self.depth + 1), self.steps, self.rate, self.act)

    def plus_phase(self, y: Tensor) -> List[Tensor]:
        """Clamp the output to ``y`` and relax layers 1 … L−1 from the current states; returns x⁺."""
        self.x[-1] = y.to(dtype=self.x[-1].dtype).expand_as(self.x[-1])
        return generec_relax(self.weights, self.x, range(1, self.depth), self.steps, self.rate, self.act)

    def train_batch(self, s: Tensor, y: Tensor) -> RecurrentRecord:
        """One update on the batch (input ``s`` [R, B, n_0], target ``y`` [R, B, n_L]): minus phase,
        plus phase, W_l += η ΔW_l / B. The states keep x⁺ for the next update."""
        self._clamp_input(s)
        if not self.free_phase:  # the published runs (spec §10 #5): plus phase and its Hebbian term only
            record = self._record(self.x[-1], y)
            plus = self.plus_phase(y)
            fp = [self.act.forward(v) for v in plus]
            self._apply([_hebb(fp[l], fp[l + 1]) for l in range(self.depth)])
            return record
        minus = list(self.minus_phase())
        record = self._record(minus[-1], y)
        plus = self.plus_phase(y)
        self._apply(generec_delta(minus, plus, self.act))
        return record


class AlmeidaPineda(_PersistentNet):
    """Almeida–Pineda with both phases (spec §8): ``steps`` sweeps of rate ``rate`` per phase (default
    64 at 0.001). ``adjoints``: a_0 … a_L (default: a copy of ``states``). ``free_phase=False``: the
    published runs' variant (spec §10 #5): the states never relax, so J = y − x_L stays constant."""

    def __init__(self, weights: Sequence[Tensor], states: Sequence[Tensor], lr: PerRun, rate: PerRun = 0.001,
                 steps: int = 64, activation_name: str = "tanh", adjoints: Optional[Sequence[Tensor]] = None,
                 free_phase: bool = True):
        super().__init__(weights, states, lr, rate, steps, activation_name)
        self.free_phase = bool(free_phase)
        adjoints = states if adjoints is None else adjoints
        if [tuple(a.shape) for a in adjoints] != [tuple(v.shape) for v in states]:
            raise ValueError("the adjoints a_0 … a_L must have the states' shapes")
        self.a: List[Tensor] = [v.clone() for v in adjoints]

    def relax_states(self) -> List[Tensor]:
        """The free phase: relax the states of layers 1 … L (input clamped, output free)."""
        return ap_free_relax(self.weights, self.x, self.steps, self.rate, self.act)

    def adjoint_phase(self, error: Tensor) -> List[Tensor]:
        """Relax the adjoints a_0 … a_L with the states fixed and the constant error J."""
        return ap_adjoint_relax(self.weights, self.x, self.a, error, self.steps, self.rate, self.act)

    def train_batch(self, s: Tensor, y: Tensor) -> RecurrentRecord:
        """One update: free phase, adjoint phase with J = y − x_L, W_l += η f(x_l)ᵀ a_{l+1} / B."""
        self._clamp_input(s)
        if self.free_phase:  # skipped in the published runs (spec §10 #5): the states never relax
            self.relax_states()
        record = self._record(self.x[-1], y)
        self.adjoint_phase(y - self.x[-1])
        self._apply(ap_delta(self.x, self.a, self.act))
        return record
