"""Fear conditioning: recovery from overshadowing by extinction of the overshadowing stimulus.

Experiment: rats, Matzel, Schachtman & Miller (1985), *Learning and Motivation* (inferred by the
specification); simulated in Song et al. (2024), *Nature Neuroscience*, the overshadowing panel of
the behaviour figure. Two cues, L and N. Group N+ has N paired with shock; groups LN+ and LN+,L-
have the compound LN paired with shock, and LN+,L- then has L extinguished alone. Fear to N is high
after N+, low after LN+ (overshadowing) and recovers after LN+,L-.

Protocol (specs/behaviour.md §1): 32 conditioning then 32 extinction trials, one learning step per
trial. The input is [L, N] with a present cue at ``intensity`` (default 1) and an absent one at 0;
targets are 1 (shock) and 0. After every trial's learning step the read-out ``fear_to_N`` is the
feed-forward output for [0, intensity]. Network: u → W_lo → value node → W_up → out, linear, no
biases. W_lo is cue-specific perception (the first half of the hidden units sees L, the second
half N; cross entries are structural zeros), initialised to 1.0; W_up entries start at
|N(0.1, init_sd²)|. Three SGD groups: ``lr_perception`` (W_lo), ``lr_mix_L`` and ``lr_mix_N`` (the
W_up entries reading the L and the N half). PC: T = 200 inference steps, latent lr 0.5 with
discount 0.5, weights stepped once at the last step; BP: one SGD step per trial.

Mechanism. Under BP, L-alone trials leave h_N = 0, so m_N and p_N get exactly zero gradient and
fear to N after LN+,L- equals LN+. Under PC the output error pushes the N latent below 0 through
m_N > 0, so Δm_N = −lr·e·h_N > 0 and fear to N recovers.

Departures from the reference implementation (behaviour spec §1.7):
  * the fully connected variant (``fully_connected=True``) runs every group with both rules and any
    grid (the reference left it in a debug state: one seed, one group, PC only);
  * a seed fixes the W_up draw, shared by the three groups and by PC and BP (a paired design);
  * BP's fit degeneracy and the signed-k tie-break concern fitting, not simulation (see pcneuro.fits).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import torch

from pcneuro.engine import Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule
from pcneuro.paradigm import FitSpec, Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.registry import register

GROUPS = ("N+", "LN+", "LN+,L-")
# (conditioning input, extinction input) per group, as which cues are present: (L, N)
_SCHEDULE = {
    "N+": ((0, 1), (0, 0)),
    "LN+": ((1, 1), (0, 0)),
    "LN+,L-": ((1, 1), (1, 0)),
}
LEARNING_RATES = (1.0, 0.1, 0.01, 0.001)
INIT_SDS = (0.5, 0.1, 0.05, 0.01)  # the spec's init_sd sweep (§1.3)
HIDDEN_SIZES = (2, 4, 8, 16)  # the spec's n_hidden sweep (§1.3)
_LR_GRID = {"lr_perception": LEARNING_RATES, "lr_mix_L": LEARNING_RATES, "lr_mix_N": LEARNING_RATES}


@register
class FearConditioning(Paradigm):
    name = "fear_conditioning"
    title = "Fear conditioning: recovery from overshadowing"
    tags = ("behaviour", "conditioning", "rat")
    citation = ("Song et al. (2024) Nat Neurosci; experiment: Matzel, Schachtman & Miller (1985) "
                "Learning and Motivation")
    figure = "Song et al. 2024, behaviour figure, overshadowing panel"
    version = "1"
    rules = ("pc", "bp")
    hyperparameters = {
        "lr_perception": Hyper(0.001, "learning rate of the perception weights W_lo", min=0.0),
        "lr_mix_L": Hyper(0.001, "learning rate of the W_up entries reading the L units", min=0.0),
        "lr_mix_N": Hyper(1.0, "learning rate of the W_up entries reading the N units", min=0.0),
        "init_sd": Hyper(0.01, "sd of the |N(0.1, sd^2)| draw of the W_up entries", min=0.0),
        "intensity": Hyper(1.0, "input intensity of a present cue", min=0.0),
        "n_hidden": Hyper(2, "hidden units (half per cue); must be even", type=int, min=2, structural=True),
        "fully_connected": Hyper(False, "every hidden unit sees both cues (no structural zeros)", type=bool,
                                 structural=True),
        "n_conditioning": Hyper(32, "conditioning trials", type=int, min=1, structural=True),
        "n_extinction": Hyper(32, "extinction trials", type=int, min=0, structural=True),
        "T": Hyper(200, "PC inference steps per trial", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.5, "PC starting latent learning rate", min=0.0),
        "latent_lr_discount": Hyper(0.5, "PC latent-lr discount when F does not decrease", min=1e-12, max=1.0),
    }
    grid = {"lr_perception": LEARNING_RATES, "lr_mix_L": LEARNING_RATES, "lr_mix_N": LEARNING_RATES}
    presets = {
        "quick": Preset(seeds=2, grid={"lr_perception": (0.1, 0.001), "lr_mix_L": (0.1, 0.001),
                                       "lr_mix_N": (1.0, 0.01)},
                        doc="8 grid points x 2 seeds, for tests and a first look"),
        "paper": Preset(seeds=100, doc="the published grid (64 lr points) with 100 seeds per point"),
        "init_sd_sweep": Preset(grid={**_LR_GRID, "init_sd": INIT_SDS},
                                doc="the lr grid x init_sd in {0.5, 0.1, 0.05, 0.01} (spec §1.3 sweep; "
                                    "the reference fitted each init_sd separately: see the fit's profile)"),
        "hidden_sweep": Preset(grid={**_LR_GRID, "n_hidden": HIDDEN_SIZES},
                               doc="the lr grid x n_hidden in {2, 4, 8, 16} (spec §1.3 sweep)"),
        "fully_connected": Preset(settings={"fully_connected": True},
                                  doc="every hidden unit sees both cues (spec §1.3 variant), the lr grid, "
                                      "both rules and all groups"),
    }
    default_seeds = 8
    measures = {
        "fear_to_N": Measure(("group", "trial"), "fear to N: feed-forward output for the N cue after each trial",
                             "arbitrary units (raw network output)"),
    }
    main_measure = "fear_to_N"
    summary_isel = {"trial": -1}
    figure_x = "trial"
    figure_point = {"lr_perception": 0.001, "lr_mix_L": 0.001, "lr_mix_N": 1.0}  # the spec's PC config
    dataset = "fear_conditioning"
    fit = FitSpec(measure="fear_to_N", conditions=("group",), readout="affine", isel={"trial": -1},
                  dataset="fear_conditioning", search=("lr_perception", "lr_mix_L", "lr_mix_N"))

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["n_hidden"] % 2:
            raise ValueError(f"n_hidden={settings['n_hidden']} must be even (half the hidden units per cue)")

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Per run three tiny networks (one per group) and their 64-trial record: 64 KiB is generous
        (the paper preset's 6,400 runs per rule are one program)."""
        return 64 * 1024

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"group": list(GROUPS), "trial": list(range(settings["n_conditioning"] + settings["n_extinction"]))}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return settings["n_conditioning"] + settings["n_extinction"]

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def network(n_hidden: int, fully_connected: bool) -> NetworkSpec:
        half = n_hidden // 2
        mask = None if fully_connected else tuple((1.0, 0.0) if i < half else (0.0, 1.0) for i in range(n_hidden))
        return NetworkSpec((Linear(2, n_hidden, bias=False, mask=mask), Linear(n_hidden, 1, bias=False)), "pre")

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        H, G = s0["n_hidden"], len(GROUPS)
        n = len(settings)
        R = n * G  # engine runs: run-major, group-minor
        dt = self.torch_dtype()
        spec = self.network(H, s0["fully_connected"])

        def expand(key, where=device):  # one value per engine run
            return stack_settings(settings, key, dt, where).repeat_interleave(G)

        def host(key):  # the training configuration takes host values; the engine moves them
            return expand(key, "cpu")

        # parameters: perception 1.0 on allowed entries; W_up = |N(0.1, init_sd^2)| from the seed's stream
        w_lo = torch.ones(R, H, 2, dtype=dt, device=device)
        draws = torch.stack([torch.randn(1, H, generator=self.generator(seed, "init_w_up"), dtype=dt)
                             for seed in seeds]).to(device)
        w_up = (0.1 + draws * stack_settings(settings, "init_sd", dt, device).reshape(n, 1, 1)).abs()
        params = {"0.weight": w_lo, "1.weight": w_up.repeat_interleave(G, dim=0)}
        if spec.layers[0].mask is not None:
            params["0.weight"] = params["0.weight"] * torch.tensor(spec.layers[0].mask, dtype=dt, device=device)

        half = H // 2
        lr_mix = torch.cat([host("lr_mix_L").reshape(R, 1, 1).expand(R, 1, half),
                            host("lr_mix_N").reshape(R, 1, 1).expand(R, 1, H - half)], dim=2)
        config = TrainConfig(
            T=s0["T"],
            weight_opt=SGD(lr={"0.weight": host("lr_perception"), "1.weight": lr_mix}),
            latent_opt=LatentSGD(lr=host("latent_lr")),
            lr_decay=host("latent_lr_discount"),
            lr_growth=1.0,
            record="none",
        )
        spec, config = build_rule(rule, spec, config)
        engine = Engine(spec, config, params)

        intensity = expand("intensity").reshape(R, 1, 1)
        phases = []
        for p in range(2):
            cues = torch.tensor([_SCHEDULE[g][p] for g in GROUPS], dtype=dt, device=device)  # [G, 2]
            phases.append(cues.repeat(n, 1).reshape(R, 1, 2) * intensity)
        shock = torch.ones(R, 1, 1, dtype=dt, device=device)
        no_shock = torch.zeros(R, 1, 1, dtype=dt, device=device)
        probe = torch.zeros(R, 1, 2, dtype=dt, device=device)
        probe[:, :, 1] = intensity[:, :, 0]

        n_trials = s0["n_conditioning"] + s0["n_extinction"]
        fear = torch.empty(R, n_trials, dtype=dt, device=device)
        for trial in range(n_trials):
            conditioning = trial < s0["n_conditioning"]
            engine.train_batch(phases[0] if conditioning else phases[1], shock if conditioning else no_shock)
            fear[:, trial] = engine.forward(probe)[:, 0, 0]
            progress(1)
        return {"fear_to_N": fear.reshape(n, G, n_trials).cpu().numpy()}
