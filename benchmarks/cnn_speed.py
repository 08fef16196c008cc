"""CIFAR-10 CNN speed (benchmarks spec §3.5, Fig 4i), measured as ratios within one run.

    OMP_NUM_THREADS=1 python benchmarks/cnn_speed.py [--batch 200] [--repeats 3] [--threads 1]
                                                     [--runs 1 3] [--device cpu] [--profile ppc] [--mallopt]

The net Conv(3→64, k3, s2, p1, no bias) → VN → ReLU → Conv(64→128, k3, s2, p1, no bias) → VN → ReLU →
Flatten → Linear(8192→512) → VN → ReLU → Linear(512→10), linear output, sum-squared loss, Adam
(lr 1e-4, coupled weight decay 0.01), float32, built with ``pcneuro.engine`` on the functional backend.

Prints, for each R (stacked runs, each with its own inputs [R, B, 3, 32, 32]), the median wall and
process-CPU time per batch of (interleaved, so that load changes hit all alike; ratios and projections
use the CPU time on the CPU, as wall times swing with other processes on a shared machine):
  * PPC: value nodes, T = 16, latents and weights stepped at every t (η_x = 0.5, d = 0.5);
  * RBP: no value nodes, T = 16 Adam steps on the same batch;
  * BP: no value nodes, T = 1;
  * torch: a plain ``nn.Sequential`` + ``loss.backward()`` + ``torch.optim.Adam`` loop of 16 steps per
    run (the arithmetic RBP cannot beat on this machine);
the ratio PPC/RBP (aim ≤ 1.2: both take 16 weight steps, each one forward and one backward through the
net), the projection to one epoch of 250 batches and to the whole Fig 4i grid (2 rules x 18 runs x 80
epochs; with --batch 50 the batches are 4x smaller than the protocol's).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, List, Sequence, Tuple

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # measure this checkout, not an installed copy
from pcneuro.cpu_memory import keep_freed_memory
from pcneuro.engine import (Activation, Adam, Conv2d, Engine, Flatten, LatentSGD, Linear, NetworkSpec, TrainConfig,
                            build_rule, init_params)

T = 16
BATCHES_PER_EPOCH = 250
EPOCHS, GRID_RUNS_PER_RULE = 80, 18  # benchmarks spec §3.5: 6 lrs x 3 seeds per rule


def cnn_spec(side: int = 32, channels: Sequence[int] = (3, 64, 128), hidden: int = 512,
             classes: int = 10) -> NetworkSpec:
    """The Fig 4i net (value nodes on the pre-activations); ``side`` must be divisible by 4."""
    c0, c1, c2 = channels
    flat = c2 * (side // 4) ** 2
    layers = (Conv2d(c0, c1, 3, stride=2, padding=1, bias=False), Activation("relu"),
              Conv2d(c1, c2, 3, stride=2, padding=1, bias=False), Activation("relu"),
              Flatten(), Linear(flat, hidden), Activation("relu"), Linear(hidden, classes))
    return NetworkSpec(layers, value_nodes="pre", input_shape=(c0, side, side))


def pc_config(record: str = "last") -> TrainConfig:
    return TrainConfig(T=T, weight_opt=Adam(lr=1e-4, weight_decay=0.01), latent_opt=LatentSGD(0.5),
                       lr_decay=0.5, record=record)


def make_engine(rule: str, n_runs: int, device, record: str, backend: str = "functional") -> Engine:
    spec, config = build_rule(rule, cnn_spec(), pc_config(record))
    params = init_params(spec, list(range(n_runs)), dtype=torch.float32, device=device)
    return Engine(spec, config, params, backend=backend)


def torch_loop(n_runs: int, device) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """Plain autograd RBP: per run, 16 Adam steps of ``nn.Sequential`` on its own batch."""
    spec = cnn_spec()
    params = init_params(spec, list(range(n_runs)), dtype=torch.float32, device=device)
    nets, opts = [], []
    for r in range(n_runs):
        net = torch.nn.Sequential(
            torch.nn.Conv2d(3, 64, 3, 2, 1, bias=False), torch.nn.ReLU(),
            torch.nn.Conv2d(64, 128, 3, 2, 1, bias=False), torch.nn.ReLU(), torch.nn.Flatten(),
            torch.nn.Linear(8192, 512), torch.nn.ReLU(), torch.nn.Linear(512, 10)).to(device)
        with torch.no_grad():
            for name, p in net.named_parameters():
                p.copy_(params[name][r])
        nets.append(net)
        opts.append(torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=0.01))

    def train(x: torch.Tensor, y: torch.Tensor) -> None:
        for r, (net, opt) in enumerate(zip(nets, opts)):
            for _ in range(T):
                opt.zero_grad()
                loss = 0.5 * ((net(x[r]) - y[r]) ** 2).sum()
                loss.backward()
                opt.step()

    return train


def data(n_runs: int, batch: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_runs, batch, 3, 32, 32, generator=g)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (n_runs, batch), generator=g), 10).float()
    return x.to(device), y.to(device)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fns: List[Callable[[], object]], repeats: int, device, warmup: int = 1) -> List[Tuple[float, float]]:
    """(wall, process CPU) median seconds per call of each fn, the calls interleaved. On a shared,
    oversubscribed CPU the process CPU time (user + sys, which includes page faults) is the steadier
    measure: it leaves out the time spent waiting for a core."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    sync(device)
    samples: List[List[Tuple[float, float]]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            sync(device)
            samples[i].append((time.perf_counter() - wall, time.process_time() - cpu))
    return [(statistics.median(w for w, _ in s), statistics.median(c for _, c in s)) for s in samples]


def profile(rule: str, n_runs: int, batch: int, device, record: str, rows: int) -> None:
    engine = make_engine(rule, n_runs, device, record)
    x, y = data(n_runs, batch, device)
    engine.train_batch(x, y)
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA]
                                                    if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        engine.train_batch(x, y)
        sync(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(f"profile: {rule}, R={n_runs}, B={batch}, one batch")
    print(prof.key_averages().table(sort_by=key, row_limit=rows))


def keep_heap() -> None:
    """glibc only: serve large blocks from the heap and never trim it (:mod:`pcneuro.cpu_memory`,
    which the runner applies to every CPU run; this script leaves it off unless asked, to compare)."""
    if not keep_freed_memory():
        raise RuntimeError("mallopt failed (not glibc, or PCNEURO_MALLOPT=0)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--record", default="last", choices=["none", "last", "every"])
    parser.add_argument("--no-torch", action="store_true", help="skip the plain torch loop")
    parser.add_argument("--profile", choices=["ppc", "rbp", "bp"], help="profile one batch of this rule and exit")
    parser.add_argument("--rows", type=int, default=25, help="profiler table rows")
    parser.add_argument("--mallopt", action="store_true",
                        help="keep freed memory in the glibc heap (no page faults for fresh large tensors)")
    args = parser.parse_args()
    if args.mallopt:
        keep_heap()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, device {device}, {torch.get_num_threads()} thread(s), batch {args.batch}, "
          f"T={T}, float32, record={args.record!r}, medians of {args.repeats}"
          f"{', glibc heap kept (--mallopt)' if args.mallopt else ''}")
    if args.profile:
        profile(args.profile, args.runs[0], args.batch, device, args.record, args.rows)
        return

    for n_runs in args.runs:
        x, y = data(n_runs, args.batch, device)
        engines = {rule: make_engine(rule, n_runs, device, args.record) for rule in ("ppc", "rbp", "bp")}
        fns = [lambda e=e: e.train_batch(x, y) for e in engines.values()]
        names = list(engines)
        if not args.no_torch:
            fns.append(lambda f=torch_loop(n_runs, device): f(x, y))
            names.append("torch")
        measured = dict(zip(names, timed(fns, args.repeats, device)))
        row = ", ".join(f"{n.upper() if n != 'torch' else 'torch RBP'} {w * 1e3:.0f} ({c * 1e3:.0f})"
                        for n, (w, c) in measured.items())
        print(f"R={n_runs}: ms per batch, wall (process CPU): {row}")
        # ratios and projections from the CPU time on the CPU (steadier on a shared machine), else wall
        times = {n: (c if device.type == "cpu" else w) for n, (w, c) in measured.items()}
        ratio = times["ppc"] / times["rbp"]
        extra = f", RBP/torch {times['rbp'] / times['torch']:.2f}" if "torch" in times else ""
        print(f"      PPC/RBP {ratio:.2f} (aim <= 1.2){extra}, RBP/BP {times['rbp'] / times['bp']:.1f} "
              f"(arithmetic ~{T})")
        proj = ", ".join(f"{n.upper()} {t * BATCHES_PER_EPOCH / 60:.1f} min" for n, t in times.items() if n != "torch")
        print(f"      one epoch ({BATCHES_PER_EPOCH} batches of {args.batch}, {n_runs} run(s) together): {proj}")
        grid = (times["ppc"] + times["rbp"]) / n_runs * BATCHES_PER_EPOCH * EPOCHS * GRID_RUNS_PER_RULE
        print(f"      Fig 4i grid ({GRID_RUNS_PER_RULE} runs per rule x {EPOCHS} epochs, stacked {n_runs} at a time): "
              f"{grid / 86400:.1f} days at this speed")

if __name__ == "__main__":
    main()
