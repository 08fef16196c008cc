"""Engine speed, measured as ratios within one run (these machines are shared and noisy).

    OMP_NUM_THREADS=1 python benchmarks/engine_speed.py [--repeats 5] [--device cpu]

Prints:
  1. the time of the whole default fear-conditioning grid (2 rules x 64 points x 8 seeds x 3 groups
     = 3072 simulated networks);                                             aim: < 20 s on one core
  2. PC (T=64) vs BP time per batch for an MLP 784-32-32-10 (sigmoid, batch 60); aim: PC <= 8x BP
     (medians and minima; also PC through the engine's general loop, ``fuse=False``)
  3. the fast engine vs the plain autograd reference on that MLP (PC, T=64); aim: >= 5x faster
  4. the cost of R = 1, 8, 64 stacked runs of that MLP relative to one;      aim: 64 runs <= 8x one
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

import pcneuro
from pcneuro.engine import (Activation, Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule,
                            init_params)
from pcneuro.engine.reference import ReferenceRun

MLP = NetworkSpec((Linear(784, 32), Activation("sigmoid"), Linear(32, 32), Activation("sigmoid"), Linear(32, 10)))
BATCH = 60


def timed(*fns, repeats: int, warmup: int = 2, inner=None):
    """Median seconds per call of each ``fn``, their calls interleaved so that load changes on a
    shared machine hit all of them alike; ``inner[i]`` calls of ``fns[i]`` are timed together."""
    medians, _ = timed_stats(*fns, repeats=repeats, warmup=warmup, inner=inner)
    return medians if len(fns) > 1 else medians[0]


def timed_stats(*fns, repeats: int, warmup: int = 2, inner=None):
    """(medians, minima) of the seconds per call, as :func:`timed`; in each round every fn first
    runs once untimed (its state back in cache after the others' work, as in a training loop). On
    a loaded machine a descheduling (milliseconds) lands in some calls, the longer calls more
    often: the minimum is the steadier figure there."""
    inner = inner or [1] * len(fns)
    for _ in range(warmup):
        for fn in fns:
            fn()
    samples = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(inner[i]):
                fn()
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            samples[i].append((time.perf_counter() - start) / inner[i])
    return [statistics.median(s) for s in samples], [min(s) for s in samples]


def mlp_engine(rule: str, n_runs: int, T: int, device, fuse: bool = True) -> Engine:
    config = TrainConfig(T=T, weight_opt=SGD(lr=0.01), latent_opt=LatentSGD(0.1), lr_decay=1.0, record="none")
    spec, config = build_rule(rule, MLP, config)
    params = init_params(MLP, list(range(n_runs)), dtype=torch.float32, device=device)
    return Engine(spec, config, params, fuse=fuse)


def batch(device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(BATCH, 784, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (BATCH,), generator=g), 10).float()
    return x.to(device), y.to(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--skip-fear", action="store_true", help="skip the fear-grid timing")
    args = parser.parse_args()
    device = torch.device(args.device)
    x, y = batch(device)
    print(f"pcneuro {pcneuro.__version__}, torch {torch.__version__}, device {device}, "
          f"{torch.get_num_threads()} thread(s)")

    if not args.skip_fear:
        start = time.perf_counter()
        pcneuro.run("fear_conditioning", device=str(device), write=False)
        fear = time.perf_counter() - start
        print(f"1. fear grid, 3072 networks (2 rules x 64 points x 8 seeds x 3 groups): {fear:.2f} s  "
              f"(aim < 20 s)")

    T = 64
    pc, bp = mlp_engine("pc", 1, T, device), mlp_engine("bp", 1, 1, device)
    general = mlp_engine("pc", 1, T, device, fuse=False)
    (t_pc, t_bp, t_gen), (m_pc, m_bp, m_gen) = timed_stats(
        lambda: pc.train_batch(x, y), lambda: bp.train_batch(x, y), lambda: general.train_batch(x, y),
        repeats=args.repeats)
    print(f"2. MLP 784-32-32-10, B={BATCH}: PC T={T} {t_pc * 1e3:.2f} ms/batch, BP {t_bp * 1e3:.3f} ms/batch, "
          f"ratio {t_pc / t_bp:.1f}x (minima: {m_pc * 1e3:.2f} / {m_bp * 1e3:.3f} ms, {m_pc / m_bp:.1f}x)  (aim <= 8x); "
          f"PC through the general loop (fuse=False) {t_gen * 1e3:.2f} ms (min {m_gen * 1e3:.2f})")

    config = TrainConfig(T=T, weight_opt=SGD(lr=0.01), latent_opt=LatentSGD(0.1), lr_decay=1.0, record="none")
    params = init_params(MLP, [0], dtype=torch.float32, device=device)
    reference = ReferenceRun(MLP, config, {k: v[0] for k, v in params.items()})
    t_ref, t_fast = timed(lambda: reference.train_batch(x, y), lambda: pc.train_batch(x, y),
                          repeats=max(1, args.repeats // 2), warmup=1)
    print(f"3. PC T={T}: autograd reference {t_ref * 1e3:.1f} ms/batch, fast engine {t_fast * 1e3:.2f} ms/batch, "
          f"speed-up {t_ref / t_fast:.1f}x  (aim >= 5x)")

    engines = {n_runs: mlp_engine("pc", n_runs, T, device) for n_runs in (1, 8, 64)}
    medians = timed(*[(lambda e=e: e.train_batch(x, y)) for e in engines.values()], repeats=args.repeats)
    costs = dict(zip(engines, medians))
    rel = ", ".join(f"R={r}: {costs[r] / costs[1]:.2f}x" for r in costs)
    print(f"4. PC T={T} stacked runs, cost relative to R=1 ({costs[1] * 1e3:.2f} ms): {rel}  (aim R=64 <= 8x)")


if __name__ == "__main__":
    main()
