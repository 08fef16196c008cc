"""Shared protocol pieces of the supervised benchmark paradigms (specs/benchmarks.md §1.2–1.3).

Not a paradigm (the leading underscore keeps the registry out): the error metric, per-run shuffled
mini-batches gathered by index from one resident dataset tensor, test-set evaluation without host
reads, and the learning-rate selection, table and figure the benchmark panels share.

* **Error** (§1.2): a sample is correct iff the set of output units equal to the row maximum is
  exactly {target unit}; ties and NaN rows are errors (a diverged net scores 1.0).
* **Batches** (§1.3, §1.4): each run reshuffles its own training subset every epoch from its own
  generator (seeded by (seed, purpose) only, so PC and BP runs of a seed see the same orders); the
  last partial batch is kept.
* **Best lr** (§1.3): per rule, the lr with the best across-seed mean of the per-run scalar; all
  seeds at that lr are reported as mean ± SEM.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import xarray as xr

Tensor = torch.Tensor


def count_errors(y_hat: Tensor, labels: Tensor) -> Tensor:
    """Errors per run in one batch: ``y_hat`` [R, B, K], ``labels`` [B] or [R, B] → [R] (int64).

    Correct iff the row is finite and the target unit is the only unit at its maximum: ties and rows
    with any NaN or inf are wrong, so a diverged run scores 1.0 (a unique +inf at the label is not
    a right answer)."""
    top = y_hat.amax(dim=-1, keepdim=True)
    at_top = y_hat == top  # a NaN row has no unit at its (NaN) maximum
    lab = labels.expand(y_hat.shape[:-1]) if labels.ndim == 1 else labels
    hit = at_top.gather(-1, lab.unsqueeze(-1)).squeeze(-1)
    correct = hit & (at_top.sum(-1) == 1) & torch.isfinite(y_hat).all(dim=-1)
    return (~correct).sum(-1)


def test_error(engine, images: Tensor, labels: Tensor, batch: int, to_input) -> Tensor:
    """Test error per run [R] (a device tensor; no host reads) over a test set shared by all runs:
    ``images`` [N, ...] as stored (e.g. uint8), ``to_input`` maps a slice to the network's input."""
    wrong = torch.zeros(engine.n_runs, dtype=torch.long, device=labels.device)
    n = images.shape[0]
    for start in range(0, n, batch):
        x = to_input(images[start:start + batch])
        wrong += count_errors(engine.forward(x), labels[start:start + batch])
    return wrong.to(engine.dtype) / n


def epoch_order(generators: Sequence[torch.Generator], subsets: Tensor) -> Tensor:
    """Per run, its subset's indices in a fresh random order: ``subsets`` [R, n] → [R, n] (host)."""
    n = subsets.shape[1]
    perms = torch.stack([torch.randperm(n, generator=g) for g in generators])
    return torch.gather(subsets, 1, perms)


def batch_slices(n: int, batch: int) -> List[slice]:
    """The mini-batches of an epoch of ``n`` examples, the last partial one kept (§1.3)."""
    return [slice(i, min(i + batch, n)) for i in range(0, n, batch)]


# -- the MLP benchmarks' network, engine and epoch ----------------------------------------------------
def mlp(sizes: Sequence[int], activation: str = "sigmoid", bias: bool = False):
    """Linear → value node → activation blocks, linear output (specs/benchmarks.md §3: MLP-32 is
    ``mlp((784, 32, 32, 10))``, no biases)."""
    from pcneuro.engine import Activation, Linear, NetworkSpec

    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, bias=bias))
        if k < len(sizes) - 2:
            layers.append(Activation(activation))
    return NetworkSpec(tuple(layers), value_nodes="pre")


MLP32 = (784, 32, 32, 10)


def sgd_engine(paradigm, rule: str, spec, settings: Sequence[Mapping], seeds: Sequence[int], device,
               init: str = "xavier_uniform", loss: str = "sse", record: str = "last", scale: float = 1.0,
               dtype: Optional[torch.dtype] = None):
    """The engine for ``rule`` with the benchmark conventions (§1.1): plain SGD at the per-run ``lr``;
    for PC the latent SGD at ``latent_lr`` with discount ``latent_discount`` for T = ``T`` steps, weights
    at the last step; BP with T = 1. Initial weights from (seed, "init") only, shared by the rules:
    ``init_params`` scheme ``init`` times ``scale`` (an activation's gain). ``dtype`` defaults to the
    paradigm's."""
    from pcneuro.engine import SGD, Engine, LatentSGD, TrainConfig, build_rule, init_params
    from pcneuro.paradigm import stack_settings

    dtype = dtype or paradigm.torch_dtype()
    s0 = settings[0]
    config = TrainConfig(
        T=int(s0["T"]), loss=loss, record=record,
        weight_opt=SGD(lr=stack_settings(settings, "lr", dtype)),
        latent_opt=LatentSGD(lr=stack_settings(settings, "latent_lr", dtype)),
        lr_decay=stack_settings(settings, "latent_discount", dtype), lr_growth=1.0)
    spec, config = build_rule(rule, spec, config)
    params = init_params(spec, [paradigm.stream_seed(s, "init") for s in seeds], scheme=init, scale=scale,
                         dtype=dtype, device=device)
    return Engine(spec, config, params)


