"""Prospective index per layer: PC's learning moves each layer's activity towards the activity it
inferred beforehand (infer first, then consolidate).

Theory spec §6 (P4), Song et al. (2024), *Nature Neuroscience* (the prospective-index panels).

Claim. In PC, the change of every hidden layer's feed-forward activity that learning produces points
along the change inference had already made, x* − x̄: the network first settles into the
configuration it should have after learning, and the weights then consolidate it.

Measure (spec §2). For layer l (value node, pre-activation), PI_l = cos(x̄_l(W′) − x̄_l(W), x*_l − x̄_l(W)),
a mean of per-sample cosines over the batch: x̄ the feed-forward activity under the old (W) and new (W′)
weights, x* the activity inferred with input and target clamped, read from the engine's record of the
latents (``TrainConfig(record_latents="last")``, ``BatchRecord.latents``). Layers are numbered
1 … depth: l = 1 … depth − 1 are the hidden value nodes x_1 … x_{N−1} (§1.1), l = depth is the
output, where x* = y and PI is the target alignment (§2). ``relative_change`` is
‖x̄_l(W′) − x̄_l(W)‖ / ‖x*_l − x̄_l(W)‖ (1: learning reproduced the inferred change in full).

Protocols (spec §6; one batch, default one sample; input and target ~ N(0, I) of the width):
* ``A`` (default; fig: hidden layers, 5 seeds): depth 6, width 64, identity, xavier_normal g = 1. The
  latents update at t = 0 … ``inference_steps`` − 1 (η_x 0.1, discount 0.5 when the energy does not
  decrease) and then stay frozen; the weights take ``weight_steps`` SGD steps (η_w 0.01) at
  t = ``inference_steps`` … on the energy at those latents: 1 step gives W′, 100 steps (≈ converged)
  W*. x* = the latents after the inference steps. The spec numbers the hidden layers 0 … 4; they are
  layers 1 … 5 here.
* ``B`` (with the output; 3 seeds): the default PC step (§1.3), T = ``inference_steps`` = 128, weights
  once at t = T − 1, x* the latents after all T updates (spec §10 #9), xavier_uniform, identity or
  sigmoid, η_w ∈ {0.1, 0.001}.

PC only (BP infers nothing, so it has no x*). All seeds and learning rates of one structural setting
share the run axis; each seed draws its sample and weights from its own streams (the same helpers as
``target_alignment``).

Departures: none from the protocol; the samples and weights come from pcneuro's per-seed streams.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from pcneuro.engine import Engine, NetworkSpec, build_rule
from pcneuro.engine import activations
from pcneuro.engine.network import Activation, Linear
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset
from pcneuro.paradigms.target_alignment import (ACTIVATIONS, INITS, cosine, initial_weights, pc_config, sample_batch,
                                                stack_network)
from pcneuro.registry import register

PROTOCOLS = ("A", "B")
#: published values (spec §6 targets, read from figures) by (protocol, activation, lr, one step?), per layer
#: 1 … depth; a (low, high) pair is a published range, None where nothing is published
PUBLISHED: Dict[Tuple[str, str, float, bool], Tuple[Any, ...]] = {
    ("A", "identity", 0.01, True): (1.0, 0.999, (0.993, 1.0), (0.988, 0.997), (0.969, 0.990), None),
    ("A", "identity", 0.01, False): ((0.999, 1.0),) * 5 + (None,),
    ("B", "identity", 0.001, True): (1.0, 0.999, 0.999, 0.997, 0.985, 0.917),
    ("B", "identity", 0.1, True): (1.0, 0.996, 0.992, 0.987, 0.978, 0.962),
    ("B", "sigmoid", 0.001, True): (1.0, 0.994, 1.0, 1.0, 1.0, 1.0),
    ("B", "sigmoid", 0.1, True): (1.0, 0.994, 1.0, 1.0, 1.0, 1.0),
}


def node_activity(spec: NetworkSpec, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> List[torch.Tensor]:
    """Feed-forward activity at every value node (pre-activation) and at the output: [R, B, n] each,
    for a stack of Linear layers (no biases) and activations with x [R, B, in]."""
    out, h = [], x
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Linear):
            h = torch.matmul(h, params[f"{i}.weight"].transpose(1, 2))
            out.append(h)
        elif isinstance(layer, Activation):
            h = activations.apply(layer.name, h)
    return out


@register
class ProspectiveIndex(Paradigm):
    name = "prospective_index"
    title = "Prospective index per layer (PC)"
    tags = ("theory", "prospective", "layers")
    citation = "Song et al. (2024) Nat Neurosci, prospective index (theory spec §6)"
    figure = "Song et al. 2024, prospective index per layer: one weight step vs converged weights"
    version = "1"
    rules = ("pc",)
    hyperparameters = {
        "protocol": Hyper("A", "A: infer, freeze the latents, then weight_steps weight steps; B: the default "
                          "PC step (weights once at the last inference step, x* after all of them)", type=str,
                          choices=PROTOCOLS, structural=True),
        "depth": Hyper(6, "number of weight layers N (N - 1 hidden value nodes; at least 2)", type=int, min=2,
                       structural=True),
        "width": Hyper(64, "units of the input, every hidden layer and the output", type=int, min=1,
                       structural=True),
        "batch_size": Hyper(1, "samples in the one batch (PI is the mean of per-sample cosines)", type=int, min=1,
                            structural=True),
        "activation": Hyper("identity", "nonlinearity phi between the layers (gain from spec §1.4)", type=str,
                            choices=ACTIVATIONS, structural=True),
        "init": Hyper("xavier_normal", "initial weights (times the activation's gain)", type=str,
                      choices=tuple(INITS), structural=True),
        "lr": Hyper(0.01, "weight learning rate eta_w", min=0.0),
        "inference_steps": Hyper(100, "latent updates before learning (protocol B: T, the last one concurrent "
                                 "with the weight step); at least depth", type=int, min=1, structural=True),
        "weight_steps": Hyper(1, "weight steps at the inferred latents (protocol A; 1: W', 100: ~converged W*)",
                              type=int, min=1, structural=True),
        "latent_lr": Hyper(0.1, "starting latent learning rate eta_x", min=0.0),
        "latent_discount": Hyper(0.5, "factor d on eta_x when the energy does not decrease", min=1e-12, max=1.0),
    }
    grid = {"weight_steps": (1, 100)}
    default_seeds = 5
    presets = {
        "quick": Preset(seeds=3, grid={"weight_steps": (1, 30)},
                        doc="protocol A with 1 and 30 weight steps, 3 seeds"),
        "paper": Preset(seeds=5, grid={"weight_steps": (1, 100)},
                        doc="protocol A: one weight step (W') and 100 (~converged W*), 5 seeds"),
        "protocol_b": Preset(seeds=3, settings={"protocol": "B", "init": "xavier_uniform", "inference_steps": 128,
                                                "weight_steps": 1},
                             grid={"activation": ("identity", "sigmoid"), "lr": (0.1, 0.001)},
                             doc="protocol B: the default PC step with T = 128, identity and sigmoid, "
                                 "lr 0.1 and 0.001, 3 seeds"),
    }
    measures = {
        "prospective_index": Measure(("layer",), "prospective index cos(x_bar(W') - x_bar(W), x* - x_bar(W)), "
                                     "batch mean", "cosine"),
        "relative_change": Measure(("layer",), "|x_bar(W') - x_bar(W)| / |x* - x_bar(W)|, batch mean", "ratio"),
    }
    main_measure = "prospective_index"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["inference_steps"] < settings["depth"]:
            raise ValueError(f"inference_steps={settings['inference_steps']} is below depth={settings['depth']}: "
                             f"the error reaches the first hidden layer after depth-2 latent steps and the first "
                             f"weight layer after depth-1 (spec §1.2)")
        if settings["protocol"] == "B" and settings["weight_steps"] != 1:
            raise ValueError(f"weight_steps={settings['weight_steps']}: protocol B takes one weight step "
                             f"(at the last inference step); use protocol A for more")

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"layer": list(range(1, settings["depth"] + 1))}

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        n, w, b = settings["depth"], settings["width"], settings["batch_size"]
        return 8 * (8 * n * w * w + 16 * n * b * w) + 4096

    # ----------------------------------------------------------------------------------------------
    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        dt = self.torch_dtype()
        spec = stack_network(s0["depth"], s0["width"], s0["activation"])
        params = initial_weights(type(self), spec, seeds, s0["init"], s0["activation"], dt, device)
        x, y = sample_batch(type(self), seeds, s0["batch_size"], s0["width"], dt, device)
        before = node_activity(spec, params, x)
        n_infer, n_weight = s0["inference_steps"], s0["weight_steps"]
        if s0["protocol"] == "A":  # latents at t < I, then frozen; weights at t = I … I + K − 1
            config = pc_config(n_infer + n_weight, settings, dt, latent_steps=list(range(n_infer)),
                               weight_steps=list(range(n_infer, n_infer + n_weight)), record="none",
                               record_latents="last")
        else:  # the default PC step: weights once at t = T − 1; x* after all T latent updates
            spec, config = build_rule(rule, spec, pc_config(n_infer, settings, dt, record="none",
                                                            record_latents="last"))
        engine = Engine(spec, config, params)
        record = engine.train_batch(x, y)
        inferred = [*record.latents, y]  # at the output x* = y (PI = TA)
        after = node_activity(spec, engine.params, x)
        pi, ratio = [], []
        for old, new, star in zip(before, after, inferred):
            learned, wanted = new - old, star - old
            pi.append(cosine(learned, wanted).mean(-1))
            ratio.append((learned.norm(dim=-1) / wanted.norm(dim=-1)).mean(-1))
        progress(1)
        return {"prospective_index": torch.stack(pi, 1).cpu().numpy(),
                "relative_change": torch.stack(ratio, 1).cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @staticmethod
    def _series(ds) -> List[Tuple[str, Dict[str, Any], Dict[str, Any]]]:
        """(label, grid point, settings) per grid point of the results."""
        from pcneuro.results import grid_dims

        fixed = json.loads(ds.attrs["config"])["settings"]
        points: List[Dict[str, Any]] = [{}]
        for axis in grid_dims(ds):
            points = [{**p, axis: v.item()} for p in points for v in ds[axis].values]
        out = []
        for point in points:
            s = {**fixed, **point}
            if s["protocol"] == "A":
                label = f"{s['weight_steps']} weight step" + ("" if s["weight_steps"] == 1 else "s")
            else:
                label = f"{s['activation']}, lr {s['lr']:g}"
            extra = [f"{k}={v}" for k, v in point.items() if k not in ("weight_steps", "activation", "lr")]
            out.append((label + (f" ({', '.join(extra)})" if extra else ""), point, s))
        return out

    @staticmethod
    def published(settings: Mapping[str, Any]) -> Optional[Tuple[Any, ...]]:
        """The spec §6 targets for this configuration, per layer 1 … depth (None: nothing published)."""
        if settings["depth"] != 6 or settings["width"] != 64 or settings["batch_size"] != 1:
            return None
        return PUBLISHED.get((settings["protocol"], settings["activation"], float(settings["lr"]),
                              settings["weight_steps"] == 1))

    @classmethod
    def summary_table(cls, ds) -> Optional[str]:
        n = ds.sizes["seed"]
        layers = [int(v) for v in ds["layer"].values]
        lines = [f"{cls.title}: mean [min .. max] over {n} seeds per layer (layer {layers[-1]} = output, PI = TA); "
                 f"published: spec §6 (read from figures)"]
        for label, point, s in cls._series(ds):
            da = ds["prospective_index"].sel(rule="pc")
            da = da.sel(point) if point else da
            pub = cls.published(s)
            head = ["layer", "PI", "relative change", "published"]
            rows = []
            for j, layer in enumerate(layers):
                v = da.sel(layer=layer).values.ravel()
                r = ds["relative_change"].sel(rule="pc")
                r = (r.sel(point) if point else r).sel(layer=layer).values.ravel()
                p = "" if pub is None or pub[j] is None else (
                    f"{pub[j][0]:g}-{pub[j][1]:g}" if isinstance(pub[j], tuple) else f"{pub[j]:g}")
                rows.append([f"{layer}" + (" (out)" if j == len(layers) - 1 else ""),
                             f"{np.nanmean(v):.4f} [{np.nanmin(v):.4f} .. {np.nanmax(v):.4f}]",
                             f"{np.nanmean(r):.3f}", p])
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            fmt = lambda r: "  ".join(c.ljust(wd) for c, wd in zip(r, widths)).rstrip()  # noqa: E731
            desc = (f"protocol {s['protocol']}, {label}: depth {s['depth']}, width {s['width']}, {s['activation']}, "
                    f"{s['init']}, lr {s['lr']:g}, {s['inference_steps']} inference steps")
            lines += ["", desc, fmt(head), *(fmt(r) for r in rows)]
        return "\n".join(lines)

    @classmethod
    def summary_plot(cls, ds, path):
        """Strip plot of PI per layer (dots: seeds; bar: seed mean), one colour per grid point; published
        values as black open diamonds (ranges as black bars)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pcneuro.plotting import save_figure

        series = cls._series(ds)
        layers = np.array([int(v) for v in ds["layer"].values])
        fig, ax = plt.subplots(figsize=(min(10.0, max(6.0, 1.1 * len(layers) * len(series) ** 0.5)), 4.2))
        width = 0.8 / len(series)
        rng = np.random.default_rng(0)  # jitter of the dots only
        lowest, drawn = 1.0, set()
        for k, (label, point, s) in enumerate(series):
            da = ds["prospective_index"].sel(rule="pc")
            da = da.sel(point) if point else da
            values = da.transpose("layer", "seed").values
            pos = layers + (k - (len(series) - 1) / 2) * width
            color = f"C{k}"
            ax.bar(pos, np.nanmean(values, 1) - 0.0, width=width * 0.9, bottom=0.0, color=color, alpha=0.25)
            for j in range(len(layers)):
                ax.scatter(pos[j] + rng.uniform(-width / 4, width / 4, values.shape[1]), values[j], s=14,
                           color=color, zorder=3, label=label if j == 0 else None)
            lowest = min(lowest, float(np.nanmin(values)))
            pub = cls.published(s)
            for j, p in enumerate(pub or ()):
                if p is None:
                    continue
                kind = "range" if isinstance(p, tuple) else "value"
                label = None if kind in drawn else f"published {'range ' if kind == 'range' else ''}(spec §6)"
                drawn.add(kind)
                if kind == "range":
                    ax.plot([pos[j], pos[j]], p, color="k", linewidth=2.2, zorder=4, label=label)
                else:
                    ax.scatter([pos[j]], [p], marker="D", facecolors="none", edgecolors="k", s=36, zorder=4,
                               label=label)
                lowest = min(lowest, p[0] if kind == "range" else p)
        ax.set_xticks(layers)
        ax.set_xticklabels([f"{l}" if l < layers[-1] else f"{l}\n(output)" for l in layers])
        span = 1.0 - lowest
        ax.set_ylim(max(-1.0, lowest - 0.15 * span - 1e-3), 1.0 + 0.08 * span + 1e-3)
        ax.set_xlabel("layer (value node x_l; last = output, PI = target alignment)")
        ax.set_ylabel("prospective index (cos)")
        ax.legend(fontsize=7, loc="lower left")
        s0 = series[0][2]
        ax.set_title(f"{cls.title}: protocol {s0['protocol']}, depth {s0['depth']}, width {s0['width']}, "
                     f"{ds.sizes['seed']} seeds (Song et al. 2024; theory spec §6)", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, path)


__all__ = ["ProspectiveIndex", "PUBLISHED", "node_activity"]
