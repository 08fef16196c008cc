"""Less erratic weight trajectories: PC vs BP and GeneRec vs Almeida–Pineda.

Theory spec §8 (P6), Song et al. (2024), *Nature Neuroscience* (the "less erratic learning"
extended-data panel; the spec does not name it).

Claim. For the same net displacement of the weights, PC's weights travel a shorter path than BP's:
inferring the activity first makes successive weight changes point the same way, where BP's zig-zag.
Likewise GeneRec (GR, a two-phase rule that also settles activity first) travels a shorter path than
Almeida–Pineda (AP, recurrent backprop).

Metrics (spec §2), from the weight snapshots W_l^(0…K) (K = ``n_updates``, the state before each
update plus the final one) of the L_w weight layers: trajectory length (1/L_w) Σ_l Σ_k ‖W_l^(k+1) −
W_l^(k)‖_F, final displacement (1/L_w) Σ_l ‖W_l^(K) − W_l^(0)‖_F, and the trace ratio
mean_l(traj_l / final_l) (logged only). The figure has one point per (rule, lr): x the seed-mean
final displacement, y the seed-mean trajectory length, error bars ±0.5·SEM; the claim holds if
PC/GR lies below BP/AP at matched x.

Protocol (spec §8). Per seed one sample, input and target ~ N(0, 0.1²·I_width), batch 1, trained for
64 updates on that same sample. Learning rates: each rule has its own evenly spaced range, because
the ranges were chosen so that the final displacements overlap; the grid axis ``lr_index`` k gives
lr = <rule>_lr_min + k·<rule>_lr_step, up to <rule>_lr_max (beyond it the cell is empty, NaN, and not
simulated). The defaults are the spec's: PC 0.476…0.572 step 0.004 (25), BP 0.336…0.378 step 0.002
(22), GR 0.002…0.00344 step 0.00008 (19), AP 0.001…0.00188 step 0.00008 (12); the measure
``learning_rate`` records each run's lr.

* PC and BP (conventions §1): a 32-32-32-32 net, depth 3 weight layers, sigmoid after each of the 2
  value nodes (on the pre-activations), linear output, no biases, xavier_normal g = 1. PC: T = 200,
  latent lr 0.1, discount d = 0.9, weights stepped once at t = T−1; BP: one SGD step per update.
* GR and AP (:mod:`pcneuro.engine.recurrent`): layers 0…3 of 32 units in the row-vector convention
  (W_l is W of the PC net transposed, so every rule of a seed starts from the same weights), tanh on
  every layer including the input, states ~ N(0, 1) drawn once that persist across updates (the
  input layer clamped to the data; AP's adjoints start as a copy of the states), in-place ascending
  relaxation sweeps, W_l += η ΔW_l / B. GR: 128 sweeps at rate 0.01 per phase; AP: 64 sweeps at
  0.001 per phase.

Departures (spec §10 #5). The published GR/AP runs skipped the free/minus phase (AP's forward states
never relaxed, J stayed constant; GR applied only its plus-phase Hebbian term). pcneuro implements
the textbook rules with both phases, so the published GR/AP values are qualitative only: only the
ordering GR below AP is compared. The sample, weights and states come from pcneuro's own per-seed
streams (spec §1.5), so per-seed values differ from the published ones. The paper preset runs 99
seeds for all four rules (the published GR/AP used 5; more seeds only tighten the error bars).
The measure ``loss`` (½‖y − ŷ‖² before each update) is the feed-forward loss under PC/BP and the
free-phase (GR: minus-phase) output's loss under GR/AP (with ``free_phase=False``: the stale state).

What the rules give (99 seeds, paper preset; about 13 minutes on one loaded CPU core): PC and BP match
the published points and BP's path is ≈0.18–0.22 longer at matched displacement. With both phases
(textbook) GR and AP travel equally far at GR's displacements (0.20–0.27; AP − GR ≈ −0.005), and
over a wider range (preset ``textbook_wide``) GR's path is the longer one: the published ordering
GR below AP holds for the published dynamics (preset ``published_variant``, which reproduces the
published GR/AP values), not for the textbook rules.
"""
from __future__ import annotations

import json
import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from pcneuro.engine import (Activation, Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule,
                            init_params)
