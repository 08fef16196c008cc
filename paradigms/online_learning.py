"""Online learning / batch size: prospective configuration gains most from small batches
(Song et al. 2024, fig 4b, 4c).

Claim (specs/benchmarks.md §3.1): PC's advantage over BP is largest when each update sees few
examples; at batch size 1 PC beats BP at every learning rate, and the gap shrinks as the batch
grows. Published (3 seeds): fig 4b, mean test error over the 64 iterations at the best lr per
(b, rule), PC 0.272 / 0.204 / 0.193 / 0.186 / 0.183 and BP 0.289 / 0.207 / 0.200 / 0.186 / 0.183 for
b = 1 / 8 / 16 / 32 / 64; fig 4c, b = 1, minimum test error per lr .05….30, PC 0.199…0.203
(best 0.196 at .10), BP 0.219…0.222 (best 0.207 at .15).

Protocol: Fashion-MNIST, the full train (6,000/class) and test (1,000/class) sets, ToTensor scaling
only, one-hot targets. 64 iterations; each one reshuffles the whole train set (per run, from the
stream (seed, "shuffle"): PC and BP runs of a seed, and every lr of it, see the same orders), learns
only its **first 200 mini-batches** of size b (12,800 updates per run for every b), then tests on
the whole test set. Per run: the test error after every iteration, its mean (fig 4b) and its
minimum (fig 4c), and whether the training loss ever went non-finite (``diverged``; such a net
scores error 1.0, it is data, not a crash).

Network MLP-32 (784 → 32 → VN → sigmoid → 32 → VN → sigmoid → 10, linear output, no biases,
Xavier-uniform init from (seed, "init") only), loss ½Σ(ŷ−y)² summed over the batch, plain SGD.
PC: T = 64 inference steps, latent lr η_x = 0.1, discount d = 0.5, weights at the last step. BP: the
net without value nodes, one step per batch.

**The lr grid depends on b** (spec §3.1 table, :data:`LR_GRID`: 6 lrs at b = 1, 4 at b = 8 and 16,
5 at b = 32 and 64). Design: ``batch_size`` is a structural grid axis and the learning rate is an
*index* axis, ``lr_index`` 0…5, into the lr list of the run's batch size; the lr actually used is
recorded per run as the measure ``learning_rate``. A slot past the end of a list (b = 8: slots 4
and 5; b = 16: 4, 5; b = 32 and 64: 5) is an **empty slot**: it is planned (results are one
rectangular grid) but never simulated, and all its float measures are NaN (``learning_rate`` too;
``diverged`` False). No lr outside the spec's table is ever invented; the paper preset plans
5 × 6 × 3 = 90 runs per rule of which the spec's 72 are simulated (144 in all). Every lr and seed of
one batch size shares one ``simulate`` call (one engine program, R = lrs × seeds). Selection (fig
4b) skips empty slots. For a batch size outside the table, or your own lrs, set ``lr`` (> 0): it
replaces the table, with ``lr_index`` fixed at 0 (any other index is a one-line error, never a
silent duplicate or empty run), e.g. ``--set batch_size=4 --grid lr=0.05,0.1 --set lr_index=0``.

If the train set holds fewer than 200·b examples (small ``train_per_class``, or test fixtures), an
iteration learns the whole reshuffled set (the last partial batch kept) and stops there.

Long runs checkpoint after every iteration (engine state, shuffle generators, the curves so far),
so an interrupted grid resumes mid-run (``--resume``) with the same bits.

Reference quirks (specs/benchmarks.md §5) that apply, with what pcneuro does:
  * Q1: exact subsets: the full sets are all 60,000 / 10,000 images (the reference kept
    5,999 / 999 per class);
  * Q2: the test error is per sample over the whole test set (the reference averaged per-batch
    errors);
  * Q7: each iteration draws and learns only the first 200 mini-batches of its shuffle and stops
    (the reference iterated the whole loader and discarded the rest: same updates, no effect);
  * Q14 (kept, the definition): argmax ties count as errors.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import xarray as xr

from pcneuro.datasets.images import balanced_subset, load_fashion_mnist
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset
from pcneuro.paradigms._supervised import (MLP32, TrainingLog, epoch_order, lr_table, mean_sem, mlp, sgd_engine,
                                           to_float_images, train_epoch)
from pcneuro.paradigms._supervised import test_error as evaluate_test_error
from pcneuro.registry import register

#: the spec's SGD lr grid per batch size (specs/benchmarks.md §3.1)
LR_GRID: Dict[int, Tuple[float, ...]] = {
    1: (0.05, 0.10, 0.15, 0.20, 0.25, 0.30),
    8: (0.01, 0.025, 0.05, 0.10),
    16: (0.0075, 0.01, 0.025, 0.05),
    32: (0.005, 0.0075, 0.01, 0.025, 0.05),
    64: (0.001, 0.0025, 0.005, 0.0075, 0.01),
}
BATCH_SIZES = tuple(LR_GRID)
MAX_LRS = max(len(v) for v in LR_GRID.values())
LABELS = {"pc": "PC", "bp": "BP"}
#: fig 4b: mean test error over the iterations at the best lr, per batch size (§3.1, ≈ ±0.003)
PUBLISHED_4B = {"pc": {1: 0.272, 8: 0.204, 16: 0.193, 32: 0.186, 64: 0.183},
                "bp": {1: 0.289, 8: 0.207, 16: 0.200, 32: 0.186, 64: 0.183}}
#: fig 4c: b = 1, minimum test error over the iterations, per lr (§3.1, ≈ ±0.003)
PUBLISHED_4C = {"pc": {0.05: 0.199, 0.10: 0.196, 0.15: 0.197, 0.20: 0.198, 0.25: 0.203, 0.30: 0.203},
                "bp": {0.05: 0.219, 0.10: 0.211, 0.15: 0.207, 0.20: 0.215, 0.25: 0.216, 0.30: 0.222}}
CLASS_SIZE = {"train": 6000, "test": 1000}
TEST_BATCH = 1000


def run_lr(settings: Mapping[str, Any]) -> Optional[float]:
    """The SGD lr of a run: a fixed ``lr`` (> 0) if set, else slot ``lr_index`` of the spec's grid for
    its ``batch_size``; None for an empty slot (past the end of that batch size's list)."""
    if float(settings["lr"]) > 0:
        return float(settings["lr"])
    grid = LR_GRID[int(settings["batch_size"])]
    i = int(settings["lr_index"])
    return grid[i] if i < len(grid) else None


@register
class OnlineLearning(Paradigm):
    name = "online_learning"
    title = "Online learning: test error vs batch size and learning rate"
    tags = ("benchmark", "image", "mlp", "fashion_mnist")
    citation = "Song et al. (2024) Nat Neurosci, fig 4b, 4c"
    figure = "Song et al. 2024, fig 4b, 4c"
    version = "1"
    rules = ("pc", "bp")
    dtype = "float32"
    hyperparameters = {
        "lr_index": Hyper(0, "position in the spec's SGD lr list of the run's batch size (0: its smallest lr)",
                          type=int, min=0, max=MAX_LRS - 1),
        "lr": Hyper(0.0, "SGD learning rate; 0 (default): from the spec's grid at (batch_size, lr_index)", min=0.0),
        "batch_size": Hyper(1, "mini-batch size", type=int, min=1, structural=True),
        "T": Hyper(64, "inference steps per batch (PC; BP takes one step)", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.1, "latent learning rate η_x (PC)", min=0.0),
        "latent_discount": Hyper(0.5, "factor d on η_x when F does not decrease (PC)", min=0.0, max=1.0),
        "iterations": Hyper(64, "iterations (reshuffle, learn the first mini-batches, test)", type=int, min=1,
                            structural=True),
        "batches_per_iteration": Hyper(200, "mini-batches learned per iteration (the first of each shuffle)",
                                       type=int, min=1, structural=True),
        "train_per_class": Hyper(6000, "training images per class (6000: the full set)", type=int, min=1,
                                 structural=True),
        "test_per_class": Hyper(1000, "test images per class (1000: the full set)", type=int, min=1,
                                structural=True),
    }
    grid = {"batch_size": BATCH_SIZES, "lr_index": tuple(range(MAX_LRS))}
    default_seeds = 3
    presets = {
        "quick": Preset(seeds=1, settings={"iterations": 4, "batches_per_iteration": 50, "T": 16,
                                           "test_per_class": 100},
                        grid={"batch_size": (1, 8), "lr_index": (1, 2)},
                        doc="seconds on a CPU: b = 1 and 8, two lrs each, 4 iterations of 50 batches, T = 16, "
                            "1,000 test images"),
        "paper": Preset(seeds=3, doc="the published scale: full sets, b = 1…64 with their lr grids, 64 iterations "
                                     "of 200 batches, T = 64, 3 seeds"),
    }
    measures = {
        "test_error": Measure(("iteration",), "test error after each iteration", "1", nan_is_empty=True),
        "train_loss": Measure(("iteration",), "training loss per sample over each iteration's batches "
                                              "(before each batch's learning)", nan_is_empty=True),
        "mean_test_error": Measure((), "mean test error over the iterations", "1", nan_is_empty=True),
        "min_test_error": Measure((), "minimum test error over the iterations", "1", nan_is_empty=True),
        "learning_rate": Measure((), "SGD learning rate of the run (NaN: an empty lr slot, not simulated)", "1",
                                 nan_is_empty=True),
        "diverged": Measure((), "whether the run produced a non-finite training loss", "1"),
    }
    main_measure = "mean_test_error"

    # -- configuration -------------------------------------------------------------------------------
    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        b, lr = int(settings["batch_size"]), float(settings["lr"])
        if lr == 0 and b not in LR_GRID:
            raise ValueError(f"batch_size={b} has no lr grid in the spec (batch sizes "
                             f"{', '.join(map(str, BATCH_SIZES))}); give its lr with --set lr=...")
        if lr > 0 and int(settings["lr_index"]) != 0:
            raise ValueError(f"lr_index={settings['lr_index']} with lr={lr:g}: a fixed lr replaces the lr grid, "
                             f"so fix the index too (--set lr_index=0)")

    # -- sizes ---------------------------------------------------------------------------------------
    @staticmethod
    def _n(settings: Mapping[str, Any], split: str) -> int:
        return 10 * min(int(settings[f"{split}_per_class"]), CLASS_SIZE[split])

    @classmethod
    def _batches(cls, settings: Mapping[str, Any], n_train: Optional[int] = None) -> int:
        """Mini-batches learned per iteration: the first ``batches_per_iteration`` of the shuffle, or
        all of them when the train set is smaller (``n_train`` actual, default the nominal size)."""
        n = cls._n(settings, "train") if n_train is None else n_train
        return min(int(settings["batches_per_iteration"]), math.ceil(n / int(settings["batch_size"])))

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"iteration": list(range(1, int(settings["iterations"]) + 1))}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return int(settings["iterations"]) * self._batches(settings)

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Weights (26,432 floats) five times over, one iteration's shuffled indices (int64, twice),
        and a train and a test batch's inputs and activations a few times over."""
        params = 5 * 4 * (784 * 32 + 32 * 32 + 32 * 10)
        order = 2 * 8 * self._n(settings, "train")
        per_sample = 4 * (784 + 2 * (32 + 32 + 10))
        return params + order + 6 * per_sample * max(int(settings["batch_size"]), TEST_BATCH)

    @classmethod
    def prepare(cls, settings: Sequence[Mapping[str, Any]]) -> None:
        """Find Fashion-MNIST before anything is written."""
        load_fashion_mnist("train")
        load_fashion_mnist("test")

    # -- the protocol ----------------------------------------------------------------------------------
    def _subsets(self, seeds: Sequence[int], labels: torch.Tensor, split: str, per_class: int) -> torch.Tensor:
        """[R, n] per-run class-balanced subset indices from (seed, split) only; the full set (default)
        is every index. The test subset is one draw (seed 0) shared by every run."""
        n = "all" if per_class >= CLASS_SIZE[split] else per_class
        return torch.stack([balanced_subset(labels, n, generator=self.generator(s, f"{split}_subset"))
                            for s in seeds])

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        n_all, dtype = len(settings), self.torch_dtype()
        n_iter, batch = int(s0["iterations"]), int(s0["batch_size"])
        lrs = [run_lr(s) for s in settings]
        live = [i for i, lr in enumerate(lrs) if lr is not None]  # empty lr slots are not simulated
        nominal = self._batches(s0)
        measures = {
            "test_error": np.full((n_all, n_iter), np.nan, dtype=np.float32),
            "train_loss": np.full((n_all, n_iter), np.nan, dtype=np.float32),
            "mean_test_error": np.full(n_all, np.nan, dtype=np.float32),
            "min_test_error": np.full(n_all, np.nan, dtype=np.float32),
            "learning_rate": np.array([np.nan if lr is None else lr for lr in lrs], dtype=np.float32),
            "diverged": np.zeros(n_all, dtype=bool),
        }
        if not live:
            progress(n_iter * nominal)
            return measures

        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        run_seeds = [seeds[i] for i in live]
        train_sub = self._subsets(run_seeds, train.labels, "train", int(s0["train_per_class"]))
        test_sub = self._subsets([0], test.labels, "test", int(s0["test_per_class"]))[0]
        x_train = train.images.reshape(len(train), -1).to(device)  # uint8 [N, 784], resident
        y_train = train.labels.to(device)
        x_test = test.images[test_sub].reshape(len(test_sub), -1).to(device)
        y_test = test.labels[test_sub].to(device)
        as_input = lambda images: to_float_images(images, dtype)  # noqa: E731
        targets = lambda idx: torch.nn.functional.one_hot(y_train[idx], 10).to(dtype)  # noqa: E731

        engine = sgd_engine(self, rule, mlp(MLP32), [{**settings[i], "lr": lrs[i]} for i in live], run_seeds,
                            device)
        shuffles = [self.generator(s, "shuffle") for s in run_seeds]
        n_train = train_sub.shape[1]
        n_batches = self._batches(s0, n_train)
        learned = min(n_batches * batch, n_train)  # examples learned per iteration
        log = TrainingLog(self, engine, shuffles)
        start = log.resume()  # an interrupted chunk continues after its last finished iteration
        progress(start * nominal)
        for it in range(start, n_iter):
            order = epoch_order(shuffles, train_sub)[:, :learned].to(device)  # the batches this iteration learns
            total = train_epoch(engine, x_train, order, batch, targets, as_input, progress, max_batches=n_batches)
            if nominal > n_batches:  # a train set smaller than the nominal one: the ticks it had no batches for
                progress(nominal - n_batches)
            log.record(total, learned, evaluate_test_error(engine, x_test, y_test, TEST_BATCH, as_input))
            log.save(it + 1)
        err, train_loss = log.curves()
        out = {"test_error": err, "train_loss": train_loss, "mean_test_error": err.mean(dim=1),
               "min_test_error": err.amin(dim=1), "diverged": log.diverged}
        for key, value in out.items():
            measures[key][live] = value.cpu().numpy()
        return measures

    # -- summary -------------------------------------------------------------------------------------
    @classmethod
    def summary_table(cls, ds) -> str:
        ds = _full_grid(ds)
        best = best_per_batch(ds)
        n_seeds = ds.sizes["seed"]
        rules = [str(r) for r in ds["rule"].values]
        lines = [f"fig 4b: mean test error over {ds.sizes['iteration']} iteration(s) at the best lr per (batch size, "
                 f"rule): mean ± SEM over {n_seeds} seed(s); published ≈ in brackets"]
        head = ["batch", *(f"{LABELS.get(r, r)} best lr" for r in rules), *(LABELS.get(r, r) for r in rules)]
        rows = [head]
        for b in ds["batch_size"].values:
            b = int(b)
            cells = [str(b)]
            for r in rules:
                cells.append(f"{best[r][b]['lr']:g}" if b in best[r] else "-")
            for r in rules:
                if b not in best[r]:
                    cells.append("-")
                    continue
                pub = PUBLISHED_4B.get(r, {}).get(b)
                cells.append(f"{best[r][b]['mean']:.4f}±{best[r][b]['sem']:.4f}"
                             + (f" ({pub:.3f})" if pub is not None else ""))
            rows.append(cells)
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
        b4c, sub = _at_smallest_batch(ds)
        if sub is not None:
            lines += ["", f"fig 4c: batch size {b4c}, per-run minimum test error"]
            lines.append(lr_table(sub, "min_test_error", LABELS, published=PUBLISHED_4C if b4c == 1 else None))
        return "\n".join(lines)

    @classmethod
    def summary_plot(cls, ds, path):
        return online_figure(_full_grid(ds), path, f"{cls.title} ({cls.figure})")


