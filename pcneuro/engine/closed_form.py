"""Closed-form objective and gradients for Linear stacks (engine spec §1.3, §4.2 items 1 and 3).

The network is cut into *units*, one weight layer each, with at most one activation before and one
after it. A unit boundary either carries a value node (a latent x_l with energy ½c·M⊙(x_l − μ_l)²)
or is a plain pass-through; a net without value nodes is therefore plain BP through the same code.
One evaluation costs, per unit, one GEMM for μ and one for the error sent down, plus the weight
gradient GEMM only when the caller asks for it. μ₁ of the first unit (input fixed during a batch) is
cached until the first weight layer steps.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from . import activations
from .network import Activation, Linear, NetworkSpec

Tensor = torch.Tensor


@dataclass(frozen=True)
class Unit:
    layer_index: int
    bias: bool
    pre_act: Optional[str]
    post_act: Optional[str]
    ends_in_node: bool


def compile_units(spec: NetworkSpec) -> List[Unit]:
    if not spec.is_mlp():
        raise ValueError("the closed-form engine handles [activation] Linear [activation] units only")
    nodes = set(spec.node_positions)
    units = []
    for idx in spec.unit_layer_indices():
        kinds = [spec.layers[i] for i in idx]
        j = next(n for n, l in enumerate(kinds) if isinstance(l, Linear))
        pre = kinds[0].name if j == 1 else None
        post = kinds[j + 1].name if j + 1 < len(kinds) else None
        units.append(Unit(idx[j], kinds[j].bias, pre, post, idx[-1] in nodes))
    if units[-1].ends_in_node:
        raise ValueError("the output layer carries no value node")
    return units


@dataclass
class Evaluation:
    """One evaluation of F at (x, θ): per-run scalars and gradients (None where not formed)."""

    loss: Tensor  # [R]
    energy: Tensor  # [R], Σ_l E_l unscaled by c
    objective: Tensor  # [R], loss + c·E
    latent_grads: List[Tensor]
    weight_grads: Dict[str, Tensor]


def output_error(y_hat: Tensor, y: Tensor, loss: str):
    """(per-run loss [R], e_L = −∂ℓ/∂ŷ) for the summed squared error or summed cross-entropy."""
    if loss == "sse":
        e = y - y_hat
        return 0.5 * (e * e).sum(dim=(-2, -1)), e
    log_p = torch.log_softmax(y_hat, dim=-1)
    return -(y * log_p).sum(dim=(-2, -1)), y - log_p.exp()


class ClosedFormBackend:
    def __init__(self, spec: NetworkSpec, loss: str, energy_coef: Tensor, dtype, device):
        self.spec = spec
        self.units = compile_units(spec)
        self.loss = loss
        self.c = energy_coef.reshape(-1, 1, 1)
        node_units = [k for k, u in enumerate(self.units) if u.ends_in_node]
        self.node_of_unit = {k: n for n, k in enumerate(node_units)}
        self.node_masks = [spec.node_mask_tensor(n, dtype, device) for n in range(len(node_units))]
        self._cache_key = None
        self._cache = None

    # -- plumbing -----------------------------------------------------------------------------------
    def unit_param_names(self, k: int) -> List[str]:
        u = self.units[k]
        names = [f"{u.layer_index}.weight"]
        if u.bias:
            names.append(f"{u.layer_index}.bias")
        return names

    def _linear(self, k: int, params: Dict[str, Tensor], a: Tensor) -> Tensor:
        u = self.units[k]
        z = torch.matmul(a, params[f"{u.layer_index}.weight"].transpose(1, 2))
        if u.bias:
            z = z + params[f"{u.layer_index}.bias"].unsqueeze(1)
        return z

    def _first_z(self, params: Dict[str, Tensor], x0: Tensor) -> Tensor:
        """z of unit 0 for the batch input, cached while its weights and the batch are unchanged."""
        u = self.units[0]
        if u.pre_act is not None:
            return self._linear(0, params, activations.apply(u.pre_act, x0))
        # the key holds the tensors themselves (compared by identity), so no id can be reused
        key = (x0, params[f"{u.layer_index}.weight"], params.get(f"{u.layer_index}.bias"))
        if self._cache_key is None or any(a is not b for a, b in zip(self._cache_key, key)):
            self._cache = self._linear(0, params, x0)
            self._cache_key = key
        return self._cache

    # -- engine interface ---------------------------------------------------------------------------
    def feedforward_latents(self, params: Dict[str, Tensor], x0: Tensor) -> List[Tensor]:
        latents = []
        v = x0
        for k, u in enumerate(self.units[:-1]):
            z = self._first_z(params, x0) if k == 0 else self._linear(
                k, params, activations.apply(u.pre_act, v) if u.pre_act else v)
            v = activations.apply(u.post_act, z) if u.post_act else z
            if u.ends_in_node:
                latents.append(v.detach().clone())
        return latents

    def evaluate(self, params: Dict[str, Tensor], latents: Sequence[Tensor], x0: Tensor, y: Tensor,
                 need_weights: Sequence[bool]) -> Evaluation:
        units = self.units
        n_units = len(units)
        inputs: List[Tensor] = []  # a: the input of each unit's Linear
        d_pre: List[Optional[Tensor]] = []
        d_post: List[Optional[Tensor]] = []
        errors: Dict[int, Tensor] = {}  # node index -> e_l = c·M⊙ε_l
        energy = None
        v = x0
        for k, u in enumerate(units):
            if u.pre_act is not None:
                a, da = activations.activation(u.pre_act)(v)
            else:
                a, da = v, None
            z = self._first_z(params, x0) if k == 0 else self._linear(k, params, a)
            if u.post_act is not None:
                out, dz = activations.activation(u.post_act)(z)
            else:
                out, dz = z, None
            inputs.append(a)
            d_pre.append(da)
            d_post.append(dz)
            if u.ends_in_node:
                n = self.node_of_unit[k]
                eps = latents[n] - out
                mask = self.node_masks[n]
                sq = eps * eps if mask is None else mask * eps * eps
                e_n = 0.5 * sq.sum(dim=(-2, -1))
                energy = e_n if energy is None else energy + e_n
                errors[n] = self.c * (eps if mask is None else mask * eps)
                v = latents[n]
            else:
                v = out
        loss, e_out = output_error(v, y, self.loss)
        if energy is None:
            energy = torch.zeros_like(loss)
        objective = loss + self.c.reshape(-1) * energy

        latent_grads: List[Optional[Tensor]] = [None] * len(latents)
        weight_grads: Dict[str, Tensor] = {}
        g = -e_out  # ∂F/∂(output of the current unit)
        lowest_needed = min([k for k in range(n_units) if need_weights[k]] + [n_units])
        lowest_node_unit = min(list(self.node_of_unit) + [n_units])
        for k in range(n_units - 1, -1, -1):
            u = units[k]
            gz = g * d_post[k] if d_post[k] is not None else g
            if need_weights[k]:
                a = inputs[k]
                if a.ndim == 2:  # the shared batch input
                    weight_grads[f"{u.layer_index}.weight"] = torch.matmul(gz.transpose(1, 2), a)
                else:
                    weight_grads[f"{u.layer_index}.weight"] = torch.bmm(gz.transpose(1, 2), a)
                if u.bias:
                    weight_grads[f"{u.layer_index}.bias"] = gz.sum(dim=1)
            if k == 0 or (k - 1 < lowest_node_unit and k - 1 < lowest_needed):
                break  # nothing below needs this error
            w = params[f"{u.layer_index}.weight"]
            g_in = torch.matmul(gz, w)
            if d_pre[k] is not None:
                g_in = g_in * d_pre[k]
            below = units[k - 1]
            if below.ends_in_node:
                n = self.node_of_unit[k - 1]
                latent_grads[n] = errors[n] + g_in
                g = -errors[n]
            else:
                g = g_in
        return Evaluation(loss, energy, objective, latent_grads, weight_grads)
