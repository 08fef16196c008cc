"""Continual learning: two alternating Fashion-MNIST tasks on a shared head (Song et al. 2024, fig 4d, 4e).

Claim (specs/benchmarks.md §3.3): when two tasks are trained in alternation, predictive coding
forgets less and learns each task better; its mean test error is lower across learning rates.
Published (fig 4e, per-run mean test error over the first 84 iterations, both tasks, 21 seeds): PC
0.638 at its best lr 7.5e-4, BP 0.690 at 5e-4 (chance is 0.8). Fig 4d: the trained task drops to
≈0.62–0.67 while the other sits at ≈0.93; later both fall further, each rising while the other task
is trained, PC's troughs and forgetting peaks below BP's. Only the ordering is a firm target (Q4, Q5).

Protocol (§3.3): Fashion-MNIST, flattened to 784, ToTensor scaling only. Per seed a permutation π of
the 10 classes: task A = {π0…π4}, task B = {π5…π9}; a **shared 5-unit head**: class π(5k+j) → unit
j, a bijection within each task; one-hot 0/1 targets over the 5 units. Per task 600 training
images per class (3,000), drawn once per run and kept; batch 500 (6 batches, the last partial one
kept when the size does not divide), reshuffled every iteration; the test set of a task is every test
image of its classes (5,000). 160 iterations in blocks of 4, A A A A B B B B … (:func:`task_schedule`);
an iteration is one epoch on the active task, after which **both** tasks are tested. Per run: the
test error per iteration and task, and its mean over the first 84 iterations (0–83) and both tasks
(fig 4e's scalar); best lr per rule by the across-seed mean; fig 4d shows both tasks' curves over
those 84 iterations at each rule's best lr.

Network: 784 → 32 → 32 → 32 → 5, blocks Linear (no bias) → value node → Sigmoid, linear output,
Xavier-normal initialisation (gain 1) drawn from the seed only. Loss ½Σ(ŷ−y)² summed over the batch
and all 5 units. PC: T = 64 inference steps, latent lr η_x = 0.1, discount d = 0.9, weights stepped
at the last step; BP: the same net without value nodes, one step per batch. SGD lr grid {1e-4,
2.5e-4, 5e-4, 7.5e-4, 1e-3, 5e-3}; 21 seeds. Every draw (π, the subsets, the shuffle orders, the
initial weights) comes from (seed, purpose) only, so PC and BP runs of a seed are paired (§1.4).

Long runs checkpoint every :data:`CHECKPOINT_EVERY` iterations (engine state, shuffle generators,
the curves so far; :meth:`pcneuro.paradigm.Paradigm.save_state`) and resume there (``--resume``)
with the same bits.

Departures from the reference implementation (specs/benchmarks.md §5; pcneuro implements the
"pcneuro" column):
  * Q1: exact subsets (the reference kept class size − 1 per class of a full set);
  * Q2: the test error is per sample over the whole test set of each task (the reference averaged
    per-batch errors);
  * Q4: the loss covers all 5 output units (the reference's loss skipped the 5th unit, which still
    took part in the argmax);
  * Q5: a random task split per seed with a bijective class → unit map (the reference fixed the
    tasks as {0–4}/{5–9} with unit = perm(class) mod 5, so classes could share a unit);
  * Q10: every run tests both tasks after every iteration (the reference tested one task per run,
    504 runs; pcneuro has 252).
Q4 and Q5 lower both rules' errors, so the published levels are not targets; the ordering is.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import torch

from pcneuro.datasets.images import balanced_subset, load_fashion_mnist
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset
from pcneuro.paradigms._supervised import (TrainingLog, best_lr, count_errors, epoch_order, lr_table, mean_sem, mlp,
                                           sgd_engine, to_float_images, train_epoch)
from pcneuro.registry import register

SIZES = (784, 32, 32, 32, 5)
NETWORK = mlp(SIZES)
N_UNITS = SIZES[-1]
TASKS = ("A", "B")
LEARNING_RATES = (1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 5e-3)
LABELS = {"pc": "PC", "bp": "BP"}
#: fig 4e, per-run mean test error over iterations 0–83 and both tasks, per lr (specs/benchmarks.md §3.3)
PUBLISHED = {
    "pc": {1e-4: 0.763, 2.5e-4: 0.732, 5e-4: 0.645, 7.5e-4: 0.638, 1e-3: 0.705, 5e-3: 0.796},
    "bp": {1e-4: 0.765, 2.5e-4: 0.745, 5e-4: 0.690, 7.5e-4: 0.770, 1e-3: 0.792, 5e-3: 0.800},
}
CLASS_SIZE = {"train": 6000, "test": 1000}
#: test images per forward pass (one batch shared by every run)
TEST_BATCH = 1000
#: iterations between mid-run checkpoints (one block of the published schedule)
CHECKPOINT_EVERY = 4


# -- the protocol's pieces (module functions, so the tests can check them directly) -------------------
def task_schedule(iterations: int, block: int) -> List[int]:
    """The task trained at each iteration (0 = A, 1 = B): blocks of ``block`` iterations, A first,
    alternating (A A A A B B B B … for block 4)."""
    return [(i // block) % 2 for i in range(iterations)]


def task_maps(perms: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """From per-run class permutations ``perms`` [R, 10]: (task of each class, unit of each class),
    both [R, 10] int64. Class π(5k+j) belongs to task k and maps to unit j."""
    R, n = perms.shape
    position = torch.empty_like(perms)
    position.scatter_(1, perms, torch.arange(n).expand(R, n).contiguous())  # position[r, c] = π_r⁻¹(c)
    return position // N_UNITS, position % N_UNITS


def unit_targets(unit_of_class: torch.Tensor, labels: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """One-hot targets [R, b, 5] of the per-run class ``labels`` [R, b] under the shared head."""
    return torch.nn.functional.one_hot(unit_of_class.gather(1, labels), N_UNITS).to(dtype)


def task_test_error(engine, images: torch.Tensor, units: torch.Tensor, in_b: torch.Tensor, counts: torch.Tensor,
                    to_input) -> torch.Tensor:
    """Test error [R, 2] of both tasks (a device tensor; no host reads). ``images`` [N, 784] is one
    test set shared by all runs (the images of both tasks); per run, ``units`` [R, N] is each image's
    target unit and ``in_b`` [R, N] whether it belongs to task B; ``counts`` [R, 2] the images per task.
    Ties and NaN rows are errors (:func:`count_errors`)."""
    wrong_b = torch.zeros(engine.n_runs, dtype=torch.long, device=units.device)
    wrong = torch.zeros_like(wrong_b)
    for start in range(0, images.shape[0], TEST_BATCH):
        sl = slice(start, start + TEST_BATCH)
        y_hat = engine.forward(to_input(images[sl]))  # [R, b, 5]
        # one "batch" of size 1 per sample gives the per-sample errors [R, b]
        per_sample = count_errors(y_hat.unsqueeze(-2), units[:, sl].unsqueeze(-1))
        wrong += per_sample.sum(-1)
        wrong_b += (per_sample * in_b[:, sl]).sum(-1)
    return torch.stack([wrong - wrong_b, wrong_b], dim=1).to(engine.dtype) / counts


@register
class ContinualLearning(Paradigm):
    name = "continual_learning"
    title = "Continual learning: two alternating Fashion-MNIST tasks"
    tags = ("benchmark", "image", "mlp", "continual")
    citation = "Song et al. (2024) Nat Neurosci, fig 4d, 4e"
    figure = "Song et al. 2024, fig 4d, 4e"
    version = "1"
    rules = ("pc", "bp")
    dtype = "float32"
    hyperparameters = {
        "lr": Hyper(7.5e-4, "SGD learning rate", min=0.0),
        "T": Hyper(64, "PC inference steps per batch (BP: 1)", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.1, "PC latent learning rate η_x", min=0.0),
        "latent_discount": Hyper(0.9, "PC factor d on η_x when F does not decrease", min=0.0, max=1.0),
        "iterations": Hyper(160, "iterations (one epoch on the active task, then a test of both)", type=int,
                            min=1, structural=True),
        "block": Hyper(4, "iterations per block of one task (A…A B…B …)", type=int, min=1, structural=True),
        "scored_iterations": Hyper(84, "first iterations averaged into the per-run mean (fig 4e)", type=int,
                                   min=1, structural=True),
        "batch_size": Hyper(500, "mini-batch size", type=int, min=1, structural=True),
        "train_per_class": Hyper(600, "training images per class, drawn once per run", type=int, min=1,
                                 structural=True),
        "test_per_class": Hyper(1000, "test images per class, one draw shared by every run (1000: the full set)",
                                type=int, min=1, structural=True),
    }
    grid = {"lr": LEARNING_RATES}
    default_seeds = 21
    presets = {
        "quick": Preset(seeds=2, settings={"iterations": 24, "scored_iterations": 24, "train_per_class": 100,
                                           "test_per_class": 100, "batch_size": 50, "T": 16},
                        grid={"lr": (5e-3, 1e-3)},
                        doc="seconds on a CPU: 100 training and 100 test images per class, batch 50, 24 "
                            "iterations, T = 16, two lrs, 2 seeds"),
        "paper": Preset(seeds=21, doc="the published scale: 600/class, 160 iterations, T = 64, six lrs, 21 seeds"),
    }
    measures = {
        "test_error": Measure(("iteration", "task"), "test error of each task after each iteration", "1"),
        "train_loss": Measure(("iteration",), "training loss per sample on the active task over each iteration "
                                              "(before each batch's learning)"),
        "mean_test_error": Measure((), "mean test error over the first scored iterations and both tasks", "1"),
        "diverged": Measure((), "whether the run produced a non-finite loss", "1"),
    }
    main_measure = "mean_test_error"

    # -- sizes ---------------------------------------------------------------------------------------
    @staticmethod
    def _n_train(settings: Mapping[str, Any]) -> int:
        """Training images of one task (5 classes)."""
        return N_UNITS * min(int(settings["train_per_class"]), CLASS_SIZE["train"])

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"iteration": list(range(int(settings["iterations"]))), "task": list(TASKS)}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return int(settings["iterations"]) * math.ceil(self._n_train(settings) / int(settings["batch_size"]))

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Weights (27k floats) four times over, one training batch's gathered uint8 and float inputs,
        activations, latents and their gradients, a test batch's activations, the per-run test
        targets, and the curves."""
        batch = int(settings["batch_size"])
        params = 4 * 4 * sum(a * b for a, b in zip(SIZES[:-1], SIZES[1:]))
        inputs = batch * 784 * (1 + 4 + 4)
        hidden = 8 * 4 * batch * sum(SIZES[1:]) + 3 * 4 * TEST_BATCH * sum(SIZES[1:])
        test = 2 * 8 * 10 * min(int(settings["test_per_class"]), CLASS_SIZE["test"])
        return params + inputs + hidden + test + 4 * 4 * int(settings["iterations"])

    @classmethod
    def prepare(cls, settings: Sequence[Mapping[str, Any]]) -> None:
        """Find Fashion-MNIST before anything is written."""
        load_fashion_mnist("train")
        load_fashion_mnist("test")

    # -- per-run draws (from (seed, purpose) only: paired across rules and lrs) -------------------------
    def permutations(self, seeds: Sequence[int]) -> torch.Tensor:
        """[R, 10]: each run's class permutation π (task A = π0…π4, task B = π5…π9)."""
        return torch.stack([torch.randperm(10, generator=self.generator(s, "tasks")) for s in seeds])

    def train_subsets(self, seeds: Sequence[int], labels: torch.Tensor, perms: torch.Tensor,
                      per_class: int) -> List[torch.Tensor]:
        """Per task, [R, n] training indices: ``per_class`` random images of each of the task's classes
        (all of them when that is at least the class size), drawn once per run."""
        out = []
        for k, task in enumerate(TASKS):
            out.append(torch.stack([
                balanced_subset(labels, per_class, classes=perm[N_UNITS * k:N_UNITS * (k + 1)].tolist(),
                                generator=self.generator(s, f"train_subset_{task}"))
                for s, perm in zip(seeds, perms)]))
        return out

    # -- the protocol ----------------------------------------------------------------------------------
    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        R, dtype = len(seeds), self.torch_dtype()
        train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
        perms = self.permutations(seeds)
        task_of, unit_of = task_maps(perms)  # [R, 10] each, host
        subsets = self.train_subsets(seeds, train.labels, perms, int(s0["train_per_class"]))
        per_class = int(s0["test_per_class"])
        test_sub = balanced_subset(test.labels, "all" if per_class >= CLASS_SIZE["test"] else per_class,
                                   generator=self.generator(0, "test_subset"))  # one, for every run
        test_labels = test.labels[test_sub]
        class_counts = torch.bincount(test_labels, minlength=10).to(dtype)
        counts = torch.zeros(R, 2, dtype=dtype).scatter_add_(1, task_of, class_counts.expand(R, 10).contiguous())

        x_train = train.images.reshape(len(train), -1).to(device)  # uint8, resident; batches gathered by index
        y_train = train.labels.to(device)
        x_test = test.images[test_sub].reshape(len(test_sub), -1).to(device)
        units_test = unit_of[:, test_labels].to(device)  # [R, N]
        in_b_test = task_of[:, test_labels].to(device)  # [R, N], 1 for task B
        counts = counts.to(device)
        unit_of = unit_of.to(device)
        as_input = lambda images: to_float_images(images, dtype)  # noqa: E731
        targets = lambda idx: unit_targets(unit_of, y_train[idx], dtype)  # noqa: E731

        engine = sgd_engine(self, rule, NETWORK, settings, seeds, device, init="xavier_normal")
        shuffles = [self.generator(s, "shuffle") for s in seeds]
        iterations, batch = int(s0["iterations"]), int(s0["batch_size"])
        schedule = task_schedule(iterations, int(s0["block"]))
        n_train = subsets[0].shape[1]
        n_batches = math.ceil(n_train / batch)
        log = TrainingLog(self, engine, shuffles)
        start = log.resume()  # an interrupted chunk continues after its last checkpointed iteration
        progress(start * n_batches)
        for it in range(start, iterations):
            order = epoch_order(shuffles, subsets[schedule[it]]).to(device)  # [R, n]: this iteration's order
            total = train_epoch(engine, x_train, order, batch, targets, as_input, progress)
            log.record(total, n_train, task_test_error(engine, x_test, units_test, in_b_test, counts, as_input))
            if (it + 1) % CHECKPOINT_EVERY == 0 or it + 1 == iterations:
                log.save(it + 1)
        test_error, train_loss = log.curves()  # [R, iterations, 2], [R, iterations]
        scored = min(int(s0["scored_iterations"]), iterations)
        return {"test_error": test_error.cpu().numpy(), "train_loss": train_loss.cpu().numpy(),
                "mean_test_error": test_error[:, :scored].mean(dim=(1, 2)).cpu().numpy(),
                "diverged": log.diverged.cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @classmethod
    def summary_table(cls, ds) -> str:
        return lr_table(ds, "mean_test_error", LABELS, published=PUBLISHED)

    @classmethod
    def summary_plot(cls, ds, path):
        return continual_figure(ds, path, f"{cls.title} ({cls.figure})")


def continual_figure(ds, path, title: str) -> Path:
    """Fig 4e (left: the per-run mean test error vs lr per rule, mean ± SEM over seeds, published values
    as open markers) and fig 4d (one panel per rule: both tasks' test error over the scored iterations
    at the rule's best lr; grey bands mark the iterations that train task B)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcneuro.plotting import save_figure

    config = _config(ds)
    rules = [str(r) for r in ds["rule"].values]
    has_lr = "lr" in ds["mean_test_error"].dims
    best = best_lr(ds, "mean_test_error") if has_lr else {}
    fig, axes = plt.subplots(1, 1 + len(rules), figsize=(4.2 * (1 + len(rules)), 3.6), squeeze=False)
    left = axes[0][0]
    for k, rule in enumerate(rules):
        color, name = f"C{k}", LABELS.get(rule, rule)
        da = ds["mean_test_error"].sel(rule=rule)
        other = [d for d in da.dims if d not in ("seed", "lr")]
        da = da.mean(other) if other else da
        m, s = mean_sem(da)
        if has_lr:
            left.errorbar(ds["lr"].values, m.values, yerr=s.values, color=color, marker="o", capsize=3, label=name)
            pub = PUBLISHED.get(rule)
            if pub:
                xs = sorted(pub)
                left.plot(xs, [pub[x] for x in xs], color=color, marker="s", markerfacecolor="none",
                          linestyle=":", label=f"{name}, published")
        else:
            left.errorbar([k], [float(m)], yerr=[float(s)], color=color, marker="o", capsize=3, label=name)
    if has_lr:
        left.set_xscale("log")
        left.set_xlabel("lr")
    else:
        left.set_xticks(range(len(rules)), [LABELS.get(r, r) for r in rules])
    left.axhline(0.8, color="grey", linestyle="--", linewidth=0.8)
    left.set_ylabel("mean test error (first iterations, both tasks)", fontsize=8)
    left.set_title("4e", fontsize=9)
    left.legend(fontsize=7)
    left.grid(alpha=0.3)

    scored = min(int(config.get("scored_iterations", ds.sizes["iteration"])), ds.sizes["iteration"])
    x = ds["iteration"].values[:scored]
    schedule = task_schedule(ds.sizes["iteration"], int(config.get("block", 4)))[:scored]
    for ax, rule in zip(axes[0][1:], rules):
        curve = ds["test_error"].sel(rule=rule).isel(iteration=slice(0, scored))
        if has_lr:
            curve = curve.sel(lr=best[rule])
        other = [d for d in curve.dims if d not in ("seed", "iteration", "task")]
        curve = curve.mean(other) if other else curve
        for i, trained in zip(x, schedule):
            if trained == 1:
                ax.axvspan(i - 0.5, i + 0.5, color="0.9", linewidth=0)
        for j, task in enumerate(TASKS):
            m, s = mean_sem(curve.sel(task=task))
            ax.plot(x, m.values, color=f"C{2 + j}", label=f"task {task}")
            ax.fill_between(x, (m - s).values, (m + s).values, color=f"C{2 + j}", alpha=0.25, linewidth=0)
        at = f" (lr {best[rule]:g})" if rule in best else ""
        ax.set_title(f"4d: {LABELS.get(rule, rule)}{at}", fontsize=9)
        ax.set_xlabel("iteration (grey: task B trained)", fontsize=8)
        ax.set_ylabel("test error")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(f"{title}\nmean ± SEM over {ds.sizes['seed']} seed(s)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _config(ds) -> Dict[str, Any]:
    """The run's structural settings (from the recorded plan; defaults where absent)."""
    import json

    settings = {k: h.default for k, h in ContinualLearning.hyperparameters.items()}
    try:
        plan = json.loads(ds.attrs["config"])
    except (KeyError, ValueError):
        return settings
    settings.update(plan.get("settings", {}) or {})
    return settings


__all__ = ["ContinualLearning", "NETWORK", "PUBLISHED", "task_schedule", "task_maps", "unit_targets",
           "task_test_error"]
