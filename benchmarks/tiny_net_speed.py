"""Speed of many stacked tiny networks (the behavioural paradigms), run-last vs run-first layout.

    OMP_NUM_THREADS=1 python benchmarks/tiny_net_speed.py [--runs 10368] [--repeats 7] [--sweep]

The behavioural paradigms stack ~10⁴ runs of 2-2-2 linear nets (batch 1, T = 256, float64). There
the closed-form engine is bound by per-kernel overheads: a bmm of 10⁴ 2x2 matrices or a per-run
``sum`` over two small axes costs ~100 µs, an elementwise op ~5-10 µs. The ``run_last`` layout
(:mod:`pcneuro.engine.closed_form`; chosen by ``layout="auto"`` for such nets) keeps the run axis
innermost in memory and unrolls the small contractions. This script times one trial (one
``train_batch``) of PC (Linear(2,2, diagonal mask) -> node -> Linear(2,2), SGD, LatentSGD(0.1),
lr_decay 0.9, record "none") and BP in both layouts, interleaved (the machines are shared and
noisy), and prints the ratio. Aim: PC at R = 10368 <= 0.07 s per trial on one thread.
``--sweep`` repeats PC for several R and for wider tiny nets (2-16-1, 2-32-2) to show where the
layouts cross over.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from pcneuro.engine import Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule, init_params

DT = torch.float64
T = 256


def tiny_net(hidden: int = 2, out: int = 2) -> NetworkSpec:
    mask = tuple(tuple(float(i % 2 == j) for j in range(2)) for i in range(hidden))
    return NetworkSpec((Linear(2, hidden, bias=False, mask=mask), Linear(hidden, out, bias=False)), "pre")


def engines(spec: NetworkSpec, rule: str, n_runs: int):
    config = TrainConfig(T=T, weight_opt=SGD(lr=0.01), latent_opt=LatentSGD(0.1), lr_decay=0.9, record="none")
    spec, config = build_rule(rule, spec, config)
    params = init_params(spec, list(range(n_runs)), dtype=DT)
    return {layout: Engine(spec, config, dict(params), layout=layout) for layout in ("run_first", "run_last")}


def per_trial(spec: NetworkSpec, rule: str, n_runs: int, repeats: int):
    """Median seconds per train_batch for each layout (calls interleaved)."""
    g = torch.Generator().manual_seed(0)
    out = spec.layers[-1].out_features
    x = torch.rand(n_runs, 1, 2, generator=g, dtype=DT)
    y = torch.rand(n_runs, 1, out, generator=g, dtype=DT)
    engs = engines(spec, rule, n_runs)
    inner = 1 if rule == "pc" else 20
    for e in engs.values():
        e.train_batch(x, y)
    samples = {k: [] for k in engs}
    for _ in range(repeats):
        for k, e in engs.items():
            start = time.perf_counter()
            for _ in range(inner):
                e.train_batch(x, y)
            samples[k].append((time.perf_counter() - start) / inner)
    return {k: statistics.median(v) for k, v in samples.items()}


def report(label: str, times: dict) -> None:
    first, last = times["run_first"], times["run_last"]
    print(f"{label}: run_first {first * 1e3:8.2f} ms, run_last {last * 1e3:8.2f} ms, "
          f"run_first/run_last {first / last:5.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10368)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--sweep", action="store_true", help="also other R and wider tiny nets")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), float64, T={T}, batch 1")
    spec = tiny_net()
    for rule in ("pc", "bp"):
        times = per_trial(spec, rule, args.runs, args.repeats)
        report(f"{rule.upper()} 2-2-2, R={args.runs}, per trial", times)
        if rule == "pc":
            print(f"   aim: PC <= 70 ms per trial (run_last); reached: {'yes' if times['run_last'] <= 0.07 else 'no'}")
    if args.sweep:
        for n_runs in (64, 256, 1024, 4096):
            report(f"PC 2-2-2, R={n_runs}", per_trial(spec, "pc", n_runs, args.repeats))
        for hidden, out in ((16, 1), (32, 2)):
            report(f"PC 2-{hidden}-{out}, R={args.runs}", per_trial(tiny_net(hidden, out), "pc", args.runs,
                                                                    max(3, args.repeats // 2)))


if __name__ == "__main__":
    main()
