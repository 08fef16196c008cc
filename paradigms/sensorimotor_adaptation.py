"""COIN-like sensorimotor adaptation with contextual cues (specs/behaviour.md §2).

Experiment: humans reaching in a robotic manipulandum, Heald, Lengyel, Flanagan & Wolpert (2021),
*Nature*, Fig. 3 (inferred by the specification); simulated in Song et al. (2024), *Nature
Neuroscience*, Fig. 5f. Two colour cues; training pairs cue 1 with force field P⁺ and cue 2 with
P⁻. Triplets channel(cue 1) → exposure → channel(cue 1) measure the change in adaptation to the
exposure's field, signed in its direction. Published pattern: 1+ > 2+ > 1- > 2-, i.e. a cue-2 P⁺
exposure transfers strongly to cue 1.

Protocol (spec §2.2, the intended protocol; trial labels as in the spec):
  * encoding: cue 1 → input [1, 0], cue 2 → [0, 1]; field + → target [1, 0], − → [0, 1], 0 (null
    and channel trials) → [0, 0]. "10"/"20" = cue 1/2 with target 0; "1+", "2+", "1-", "2-" =
    cue × field. Every trial is one learning step on ½Σ(out − target)² (batch 1);
  * wash(S): n drawn from S without replacement from a persistent pool (one per slot: pre-training
    {8,10,12}, training {14,16,18} and {6,8,10}, post-training {2,4,6}), refilled when empty;
    then n/2 × "10" and n/2 × "20", shuffled;
  * pre-training: ``n_pre_blocks`` (16) blocks of wash({8,10,12}) + triplet [10, E, 10]; each of
    the 4 exposures once per 4 blocks (a random order per group of 4);
  * training, ``n_training_blocks`` (24) blocks of: [10, 20] shuffled; 4 shuffled passes of
    (4 × 1+, 4 × 2-); [10, 20] shuffled; wash({14,16,18}); triplet [10, E₁, 10] with E₁ ∈ {1+, 2-}
    at random; wash({6,8,10}); triplet [10, E₂, 10] with the other;
  * post-training, ``n_post_rounds`` (8) rounds, each the 4 exposures in random order, each as
    wash({2,4,6}) + triplet [10, E, 10];
  * measure (post-training only): y₁, y₃ = the feed-forward output for the cue-1 input [1, 0] (a
    probe, never inference) before the learning step of triplet trials 1 and 3; Δ = y₃ − y₁;
    adaptation = Δ₀ − Δ₁ for + exposures, Δ₁ − Δ₀ for − exposures. ``adaptation`` is the mean over
    rounds per exposure (1+, 2+, 1-, 2-), ``adaptation_per_round`` each round's value.

Network (spec §2.3): u → Linear(2 → n_hidden, no bias) → value node → Linear(n_hidden → 2, no bias)
→ out. Both matrices N(0, init_sd²): the standard normals come from the seed's "init" stream and
are scaled by the run's ``init_sd``, so all settings and both rules of a seed share them. The clamp
W_lo[first half, cue 2] = W_lo[second half, cue 1] = 0 is a structural-zero mask of the engine
(held after init and every step); ``fully_connected=True`` drops it. SGD groups ``lr_in`` (W_lo)
and ``lr_out`` (W_up). PC: T = 256 inference steps, latent lr 0.1 with discount 0.9, weights
stepped once at the last step; BP: one SGD step per trial.

Mechanism (spec §2.6). Under BP a cue-2 trial leaves hidden unit 0 (the cue-1 unit) at exactly 0,
so the cue-1 pathway (W_lo[0, 0], W_up[:, 0]) gets exactly zero gradient: a cue-2 exposure
cannot change the cue-1 output, and 2+ and 2- show no adaptation beyond what the first channel
trial's own learning step causes (none at all with ``learn_channel_trials=False``). Under PC the
output error of a cue-2 exposure is explained partly by moving the cue-1 latent off 0 (through
W_up[:, 0], which training aligned with field +), so W_up[:, 0] learns and the cue-1 output
moves: 2+ transfers to cue 1 (inferred by the specification).

Simulation. All runs of one rule that share the structural settings are stacked on the engine's
run axis. Each seed's trial sequence comes from its own "protocol" stream (host side, seed only:
PC, BP and every setting of a seed see the same sequence, a paired design) and becomes per-run
input/target tensors [n_trials, R, 1, 2] built once. Sequences differ in length between seeds
(the pools), so shorter ones are padded at the end with no-op trials. A no-op trial (padding, and
the channel trials of runs with ``learn_channel_trials=False``) is an all-zero input and target:
every gradient (BP, and PC's latent and weight gradients, since μ = x = out = y = 0) is then
exactly 0, so plain SGD leaves every weight exactly unchanged (the engine's output mask is not
used). The trial tensors take 2 × 8 bytes × 2 × n_trials × R (≈ 0.7 GB for the whole default grid
of one rule: R = 10368, ~2020 trials). The probe outputs are recorded into a device buffer from the
first trial at which any run's post-training starts, and gathered per run at its triplet indices
after the loop.

Departures from the reference implementation and decisions (spec §2.7):
  1. training triplets: the reference re-ran each block's preceding washout instead of a triplet
     (same n reshuffled, no new pool draw), so its block was [10,20] + 32 field trials + [10,20] +
     2 × wash(n₁) + 2 × wash(n₂). Here the blocks have real triplets; ``reference_compat=True``
     reproduces exactly the reference's block (and item 2);
  2. pre-training was omitted in the reference; it is run here (not under ``reference_compat``);
  3. channel trials are simulated as null trials (cue 1, target 0) that learn, an explicit
     assumption; ``learn_channel_trials=False`` makes the channel trials (1st and 3rd of every
     triplet, all phases) no-ops; their probe outputs are still measured;
  4. the experiment's counterbalancing is replaced by random shuffles (exposure order per group of
     4 blocks / per round, E₁ per training block, trial order within washes and field passes);
     kept as in the reference and documented here;
  5. ``init_sd`` 1.0 is in the default grid (the spec's table) although it may be absent from the
     published table: fits should be reported with and without it (a fitting concern);
  6. the recorded data's −0.0 category is 0.0 (4 conditions, counts 25/23/26/22): a concern of the
     dataset loader and the fit, not of the simulation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from pcneuro.engine import Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule
from pcneuro.paradigm import FitSpec, Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.registry import register

EXPOSURES = ("1+", "2+", "1-", "2-")
#: sign of adaptation = sign · (Δ₀ − Δ₁) per exposure (+ fields: Δ₀ − Δ₁; − fields: Δ₁ − Δ₀)
_SIGN = (1.0, 1.0, -1.0, -1.0)
#: washout pools per slot (spec §2.2)
POOLS = {"pre": (8, 10, 12), "training_1": (14, 16, 18), "training_2": (6, 8, 10), "post": (2, 4, 6)}
#: trial kinds, coded by position: a no-op, the two null trials, a channel trial, the 4 exposures
KINDS = ("noop", "10", "20", "channel", *EXPOSURES)
_INPUT = {"noop": (0, 0), "10": (1, 0), "20": (0, 1), "channel": (1, 0),
          "1+": (1, 0), "2+": (0, 1), "1-": (1, 0), "2-": (0, 1)}
_TARGET = {"noop": (0, 0), "10": (0, 0), "20": (0, 0), "channel": (0, 0),
           "1+": (1, 0), "2+": (1, 0), "1-": (0, 1), "2-": (0, 1)}
_CODE = {k: i for i, k in enumerate(KINDS)}
PROBE = (1.0, 0.0)  # the cue-1 input

INIT_SDS = (1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
LRS_IN = (0.5, 0.1, 0.05, 0.01, 0.005, 0.001, 0.0005, 0.0001, 5e-5, 1e-5, 5e-6, 1e-6)
LRS_OUT = (0.1, 0.05, 0.01, 0.005, 0.001, 0.0005)


# --------------------------------------------------------------------------------------------------
# the protocol (host side, one per seed)


@dataclass(frozen=True)
class Triplet:
    """A triplet [10, E, 10] starting at trial ``start`` (its channel trials: start and start + 2)."""

    start: int
    exposure: str
    phase: str  # "pre", "training" or "post"
    block: int  # block (pre, training) or round (post) within the phase


@dataclass(frozen=True)
class Protocol:
    """One seed's trial sequence.

    ``trials``: labels "10", "20", "1+", "2+", "1-", "2-" (channel trials are "10");
    ``channel``: whether each trial is the 1st or 3rd trial of a triplet; ``phase``/``block``: where
    each trial sits; ``triplets``: all triplets in order; ``wash_draws``: per pool slot, the washout
    lengths drawn from it, in order (the reference_compat repeats are not draws).
    """

    trials: Tuple[str, ...]
    channel: Tuple[bool, ...]
    phase: Tuple[str, ...]
    block: Tuple[int, ...]
    triplets: Tuple[Triplet, ...]
    wash_draws: Mapping[str, Tuple[int, ...]]

    def __len__(self) -> int:
        return len(self.trials)

    def codes(self, learn_channel_trials: bool = True) -> np.ndarray:
        """Trial kinds as indices into :data:`KINDS`; unlearned channel trials become no-ops."""
        out = np.empty(len(self.trials), dtype=np.int64)
        for i, (label, is_channel) in enumerate(zip(self.trials, self.channel)):
            kind = ("channel" if learn_channel_trials else "noop") if is_channel else label
            out[i] = _CODE[kind]
        return out

    def post_triplet_starts(self) -> np.ndarray:
        """[4 exposures (EXPOSURES order), rounds] start indices of the post-training triplets."""
        post = [t for t in self.triplets if t.phase == "post"]
        n_rounds = 1 + max(t.block for t in post)
        out = np.full((len(EXPOSURES), n_rounds), -1, dtype=np.int64)
        for t in post:
            out[EXPOSURES.index(t.exposure), t.block] = t.start
        return out


class _Stream:
    """Host-side random draws from one torch generator."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def shuffled(self, items: Sequence[Any]) -> List[Any]:
        order = torch.randperm(len(items), generator=self.generator).tolist()
        return [items[i] for i in order]

    def coin(self) -> int:
        return int(torch.randint(2, (1,), generator=self.generator))