from pcneuro.engine.activations import ACTIVATIONS
from pcneuro.engine.recurrent import AlmeidaPineda, GeneRec
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset
from pcneuro.registry import register

RULES = ("pc", "bp", "gr", "ap")
LABELS = {"pc": "PC", "bp": "BP", "gr": "GeneRec (GR)", "ap": "Almeida–Pineda (AP)"}
COLORS = {"pc": "C0", "bp": "C3", "gr": "C2", "ap": "C1"}
#: the two comparisons: (shorter path claimed, longer path)
PAIRS = (("pc", "bp"), ("gr", "ap"))
#: each rule's learning-rate range (spec §8): (min, max, step)
LR_RANGES = {"pc": (0.476, 0.572, 0.004), "bp": (0.336, 0.378, 0.002), "gr": (0.002, 0.00344, 0.00008),
             "ap": (0.001, 0.00188, 0.00008)}
INITS = {"xavier_normal": "xavier_normal", "xavier_uniform": "xavier_uniform", "orthogonal": "orthogonal",
         "default": "torch"}
#: published values (spec §8 targets): PC/BP point ranges (first, last) as (displacement, length), and
#: GR/AP lengths at two displacements (from the run without the free/minus phase: qualitative only)
PUBLISHED = {
    "pc": ((2.11, 4.87), (2.93, 6.16)),
    "bp": ((2.10, 5.03), (2.96, 6.38)),
    "gr": ((0.58, 0.59), (1.2, 1.22)),
    "ap": ((0.58, 0.69), (1.2, 1.39)),
}
PUBLISHED_NOTES = ("published (spec §8): PC points run from (2.11, 4.87) to (2.93, 6.16), BP from (2.10, 5.03) to "
                   "(2.96, 6.38), BP's path ≈0.15–0.25 longer at matched displacement; GR below AP (at final ≈0.58: "
                   "GR ≈0.59 vs AP ≈0.69; at ≈1.2: GR ≈1.22 vs AP ≈1.39), from a run without the free/minus phase "
                   "(spec §10 #5): only the ordering compares")
#: the paper preset: AP's range extended downward (same step) so that the textbook rules' GR and AP
#: displacements overlap (spec §8: "extend the lr grids if the final-displacement ranges stop overlapping")
PAPER_SETTINGS = {"ap_lr_min": 0.00012}
#: the textbook rules over a wide range of displacements
WIDE_SETTINGS = {"gr_lr_min": 0.002, "gr_lr_max": 0.04, "gr_lr_step": 0.002,
                 "ap_lr_min": 0.00005, "ap_lr_max": 0.001, "ap_lr_step": 0.00005}
#: the quick preset: three learning rates per rule (the paper ranges' first, middle and last)
_QUICK = {f"{r}_lr_step": round((hi - PAPER_SETTINGS.get(f"{r}_lr_min", lo)) / 2, 10)
          for r, (lo, hi, _) in LR_RANGES.items()}
_QUICK.update(PAPER_SETTINGS)


def _lr_hypers() -> Dict[str, Hyper]:
    out = {}
    for rule, (lo, hi, step) in LR_RANGES.items():
        name = LABELS[rule]
        out[f"{rule}_lr_min"] = Hyper(lo, f"{name}: first weight learning rate of the range", min=0.0)
        out[f"{rule}_lr_max"] = Hyper(hi, f"{name}: last weight learning rate of the range", min=0.0)
        out[f"{rule}_lr_step"] = Hyper(step, f"{name}: spacing of the learning-rate range", min=0.0)
    return out


def lr_count(settings: Mapping[str, Any], rule: str) -> int:
    """How many learning rates the rule's range holds: min, min + step, …, up to max."""
    lo, hi, step = (settings[f"{rule}_lr_{k}"] for k in ("min", "max", "step"))
    return int(math.floor((hi - lo) / step + 1e-6)) + 1


def learning_rate(settings: Mapping[str, Any], rule: str) -> Optional[float]:
    """The run's weight learning rate, or None when ``lr_index`` lies beyond the rule's range."""
    k = settings["lr_index"]
    if k >= lr_count(settings, rule):
        return None
    return settings[f"{rule}_lr_min"] + k * settings[f"{rule}_lr_step"]


