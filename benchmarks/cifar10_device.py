"""The prepared GPU check of the CIFAR-10 CNN (fig 4i): batches per second and the paper grid's wall time.

    python benchmarks/cifar10_device.py [--out DIR] [--batches 10]

On a lent CUDA device (exits with status 3 without one), for the spec's network and batch 200
(random images: speed does not depend on the pixels), interleaved in one process:

* batches per second of PPC (T = 16, weights every step), RBP (16 Adam steps per batch) and BP
  (one step), with R = 1 and R = 3 stacked runs (per-run inputs), CUDA graphs on (the default);
* PPC with graphs off, to show what capture gains on this net;
* the projected wall time of ``run_paradigm.py cifar10_cnn --preset paper`` (2 rules × 6 lrs ×
  3 seeds = 36 runs, 80 epochs of 250 batches; each rule's 18 runs in one program when the
  device's memory allows, projected linearly from R = 3), on one GPU and on K GPUs with whole
  chunks dealt to ranks.

Writes ``cifar10_device.json`` to ``--out`` (default ``$OUT`` or the current folder); prints a table.
About 3 minutes on one GPU. ``--dry-run`` runs the same code on the CPU with a batch of 4 first.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from pcneuro.engine import Adam, Engine, LatentSGD, TrainConfig, build_rule, init_params
from pcneuro.paradigms.cifar10_cnn import NETWORK

EPOCHS, BATCHES_PER_EPOCH, RUNS_PER_RULE = 80, 250, 18


def make_engine(rule: str, R: int, device, capture: str) -> Engine:
    config = TrainConfig(T=16, loss="sse", record="last", weight_opt=Adam(lr=1e-4, weight_decay=0.01),
                         latent_opt=LatentSGD(0.5), lr_decay=0.5, lr_growth=1.0)
    spec, config = build_rule(rule, NETWORK, config)
    params = init_params(spec, list(range(R)), dtype=torch.float32, device=device)
    return Engine(spec, config, params, capture=capture)


def seconds_per_batch(rule: str, R: int, batch: int, n_batches: int, device, capture: str) -> float:
    g = torch.Generator().manual_seed(R)
    x = torch.rand(R, batch, 3, 32, 32, generator=g).to(device)
    y = torch.nn.functional.one_hot(torch.randint(0, 10, (R, batch), generator=g), 10).float().to(device)
    engine = make_engine(rule, R, device, capture)
    for _ in range(2):  # warm-up (and the graph's capture)
        engine.train_batch(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n_batches):
        engine.train_batch(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / n_batches


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--dry-run", action="store_true", help="check the script on the CPU (batch 4)")
    args = parser.parse_args()
    if args.dry_run:
        device, batch, graph, args.batches = torch.device("cpu"), 4, "emulate", 1
    elif torch.cuda.is_available():
        device, batch, graph = torch.device("cuda"), 200, "graph"
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    else:
        print("cifar10_device: no CUDA device here", file=sys.stderr)
        return 3
    report = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (dry run)",
              "torch": torch.__version__, "batch": batch, "rows": []}
    print(f"cifar10_device on {report['device']} (batch {batch})", flush=True)
    for rule in ("ppc", "rbp", "bp"):
        for R in (1, 3):
            t = seconds_per_batch(rule, R, batch, args.batches, device, graph)
            report["rows"].append({"rule": rule, "R": R, "graphs": True, "s_per_batch": t,
                                   "batches_per_s": 1 / t, "run_batches_per_s": R / t})
            print(f"  {rule:<4} R={R}  {1 / t:8.2f} batches/s  ({R / t:8.2f} run-batches/s)", flush=True)
    t_eager = seconds_per_batch("ppc", 3, batch, args.batches, device, "off")
    report["rows"].append({"rule": "ppc", "R": 3, "graphs": False, "s_per_batch": t_eager,
                           "batches_per_s": 1 / t_eager, "run_batches_per_s": 3 / t_eager})
    print(f"  ppc  R=3  {1 / t_eager:8.2f} batches/s with graphs off", flush=True)
    per_rule = {r["rule"]: r["s_per_batch"] * RUNS_PER_RULE / 3 for r in report["rows"]
                if r["R"] == 3 and r["graphs"]}
    one_gpu = EPOCHS * BATCHES_PER_EPOCH * (per_rule["ppc"] + per_rule["rbp"])
    report["paper_grid_hours_one_gpu"] = one_gpu / 3600
    report["paper_grid_hours_two_gpus"] = EPOCHS * BATCHES_PER_EPOCH * max(per_rule["ppc"], per_rule["rbp"]) / 3600
    print(f"  paper grid (ppc + rbp, 36 runs, 80 epochs): ~{report['paper_grid_hours_one_gpu']:.2f} h on one "
          f"GPU, ~{report['paper_grid_hours_two_gpus']:.2f} h on two (one rule each)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cifar10_device.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'cifar10_device.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