class _Pool:
    """A persistent washout-length pool: draws without replacement, refilled (reshuffled) when empty."""

    def __init__(self, values: Sequence[int], stream: _Stream):
        self.values, self.stream, self.left = tuple(values), stream, []
        self.drawn: List[int] = []

    def draw(self) -> int:
        if not self.left:
            self.left = self.stream.shuffled(self.values)
        n = self.left.pop()
        self.drawn.append(n)
        return n


def build_protocol(generator: torch.Generator, n_pre_blocks: int = 16, n_training_blocks: int = 24,
                   n_post_rounds: int = 8, reference_compat: bool = False) -> Protocol:
    """One seed's trial sequence (spec §2.2; ``reference_compat``: §2.7 items 1-2)."""
    if n_pre_blocks % 4:
        raise ValueError(f"n_pre_blocks={n_pre_blocks} must be a multiple of 4 (each exposure once per 4 blocks)")
    rng = _Stream(generator)
    pools = {slot: _Pool(values, rng) for slot, values in POOLS.items()}
    trials: List[str] = []
    channel: List[bool] = []
    phase: List[str] = []
    block: List[int] = []
    triplets: List[Triplet] = []
    where = {"phase": "", "block": 0}

    def add(labels: Sequence[str], is_channel: bool = False) -> None:
        for label in labels:
            trials.append(label)
            channel.append(is_channel)
            phase.append(where["phase"])
            block.append(where["block"])

    def washout(n: int) -> None:
        add(rng.shuffled(["10"] * (n // 2) + ["20"] * (n // 2)))

    def triplet(exposure: str) -> None:
        triplets.append(Triplet(len(trials), exposure, where["phase"], where["block"]))
        add(["10"], True)
        add([exposure])
        add(["10"], True)

    if not reference_compat:
        where["phase"] = "pre"
        for b in range(n_pre_blocks):
            if b % 4 == 0:
                order = rng.shuffled(EXPOSURES)
            where["block"] = b
            washout(pools["pre"].draw())
            triplet(order[b % 4])
    where["phase"] = "training"
    for b in range(n_training_blocks):
        where["block"] = b
        add(rng.shuffled(["10", "20"]))
        for _ in range(4):
            add(rng.shuffled(["1+"] * 4 + ["2-"] * 4))
        add(rng.shuffled(["10", "20"]))
        if reference_compat:
            for slot in ("training_1", "training_2"):
                n = pools[slot].draw()
                washout(n)
                washout(n)  # the reference's "triplet": the same washout again, reshuffled
        else:
            first = ("1+", "2-")[rng.coin()]
            washout(pools["training_1"].draw())
            triplet(first)
            washout(pools["training_2"].draw())
            triplet("2-" if first == "1+" else "1+")
    where["phase"] = "post"
    for r in range(n_post_rounds):
        where["block"] = r
        for exposure in rng.shuffled(EXPOSURES):
            washout(pools["post"].draw())
            triplet(exposure)
    return Protocol(tuple(trials), tuple(channel), tuple(phase), tuple(block), tuple(triplets),
                    {slot: tuple(p.drawn) for slot, p in pools.items()})


def max_trials(settings: Mapping[str, Any]) -> int:
    """The longest sequence any seed can get under ``settings`` (all washouts at their maximum)."""
    if settings["reference_compat"]:
        pre, block = 0, 2 + 32 + 2 + 2 * max(POOLS["training_1"]) + 2 * max(POOLS["training_2"])
    else:
        pre = settings["n_pre_blocks"] * (max(POOLS["pre"]) + 3)
        block = 2 + 32 + 2 + max(POOLS["training_1"]) + 3 + max(POOLS["training_2"]) + 3
    post = settings["n_post_rounds"] * len(EXPOSURES) * (max(POOLS["post"]) + 3)
    return pre + settings["n_training_blocks"] * block + post


# --------------------------------------------------------------------------------------------------
# the paradigm


@register
class SensorimotorAdaptation(Paradigm):
    name = "sensorimotor_adaptation"
    title = "Sensorimotor adaptation with contextual cues (COIN-like)"
    tags = ("behaviour", "motor", "human")
    citation = ("Song et al. (2024) Nat Neurosci, Fig. 5f; experiment: Heald, Lengyel, Flanagan & "
                "Wolpert (2021) Nature, Fig. 3")
    figure = "Song et al. 2024, Fig. 5f"
    version = "1"
    rules = ("pc", "bp")
    hyperparameters = {
        "init_sd": Hyper(0.1, "sd of the N(0, sd^2) initial weights of both layers", min=0.0,
                         units="weight (dimensionless)"),
        "lr_in": Hyper(5e-5, "SGD learning rate of the input weights W_lo", min=0.0, units="per trial"),
        "lr_out": Hyper(0.01, "SGD learning rate of the output weights W_up", min=0.0, units="per trial"),
        "n_hidden": Hyper(2, "hidden units (half per cue unless fully connected)", type=int, min=1,
                          structural=True, units="units"),
        "fully_connected": Hyper(False, "every hidden unit sees both cues (no clamp of W_lo)", type=bool,
                                 structural=True),
        "learn_channel_trials": Hyper(True, "channel trials (1st and 3rd of each triplet) take a learning step "
                                            "(as null trials); False: no step, outputs still measured",
                                      type=bool),
        "reference_compat": Hyper(False, "reproduce the reference's protocol: no pre-training, training "
                                         "triplets replaced by repeated washouts (spec §2.7 items 1-2)",
                                  type=bool, structural=True),
        "n_pre_blocks": Hyper(16, "pre-training blocks (washout + triplet); a multiple of 4", type=int, min=0,
                              structural=True, units="blocks"),
        "n_training_blocks": Hyper(24, "training blocks (32 field trials, washouts, 2 triplets)", type=int,
                                   min=0, structural=True, units="blocks"),
        "n_post_rounds": Hyper(8, "post-training rounds (4 measured triplets each)", type=int, min=1,
                               structural=True, units="rounds"),
        "T": Hyper(256, "PC inference steps per trial", type=int, min=1, structural=True, units="steps"),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate", min=0.0, units="per inference step"),
        "latent_lr_discount": Hyper(0.9, "PC latent-lr discount when F does not decrease", min=1e-12, max=1.0,
                                    units="factor"),
    }
    grid = {"init_sd": INIT_SDS, "lr_in": LRS_IN, "lr_out": LRS_OUT}
    presets = {
        "quick": Preset(
            seeds=2,
            settings={"n_pre_blocks": 4, "n_training_blocks": 4, "n_post_rounds": 2, "T": 32},
            grid={"init_sd": (1e-5, 0.1), "lr_in": (0.1, 5e-5), "lr_out": (0.01, 0.001)},
            doc="8 grid points x 2 seeds with a shortened protocol (4 pre-training blocks, 4 training "
                "blocks, 2 post-training rounds) and PC at T = 32: for tests and a first look, not "
                "for the published pattern"),
        "paper": Preset(seeds=24, doc="the published grid (432 points) with the reference's 24 seeds; rerun "
                                      "the chosen settings with >= 100 seeds"),
    }
    default_seeds = 24
    measures = {
        "adaptation": Measure(("exposure",), "adaptation change per exposure: signed change of the cue-1 "
                                             "output over a post-training triplet, mean over rounds",
                              "arbitrary units (raw network output)"),
        "adaptation_per_round": Measure(("exposure", "round"), "adaptation change per exposure and "
                                                               "post-training round",
                                        "arbitrary units (raw network output)"),
    }
    main_measure = "adaptation"
    summary_isel = {}
    figure_point = {"init_sd": 0.1, "lr_in": 5e-5, "lr_out": 0.01}  # the spec's PC config
    dataset = "sensorimotor_adaptation"
    fit = FitSpec(measure="adaptation", conditions=("exposure",), readout="scale",
                  dataset="sensorimotor_adaptation", search=("init_sd", "lr_in", "lr_out"))

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if not settings["fully_connected"] and settings["n_hidden"] % 2:
            raise ValueError(f"n_hidden={settings['n_hidden']} must be even (half the hidden units per cue) "
                             f"unless fully_connected")
        if settings["n_pre_blocks"] % 4:
            raise ValueError(f"n_pre_blocks={settings['n_pre_blocks']} must be a multiple of 4 "
                             f"(each exposure once per 4 blocks)")

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Per run: the trial tensors (input and target, 2 floats each, ~2,020 trials, 64 KiB) and
        the probe buffer dominate; 256 KiB leaves room for the engine's state (4 GiB: 16,384 runs, so
        the default grid of 10,368 runs per rule is one program)."""
        return 256 * 1024

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"exposure": list(EXPOSURES), "round": list(range(settings["n_post_rounds"]))}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return max_trials(settings)

    def protocol(self, seed: int, settings: Mapping[str, Any]) -> Protocol:
        """The trial sequence of ``seed`` (its "protocol" stream; the rule and rates play no part)."""
        return build_protocol(self.generator(seed, "protocol"), settings["n_pre_blocks"],
                              settings["n_training_blocks"], settings["n_post_rounds"],
                              settings["reference_compat"])

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def network(n_hidden: int, fully_connected: bool) -> NetworkSpec:
        half = n_hidden // 2
        mask = None if fully_connected else tuple((1.0, 0.0) if i < half else (0.0, 1.0) for i in range(n_hidden))
        return NetworkSpec((Linear(2, n_hidden, bias=False, mask=mask), Linear(n_hidden, 2, bias=False)), "pre")

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        R, H = len(settings), s0["n_hidden"]
        dt = self.torch_dtype()
        spec = self.network(H, s0["fully_connected"])

        # per-seed sequences (host side, once per distinct seed), padded at the end with no-ops
        protocols = {seed: self.protocol(seed, s0) for seed in dict.fromkeys(seeds)}
        n_trials = max(len(p) for p in protocols.values())
        columns: Dict[Tuple[int, bool], np.ndarray] = {}  # (seed, learn_channel_trials) -> padded codes
        for seed, s in zip(seeds, settings):
            key = (seed, s["learn_channel_trials"])
            if key not in columns:
                columns[key] = np.zeros(n_trials, dtype=np.int64)  # 0 = no-op
                columns[key][: len(protocols[seed])] = protocols[seed].codes(key[1])
        codes = np.stack([columns[(seed, s["learn_channel_trials"])] for seed, s in zip(seeds, settings)], axis=1)
        starts_of = {seed: p.post_triplet_starts() for seed, p in protocols.items()}
        starts = np.stack([starts_of[seed] for seed in seeds])  # [R, exposure, round]
        codes_t = torch.as_tensor(codes, device=device)
        inputs = torch.tensor([_INPUT[k] for k in KINDS], dtype=dt, device=device)[codes_t].unsqueeze(2)
        targets = torch.tensor([_TARGET[k] for k in KINDS], dtype=dt, device=device)[codes_t].unsqueeze(2)
        del codes_t

        # parameters: the seed's standard normals scaled by the run's init_sd
        draws_lo, draws_up = [], []
        for seed in seeds:
            g = self.generator(seed, "init")
            draws_lo.append(torch.randn(H, 2, generator=g, dtype=dt))
            draws_up.append(torch.randn(2, H, generator=g, dtype=dt))
        sd = stack_settings(settings, "init_sd", dt, device).reshape(R, 1, 1)
        params = {"0.weight": torch.stack(draws_lo).to(device) * sd, "1.weight": torch.stack(draws_up).to(device) * sd}
        host = lambda key: stack_settings(settings, key, dt)  # noqa: E731 (host values, moved by the engine)
        config = TrainConfig(
            T=s0["T"],
            weight_opt=SGD(lr={"0.weight": host("lr_in"), "1.weight": host("lr_out")}),
            latent_opt=LatentSGD(lr=host("latent_lr")),
            lr_decay=host("latent_lr_discount"),
            lr_growth=1.0,
            record="none",
        )
        spec, config = build_rule(rule, spec, config)
        engine = Engine(spec, config, params)  # re-imposes the clamp (structural zeros)

        # probe outputs before each trial's learning step, from the first post-training trial on
        first = int(starts.min())
        probe = torch.tensor([PROBE], dtype=dt, device=device)
        recorded = torch.empty(n_trials - first, R, 2, dtype=dt, device=device)
        for t in range(n_trials):
            if t >= first:
                recorded[t - first] = engine.forward(probe)[:, 0, :]
            engine.train_batch(inputs[t], targets[t])
            progress(1)
        progress(max_trials(s0) - n_trials)

        runs = torch.arange(R, device=device).reshape(R, 1, 1)
        at = torch.as_tensor(starts - first, device=device)
        delta = recorded[at + 2, runs] - recorded[at, runs]  # [R, exposure, round, 2]
        sign = torch.tensor(_SIGN, dtype=dt, device=device).reshape(1, -1, 1)
        per_round = sign * (delta[..., 0] - delta[..., 1])
        return {"adaptation": per_round.mean(-1).cpu().numpy(), "adaptation_per_round": per_round.cpu().numpy()}
