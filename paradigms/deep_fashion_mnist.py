"""Deep networks on Fashion-MNIST: PC degrades less with depth than BP (Song et al. 2024, fig 3f–h).

Theory spec §7 (P5), conventions §1, metrics §2, decisions §10, settings §11.

Claim. With depth, BP degrades faster than PC: PC reaches a lower test error in deep nets, tolerates
much larger learning rates (its best lr is 1–2 decades above BP's, the gap growing with depth) and
learns faster early on. Published (read from the figures, 3 seeds): AUC at the best lr

    N       1     2      4      6      8      10     12    14    15
    PC AUC  0.42  0.297  0.278  0.283  0.296  0.327  0.36  0.41  0.417
    BP AUC  0.42  0.32   0.29   0.289  0.305  0.348  0.40  0.50  0.53

and at N = 15 (fig 3g) BP ≈0.88 for lr ≤ 1e-4, best ≈0.53 at 0.005, ≈0.61 at 0.01, ≈0.9 at 0.05,
diverged (1.0) at lr ≥ 0.1; PC ≈0.88 up to 1e-3, ≈0.53 at 0.05, ≈0.49 at 0.1, best ≈0.42 at 0.5,
≈0.57 at 1, diverged at 5 (:data:`PUBLISHED_AUC`, :data:`PUBLISHED_LR_PROFILE`).

Protocol (§7). Fashion-MNIST pixels scaled to [0, 1] (not normalised), flattened to 784; one-hot
0/1 targets. Per seed a class-balanced training subset of 60 images per class (600), drawn once from
the stream (seed, "train_subset"), so every rule, lr and depth of a seed trains on the same images;
each run reshuffles it every epoch from (seed, "shuffle") (PC and BP of a seed see the same orders);
batch 60 (10 updates per epoch; a last partial batch is kept); 64 epochs; after every epoch the
feedforward test error on the whole 10,000-image test set (§10 #3: sample-weighted, nothing
dropped). Error (§2): correct only if the output is finite, its maximum unique and at the label, so a
diverged run scores 1.0 (§10 #4: such runs stay in the lr selection). Per run AUC = mean_k e_k over
the epochs; per (rule, depth) the best lr is the one with the lowest seed-mean AUC (NaN never wins,
ties go to the first lr in grid order); reported as mean ± SEM over seeds (≈ the published CI68).

Network (§1.1, §7). N ∈ {1, 2, 4, …, 14, 15} weight layers 784 → 64 → … → 64 → 10, no biases;
value nodes on the hidden pre-activations (Linear → value node → LeakyReLU(0.01) → Linear …; the
input is not passed through φ); linear output; N = 1 is the linear model 784 → 10. Weights
xavier_normal times the gain g = 0.9999000099990001 (§1.4, §10 #10: deliberately not √2), drawn from
(seed, "init") only. Loss Σ_b ½‖ŷ − onehot‖² (batch sums, never means). PC (§1.3): T = 128
inference steps from the feedforward state, latent lr η_x = 0.1 reset every batch and multiplied by
d = 0.5 whenever F does not strictly decrease, weights once at t = T − 1 by plain SGD. BP: the same
net without value nodes, one SGD step per batch. PC with N = 1 has no value node and equals BP
(§1.3), so depth 1 runs BP's step under both names. η_w grid (both rules): 5 … 5e-6 (13 values).

Depth (with width, activation, init, T, epochs, batch and the subset sizes) is structural: one
engine program per (rule, depth) holds all 13 lrs × seeds on its run axis. Long runs checkpoint after
every epoch (engine state, shuffle generators, the curves so far), so ``--resume`` continues mid-run
with the same bits.

Presets: ``quick`` (seconds: depths 1, 2, 4, three lrs, 3 epochs, T = 8, 60 training and 200 test
images, 2 seeds), ``fig3g`` (depth 15 alone at the published scale) and ``paper`` (fig 3f–h: 9 depths
× 13 lrs × 3 seeds × 2 rules = 702 runs, about 2×10¹⁴ flops, mostly PC's 64×64 products; on one
CPU core about two hours of CPU time, so run it as ``mpiexec -n 2 python run_paradigm.py
deep_fashion_mnist --preset paper`` or on a GPU, ``--resume`` after an interruption).

Departures: none from the spec's protocol. Per-seed values differ from the published ones (pcneuro's
own seed streams, §1.5); float32 arithmetic (as the reference's PyTorch default); error bands are
± SEM rather than a bootstrap CI68. The optional autoencoder variant of §7 is not implemented.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from pcneuro.datasets.images import balanced_subset, load_fashion_mnist
from pcneuro.engine import Engine, NetworkSpec
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset
from pcneuro.paradigms._supervised import (batch_slices, epoch_order, mlp, sgd_engine, test_error, to_float_images,
                                           train_epoch)
from pcneuro.paradigms.target_alignment import GAINS, INITS, init_gain  # spec §1.4 gains, init schemes
from pcneuro.plotting import line_style
from pcneuro.registry import register

#: spec §7: the depths of fig 3h and the 13 weight learning rates (both rules)
DEPTHS = (1, 2, 4, 6, 8, 10, 12, 14, 15)
LEARNING_RATES = (5.0, 1.0, 0.5, 0.1, 0.05, 0.01, 0.005, 1e-3, 5e-4, 1e-4, 5e-5, 1e-5, 5e-6)
LABELS = {"pc": "PC", "bp": "BP"}
COLORS = {"pc": "C0", "bp": "C3"}
N_INPUT, N_CLASSES = 784, 10
CLASS_SIZE = {"train": 6000, "test": 1000}  # Fashion-MNIST images per class
TEST_BATCH = 1000

#: fig 3h, AUC at the best lr per depth (spec §7 targets, read from the figure)
PUBLISHED_AUC = {
    "pc": dict(zip(DEPTHS, (0.42, 0.297, 0.278, 0.283, 0.296, 0.327, 0.36, 0.41, 0.417))),
    "bp": dict(zip(DEPTHS, (0.42, 0.32, 0.29, 0.289, 0.305, 0.348, 0.40, 0.50, 0.53))),
}
#: fig 3g, AUC per lr at N = 15 (spec §7; only the lrs the spec reads)
PUBLISHED_LR_PROFILE = {
    "pc": {1e-3: 0.88, 5e-4: 0.88, 1e-4: 0.88, 5e-5: 0.88, 1e-5: 0.88, 5e-6: 0.88, 0.05: 0.53, 0.1: 0.49,
           0.5: 0.42, 1.0: 0.57, 5.0: 1.0},
    "bp": {1e-4: 0.88, 5e-5: 0.88, 1e-5: 0.88, 5e-6: 0.88, 0.005: 0.53, 0.01: 0.61, 0.05: 0.9, 0.1: 1.0,
           0.5: 1.0, 1.0: 1.0, 5.0: 1.0},
}
PROFILE_DEPTH = 15


# -- network, engine and metrics ------------------------------------------------------------------------
def network(depth: int, width: int, activation: str) -> NetworkSpec:
    """784 → width (× depth − 1) → 10, no biases, value nodes on the hidden pre-activations, φ after
    each, linear output (spec §1.1, §7); depth 1 is the linear model 784 → 10 without value nodes."""
    return mlp((N_INPUT, *([width] * (depth - 1)), N_CLASSES), activation=activation)


def make_engine(paradigm: type, rule: str, settings: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                device, dtype) -> Engine:
    """The engine for ``rule`` on the runs' (shared) structural settings: plain SGD at each run's
    ``lr``; PC with T steps, latent SGD at ``latent_lr`` discounted by ``latent_discount``, weights at
    t = T − 1; BP one step per batch (and so PC at depth 1, spec §1.3). Initial weights from
    (seed, "init") only, times the activation's gain (§1.4; none for ``init="default"``)."""
    s0 = settings[0]
    spec = network(int(s0["depth"]), int(s0["width"]), s0["activation"])
    step_rule = "bp" if not spec.has_value_nodes else rule
    return sgd_engine(paradigm, step_rule, spec, settings, seeds, device, init=INITS[s0["init"]],
                      scale=init_gain(s0["init"], s0["activation"]), dtype=dtype)


