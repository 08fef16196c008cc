"""Activation functions with their derivatives, looked up by name.

The closed-form engine needs f and f' of the same input; each entry returns both from one
evaluation so the step computes them once and reuses them (engine spec §4.2 item 1).
"""
from __future__ import annotations

from typing import Callable, Dict, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def _identity(v: Tensor) -> Tuple[Tensor, Tensor]:
    return v, torch.ones_like(v)


def _tanh(v: Tensor) -> Tuple[Tensor, Tensor]:
    a = torch.tanh(v)
    return a, 1.0 - a * a


def _sigmoid(v: Tensor) -> Tuple[Tensor, Tensor]:
    a = torch.sigmoid(v)
    return a, a * (1.0 - a)


def _relu(v: Tensor) -> Tuple[Tensor, Tensor]:
    return torch.relu(v), (v > 0).to(v.dtype)


def _softplus(v: Tensor) -> Tuple[Tensor, Tensor]:
    return F.softplus(v), torch.sigmoid(v)


def _leaky_relu(v: Tensor) -> Tuple[Tensor, Tensor]:
    slope = 0.01
    return F.leaky_relu(v, slope), torch.where(v > 0, torch.ones_like(v), torch.full_like(v, slope))


#: name -> function returning (f(v), f'(v))
ACTIVATIONS: Dict[str, Callable[[Tensor], Tuple[Tensor, Tensor]]] = {
    "identity": _identity,
    "tanh": _tanh,
    "sigmoid": _sigmoid,
    "relu": _relu,
    "softplus": _softplus,
    "leaky_relu": _leaky_relu,
}


def activation(name: str) -> Callable[[Tensor], Tuple[Tensor, Tensor]]:
    """Return the (f, f') function registered as ``name``."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {', '.join(sorted(ACTIVATIONS))}") from None


def apply(name: str, v: Tensor) -> Tensor:
    """f(v) alone, for plain forward passes."""
    return activation(name)(v)[0]
