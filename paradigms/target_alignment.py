"""Target alignment after one learning step vs depth: PC stays aligned, BP decays (fig 3e and variants).

Theory spec §5 (P3), Song et al. (2024), *Nature Neuroscience*, fig 3e and its extended-data variants.

Claim. After one weight step, the change of PC's output points along the target error y − ŷ even in
deep networks; BP's alignment decays and spreads with depth, because the layer-wise weight changes it
makes all at once interfere.

Protocol (spec §5, conventions §1). Per seed one batch (default one sample): input s and target y
~ N(0, I) of the network's width. A stack of ``depth`` Linear layers width × width, no biases, value
nodes on the pre-activations, φ between layers (§1.1; the input is not passed through φ), initial
weights from ``init`` times the activation's gain (§1.4: identity 1, tanh 5/3, ...). One step of the
rule on the batch, then the target alignment (§2) TA = cos(ŷ_{W′}(s) − ŷ_W(s), y − ŷ_W(s)), a mean
of per-sample cosines over the batch, with ŷ feed-forward; ``angle`` = arccos(min(TA, 1)) in degrees.
PC: T inference steps (latent lr 0.1, discount 0.5 when the energy does not decrease), weights once
at t = T − 1 (§1.3); BP: one SGD step on the summed loss; one weight lr for both. PC with one layer
has no value node and equals BP (§1.3), so depth 1 runs BP's step under both names.

Depth, width, batch, activation, init and T are structural (each value its own engine program); all
seeds and learning rates of one structural setting share the run axis. Each seed draws its sample and
its weights from its own streams (``Paradigm.generator``), so PC, BP and TP of a seed are paired.

Presets: ``paper`` (fig 3e: depths 1–25, 27 seeds, T = 512, identity, xavier_uniform) and the spec's
variant rows (T = 128, depths 1, 2, 4, …, 15, 3 seeds unless noted): ``identity``, ``tanh``,
``orthogonal`` (30 seeds × lr {0.01, 0.001}), ``width_batch1`` and ``width_batch64`` (depth 3, width
1 … 256, 27 seeds), ``depth_batch64``, and ``tp`` (depths 1, 2, 4, 5; run with ``--rule pc,bp,tp``).

Exact-inverse target propagation (``tp``, a third rule by name: ``--rule pc,bp,tp``) is not a
configuration of the PC engine's loop (no inference; errors mapped down through pseudo-inverses): it
is :mod:`pcneuro.engine.target_prop`, for linear nets only (another activation is refused with one
line). It is fragile (spec §10 #6): ill-conditioned layers give huge steps, so its values are
reported, never asserted.

Departures: none from the protocol; the sample, the weights and the seeds come from pcneuro's own
per-seed streams (spec §1.5 allows it), so per-seed values differ from the published scatter.
"""
from __future__ import annotations

import json
import math
import textwrap
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from pcneuro.engine import (Activation, Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule,
                            init_params)
from pcneuro.engine.network import forward
from pcneuro.engine.target_prop import check_linear, exact_inverse_tp_step
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.registry import register

#: exact initialisation gains per activation (theory spec §1.4; LeakyReLU's deliberately not √2)
GAINS = {"identity": 1.0, "sigmoid": 1.0, "tanh": 1.6666666666666667, "relu": 1.4142135623730951,
         "leaky_relu": 0.9999000099990001}
ACTIVATIONS = tuple(GAINS)
#: init name -> init_params scheme ("default" is U(±1/√fan_in), torch's, without a gain)
INITS = {"xavier_uniform": "xavier_uniform", "xavier_normal": "xavier_normal", "orthogonal": "orthogonal",
         "default": "torch"}
LABELS = {"pc": "PC", "bp": "BP", "tp": "TP"}
COLORS = {"pc": "C0", "bp": "C3", "tp": "C2"}

FIG3E_DEPTHS = tuple(range(1, 26))
VARIANT_DEPTHS = (1, 2, 4, 6, 8, 10, 12, 14, 15)
WIDTHS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TP_DEPTHS = (1, 2, 4, 5)
_VARIANT = {"T": 128}

