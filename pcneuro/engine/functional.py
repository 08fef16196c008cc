"""General-layer backend (conv, pooling, flatten): F as a pure function of (params, latents, batch),
differentiated with ``torch.func`` and vectorised over the run axis with ``vmap`` (engine spec §4.2
item 2). Weight gradients are formed only for the layers the caller asks for; no module is mutated.

Autograd only runs through the layers: one ``vjp`` of the forward map (θ, x) ↦ (μ_1..μ_{L−1}, ŷ)
per evaluation, fed the closed-form cotangents ∂F/∂μ_l = c ∂E_l/∂μ_l and ∂ℓ/∂ŷ. The energies'
own derivatives (and F itself, formed only when the caller reads it) cost a few elementwise passes
per node instead of autograd through ½Σ(x − μ)² (engine spec §4.2 items 1–2).

This is also the path for connectivity masks S (engine spec §1.2, §1.3): the diagonal of S is
applied as a unit mask on ε = x − μ, the off-diagonal part O (with row sums r and column sums s) as
½ Σ_b [Σ_i r_i μ_bi² + Σ_j s_j x_bj² − 2 μ_b O x_bᵀ], with derivatives x⊙s − μO (by x) and
μ⊙r − xOᵀ (by μ); with the diagonal part they sum to the spec's ∂E/∂x = x⊙s_S − μS and
∂E/∂μ = μ⊙r_S − xSᵀ (s_S, r_S: the column and row sums of S). Keeping the diagonal in ε form avoids
cancellation near x = μ, and S = I gives exactly the default energy.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Dict, List, Optional, Sequence

import torch
from torch.func import grad_and_value, vjp, vmap

from .closed_form import Evaluation, active_penalty, on_device
from .config import host_values
from .network import NetworkSpec, apply_layers, is_shared_input
from .optim import _bcast

Tensor = torch.Tensor


def _loss_one_run(y_hat: Tensor, y: Tensor, loss: str, mask: Optional[Tensor] = None) -> Tensor:
    """ℓ for one run; ``y`` is the clean target and ``mask`` the expanded output mask (or None)."""
    if loss == "sse":
        sq = (y_hat - y) ** 2
        return 0.5 * (sq if mask is None else mask * sq).sum()
    ylp = y * torch.log_softmax(y_hat, dim=-1)
    return -(ylp if mask is None else mask * ylp).sum()


class FunctionalBackend:
    """F and its gradients with ``torch.func`` (module docstring). ``energy_coef``/``latent_l1`` [R]
    and the connectivity masks are read on the host (static choices) and moved to ``device``, as in
    :class:`~pcneuro.engine.closed_form.ClosedFormBackend`."""

    def __init__(self, spec: NetworkSpec, loss: str, energy_coef: Tensor, dtype, device,
                 latent_l1: Optional[Tensor] = None):
        self.spec = spec
        self.loss = loss
        self.c = on_device(energy_coef, dtype, device)
        self.c_is_one = bool((host_values(energy_coef) == 1).all())  # then F's gradients skip the products by c
        self.l1 = on_device(active_penalty(latent_l1), dtype, device)  # λ Σ|x| per run, or None
        idx = spec.segment_layer_indices()
        self.segments = [[(i, spec.layers[i]) for i in seg] for seg in idx]
        n_nodes = len(self.segments) - 1
        self.node_masks = [spec.node_mask_tensor(n, dtype, device) for n in range(n_nodes)]
        # per node with a connectivity mask S: (diag(S), None or (O, r, s) for its off-diagonal part O)
        # split on the host (it reads whether S has off-diagonal entries), then moved to the device
        self.connectivity = [self._to(self._split(spec.node_connectivity_tensor(n, dtype, "cpu")), device)
                             for n in range(n_nodes)]
        # weight layer number (0-based, bottom to top) of every trainable parameter
        weight_layers = spec.weight_layer_indices
        self.unit_of_param = {n: weight_layers.index(int(n.split(".")[0])) for n in spec.param_shapes()}
        top = {i for i, _ in self.segments[-1]}
        self.top_params = {n for n in spec.param_shapes() if int(n.split(".")[0]) in top}
        # ε = 0 at every node makes every ∂E/∂μ zero unless a node has off-diagonal connectivity
        self._zero_error_shortcut = n_nodes > 0 and all(c is None or c[1] is None for c in self.connectivity)
        self._feedforward = None  # ((params..., x0, latents...), their versions) of the last feedforward_latents

    def reset(self) -> None:
        """Forget the last feed-forward pass (engine hook, see :meth:`_at_feedforward`)."""
        self._feedforward = None

    def release(self, params: Dict[str, Tensor]) -> None:
        """End of a batch (engine hook): drop the references to that batch's parameters and latents."""
        self._feedforward = None

    @staticmethod
    def _key(tensors):
        return tuple(tensors), tuple(t._version for t in tensors)

    def _at_feedforward(self, params: Dict[str, Tensor], latents: Sequence[Tensor], x0: Tensor) -> bool:
        """True when ``latents`` are exactly what :meth:`feedforward_latents` returned for these
        parameters and this batch, none changed since (the same tensors, by identity, at the same
        version counters, so an in-place change is noticed): then x_l = μ_l at every node."""
        if self._feedforward is None:
            return False
        tensors, versions = self._key([*params.values(), x0, *latents])
        old, old_versions = self._feedforward
        return (len(old) == len(tensors) and versions == old_versions
                and all(a is b for a, b in zip(old, tensors)))

    def unit_param_names(self, k: int) -> List[str]:
        return [n for n, u in self.unit_of_param.items() if u == k]

    @staticmethod
    def _to(split, device):
        """A :meth:`_split` result with every tensor moved to ``device``."""
        if split is None:
            return None
        diag, off = split
        return diag.to(device), (None if off is None else tuple(t.to(device) for t in off))

    @staticmethod
    def _split(S: Optional[Tensor]):
        if S is None:
            return None
        diag = S.diagonal()
        off = S - torch.diag(diag)
        return diag, ((off, off.sum(1), off.sum(0)) if bool(off.any()) else None)

    def _node_terms(self, n: int, mu: Tensor, x: Tensor, need_energy: bool):
        """Node n of one run in closed form: (E_n or None, ∂E_n/∂μ, ∂E_n/∂x or None for −∂E_n/∂μ).

        E_n = ½ Σ M⊙(μ − x)², or with a connectivity mask S the diagonal in that form plus the
        off-diagonal part ½ Σ_b [Σ_i r_i μ_bi² + Σ_j s_j x_bj² − 2 μ_b O x_bᵀ] (module docstring).
        The same arithmetic serves M and diag(S), so S = diag(M) gives M's bits."""
        d = mu - x
        split = self.connectivity[n]
        if split is None:
            w, off = self.node_masks[n], None
        else:
            diag, off = split
            units = math.prod(mu.shape[1:])
            if units != diag.shape[0]:
                raise ValueError(f"node_connectivity[{n}] is {diag.shape[0]}x{diag.shape[0]}, "
                                 f"the node has {units} units")
            w = diag.reshape(mu.shape[1:])
        wd = d if w is None else d * w
        energy = (d * wd).sum() if need_energy else None
        if off is None:
            return (None if energy is None else 0.5 * energy), wd, None
        o, r, s = off
        shape = mu.shape
        mu, x = mu.flatten(1), x.flatten(1)  # [B, units]
        mo = mu @ o
        g_mu = wd + (mu * r - x @ o.transpose(0, 1)).reshape(shape)
        g_x = (x * s - mo).reshape(shape) - wd
        if energy is not None:
            energy = 0.5 * (energy + ((mu * mu) @ r + (x * x) @ s - 2 * (mo * x).sum(-1)).sum())
        return energy, g_mu, g_x

    def _forward(self, grad_params, other_params, latents, x0):
        """One run's μ_1..μ_{L−1} (each from the latent below, μ_1 from the batch) and ŷ."""
        params = {**other_params, **grad_params}
        mus, h = [], x0  # one run's batch (vmap strips the run axis)
        for n, seg in enumerate(self.segments[:-1]):
            mus.append(apply_layers(seg, params, h))
            h = latents[n]
        return mus, apply_layers(self.segments[-1], params, h)

    def _run_evaluate(self, grad_params, other_params, latents, x0, y, c, l1, mask, need_objective):
        """One run: F's gradients from one vjp of the net's forward, fed the closed-form cotangents
        ∂F/∂μ_n = c ∂E_n/∂μ_n and ∂F/∂ŷ = ∂ℓ/∂ŷ; ∂F/∂x_n adds its direct part c ∂E_n/∂x_n
        (+ λ sign x_n) to what the layer above pulls back. (loss, energy, F) only when asked for."""
        if grad_params or latents:
            (mus, y_hat), pullback = vjp(lambda gp, lat: self._forward(gp, other_params, lat, x0),
                                         grad_params, latents)
        else:
            (mus, y_hat), pullback = self._forward(grad_params, other_params, latents, x0), None
        g_out, loss = grad_and_value(_loss_one_run)(y_hat, y, self.loss, mask)
        scale = (lambda v: v) if self.c_is_one else (lambda v: c * v)
        terms = [self._node_terms(n, mu, x, need_objective) for n, (mu, x) in enumerate(zip(mus, latents))]
        g_mus = [scale(g_mu) for _, g_mu, _ in terms]
        g_params, g_latents = {}, []
        if pullback is not None:
            g_params, pulled = pullback((g_mus, g_out))
            for x, p, g_mu, (_, _, g_x) in zip(latents, pulled, g_mus, terms):
                # p is the vjp's own fresh tensor: updated in place (no new latent-sized buffer)
                g = p.sub_(g_mu) if g_x is None else p.add_(scale(g_x))  # g_x None: ∂E/∂x = −∂E/∂μ
                g_latents.append(g if l1 is None else g.add_(l1 * torch.sign(x)))
        if not need_objective:
            return g_params, g_latents, ()
        energy = torch.zeros((), dtype=y_hat.dtype, device=y_hat.device)
        for e_n, _, _ in terms:
            energy = energy + e_n
        objective = loss + scale(energy)
        if l1 is not None:  # latent penalty R(x) = λ Σ|x|
            objective = objective + l1 * sum(x.abs().sum() for x in latents)
        return g_params, g_latents, (loss, energy, objective)

    def feedforward_latents(self, params: Dict[str, Tensor], x0: Tensor) -> List[Tensor]:
        shared = is_shared_input(self.spec, x0)

        def run(p, x):
            out, h = [], x
            for seg in self.segments[:-1]:
                h = apply_layers(seg, p, h)
                out.append(h)
            return out

        latents = [v.detach().clone() for v in vmap(run, in_dims=(0, None if shared else 0))(params, x0)]
        self._feedforward = self._key([*params.values(), x0, *latents])
        return latents

    def evaluate(self, params: Dict[str, Tensor], latents: Sequence[Tensor], x0: Tensor, y: Tensor,
                 need_weights: Sequence[bool], need_objective: bool = True,
                 output_mask: Optional[Tensor] = None) -> Evaluation:
        """F and its gradients; ``y``/``output_mask`` are the clean target and expanded mask of
        :func:`pcneuro.engine.closed_form.clean_target`."""
        grad_names = [n for n in params if need_weights[self.unit_of_param[n]] and self._trainable(n)]
        grad_params = {n: params[n] for n in grad_names}
        other = {n: p for n, p in params.items() if n not in grad_params}
        x_dim = None if is_shared_input(self.spec, x0) else 0
        y_dim = None if y.ndim == 2 else 0
        if self._zero_error_shortcut and self._at_feedforward(params, latents, x0):
            return self._evaluate_at_feedforward(params, grad_names, latents, y, y_dim, need_objective, output_mask)
        fn = partial(self._run_evaluate, need_objective=need_objective)
        l1_dim = None if self.l1 is None else 0
        m_dim = None if output_mask is None or output_mask.ndim == 2 else 0
        g_params, g_latents, scalars = vmap(
            fn, in_dims=(0, 0, 0, x_dim, y_dim, 0, l1_dim, m_dim))(
            grad_params, other, list(latents), x0, y, self.c, self.l1, output_mask)
        loss, energy, objective = scalars if need_objective else (None, None, None)
        return Evaluation(loss, energy, objective, list(g_latents), dict(g_params))

    def _evaluate_at_feedforward(self, params, grad_names, latents, y, y_dim, need_objective,
                                 output_mask) -> Evaluation:
        """:meth:`evaluate` where every latent equals its feed-forward value (the first step of a
        batch; engine spec §1.4): every ε is 0, so every E_l and ∂E_l/∂μ_l vanish and only the top
        segment (ŷ from the top latent) carries gradient. It alone is evaluated (the lower segments'
        forward was the feed-forward pass); the other weight gradients are zeros, the other latent
        gradients zeros or λ sign x: the values of the full evaluation, whose backward through zero
        cotangents gives exact zeros (unless a lower layer holds non-finite values)."""
        top_names = [n for n in grad_names if n in self.top_params]
        grad_top = {n: params[n] for n in top_names}
        other = {n: params[n] for n in self.top_params if n not in grad_top}
        x_top = latents[-1]
        segment = self.segments[-1]

        def run(gp, op, x, yr, mask):
            y_hat, pullback = vjp(lambda p, h: apply_layers(segment, {**op, **p}, h), gp, x)
            g_out, loss = grad_and_value(_loss_one_run)(y_hat, yr, self.loss, mask)
            g_params, g_x = pullback(g_out)
            return g_params, g_x, loss

        m_dim = None if output_mask is None or output_mask.ndim == 2 else 0
        g_top, g_x, loss = vmap(run, in_dims=(0, 0, 0, y_dim, m_dim))(grad_top, other, x_top, y, output_mask)
        weight_grads = {n: g_top[n] if n in g_top else torch.zeros_like(params[n]) for n in grad_names}
        latent_grads = [torch.zeros_like(x) for x in latents[:-1]] + [g_x]
        if self.l1 is not None:
            latent_grads = [g + _bcast(self.l1, x) * torch.sign(x) for g, x in zip(latent_grads, latents)]
        if not need_objective:
            return Evaluation(None, None, None, latent_grads, weight_grads)
        energy = torch.zeros_like(loss)
        objective = loss + (energy if self.c_is_one else self.c * energy)
        if self.l1 is not None:
            objective = objective + self.l1 * sum(x.abs().flatten(1).sum(1) for x in latents)
        return Evaluation(loss, energy, objective, latent_grads, weight_grads)

    def _trainable(self, name: str) -> bool:
        return self.spec.layers[int(name.split(".")[0])].trainable