def train_epoch(engine, images: Tensor, order: Tensor, batch: int, targets, to_input, progress,
                max_batches: Optional[int] = None) -> Tensor:
    """One pass over ``order`` [R, n] (per-run indices into ``images``, on the device): mini-batches of
    ``batch`` (the last partial one kept), at most ``max_batches`` of them; ``targets(idx)`` gives the
    [R, b, out] targets of an index batch. Returns each run's summed pre-learning loss [R] (a device
    tensor; no host reads) and ticks ``progress`` once per batch."""
    total = torch.zeros(engine.n_runs, dtype=engine.dtype, device=engine.device)
    slices = batch_slices(order.shape[1], batch)
    for sl in slices[:max_batches]:
        idx = order[:, sl]
        total += engine.train_batch(to_input(images[idx]), targets(idx)).loss0
        progress(1)
    return total


class TrainingLog:
    """A benchmark run's per-run curves (test error and training loss after each epoch or
    iteration), its divergence flags and its position, checkpointed together with the engine and
    the shuffle generators (the runner's mid-run checkpoints, :meth:`Paradigm.save_state`).

    ``resume()`` restores the last checkpoint of this ``simulate`` call and returns the position it
    reached (0 without one); ``record(loss_total, n, error)`` appends one epoch's per-sample training
    loss and test error (a non-finite loss flags the run as diverged: data, not an error);
    ``save(position)`` checkpoints (a no-op when the job is not checkpointed); ``curves()`` gives
    the stacked [R, epochs, ...] tensors."""

    def __init__(self, paradigm, engine, generators: Sequence[torch.Generator]):
        self.paradigm, self.engine, self.generators = paradigm, engine, list(generators)
        self.errors: List[Tensor] = []
        self.losses: List[Tensor] = []
        self.diverged = torch.zeros(engine.n_runs, dtype=torch.bool, device=engine.device)

    def resume(self) -> int:
        state = self.paradigm.saved_state()
        if state is None:
            return 0
        self.engine.load_state_dict(state["engine"])
        for g, st in zip(self.generators, state["generators"]):
            g.set_state(st)
        device = self.engine.device
        self.errors = [e.to(device) for e in state["errors"]]
        self.losses = [v.to(device) for v in state["losses"]]
        self.diverged = state["diverged"].to(device)
        return int(state["position"])

    def record(self, loss_total: Tensor, n_examples: int, error: Tensor) -> None:
        self.diverged |= ~torch.isfinite(loss_total)
        self.losses.append(loss_total / n_examples)
        self.errors.append(error)

    def save(self, position: int) -> None:
        self.paradigm.save_state({"engine": self.engine.state_dict(), "position": int(position),
                                  "generators": [g.get_state() for g in self.generators],
                                  "errors": self.errors, "losses": self.losses, "diverged": self.diverged})

    def curves(self):
        """(test error [R, n, ...], training loss [R, n]) over the epochs or iterations recorded."""
        return torch.stack(self.errors, dim=1), torch.stack(self.losses, dim=1)


def mean_sem(da: xr.DataArray, dim: str = "seed"):
    """(mean, standard error of the mean) over ``dim`` (SEM 0 for a single seed)."""
    n = da.sizes[dim]
    mean = da.mean(dim)
    return mean, (da.std(dim, ddof=1) / math.sqrt(n) if n > 1 else xr.zeros_like(mean))


# -- learning-rate selection, table and figure ---------------------------------------------------------
def seed_sem(da: xr.DataArray) -> xr.DataArray:
    """The standard error of the mean over seeds (0 for a single seed)."""
    return mean_sem(da)[1]


def best_lr(ds: xr.Dataset, scalar: str, lr_dim: str = "lr", minimize: bool = True) -> Dict[str, float]:
    """Per rule, the lr whose across-seed mean of ``scalar`` is best (other grid dims averaged)."""
    da = ds[scalar]
    other = [d for d in da.dims if d not in ("rule", "seed", lr_dim)]
    mean = da.mean(["seed", *other])
    out = {}
    for rule in ds["rule"].values:
        m = mean.sel(rule=rule)
        values = np.where(np.isnan(m.values), np.inf if minimize else -np.inf, m.values)
        i = int(np.argmin(values) if minimize else np.argmax(values))
        out[str(rule)] = float(ds[lr_dim].values[i])
    return out


