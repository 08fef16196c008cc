"""The run-stacked inference-plasticity loop (engine spec §2.3 and §4.2).

:class:`Engine` holds R stacked runs of one architecture and one rule: their parameters, their
persistent weight-optimiser state and their per-run hyperparameters. ``train_batch`` is the
reference algorithm of the spec with its data-dependent control flow (latent-rate adaptation,
early stop) expressed as tensor ops, so the T loop has no host synchronisation.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from .closed_form import ClosedFormBackend, Evaluation
from .config import TrainConfig, compile_timing, compile_weight_timing, per_run
from .functional import FunctionalBackend
from .network import NetworkSpec, forward, is_shared_input, weight_masks
from .optim import LatentOptimizer, WeightOptimizer

Tensor = torch.Tensor


@dataclass
class BatchRecord:
    """Per-run records of one batch (pre-step values, engine spec §2.3).

    ``loss0``: the feed-forward training loss before learning, [R]. With ``record="every"`` the
    ``loss``/``energy``/``objective``/``latent_lr`` fields are [T, R]; with ``"last"`` they are [R]
    and hold the last step each run took. ``steps`` is the number of steps each run took.
    """

    loss0: Optional[Tensor]
    loss: Optional[Tensor]
    energy: Optional[Tensor]
    objective: Optional[Tensor]
    latent_lr: Optional[Tensor]
    steps: Optional[Tensor]


class Engine:
    """R stacked runs sharing architecture, rule, T, timing sets, optimiser kinds and batch size.

    ``params``: ``{name: Tensor[R, ...]}`` (see :func:`pcneuro.engine.network.init_params`); the
    engine keeps its own references and replaces them functionally at each weight step.
    ``backend``: ``"auto"`` (closed form for Linear stacks without connectivity masks S,
    ``torch.func`` otherwise),
    ``"closed_form"`` or ``"functional"``.
    """

    def __init__(self, spec: NetworkSpec, config: TrainConfig, params: Dict[str, Tensor],
                 backend: str = "auto"):
        self.spec = spec
        self.config = config
        expected = spec.param_shapes()
        if set(params) != set(expected):
            raise ValueError(f"parameters {sorted(params)} do not match the network's {sorted(expected)}")
        first = next(iter(params.values()))
        self.n_runs = R = first.shape[0]
        self.dtype, self.device = first.dtype, first.device
        for n, p in params.items():
            if tuple(p.shape) != (R, *expected[n]):
                raise ValueError(f"parameter {n} has shape {tuple(p.shape)}, expected {(R, *expected[n])}")
        self.masks = weight_masks(spec, first.dtype, first.device)
        # structural zeros hold from the start, also for fixed (never stepped) layers
        self.params = {n: p * self.masks[n] if n in self.masks else p for n, p in params.items()}
        self.trainable = spec.trainable_names()

        dt, dev = self.dtype, self.device
        self.energy_coef = per_run(config.energy_coef, R, dt, dev)
        self.latent_l1 = per_run(config.latent_l1, R, dt, dev)
        self.lr_decay = per_run(config.lr_decay, R, dt, dev)
        self.lr_growth = per_run(config.lr_growth, R, dt, dev)
        self.stop_lr = None if config.stop_lr is None else per_run(config.stop_lr, R, dt, dev)
        self.adapt = config.adaptation_possible()
        self.weight_opt = WeightOptimizer(config.weight_opt, self.trainable, expected, R, dt, dev)
        self.opt_state = self.weight_opt.init_state(self.params)
        self.latent_opt = LatentOptimizer(config.latent_opt, R, dt, dev)

        if backend == "auto":
            backend = "closed_form" if spec.is_mlp() else "functional"
        if backend == "closed_form":
            self.backend = ClosedFormBackend(spec, config.loss, self.energy_coef, dt, dev, self.latent_l1)
        elif backend == "functional":
            self.backend = FunctionalBackend(spec, config.loss, self.energy_coef, dt, dev, self.latent_l1)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        self.backend_name = backend

        T, L = config.T, spec.n_weight_layers
        self.X = compile_timing(config.latent_steps, T) if spec.has_value_nodes else [False] * T
        self.P = compile_weight_timing(config.weight_steps, T, L)
        self.unit_params = [[n for n in self.backend.unit_param_names(k) if n in self.trainable]
                            for k in range(L)]
        # the static schedule: which layers may step at t (their weight gradients are formed then)
        on_stop = self.stop_lr is not None and config.weight_step_on_stop
        self._need = [[bool(self.unit_params[k]) and (self.P[k][t] or on_stop) for k in range(L)]
                      for t in range(T)]
        self._need_any = [any(row) for row in self._need]
        self._need_names = [[n for k in range(L) if row[k] for n in self.unit_params[k]] for row in self._need]
        self._warn_unreachable_layers()

    # ----------------------------------------------------------------------------------------------
    def _warn_unreachable_layers(self) -> None:
        """Engine spec §1.4: W_l first has a nonzero gradient after (nodes above it) latent steps."""
        if not self.spec.has_value_nodes or (self.stop_lr is not None and self.config.weight_step_on_stop):
            return
        positions = self.spec.node_positions
        for k, layer_index in enumerate(self.spec.weight_layer_indices):
            if not self.unit_params[k] or not any(self.P[k]):
                continue  # fixed, or frozen on purpose by a timing set without steps
            first = sum(1 for p in positions if p >= layer_index)
            latent_steps_before = [t for t in range(self.config.T) if sum(self.X[:t]) >= first]
            if not any(self.P[k][t] for t in latent_steps_before):
                warnings.warn(
                    f"weight layer {k + 1} never learns: its first nonzero gradient needs {first} latent "
                    f"steps, but no weight step of that layer comes at or after them (T={self.config.T})",
                    stacklevel=3,
                )

    def _check_batch(self, x0: Tensor, y: Tensor) -> None:
        shared = is_shared_input(self.spec, x0)  # validates the sample shape
        batch = x0.shape[0] if shared else x0.shape[1]
        if not shared and x0.shape[0] != self.n_runs:
            raise ValueError(f"per-run input has {x0.shape[0]} runs, the engine has {self.n_runs}")
        out = self.spec.layers[self.spec.weight_layer_indices[-1]].out_features
        ok = (y.ndim == 2 and tuple(y.shape) == (batch, out)) or (
            y.ndim == 3 and tuple(y.shape) == (self.n_runs, batch, out))
        if not ok:
            raise ValueError(f"target of shape {tuple(y.shape)} does not fit [B, out] = [{batch}, {out}] "
                             f"or [R, B, out] = [{self.n_runs}, {batch}, {out}]")

    def forward(self, x0: Tensor) -> Tensor:
        """Plain feed-forward prediction [R, B, out] (value nodes play no part)."""
        return forward(self.spec, self.params, x0)

    def reset_weight_optimizer(self) -> None:
        self.opt_state = self.weight_opt.init_state(self.params)

    def _weight_step(self, k: int, ev: Evaluation, run_mask: Optional[Tensor]) -> None:
        for name in self.unit_params[k]:
            new, self.opt_state[name] = self.weight_opt.step(
                name, self.params[name], ev.weight_grads[name], self.opt_state[name], run_mask)
            if name in self.masks:
                new = new * self.masks[name]
            self.params[name] = new

    # ----------------------------------------------------------------------------------------------
    def train_batch(self, x0: Tensor, y: Tensor) -> BatchRecord:
        """Train all R runs on one batch: x0 [B, ...] shared or [R, B, ...]; y [B, out] or [R, B, out]."""
        cfg = self.config
        T, L = cfg.T, self.spec.n_weight_layers
        self._check_batch(x0, y)
        if cfg.reset_weight_opt_each_batch:
            self.reset_weight_optimizer()
        latents = self.backend.feedforward_latents(self.params, x0)
        lat_state = self.latent_opt.init_state(latents)
        eta = self.latent_opt.lr0.clone()
        stopping = self.stop_lr is not None
        active = torch.ones(self.n_runs, dtype=torch.bool, device=self.device) if stopping else None
        record = cfg.record
        rec_every = record == "every"
        buf = {k: torch.zeros(T, self.n_runs, dtype=self.dtype, device=self.device)
               for k in ("loss", "energy", "objective", "latent_lr")} if rec_every else None
        last = None
        loss0 = None
        steps = torch.zeros(self.n_runs, dtype=torch.long, device=self.device) if record != "none" else None
        F_prev = None
        ev = None
        stale = True  # whether (latents, params) changed since ev was computed
        need_objective = record != "none" or (self.adapt and bool(latents))
        for t in range(T):
            need = self._need[t]
            if stale or (self._need_any[t] and not all(n in ev.weight_grads for n in self._need_names[t])):
                ev = self.backend.evaluate(self.params, latents, x0, y, need, need_objective)
                stale = False
            F_t = ev.objective
            if record != "none":
                if t == 0:
                    loss0 = ev.loss.clone()
                took = active if stopping else None
                steps = steps + (1 if took is None else took.long())
                if rec_every:
                    for key, v in (("loss", ev.loss), ("energy", ev.energy), ("objective", F_t), ("latent_lr", eta)):
                        buf[key][t] = v if took is None else torch.where(took, v, torch.zeros_like(v))
                else:
                    now = (ev.loss, ev.energy, F_t, eta)
                    last = now if last is None or took is None else tuple(
                        torch.where(took, a, b) for a, b in zip(now, last))
            fire = active & (eta <= self.stop_lr) if stopping else None
            # the latent step at T-1 is unobservable (latents are dropped at batch end): skip it
            if self.X[t] and latents and t < T - 1:
                eta_b = eta.reshape(-1, *([1] * (latents[0].ndim - 1)))  # shaped once per step
                latents = [self.latent_opt.step(x, g, eta_b, st, active)
                           for x, g, st in zip(latents, ev.latent_grads, lat_state)]
                stale = True
                if self.adapt and t >= 1:
                    factor = torch.where(F_t < F_prev, self.lr_growth, self.lr_decay)
                    new_eta = eta * factor
                    eta = torch.where(active, new_eta, eta) if stopping else new_eta
            for k in range(L):
                if not need[k]:
                    continue
                if stopping:
                    mask = active if self.P[k][t] else fire
                    self._weight_step(k, ev, mask)
                else:
                    self._weight_step(k, ev, None)
                stale = True
            F_prev = F_t
            if stopping:
                active = active & ~fire
        if record == "none":
            return BatchRecord(None, None, None, None, None, None)
        if rec_every:
            return BatchRecord(loss0, buf["loss"], buf["energy"], buf["objective"], buf["latent_lr"], steps)
        return BatchRecord(loss0, *last, steps)
