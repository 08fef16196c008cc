"""A deliberately plain autograd reference of the training step (engine spec §2.3), for ONE run.

This is a test oracle, not a training engine. It is written from the spec, independently of the
fast engine: torch.nn modules, latents as leaf tensors with ``requires_grad``, the scalar objective
F built and ``backward()``-ed at every step t, torch.optim for the weights (persistent across
batches) and for the latents (new every batch), and a Python loop with Python ``if`` on floats for
the latent-rate rule and the early stop. It is slow on purpose: clarity over speed.

Per-run hyperparameters of the shared :class:`TrainConfig` (scalars or length-R sequences) are read
for run ``run``; parameters are given without the run axis, ``{"<layer index>.weight": Tensor}``.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import Adam, LatentSGD, SGD, TrainConfig
from .network import Activation, AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, NetworkSpec

Tensor = torch.Tensor

_FUNCS = {
    "identity": lambda v: v,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": torch.relu,
    "softplus": F.softplus,
    "leaky_relu": lambda v: F.leaky_relu(v, 0.01),
}


class _Act(nn.Module):
    def __init__(self, name: str):
        super().__init__()
        self.f = _FUNCS[name]

    def forward(self, v: Tensor) -> Tensor:
        return self.f(v)


def _module(layer) -> nn.Module:
    if isinstance(layer, Linear):
        return nn.utils.skip_init(nn.Linear, layer.in_features, layer.out_features, bias=layer.bias)
    if isinstance(layer, Conv2d):
        return nn.utils.skip_init(nn.Conv2d, layer.in_channels, layer.out_channels, layer.kernel_size,
                                  stride=layer.stride, padding=layer.padding, bias=layer.bias)
    if isinstance(layer, Flatten):
        return nn.Flatten()
    if isinstance(layer, MaxPool2d):
        return nn.MaxPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, AvgPool2d):
        return nn.AvgPool2d(layer.kernel_size, layer.stride)
    if isinstance(layer, Activation):
        return _Act(layer.name)
    raise TypeError(f"unknown layer {layer!r}")


def _value(value, run: int):
    """A per-run hyperparameter for run ``run``: a float, or a tensor for elementwise [R, *shape] values."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0:
        return float(t)
    if t.ndim == 1:
        return float(t[run])
    return t[run]


def node_positions(spec: NetworkSpec) -> tuple:
    """Layer indices whose output carries a value node (spec §1.1), derived from the placement."""
    if not isinstance(spec.value_nodes, str):
        return tuple(spec.value_nodes)
    if spec.value_nodes == "none":
        return ()
    hidden = [i for i, l in enumerate(spec.layers) if isinstance(l, (Linear, Conv2d))][:-1]
    if spec.value_nodes == "pre":  # weight layer -> node -> activation
        return tuple(hidden)
    # "post": weight layer -> activation -> node
    n = len(spec.layers)
    return tuple(i + 1 if i + 1 < n and isinstance(spec.layers[i + 1], Activation) else i for i in hidden)