def lr_table(ds: xr.Dataset, scalar: str, labels: Mapping[str, str], lr_dim: str = "lr",
             published: Optional[Mapping[str, Mapping[float, float]]] = None, minimize: bool = True) -> str:
    """Mean ± SEM of ``scalar`` per rule and lr, the best lr marked with * (lowest seed mean, or
    highest with ``minimize=False``), published values beside. Other grid dims are averaged: select
    one point (``ds.sel(env=...)``) for a table per point."""
    da = ds[scalar]
    if lr_dim not in da.dims:
        mean, sem = da.mean("seed"), seed_sem(da)
        rows = [f"{labels.get(str(r), str(r)):<10} {float(mean.sel(rule=r)):.4f} ± {float(sem.sel(rule=r)):.4f}"
                for r in ds["rule"].values]
        return f"{da.attrs.get('long_name', scalar)}: mean ± SEM over {da.sizes['seed']} seed(s)\n" + "\n".join(rows)
    best = best_lr(ds, scalar, lr_dim, minimize)
    mean, sem = da.mean("seed"), seed_sem(da)
    lrs = [float(v) for v in ds[lr_dim].values]
    head = ["rule", *(f"{lr:g}" for lr in lrs), "best lr"]
    rows = []
    for rule in ds["rule"].values:
        rule = str(rule)
        cells = [labels.get(rule, rule)]
        for lr in lrs:
            m = float(mean.sel(rule=rule, **{lr_dim: lr}))
            s = float(sem.sel(rule=rule, **{lr_dim: lr}))
            star = "*" if lr == best[rule] else ""
            cells.append(f"{m:.4f}±{s:.4f}{star}")
        cells.append(f"{best[rule]:g}")
        rows.append(cells)
        pub = (published or {}).get(rule)
        if pub:
            rows.append(["  published", *(f"{pub[lr]:.3f}" if lr in pub else "" for lr in lrs), ""])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    fmt = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths))  # noqa: E731
    title = (f"{da.attrs.get('long_name', scalar)} per rule and {lr_dim}: mean ± SEM over "
             f"{da.sizes['seed']} seed(s); * = best {lr_dim} ({'lowest' if minimize else 'highest'} seed mean)")
    return "\n".join([title, fmt(head), *(fmt(r) for r in rows)])


def lr_figure(ds: xr.Dataset, scalar: str, curve: str, path, title: str, labels: Mapping[str, str],
              lr_dim: str = "lr", x_dim: str = "epoch",
              published: Optional[Mapping[str, Mapping[float, float]]] = None, minimize: bool = True) -> Path:
    """Two panels: ``scalar`` vs lr per rule (mean ± SEM over seeds, log x; published values as
    open markers), and the ``curve`` over ``x_dim`` at each rule's best lr."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcneuro.plotting import save_figure

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    rules = [str(r) for r in ds["rule"].values]
    best = best_lr(ds, scalar, lr_dim, minimize) if lr_dim in ds[scalar].dims else {}
    n_seeds = ds.sizes["seed"]
    for k, rule in enumerate(rules):
        color, name = f"C{k}", labels.get(rule, rule)
        da = ds[scalar].sel(rule=rule)
        if lr_dim in da.dims:
            lrs = ds[lr_dim].values
            m, s = da.mean("seed").values, seed_sem(da).values
            left.errorbar(lrs, m, yerr=s, color=color, marker="o", capsize=3, label=name)
            pub = (published or {}).get(rule)
            if pub:
                xs = sorted(pub)
                left.plot(xs, [pub[x] for x in xs], color=color, marker="s", markerfacecolor="none",
                          linestyle=":", label=f"{name}, published")
        c = ds[curve].sel(rule=rule)
        if lr_dim in c.dims:
            c = c.sel({lr_dim: best[rule]})
        c = c.mean([d for d in c.dims if d not in ("seed", x_dim)])
        m, s = c.mean("seed"), seed_sem(c)
        x = ds[x_dim].values
        at = f" (lr {best[rule]:g})" if rule in best else ""
        right.plot(x, m.values, color=color, label=f"{name}{at}")
        right.fill_between(x, (m - s).values, (m + s).values, color=color, alpha=0.2, linewidth=0)
    if lr_dim in ds[scalar].dims:
        left.set_xscale("log")
    left.set_xlabel(lr_dim)
    left.set_ylabel(ds[scalar].attrs.get("long_name", scalar))
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.set_xlabel(x_dim)
    right.set_ylabel(ds[curve].attrs.get("long_name", curve))
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    fig.suptitle(f"{title}\nmean ± SEM over {n_seeds} seed(s)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def to_float_images(images: Tensor, dtype: torch.dtype) -> Tensor:
    """uint8 pixels → ``dtype`` in [0, 1], as torchvision's ToTensor (x.float() / 255)."""
    return images.to(dtype).div(255)

