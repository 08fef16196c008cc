"""One PC batch of the engine against one BP batch of plain torch, in the same process (issue 8).

    OMP_NUM_THREADS=1 python benchmarks/pc_vs_torch_bp.py [--repeats 21] [--T 64]

The workload: MLP 784-32-32-10, sigmoid, no biases, batch 60, weight SGD; PC with T = 64, latent
SGD η_x 0.1, latent-rate decay d = 0.5, the weight step at the last step, ``record="last"``. The
yardstick is a BP batch of plain torch: ``nn.Sequential`` forward, ``loss.backward()`` of the summed
squared error and a ``torch.optim.SGD`` step. All calls are interleaved and timed as medians of
repeats (each round: one untimed call, then three timed ones back to back), so that load changes
on a shared machine hit them alike. Prints ms per batch of

  * the engine's PC (R = 1), plain-torch BP, the engine's BP (R = 1), and the ratio PC / torch-BP,
    as this thread's CPU time and as wall time (medians);
  * the engine's PC (R = 1) through its general loop (``fuse=False``: the code before the fused sweep);
  * the engine's PC at R = 18 and R = 64 stacked runs, per run (ms per batch / R);
  * the aten kernels per inference step of the R = 1 PC batch (benchmarks/kernel_count.py's count).

The arithmetic alone puts PC at about 4x BP (63 latent steps of a forward-and-backward sweep without
the first layer's GEMMs, against one BP pass with them).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's pcneuro, not an installed one
sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_count import count_kernels  # noqa: E402

from pcneuro.engine import (Activation, Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig,  # noqa: E402
                            build_rule, init_params)

SIZES = (784, 32, 32, 10)
BATCH = 60
LR = 0.01


def mlp_spec() -> NetworkSpec:
    layers = []
    for k, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        if k:
            layers.append(Activation("sigmoid"))
        layers.append(Linear(n_in, n_out, bias=False))
    return NetworkSpec(tuple(layers))


def engine(rule: str, n_runs: int, T: int, fuse: bool = True) -> Engine:
    config = TrainConfig(T=T, weight_opt=SGD(lr=LR), latent_opt=LatentSGD(0.1), lr_decay=0.5, record="last")
    spec, config = build_rule(rule, mlp_spec(), config)
    return Engine(spec, config, init_params(spec, list(range(n_runs)), dtype=torch.float32), fuse=fuse)


class TorchBP:
    """Plain torch: nn.Sequential, loss.backward(), torch.optim.SGD."""

    def __init__(self):
        torch.manual_seed(0)
        layers = []
        for k, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
            if k:
                layers.append(torch.nn.Sigmoid())
            layers.append(torch.nn.Linear(n_in, n_out, bias=False))
        self.net = torch.nn.Sequential(*layers)
        self.opt = torch.optim.SGD(self.net.parameters(), lr=LR)

    def __call__(self, x, y):
        self.opt.zero_grad()
        loss = 0.5 * (self.net(x) - y).pow(2).sum()
        loss.backward()
        self.opt.step()


def timed(fns, repeats: int, warmup: int = 3, block: int = 3):
    """Medians of each fn's seconds per call: (wall, CPU) lists. Rounds are interleaved so that load
    changes on a shared machine hit every fn alike; in each round a fn runs once untimed, then
    ``block`` timed calls, back to back as in a training loop (a fn called right after another's
    work or after an idle moment finds its weights out of cache: plain-torch BP then costs about
    twice as much). CPU is this thread's CPU time (``time.thread_time``): a descheduling on a shared
    machine (milliseconds) inflates the wall time of the calls it lands in, not their CPU time."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall = [[] for _ in fns]
    cpu = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            fn()
            for _ in range(block):
                c0, t0 = time.thread_time(), time.perf_counter()
                fn()
                t1, c1 = time.perf_counter(), time.thread_time()
                wall[i].append(t1 - t0)
                cpu[i].append(c1 - c0)
    return [statistics.median(s) for s in wall], [statistics.median(s) for s in cpu]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=41)
    parser.add_argument("--T", type=int, default=64)
    parser.add_argument("--runs", type=int, nargs="*", default=[18, 64], help="stacked-run counts to time")
    args = parser.parse_args()
    T = args.T
    g = torch.Generator().manual_seed(0)
    x = torch.rand(BATCH, SIZES[0], generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, SIZES[-1], (BATCH,), generator=g), SIZES[-1]).float()

    pc, bp, torch_bp = engine("pc", 1, T), engine("bp", 1, 1), TorchBP()
    general = engine("pc", 1, T, fuse=False)
    fns = [lambda: pc.train_batch(x, y), lambda: torch_bp(x, y), lambda: bp.train_batch(x, y),
           lambda: general.train_batch(x, y)]
    wall, cpu = timed(fns, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); MLP {'-'.join(map(str, SIZES))} sigmoid, "
          f"no biases, B={BATCH}; PC T={T}, latent SGD 0.1, d=0.5, record='last'")
    print(f"ms per batch, medians of {args.repeats} interleaved rounds x 3 calls: CPU time (wall time)")
    names = ("engine PC, R=1", "torch BP", "engine BP, R=1", "engine PC, R=1, general loop (fuse=False)")
    for name, c, w in zip(names, cpu, wall):
        print(f"  {name:42s} {c * 1e3:8.3f} ({w * 1e3:.3f})   {c / cpu[1]:5.2f}x ({w / wall[1]:.2f}x) torch BP")
    print(f"PC / torch BP: {cpu[0] / cpu[1]:.2f}x CPU time, {wall[0] / wall[1]:.2f}x wall time "
          f"(PCX on this machine ~5.6x, arithmetic ~4x)")
    if args.runs:
        stacked = {r: engine("pc", r, T) for r in args.runs}
        fns = [lambda: torch_bp(x, y), lambda: pc.train_batch(x, y)]
        fns += [(lambda e=e: e.train_batch(x, y)) for e in stacked.values()]
        wall, cpu = timed(fns, max(3, args.repeats // 4))
        print("stacked runs, CPU time (wall time) per batch and per run:")
        for r, c, w in zip([1, *stacked], cpu[1:], wall[1:]):
            print(f"  engine PC, R={r:<3d} {c * 1e3:9.3f} ({w * 1e3:.3f}) ms/batch, {c / r * 1e3:7.3f} ms per run, "
                  f"{c / r / cpu[0]:5.2f}x torch BP per run")
    counts = [count_kernels(lambda e=e: e.train_batch(x, y)) / T for e in (pc, general)]
    print(f"kernels per inference step (PC, R=1): {counts[0]:.1f} (general loop: {counts[1]:.1f})")


if __name__ == "__main__":
    main()
