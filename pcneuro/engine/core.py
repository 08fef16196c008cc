"""The run-stacked inference-plasticity loop (engine spec §2.3 and §4.2).

:class:`Engine` holds R stacked runs of one architecture and one rule: their parameters, their
persistent weight-optimiser state and their per-run hyperparameters. ``train_batch`` is the
reference algorithm of the spec with its data-dependent control flow (latent-rate adaptation,
early stop) expressed as tensor ops, so the T loop has no host synchronisation.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional

import torch

from .capture import GraphedBatches, resolve_mode
from .closed_form import ClosedFormBackend, Evaluation, clean_target, suits_run_last, to_run_last
from .config import LatentSGD, TrainConfig, compile_timing, compile_weight_timing, per_run
from .functional import FunctionalBackend
from .network import NetworkSpec, forward, is_shared_input, weight_masks
from .optim import LatentOptimizer, WeightOptimizer

Tensor = torch.Tensor


@dataclass
class BatchRecord:
    """Per-run records of one batch (pre-step values, engine spec §2.3).

    ``loss0``: the feed-forward training loss before learning, [R]. With ``record="every"`` the
    ``loss``/``energy``/``objective``/``latent_lr`` fields are [T, R]; with ``"last"`` they are [R]
    and hold the last step each run took. ``steps`` is the number of steps each run took. With an
    output mask every loss is the masked loss.

    ``latents`` (``record_latents`` "last" or "every"): one tensor [R, B, *node shape] per value
    node, the latents after the batch's last inference step (a run that stopped early keeps the
    latents of its stop step). ``latent_trace`` (``"every"``): one tensor [T, R, B, *node shape] per
    node, the pre-step latents x⁽ᵗ⁾ at which step t's objective is evaluated (after a run's stop,
    its final latents repeat). A net without value nodes gives empty lists; None when not recorded.
    """

    loss0: Optional[Tensor]
    loss: Optional[Tensor]
    energy: Optional[Tensor]
    objective: Optional[Tensor]
    latent_lr: Optional[Tensor]
    steps: Optional[Tensor]
    latents: Optional[List[Tensor]] = None
    latent_trace: Optional[List[Tensor]] = None


class Engine:
    """R stacked runs sharing architecture, rule, T, timing sets, optimiser kinds and batch size.

    ``params``: ``{name: Tensor[R, ...]}`` (see :func:`pcneuro.engine.network.init_params`); the
    engine keeps its own references and replaces them functionally at each weight step.
    ``backend``: ``"auto"`` (closed form for Linear stacks without connectivity masks S,
    ``torch.func`` otherwise),
    ``"closed_form"`` or ``"functional"``.
    ``layout`` (closed form only): ``"auto"``, ``"run_first"`` (contiguous [R, ...] tensors, bmm) or
    ``"run_last"`` (the run axis physically innermost, unrolled contractions; see
    :mod:`pcneuro.engine.closed_form`). ``"auto"`` decides at the first batch: run-last on the CPU
    for many runs (R ≥ 2048) of nets whose Linear layers have min(in, out) ≤ 8 and
    B·max(in, out) ≤ 128 (the behavioural paradigms' tiny nets). The layout changes speed only;
    values agree up to rounding.

    ``capture`` (:mod:`pcneuro.engine.capture`): ``"auto"`` replays each batch's T loop as a CUDA
    graph on CUDA devices (off with ``PCNEURO_CUDA_GRAPHS=0`` or the CLI's ``--no-cuda-graphs``) and
    runs eagerly elsewhere; ``"off"`` eager with functional updates (new parameter tensors at every
    weight step); ``"inplace"`` eager with the parameters and optimiser state updated in place (the
    path a graph records; equal values); ``"graph"``; ``"emulate"`` (CPU tests of the capture logic).

    With early stop, the stop-time weight step and P ⊆ {T−1} for every layer (``deferred``), the loop
    forms no weight gradients: each run's latents are kept from its due step and the weights take
    their single step after the loop (engine spec §4.2 item 5).

    ``fuse`` (closed form, run-first layout): the steps before T−1 run in the fused sweep
    (:class:`~pcneuro.engine.closed_form.FusedSweep`: a fixed dozen kernels per step on buffers the
    engine owns, latents stepped in place) when no weight steps among them, the latent optimiser is
    plain SGD, there is no early stop, output mask or latent trace, and the net is a placement-"pre"
    chain with the squared error, c = 1 and no unit masks or latent penalty (PC on the benchmark
    MLPs and the behavioural nets). Values agree with the general loop (``fuse=False``) up to rounding.
    """

    def __init__(self, spec: NetworkSpec, config: TrainConfig, params: Dict[str, Tensor],
                 backend: str = "auto", layout: str = "auto", capture: str = "auto", fuse: bool = True):
        self.spec = spec
        self.config = config
        expected = spec.param_shapes()
        if set(params) != set(expected):
            raise ValueError(f"parameters {sorted(params)} do not match the network's {sorted(expected)}")
        first = next(iter(params.values()))
        self.n_runs = R = first.shape[0]
        self.dtype, self.device = first.dtype, first.device
        self.capture = resolve_mode(capture, first.device)
        self._inplace = self.capture != "off"
        self._graphed: Optional[GraphedBatches] = None
        for n, p in params.items():
            if tuple(p.shape) != (R, *expected[n]):
                raise ValueError(f"parameter {n} has shape {tuple(p.shape)}, expected {(R, *expected[n])}")
        self.masks = weight_masks(spec, first.dtype, first.device)
        # structural zeros hold from the start, also for fixed (never stepped) layers
        # (in place, the engine owns its storage: the caller's tensors are never written)
        self.params = {n: p * self.masks[n] if n in self.masks else (p.clone() if self._inplace else p)
                       for n, p in params.items()}
        self.trainable = spec.trainable_names()

        dt, dev = self.dtype, self.device
        # c and λ go to the backend as host tensors: it reads them for static choices, then moves them
        energy_coef = per_run(config.energy_coef, R, dt, "cpu")
        latent_l1 = per_run(config.latent_l1, R, dt, "cpu")
        self.lr_decay = per_run(config.lr_decay, R, dt, dev)
        self.lr_growth = per_run(config.lr_growth, R, dt, dev)
        self.stop_lr = None if config.stop_lr is None else per_run(config.stop_lr, R, dt, dev)
        self.adapt = config.adaptation_possible()

        if backend == "auto":
            backend = "closed_form" if spec.is_mlp() else "functional"
        if layout not in ("auto", "run_first", "run_last"):
            raise ValueError(f"layout must be 'auto', 'run_first' or 'run_last', got {layout!r}")
        self.run_last = False
        # "auto" is decided at the first batch (it depends on B)
        self._layout_pending = backend == "closed_form" and layout == "auto"
        if backend == "closed_form":
            self.backend = ClosedFormBackend(spec, config.loss, energy_coef, dt, dev, latent_l1)
        elif backend == "functional":
            self.backend = FunctionalBackend(spec, config.loss, energy_coef, dt, dev, latent_l1)
        else:
            raise ValueError(f"unknown backend {backend!r}")
        self.backend_name = backend
        self.weight_opt = WeightOptimizer(config.weight_opt, self.trainable, expected, R, dt, dev)
        self.opt_state = self.weight_opt.init_state(self.params)
        self.latent_opt = LatentOptimizer(config.latent_opt, R, dt, dev)
        self.out_features = spec.layers[spec.weight_layer_indices[-1]].out_features
        if backend == "closed_form" and layout == "run_last":
            self._use_run_last()

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
        # engine spec §4.2 item 5: with stop-time weight steps and P ⊆ {T−1} for every layer, θ is frozen
        # during inference; snapshot each run's latents at its due step and step the weights once after
        # the loop (the per-run gradients at the snapshot equal those the loop would form at that step)
        self.deferred = (on_stop and spec.has_value_nodes
                         and all(not any(self.P[k][:T - 1]) for k in range(L)))
        if self.deferred:
            self._need = [[False] * L for _ in range(T)]
            self._need_any = [False] * T
            self._need_names = [[] for _ in range(T)]
        # the fused sweep (closed_form.FusedSweep) runs the steps before T−1 when the weights stay frozen
        # there, the latent optimiser is plain SGD and nothing needs per-run masks or latent traces
        self._fusable = (fuse and backend == "closed_form" and spec.has_value_nodes and T >= 2 and self.stop_lr is None
                         and isinstance(config.latent_opt, LatentSGD) and not config.latent_opt.momentum
                         and config.record_latents != "every" and not any(self._need_any[:T - 1])
                         and self.backend.fusable())
        if self._fusable and self.capture == "graph":
            self.backend.max_sweeps = None  # a captured graph keeps writing its sweep's buffers
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

    def _check_batch(self, x0: Tensor, y: Tensor, output_mask: Optional[Tensor]) -> None:
        shared = is_shared_input(self.spec, x0)  # validates the sample shape
        batch = x0.shape[0] if shared else x0.shape[1]
        if not shared and x0.shape[0] != self.n_runs:
            raise ValueError(f"per-run input has {x0.shape[0]} runs, the engine has {self.n_runs}")
        out = self.out_features
        ok = (y.ndim == 2 and tuple(y.shape) == (batch, out)) or (
            y.ndim == 3 and tuple(y.shape) == (self.n_runs, batch, out))
        if not ok:
            raise ValueError(f"target of shape {tuple(y.shape)} does not fit [B, out] = [{batch}, {out}] "
                             f"or [R, B, out] = [{self.n_runs}, {batch}, {out}]")
        if output_mask is None:
            return
        if not isinstance(output_mask, Tensor) or output_mask.is_complex() or not (
                output_mask.is_floating_point() or output_mask.dtype == torch.bool):
            raise ValueError(f"output_mask must be a float or bool tensor, got {type(output_mask).__name__} "
                             f"{getattr(output_mask, 'dtype', '')}")
        m = tuple(output_mask.shape)
        if not ((len(m) == 2 or (len(m) == 3 and m[0] == self.n_runs)) and m[-2] == batch and m[-1] in (out, 1)):
            raise ValueError(f"output_mask of shape {m} does not fit [B, out|1] = [{batch}, {out}|1] "
                             f"or [R, B, out|1] = [{self.n_runs}, {batch}, {out}|1]")
        if self.config.loss == "ce" and m[-1] != 1:
            raise ValueError(f"cross-entropy takes only a row mask [.., B, 1], got output_mask of shape {m}")

    def _use_run_last(self) -> None:
        """Move parameters, optimiser state and per-parameter rates to the run-last layout."""
        self.params = {n: to_run_last(p) for n, p in self.params.items()}
        self.opt_state = {n: {k: to_run_last(v) for k, v in st.items()} for n, st in self.opt_state.items()}
        self.weight_opt.lr = {n: to_run_last(v) for n, v in self.weight_opt.lr.items()}
        self.backend.run_last = self.run_last = True

    def forward(self, x0: Tensor) -> Tensor:
        """Plain feed-forward prediction [R, B, out] (value nodes play no part)."""
        return forward(self.spec, self.params, x0)

    def reset_weight_optimizer(self) -> None:
        fresh = self.weight_opt.init_state(self.params)
        if not self._inplace:
            self.opt_state = fresh
            return
        for name, state in fresh.items():
            for key, value in state.items():
                self.opt_state[name][key].copy_(value)

    def _weight_step(self, k: int, ev: Evaluation, run_mask: Optional[Tensor]) -> None:
        for name in self.unit_params[k]:
            new, state = self.weight_opt.step(
                name, self.params[name], ev.weight_grads[name], self.opt_state[name], run_mask)
            if name in self.masks:
                new = new * self.masks[name]
            if self._inplace:  # the parameters and moments keep their storage (a captured graph's pointers)
                self.params[name].copy_(new)
                old = self.opt_state[name]
                for key, value in state.items():
                    old[key].copy_(value)
            else:
                self.params[name] = new
                self.opt_state[name] = state

    def state_dict(self) -> Dict[str, object]:
        """A snapshot (copies) of what persists across batches: the parameters, the weight
        optimiser's moments and step counts, and the memory layout. With :meth:`load_state_dict` on
        an engine built the same way, training continues with the same bits (mid-run checkpoints)."""
        return {"params": {n: p.detach().clone() for n, p in self.params.items()},
                "opt_state": {n: {k: v.clone() for k, v in st.items()} for n, st in self.opt_state.items()},
                "run_last": self.run_last, "layout_pending": self._layout_pending}

    def load_state_dict(self, state: Dict[str, object]) -> None:
        """Restore :meth:`state_dict` (tensors may come from the host; they keep this engine's layout
        and device). Refuses a state of other parameters or shapes with one line."""
        params, opt_state = state["params"], state["opt_state"]
        if set(params) != set(self.params) or set(opt_state) != set(self.opt_state):
            raise ValueError(f"engine state of parameters {sorted(params)} does not fit this engine's "
                             f"{sorted(self.params)}")
        if state["run_last"] and not self.run_last:
            self._use_run_last()
        self._layout_pending = bool(state["layout_pending"]) and not self.run_last

        def put(current: Tensor, saved: Tensor, what: str) -> Tensor:
            if tuple(saved.shape) != tuple(current.shape):
                raise ValueError(f"engine state {what} has shape {tuple(saved.shape)}, expected "
                                 f"{tuple(current.shape)}")
            target = current if self._inplace else torch.empty_like(current)
            return target.copy_(saved)

        self.params = {n: put(p, params[n], n) for n, p in self.params.items()}
        self.opt_state = {n: {k: put(v, opt_state[n][k], f"{n} {k}") for k, v in st.items()}
                          for n, st in self.opt_state.items()}
        self.backend_reset()

    def backend_reset(self) -> None:
        """Forget the backend's cached views and products (before and after a graph capture, whose
        Python-side cache decisions are baked into the graph)."""
        reset = getattr(self.backend, "reset", None)
        if reset is not None:
            reset()

    def _release_backend(self) -> None:
        """End of a batch: drop the backend's references to parameters that a weight step replaced
        and to first-layer products computed from them, so that they can be freed."""
        release = getattr(self.backend, "release", None)
        if release is not None:
            release(self.params)

    def _deferred_step(self, snap: List[Tensor], x0: Tensor, y: Tensor, output_mask: Optional[Tensor],
                       fired: Tensor) -> None:
        """The single weight step of the deferred schedule (engine spec §4.2 item 5): layer k steps the
        runs that fired (at their stop step) and, when T−1 ∈ P_k, also those still active at T−1 — then
        every run, as each run either fired before T−1 or was active there."""
        L, T = self.spec.n_weight_layers, self.config.T
        need = [bool(self.unit_params[k]) for k in range(L)]
        if not any(need):
            return
        ev = self.backend.evaluate(self.params, snap, x0, y, need, False, output_mask)
        for k in range(L):
            if need[k]:
                self._weight_step(k, ev, None if self.P[k][T - 1] else fired)

    def _run_batch_fused(self, x0: Tensor, y: Tensor) -> BatchRecord:
        """The batch of §2.3 in the fused sweep (:class:`~pcneuro.engine.closed_form.FusedSweep`): no
        weight step before T−1, no early stop, latent SGD. Latents and η step in place; F is formed
        where the records or the latent-rate rule read it; at T−1 the weight gradients come from the
        sweep's errors and the weights step as in :meth:`_run_batch`."""
        cfg = self.config
        T, L = cfg.T, self.spec.n_weight_layers
        record, rec_every = cfg.record, cfg.record == "every"
        X = self.X
        sweep = self.backend.fused_sweep(self.params, x0, y)
        eta = self.latent_opt.lr0.clone()  # stepped in place
        eta_b = sweep.rate_view(eta)
        growth, decay = self.lr_growth, self.lr_decay
        last_latent_step = T if cfg.record_latents != "none" else T - 1
        adapt_at = [self.adapt and X[t] and 1 <= t < last_latent_step for t in range(T)]
        rec_at = [rec_every or (record == "last" and t in (0, T - 1)) for t in range(T)]
        need_obj = [rec_at[t] or adapt_at[t] or (t + 1 < T and adapt_at[t + 1]) for t in range(T)]
        buf = {k: torch.zeros(T, self.n_runs, dtype=self.dtype, device=self.device)
               for k in ("loss", "energy", "objective", "latent_lr")} if rec_every else None
        loss0 = last = F_prev = None
        fresh = False  # whether the sweep's errors belong to the current latents
        moved = False  # whether the latents left x = μ
        t = 0
        while t < T:
            # plain steps (latent step, F only for the rule, no records) run back to back
            n = 0
            while (t + n < T - 1 and t + n > 0 and X[t + n] and not rec_at[t + n]
                   and adapt_at[t + n] == (F_prev is not None) and need_obj[t + n] == adapt_at[t + n]):
                n += 1
            if n:
                F_prev = sweep.run(n, eta, eta_b, growth, decay, F_prev)
                fresh, moved = False, True
                t += n
                continue
            F = None
            if X[t] or need_obj[t] or t == T - 1:
                if not fresh:
                    sweep.forward(first=not moved)
                    fresh = True
                if need_obj[t] and t < T - 1:  # F_{T−1} only feeds the records (η after T−1 is unused)
                    F = sweep.objective2()
                if rec_at[t]:
                    if rec_every or t > 0:
                        loss, energy, objective = sweep.records()
                        if rec_every:
                            for key, v in (("loss", loss), ("energy", energy), ("objective", objective),
                                           ("latent_lr", eta)):
                                buf[key][t] = v
                        last = (loss, energy, objective, eta)
                    else:
                        loss = sweep.loss()
                    if t == 0:
                        loss0 = loss
            if t == T - 1:  # the weight step, from the gradients at (x, θ) of this step
                need = self._need[t]
                grads = sweep.weight_grads(need) if self._need_any[t] else {}
                if X[t] and t < last_latent_step:
                    sweep.descend(eta_b)
                ev = Evaluation(None, None, None, [], grads)
                for k in range(L):
                    if need[k]:
                        self._weight_step(k, ev, None)
                break
            if X[t]:
                sweep.descend(eta_b)
                fresh, moved = False, True
                if adapt_at[t]:  # 2F compared: the same strict order as F
                    eta.mul_(torch.where(F < F_prev, growth, decay))
            F_prev = F
            t += 1
        self._release_backend()
        lat_out = [x.clone() for x in sweep.latents] if cfg.record_latents != "none" else None
        if record == "none":
            return BatchRecord(None, None, None, None, None, None, lat_out, None)
        steps = torch.full((self.n_runs,), T, dtype=torch.long, device=self.device)
        if rec_every:
            return BatchRecord(loss0, buf["loss"], buf["energy"], buf["objective"], buf["latent_lr"], steps,
                               lat_out, None)
        return BatchRecord(loss0, *last, steps, lat_out, None)

    # ----------------------------------------------------------------------------------------------
    def train_batch(self, x0: Tensor, y: Tensor, output_mask: Optional[Tensor] = None) -> BatchRecord:
        """Train all R runs on one batch.

        ``x0``: [B, ...] shared by all runs or [R, B, ...]; ``y``: [B, out] or [R, B, out].
        ``output_mask`` (optional, 0/1 or non-negative floats): [B, out] shared by all runs, or
        [R, B, out] per run; the last axis may be 1 (a per-sample row mask broadcast over the
        outputs). The loss becomes ℓ = ½ Σ m ⊙ (ŷ − y)², or for cross-entropy (row masks only)
        −Σ_b m_b Σ_k y_bk log softmax(ŷ_b)_k; masked-out target entries are ignored even when they
        are NaN/inf. A run whose mask is all zero gets exactly zero gradients.
        """
        self._check_batch(x0, y, output_mask)
        if self._layout_pending:
            self._layout_pending = False
            batch = x0.shape[0] if is_shared_input(self.spec, x0) else x0.shape[1]
            if suits_run_last(self.spec, self.n_runs, batch, self.device):
                self._use_run_last()
        if output_mask is not None:
            output_mask = output_mask.to(dtype=self.dtype, device=self.device)
        y, output_mask = clean_target(y, output_mask)
        if self.run_last:  # per-run batch tensors in the backend's layout (one copy per batch)
            x0, y = (t if t.ndim < 3 else to_run_last(t) for t in (x0, y))
            if output_mask is not None and output_mask.ndim == 3:
                output_mask = to_run_last(output_mask)
        if self.capture in ("graph", "emulate"):
            if self._graphed is None:  # after the layout is settled: it moves the parameters
                self._graphed = GraphedBatches(self, emulate=self.capture == "emulate")
            return self._graphed(x0, y, output_mask)
        return self._run_batch(x0, y, output_mask)

    def _run_batch(self, x0: Tensor, y: Tensor, output_mask: Optional[Tensor]) -> BatchRecord:
        """The batch on checked, device- and layout-ready tensors: what a graph captures."""
        cfg = self.config
        T, L = cfg.T, self.spec.n_weight_layers
        if cfg.reset_weight_opt_each_batch:
            self.reset_weight_optimizer()
        if self._fusable and output_mask is None and not self.run_last:
            return self._run_batch_fused(x0, y)
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
        rec_latents = cfg.record_latents
        trace = [[] for _ in latents] if rec_latents == "every" else None
        # the latent step at T-1 is unobservable unless the latents are recorded: then skipped
        last_latent_step = T if rec_latents != "none" else T - 1
        F_prev = None
        ev = None
        stale = True  # whether (latents, params) changed since ev was computed
        # F is formed only at the steps where something reads it (engine spec §4.2 item 1): the records
        # ("last" without early stop reads t = 0 for loss0 and t = T−1 only) and the latent-rate rule
        # (F_t and F_{t−1} at each latent step t ≥ 1)
        adapt_at = [self.adapt and bool(latents) and self.X[t] and 1 <= t < last_latent_step for t in range(T)]
        rec_at = [rec_every or (record == "last" and (stopping or t in (0, T - 1))) for t in range(T)]
        need_obj = [rec_at[t] or adapt_at[t] or (t + 1 < T and adapt_at[t + 1]) for t in range(T)]
        stacked_last = None  # record "last" with early stop: (loss, energy, F) of each run's last step, [R, 3]
        deferred = self.deferred
        snap = list(latents) if deferred else None  # latents at each run's due step
        for t in range(T):
            need = self._need[t]
            fire = active & (eta <= self.stop_lr) if stopping else None
            if stale or (need_obj[t] and ev.objective is None) or (
                    self._need_any[t] and not all(n in ev.weight_grads for n in self._need_names[t])):
                ev = self.backend.evaluate(self.params, latents, x0, y, need, need_obj[t], output_mask)
                stale = False
            F_t = ev.objective
            if trace is not None:
                for per_node, x in zip(trace, latents):
                    per_node.append(x)  # latent steps make new tensors: no copy needed
            if record != "none":
                if t == 0:
                    loss0 = ev.loss.clone()
                took = active if stopping else None
                if stopping:  # a run that fires at t took steps 0..t
                    steps = torch.where(fire, t + 1, steps)
                if rec_every:
                    for key, v in (("loss", ev.loss), ("energy", ev.energy), ("objective", F_t), ("latent_lr", eta)):
                        buf[key][t] = v if took is None else torch.where(took, v, torch.zeros_like(v))
                elif took is None:
                    last = (ev.loss, ev.energy, F_t, eta)
                elif ev.stacked is not None and (stacked_last is not None or last is None):
                    stacked_last = ev.stacked if t == 0 else torch.where(took.unsqueeze(1), ev.stacked, stacked_last)
                    last = (None, None, None, eta if t == 0 else torch.where(took, eta, last[3]))
                else:
                    if stacked_last is not None:
                        last, stacked_last = (*stacked_last.unbind(1), last[3]), None
                    now = (ev.loss, ev.energy, F_t, eta)
                    last = now if last is None else tuple(torch.where(took, a, b) for a, b in zip(now, last))
            if deferred:  # due: fired now, or still active at T−1
                due = active if t == T - 1 else fire
                snap = [torch.where(due.reshape(-1, *([1] * (x.ndim - 1))), x, s) for x, s in zip(latents, snap)]
            if self.X[t] and latents and t < last_latent_step:
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
                active = active ^ fire  # fire ⊆ active: active & ~fire in one kernel
        if deferred:
            self._deferred_step(snap, x0, y, output_mask, ~active)
        self._release_backend()
        if record != "none":
            steps = torch.where(active, T, steps) if stopping else torch.full_like(steps, T)
        if stacked_last is not None:
            last = (*(v.contiguous() for v in stacked_last.unbind(1)), last[3])
        lat_out = trace_out = None
        if rec_latents != "none":
            lat_out = [x.contiguous() for x in latents]
            if trace is not None:
                trace_out = [torch.stack(per_node).contiguous() for per_node in trace]
        if record == "none":
            return BatchRecord(None, None, None, None, None, None, lat_out, trace_out)
        if rec_every:
            return BatchRecord(loss0, buf["loss"], buf["energy"], buf["objective"], buf["latent_lr"], steps,
                               lat_out, trace_out)
        return BatchRecord(loss0, *last, steps, lat_out, trace_out)