def area_under_curve(curves: torch.Tensor) -> torch.Tensor:
    """AUC of test-error curves (spec §2): the mean over the last (epoch) axis, e.g. [R, K] → [R]."""
    return curves.mean(dim=-1)


# -- the paradigm ----------------------------------------------------------------------------------------
@register
class DeepFashionMNIST(Paradigm):
    name = "deep_fashion_mnist"
    title = "Deep networks on Fashion-MNIST: test-error AUC vs depth and learning rate"
    tags = ("theory", "benchmark", "image", "mlp", "depth")
    citation = "Song et al. (2024) Nat Neurosci, fig 3f-h (theory spec §7)"
    figure = "Song et al. 2024, fig 3f-h"
    version = "1"
    rules = ("pc", "bp")
    dtype = "float32"
    hyperparameters = {
        "depth": Hyper(15, "number of weight layers N (N - 1 hidden layers, each with a value node)", type=int,
                       min=1, structural=True),
        "width": Hyper(64, "units per hidden layer", type=int, min=1, structural=True),
        "activation": Hyper("leaky_relu", "nonlinearity phi after each hidden value node (init gain from spec "
                            "§1.4)", type=str, choices=tuple(GAINS), structural=True),
        "init": Hyper("xavier_normal", "initial weights, times the activation's gain ('default' is "
                      "U(+-1/sqrt(fan_in)))", type=str, choices=tuple(INITS), structural=True),
        "lr": Hyper(0.005, "SGD learning rate of the weights eta_w (both rules)", min=0.0),
        "T": Hyper(128, "PC inference steps per batch (at least depth; bp takes one step)", type=int, min=1,
                   structural=True),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate eta_x (reset every batch)", min=0.0),
        "latent_discount": Hyper(0.5, "PC factor d on eta_x when the energy does not decrease", min=0.0, max=1.0),
        "train_per_class": Hyper(60, "training images per class, drawn once per seed (spec §10 #2)", type=int,
                                 min=1, structural=True),
        "test_per_class": Hyper(1000, "test images per class (1000: the whole test set)", type=int, min=1,
                                structural=True),
        "epochs": Hyper(64, "training epochs (the test error is measured after each)", type=int, min=1,
                        structural=True),
        "batch_size": Hyper(60, "mini-batch size", type=int, min=1, structural=True),
    }
    grid = {"depth": DEPTHS, "lr": LEARNING_RATES}
    default_seeds = 3
    presets = {
        "quick": Preset(seeds=2, settings={"epochs": 3, "T": 8, "train_per_class": 6, "test_per_class": 20,
                                           "batch_size": 20},
                        grid={"depth": (1, 2, 4), "lr": (0.1, 0.005, 5e-4)},
                        doc="seconds on a CPU: depths 1, 2, 4; 60 training and 200 test images; 3 epochs; "
                            "T = 8; three lrs; 2 seeds"),
        "fig3g": Preset(seeds=3, grid={"depth": (15,), "lr": LEARNING_RATES},
                        doc="fig 3g alone: depth 15, the 13 lrs, the published protocol, 3 seeds"),
        "paper": Preset(seeds=3, doc="the published scale (fig 3f-h): depths 1-15, 13 lrs, 60 images per class, "
                                     "64 epochs, T = 128, the whole test set, 3 seeds (702 runs)"),
    }
    measures = {
        "test_error": Measure(("epoch",), "test error after each epoch", "1"),
        "train_loss": Measure(("epoch",), "training loss per sample over each epoch (before each batch's learning)"),
        "auc": Measure((), "AUC: test error averaged over the epochs", "1"),
        "min_test_error": Measure((), "minimum test error over the epochs", "1"),
        "diverged": Measure((), "whether the run produced a non-finite training loss", "1"),
    }
    main_measure = "auc"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["T"] < settings["depth"]:
            raise ValueError(f"T={settings['T']} is below depth={settings['depth']}: PC's error reaches the first "
                             f"weight layer at inference step depth-1 (spec §1.2), so T >= depth")
        if settings["latent_discount"] <= 0:
            raise ValueError(f"latent_discount={settings['latent_discount']!r} must be above 0")

    # -- sizes ---------------------------------------------------------------------------------------
    @staticmethod
    def _n(settings: Mapping[str, Any], split: str) -> int:
        return N_CLASSES * min(int(settings[f"{split}_per_class"]), CLASS_SIZE[split])

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"epoch": list(range(1, int(settings["epochs"]) + 1))}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return int(settings["epochs"]) * math.ceil(self._n(settings, "train") / int(settings["batch_size"]))

    def step_cost(self, settings: Mapping[str, Any]) -> float:
        """Per weight layer: at width 64 on a CPU each layer's kernels, not the 784-wide input layer's
        arithmetic, set the pace (the paper-scale PC chunks took about 3, 12, 18, 20, 24, 34 and 38 min
        at depth 2, 4, 6, 8, 10, 12 and 14), so the ranks get equal shares of the depths."""
        return float(settings["depth"])

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Weights five times over (values, gradients, the step's new values), one batch's latents,
        predictions, errors and their gradients about eight times, a test batch's activations three
        times, the epoch order and the curves (float32)."""
        depth, width, batch = int(settings["depth"]), int(settings["width"]), int(settings["batch_size"])
        hidden = depth - 1
        weights = (N_INPUT * width + max(hidden - 1, 0) * width * width + width * N_CLASSES if hidden
                   else N_INPUT * N_CLASSES)
        latents = 8 * batch * (N_INPUT + hidden * width + N_CLASSES)
        test = 3 * TEST_BATCH * (max(hidden, 1) * width + N_CLASSES)
        order = 2 * 2 * self._n(settings, "train")  # int64 on host and device
        return 4 * (5 * weights + latents + test + order + 4 * int(settings["epochs"]))

    @classmethod
    def prepare(cls, settings: Sequence[Mapping[str, Any]]) -> None:
        """Find Fashion-MNIST before anything is written."""
        load_fashion_mnist("train")
        load_fashion_mnist("test")

    # -- the protocol ----------------------------------------------------------------------------------
    def _subsets(self, seeds: Sequence[int], labels: torch.Tensor, split: str, per_class: int) -> torch.Tensor:
        """[R, n] per-run class-balanced subsets (``per_class`` per class, or the whole class when it
        has no more), drawn from (seed, "<split>_subset") only: rules, lrs and depths never enter."""
        n = "all" if per_class >= CLASS_SIZE[split] else per_class
        drawn = {s: balanced_subset(labels, n, generator=self.generator(s, f"{split}_subset"))
                 for s in dict.fromkeys(seeds)}
        return torch.stack([drawn[s] for s in seeds])

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        R, dtype = len(seeds), self.torch_dtype()
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        train_sub = self._subsets(seeds, train.labels, "train", int(s0["train_per_class"]))
        test_sub = self._subsets([0], test.labels, "test", int(s0["test_per_class"]))[0]  # one, for every run
        x_train = train.images.reshape(len(train), -1).to(device)  # uint8 [N, 784], resident
        y_train = train.labels.to(device)
        x_test = test.images[test_sub].reshape(len(test_sub), -1).to(device)
        y_test = test.labels[test_sub].to(device)
        as_input = lambda images: to_float_images(images, dtype)  # noqa: E731
        targets = lambda idx: torch.nn.functional.one_hot(y_train[idx], N_CLASSES).to(dtype)  # noqa: E731

        engine = make_engine(type(self), rule, settings, seeds, device, dtype)
        shuffles = [self.generator(s, "shuffle") for s in seeds]

        epochs, batch = int(s0["epochs"]), int(s0["batch_size"])
        n_train = train_sub.shape[1]
        per_epoch = len(batch_slices(n_train, batch))
        errors: List[torch.Tensor] = []
        losses: List[torch.Tensor] = []
        diverged = torch.zeros(R, dtype=torch.bool, device=device)
        start = 0
        state = self.saved_state()
        if state is not None:  # resume an interrupted chunk at its last finished epoch
            engine.load_state_dict(state["engine"])
            for g, st in zip(shuffles, state["shuffles"]):
                g.set_state(st)
            errors = [e.to(device) for e in state["errors"]]
            losses = [v.to(device) for v in state["losses"]]
            diverged = state["diverged"].to(device)
            start = int(state["epoch"])
            progress(start * per_epoch)
        for epoch in range(start, epochs):
            order = epoch_order(shuffles, train_sub).to(device)  # [R, n]: this epoch's order per run
            total = train_epoch(engine, x_train, order, batch, targets, as_input, progress)
            diverged |= ~torch.isfinite(total)
            losses.append(total / n_train)
            errors.append(test_error(engine, x_test, y_test, TEST_BATCH, as_input))
            self.save_state({"engine": engine.state_dict(), "shuffles": [g.get_state() for g in shuffles],
                             "epoch": epoch + 1, "errors": errors, "losses": losses, "diverged": diverged})
        curves = torch.stack(errors, dim=1)  # [R, epochs]
        return {"test_error": curves.cpu().numpy(), "train_loss": torch.stack(losses, dim=1).cpu().numpy(),
                "auc": area_under_curve(curves).cpu().numpy(), "min_test_error": curves.amin(dim=1).cpu().numpy(),
                "diverged": diverged.cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @classmethod
    def summary_table(cls, ds) -> str:
        return best_lr_table(ds) + "\n\n" + lr_grid_table(ds)

    @classmethod
    def summary_plot(cls, ds, path):
        return depth_figure(ds, path, f"{cls.title} ({cls.figure})")


# -- best lr per (rule, depth): selection, tables and figure --------------------------------------------
def _sem(da: xr.DataArray) -> xr.DataArray:
    n = da.sizes["seed"]
    return da.std("seed", ddof=1, skipna=False) / math.sqrt(n) if n > 1 else xr.zeros_like(da.mean("seed"))


def _with_axes(ds: xr.Dataset, name: str) -> xr.DataArray:
    """``name`` with ``depth`` and ``lr`` as dims (an axis that is not a grid axis of this run is added
    with its one value from the recorded settings); other grid axes averaged."""
    da = ds[name]
    fixed = json.loads(ds.attrs["config"])["settings"] if "config" in ds.attrs else {}
    for axis in ("depth", "lr"):
        if axis not in da.dims:
            da = da.expand_dims({axis: [fixed[axis]]})
    own = set(DeepFashionMNIST.measures[name].dims) if name in DeepFashionMNIST.measures else set()
    other = [d for d in da.dims if d not in ("rule", "seed", "depth", "lr", *own)]
    return da.mean(other) if other else da


def best_by_depth(ds: xr.Dataset, scalar: str = "auc") -> xr.Dataset:
    """Per (rule, depth): the lr with the lowest across-seed mean of ``scalar`` (spec §2 "LR selection";
    NaN never wins, ties go to the first lr in grid order), and that lr's mean and SEM over seeds.
    Returns a Dataset of ``lr``, ``mean`` and ``sem`` with dims (rule, depth)."""
    da = _with_axes(ds, scalar)
    i = da.mean("seed", skipna=False).fillna(np.inf).argmin("lr")
    at = da.isel(lr=i)
    lr = at["lr"].reset_coords(drop=True) if "lr" in at.coords else da["lr"].isel(lr=i)
    at = at.drop_vars("lr")
    return xr.Dataset({"lr": lr.drop_vars("lr", errors="ignore"), "mean": at.mean("seed", skipna=False),
                       "sem": _sem(at)})


def _table(head: List[str], rows: List[List[str]]) -> List[str]:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [head, *rows]]


def best_lr_table(ds: xr.Dataset) -> str:
    """Rows per rule: AUC at the best lr (mean ± SEM), the best lr, the published AUC (fig 3h); columns:
    depth."""
    best = best_by_depth(ds)
    depths = [int(d) for d in best["depth"].values]
    head = ["depth", *(str(d) for d in depths)]
    rows = []
    for rule in ds["rule"].values:
        rule = str(rule)
        b = best.sel(rule=rule)
        rows.append([f"{LABELS.get(rule, rule)} AUC", *(f"{float(b['mean'].sel(depth=d)):.3f}±"
                                                         f"{float(b['sem'].sel(depth=d)):.3f}" for d in depths)])
        rows.append(["  best lr", *(f"{float(b['lr'].sel(depth=d)):g}" for d in depths)])
        pub = PUBLISHED_AUC.get(rule, {})
        if any(d in pub for d in depths):
            rows.append(["  published", *(f"{pub[d]:g}" if d in pub else "" for d in depths)])
    title = (f"test-error AUC (mean over epochs) at the best lr per rule and depth: mean ± SEM over "
             f"{ds.sizes['seed']} seed(s); best lr = lowest seed mean; published = fig 3h (read, 64 epochs, "
             f"60/class)")
    return "\n".join([title, *_table(head, rows)])


def lr_grid_table(ds: xr.Dataset) -> str:
    """Seed-mean AUC per (rule, depth) and lr (the profile of fig 3g), the best lr marked with *, k
    diverged seeds as (kd), and the published N = 15 profile beside."""
    da = _with_axes(ds, "auc")
    mean = da.mean("seed", skipna=False)
    best = best_by_depth(ds)["lr"]
    div = _with_axes(ds, "diverged").astype(int).sum("seed")
    lrs = [float(v) for v in da["lr"].values]
    head = ["rule", "depth", *(f"{lr:g}" for lr in lrs)]
    rows = []
    for rule in ds["rule"].values:
        rule = str(rule)
        for depth in da["depth"].values:
            cells = [LABELS.get(rule, rule), str(int(depth))]
            for lr in lrs:
                m = float(mean.sel(rule=rule, depth=depth, lr=lr))
                star = "*" if lr == float(best.sel(rule=rule, depth=depth)) else ""
                d = int(div.sel(rule=rule, depth=depth, lr=lr))
                cells.append(f"{m:.3f}{star}" + (f"({d}d)" if d else ""))
            rows.append(cells)
        pub = PUBLISHED_LR_PROFILE.get(rule, {})
        if PROFILE_DEPTH in [int(d) for d in da["depth"].values]:
            rows.append(["  published", str(PROFILE_DEPTH), *(f"{pub[lr]:g}" if lr in pub else "" for lr in lrs)])
    title = (f"AUC per lr (seed mean over {ds.sizes['seed']}); * = best lr; (kd) = k seeds diverged; "
             f"published = fig 3g (N = {PROFILE_DEPTH}, read)")
    return "\n".join([title, *_table(head, rows)])


def depth_figure(ds: xr.Dataset, path, title: str) -> Path:
    """Fig 3f–h in one figure. Top left (3h): AUC at the best lr against depth per rule (mean ± SEM;
    published values as open squares). Top right (3g): AUC against lr at the deepest depth run.
    Below (3f): one panel per depth, the test error per epoch at each rule's best lr (mean ± SEM)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcneuro.plotting import save_figure

    auc = _with_axes(ds, "auc")
    curves = _with_axes(ds, "test_error")
    best = best_by_depth(ds)
    depths = [int(d) for d in auc["depth"].values]
    lrs = auc["lr"].values.astype(float)
    rules = [str(r) for r in ds["rule"].values]
    epochs = ds["epoch"].values
    cols = min(5, len(depths))
    rows = math.ceil(len(depths) / cols)
    fig = plt.figure(figsize=(max(10.0, 2.5 * cols), 4.2 + 2.3 * rows))
    outer = fig.add_gridspec(2, 1, height_ratios=[4.2, 2.3 * rows], hspace=0.35)
    top = outer[0].subgridspec(1, 2, wspace=0.25)
    bottom = outer[1].subgridspec(rows, cols, hspace=0.55, wspace=0.3)

    ax = fig.add_subplot(top[0])
    for rule in rules:
        b, color, name = best.sel(rule=rule), COLORS.get(rule, "C7"), LABELS.get(rule, rule)
        m, s = b["mean"].values, b["sem"].values
        ax.plot(depths, m, "-o", color=color, markersize=4, label=f"{name} (best lr)")
        ax.fill_between(depths, m - s, m + s, color=color, alpha=0.2, linewidth=0)
        pub = PUBLISHED_AUC.get(rule, {})
        shown = [d for d in depths if d in pub]
        if shown:
            ax.plot(shown, [pub[d] for d in shown], ":s", color=color, markerfacecolor="none", markersize=6,
                    linewidth=0.9, label=f"{name}, published (64 epochs)")
    ax.set_xticks(depths)
    ax.set_xlabel("depth (weight layers)")
    ax.set_ylabel("AUC of test error (at best lr)")
    ax.set_title("fig 3h: AUC at the best lr vs depth", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    deepest = max(depths)
    ax = fig.add_subplot(top[1])
    for rule in rules:
        color, name = COLORS.get(rule, "C7"), LABELS.get(rule, rule)
        sel = auc.sel(rule=rule, depth=deepest)
        m, s = sel.mean("seed", skipna=False).values, _sem(sel).values
        ax.errorbar(lrs, m, yerr=s, color=color, marker="o", markersize=4, capsize=2, label=name)
        pub = PUBLISHED_LR_PROFILE.get(rule, {}) if deepest == PROFILE_DEPTH else {}
        if pub:
            xs = sorted(pub)
            ax.plot(xs, [pub[x] for x in xs], "s", color=color, markerfacecolor="none", markersize=6,
                    label=f"{name}, published (64 epochs)")
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.05)
    ax.set_xlabel("weight learning rate")
    ax.set_ylabel("AUC of test error")
    ax.set_title(f"fig 3g: AUC vs lr at depth {deepest}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)

    for j, depth in enumerate(depths):
        ax = fig.add_subplot(bottom[j // cols, j % cols])
        for k, rule in enumerate(rules):
            lr = float(best["lr"].sel(rule=rule, depth=depth))
            c = curves.sel(rule=rule, depth=depth, lr=lr)
            m, s = c.mean("seed").values, _sem(c).values
            color = COLORS.get(rule, "C7")
            style, lw = line_style(k)  # at depth 1 PC equals BP: both lines stay visible
            ax.plot(epochs, m, color=color, linestyle=style, linewidth=lw, label=f"{LABELS.get(rule, rule)} lr {lr:g}")
            ax.fill_between(epochs, m - s, m + s, color=color, alpha=0.2, linewidth=0)
        ax.set_title(f"fig 3f: depth {depth}", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        if j % cols == 0:
            ax.set_ylabel("test error", fontsize=8)
        if j + cols >= len(depths):
            ax.set_xlabel("epoch", fontsize=8)
    fig.suptitle(f"{title}\nmean ± SEM over {ds.sizes['seed']} seed(s)", fontsize=10)
    return save_figure(fig, path)


__all__ = ["DeepFashionMNIST", "DEPTHS", "LEARNING_RATES", "GAINS", "PUBLISHED_AUC", "PUBLISHED_LR_PROFILE",
           "network", "make_engine", "area_under_curve",
           "best_by_depth", "best_lr_table", "lr_grid_table", "depth_figure"]