#: published means read from the figures (spec §5), by variant, rule and x value (depth or width)
PUBLISHED: Dict[str, Dict[str, Dict[int, float]]] = {
    "identity": {"pc": dict(zip(VARIANT_DEPTHS, (1.0, .99, .985, .915, .95, .93, .91, .95, .895))),
                 "bp": dict(zip(VARIANT_DEPTHS, (1.0, .91, .815, .72, .685, .57, .545, .545, .39)))},
    "tanh": {"pc": dict(zip(VARIANT_DEPTHS, (1.0, .935, .86, .73, .755, .765, .765, .79, .82))),
             "bp": dict(zip(VARIANT_DEPTHS, (1.0, .755, .635, .535, .525, .605, .595, .545, .505)))},
    "orthogonal": {"pc": {d: 1.0 for d in FIG3E_DEPTHS}, "bp": {d: 1.0 for d in FIG3E_DEPTHS}},
    "width_batch1": {"pc": dict(zip(WIDTHS, (.78, .73, .93, .94, .965, .975, .975, .98, .98))),
                     "bp": dict(zip(WIDTHS, (1.0, .905, .88, .84, .855, .84, .84, .825, .80)))},
    "width_batch64": {"pc": {1: .3, 256: .855}, "bp": {1: .3, 256: .735}},
    "depth_batch64": {"pc": {1: .79, 15: .585}, "bp": {1: .79, 15: .145}},
    "fig3e": {"pc": {1: 1.0}, "bp": {1: 1.0}},
    "tp": {"tp": {1: 1.0, 2: 1.0, 4: .33, 5: 1.0}},
}
def published_mean(variant: str, rule: str, x: int) -> Optional[float]:
    """The published mean for (variant, rule) at depth or width ``x``, or None. TP's baseline was
    published for the linear identity nets (spec §5), whatever T."""
    if rule == "tp" and variant in ("identity", "fig3e"):
        variant = "tp"
    return PUBLISHED.get(variant, {}).get(rule, {}).get(int(x))


#: fig 3e's per-seed ranges (spec §5 targets), drawn as bars: rule -> {depth: (low, high)}
FIG3E_RANGES = {"pc": {d: (0.75, 1.0) for d in range(2, 26)},
                "bp": {5: (0.6, 0.95), 10: (0.25, 0.85), **{d: (-0.4, 0.7) for d in range(20, 26)}}}
#: what the published figures say beyond means (spec §5 targets), per variant
PUBLISHED_NOTES = {
    "fig3e": "fig 3e per-seed ranges: PC mostly 0.75-1.0 at every depth (a few ~0.6); BP ~0.6-0.95 at depth 5, "
             "~0.25-0.85 at 10, ~-0.4-0.7 at 20-25 (angles: PC ~10-50 deg, BP ~20-110 deg)",
    "width_batch64": "both rise from ~0.3 (width 1) to PC .855 / BP .735 (width 256); they cross near width 32",
    "depth_batch64": "PC .79 -> .585, BP .79 -> .145 over depth 1...15",
    "orthogonal": "TA = 1.0 for both rules at all depths (BP's change is parallel to the error)",
    "tp": "TP: ~1 at depths 1, 2, 5, mean ~0.33 with a huge error bar at depth 4 (fragile: reported only)",
}


# -- shared network pieces (also used by the prospective_index paradigm) -------------------------------
def stack_network(depth: int, width: int, activation: str) -> NetworkSpec:
    """``depth`` Linear layers width × width without biases, φ between them, value nodes on the
    pre-activations (spec §1.1: μ_1 = W_0 s, μ_l = W_{l−1} φ(x_{l−1}), ŷ = W_{N−1} φ(x_{N−1}))."""
    layers: List[Any] = [Linear(width, width, bias=False)]
    for _ in range(depth - 1):
        if activation != "identity":
            layers.append(Activation(activation))
        layers.append(Linear(width, width, bias=False))
    return NetworkSpec(tuple(layers), "pre")


def initial_weights(paradigm: type, spec: NetworkSpec, seeds: Sequence[int], init: str, activation: str,
                    dtype, device) -> Dict[str, torch.Tensor]:
    """Each run's weights from its seed's own ``"init"`` stream (rule-independent: a paired design),
    ``init`` times the activation's gain (spec §1.4; ``"default"`` has no gain)."""
    streams = [paradigm.stream_seed(seed, "init") for seed in seeds]
    return init_params(spec, streams, INITS[init], scale=init_gain(init, activation), dtype=dtype, device=device)


