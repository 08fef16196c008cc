"""Concept drift: re-adapting to a changing input→label mapping (Song et al. 2024, fig 4f, 4g).

Claim (specs/benchmarks.md §3.4): when the mapping from images to labels keeps changing, prospective
configuration (PC) re-adapts faster than backprop (BP) and keeps improving across drifts; its error is
lower across learning rates. Published (fig 4g, per-run mean test error over 3,000 iterations, 3
seeds): PC 0.495 / 0.37 / **0.29** / 0.365 / 1.0 (diverged) and BP 0.535 / 0.455 / **0.405** / 0.43 /
1.0 at lr 1e-3 / 5e-3 / 1e-2 / 5e-2 / 1e-1. Fig 4f (lr 0.01): both fall fast to ≈0.45; BP then
plateaus at ≈0.38–0.40 with drift spikes to ≈0.6–0.7, PC keeps falling to ≈0.20 (spikes ≈0.5–0.6).

Protocol
  A. **Pre-training** (once per pre-training setting, from ``pretrain_seed``): BP on MLP-32, SGD lr
     0.01, batch 60, 64 epochs on the full Fashion-MNIST train set (reshuffled every epoch, the last
     partial batch kept), ±1 targets (−1 everywhere, +1 at the label). Every drift run, of both
     rules and every seed and lr, starts from these weights (fresh SGD state: plain SGD has none).
  B. **Drift runs**: ``iterations`` = 3,000; at each drift iteration 0, 64, …, 2944 (every
     ``drift_period``), *before* that iteration's training, labels 0–4 keep their unit and labels
     5–9 get a fresh uniform permutation among themselves (identity allowed), and fresh
     class-balanced subsets are drawn: 120/class from the train set (1,200 images: 38 batches of
     32, the last of 16) and 100/class from the test set. Every iteration is one epoch on the
     current train subset (reshuffled per run), then the test error on the current test subset,
     both under the current labels; ±1 targets throughout.

Measured per iteration: the test error and the sum of the Frobenius norms of the three weight
matrices (after the iteration's training); per run the mean test error over all iterations (fig 4g's
scalar) and whether the run diverged (a non-finite training loss or weight norm: its test error is
1.0, since NaN rows count as errors, and it stays in the results as data). ``pretrained_test_error``
is the pre-trained net's error on the whole test set under the original labels (the drift start).
With the published pre-training settings it is ≈0.52 (measured here: the sum loss at lr 0.01 with ±1
targets saturates most sigmoid units, so the net tells only about half the classes apart; a plain
autograd loop gives the same), with a weight norm ≈96, near fig 4f's starting ≈91.

Settings: MLP-32 (784→32→32→10, sigmoid, no biases; Xavier-uniform init of the pre-training). PC: T
= 128 inference steps, latent lr η_x = 0.1, discount d = 0.5, weights at the last step; BP: T = 1.
SGD lr grid {0.1, 0.05, 0.01, 0.005, 0.001}; 3 seeds. Every random draw of a run (label maps,
subsets, shuffles) comes from its own stream :meth:`Paradigm.generator` (seed, purpose), so PC and BP
runs of a seed, at every lr, see the same permutations, subsets and orders (paired design, §1.4).

**Pre-training cache.** The runner calls :meth:`ConceptDrift.prepare` once per job, on rank 0 before
any rank simulates, so under MPI the pre-training runs once. It trains on the CPU (a pure function
of its settings and the data, whatever device the drift runs use) and writes the weights to
``<cache>/concept_drift_pretrain-<key>.pt``; ``simulate`` loads them (and trains and writes them
itself if it is called without ``prepare``). The key hashes the pre-training settings, the network,
the dtype and a digest of the train set, so another setting or another dataset never reuses a stale
file. ``<cache>`` is ``$PCNEURO_CACHE`` if set, else ``results/cache`` under the current directory:
the results' own default root (``results/<paradigm>/``), since ``simulate`` is not told where the
output goes. It must be shared by the ranks of an MPI job (it is, when they share a directory).
Under the data root would be wrong: the data root may be read-only or shared by other users, and it
holds inputs, not derived results. Delete the folder to retrain.

Long runs checkpoint at the end of every drift period (engine state, the per-run random streams, the
curves so far; :meth:`pcneuro.paradigm.Paradigm.save_state`), so ``--resume`` continues an
interrupted grid from its last finished drift period with the same bits.

Departures from the reference implementation (specs/benchmarks.md §5; pcneuro implements the
"pcneuro" column):
  * Q1: exact subsets (the reference kept class size − 1 per class for "all");
  * Q2: the test error is per sample over the whole test subset (the reference averaged per-batch
    errors);
  * Q6: the labels and subsets change once, at the start of a drift iteration, so that iteration
    trains and tests on the new mapping (the reference trained on the old labels, tested on the new
    ones, and redrew after every training batch of a drift iteration); ±1 targets throughout, as in
    the pre-training (the reference used 0/1 in iteration 0). Expect smaller drift spikes and a lower
    start than fig 4f.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
import xarray as xr

from pcneuro.datasets.images import ImageSet, balanced_subset, load_fashion_mnist
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset
from pcneuro.paradigms._supervised import (MLP32, batch_slices, count_errors, epoch_order, lr_table, mean_sem, mlp,
                                           sgd_engine, to_float_images, train_epoch)
from pcneuro.registry import register

Tensor = torch.Tensor

LEARNING_RATES = (0.001, 0.005, 0.01, 0.05, 0.1)
LABELS = {"pc": "PC", "bp": "BP"}
#: fig 4g, per-run mean test error per lr (specs/benchmarks.md §3.4); 1.0 = diverged
PUBLISHED = {
    "pc": {1e-3: 0.495, 5e-3: 0.37, 1e-2: 0.29, 5e-2: 0.365, 1e-1: 1.0},
    "bp": {1e-3: 0.535, 5e-3: 0.455, 1e-2: 0.405, 5e-2: 0.43, 1e-1: 1.0},
}
CURVE_LR = 0.01  # fig 4f's curves
N_CLASSES = 10
FIXED_LABELS = 5  # labels 0..4 keep their unit; 5..9 are permuted among themselves at every drift
TEST_BATCH = 500
PRETRAIN_KEYS = ("pretrain_epochs", "pretrain_lr", "pretrain_batch_size", "pretrain_per_class", "pretrain_seed")
CACHE_FORMAT = 1  # bump when the cache's content or the pre-training procedure changes
NETWORK = mlp(MLP32)


def cache_dir() -> Path:
    """Where pre-trained weights are cached: ``$PCNEURO_CACHE``, else ``results/cache`` (relative to
    the current directory, beside the results' default root ``results/<paradigm>/``)."""
    env = os.environ.get("PCNEURO_CACHE", "").strip()
    return Path(env) if env else Path("results") / "cache"


def pm1_targets(labels: Tensor, dtype: torch.dtype) -> Tensor:
    """±1 targets (specs/benchmarks.md §1.2, concept drift): +1 at the label's unit, −1 elsewhere;
    ``labels`` [...] → [..., 10]."""
    return torch.nn.functional.one_hot(labels, N_CLASSES).to(dtype).mul(2).sub(1)


def draw_label_map(generator: torch.Generator) -> Tensor:
    """One drift's label map [10] (host int64): label ℓ is trained and tested on unit map[ℓ]; 0–4
    map to themselves, 5–9 to a uniform random permutation of 5–9 (identity allowed)."""
    fixed = torch.arange(FIXED_LABELS)
    moved = FIXED_LABELS + torch.randperm(N_CLASSES - FIXED_LABELS, generator=generator)
    return torch.cat([fixed, moved])


def drift_iterations(iterations: int, period: int) -> range:
    """The iterations at which the mapping drifts: 0, period, 2·period, … below ``iterations``."""
    return range(0, iterations, period)


def weight_norm(engine) -> Tensor:
    """Per run [R], the sum of the Frobenius norms of the network's weight matrices."""
    return sum(p.flatten(1).norm(dim=1) for n, p in engine.params.items() if n.endswith("weight"))


def subset_test_error(engine, images: Tensor, labels: Tensor, as_input) -> Tensor:
    """Test error per run [R] on per-run test sets: ``images`` [R, n, ...], ``labels`` [R, n] (device
    tensors; no host reads). Ties and NaN rows are errors (§1.2)."""
    wrong = torch.zeros(engine.n_runs, dtype=torch.long, device=labels.device)
    n = labels.shape[1]
    for sl in batch_slices(n, TEST_BATCH):
        wrong += count_errors(engine.forward(as_input(images[:, sl])), labels[:, sl])
    return wrong.to(engine.dtype) / n


def _data_digest(images: ImageSet) -> str:
    h = hashlib.sha256()
    h.update(images.images.numpy().tobytes())
    h.update(images.labels.numpy().tobytes())
    return h.hexdigest()[:16]


@register
class ConceptDrift(Paradigm):
    name = "concept_drift"
    title = "Concept drift: mean test error vs learning rate"
    tags = ("benchmark", "image", "mlp", "drift")
    citation = "Song et al. (2024) Nat Neurosci, fig 4f, 4g"
    figure = "Song et al. 2024, fig 4f, 4g"
    version = "1"
    rules = ("pc", "bp")
    dtype = "float32"
    hyperparameters = {
        "lr": Hyper(0.01, "SGD learning rate of the drift runs", min=0.0),
        "T": Hyper(128, "inference steps per batch (pc; bp takes 1)", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.1, "latent learning rate η_x (pc)", min=0.0),
        "latent_discount": Hyper(0.5, "factor d on η_x when F does not decrease (pc)", min=0.0, max=1.0),
        "iterations": Hyper(3000, "drift-run iterations (one epoch on the current subset, then a test)",
                            type=int, min=1, structural=True),
        "drift_period": Hyper(64, "iterations between drifts (the first drift is at iteration 0)", type=int,
                              min=1, structural=True),
        "batch_size": Hyper(32, "mini-batch size of the drift runs", type=int, min=1, structural=True),
        "train_per_class": Hyper(120, "training images per class, redrawn at every drift", type=int, min=1,
                                 structural=True),
        "test_per_class": Hyper(100, "test images per class, redrawn at every drift", type=int, min=1,
                                structural=True),
        "pretrain_epochs": Hyper(64, "pre-training epochs (BP, ±1 targets; 0: Xavier init only)", type=int,
                                 min=0, structural=True),
        "pretrain_lr": Hyper(0.01, "pre-training SGD learning rate", min=0.0, structural=True),
        "pretrain_batch_size": Hyper(60, "pre-training mini-batch size", type=int, min=1, structural=True),
        "pretrain_per_class": Hyper(6000, "pre-training images per class (6000: the full train set)", type=int,
                                    min=1, structural=True),
        "pretrain_seed": Hyper(0, "the one seed of the pre-training (init, subset, shuffles)", type=int, min=0,
                               structural=True),
    }
    grid = {"lr": LEARNING_RATES}
    default_seeds = 3
    presets = {
        "quick": Preset(seeds=1, settings={"iterations": 6, "drift_period": 2, "train_per_class": 20,
                                           "test_per_class": 10, "T": 8, "pretrain_epochs": 1},
                        grid={"lr": (0.01, 0.1)},
                        doc="seconds on a CPU: pre-training 1 epoch, 6 iterations with a drift every 2, 20/class "
                            "train, 10/class test, T = 8, two lrs"),
        "paper": Preset(seeds=3, doc="the published scale: 64-epoch pre-training, 3,000 iterations, drift every 64, "
                                     "T = 128, five lrs, 3 seeds"),
    }
    measures = {
        "test_error": Measure(("iteration",), "test error after each iteration (current labels and subset)", "1"),
        "weight_norm": Measure(("iteration",), "sum of the Frobenius norms of the 3 weight matrices"),
        "train_loss": Measure(("iteration",), "training loss per sample over each iteration (before each "
                                              "batch's learning)"),
        "mean_test_error": Measure((), "mean test error over all iterations", "1"),
        "diverged": Measure((), "whether the run produced a non-finite loss or weight norm", "1"),
        "pretrained_test_error": Measure((), "test error of the pre-trained net (full test set, original labels)",
                                         "1"),
    }
    main_measure = "mean_test_error"

    # -- sizes -----------------------------------------------------------------------------------------
    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"iteration": list(range(int(settings["iterations"])))}

    @staticmethod
    def _batches_per_iteration(settings: Mapping[str, Any]) -> int:
        # the real train set has 6,000 per class; a smaller (generated) set gives fewer ticks, never more
        n = N_CLASSES * min(int(settings["train_per_class"]), 6000)
        return math.ceil(n / int(settings["batch_size"]))

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return int(settings["iterations"]) * self._batches_per_iteration(settings)

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Weights (26 k floats) a few times over, the per-run test subset (uint8 and as floats, with
        the activations of a test batch) and the curves."""
        params = 5 * 4 * 26_432
        n_test = N_CLASSES * min(int(settings["test_per_class"]), 1000)
        test = n_test * 784 + 4 * 2 * min(n_test, TEST_BATCH) * (784 + 74)
        batch = 8 * 4 * int(settings["batch_size"]) * (784 + 74)
        curves = 3 * 4 * int(settings["iterations"])
        return params + test + batch + curves

    # -- pre-training (A) ------------------------------------------------------------------------------
    @classmethod
    def pretrain_path(cls, settings: Mapping[str, Any], train: Optional[ImageSet] = None) -> Path:
        """The cache file of the pre-training that ``settings`` ask for (see the module docstring)."""
        train = train if train is not None else load_fashion_mnist("train")
        key = {k: settings[k] for k in PRETRAIN_KEYS}
        key.update(format=CACHE_FORMAT, network=list(MLP32), init="xavier_uniform", targets="pm1",
                   dtype=cls.dtype, data=_data_digest(train))
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        return cache_dir() / f"{cls.name}_pretrain-{digest}.pt"

    @classmethod
    def pretrain(cls, settings: Mapping[str, Any]) -> Dict[str, Any]:
        """Pre-train MLP-32 with BP on the CPU (protocol A); returns ``{"weights": {name: [out, in]},
        "test_error": float, "train_loss": [epochs]}``."""
        dtype, cpu = cls.torch_dtype(), torch.device("cpu")
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        seed = int(settings["pretrain_seed"])
        run = {"lr": float(settings["pretrain_lr"]), "T": 1, "latent_lr": 0.0, "latent_discount": 0.5}
        engine = sgd_engine(cls, "bp", NETWORK, [run], [seed], cpu)
        subset = balanced_subset(train.labels, int(settings["pretrain_per_class"]),
                                 generator=cls.generator(seed, "pretrain_subset"))[None]  # [1, n]
        shuffle = [cls.generator(seed, "pretrain_shuffle")]
        images = train.images.reshape(len(train), -1)
        as_input = lambda x: to_float_images(x, dtype)  # noqa: E731
        targets = lambda idx: pm1_targets(train.labels[idx], dtype)  # noqa: E731
        losses = []
        for _ in range(int(settings["pretrain_epochs"])):
            order = epoch_order(shuffle, subset)
            losses.append(float(train_epoch(engine, images, order, int(settings["pretrain_batch_size"]), targets,
                                            as_input, lambda n: None)[0]) / subset.shape[1])
        n_test = len(test)
        x_test = test.images.reshape(n_test, -1)[None]
        error = float(subset_test_error(engine, x_test, test.labels[None], as_input)[0])
        weights = {n: p[0].detach().clone() for n, p in engine.params.items()}
        return {"weights": weights, "test_error": error, "train_loss": losses}

    @classmethod
    def pretrained(cls, settings: Mapping[str, Any]) -> Dict[str, Any]:
        """The cached pre-training of ``settings`` (see :meth:`pretrain`); trained and written
        (atomically) if the cache lacks it."""
        path = cls.pretrain_path(settings)
        if path.is_file():
            return torch.load(path, map_location="cpu", weights_only=True)
        sys.stderr.write(f"{cls.name}: pre-training MLP-32 with BP ({settings['pretrain_epochs']} epochs); "
                         f"caching the weights at {path}\n")
        result = cls.pretrain(settings)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        torch.save(result, tmp)
        os.replace(tmp, path)
        return result

    @classmethod
    def prepare(cls, settings: Sequence[Mapping[str, Any]]) -> None:
        """Find Fashion-MNIST, then pre-train once per distinct pre-training setting (cached)."""
        load_fashion_mnist("train")
        load_fashion_mnist("test")
        seen = set()
        for s in settings:
            key = tuple(s[k] for k in PRETRAIN_KEYS)
            if key not in seen:
                seen.add(key)
                cls.pretrained(s)

    # -- the drift runs (B) ----------------------------------------------------------------------------
    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        R, dtype = len(seeds), self.torch_dtype()
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        start_net = self.pretrained(s0)
        engine = sgd_engine(self, rule, NETWORK, settings, seeds, device)
        state = engine.state_dict()
        state["params"] = {n: w.to(dtype).expand(R, *w.shape) for n, w in start_net["weights"].items()}
        engine.load_state_dict(state)  # every run starts from the pre-trained weights

        x_train = train.images.reshape(len(train), -1).to(device)  # uint8, resident; gathered by index
        y_train = train.labels.to(device)
        x_test_all = test.images.reshape(len(test), -1).to(device)
        y_test_all = test.labels.to(device)
        as_input = lambda images: to_float_images(images, dtype)  # noqa: E731
        streams = {p: [self.generator(s, p) for s in seeds] for p in ("relabel", "train_subset", "test_subset",
                                                                       "shuffle")}
        iterations, period, batch = int(s0["iterations"]), int(s0["drift_period"]), int(s0["batch_size"])
        n_train, n_test = int(s0["train_per_class"]), int(s0["test_per_class"])

        errors = torch.zeros(R, iterations, dtype=dtype, device=device)
        norms = torch.zeros(R, iterations, dtype=dtype, device=device)
        losses = torch.zeros(R, iterations, dtype=dtype, device=device)
        diverged = torch.zeros(R, dtype=torch.bool, device=device)
        start = 0
        saved = self.saved_state()
        if saved is not None:  # resume at the start of the drift period after the last finished one
            engine.load_state_dict(saved["engine"])
            for purpose, gens in streams.items():
                for g, st in zip(gens, saved["streams"][purpose]):
                    g.set_state(st)
            errors, norms, losses = (saved[k].to(device) for k in ("errors", "norms", "losses"))
            diverged = saved["diverged"].to(device)
            start = int(saved["iteration"])
            progress(start * self._batches_per_iteration(s0))
        for it in range(start, iterations):
            if it % period == 0:  # drift: new labels for 5-9, new subsets, before this iteration learns
                maps = torch.stack([draw_label_map(g) for g in streams["relabel"]]).to(device)  # [R, 10]
                train_sub = torch.stack([balanced_subset(train.labels, n_train, generator=g)
                                         for g in streams["train_subset"]])  # [R, n] host
                test_sub = torch.stack([balanced_subset(test.labels, n_test, generator=g)
                                        for g in streams["test_subset"]]).to(device)
                x_test = x_test_all[test_sub]  # [R, m, 784] uint8
                y_test = torch.gather(maps, 1, y_test_all[test_sub])  # [R, m] current labels
                targets = lambda idx, maps=maps: pm1_targets(torch.gather(maps, 1, y_train[idx]), dtype)  # noqa: E731
            order = epoch_order(streams["shuffle"], train_sub).to(device)  # [R, n]: this epoch's order
            total = train_epoch(engine, x_train, order, batch, targets, as_input, progress)
            norm = weight_norm(engine)
            diverged |= ~(torch.isfinite(total) & torch.isfinite(norm))
            losses[:, it] = total / order.shape[1]
            norms[:, it] = norm
            errors[:, it] = subset_test_error(engine, x_test, y_test, as_input)
            if (it + 1) % period == 0 or it + 1 == iterations:
                self.save_state({"engine": engine.state_dict(), "iteration": it + 1,
                                 "streams": {p: [g.get_state() for g in gens] for p, gens in streams.items()},
                                 "errors": errors, "norms": norms, "losses": losses, "diverged": diverged})
        return {"test_error": errors.cpu().numpy(), "weight_norm": norms.cpu().numpy(),
                "train_loss": losses.cpu().numpy(), "mean_test_error": errors.mean(dim=1).cpu().numpy(),
                "diverged": diverged.cpu().numpy(),
                "pretrained_test_error": np.full(R, start_net["test_error"], dtype=np.float32)}

    # -- summary ---------------------------------------------------------------------------------------
    @classmethod
    def summary_table(cls, ds) -> str:
        text = lr_table(ds, "mean_test_error", LABELS, published=PUBLISHED)
        div = ds["diverged"].any("seed")
        lines = [f"diverged: {LABELS.get(str(r), str(r))} at lr "
                 f"{', '.join(f'{v:g}' for v, d in zip(ds['lr'].values, div.sel(rule=r).values) if d)}"
                 for r in ds["rule"].values if "lr" in div.dims and bool(div.sel(rule=r).any())]
        start = float(ds["pretrained_test_error"].values.flat[0])
        return "\n".join([text, *lines, f"pre-trained net's test error (drift start): {start:.4f}"])

    @classmethod
    def summary_plot(cls, ds, path):
        return drift_figure(ds, path, f"{cls.title} ({cls.figure})")


# -- the figure (4g and 4f) ------------------------------------------------------------------------------
def drift_figure(ds: xr.Dataset, path, title: str) -> Path:
    """Three panels: 4g (mean test error vs lr, mean ± SEM over seeds, published values as open
    markers), 4f (test error per iteration at lr 0.01, or the grid's nearest lr) and the weight norm
    at that lr; drift iterations are marked on the curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcneuro.plotting import save_figure

    fig, (left, mid, right) = plt.subplots(1, 3, figsize=(14, 3.8))
    settings = json.loads(ds.attrs.get("config", "{}")).get("settings", {})
    has_lr = "lr" in ds["mean_test_error"].dims
    lrs = np.asarray(ds["lr"].values if has_lr else [settings.get("lr", np.nan)], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        lr = float(lrs[np.nanargmin(np.abs(np.log(lrs) - np.log(CURVE_LR)))]) if has_lr else None
    x = ds["iteration"].values
    for k, rule in enumerate(str(r) for r in ds["rule"].values):
        color, name = f"C{k}", LABELS.get(rule, rule)
        scalar = ds["mean_test_error"].sel(rule=rule)
        m, s = mean_sem(scalar.mean([d for d in scalar.dims if d not in ("seed", "lr")]))
        left.errorbar(lrs, np.atleast_1d(m.values), yerr=np.atleast_1d(s.values), color=color, marker="o",
                      capsize=3, label=name)
        pub = PUBLISHED.get(rule)
        if pub:
            xs = sorted(pub)
            left.plot(xs, [pub[v] for v in xs], color=color, marker="s", markerfacecolor="none", linestyle=":",
                      label=f"{name}, published")
        for ax, measure in ((mid, "test_error"), (right, "weight_norm")):
            c = ds[measure].sel(rule=rule)
            if has_lr:
                c = c.sel(lr=lr)
            c = c.mean([d for d in c.dims if d not in ("seed", "iteration")])
            m, s = mean_sem(c)
            ax.plot(x, m.values, color=color, linewidth=0.8, label=name)
            ax.fill_between(x, (m - s).values, (m + s).values, color=color, alpha=0.2, linewidth=0)
    period = settings.get("drift_period")
    if period:
        for ax in (mid, right):
            for d in drift_iterations(len(x), period)[1:]:
                ax.axvline(x[0] + d, color="0.5", linewidth=0.5, alpha=0.5, zorder=0)
    left.set_xscale("log")
    left.set_xlabel("lr")
    left.set_ylabel(ds["mean_test_error"].attrs.get("long_name", "mean test error"))
    left.set_title("4g", fontsize=9)
    at = f" at lr {lr if has_lr else lrs[0]:g}"
    mid.set_title(f"4f: test error{at} (grey: drifts)", fontsize=9)
    mid.set_ylabel("test error")
    right.set_title(f"weight norm{at}", fontsize=9)
    right.set_ylabel("Σ ‖W‖_F")
    right.ticklabel_format(axis="y", useOffset=False)
    for ax in (left, mid, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    mid.set_xlabel("iteration")
    right.set_xlabel("iteration")
    fig.suptitle(f"{title}\nmean ± SEM over {ds.sizes['seed']} seed(s)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["ConceptDrift", "NETWORK", "PUBLISHED", "cache_dir", "draw_label_map", "drift_iterations",
           "pm1_targets", "weight_norm"]
