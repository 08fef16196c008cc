"""Kernels per inference step of the engine, counted with the torch profiler on the CPU.

    OMP_NUM_THREADS=1 python benchmarks/kernel_count.py [--T 64]

On a GPU every kernel costs a launch, so a small program's time is about its kernel count
(engine spec §4.2 items 1, 4 and 5). This script counts the aten operators that do work (views,
reshapes and other metadata-only ops excluded) over one ``train_batch`` after a warm-up batch, and
prints that count divided by T, for

  * the MLP 784-32-32-10 (sigmoid, batch 60, PC, T = 64) at R = 1 and R = 8, with
    ``record="none"`` (no adaptation), ``record="last"`` with adaptation (lr_decay 0.5) and
    ``stop_lr=1e-4`` (adaptation, the stop-time weight step on);
  * the fear-conditioning paradigm's 2-2-1 net (batch 1, PC, T = 20, 64 runs), as the paradigm
    builds it (``record="none"``, adaptation on).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pcneuro, not an installed one
from pcneuro.engine import Activation, Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule, init_params

MLP = NetworkSpec((Linear(784, 32), Activation("sigmoid"), Linear(32, 32), Activation("sigmoid"), Linear(32, 10)))
BATCH = 60

# metadata-only operators: no kernel is launched for them
NO_KERNEL = {
    "aten::view", "aten::reshape", "aten::_reshape_alias", "aten::expand", "aten::as_strided", "aten::transpose",
    "aten::t", "aten::permute", "aten::unsqueeze", "aten::squeeze", "aten::select", "aten::slice", "aten::split",
    "aten::split_with_sizes", "aten::narrow", "aten::detach", "aten::alias", "aten::movedim", "aten::empty",
    "aten::empty_like", "aten::empty_strided", "aten::resize_", "aten::result_type", "aten::lift_fresh",
    "aten::_unsafe_view", "aten::unbind", "aten::expand_as", "aten::view_as", "aten::is_nonzero", "aten::item", "aten::_local_scalar_dense", "aten::resolve_conj",
    "aten::resolve_neg", "aten::mT", "aten::numpy_T", "aten::matrix_H", "aten::conj", "aten::_conj",
}
# operators that copy only sometimes (a dtype change, a non-contiguous input): counted when they do
MAYBE_COPY = {"aten::to", "aten::_to_copy", "aten::contiguous"}


def _does_work(event) -> bool:
    if event.name not in MAYBE_COPY:
        return event.name not in NO_KERNEL
    return any(_does_work(c) for c in event.cpu_children if c.name.startswith("aten::"))


def count_kernels(fn) -> int:
    """The number of top-level aten operators that do work in one call of ``fn`` (an operator called
    from inside another counts with it: a GEMM wrapper's bmm, an in-place copy inside baddbmm)."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    count = 0
    for e in prof.events():
        if not e.name.startswith("aten::") or not _does_work(e):
            continue
        parent = e.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        count += parent is None
    return count


def mlp_case(case: str, n_runs: int, T: int):
    kw = dict(record="none", lr_decay=1.0)
    if case == "last+adapt":
        kw = dict(record="last", lr_decay=0.5)
    elif case == "stop_lr":
        kw = dict(record="last", lr_decay=0.5, stop_lr=1e-4, weight_step_on_stop=True)
    config = TrainConfig(T=T, weight_opt=SGD(lr=0.01), latent_opt=LatentSGD(0.1), **kw)
    spec, config = build_rule("pc", MLP, config)
    engine = Engine(spec, config, init_params(MLP, list(range(n_runs)), dtype=torch.float32))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, 784, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (BATCH,), generator=g), 10).float()
    return engine, x, y


def fear_case(T: int, n_runs: int = 64):
    """The fear paradigm's net and training configuration (paradigms/fear_conditioning.py), PC."""
    spec = NetworkSpec((Linear(2, 2, bias=False, mask=((1.0, 0.0), (0.0, 1.0))), Linear(2, 1, bias=False)), "pre")
    config = TrainConfig(T=T, weight_opt=SGD(lr=0.01), latent_opt=LatentSGD(lr=0.1), lr_decay=0.5,
                         lr_growth=1.0, record="none")
    spec, config = build_rule("pc", spec, config)
    dt = torch.float64
    params = {"0.weight": torch.ones(n_runs, 2, 2, dtype=dt) * torch.tensor(((1.0, 0.0), (0.0, 1.0)), dtype=dt),
              "1.weight": torch.full((n_runs, 1, 2), 0.1, dtype=dt)}
    engine = Engine(spec, config, params)
    x = torch.tensor([[1.0, 1.0]], dtype=dt).expand(n_runs, 1, 2).contiguous()
    y = torch.ones(n_runs, 1, 1, dtype=dt)
    return engine, x, y


def per_step(engine: Engine, x, y, T: int) -> float:
    engine.train_batch(x, y)  # warm-up: layout choice, caches
    return count_kernels(lambda: engine.train_batch(x, y)) / T


def ms_per_batch(engine: Engine, x, y, repeats: int) -> float:
    """Median CPU wall time of one ``train_batch`` (noisy on a shared machine; the counts are not)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        engine.train_batch(x, y)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--T", type=int, default=64)
    parser.add_argument("--fear-T", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=0, help="also time each case (median of this many batches)")
    args = parser.parse_args()
    T = args.T
    print(f"torch {torch.__version__}; aten kernels per inference step (one train_batch / T)", flush=True)
    for case in ("none", "last+adapt", "stop_lr"):
        cells = []
        for n_runs in (1, 8):
            engine, x, y = mlp_case(case, n_runs, T)
            cells.append(f"R={n_runs}: {per_step(engine, x, y, T):6.1f}")
            if args.repeats:
                cells[-1] += f" ({ms_per_batch(engine, x, y, args.repeats):.2f} ms/batch)"
        print(f"MLP 784-32-32-10 B={BATCH} PC T={T} {case:11s} " + "  ".join(cells))
    engine, x, y = fear_case(args.fear_T)
    timing = f" ({ms_per_batch(engine, x, y, args.repeats):.2f} ms/batch)" if args.repeats else ""
    print(f"fear 2-2-1 B=1 PC T={args.fear_T} R=64 ({engine.backend_name}) record=none+adapt: "
          f"{per_step(engine, x, y, args.fear_T):6.1f}{timing}")


if __name__ == "__main__":
    main()
