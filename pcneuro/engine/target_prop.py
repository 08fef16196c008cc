"""Exact-inverse target propagation (TP) for linear stacks, run-stacked (theory spec §5, TP baseline).

DESIGN.md lists exact-inverse TP among the engine's rules. Its step is not a configuration of the PC
loop (no value nodes, no inference, no energy): every layer's error is the previous layer's error
mapped back through the exact (pseudo-)inverse of the layer above, all from the weights before the
update, then each layer takes a delta-rule step on its own error. For a net of Linear layers with
identity activations (theory spec §5):

* forward pass keeping each weight layer's input a_i (a_0 = s, a_{i+1} = W_i a_i + b_i, ŷ = a_N);
* e_N = ŷ − y; e_i = pinv(W_i) e_{i+1} for i = N−1 … 1 (Moore–Penrose pseudo-inverse, old weights);
* W_i ← W_i − η Σ_b e_{i+1} a_iᵀ (and b_i ← b_i − η Σ_b e_{i+1}), sums over the batch, never means.

The last layer's step is BP's. Ill-conditioned layers give huge pseudo-inverses and huge steps, so TP
is fragile (spec §10 #6): report it, never assert on its values. Only Linear layers and ``identity``
activations are accepted (a nonlinear net would need the inverse of its activation, which the spec
does not define); value-node placement is ignored. Structural zeros (``Linear.mask``) are re-imposed
after the step; fixed layers (``trainable=False``) pass errors down but do not change.

All runs share one program: parameters are ``{name: Tensor[R, ...]}`` as everywhere in the engine,
the learning rate a scalar or one value per run, and nothing is read back on the host.
"""
from __future__ import annotations

from typing import Dict, List, Tuple, Union

import torch

from . import network
from .network import Activation, Linear, NetworkSpec

Tensor = torch.Tensor
Params = Dict[str, Tensor]


def check_linear(spec: NetworkSpec) -> None:
    """Raise ValueError (one line) unless ``spec`` is Linear layers and identity activations."""
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Linear) or (isinstance(layer, Activation) and layer.name == "identity"):
            continue
        what = f"activation {layer.name!r}" if isinstance(layer, Activation) else type(layer).__name__
        raise ValueError(f"exact-inverse target propagation needs a linear network (Linear layers, identity "
                         f"activations); layer {i} is {what}")


def _weight_layers(spec: NetworkSpec) -> List[Tuple[int, Linear]]:
    return [(i, l) for i, l in enumerate(spec.layers) if isinstance(l, Linear)]


def layer_inputs(spec: NetworkSpec, params: Params, x0: Tensor) -> Tuple[List[Tensor], Tensor]:
    """(a_0 … a_{N−1}: the input of every weight layer, [R, B, in_i]; the output ŷ, [R, B, out])."""
    check_linear(spec)
    n_runs = next(iter(params.values())).shape[0]
    h = x0 if not network.is_shared_input(spec, x0) else x0.expand(n_runs, *x0.shape)
    inputs = []
    for i, layer in _weight_layers(spec):
        inputs.append(h)
        h = torch.matmul(h, params[f"{i}.weight"].transpose(1, 2))
        if layer.bias:
            h = h + params[f"{i}.bias"].unsqueeze(1)
    return inputs, h


def exact_inverse_errors(spec: NetworkSpec, params: Params, x0: Tensor, y: Tensor) -> List[Tensor]:
    """The errors e_1 … e_N ([R, B, out_i] each; e_N = ŷ − y) from the current weights."""
    inputs, out = layer_inputs(spec, params, x0)
    layers = _weight_layers(spec)
    errors = [out - y]
    for i, _ in reversed(layers[1:]):  # e_i = pinv(W_i) e_{i+1}: rows, e_i = e_{i+1} pinv(W_i)ᵀ
        inverse = torch.linalg.pinv(params[f"{i}.weight"])  # [R, in, out]
        errors.insert(0, torch.matmul(errors[0], inverse.transpose(1, 2)))
    return errors


def exact_inverse_tp_step(spec: NetworkSpec, params: Params, x0: Tensor, y: Tensor,
                          lr: Union[float, Tensor]) -> Params:
    """One TP step on the batch (x0 [B, in] shared or [R, B, in]; y [B, out] or [R, B, out]).

    ``lr``: a scalar or an [R] tensor on the runs' device. Returns new parameters (the inputs are not
    modified)."""
    inputs, _ = layer_inputs(spec, params, x0)
    errors = exact_inverse_errors(spec, params, x0, y)
    first = next(iter(params.values()))
    n_runs = first.shape[0]
    rate = torch.as_tensor(lr, dtype=first.dtype, device=first.device)
    rate = rate.expand(n_runs) if rate.ndim == 0 else rate
    masks = network.weight_masks(spec, first.dtype, first.device)
    new = dict(params)
    for (i, layer), a, e in zip(_weight_layers(spec), inputs, errors):
        if not layer.trainable:
            continue
        name = f"{i}.weight"
        w = params[name] - rate.reshape(-1, 1, 1) * torch.matmul(e.transpose(1, 2), a)
        new[name] = w * masks[name] if name in masks else w
        if layer.bias:
            new[f"{i}.bias"] = params[f"{i}.bias"] - rate.reshape(-1, 1) * e.sum(1)
    return new


class ExactInverseTP:
    """R stacked runs trained by exact-inverse TP, with the :class:`~pcneuro.engine.Engine` calls a
    paradigm drives: ``train_batch(x0, y)`` (returns the feed-forward loss ½Σ‖ŷ − y‖² before the
    step, [R]), ``forward(x0)`` and ``params``."""

    def __init__(self, spec: NetworkSpec, params: Params, lr: Union[float, Tensor]):
        check_linear(spec)
        expected = spec.param_shapes()
        if set(params) != set(expected):
            raise ValueError(f"parameters {sorted(params)} do not match the network's {sorted(expected)}")
        self.spec, self.params, self.lr = spec, dict(params), lr

    def forward(self, x0: Tensor) -> Tensor:
        return layer_inputs(self.spec, self.params, x0)[1]

    def train_batch(self, x0: Tensor, y: Tensor) -> Tensor:
        loss0 = 0.5 * ((self.forward(x0) - y) ** 2).sum(dim=(1, 2))
        self.params = exact_inverse_tp_step(self.spec, self.params, x0, y, self.lr)
        return loss0


__all__ = ["check_linear", "layer_inputs", "exact_inverse_errors", "exact_inverse_tp_step", "ExactInverseTP"]