# -- summary helpers ---------------------------------------------------------------------------------------
def _full_grid(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` with ``batch_size`` and ``lr_index`` as dims even when a run fixed them (--set)."""
    settings = json.loads(ds.attrs["config"])["settings"] if "config" in ds.attrs else {}
    for axis in ("batch_size", "lr_index"):
        if axis not in ds.dims:
            ds = ds.expand_dims({axis: [int(settings.get(axis, OnlineLearning.hyperparameters[axis].default))]})
    return ds


def _lrs(ds: xr.Dataset) -> xr.DataArray:
    """The lr of each (batch_size, lr_index) slot (NaN: empty), from the runs' ``learning_rate``."""
    lr = ds["learning_rate"].isel(rule=0, seed=0)
    lr = lr.mean([d for d in lr.dims if d not in ("batch_size", "lr_index")]).astype(float)
    return xr.apply_ufunc(np.vectorize(lambda v: float(f"{v:.6g}")), lr)  # float32 -> the spec's values


def best_per_batch(ds: xr.Dataset, scalar: str = "mean_test_error") -> Dict[str, Dict[int, Dict[str, Any]]]:
    """Fig 4b's selection (spec §1.3): per rule and batch size, the lr slot with the lowest
    across-seed mean of ``scalar`` (empty slots skipped; other grid axes averaged), with that slot's
    mean, SEM over seeds and lr: ``{rule: {b: {"lr_index", "lr", "mean", "sem"}}}``."""
    da = ds[scalar]
    da = da.mean([d for d in da.dims if d not in ("rule", "seed", "batch_size", "lr_index")])
    mean, sem = mean_sem(da)
    lrs = _lrs(ds)
    out: Dict[str, Dict[int, Dict[str, Any]]] = {}
    for rule in ds["rule"].values:
        out[str(rule)] = {}
        for b in ds["batch_size"].values:
            m = mean.sel(rule=rule, batch_size=b).values
            if np.isnan(m).all():
                continue
            i = int(np.nanargmin(m))
            out[str(rule)][int(b)] = {
                "lr_index": int(ds["lr_index"].values[i]), "lr": float(lrs.sel(batch_size=b).values[i]),
                "mean": float(m[i]), "sem": float(sem.sel(rule=rule, batch_size=b).values[i])}
    return out


def _at_smallest_batch(ds: xr.Dataset) -> Tuple[int, Optional[xr.Dataset]]:
    """Fig 4c's data: the smallest batch size in ``ds`` (1 at the paper's scale) with ``lr`` (the
    lr values) as its lr axis and empty slots dropped; None when every slot is empty."""
    b = int(ds["batch_size"].values.min())
    sub = ds.sel(batch_size=b)
    other = [d for d in sub.dims if d not in ("rule", "seed", "lr_index", "iteration")]
    sub = sub.mean(other, keep_attrs=True) if other else sub  # further grid axes (--grid T=...) averaged
    lrs = _lrs(ds).sel(batch_size=b).values
    keep = ~np.isnan(lrs)
    if not keep.any():
        return b, None
    sub = sub.isel(lr_index=np.flatnonzero(keep))
    sub = sub.assign_coords(lr=("lr_index", [float(v) for v in lrs[keep]])).swap_dims(lr_index="lr")
    return b, sub.drop_vars("lr_index")


def online_figure(ds: xr.Dataset, path, title: str):
    """Three panels: fig 4b (mean test error at the best lr vs batch size), fig 4c (minimum test error
    vs lr at the smallest batch size), and the test error per iteration at the best lr for the
    smallest (solid) and largest (dashed) batch size. Mean ± SEM over seeds; published values as open
    markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from pcneuro.plotting import save_figure

    fig, (p4b, p4c, curves) = plt.subplots(1, 3, figsize=(14, 3.9))
    rules = [str(r) for r in ds["rule"].values]
    best = best_per_batch(ds)
    b4c, sub = _at_smallest_batch(ds)
    sizes = sorted(int(b) for b in ds["batch_size"].values)
    for k, rule in enumerate(rules):
        color, name = f"C{k}", LABELS.get(rule, rule)
        bs = [b for b in sizes if b in best[rule]]
        p4b.errorbar(bs, [best[rule][b]["mean"] for b in bs], yerr=[best[rule][b]["sem"] for b in bs],
                     color=color, marker="o", capsize=3, label=name)
        pub = PUBLISHED_4B.get(rule)
        if pub:
            p4b.plot(sorted(pub), [pub[b] for b in sorted(pub)], color=color, marker="s", markerfacecolor="none",
                     linestyle=":", label=f"{name}, published")
        if sub is not None:
            m, s = mean_sem(sub["min_test_error"].sel(rule=rule))
            p4c.errorbar(sub["lr"].values, m.values, yerr=s.values, color=color, marker="o", capsize=3, label=name)
            pub = PUBLISHED_4C.get(rule) if b4c == 1 else None
            if pub:
                p4c.plot(sorted(pub), [pub[x] for x in sorted(pub)], color=color, marker="s",
                         markerfacecolor="none", linestyle=":", label=f"{name}, published")
        for b, style in ((sizes[0], "-"), (sizes[-1], "--")) if len(sizes) > 1 else ((sizes[0], "-"),):
            if b not in best[rule]:
                continue
            c = ds["test_error"].sel(rule=rule, batch_size=b, lr_index=best[rule][b]["lr_index"])
            c = c.mean([d for d in c.dims if d not in ("seed", "iteration")])
            m, s = mean_sem(c)
            x = ds["iteration"].values
            curves.plot(x, m.values, color=color, linestyle=style, label=f"{name}, b={b} (lr {best[rule][b]['lr']:g})")
            curves.fill_between(x, (m - s).values, (m + s).values, color=color, alpha=0.2, linewidth=0)
    p4b.set_xscale("log", base=2)
    ticks = sorted(set(sizes) | {b for pub in PUBLISHED_4B.values() for b in pub})
    p4b.set_xticks(ticks, [str(b) for b in ticks])
    p4b.minorticks_off()
    p4b.set_xlabel("batch size")
    p4b.set_ylabel("mean test error (best lr)")
    p4b.set_title("fig 4b", fontsize=9)
    p4c.set_xlabel("learning rate")
    p4c.set_ylabel("min test error")
    p4c.set_title(f"fig 4c: batch size {b4c}", fontsize=9)
    curves.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    curves.set_xlabel("iteration")
    curves.set_ylabel("test error")
    curves.set_title("test error at the best lr", fontsize=9)
    for ax in (p4b, p4c, curves):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{title}\nmean ± SEM over {ds.sizes['seed']} seed(s)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["OnlineLearning", "LR_GRID", "PUBLISHED_4B", "PUBLISHED_4C", "best_per_batch", "run_lr"]