def init_gain(init: str, activation: str) -> float:
    """The factor on ``init``'s draw: the activation's gain (spec §1.4), none for ``"default"``."""
    return 1.0 if init == "default" else GAINS[activation]


def sample_batch(paradigm: type, seeds: Sequence[int], batch: int, width: int, dtype, device):
    """Per run a batch of inputs and targets ~ N(0, I) from its seed's ``"sample"`` stream: [R, B, width] each."""
    draws = []
    for seed in seeds:
        gen = paradigm.generator(seed, "sample")
        draws.append(torch.randn(2, batch, width, generator=gen, dtype=torch.float64))
    both = torch.stack(draws).to(dtype=dtype, device=device)
    return both[:, 0], both[:, 1]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between a and b along the last axis (NaN when either is zero)."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def pc_config(T: int, settings: Sequence[Mapping[str, Any]], dtype, **kw) -> TrainConfig:
    """The PC step of spec §1.3 for a batch of runs (per-run lr, latent lr and discount; host values)."""
    return TrainConfig(T=T, weight_opt=SGD(lr=stack_settings(settings, "lr", dtype)),
                       latent_opt=LatentSGD(lr=stack_settings(settings, "latent_lr", dtype)),
                       lr_decay=stack_settings(settings, "latent_discount", dtype), lr_growth=1.0, **kw)


def validate_network(settings: Mapping[str, Any]) -> None:
    """Checks shared by the theory stacks (the Hypers give depth >= 1, width >= 1, known names)."""
    if settings["T"] < settings["depth"]:
        raise ValueError(f"T={settings['T']} is below depth={settings['depth']}: PC's error reaches the first "
                         f"weight layer at inference step depth-1 (spec §1.2), so T >= depth")


