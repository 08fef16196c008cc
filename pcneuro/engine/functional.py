"""General-layer backend (conv, pooling, flatten): F as a pure function of (params, latents, batch),
differentiated with ``torch.func`` and vectorised over the run axis with ``vmap`` (engine spec §4.2
item 2). Weight gradients are formed only for the layers the caller asks for; no module is mutated.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch.func import grad_and_value, vmap

from .closed_form import Evaluation
from .network import NetworkSpec, apply_layers, is_shared_input, is_weight_layer

Tensor = torch.Tensor


def _loss_one_run(y_hat: Tensor, y: Tensor, loss: str) -> Tensor:
    if loss == "sse":
        return 0.5 * ((y_hat - y) ** 2).sum()
    return -(y * torch.log_softmax(y_hat, dim=-1)).sum()


class FunctionalBackend:
    def __init__(self, spec: NetworkSpec, loss: str, energy_coef: Tensor, dtype, device):
        self.spec = spec
        self.loss = loss
        self.c = energy_coef
        idx = spec.segment_layer_indices()
        self.segments = [[(i, spec.layers[i]) for i in seg] for seg in idx]
        self.node_masks = [spec.node_mask_tensor(n, dtype, device) for n in range(len(self.segments) - 1)]
        # weight layer number (0-based, bottom to top) of every trainable parameter
        weight_layers = spec.weight_layer_indices
        self.unit_of_param = {n: weight_layers.index(int(n.split(".")[0])) for n in spec.param_shapes()}

    def unit_param_names(self, k: int) -> List[str]:
        return [n for n, u in self.unit_of_param.items() if u == k]

    def _run_objective(self, grad_params, other_params, latents, x0, y, c):
        params = {**other_params, **grad_params}
        h = x0  # one run's batch (vmap strips the run axis)
        energy = torch.zeros((), dtype=x0.dtype, device=x0.device)
        for n, seg in enumerate(self.segments[:-1]):
            mu = apply_layers(seg, params, h)
            eps = latents[n] - mu
            sq = eps * eps
            if self.node_masks[n] is not None:
                sq = sq * self.node_masks[n]
            energy = energy + 0.5 * sq.sum()
            h = latents[n]
        y_hat = apply_layers(self.segments[-1], params, h)
        loss = _loss_one_run(y_hat, y, self.loss)
        return loss + c * energy, (loss, energy)

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
                 need_weights: Sequence[bool], need_objective: bool = True) -> Evaluation:
        grad_names = [n for n in params if need_weights[self.unit_of_param[n]] and self._trainable(n)]
        grad_params = {n: params[n] for n in grad_names}
        other = {n: p for n, p in params.items() if n not in grad_params}
        x_dim = None if is_shared_input(self.spec, x0) else 0
        y_dim = None if y.ndim == 2 else 0
        fn = grad_and_value(self._run_objective, argnums=(0, 2), has_aux=True)
        (g_params, g_latents), (objective, (loss, energy)) = vmap(
            fn, in_dims=(0, 0, 0, x_dim, y_dim, 0))(grad_params, other, list(latents), x0, y, self.c)
        return Evaluation(loss, energy, objective, list(g_latents), dict(g_params))

    def _trainable(self, name: str) -> bool:
        return self.spec.layers[int(name.split(".")[0])].trainable
