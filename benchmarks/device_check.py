"""The prepared GPU check: captured (CUDA graph) vs eager engine, values and speed, in one short run.

    python benchmarks/device_check.py [--out DIR] [--repeats 20]

Run it where a CUDA device is lent (it exits with status 3 on a machine without one). It measures,
eager and captured in the same process, interleaved (ratios, not absolute times, are the result):

1. the MLP benchmark (784-32-32-10 sigmoid, batch 60, PC with T = 64, also BP and PC with early
   stop): milliseconds per batch with R = 1 and R = 1024 stacked runs; the captured run's weights
   after 5 batches must equal the eager run's (bitwise is expected: a graph replays the same kernels);
2. the default fear-conditioning grid (3,072 networks): wall time with graphs on and off
   (``PCNEURO_CUDA_GRAPHS``), and the two results files must hold equal data.

Writes ``device_check.json`` (every figure) to ``--out`` (default ``$OUT`` or the current folder)
and prints a table. The whole run takes a few minutes on one GPU; give it a timeout of 8 minutes.
``--dry-run`` runs the same code on the CPU (the graph emulated, R = 1 and 16, the fear grid's
``quick`` preset) to check the script itself before device time is spent on it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_speed import BATCH, MLP, batch  # noqa: E402

import pcneuro  # noqa: E402
from pcneuro.engine import Engine, LatentSGD, SGD, TrainConfig, build_rule, init_params  # noqa: E402
from pcneuro.engine.capture import ENV_SWITCH  # noqa: E402


DEVICE, GRAPH, SIZES, FEAR_PRESET = "cuda", "graph", (1, 1024), None


def sync() -> None:
    if DEVICE == "cuda":
        sync()


def engine(rule: str, R: int, capture: str, stop: bool = False) -> Engine:
    kw = dict(stop_lr=0.01, lr_decay=0.5) if stop else dict(lr_decay=1.0)
    config = TrainConfig(T=64, weight_opt=SGD(lr=0.01), latent_opt=LatentSGD(0.1), record="last", **kw)
    spec, config = build_rule(rule, MLP, config)
    params = init_params(MLP, list(range(R)), dtype=torch.float32, device=DEVICE)
    return Engine(spec, config, params, capture={"graph": GRAPH, "eager": "off"}.get(capture, capture))


def ms_per_batch(eng: Engine, data, repeats: int) -> float:
    for x, y in data[:3]:  # warm-up (the captured engine records its graph here)
        eng.train_batch(x, y)
    sync()
    start = time.perf_counter()
    for i in range(repeats):
        x, y = data[i % len(data)]
        eng.train_batch(x, y)
    sync()
    return 1000 * (time.perf_counter() - start) / repeats


def max_diff(a: Engine, b: Engine) -> float:
    return max(float((a.params[n] - b.params[n]).abs().max()) for n in a.params)


def mlp_section(repeats: int) -> list:
    data = [batch(DEVICE, seed) for seed in range(8)]
    rows = []
    for rule, stop in (("pc", False), ("pc", True), ("bp", False)):
        for R in SIZES:
            name = f"{rule}{' stop_lr' if stop else ''} R={R}"
            # values: 5 batches each way from the same start
            eager, captured = engine(rule, R, "off", stop), engine(rule, R, "graph", stop)
            for x, y in data[:5]:
                eager.train_batch(x, y)
                captured.train_batch(x, y)
            diff = max_diff(eager, captured)
            # speed: interleaved, fresh engines
            times = {"eager": [], "graph": []}
            engines = {m: engine(rule, R, m, stop) for m in times}
            for _ in range(3):
                for m, e in engines.items():
                    times[m].append(ms_per_batch(e, data, repeats))
            t_e, t_g = min(times["eager"]), min(times["graph"])
            rows.append({"case": f"MLP {name}", "eager_ms": t_e, "graph_ms": t_g, "speedup": t_e / t_g,
                         "max_abs_diff": diff})
            print(f"  {rows[-1]['case']:<28} eager {t_e:8.2f} ms  graph {t_g:8.2f} ms  "
                  f"x{t_e / t_g:5.1f}  max|diff| {diff:.2e}", flush=True)
    return rows


def fear_section(out: Path) -> dict:
    times, data = {}, {}
    for mode in ("0", "1", "0", "1"):  # interleaved twice; keep the faster of each
        os.environ[ENV_SWITCH] = mode
        start = time.perf_counter()
        ds = pcneuro.run("fear_conditioning", device=DEVICE, preset=FEAR_PRESET, write=False, quiet=True)
        elapsed = time.perf_counter() - start
        key = "graph" if mode == "1" else "eager"
        times[key] = min(times.get(key, float("inf")), elapsed)
        data[key] = ds
    equal = all(np.array_equal(data["eager"][v].values, data["graph"][v].values, equal_nan=True)
                for v in data["eager"].data_vars)
    diff = max(float(np.nanmax(np.abs(data["eager"][v].values - data["graph"][v].values)))
               for v in data["eager"].data_vars)
    row = {"case": "fear grid (3072 networks)", "eager_s": times["eager"], "graph_s": times["graph"],
           "speedup": times["eager"] / times["graph"], "data_equal": bool(equal), "max_abs_diff": diff}
    print(f"  fear grid: eager {times['eager']:.2f} s  graph {times['graph']:.2f} s  "
          f"x{row['speedup']:.1f}  data equal: {equal} (max|diff| {diff:.2e})", flush=True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dry-run", action="store_true", help="check the script on the CPU (graph emulated)")
    args = parser.parse_args()
    if args.dry_run:
        global DEVICE, GRAPH, SIZES, FEAR_PRESET
        DEVICE, GRAPH, SIZES, FEAR_PRESET, args.repeats = "cpu", "emulate", (1, 16), "quick", 2
    elif not torch.cuda.is_available():
        print("device_check: no CUDA device here", file=sys.stderr)
        return 3
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"device": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (dry run)",
              "torch": torch.__version__, "batch": BATCH}
    print(f"device_check on {report['device']} (torch {report['torch']})", flush=True)
    start = time.perf_counter()
    report["mlp"] = mlp_section(args.repeats)
    report["fear"] = fear_section(out)
    report["seconds"] = time.perf_counter() - start
    (out / "device_check.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {out / 'device_check.json'} ({report['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
