"""General-layer backend (conv, pooling, flatten): F as a pure function of (params, latents, batch),
differentiated with ``torch.func`` and vectorised over the run axis with ``vmap`` (engine spec §4.2
item 2). Weight gradients are formed only for the layers the caller asks for; no module is mutated.

This is also the path for connectivity masks S (engine spec §1.2, §1.3): the diagonal of S is
applied as a unit mask on ε = x − μ, the off-diagonal part O (with row sums r and column sums s) as
½ Σ_b [Σ_i r_i μ_bi² + Σ_j s_j x_bj² − 2 μ_b O x_bᵀ]; autograd then gives ∂E/∂x = x⊙s − μS and
∂E/∂μ = μ⊙r − xSᵀ. Keeping the diagonal in ε form avoids cancellation near x = μ, and S = I gives
exactly the default energy.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch
from torch.func import grad_and_value, vmap

from .closed_form import Evaluation, active_penalty, on_device
from .network import NetworkSpec, apply_layers, is_shared_input

Tensor = torch.Tensor


def _loss_one_run(y_hat: Tensor, y: Tensor, loss: str, mask: Optional[Tensor] = None) -> Tensor:
    """ℓ for one run; ``y`` is the clean target and ``mask`` the expanded output mask (or None)."""
    if loss == "sse":
        sq = (y_hat - y) ** 2
        return 0.5 * (sq if mask is None else mask * sq).sum()
    ylp = y * torch.log_softmax(y_hat, dim=-1)
    return -(ylp if mask is None else mask * ylp).sum()


class FunctionalBackend:
    """F as a pure function, differentiated with ``torch.func``. ``energy_coef``/``latent_l1`` [R]
    and the connectivity masks are read on the host (static choices) and moved to ``device``, as in
    :class:`~pcneuro.engine.closed_form.ClosedFormBackend`."""

    def __init__(self, spec: NetworkSpec, loss: str, energy_coef: Tensor, dtype, device,
                 latent_l1: Optional[Tensor] = None):
        self.spec = spec
        self.loss = loss
        self.c = on_device(energy_coef, dtype, device)
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

    def _node_energy(self, n: int, mu: Tensor, x: Tensor) -> Tensor:
        """E_n for one run: ½ Σ M⊙(x − μ)², or ½ Σ_b Σ_ij S_ij (μ_bi − x_bj)² with a mask S."""
        if self.connectivity[n] is None:
            eps = x - mu
            sq = eps * eps
            return 0.5 * (sq if self.node_masks[n] is None else sq * self.node_masks[n]).sum()
        diag, off = self.connectivity[n]
        mu, x = mu.flatten(1), x.flatten(1)  # [B, units]
        if mu.shape[1] != diag.shape[0]:
            raise ValueError(f"node_connectivity[{n}] is {diag.shape[0]}x{diag.shape[0]}, "
                             f"the node has {mu.shape[1]} units")
        eps = x - mu
        e = (eps * eps * diag).sum()
        if off is not None:
            o, r, s = off
            e = e + ((mu * mu) @ r + (x * x) @ s - 2 * ((mu @ o) * x).sum(-1)).sum()
        return 0.5 * e

    def _run_objective(self, grad_params, other_params, latents, x0, y, c, l1, mask):
        params = {**other_params, **grad_params}
        h = x0  # one run's batch (vmap strips the run axis)
        energy = torch.zeros((), dtype=x0.dtype, device=x0.device)
        for n, seg in enumerate(self.segments[:-1]):
            energy = energy + self._node_energy(n, apply_layers(seg, params, h), latents[n])
            h = latents[n]
        y_hat = apply_layers(self.segments[-1], params, h)
        loss = _loss_one_run(y_hat, y, self.loss, mask)
        objective = loss + c * energy
        if l1 is not None:  # latent penalty R(x) = λ Σ|x|
            objective = objective + l1 * sum(x.abs().sum() for x in latents)
        return objective, (loss, energy)

    def feedforward_latents(self, params: Dict[str, Tensor], x0: Tensor) -> List[Tensor]:
        shared = is_shared_input(self.spec, x0)

        def run(p, x):
            out, h = [], x
            for seg in self.segments[:-1]:
                h = apply_layers(seg, p, h)
                out.append(h)
            return out

        return [v.detach().clone() for v in vmap(run, in_dims=(0, None if shared else 0))(params, x0)]

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
        fn = grad_and_value(self._run_objective, argnums=(0, 2), has_aux=True)
        l1_dim = None if self.l1 is None else 0
        m_dim = None if output_mask is None or output_mask.ndim == 2 else 0
        (g_params, g_latents), (objective, (loss, energy)) = vmap(
            fn, in_dims=(0, 0, 0, x_dim, y_dim, 0, l1_dim, m_dim))(
            grad_params, other, list(latents), x0, y, self.c, self.l1, output_mask)
        return Evaluation(loss, energy, objective, list(g_latents), dict(g_params))

    def _trainable(self, name: str) -> bool:
        return self.spec.layers[int(name.split(".")[0])].trainable