def pc_network(depth: int, width: int, activation: str) -> NetworkSpec:
    """``depth`` Linear layers width × width, no biases, value nodes on the pre-activations with φ after
    each (spec §1.1: the input is not passed through φ, the output is linear)."""
    layers: List[Any] = [Linear(width, width, bias=False)]
    for _ in range(depth - 1):
        layers += [Activation(activation), Linear(width, width, bias=False)]
    return NetworkSpec(tuple(layers), "pre")


@register
class LessErratic(Paradigm):
    name = "less_erratic"
    title = "Less erratic weight trajectories: path length vs final displacement"
    tags = ("theory", "trajectory", "generec", "almeida_pineda")
    citation = "Song et al. (2024) Nat Neurosci, the less-erratic-learning panel (theory spec §8)"
    figure = "Song et al. 2024, less erratic weight trajectories: PC vs BP and GeneRec vs Almeida-Pineda"
    version = "1"
    rules = RULES
    hyperparameters = {
        "lr_index": Hyper(0, "position k in each rule's learning-rate range: lr = <rule>_lr_min + k*<rule>_lr_step",
                          type=int, min=0),
        **_lr_hypers(),
        "depth": Hyper(3, "weight layers N (PC/BP: N-1 value nodes; GR/AP: layers 0..N, N the output)", type=int,
                       min=1, structural=True),
        "width": Hyper(32, "units of the input, every hidden layer and the output", type=int, min=1,
                       structural=True),
        "batch_size": Hyper(1, "samples in the one batch trained on at every update", type=int, min=1,
                            structural=True),
        "n_updates": Hyper(64, "weight updates on the batch (n_updates + 1 weight snapshots)", type=int, min=1,
                           structural=True),
        "data_sd": Hyper(0.1, "sd of the input and target entries, ~ N(0, sd^2)", min=0.0),
        "activation": Hyper("sigmoid", "PC/BP: phi after each value node", type=str, choices=tuple(ACTIVATIONS),
                            structural=True),
        "recurrent_activation": Hyper("tanh", "GR/AP: f on every layer, the input included", type=str,
                                      choices=tuple(ACTIVATIONS), structural=True),
        "init": Hyper("xavier_normal", "initial weights (times init_gain; 'default' is U(+-1/sqrt(fan_in)))",
                      type=str, choices=tuple(INITS), structural=True),
        "init_gain": Hyper(1.0, "gain g of the initial weights", min=0.0),
        "T": Hyper(200, "PC inference steps per update (at least depth)", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate eta_x", min=0.0),
        "latent_discount": Hyper(0.9, "PC factor d on eta_x when the energy does not decrease", min=1e-12, max=1.0),
        "gr_steps": Hyper(128, "GR relaxation sweeps per phase", type=int, min=1, structural=True),
        "gr_rate": Hyper(0.01, "GR relaxation rate gamma", min=0.0),
        "ap_steps": Hyper(64, "AP relaxation sweeps per phase", type=int, min=1, structural=True),
        "ap_rate": Hyper(0.001, "AP relaxation rate gamma", min=0.0),
        "free_phase": Hyper(True, "GR/AP run their free (minus) phase, the textbook rules; false reproduces the "
                                  "published runs, which skipped it (spec §10 #5)", type=bool, structural=True),
    }
    grid = {"lr_index": tuple(range(25))}
    default_seeds = 99
    presets = {
        "quick": Preset(seeds=4, settings=_QUICK, grid={"lr_index": (0, 1, 2)},
                        doc="3 learning rates per rule spanning the spec's ranges (min, middle, max), 4 seeds"),
        "paper": Preset(seeds=99, settings=PAPER_SETTINGS, grid={"lr_index": tuple(range(25))},
                        doc="the spec's ranges (PC 25, BP 22, GR 19 learning rates), AP's extended down to "
                            "0.00012 (23) so that GR's and AP's displacements overlap (spec §8), 99 seeds"),
        "textbook_wide": Preset(seeds=20, settings=WIDE_SETTINGS, grid={"lr_index": tuple(range(20))},
                                doc="GR 0.002...0.04 and AP 0.00005...0.001 (20 each), 20 seeds: the textbook "
                                    "rules over a wide range of displacements (run with --rule gr,ap)"),
        "published_variant": Preset(seeds=20, settings={"free_phase": False}, grid={"lr_index": tuple(range(25))},
                                    doc="GR/AP as the published runs (no free/minus phase, spec §10 #5) at the "
                                        "spec's ranges, 20 seeds (run with --rule gr,ap)"),
    }
    measures = {
        "final_displacement": Measure((), "final displacement (1/L) sum_l ||W_l(K) - W_l(0)||_F",
                                      "Frobenius norm", nan_is_empty=True),
        "trajectory_length": Measure((), "trajectory length (1/L) sum_l sum_k ||W_l(k+1) - W_l(k)||_F",
                                     "Frobenius norm", nan_is_empty=True),
        "trace_ratio": Measure((), "mean over layers of trajectory length / final displacement", "ratio",
                               nan_is_empty=True),
        "learning_rate": Measure((), "the run's weight learning rate (NaN: lr_index beyond the rule's range)",
                                 "1", nan_is_empty=True),
        "loss": Measure(("update",), "loss 1/2 sum ||y - y_hat||^2 before each update (GR/AP: free-phase output)",
                        "squared units", nan_is_empty=True),
    }
    main_measure = "trajectory_length"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["T"] < settings["depth"]:
            raise ValueError(f"T={settings['T']} is below depth={settings['depth']}: PC's error reaches the first "
                             f"weight layer at inference step depth-1 (spec §1.2), so T >= depth")
        for rule in RULES:
            lo, hi, step = (settings[f"{rule}_lr_{k}"] for k in ("min", "max", "step"))
            if step <= 0:
                raise ValueError(f"{rule}_lr_step={step!r} must be > 0")
            if hi < lo:
                raise ValueError(f"{rule}_lr_max={hi!r} is below {rule}_lr_min={lo!r}")

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"update": list(range(settings["n_updates"]))}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return settings["n_updates"]

    # ----------------------------------------------------------------------------------------------
    def _draws(self, seeds: Sequence[int], s0: Mapping[str, Any], dt, device, gains: Optional[Sequence[float]] = None):
        """Per run (from its seed's own streams, rule-independent: a paired design) the PC-convention
        weights {name: [R, out, in]}, the sample (input, target) [R, B, width] and the initial GR/AP
        states x_0 … x_depth ~ N(0, 1), [R, B, width] each."""
        width, depth, B = s0["width"], s0["depth"], s0["batch_size"]
        spec = pc_network(depth, width, s0["activation"])
        streams = [self.stream_seed(seed, "init") for seed in seeds]
        scale = [s0["init_gain"]] * len(seeds) if gains is None else list(gains)
        params = init_params(spec, streams, INITS[s0["init"]], scale=scale, dtype=dt, device=device)
        samples, states = [], []
        for seed in seeds:
            samples.append(torch.randn(2, B, width, generator=self.generator(seed, "sample"), dtype=torch.float64))
            states.append(torch.randn(depth + 1, B, width, generator=self.generator(seed, "states"),
                                      dtype=torch.float64))
        sample = torch.stack(samples).to(dtype=dt, device=device)
        state = torch.stack(states).to(dtype=dt, device=device)
        return spec, params, sample[:, 0], sample[:, 1], [state[:, l] for l in range(depth + 1)]

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        n, K, dt = len(settings), s0["n_updates"], self.torch_dtype()
        lrs = [learning_rate(s, rule) for s in settings]
        keep = [i for i, lr in enumerate(lrs) if lr is not None]
        out = {"final_displacement": np.full(n, np.nan), "trajectory_length": np.full(n, np.nan),
               "trace_ratio": np.full(n, np.nan), "learning_rate": np.full(n, np.nan),
               "loss": np.full((n, K), np.nan)}
        if not keep:  # every run lies beyond the rule's range: nothing to simulate
            progress(K)
            return out
        runs = [settings[i] for i in keep]
        lr = torch.tensor([lrs[i] for i in keep], dtype=dt)  # host values
        spec, params, x, y, states = self._draws([seeds[i] for i in keep], s0, dt, device,
                                                 gains=[s["init_gain"] for s in runs])
        sd = torch.tensor([s["data_sd"] for s in runs], dtype=dt, device=device).reshape(-1, 1, 1)
        x, y = x * sd, y * sd
        names = [f"{i}.weight" for i in spec.weight_layer_indices]

        if rule in ("pc", "bp"):
            config = TrainConfig(T=s0["T"], weight_opt=SGD(lr=lr),
                                 latent_opt=LatentSGD(lr=torch.tensor([s["latent_lr"] for s in runs], dtype=dt)),
                                 lr_decay=torch.tensor([s["latent_discount"] for s in runs], dtype=dt),
                                 lr_growth=1.0, record="none")
            # PC with one weight layer has no value node and equals BP (spec §1.3)
            engine = Engine(*build_rule("bp" if s0["depth"] == 1 else rule, spec, config), params)

            def weights():  # the engine may update its parameters in place: copies
                return [engine.params[name].clone() for name in names]

            def step():
                loss = 0.5 * ((y - engine.forward(x)) ** 2).sum((-1, -2))
                engine.train_batch(x, y)
                return loss
        else:
            row = [params[name].transpose(1, 2) for name in names]  # W_l as [R, n_l, n_l+1]
            states[0] = x  # the input layer is clamped to the data (AP's adjoints copy it)
            rate = torch.tensor([s[f"{rule}_rate"] for s in runs], dtype=dt)
            learner_cls, steps = (GeneRec, s0["gr_steps"]) if rule == "gr" else (AlmeidaPineda, s0["ap_steps"])
            learner = learner_cls(row, states, lr=lr, rate=rate, steps=steps,
                                  activation_name=s0["recurrent_activation"], free_phase=s0["free_phase"])

            def weights():
                return list(learner.weights)  # updates make new tensors

            def step():
                return learner.train_batch(x, y).loss

        start = weights()
        previous = start
        travelled = torch.zeros(len(keep), len(names), dtype=dt, device=device)
        loss = torch.empty(len(keep), K, dtype=dt, device=device)
        for k in range(K):
            loss[:, k] = step()
            current = weights()
            travelled += torch.stack([(c - p).flatten(1).norm(dim=1) for c, p in zip(current, previous)], dim=1)
            previous = current
            progress(1)
        final = torch.stack([(c - s).flatten(1).norm(dim=1) for c, s in zip(previous, start)], dim=1)
        index = np.asarray(keep)
        out["final_displacement"][index] = final.mean(1).cpu().numpy()
        out["trajectory_length"][index] = travelled.mean(1).cpu().numpy()
        out["trace_ratio"][index] = (travelled / final).mean(1).cpu().numpy()
        out["learning_rate"][index] = lr.numpy()
        out["loss"][index] = loss.cpu().numpy()
        return out

    # -- summary -------------------------------------------------------------------------------------
    @classmethod
    def summary_table(cls, ds) -> Optional[str]:
        rules = [str(r) for r in ds["rule"].values]
        settings = json.loads(ds.attrs["config"])["settings"]
        n = ds.sizes["seed"]
        phases = "both phases (textbook)" if settings.get("free_phase", True) else "no free phase (as published)"
        lines = [f"{cls.title}: seed means over {n} seeds ± 0.5·SEM (spec §8); GR/AP: {phases}"]
        for rule in rules:
            lr, x, y, ex, ey = rule_points(ds, rule)
            lines.append(f"{LABELS.get(rule, rule)}: {len(lr)} learning rates")
            lines.append("  lr          final displacement   trajectory length   length - final")
            for i in range(len(lr)):
                lines.append(f"  {lr[i]:<10.6g}  {x[i]:.3f} ± {ex[i]:.3f}      {y[i]:.3f} ± {ey[i]:.3f}      "
                             f"{y[i] - x[i]:.3f}")
        for short, long in PAIRS:
            if short in rules and long in rules:
                at, gap = matched_gap(ds, short, long)
                name = f"{LABELS[long]} - {LABELS[short]}"
                if len(at):
                    lines.append(f"matched displacement ({len(at)} {LABELS[short]} points in {at.min():.3f}…"
                                 f"{at.max():.3f}): {name} path length {gap.mean():+.3f} on average "
                                 f"(from {gap.min():+.3f} to {gap.max():+.3f}); "
                                 f"{LABELS[long]} longer at {int((gap > 0).sum())}/{len(gap)} points")
                else:
                    lines.append(f"{name}: the final displacements do not overlap (extend the lr ranges)")
        lines.append(PUBLISHED_NOTES)
        return "\n".join(lines)

    @classmethod
    def summary_plot(cls, ds, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pcneuro.plotting import save_figure

        rules = [str(r) for r in ds["rule"].values]
        pairs = [p for p in PAIRS if any(r in rules for r in p)]
        settings = json.loads(ds.attrs["config"])["settings"]
        published_variant = not settings.get("free_phase", True)
        fig, axes = plt.subplots(1, len(pairs), figsize=(max(6.4, 5.4 * len(pairs)), 4.8), squeeze=False)
        for ax, pair in zip(axes[0], pairs):
            for rule in pair:
                if rule not in rules:
                    continue
                lr, x, y, ex, ey = rule_points(ds, rule)
                ax.errorbar(x, y, xerr=ex, yerr=ey, fmt="o", color=COLORS[rule], markersize=4, capsize=2,
                            linewidth=0.8, label=f"{LABELS[rule]} (lr {lr.min():.3g}…{lr.max():.3g})")
                pub = PUBLISHED[rule]
                if rule in ("pc", "bp"):
                    ax.plot(*zip(*pub), ":", color=COLORS[rule], linewidth=1.2, marker="s", markerfacecolor="none",
                            label=f"{LABELS[rule]} published (first, last point)")
                else:
                    note = "" if published_variant else ", no free phase: qualitative"
                    ax.plot(*zip(*pub), "s", color=COLORS[rule], markerfacecolor="none", markersize=8,
                            label=f"{LABELS[rule]} published{note}")
            (lo, hi), ylim = ax.get_xlim(), ax.get_ylim()
            if ylim[0] < hi:  # the straight-path line, where it falls inside the panel
                ax.plot([lo, hi], [lo, hi], "-", color="0.75", linewidth=0.8, zorder=0,
                        label="length = displacement (a straight path)")
            ax.set_xlim(lo, hi)
            ax.set_ylim(*ylim)
            ax.set(xlabel="final displacement (seed mean)", ylabel="trajectory length (seed mean)")
            if pair == ("gr", "ap"):
                title = "GeneRec vs Almeida–Pineda, " + ("no free phase (as published)" if published_variant
                                                           else "both phases (textbook)")
            else:
                title = "PC vs BP, 32-32-32-32 sigmoid net"
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=7, loc="lower right" if pair == ("pc", "bp") else "upper left")
        fig.suptitle(f"{cls.title}\nerror bars ±0.5·SEM over {ds.sizes['seed']} seeds (theory spec §8)", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, path)


