"""A tiny teacher–student task: PC matches BP's best loss over a learning-rate sweep.

Theory spec §9 (P7), Song et al. (2024), *Nature Neuroscience* (a sanity-check panel of the
extended data; the spec does not name it).

Claim (sanity check). Over a sweep of weight learning rates, PC reaches BP's best performance but
needs a somewhat larger learning rate: at small rates PC learns more slowly than BP, at the best
rates both plateau at the same loss (≈1.0 within ~20–50 epochs for lr ≥ 0.005).

Protocol (spec §9, conventions §1). A teacher 2 → 2 (ReLU) → 1 without biases, "default" init
(U(±1/√fan_in)), labels 64 inputs ~ N(0, I_2) with sign(teacher(x)) ∈ {−1, 0, +1} (the 0s, where both
teacher hidden units are inactive, are kept). The student has the same architecture and init (its
own draw), a value node on the 2 hidden pre-activations. Batches of 4 in a fixed order (no
shuffling: 16 batches per epoch), 128 epochs. Per batch the pre-update SSE Σ(ŷ − y)² (no ½) is
recorded, then one step on ½Σ(ŷ − y)² (sums over the batch, never means). Epoch loss = mean of the
epoch's 16 SSEs; the run's summary ``min_loss`` = its minimum over epochs. PC: T = 128, latent lr
0.1, discount 0.8, weights stepped once at t = T−1; BP: one SGD step per batch. Both rules run
the same weight learning rates (the grid), 6 seeds in the paper preset.

Departures: none from the protocol; the teacher, the student's initial weights and the inputs come
from pcneuro's own per-seed streams (spec §1.5), the same for PC and BP of a seed (a paired
design), so per-seed values differ from the published ones.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from pcneuro.engine import (Activation, Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule,
                            init_params)
from pcneuro.engine.activations import ACTIVATIONS
from pcneuro.engine.network import forward
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.registry import register

#: the spec's learning rates (§9), largest first
LEARNING_RATES = (0.05, 0.025, 0.01, 0.0075, 0.005, 0.0025, 0.001, 0.00075, 0.0005)
#: published min-over-epochs loss per lr (spec §9 targets, read from the figure; error bars ≈ ±0.15–0.2)
PUBLISHED = {
    "bp": {5e-4: 1.44, 7.5e-4: 1.25, 1e-3: 1.11, 2.5e-3: 0.96, 5e-3: 0.965, 7.5e-3: 0.97, 1e-2: 0.975, 2.5e-2: 0.995,
           5e-2: 1.045},
    "pc": {5e-4: 1.57, 7.5e-4: 1.39, 1e-3: 1.30, 2.5e-3: 1.08, 5e-3: 0.975, 7.5e-3: 0.97, 1e-2: 0.975, 2.5e-2: 0.995,
           5e-2: 1.03},
}
LABELS = {"pc": "PC", "bp": "BP"}
COLORS = {"pc": "C0", "bp": "C3"}
INITS = {"default": "torch", "xavier_normal": "xavier_normal", "xavier_uniform": "xavier_uniform",
         "orthogonal": "orthogonal"}
#: the curves the figure's right panel shows (where in the grid)
CURVE_LRS = (0.0005, 0.0025, 0.01)


def network(n_inputs: int, n_hidden: int, activation: str) -> NetworkSpec:
    """n_inputs → n_hidden (value nodes on the pre-activations, then φ) → 1, no biases."""
    return NetworkSpec((Linear(n_inputs, n_hidden, bias=False), Activation(activation),
                        Linear(n_hidden, 1, bias=False)), "pre")


@register
class TeacherStudent(Paradigm):
    name = "teacher_student"
    title = "Teacher-student 2-2-1 task: min loss vs learning rate"
    tags = ("theory", "toy", "lr_sweep")
    citation = "Song et al. (2024) Nat Neurosci, the teacher-student sanity check (theory spec §9)"
    figure = "Song et al. 2024, teacher-student task: minimum training loss vs learning rate"
    version = "1"
    rules = ("pc", "bp")
    hyperparameters = {
        "lr": Hyper(0.005, "weight learning rate eta_w (both rules)", min=0.0),
        "n_inputs": Hyper(2, "input units of the teacher and the student", type=int, min=1, structural=True),
        "n_hidden": Hyper(2, "hidden units of the teacher and the student", type=int, min=1, structural=True),
        "activation": Hyper("relu", "nonlinearity after the hidden units", type=str, choices=tuple(ACTIVATIONS),
                            structural=True),
        "init": Hyper("default", "initial weights of teacher and student ('default' is U(+-1/sqrt(fan_in)))",
                      type=str, choices=tuple(INITS), structural=True),
        "n_samples": Hyper(64, "training inputs ~ N(0, I)", type=int, min=1, structural=True),
        "batch_size": Hyper(4, "samples per batch (fixed order, no shuffling); divides n_samples", type=int, min=1,
                            structural=True),
        "epochs": Hyper(128, "passes over the training set", type=int, min=1, structural=True),
        "T": Hyper(128, "PC inference steps per batch (at least 2, the weight layers)", type=int, min=1,
                   structural=True),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate eta_x", min=0.0),
        "latent_discount": Hyper(0.8, "PC factor d on eta_x when the energy does not decrease", min=1e-12, max=1.0),
    }
    grid = {"lr": LEARNING_RATES}
    default_seeds = 6
    presets = {
        "quick": Preset(seeds=3, settings={"epochs": 32}, grid={"lr": (0.01, 0.001)},
                        doc="2 learning rates, 32 epochs, 3 seeds, for tests and a first look"),
        "paper": Preset(seeds=6, grid={"lr": LEARNING_RATES}, doc="the spec's 9 learning rates, 128 epochs, 6 seeds"),
        "many_seeds": Preset(seeds=64, grid={"lr": LEARNING_RATES},
                             doc="the paper protocol with 64 seeds: per-seed losses spread by ≈0.6 (some students "
                                 "end in other minima), so 6 seeds leave the pattern to the draw"),
    }
    measures = {
        "loss": Measure(("epoch",), "epoch loss: mean over the epoch's batches of the pre-update SSE sum (y_hat - y)^2",
                        "squared units"),
        "min_loss": Measure((), "minimum epoch loss over the run", "squared units"),
    }
    main_measure = "min_loss"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["n_samples"] % settings["batch_size"]:
            raise ValueError(f"batch_size={settings['batch_size']} does not divide n_samples={settings['n_samples']}")
        if settings["T"] < 2:
            raise ValueError(f"T={settings['T']}: PC needs T >= 2 (the error reaches the first weight layer at "
                             f"inference step 1, spec §1.2)")

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"epoch": list(range(1, settings["epochs"] + 1))}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return settings["epochs"]

    # ----------------------------------------------------------------------------------------------
    def task(self, seeds: Sequence[int], s0: Mapping[str, Any], dt, device):
        """Per run (its seed's streams, rule-independent): inputs [R, N, n_in], the teacher's sign labels
        [R, N, 1] and the student's initial weights."""
        spec = network(s0["n_inputs"], s0["n_hidden"], s0["activation"])
        scheme = INITS[s0["init"]]
        teacher = init_params(spec, [self.stream_seed(s, "teacher") for s in seeds], scheme, dtype=dt, device=device)
        student = init_params(spec, [self.stream_seed(s, "student") for s in seeds], scheme, dtype=dt, device=device)
        inputs = torch.stack([torch.randn(s0["n_samples"], s0["n_inputs"], generator=self.generator(s, "data"),
                                          dtype=torch.float64) for s in seeds]).to(dtype=dt, device=device)
        labels = torch.sign(forward(spec.without_value_nodes(), teacher, inputs))
        return spec, student, inputs, labels

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        dt = self.torch_dtype()
        R, B = len(settings), s0["batch_size"]
        n_batches = s0["n_samples"] // B
        spec, params, inputs, labels = self.task(seeds, s0, dt, device)
        config = TrainConfig(T=s0["T"], weight_opt=SGD(lr=stack_settings(settings, "lr", dt)),
                             latent_opt=LatentSGD(lr=stack_settings(settings, "latent_lr", dt)),
                             lr_decay=stack_settings(settings, "latent_discount", dt), lr_growth=1.0, record="none")
        engine = Engine(*build_rule(rule, spec, config), params)
        batches = [(inputs[:, b * B:(b + 1) * B], labels[:, b * B:(b + 1) * B]) for b in range(n_batches)]
        loss = torch.empty(R, s0["epochs"], dtype=dt, device=device)
        sse = torch.empty(R, n_batches, dtype=dt, device=device)
        for epoch in range(s0["epochs"]):
            for b, (x, y) in enumerate(batches):
                sse[:, b] = ((engine.forward(x) - y) ** 2).sum((-1, -2))  # pre-update, no 1/2
                engine.train_batch(x, y)
            loss[:, epoch] = sse.mean(1)
            progress(1)
        return {"loss": loss.cpu().numpy(), "min_loss": loss.min(1).values.cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @staticmethod
    def sweep(ds, rule: str):
        """(lrs ascending, seed-mean min loss, SEM) of one rule (NaN-free seeds only)."""
        da = ds["min_loss"].sel(rule=rule)
        lrs = np.asarray(ds["lr"].values, dtype=float)
        order = np.argsort(lrs)
        values = da.transpose("lr", "seed").values[order]
        n = values.shape[1]
        mean = np.nanmean(values, axis=1)
        sem = np.nanstd(values, axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(mean)
        return lrs[order], mean, sem

    @classmethod
    def summary_table(cls, ds) -> Optional[str]:
        if "lr" not in ds.dims:
            return None
        rules = [str(r) for r in ds["rule"].values]
        n = ds.sizes["seed"]
        lines = [f"{cls.title}: min over {ds.sizes['epoch']} epochs of the epoch loss (mean of pre-update SSEs), "
                 f"mean ± SEM over {n} seeds; published: spec §9 (read, ±0.15–0.2)"]
        head = ["lr", *[LABELS.get(r, r) for r in rules], *[f"published {LABELS.get(r, r)}" for r in rules]]
        sweeps = {r: cls.sweep(ds, r) for r in rules}
        rows = []
        for i, lr in enumerate(sweeps[rules[0]][0]):
            row = [f"{lr:g}"]
            for r in rules:
                row.append(f"{sweeps[r][1][i]:.3f} ± {sweeps[r][2][i]:.3f}")
            for r in rules:
                pub = PUBLISHED.get(r, {}).get(float(lr))
                row.append("" if pub is None else f"{pub:g}")
            rows.append(row)
        widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in [head, *rows]]
        for r in rules:
            lrs, mean, _ = sweeps[r]
            best = int(np.nanargmin(mean))
            lines.append(f"best {LABELS.get(r, r)}: lr* = {lrs[best]:g}, min loss {mean[best]:.3f}")
        return "\n".join(lines)

    @classmethod
    def summary_plot(cls, ds, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pcneuro.plotting import save_figure

        if "lr" not in ds.dims:
            return None
        rules = [str(r) for r in ds["rule"].values]
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
        for k, r in enumerate(rules):
            lrs, mean, sem = cls.sweep(ds, r)
            color = COLORS.get(r, f"C{k + 4}")
            left.errorbar(lrs, mean, yerr=sem, fmt="-o", color=color, capsize=3, markersize=4,
                          label=f"{LABELS.get(r, r)} (mean ± SEM, {ds.sizes['seed']} seeds)")
            pub = sorted(PUBLISHED.get(r, {}).items())
            left.plot([p[0] for p in pub], [p[1] for p in pub], ":s", color=color, markerfacecolor="none",
                      markersize=6, linewidth=0.9, label=f"{LABELS.get(r, r)} published")
            curves = ds["loss"].sel(rule=r)
            shown = [lr for lr in CURVE_LRS if np.isclose(lrs, lr).any()] or [float(lrs[0]), float(lrs[-1])]
            for j, lr in enumerate(shown):
                c = curves.sel(lr=lr, method="nearest")
                epochs = ds["epoch"].values
                m = c.mean("seed").values
                s = (c.std("seed", ddof=1).values / math.sqrt(ds.sizes["seed"]) if ds.sizes["seed"] > 1
                     else np.zeros_like(m))
                style = ("-", "--", ":", "-.")[j % 4]
                right.plot(epochs, m, style, color=color, linewidth=1.3, label=f"{LABELS.get(r, r)} lr {lr:g}")
                right.fill_between(epochs, m - s, m + s, color=color, alpha=0.15, linewidth=0)
        left.set_xscale("log")
        left.set(xlabel="learning rate", ylabel="min over epochs of the epoch loss (SSE)",
                 title="minimum training loss vs learning rate")
        left.legend(fontsize=7)
        right.set(xlabel="epoch", ylabel="epoch loss (mean pre-update SSE per batch)", title="learning curves")
        right.legend(fontsize=7, ncol=2)
        fig.suptitle(f"{cls.title} (Song et al. 2024; theory spec §9)", fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)


__all__ = ["TeacherStudent", "LEARNING_RATES", "PUBLISHED", "network"]
