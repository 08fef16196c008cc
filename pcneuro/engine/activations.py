"""Activation functions with fused derivative products, looked up by name.

Each entry gives f(v) and ``backward(grad, v, a) = grad ⊙ f'(v)`` (with a = f(v) already computed),
using torch's fused backward kernels so the closed-form engine spends one op per layer on it
(engine spec §4.2 item 1: f and f' computed once per step and reused). The derivative conventions
are autograd's (relu'(0) = 0; softplus with threshold 20, as ``torch.nn.functional.softplus``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
LEAKY_SLOPE = 0.01
SOFTPLUS_THRESHOLD = 20.0


@dataclass(frozen=True)
class ActivationFn:
    forward: Callable[[Tensor], Tensor]
    backward: Callable[[Tensor, Tensor, Tensor], Tensor]  # (grad, v, a) -> grad * f'(v)


_aten = torch.ops.aten

#: name -> (f, grad ⊙ f')
ACTIVATIONS: Dict[str, ActivationFn] = {
    "identity": ActivationFn(lambda v: v, lambda g, v, a: g),
    "sigmoid": ActivationFn(torch.sigmoid, lambda g, v, a: _aten.sigmoid_backward(g, a)),
    "tanh": ActivationFn(torch.tanh, lambda g, v, a: _aten.tanh_backward(g, a)),
    "relu": ActivationFn(torch.relu, lambda g, v, a: _aten.threshold_backward(g, v, 0.0)),
    "softplus": ActivationFn(F.softplus, lambda g, v, a: _aten.softplus_backward(g, v, 1.0, SOFTPLUS_THRESHOLD)),
    "leaky_relu": ActivationFn(lambda v: F.leaky_relu(v, LEAKY_SLOPE),
                               lambda g, v, a: _aten.leaky_relu_backward(g, v, LEAKY_SLOPE, False)),
}


def activation(name: str) -> ActivationFn:
    """The activation registered as ``name``."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}") from None


def apply(name: str, v: Tensor) -> Tensor:
    """f(v) alone, for plain forward passes."""
    return activation(name).forward(v)