def rule_points(ds, rule: str):
    """One rule's points, NaN cells (beyond its range) dropped, by lr: (lr, seed-mean final displacement,
    seed-mean trajectory length, 0.5·SEM of each) as numpy arrays."""
    sub = ds.sel(rule=rule)
    if "lr_index" not in sub.dims:
        sub = sub.expand_dims("lr_index")
    lr = sub["learning_rate"].transpose("lr_index", "seed").values
    final = sub["final_displacement"].transpose("lr_index", "seed").values
    length = sub["trajectory_length"].transpose("lr_index", "seed").values
    keep = np.isfinite(lr).all(1)
    n = final.shape[1]

    def half_sem(v):
        return 0.5 * np.std(v, axis=1, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(len(v))

    return (lr[keep, 0], final[keep].mean(1), length[keep].mean(1), half_sem(final[keep]), half_sem(length[keep]))


def matched_gap(ds, short: str, long: str) -> Tuple[np.ndarray, np.ndarray]:
    """At each of ``short``'s points whose seed-mean displacement lies within ``long``'s range, ``long``'s
    seed-mean trajectory length (linearly interpolated in displacement) minus ``short``'s:
    (displacements, gaps). Positive gaps: ``long`` travels further for the same displacement."""
    _, xs, ys, _, _ = rule_points(ds, short)
    _, xl, yl, _, _ = rule_points(ds, long)
    order = np.argsort(xl)
    xl, yl = xl[order], yl[order]
    inside = (xs >= xl[0]) & (xs <= xl[-1]) if len(xl) else np.zeros(len(xs), bool)
    return xs[inside], np.interp(xs[inside], xl, yl) - ys[inside]


__all__ = ["LessErratic", "LR_RANGES", "PUBLISHED", "learning_rate", "lr_count", "matched_gap", "rule_points",
           "pc_network"]
