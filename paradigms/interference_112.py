"""The 1-1-2 interference example: backprop disturbs the correct output, PC protects it.

Theory spec §4 (P2), Song et al. (2024), *Nature Neuroscience*, fig 3a and 3d (and the optional
first-step sweep).

Claim. When only one output is wrong, backprop changes both layers at once and the two changes
interfere: the output that was already correct dips on the way to the solution. PC first infers
the hidden activity that would give the target, so the correct output barely moves.

Protocol (spec §4, conventions §1). Input [1] → hidden weight w (1) → value node → identity → two
output weights v ([1, 1]) → outputs o = v·w, both layers trainable, no biases. Target [0, 1], batch
1, so the initial output (1, 1) has the first output wrong and the second (the *correct* output)
right. BP takes one SGD step on ½‖y − o‖² per iteration; PC infers the hidden latent for T = 128
steps (latent lr 0.1, discount 0.5 when the energy does not decrease) and steps both layers once,
at t = T − 1. One weight lr ``lr`` for both rules.

Presets: ``paper`` (fig 3a: lr 0.2, 64 logged points; the figure shows logged iterations 1–23),
``lr_sweep`` (fig 3d: 2048 points, lr ∈ {0.5, 0.1, 0.05, 0.01, 0.005}; 0.5 is left out of the
figure as in the paper), ``first_step`` (the output after one update: the union of the spec's BP
and PC lr lists, run for both rules; the figure draws each rule at its own list).

Measures (spec §1.5): the state before each update, ``step`` k being the state after k updates
(k = 0 … iterations − 1; the update after the last logged point is never seen, so it is not
taken): the feed-forward ``output``, the weights ``hidden_weight`` (w) and ``output_weight`` (v),
and ``min_correct_output``, the lowest logged o_2 (the claim's scalar). The protocol is
deterministic (fixed initial weights, one sample): every seed gives the same trajectories, so the
presets run one seed.

Analytic oracle (spec §4). BP's first step gives o = ((1 − η)², 1 − η), on the curve o_2 = √o_1.
PC under converged inference: h* = (w + vᵀy)/(1 + ‖v‖²) (2/3 at the start), Δw = η(h* − w),
Δv = η(y − v h*) h*.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from pcneuro.engine import Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.registry import register

TARGET = (0.0, 1.0)
UNITS = (1, 2)
LABELS = {"bp": "BP", "pc": "PC"}
#: fig 3d's learning rates (spec §4)
SWEEP_LRS = (0.5, 0.1, 0.05, 0.01, 0.005)
#: the first-step sweep's learning rates per rule (spec §4)
FIRST_STEP_LRS = {
    "bp": (1.0, 0.95, 0.85, 0.75, 0.7, 0.65, 0.6, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.15, 0.1,
           0.075, 0.05, 0.025, 0.01, 0.0075, 0.005),
    "pc": (3.0, 2.75, 2.5, 2.25, 2.0, 1.75, 1.5, 1.25, 1.0, 0.75, 0.5, 0.25, 0.1,
           0.075, 0.05, 0.025, 0.01, 0.0075, 0.005),
}
FIRST_STEP_GRID = tuple(sorted(set(FIRST_STEP_LRS["bp"]) | set(FIRST_STEP_LRS["pc"]), reverse=True))
#: published lowest correct output o_2 per (rule, lr) (spec §4 targets: fig 3a at 0.2, fig 3d below)
PUBLISHED_MIN = {
    ("bp", 0.2): "0.76", ("pc", 0.2): "0.93",
    **{("bp", lr): "0.79–0.80" for lr in SWEEP_LRS[1:]},
    **{("pc", lr): "0.94" for lr in SWEEP_LRS[1:]},
}
#: published PC outputs after one update (spec §4 first-step targets)
PUBLISHED_FIRST_STEP = {("pc", 3.0): (0.0, 0.0), ("pc", 2.75): (-0.019, 0.135), ("pc", 2.5): (-0.019, 0.259)}
#: the background map's range (spec §4) and the logged iterations fig 3a shows
MAP_O1, MAP_O2 = (-0.04, 1.04), (0.75, 1.03)
FIG3A_POINTS = 23


@register
class Interference112(Paradigm):
    name = "interference_112"
    title = "1-1-2 interference: the correct output under BP and PC"
    tags = ("theory", "toy", "interference")
    citation = "Song et al. (2024) Nat Neurosci, fig 3a and 3d"
    figure = "Song et al. 2024, fig 3a (lr 0.2) and fig 3d (lr sweep)"
    version = "1"
    rules = ("pc", "bp")
    hyperparameters = {
        "lr": Hyper(0.2, "weight learning rate (both layers, both rules)", min=0.0),
        "iterations": Hyper(64, "logged points: the state before each of this many updates", type=int, min=1,
                            structural=True),
        "T": Hyper(128, "PC inference steps per update (at least 2, the number of weight layers)", type=int,
                   min=1, structural=True),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate η_x", min=0.0),
        "latent_discount": Hyper(0.5, "PC factor d on η_x when the energy does not decrease", min=1e-12, max=1.0),
    }
    grid = {}
    default_seeds = 1
    presets = {
        "quick": Preset(seeds=1, settings={"iterations": 16}, grid={"lr": (0.2, 0.05)},
                        doc="two lrs, 16 logged points"),
        "paper": Preset(seeds=1, doc="fig 3a: lr 0.2, 64 logged points (the figure shows iterations 1-23)"),
        "lr_sweep": Preset(seeds=1, settings={"iterations": 2048}, grid={"lr": SWEEP_LRS},
                           doc="fig 3d: lr in {0.5, 0.1, 0.05, 0.01, 0.005}, 2048 logged points"),
        "first_step": Preset(seeds=1, settings={"iterations": 2}, grid={"lr": FIRST_STEP_GRID},
                             doc="the output after one update over the union of the spec's BP and PC lr lists"),
    }
    measures = {
        "output": Measure(("step", "unit"), "feed-forward output o_i before the update (after `step` updates)"),
        "hidden_weight": Measure(("step",), "input-to-hidden weight w before the update"),
        "output_weight": Measure(("step", "unit"), "hidden-to-output weight v_i before the update"),
        "min_correct_output": Measure((), "lowest logged value of the correct output o_2"),
    }
    main_measure = "min_correct_output"

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
    def network() -> NetworkSpec:
        """input -> Linear(1, 1) -> value node (identity) -> Linear(1, 2) -> output, no biases."""
        return NetworkSpec((Linear(1, 1, bias=False), Linear(1, 2, bias=False)), "pre")

    @staticmethod
    def initial_params(n_runs: int, dtype=torch.float64, device="cpu") -> Dict[str, torch.Tensor]:
        """w = 1 and v = [1, 1], for every run."""
        return {"0.weight": torch.ones(n_runs, 1, 1, dtype=dtype, device=device),
                "1.weight": torch.ones(n_runs, 2, 1, dtype=dtype, device=device)}

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        R, dt = len(settings), self.torch_dtype()
        n = s0["iterations"]
        config = TrainConfig(T=s0["T"], weight_opt=SGD(lr=stack_settings(settings, "lr", dt)),
                             latent_opt=LatentSGD(lr=stack_settings(settings, "latent_lr", dt)),
                             lr_decay=stack_settings(settings, "latent_discount", dt), lr_growth=1.0,
                             record="none")
        spec, config = build_rule(rule, self.network(), config)
        engine = Engine(spec, config, self.initial_params(R, dt, device))
        x = torch.ones(1, 1, dtype=dt, device=device)
        y = torch.tensor([TARGET], dtype=dt, device=device)

        output = torch.empty(R, n, 2, dtype=dt, device=device)
        w = torch.empty(R, n, dtype=dt, device=device)
        v = torch.empty(R, n, 2, dtype=dt, device=device)
        for step in range(n):
            output[:, step] = engine.forward(x)[:, 0, :]
            w[:, step] = engine.params["0.weight"][:, 0, 0]
            v[:, step] = engine.params["1.weight"][:, :, 0]
            if step < n - 1:  # the update after the last logged point is never seen
                engine.train_batch(x, y)
            progress(1)
        lowest = output[:, :, 1].amin(dim=1)
        return {"output": output.cpu().numpy(), "hidden_weight": w.cpu().numpy(),
                "output_weight": v.cpu().numpy(), "min_correct_output": lowest.cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @staticmethod
    def _cells(ds) -> List[Tuple[str, float, Dict[str, Any], Any]]:
        """(rule, lr, other grid values, the seed-0 cell) per rule and grid point (deterministic runs)."""
        from pcneuro.results import grid_dims

        axes = grid_dims(ds)
        fixed = json.loads(ds.attrs["config"])["settings"]
        points: List[Dict[str, Any]] = [{}]
        for axis in axes:
            points = [{**p, axis: v.item()} for p in points for v in ds[axis].values]
        cells = []
        for rule in ds["rule"].values:
            sub = ds.sel(rule=rule).isel(seed=0)
            for point in points:
                lr = float(point["lr"] if "lr" in point else fixed["lr"])
                other = {k: val for k, val in point.items() if k != "lr"}
                cells.append((str(rule), lr, other, sub.sel(point) if point else sub))
        return cells

    @classmethod
    def summary_table(cls, ds) -> Optional[str]:
        n = ds.sizes["step"]
        head = ["rule", "lr", "min o2", "at step", "o after 1 step", f"o at step {n - 1}",
                "published o after 1 step" if n == 2 else "published min o2"]
        rows = []
        for rule, lr, other, cell in cls._cells(ds):
            if n == 2 and not _drawn_at_first_step(rule, lr):
                continue
            o = cell["output"].values
            k = int(np.argmin(o[:, 1])) if np.isfinite(o[:, 1]).any() else -1
            first = f"({o[1, 0]:.4f}, {o[1, 1]:.4f})" if n > 1 else "-"
            extra = "".join(f", {key}={val}" for key, val in other.items())
            if n == 2:  # the first-step sweep: its own published points, BP's oracle
                pub = ("(%g, %g)" % PUBLISHED_FIRST_STEP[(rule, lr)] if (rule, lr) in PUBLISHED_FIRST_STEP
                       else f"oracle ({(1 - lr) ** 2:.4f}, {1 - lr:.4f})" if rule == "bp" else "")
            else:
                pub = PUBLISHED_MIN.get((rule, lr), "")
                if k == n - 1 and n > 1:
                    pub += " (still falling at the last point)"
            rows.append([LABELS.get(rule, rule), f"{lr:g}{extra}", f"{float(cell['min_correct_output']):.4f}",
                         str(k), first, f"({o[-1, 0]:.4f}, {o[-1, 1]:.4f})", pub])
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
        fmt = lambda r: "  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip()  # noqa: E731
        title = (f"{cls.title}: correct output o2 over {n} logged points (step k = after k updates; "
                 f"deterministic, seed {ds['seed'].values[0]} shown); published: spec §4 (read from figures)"
                 + ("; first-step sweep: each rule at its own lr list" if n == 2 else ""))
        return "\n".join([title, fmt(head), *(fmt(r) for r in rows)])

    @classmethod
    def summary_plot(cls, ds, path):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pcneuro.plotting import save_figure

        cells = cls._cells(ds)
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.6))
        n_lrs = len({lr for _, lr, _, _ in cells})
        if ds.sizes["step"] == 2:
            cls._first_step_panels(cells, left, right)
            panel = "first-step sweep"
        else:
            cls._trajectory_panels(cells, left, right, ds.sizes["step"])
            panel = "fig 3d-style lr sweep" if n_lrs > 1 else "fig 3a-style"
        fig.suptitle(f"{cls.title}: {panel} (Song et al. 2024; theory spec §4)", fontsize=10)
        fig.tight_layout()
        return save_figure(fig, path)

    @staticmethod
    def _background(ax, o1, o2):
        A, B = np.meshgrid(np.arange(o1[0], o1[1] + 1e-9, 0.01), np.arange(o2[0], o2[1] + 1e-9, 0.01))
        mesh = ax.pcolormesh(A, B, 0.5 * (A ** 2 + (B - 1) ** 2), cmap="Greys", shading="nearest", alpha=0.45)
        return mesh

    @classmethod
    def _trajectory_panels(cls, cells, left, right, n_steps):
        """Fig 3a (one lr: colour = iteration, marker = rule, logged iterations 1–23) or fig 3d
        (several lrs: colour = lr, line style = rule; lr 0.5 left out when there are others)."""
        import matplotlib.pyplot as plt

        cls._background(left, MAP_O1, MAP_O2)  # grey: the loss ½(o_1² + (o_2 − 1)²), darker is higher
        lrs = sorted({lr for _, lr, _, _ in cells}, reverse=True)
        colors = {lr: plt.cm.plasma(i / max(len(lrs) - 1, 1) * 0.85) for i, lr in enumerate(lrs)}
        markers = {"pc": "o", "bp": "^"}
        lines = {"pc": "-", "bp": "--"}
        if len(lrs) == 1:
            k = min(FIG3A_POINTS, n_steps)
            for rule, lr, other, cell in cells:
                o = cell["output"].values[:k]
                left.plot(o[:, 0], o[:, 1], color="0.5", linewidth=0.6, zorder=2)
                sc = left.scatter(o[:, 0], o[:, 1], c=np.arange(1, k + 1), cmap="viridis",
                                  marker=markers.get(rule, "s"), s=28, zorder=3, edgecolors="k", linewidths=0.3,
                                  label=f"{LABELS.get(rule, rule)} (lr {lr:g})")
            plt.colorbar(sc, ax=left, label="iteration", fraction=0.046)
            left.set_title(f"output trajectories, logged iterations 1–{k}", fontsize=9)
        else:
            shown = [lr for lr in lrs if lr != 0.5] or lrs
            for rule, lr, other, cell in cells:
                if lr not in shown:
                    continue
                o = cell["output"].values
                left.plot(o[:, 0], o[:, 1], lines.get(rule, ":"), color=colors[lr], linewidth=1.3,
                          label=f"{LABELS.get(rule, rule)} lr {lr:g}")
            note = " (lr 0.5 not drawn)" if len(shown) < len(lrs) else ""
            left.set_title(f"output trajectories, {n_steps} logged points{note}", fontsize=9)
        left.plot(*TARGET, marker="*", color="k", markersize=12, linestyle="none")
        left.plot(1, 1, marker="x", color="k", markersize=8, linestyle="none")
        left.set(xlim=MAP_O1, ylim=MAP_O2, xlabel="o$_1$ (wrong output, target 0)",
                 ylabel="o$_2$ (correct output, target 1)")
        left.legend(fontsize=7, loc="lower left")
        # the correct output over time (colour = rule for one lr, else lr), published minima dotted
        for rule, lr, other, cell in cells:
            color = {"pc": "C0", "bp": "C3"}.get(rule, "C2") if len(lrs) == 1 else colors[lr]
            o2 = cell["output"].values[:, 1]
            right.plot(np.arange(1, len(o2) + 1), o2, lines.get(rule, ":"), color=color, linewidth=1.2,
                       label=f"{LABELS.get(rule, rule)} lr {lr:g}")
            if (rule, lr) in PUBLISHED_MIN:
                value = float(PUBLISHED_MIN[(rule, lr)].split("–")[0])
                right.axhline(value, color=color, linestyle=":", linewidth=0.8)
        right.axhline(0.9, color="k", linewidth=0.6)
        right.set(xlabel="iteration", ylabel="o$_2$", xscale="log" if n_steps > 100 else "linear")
        right.set_title("correct output o$_2$ (dotted: published minima; black: 0.9)", fontsize=9)
        right.legend(fontsize=7, ncol=2)

    @classmethod
    def _first_step_panels(cls, cells, left, right):
        """The output after one update: each rule at its own lr list (and at lrs outside both lists),
        BP's analytic curve o_2 = √o_1, published PC points as open markers."""
        import matplotlib.pyplot as plt

        points = {"pc": [], "bp": []}
        for rule, lr, other, cell in cells:
            if _drawn_at_first_step(rule, lr):
                points.setdefault(rule, []).append((lr, *cell["output"].values[1]))
        everything = np.array([p[1:] for ps in points.values() for p in ps] + [[1.0, 1.0], [0.0, 0.0]])
        everything = everything[np.isfinite(everything).all(1)]
        lo, hi = everything.min(0) - 0.05, everything.max(0) + 0.05
        cls._background(left, (lo[0], hi[0]), (lo[1], hi[1]))
        curve = np.linspace(0, 1, 200)
        left.plot(curve ** 2, curve, color="C3", linewidth=0.8, label="BP oracle o$_2$ = √o$_1$")
        markers = {"pc": "o", "bp": "^"}
        for j, (rule, ps) in enumerate(points.items()):
            if not ps:
                continue
            ps = np.array(ps)
            sc = left.scatter(ps[:, 1], ps[:, 2], c=np.log10(ps[:, 0]), cmap="viridis", marker=markers.get(rule, "s"),
                              s=30, edgecolors="k", linewidths=0.3, label=LABELS.get(rule, rule), zorder=3)
            right.plot(ps[:, 0], ps[:, 2], marker=markers.get(rule, "s"), color="C0" if rule == "pc" else "C3",
                       label=f"{LABELS.get(rule, rule)}: o$_2$ after one update")
        plt.colorbar(sc, ax=left, label="log$_{10}$ lr", fraction=0.046)
        pub = np.array([v for v in PUBLISHED_FIRST_STEP.values()])
        left.scatter(pub[:, 0], pub[:, 1], facecolors="none", edgecolors="r", s=90, label="published (PC)", zorder=4)
        left.set(xlim=(lo[0], hi[0]), ylim=(lo[1], hi[1]), xlabel="o$_1$", ylabel="o$_2$",
                 title="output after one update (start (1, 1))")
        left.legend(fontsize=7, loc="lower right")
        right.set(xscale="log", xlabel="lr", ylabel="o$_2$ after one update", title="correct output after one update")
        right.legend(fontsize=7)


def _drawn_at_first_step(rule: str, lr: float) -> bool:
    """In the first-step sweep each rule is shown at its own lr list (and at lrs in neither list)."""
    listed = set(FIRST_STEP_LRS["bp"]) | set(FIRST_STEP_LRS["pc"])
    return lr in FIRST_STEP_LRS.get(rule, ()) or lr not in listed


__all__ = ["Interference112", "FIRST_STEP_LRS", "FIRST_STEP_GRID", "PUBLISHED_MIN", "PUBLISHED_FIRST_STEP"]