def timing_set(timing, T: int) -> set:
    """Spec §2.2: a timing set as a Python set of steps."""
    if timing == "all":
        return set(range(T))
    if timing == "last":
        return {T - 1}
    if timing == "last_half":
        return set(range(T // 2, T))
    if timing == "never":
        return set()
    steps = {int(t) for t in timing}
    assert all(0 <= t < T for t in steps), f"timing {timing} outside 0..{T - 1}"
    return steps


def weight_timing_sets(timing, T: int, L: int) -> List[set]:
    """One set per weight layer l = 1..L ('zil' = {L - l}; a map {l: timing}, missing layers never)."""
    if timing == "zil":
        return [{L - l} for l in range(1, L + 1)]
    if isinstance(timing, Mapping):
        return [timing_set(timing.get(l, "never"), T) for l in range(1, L + 1)]
    return [timing_set(timing, T) for _ in range(L)]


class ReferenceRun:
    """One run of the §2.3 algorithm, in plain torch."""

    def __init__(self, spec: NetworkSpec, config: TrainConfig, params: Dict[str, Tensor], run: int = 0):
        self.spec, self.cfg, self.run = spec, config, run
        self.net = nn.Sequential(*[_module(l) for l in spec.layers])
        dtype = next(iter(params.values())).dtype
        self.net.to(dtype)
        named = dict(self.net.named_parameters())
        assert set(named) == set(params), (sorted(named), sorted(params))
        with torch.no_grad():
            for name, p in named.items():
                p.copy_(params[name])
                p.requires_grad_(spec.layers[int(name.split(".")[0])].trainable)
        # weight layer number l = 1..L of every layer index
        self.weight_layer = {i: k + 1 for k, i in enumerate(
            i for i, l in enumerate(spec.layers) if isinstance(l, (Linear, Conv2d)))}
        self.L = len(self.weight_layer)
        self.masks = {f"{i}.weight": torch.tensor(l.mask, dtype=dtype)
                      for i, l in enumerate(spec.layers) if isinstance(l, (Linear, Conv2d)) and l.mask is not None}
        cuts = [-1, *node_positions(spec), len(spec.layers) - 1]
        self.segments = [self.net[a + 1:b + 1] for a, b in zip(cuts[:-1], cuts[1:])]
        self.node_masks = [None if spec.node_masks is None or m is None else torch.tensor(m, dtype=dtype)
                           for m in (spec.node_masks or [None] * (len(cuts) - 2))]
        self.X = timing_set(config.latent_steps, config.T) if len(cuts) > 2 else set()
        self.P = weight_timing_sets(config.weight_steps, config.T, self.L)
        self.connectivity = [None if spec.node_connectivity is None or S is None else torch.tensor(S, dtype=dtype)
                             for S in (spec.node_connectivity or [None] * (len(cuts) - 2))]
        self.c = _value(config.energy_coef, run)
        self.l1 = _value(config.latent_l1, run)
        self.d, self.a = _value(config.lr_decay, run), _value(config.lr_growth, run)
        self.stop_lr = None if config.stop_lr is None else _value(config.stop_lr, run)
        self._make_weight_optimizer()

    # -- weights ----------------------------------------------------------------------------------
    @property
    def trainable(self) -> Dict[str, nn.Parameter]:
        return {n: p for n, p in self.net.named_parameters() if p.requires_grad}

    @property
    def params(self) -> Dict[str, Tensor]:
        return {n: p.detach().clone() for n, p in self.net.named_parameters()}

    def _make_weight_optimizer(self) -> None:
        """torch.optim with one group per parameter. An elementwise learning rate (a tensor) is
        applied by stepping with lr = 1 and scaling the displacement: every update rule here is
        linear in lr, and the optimiser state does not depend on lr."""
        wo = self.cfg.weight_opt
        groups, self.elementwise_lr = [], {}
        for name, p in self.trainable.items():
            lr = _value(wo.lr[name] if isinstance(wo.lr, Mapping) else wo.lr, self.run)
            if isinstance(lr, Tensor):
                self.elementwise_lr[name], lr = lr.to(p.dtype), 1.0
            groups.append({"params": [p], "lr": lr})
        wd = _value(wo.weight_decay, self.run)
        if isinstance(wo, SGD):
            self.weight_opt = torch.optim.SGD(groups, lr=1.0, momentum=_value(wo.momentum, self.run),
                                              dampening=wo.dampening, weight_decay=wd)
        else:
            assert isinstance(wo, Adam)
            cls = torch.optim.AdamW if wo.decoupled else torch.optim.Adam
            betas = (_value(wo.betas[0], self.run), _value(wo.betas[1], self.run))
            self.weight_opt = cls(groups, lr=1.0, betas=betas, eps=wo.eps, weight_decay=wd)

    def optimizer_state(self) -> Dict[str, dict]:
        return {n: dict(self.weight_opt.state[p]) for n, p in self.trainable.items() if p in self.weight_opt.state}

    def _weight_step(self, layers: set) -> None:
        for name, p in self.trainable.items():  # only the stepping layers keep their gradient
            if self.weight_layer[int(name.split(".")[0])] not in layers:
                p.grad = None
        before = {n: p.detach().clone() for n, p in self.trainable.items()
                  if n in self.elementwise_lr and p.grad is not None}
        self.weight_opt.step()
        with torch.no_grad():
            for name, old in before.items():
                p = self.trainable[name]
                p.copy_(old + self.elementwise_lr[name] * (p - old))
            for name, mask in self.masks.items():
                dict(self.net.named_parameters())[name].mul_(mask)

    # -- objective --------------------------------------------------------------------------------
    def forward(self, x0: Tensor) -> Tensor:
        with torch.no_grad():
            return self.net(x0)

    def objective(self, latents: List[Tensor], x0: Tensor, y: Tensor, output_mask: Optional[Tensor] = None):
        """(F, loss, E) with F = ℓ + c·Σ_l E_l + λ Σ_l Σ|x_l|, E_l = ½ Σ M_l ⊙ (x_l − μ_l)², or with a
        connectivity mask S, E_l = ½ Σ_b Σ_ij S_ij (μ_bi − x_bj)² (spec §1.2). With an output mask m
        ([B, out] or [B, 1]): ℓ = ½ Σ m ⊙ (ŷ − y)², or −Σ_b m_b Σ_k y_bk log softmax(ŷ_b)_k, where
        masked-out target entries are dropped by ``torch.where`` (NaN there never enters ℓ)."""
        h, energy = x0, x0.new_zeros(())
        for seg, x, mask, S in zip(self.segments[:-1], latents, self.node_masks, self.connectivity):
            mu = seg(h)
            if S is None:
                sq = (x - mu) ** 2
                energy = energy + 0.5 * (sq if mask is None else sq * mask).sum()
            else:  # every pair (i, j) of units: [B, n_mu, 1] - [B, 1, n_x]
                diff = mu.flatten(1).unsqueeze(2) - x.flatten(1).unsqueeze(1)
                energy = energy + 0.5 * (S * diff ** 2).sum()
            h = x
        y_hat = self.segments[-1](h)
        if output_mask is None:
            if self.cfg.loss == "sse":
                loss = 0.5 * ((y_hat - y) ** 2).sum()
            else:
                loss = F.cross_entropy(y_hat, y, reduction="sum")  # soft targets: −Σ y log softmax
        else:
            keep = output_mask != 0
            if self.cfg.loss == "sse":
                diff = torch.where(keep, y_hat - y, torch.zeros_like(y_hat))
                loss = 0.5 * (output_mask * diff ** 2).sum()
            else:
                assert output_mask.shape[-1] == 1, "cross-entropy takes a row mask only"
                y_kept = torch.where(keep, y, torch.zeros_like(y))
                per_sample = -(y_kept * torch.log_softmax(y_hat, dim=-1)).sum(dim=-1, keepdim=True)
                loss = (output_mask * per_sample).sum()
        F_x = loss + self.c * energy
        if self.l1:
            F_x = F_x + self.l1 * sum(x.abs().sum() for x in latents)
        return F_x, loss, energy

    # -- the loop of spec §2.3 --------------------------------------------------------------------
    def train_batch(self, x0: Tensor, y: Tensor, output_mask: Optional[Tensor] = None) -> dict:
        """One batch; returns per-step records (lists), ``loss0``, ``steps``, the final latents
        (``latents``: one [B, *node shape] tensor per value node, after the last latent step taken)
        and ``latent_trace`` (per node, [steps, B, *node shape]: the latents at which each step's
        objective was evaluated). ``output_mask``: this run's [B, out] or [B, 1] mask."""
        cfg = self.cfg
        if cfg.reset_weight_opt_each_batch:
            self._make_weight_optimizer()
        with torch.no_grad():  # feed-forward latents, x = μ
            latents, h = [], x0
            for seg in self.segments[:-1]:
                h = seg(h)
                latents.append(h.clone().requires_grad_(True))
        lo = cfg.latent_opt
        eta = _value(lo.lr, self.run)
        lat_opt = None
        if latents:
            if isinstance(lo, LatentSGD):
                lat_opt = torch.optim.SGD(latents, lr=eta, momentum=lo.momentum)
            else:
                lat_opt = torch.optim.Adam(latents, lr=eta, betas=lo.betas, eps=lo.eps)
        adapt = self.d < 1 or self.a > 1
        rec = {"loss": [], "energy": [], "objective": [], "latent_lr": []}
        trace = [[] for _ in latents]
        F_prev = None
        for t in range(cfg.T):
            self.net.zero_grad(set_to_none=True)
            for x in latents:
                x.grad = None
            for per_node, x in zip(trace, latents):
                per_node.append(x.detach().clone())
            Fx, loss, energy = self.objective(latents, x0, y, output_mask)
            Fx.backward()
            F_t = Fx.item()
            rec["loss"].append(loss.item())
            rec["energy"].append(energy.item())
            rec["objective"].append(F_t)
            rec["latent_lr"].append(eta)
            stop = self.stop_lr is not None and eta <= self.stop_lr
            if t in self.X:
                for group in lat_opt.param_groups:
                    group["lr"] = eta
                lat_opt.step()
                if adapt and t >= 1:
                    eta = eta * (self.a if F_t < F_prev else self.d)
            stepping = {l for l in range(1, self.L + 1)
                        if t in self.P[l - 1] or (stop and cfg.weight_step_on_stop)}
            if stepping:
                self._weight_step(stepping)
            F_prev = F_t
            if stop:
                break
        rec["loss0"] = rec["loss"][0]
        rec["steps"] = len(rec["loss"])
        rec["latents"] = [x.detach().clone() for x in latents]
        rec["latent_trace"] = [torch.stack(per_node) for per_node in trace]
        return rec
