"""The 1-2-2 example: weight and output trajectories of backprop and prospective configuration.

Theory spec §3 (P1), Song et al. (2024), *Nature Neuroscience* (the 1-2-2 example of the
prospective-configuration figures; the spec does not name the panel).

Claim. Backprop overshoots the hidden weight that feeds the high-gain output and zig-zags towards
the solution; PC first infers the hidden activity that would produce the target, then consolidates
it in the weights, and so moves almost straight to the solution.

Protocol (spec §3, conventions §1). One sample: input [1], target [1, 1], batch 1. Trainable
weights w = (w_1, w_2) from the input to two hidden units, both 0 at the start, so the hidden
activity is h = (w_1, w_2); value nodes on the hidden units, no activation; a frozen diagonal output
layer with gains (1, 2), so o = (h_1, 2·h_2). The solution is w = (1, 0.5), o = (1, 1). BP takes one
SGD step on ½‖y − o‖² per iteration; PC infers the hidden latents for T = 128 steps (latent lr 0.1,
discount 0.8 when the energy does not decrease) and steps the weights once, at t = T − 1.

Learning rates are per rule (``lr_bp``, ``lr_pc``): the main variant uses BP 0.4 and PC
1.3969543147208123, the published constant that makes PC's first weight step as long as BP's
(0.4·√5); under converged inference that constant would be 0.4·√(5/0.41) ≈ 1.39686 (spec §10 #7:
used verbatim). Presets give the spec's variants: ``paper`` (main, 15 logged points),
``small_lr`` (0.05 for both, 400 points; the paper's output panel shows the first 150 of the same
trajectory), ``trainable_gains`` (the two output gains learn too, lr 0.4 for both rules, 10
points; spec §10 #8: the output layer stays diagonal).

Measures (spec §1.5): the state before each update, ``step`` k being the state after k updates
(k = 0 … iterations − 1; the update after the last logged point is not taken, it is never seen):
the input→hidden weights ``weight``, the output gains ``gain`` (constant unless trainable), the
feed-forward output ``output`` and the loss. The protocol is deterministic (fixed initial weights,
one sample): every seed gives the same trajectories, so the presets run one seed.

Analytic oracle (spec §3, converged inference): PC w_1 += η(1 − w_1)/2, w_2 += η(2 − 4w_2)/5;
BP w_1 += η(1 − w_1), w_2 += 2η(1 − 2w_2) (w_2's error flips by −0.6 per step at η = 0.4).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import torch

from pcneuro.engine import Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.registry import register

#: the published PC learning rate of the main variant (spec §3, §10 #7), verbatim
PC_LR = 1.3969543147208123
GAINS = (1.0, 2.0)
TARGET = (1.0, 1.0)
SOLUTION_WEIGHTS = (1.0, 0.5)
UNITS = (1, 2)
LABELS = {"bp": "BP", "pc": "PC"}
#: published values (spec §3 "Targets" and the BP oracle), for the summary and the reproduction table
PUBLISHED = {
    "bp_weights": ((0.0, 0.0), (0.4, 0.8), (0.64, 0.32), (0.784, 0.608), (0.8704, 0.4352), (0.9222, 0.5389)),
    "bp_outputs": ((0.0, 0.0), (0.4, 1.6), (0.64, 0.64)),
    "pc_w2": (0.0, 0.5588, 0.4931, 0.5008, 0.4999),
    "gains_pc_point10": (0.959, 0.975),
    "gains_bp_o2_range": (0.58, 1.6),
}
CONTOUR_LEVELS = (0.2, 0.4, 0.6, 0.8, 1.0)


@register
class Example122(Paradigm):
    name = "example_122"
    title = "1-2-2 example: weight and output trajectories, BP vs PC"
    tags = ("theory", "toy", "trajectory")
    citation = "Song et al. (2024) Nat Neurosci, the 1-2-2 example (theory spec §3)"
    figure = "Song et al. 2024, 1-2-2 example: trajectories in weight and output space"
    version = "1"
    rules = ("pc", "bp")
    hyperparameters = {
        "lr_bp": Hyper(0.4, "weight learning rate under BP", min=0.0),
        "lr_pc": Hyper(PC_LR, "weight learning rate under PC (the published constant equalising the first "
                              "step's length with BP's)", min=0.0),
        "iterations": Hyper(15, "logged points: the state before each of this many updates", type=int, min=1,
                            structural=True),
        "trainable_gains": Hyper(False, "the output gains (1, 2) learn too (diagonal output layer)", type=bool,
                                 structural=True),
        "T": Hyper(128, "PC inference steps per update (at least 2, the number of weight layers)", type=int,
                   min=1, structural=True),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate η_x", min=0.0),
        "latent_discount": Hyper(0.8, "PC factor d on η_x when the energy does not decrease", min=1e-12, max=1.0),
    }
    grid = {}
    default_seeds = 1
    presets = {
        "quick": Preset(seeds=1, settings={"iterations": 6}, doc="the main variant's first 6 logged points"),
        "paper": Preset(seeds=1, doc="main variant: BP lr 0.4, PC lr 1.3969543147208123, 15 logged points"),
        "small_lr": Preset(seeds=1, settings={"lr_bp": 0.05, "lr_pc": 0.05, "iterations": 400},
                           doc="small-lr variant: lr 0.05 for both rules, 400 logged points (the paper's output "
                               "panel shows the first 150)"),
        "trainable_gains": Preset(seeds=1, settings={"lr_bp": 0.4, "lr_pc": 0.4, "iterations": 10,
                                                     "trainable_gains": True},
                                  doc="optional variant: the output gains learn too, lr 0.4, 10 logged points"),
    }
    measures = {
        "weight": Measure(("step", "unit"), "input-to-hidden weight w_i before the update (after `step` updates)"),
        "gain": Measure(("step", "unit"), "output gain of hidden unit i before the update"),
        "output": Measure(("step", "unit"), "feed-forward output o_i before the update"),
        "loss": Measure(("step",), "loss ½‖y − o‖² before the update"),
    }
    main_measure = "output"
    figure_x = "step"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["T"] < 2:
            raise ValueError(f"T={settings['T']}: PC needs T >= 2 (the error reaches the first weight layer "
                             f"at inference step 1)")

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"step": list(range(settings["iterations"])), "unit": list(UNITS)}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return settings["iterations"]

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def network(trainable_gains: bool = False) -> NetworkSpec:
        """input -> Linear(1, 2) -> value nodes (identity) -> diagonal Linear(2, 2) -> output, no biases."""
        diagonal = ((1.0, 0.0), (0.0, 1.0))
        return NetworkSpec((Linear(1, 2, bias=False),
                            Linear(2, 2, bias=False, mask=diagonal, trainable=trainable_gains)), "pre")

    @staticmethod
    def initial_params(n_runs: int, dtype=torch.float64, device="cpu") -> Dict[str, torch.Tensor]:
        """w = (0, 0) and the diagonal gains (1, 2), for every run."""
        return {"0.weight": torch.zeros(n_runs, 2, 1, dtype=dtype, device=device),
                "1.weight": torch.diag(torch.tensor(GAINS, dtype=dtype)).to(device).expand(n_runs, 2, 2).clone()}

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        R, dt = len(settings), self.torch_dtype()
        n = s0["iterations"]
        lr = stack_settings(settings, "lr_pc" if rule == "pc" else "lr_bp", dt)  # host values
        config = TrainConfig(T=s0["T"], weight_opt=SGD(lr=lr),
                             latent_opt=LatentSGD(lr=stack_settings(settings, "latent_lr", dt)),
                             lr_decay=stack_settings(settings, "latent_discount", dt), lr_growth=1.0,
                             record="none")
        spec, config = build_rule(rule, self.network(s0["trainable_gains"]), config)
        engine = Engine(spec, config, self.initial_params(R, dt, device))
        x = torch.ones(1, 1, dtype=dt, device=device)
        y = torch.tensor([TARGET], dtype=dt, device=device)

        weight = torch.empty(R, n, 2, dtype=dt, device=device)
        gain = torch.empty(R, n, 2, dtype=dt, device=device)
        output = torch.empty(R, n, 2, dtype=dt, device=device)
        for step in range(n):
            weight[:, step] = engine.params["0.weight"][:, :, 0]
            gain[:, step] = torch.diagonal(engine.params["1.weight"], dim1=1, dim2=2)
            output[:, step] = engine.forward(x)[:, 0, :]
            if step < n - 1:  # the update after the last logged point is never seen
                engine.train_batch(x, y)
            progress(1)
        loss = 0.5 * ((output - y) ** 2).sum(-1)
        return {"weight": weight.cpu().numpy(), "gain": gain.cpu().numpy(), "output": output.cpu().numpy(),
                "loss": loss.cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @staticmethod
    def _trajectories(ds):
        """(label, rule, weights [K, 2], outputs [K, 2]) per rule and grid point, seed 0 (deterministic)."""
        from pcneuro.results import grid_dims

        axes = grid_dims(ds)
        out = []
        for rule in ds["rule"].values:
            sub = ds.sel(rule=rule).isel(seed=0)
            points = [{}]
            for axis in axes:
                points = [{**p, axis: v} for p in points for v in ds[axis].values]
            for point in points:
                cell = sub.sel(point) if point else sub
                lr_key = "lr_pc" if str(rule) == "pc" else "lr_bp"
                lr = float(point[lr_key] if lr_key in point else json_setting(ds, lr_key))
                extra = ", ".join(f"{k}={v}" for k, v in point.items() if k != lr_key)
                label = f"{LABELS.get(str(rule), str(rule))} (lr {lr:.6g}{', ' + extra if extra else ''})"
                out.append((label, str(rule), cell["weight"].values, cell["output"].values))
        return out

    @classmethod
    def summary_table(cls, ds) -> Optional[str]:
        lines = [f"{cls.title}: state before each update (step k = after k updates); solution w = (1, 0.5), "
                 f"o = (1, 1); deterministic (seed {ds['seed'].values[0]} shown)"]
        for label, rule, w, o in cls._trajectories(ds):
            lines.append(label)
            lines.append("  step   w1       w2       o1       o2")
            shown = sorted(set(list(range(min(6, len(w)))) + [len(w) - 1]))
            for k in shown:
                lines.append(f"  {k:<5}  {w[k, 0]:.4f}  {w[k, 1]:.4f}  {o[k, 0]:.4f}  {o[k, 1]:.4f}")
            if len(w) > 1:
                lines.append(f"  w2 range after step 1: {w[1:, 1].min():.4f}…{w[1:, 1].max():.4f}; "
                             f"o2 range: {o[1:, 1].min():.4f}…{o[1:, 1].max():.4f}")
        lines.append("published (spec §3): BP w " + " → ".join(f"({a:g},{b:g})" for a, b in PUBLISHED["bp_weights"])
                     + "; PC w2 " + " → ".join(f"{v:g}" for v in PUBLISHED["pc_w2"])
                     + "; trainable gains: PC point 10 ≈ (0.959, 0.975), BP o2 between ≈0.58 and 1.6")
        return "\n".join(lines)

    @classmethod
    def summary_plot(cls, ds, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pcneuro.plotting import save_figure

        trainable = bool(json_setting(ds, "trainable_gains", True))
        trajectories = cls._trajectories(ds)
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.8))
        styles = {"bp": ("C3", "s", "--"), "pc": ("C0", "o", "-")}
        panels = ((left, 2, SOLUTION_WEIGHTS, "solution", lambda A, B: 0.5 * (A - 1) ** 2 + 0.5 * (2 * B - 1) ** 2),
                  (right, 3, TARGET, "target", lambda A, B: 0.5 * (A - 1) ** 2 + 0.5 * (B - 1) ** 2))
        for ax, column, goal, goal_name, loss in panels:
            points = np.concatenate([np.asarray([goal, (0.0, 0.0)])] + [t[column] for t in trajectories])
            points = points[np.isfinite(points).all(1)]
            lo, hi = points.min(0) - 0.15, points.max(0) + 0.15
            A, B = np.meshgrid(np.linspace(lo[0], hi[0], 301), np.linspace(lo[1], hi[1], 301))
            cs = ax.contour(A, B, loss(A, B), levels=CONTOUR_LEVELS, colors="0.6", linewidths=0.8)
            ax.clabel(cs, fmt="%.1f", fontsize=7)
            for j, (label, rule, *paths) in enumerate(trajectories):
                color, marker, line = styles.get(rule, (f"C{j + 4}", "^", ":"))
                path_ = paths[column - 2]
                ax.plot(path_[:, 0], path_[:, 1], line, color=color, marker=marker,
                        markersize=5 if len(path_) <= 40 else 2, linewidth=1.2, label=label)
            if trainable and column == 2:
                goal_name = "solution at gains (1, 2)"
            ax.plot(*goal, marker="*", color="k", markersize=12, linestyle="none", label=goal_name)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
            ax.set_aspect("equal")
            ax.legend(fontsize=7, loc="lower right")
        left.set(xlabel="w$_1$", ylabel="w$_2$",
                 title="weight space" + (" (the gains learn too; contours at gains (1, 2))" if trainable else "")
                 + "\ncontours: ½(w$_1$−1)² + ½(2w$_2$−1)²")
        right.set(xlabel="o$_1$", ylabel="o$_2$", title="output space\ncontours: ½(o$_1$−1)² + ½(o$_2$−1)²")
        fig.suptitle(f"1-2-2 example, {ds.sizes['step']} logged points (theory spec §3)", fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)


def json_setting(ds, key: str, default: Any = None):
    """A fixed setting of the run, from the dataset's recorded configuration (``default`` when it is
    a grid axis, or missing and a default is given)."""
    import json

    settings = json.loads(ds.attrs["config"])["settings"]
    return settings[key] if default is None else settings.get(key, default)


__all__ = ["Example122", "PC_LR", "PUBLISHED"]
