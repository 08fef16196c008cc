"""Closed-form objective and gradients for Linear stacks (engine spec §1.3, §4.2 items 1 and 3).

The network is cut into *units*, one weight layer each, with at most one activation before and one
after it. A unit boundary either carries a value node (a latent x_l with energy ½c·M⊙(x_l − μ_l)²,
plus the optional latent penalty λ|x_l|) or is a plain pass-through; a net without value nodes is
therefore plain BP through the same code. Connectivity masks S need the functional backend.
One evaluation costs, per unit, one GEMM for μ and one for the error sent down, plus the weight
gradient GEMM only when the caller asks for it. μ₁ of the first unit (input fixed during a batch) is
cached until the first weight layer steps.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence

import torch

from . import activations
from .network import Linear, NetworkSpec

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

    loss: Optional[Tensor]  # [R]; None when the objective was not asked for
    energy: Optional[Tensor]  # [R], Σ_l E_l unscaled by c
    objective: Optional[Tensor]  # [R], F = loss + c·E + R(x)
    latent_grads: List[Tensor]
    weight_grads: Dict[str, Tensor]


def output_error(y_hat: Tensor, y: Tensor, loss: str):
    """(per-run loss [R], e_L = −∂ℓ/∂ŷ) for the summed squared error or summed cross-entropy."""
    if loss == "sse":
        e = y - y_hat
        return 0.5 * (e * e).sum(dim=(-2, -1)), e
    log_p = torch.log_softmax(y_hat, dim=-1)
    return -(y * log_p).sum(dim=(-2, -1)), y - log_p.exp()


def active_penalty(latent_l1: Optional[Tensor]) -> Optional[Tensor]:
    """The per-run latent-penalty weights λ [R], or None when λ = 0 for every run (then R(x) costs nothing)."""
    return None if latent_l1 is None or not bool((latent_l1 != 0).any()) else latent_l1


def output_error_only(y_hat: Tensor, y: Tensor, loss: str) -> Tensor:
    """e_L = −∂ℓ/∂ŷ without the loss value."""
    return y - y_hat if loss == "sse" else y - torch.softmax(y_hat, dim=-1)


class ClosedFormBackend:
    def __init__(self, spec: NetworkSpec, loss: str, energy_coef: Tensor, dtype, device,
                 latent_l1: Optional[Tensor] = None):
        if spec.has_connectivity:
            raise ValueError("connectivity masks S (node_connectivity) need the functional backend")
        self.spec = spec
        self.units = compile_units(spec)
        self.pre = [activations.activation(u.pre_act) if u.pre_act else None for u in self.units]
        self.post = [activations.activation(u.post_act) if u.post_act else None for u in self.units]
        self.loss = loss
        self.c_flat = energy_coef
        self.c = energy_coef.reshape(-1, 1, 1)
        self.c_is_one = bool((energy_coef == 1).all())
        self.l1_flat = active_penalty(latent_l1)  # λ Σ|x| per run, or None
        self.l1 = None if self.l1_flat is None else self.l1_flat.reshape(-1, 1, 1)
        node_units = [k for k, u in enumerate(self.units) if u.ends_in_node]
        self.node_of_unit = {k: n for n, k in enumerate(node_units)}
        self.node_masks = [spec.node_mask_tensor(n, dtype, device) for n in range(len(node_units))]
        self._w_names = [f"{u.layer_index}.weight" for u in self.units]
        self._b_names = [f"{u.layer_index}.bias" if u.bias else None for u in self.units]
        self._all_names = self._w_names + [n for n in self._b_names if n]
        self._bound_src: list = []
        self._bound: list = []
        self._cache_key = None
        self._cache = None

    # -- plumbing -----------------------------------------------------------------------------------
    def unit_param_names(self, k: int) -> List[str]:
        u = self.units[k]
        names = [f"{u.layer_index}.weight"]
        if u.bias:
            names.append(f"{u.layer_index}.bias")
        return names

    def _bind(self, params: Dict[str, Tensor]) -> list:
        """Per unit (W, Wᵀ view, bias as [R, 1, out] or None), rebuilt only when a parameter changed."""
        src = [params[n] for n in self._all_names]
        if len(src) != len(self._bound_src) or not all(map(operator.is_, src, self._bound_src)):
            self._bound = [(params[w], params[w].transpose(1, 2), params[b].unsqueeze(1) if b else None)
                           for w, b in zip(self._w_names, self._b_names)]
            self._bound_src = src
        return self._bound

    @staticmethod
    def _linear(bound: tuple, a: Tensor) -> Tensor:
        _, w_t, b = bound
        if a.ndim == 3:
            return torch.bmm(a, w_t) if b is None else torch.baddbmm(b, a, w_t)
        z = torch.matmul(a, w_t)  # a shared [B, in] batch
        return z if b is None else z + b

    def _first_z(self, bound: list, x0: Tensor) -> Tensor:
        """z of unit 0 for the batch input, cached while its weights and the batch are unchanged."""
        if self.pre[0] is not None:
            return self._linear(bound[0], self.pre[0].forward(x0))
        # The key holds the tensors themselves (compared by identity, so no id can be reused) and
        # their version counters (so an input buffer or weight changed in place is noticed).
        tensors = (x0, bound[0][0], bound[0][2])
        versions = tuple(-1 if t is None else t._version for t in tensors)
        cached = self._cache_key
        if cached is None or cached[1] != versions or any(a is not b for a, b in zip(cached[0], tensors)):
            self._cache = self._linear(bound[0], x0)
            self._cache_key = (tensors, versions)
        return self._cache

    # -- engine interface ---------------------------------------------------------------------------
    def feedforward_latents(self, params: Dict[str, Tensor], x0: Tensor) -> List[Tensor]:
        latents = []
        bound = self._bind(params)
        v = x0
        for k, u in enumerate(self.units[:-1]):
            if k == 0:
                z = self._first_z(bound, x0)
            else:
                z = self._linear(bound[k], self.pre[k].forward(v) if self.pre[k] else v)
            v = self.post[k].forward(z) if self.post[k] else z
            if u.ends_in_node:
                latents.append(v.detach().clone())
        return latents

    def evaluate(self, params: Dict[str, Tensor], latents: Sequence[Tensor], x0: Tensor, y: Tensor,
                 need_weights: Sequence[bool], need_objective: bool = True) -> Evaluation:
        """F and its gradients at (latents, params).

        Errors are carried with the spec's sign, e = −∂F/∂(unit output), so each hidden layer costs
        one GEMM, one fused activation-derivative product and one subtraction on the way down.
        ``need_objective=False`` skips the loss and energy sums (they are then None).
        """
        units = self.units
        n_units = len(units)
        bound = self._bind(params)
        saved = []  # per unit: (input v, pre-activation output a, z, post output)
        errors: Dict[int, Tensor] = {}  # node index -> e_l = c·M⊙ε_l
        eps_pairs: Dict[int, tuple] = {}  # node index -> (ε_l, M⊙ε_l)
        v = x0
        for k, u in enumerate(units):
            a = self.pre[k].forward(v) if self.pre[k] is not None else v
            z = self._first_z(bound, x0) if k == 0 else self._linear(bound[k], a)
            out = self.post[k].forward(z) if self.post[k] is not None else z
            saved.append((v, a, z, out))
            if u.ends_in_node:
                n = self.node_of_unit[k]
                eps = latents[n] - out
                mask = self.node_masks[n]
                eps_m = eps if mask is None else mask * eps
                eps_pairs[n] = (eps, eps_m)
                errors[n] = eps_m if self.c_is_one else self.c * eps_m
                v = latents[n]
            else:
                v = out
        loss = energy = objective = None
        if need_objective:
            loss, e_out = output_error(v, y, self.loss)
            energy = torch.zeros_like(loss)
            for eps, eps_m in eps_pairs.values():  # ½ Σ M⊙ε² with a 0/1 mask M
                energy = energy + 0.5 * (eps_m * eps).sum(dim=(-2, -1))
            objective = loss + (energy if self.c_is_one else self.c_flat * energy)
            if self.l1 is not None:
                objective = objective + self.l1_flat * sum(x.abs().sum(dim=(-2, -1)) for x in latents)
        else:
            e_out = output_error_only(v, y, self.loss)

        latent_grads: List[Optional[Tensor]] = [None] * len(latents)
        weight_grads: Dict[str, Tensor] = {}
        e = e_out  # −∂F/∂(output of the current unit)
        lowest_needed = min([k for k in range(n_units) if need_weights[k]] + [n_units])
        lowest_node_unit = min(list(self.node_of_unit) + [n_units])
        for k in range(n_units - 1, -1, -1):
            u = units[k]
            v_in, a, z, out = saved[k]
            ez = self.post[k].backward(e, z, out) if self.post[k] is not None else e
            if need_weights[k]:
                if a.ndim == 2:  # the shared batch input
                    gw = torch.matmul(ez.transpose(1, 2), a)
                else:
                    gw = torch.bmm(ez.transpose(1, 2), a)
                weight_grads[f"{u.layer_index}.weight"] = gw.neg_()
                if u.bias:
                    weight_grads[f"{u.layer_index}.bias"] = ez.sum(dim=1).neg_()
            if k == 0 or (k - 1 < lowest_node_unit and k - 1 < lowest_needed):
                break  # nothing below needs this error
            w = bound[k][0]
            e_in = torch.bmm(ez, w) if ez.ndim == 3 and w.ndim == 3 else torch.matmul(ez, w)
            if self.pre[k] is not None:
                e_in = self.pre[k].backward(e_in, v_in, a)
            if units[k - 1].ends_in_node:
                n = self.node_of_unit[k - 1]
                latent_grads[n] = errors[n] - e_in  # ∂F/∂x = e_l − f'(x_l)⊙(e_{l+1}W_{l+1}) + ∂R/∂x
                if self.l1 is not None:
                    latent_grads[n] = latent_grads[n] + self.l1 * latents[n].sign()
                e = errors[n]
            else:
                e = e_in
        return Evaluation(loss, energy, objective, latent_grads, weight_grads)