# -- the paradigm ----------------------------------------------------------------------------------------
@register
class TargetAlignment(Paradigm):
    name = "target_alignment"
    title = "Target alignment after one step vs depth"
    tags = ("theory", "alignment", "depth")
    citation = "Song et al. (2024) Nat Neurosci, fig 3e and extended-data variants (theory spec §5)"
    figure = "Song et al. 2024, fig 3e (target alignment vs depth) and its variants"
    version = "1"
    rules = ("pc", "bp")
    extra_rules = ("tp",)
    hyperparameters = {
        "depth": Hyper(1, "number of weight layers N (N - 1 hidden value nodes)", type=int, min=1, structural=True),
        "width": Hyper(64, "units of the input, every hidden layer and the output", type=int, min=1,
                       structural=True),
        "batch_size": Hyper(1, "samples in the one batch (TA is the mean of per-sample cosines)", type=int, min=1,
                            structural=True),
        "activation": Hyper("identity", "nonlinearity phi between the layers (gain from spec §1.4)", type=str,
                            choices=ACTIVATIONS, structural=True),
        "init": Hyper("xavier_uniform", "initial weights (times the activation's gain; 'default' is "
                      "U(+-1/sqrt(fan_in)))", type=str, choices=tuple(INITS), structural=True),
        "lr": Hyper(0.001, "weight learning rate eta_w (both rules)", min=0.0),
        "T": Hyper(512, "PC inference steps (at least depth)", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate eta_x", min=0.0),
        "latent_discount": Hyper(0.5, "PC factor d on eta_x when the energy does not decrease", min=1e-12, max=1.0),
    }
    grid = {"depth": FIG3E_DEPTHS}
    default_seeds = 27
    presets = {
        "quick": Preset(seeds=4, settings={"T": 64}, grid={"depth": (1, 2, 4, 8)},
                        doc="depths 1, 2, 4, 8 with T = 64 and 4 seeds, for tests and a first look"),
        "paper": Preset(seeds=27, grid={"depth": FIG3E_DEPTHS},
                        doc="fig 3e: depths 1-25, 64 wide, identity, xavier_uniform, T = 512, 27 seeds"),
        "identity": Preset(seeds=3, settings=_VARIANT, grid={"depth": VARIANT_DEPTHS},
                           doc="variant row 'identity': T = 128, depths 1, 2, 4, ..., 15, 3 seeds"),
        "tanh": Preset(seeds=3, settings={**_VARIANT, "activation": "tanh"}, grid={"depth": VARIANT_DEPTHS},
                       doc="variant row 'tanh': phi = tanh, gain 5/3, T = 128, depths 1, 2, 4, ..., 15, 3 seeds"),
        "orthogonal": Preset(seeds=30, settings={**_VARIANT, "init": "orthogonal"},
                             grid={"depth": VARIANT_DEPTHS, "lr": (0.01, 0.001)},
                             doc="variant row 'orthogonal': T = 128, depths 1, 2, 4, ..., 15, 30 seeds x lr in "
                                 "{0.01, 0.001}"),
        "width_batch1": Preset(seeds=27, settings={**_VARIANT, "depth": 3}, grid={"width": WIDTHS},
                               doc="variant row 'width, batch 1': depth 3, width 1 ... 256, 27 seeds"),
        "width_batch64": Preset(seeds=27, settings={**_VARIANT, "depth": 3, "batch_size": 64},
                                grid={"width": WIDTHS},
                                doc="variant row 'width, batch 64': depth 3, width 1 ... 256, 64 samples, 27 seeds"),
        "depth_batch64": Preset(seeds=3, settings={**_VARIANT, "batch_size": 64}, grid={"depth": VARIANT_DEPTHS},
                                doc="variant row 'depth, batch 64': the identity row with 64 samples"),
        "tp": Preset(seeds=3, settings=_VARIANT, grid={"depth": TP_DEPTHS},
                     doc="TP baseline, depths 1, 2, 4, 5, 3 seeds: run with --rule pc,bp,tp"),
    }
    measures = {
        "alignment": Measure((), "target alignment: cos(output change after one step, y - y_hat), batch mean",
                             "cosine"),
        "angle": Measure((), "angle between the output change and the target error, arccos(min(TA, 1))",
                         "degrees"),
        "relative_change": Measure((), "output change over target error, |dy_hat| / |y - y_hat|, batch mean",
                                   "ratio"),
    }
    main_measure = "alignment"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        validate_network(settings)

    @classmethod
    def check_rule_settings(cls, rule: str, settings: Mapping[str, Any]) -> None:
        if rule == "tp":  # exact-inverse TP needs a linear net: refused while planning, before anything is written
            check_linear(stack_network(settings["depth"], settings["width"], settings["activation"]))

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Weights, their gradients, the engine's copies and the latents (float64), generously."""
        n, w, b = settings["depth"], settings["width"], settings["batch_size"]
        return 8 * (8 * n * w * w + 16 * n * b * w) + 4096

    # ----------------------------------------------------------------------------------------------
    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        dt = self.torch_dtype()
        depth, width = s0["depth"], s0["width"]
        spec = stack_network(depth, width, s0["activation"])
        if rule == "tp":
            check_linear(spec)  # one line for a nonlinear net, before any work
        params = initial_weights(type(self), spec, seeds, s0["init"], s0["activation"], dt, device)
        x, y = sample_batch(type(self), seeds, s0["batch_size"], width, dt, device)
        before = forward(spec, params, x)
        if rule == "tp":
            lr = stack_settings(settings, "lr", dt, device)
            after = forward(spec, exact_inverse_tp_step(spec, params, x, y, lr), x)
        else:
            # PC with one layer has no value node and equals BP (spec §1.3)
            step_rule = "bp" if depth == 1 else rule
            config = pc_config(s0["T"], settings, dt, record="none")
            engine = Engine(*build_rule(step_rule, spec, config), params)
            engine.train_batch(x, y)
            after = engine.forward(x)
        change, error = after - before, y - before
        ta = cosine(change, error).mean(-1)
        angle = torch.rad2deg(torch.arccos(ta.clamp(-1.0, 1.0)))  # |TA| may pass 1 by rounding
        relative = (change.norm(dim=-1) / error.norm(dim=-1)).mean(-1)
        progress(1)
        return {"alignment": ta.cpu().numpy(), "angle": angle.cpu().numpy(), "relative_change": relative.cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @staticmethod
    def variant(settings: Mapping[str, Any], x_axis: str) -> str:
        """The spec §5 row a configuration reproduces (for the published values beside ours)."""
        if settings.get("init") == "orthogonal":
            return "orthogonal"
        if x_axis == "width":
            return "width_batch64" if settings.get("batch_size", 1) > 1 else "width_batch1"
        if settings.get("batch_size", 1) > 1:
            return "depth_batch64"
        if settings.get("activation") == "tanh":
            return "tanh"
        return "fig3e" if settings.get("T", 0) >= 512 else "identity"

    @staticmethod
    def _layout(ds) -> Tuple[str, List[Dict[str, Any]], Dict[str, Any]]:
        """(the x axis, the points of the other grid axes, the fixed settings)."""
        from pcneuro.results import grid_dims

        axes = grid_dims(ds)
        fixed = json.loads(ds.attrs["config"])["settings"]
        varied = [a for a in ("depth", "width") if a in axes and ds.sizes[a] > 1]  # a collapsed axis stays a dim
        x_axis = next(iter(varied or [a for a in ("depth", "width") if a in axes] or axes[:1]), "depth")
        points: List[Dict[str, Any]] = [{}]
        for axis in axes:
            if axis != x_axis:
                points = [{**p, axis: v.item()} for p in points for v in ds[axis].values]
        return x_axis, points, fixed

    @classmethod
    def summary_table(cls, ds) -> Optional[str]:
        x_axis, points, fixed = cls._layout(ds)
        rules = [str(r) for r in ds["rule"].values]
        n = ds.sizes["seed"]
        lines = [f"{cls.title}: mean ± SEM over {n} seeds [min .. max]; published means from spec §5 "
                 f"(read from figures, ±0.01)"]
        for point in points:
            settings = {**fixed, **point}
            variant = cls.variant(settings, x_axis)
            sub = ds["alignment"].sel(point) if point else ds["alignment"]
            head = [x_axis, *[f"{LABELS.get(r, r)}" for r in rules], *[f"published {LABELS.get(r, r)}" for r in rules]]
            rows = []
            xs = ds[x_axis].values if x_axis in ds.dims else [fixed.get(x_axis)]
            for xv in xs:
                row = [str(xv)]
                for r in rules:
                    cell = sub.sel(rule=r)
                    if x_axis in cell.dims:
                        cell = cell.sel({x_axis: xv})
                    v = cell.values.ravel()
                    sem = np.nanstd(v, ddof=1) / math.sqrt(len(v)) if len(v) > 1 else float("nan")
                    row.append(f"{np.nanmean(v):.3f} ± {sem:.3f} [{np.nanmin(v):.2f} .. {np.nanmax(v):.2f}]")
                for r in rules:
                    pub = published_mean(variant, r, xv)
                    row.append("" if pub is None else f"{pub:g}")
                rows.append(row)
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            fmt = lambda r: "  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip()  # noqa: E731
            where = ", ".join(f"{k}={v}" for k, v in point.items())
            desc = (f"variant '{variant}': activation {settings['activation']}, init {settings['init']}, "
                    f"width {settings.get('width', '-')}, batch {settings['batch_size']}, T {settings['T']}, "
                    f"lr {settings.get('lr', '-')}" + (f" ({where})" if where else ""))
            lines += ["", desc, fmt(head), *(fmt(r) for r in rows)]
            for key in (variant, "tp" if "tp" in rules else None):
                if key in PUBLISHED_NOTES:
                    lines.append("published: " + PUBLISHED_NOTES[key])
        return "\n".join(lines)

    @classmethod
    def summary_plot(cls, ds, path):
        return alignment_figure({"": ds}, path, f"{cls.title} (Song et al. 2024, fig 3e and variants; theory spec §5)")


def alignment_figure(datasets: Mapping[str, Any], path, title: str = "Target alignment after one step"):
    """Fig 3e-style panels: per-seed TA (dots) against depth (or width) per rule, the seed mean ± SEM
    (≈ bootstrap CI68, spec §1.5) as a line and band, published means as open squares on dotted lines.
    One panel per dataset (label -> results of this paradigm) and per point of its other grid axes,
    so several variants (e.g. the presets' results) can be drawn side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pcneuro.plotting import save_figure

    panels = []
    for label, ds in datasets.items():
        x_axis, points, fixed = TargetAlignment._layout(ds)
        for point in points:
            panels.append((label, ds, x_axis, point, {**fixed, **point}))
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(6.4, 4.8 * cols), 3.9 * rows + 0.4), squeeze=False)
    rng = np.random.default_rng(0)  # jitter of the dots only
    for ax, (label, ds, x_axis, point, settings) in zip(axes.ravel(), panels):
        variant = TargetAlignment.variant(settings, x_axis)
        da = ds["alignment"].sel(point) if point else ds["alignment"]
        xs = np.asarray(ds[x_axis].values if x_axis in da.dims else [settings[x_axis]], dtype=float)
        log_x = x_axis == "width"
        pos = np.log2(xs) if log_x else xs
        rules = [str(r) for r in ds["rule"].values]
        for k, rule in enumerate(rules):
            cell = da.sel(rule=rule)
            values = cell.transpose(*([x_axis] if x_axis in cell.dims else []), "seed").values.reshape(len(xs), -1)
            offset = (k - (len(rules) - 1) / 2) * 0.18
            for j in range(len(xs)):
                jitter = pos[j] + offset + rng.uniform(-0.06, 0.06, values.shape[1])
                ax.scatter(jitter, values[j], s=9, color=COLORS.get(rule, "C7"), alpha=0.45, linewidths=0)
            mean = np.nanmean(values, axis=1)
            sem = (np.nanstd(values, axis=1, ddof=1) / np.sqrt(values.shape[1]) if values.shape[1] > 1
                   else np.zeros_like(mean))
            ax.plot(pos + offset, mean, "-", color=COLORS.get(rule, "C7"), linewidth=1.5,
                    label=f"{LABELS.get(rule, rule)} (mean ± SEM)")
            ax.fill_between(pos + offset, mean - sem, mean + sem, color=COLORS.get(rule, "C7"), alpha=0.2)
            if variant == "fig3e":  # the published per-seed ranges, as thin bars beside the dots
                ranges = [(x, lohi) for x, lohi in sorted(FIG3E_RANGES.get(rule, {}).items()) if x in set(xs.tolist())]
                if len({lohi for _, lohi in ranges}) == 1 and len(ranges) > 2:  # one range at every depth: a band
                    (lo, hi), ends = ranges[0][1], [ranges[0][0], ranges[-1][0]]
                    ax.fill_between(ends, lo, hi, color=COLORS.get(rule, "C7"), alpha=0.08, linewidth=0,
                                    label=f"{LABELS.get(rule, rule)} published range")
                    ranges = []
                for j, (x, (lo, hi)) in enumerate(ranges):
                    label = f"{LABELS.get(rule, rule)} published range" if j == 0 else None
                    ax.plot([x + offset + 0.3] * 2, [lo, hi], color=COLORS.get(rule, "C7"), linewidth=2.5,
                            alpha=0.35, solid_capstyle="butt", label=label)
            shown = [(int(x), published_mean(variant, rule, x)) for x in xs]
            shown = [(x, v) for x, v in shown if v is not None]
            if shown:
                px = np.array([x for x, _ in shown], dtype=float)
                style = ":s" if len(shown) > 2 else "s"  # endpoints alone are not joined
                ax.plot(np.log2(px) if log_x else px, [v for _, v in shown], style, color=COLORS.get(rule, "C7"),
                        markerfacecolor="none", markersize=6, linewidth=0.9,
                        label=f"{LABELS.get(rule, rule)} published")
        ax.axhline(1.0, color="0.6", linewidth=0.6)
        ax.axhline(0.0, color="0.8", linewidth=0.6)
        if log_x:
            ax.set_xticks(pos)
            ax.set_xticklabels([str(int(v)) for v in xs])
        ax.set_xlabel("width (input = hidden = output)" if x_axis == "width" else "depth (weight layers)")
        ax.set_ylabel("target alignment (cos)")
        where = ", ".join(f"{k}={v}" for k, v in point.items())
        name = f"{label}: " if label and label != variant else ""
        ax.set_title(f"{name}{variant}: {settings['activation']}, {settings['init']}, batch {settings['batch_size']}, "
                     f"T {settings['T']}" + (f"\n{where}" if where else ""), fontsize=8)
        ax.legend(fontsize=6, loc="lower left")
    for ax in axes.ravel()[len(panels):]:
        ax.set_visible(False)
    width = int(fig.get_figwidth() * 12)  # characters that fit across the figure at this font size
    fig.suptitle(textwrap.fill(title, width), fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["TargetAlignment", "GAINS", "PUBLISHED", "stack_network", "initial_weights", "sample_batch", "cosine",
           "pc_config", "alignment_figure"]
