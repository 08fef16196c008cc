"""Functional weight and latent optimisers over run-stacked tensors (engine spec §4.2 item 7).

Each optimiser is pure: ``step(params, grads, state, run_mask) -> (params, state)``. Hyperparameters
are per-run tensors; ``run_mask`` ([R] bool or None) leaves the parameters *and* the optimiser state
(momentum buffers, Adam moments and step counts) of masked-out runs untouched. Per run the arithmetic
is that of torch.optim.SGD / torch.optim.Adam (checked step by step in the tests).
"""
from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import torch

from .config import Adam, LatentAdam, LatentSGD, SGD, host_values, per_param_lr, per_run

Tensor = torch.Tensor
State = Dict[str, Dict[str, Tensor]]


def _bcast(v: Tensor, like: Tensor) -> Tensor:
    """Reshape an [R] tensor to broadcast against [R, ...]."""
    return v.reshape(v.shape[0], *([1] * (like.ndim - 1)))


def _where(mask: Optional[Tensor], new: Tensor, old: Tensor) -> Tensor:
    return new if mask is None else torch.where(_bcast(mask, new), new, old)


class WeightOptimizer:
    """Stacked SGD (momentum, dampening, coupled L2) or Adam (coupled L2 or decoupled AdamW)."""

    def __init__(self, config, names: Sequence[str], shapes: Dict[str, Tuple[int, ...]], n_runs: int,
                 dtype, device):
        if not isinstance(config, (SGD, Adam)):
            raise TypeError(f"not a weight optimiser: {config!r}")
        self.config = config
        self.names = tuple(names)
        self.lr = per_param_lr(config.lr, self.names, shapes, n_runs, dtype, device)
        self.weight_decay = per_run(config.weight_decay, n_runs, dtype, device)
        # static choices read host values (no device synchronisation)
        self.use_decay = bool((host_values(config.weight_decay) != 0).any())
        if isinstance(config, SGD):
            self.momentum = per_run(config.momentum, n_runs, dtype, device)
            self.use_momentum = bool((host_values(config.momentum) != 0).any())
        else:
            self.beta1 = per_run(config.betas[0], n_runs, dtype, device)
            self.beta2 = per_run(config.betas[1], n_runs, dtype, device)

    def init_state(self, params: Dict[str, Tensor]) -> State:
        state: State = {}
        for n in self.names:
            p = params[n]
            s = {"step": torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)}
            if isinstance(self.config, Adam):
                s["exp_avg"] = torch.zeros_like(p)
                s["exp_avg_sq"] = torch.zeros_like(p)
            elif self.use_momentum:
                s["momentum_buffer"] = torch.zeros_like(p)
            state[n] = s
        return state

    def step(self, name: str, param: Tensor, grad: Tensor, state: Dict[str, Tensor],
             run_mask: Optional[Tensor] = None) -> Tuple[Tensor, Dict[str, Tensor]]:
        """One step of parameter ``name``; returns the new parameter and its new state."""
        lr = self.lr[name]
        wd = _bcast(self.weight_decay, param)
        step = state["step"]
        new_step = step + (1 if run_mask is None else run_mask.to(step.dtype))
        if isinstance(self.config, SGD):
            g = grad + wd * param if self.use_decay else grad
            new_state = {"step": new_step}
            if self.use_momentum:
                mom = _bcast(self.momentum, param)
                buf = state["momentum_buffer"]
                first = _bcast(step == 0, param)
                new_buf = torch.where(first, g, mom * buf + (1 - self.config.dampening) * g)
                g = torch.where(mom != 0, new_buf, g)
                new_state["momentum_buffer"] = _where(run_mask, new_buf, buf)
            new_param = param - lr * g
            return _where(run_mask, new_param, param), new_state
        # Adam
        b1, b2 = _bcast(self.beta1, param), _bcast(self.beta2, param)
        if self.config.decoupled:
            g = grad
            base = param * (1 - lr * wd) if self.use_decay else param
        else:
            g = grad + wd * param if self.use_decay else grad
            base = param
        m = b1 * state["exp_avg"] + (1 - b1) * g
        v = b2 * state["exp_avg_sq"] + (1 - b2) * g * g
        t = _bcast(torch.clamp(new_step, min=1), param)
        bias1 = 1 - b1 ** t
        bias2_sqrt = torch.sqrt(1 - b2 ** t)
        new_param = base - (lr / bias1) * m / (torch.sqrt(v) / bias2_sqrt + self.config.eps)
        new_state = {
            "step": new_step,
            "exp_avg": _where(run_mask, m, state["exp_avg"]),
            "exp_avg_sq": _where(run_mask, v, state["exp_avg_sq"]),
        }
        return _where(run_mask, new_param, param), new_state


class LatentOptimizer:
    """Latent SGD (optional momentum) or Adam with a per-run rate η that the engine adapts.

    State is created fresh for every batch (engine spec §2.3, optimiser lifetimes).
    """

    def __init__(self, config, n_runs: int, dtype, device):
        if not isinstance(config, (LatentSGD, LatentAdam)):
            raise TypeError(f"not a latent optimiser: {config!r}")
        self.config = config
        self.lr0 = per_run(config.lr, n_runs, dtype, device)

    def init_state(self, latents: Sequence[Tensor]) -> list:
        if isinstance(self.config, LatentAdam):
            return [{"step": 0, "m": torch.zeros_like(x), "v": torch.zeros_like(x)} for x in latents]
        if self.config.momentum:
            return [{"step": 0, "buf": torch.zeros_like(x)} for x in latents]
        return [{} for _ in latents]

    def step(self, x: Tensor, g: Tensor, eta: Tensor, state: dict, run_mask: Optional[Tensor]) -> Tensor:
        """In-place-free latent step of one layer; ``state`` is updated in place (per-batch object).

        ``eta`` is the per-run rate, [R] or already shaped to broadcast against ``x``."""
        eta_b = eta if eta.ndim == x.ndim else _bcast(eta, x)
        if isinstance(self.config, LatentSGD):
            if self.config.momentum:
                buf = g if state["step"] == 0 else self.config.momentum * state["buf"] + g
                state["buf"] = _where(run_mask, buf, state["buf"]) if state["step"] else buf
                state["step"] += 1
                g = buf
            return _where(run_mask, torch.addcmul(x, eta_b, g, value=-1), x)
        b1, b2 = self.config.betas
        state["step"] += 1
        t = state["step"]
        m = b1 * state["m"] + (1 - b1) * g
        v = b2 * state["v"] + (1 - b2) * g * g
        state["m"] = _where(run_mask, m, state["m"])
        state["v"] = _where(run_mask, v, state["v"])
        new = x - (eta_b / (1 - b1 ** t)) * m / (torch.sqrt(v) / (1 - b2 ** t) ** 0.5 + self.config.eps)
        return _where(run_mask, new, x)
