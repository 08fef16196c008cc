"""Two-choice probabilistic reversal learning: the expected value around punishment.

Experiment: humans in fMRI, Hampton, Bossaerts & O'Doherty (2006), *J. Neurosci.* (inferred by the
specification); simulated in Song et al. (2024), *Nature Neuroscience*, Fig. 6c. On each trial the
subject picks one of two options. The correct option wins with p 0.7 (else loses), the other wins
with p 0.4. After 4 consecutive correct choices the contingencies reverse with p 0.25 per trial.
The measure is the expected value of the chosen option (vmPFC, inferred) on a punished trial
("punish") and on the next trial ("next"), split by whether the next choice stays or switches. The
recorded pattern crosses: stay falls, switch rises.

Protocol (specs/behaviour.md §3.2). ``n_trials`` = 128 trials, the input is always 1, the correct
option c is 0 at the start. On trial t:

1. q_t = the feed-forward output [2]; a_t ~ softmax(q_t / temperature) (``choice_rule="argmax"``
   takes the larger value instead, ties to option 0);
2. if trial t−1 was punished, log v_punish = q_{t−1}[a_{t−1}], v_next = q_t[a_t] (both before
   learning) and switch = (a_t ≠ a_{t−1}); only events whose "next" trial is
   ``first_logged_trial`` (1-indexed, default 65) or later are kept;
3. r = +1 with p ``p_win_correct`` (0.7) if a_t = c, else with p ``p_win_incorrect`` (0.4);
   otherwise r = −1; success = (a_t = c);
4. learn on ½(q[a_t] − r)² only (the engine's output mask: the chosen output);
5. ``n_correct_to_arm`` (4) consecutive successes since the last reversal arm the reversal;
   while armed, c flips with p ``p_reverse`` (0.25) after each trial, the arming trial included;
   a flip disarms and clears the success history;
6. punished = (r = −1).

Randomness: every run's random numbers (the initial weights, and per trial the choice, reward and
reversal uniforms, drawn for every trial whether used or not) come from per-seed streams
(:meth:`Paradigm.generator`), so PC and BP runs of a seed and every grid point see the same numbers
(a paired design) and a run does not depend on which runs are stacked with it. They are drawn on
the host once, moved to the device, and the trial loop is tensor ops over the run axis: the choice
is sampled on the device by comparing the pre-drawn uniform with softmax(q)[1].

Network (§3.3): input 1 → Linear(1 → 1) → value node → Linear(1 → 2) → the two option values; no
biases; both weights N(0, init_sd²). PC: T = 256 inference steps, latent lr 0.1 with discount 0.9,
the weights stepped once at the last step; BP: one SGD step. One SGD group, ``lr_w`` = 0.1.

Measures (per run): ``value`` (at × choice), the run's mean of the logged values in each cell (NaN
where the run has no event in it); ``count`` (choice), the number of events behind each cell;
``w_out`` (the final output weights), ``n_reversals`` and ``p_correct`` (fraction of correct
choices). :func:`cell_contrasts` derives the stay and switch slopes (next − punish) and the
time × choice interaction from ``value``. :func:`robustness_summary` (one rule and init_sd, plain
numbers) and :func:`robustness_table` (every rule and init_sd, as text) give the §3.5 robustness
report of a results Dataset: pooled cells (the reference's pooling), seed-level cells, slopes and
interaction with bootstrap CIs, the fractions of reference-sized seed subsets (22 PC / 40 BP) in
which the stay line falls, the switch line rises and both (the published crossing), against the
published raw means.

Mechanism (§3.5). Under PC the output weights grow large (about ±1.5 within 128 trials, often of
opposite signs), so the latent acts as a state variable: a punishment is explained by flipping it
(inferring a reversal), which lowers the chosen option's value and raises the other's. Under BP a
punishment only devalues the chosen option. The fixed-punishment diagnostic (W_lo = 1,
W_up = [1, −1], always action 0 with target −1) shows it: PC raises the action-0 weight towards
1.5, BP shrinks it towards 0.

Robustness caveat (binding, §3.5): the published contrast (PC crosses, BP does not) depends on the
reference's seed lists (22 PC, 40 BP seeds). With many fresh seeds both stay lines fall, BP's
switch line rises on average in most reference-sized subsets, and PC's rise is weak and variable.
Never assert "PC crosses, BP does not"; report seed-level cells with CIs over several hundred seeds
(:func:`robustness_table`).

Departures from the reference implementation (behaviour spec §3.7) and the decisions taken:
  1. the reference never cleared the success history at a reversal, so switching to the new
     correct option could re-arm at once; here the history is reset at each reversal
     (``reference_compat=True`` keeps the reference behaviour);
  2. the reference ran each seed twice, once per logged value; one run here logs both;
  3. the reference's error bars pooled trials over seeds (too narrow); the measures here are per
     seed, for seed-level statistics (the fit layer pools with ``count`` where it needs the
     reference's pooled means);
  4. the per-rule ``init_sd`` (PC 0.05, BP 0.1), the by-eye configs and the hard-coded linear
     maps are for the baseline only: the default grid is common to both rules, and the maps and
     settings are fitted by the fit layer (:mod:`pcneuro.fits`, ``fit`` below).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Sequence

import numpy as np
import torch

from pcneuro.engine import Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule
from pcneuro.paradigm import FitSpec, Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.registry import register

AT = ("punish", "next")
CHOICE = ("stay", "switch")
ACTIONS = (0, 1)
STREAMS = ("choice", "reward", "reversal")  # one uniform per trial each, drawn for every trial

Tensor = torch.Tensor


# -- the task environment (tensor state over R runs; drivable with scripted choices) -------------------
def choose(q: Tensor, uniform: Tensor, temperature: Tensor, use_argmax: Tensor) -> Tensor:
    """The choice of each run, [R] long: softmax(q / temperature) sampled with the pre-drawn
    ``uniform`` (option 1 iff uniform < softmax(q)[1]) or, where ``use_argmax``, the larger value
    (ties to option 0). q [R, 2]; uniform, temperature [R]; use_argmax [R] bool."""
    p1 = torch.sigmoid((q[:, 1] - q[:, 0]) / temperature)
    sampled = uniform < p1
    greedy = q[:, 1] > q[:, 0]
    return torch.where(use_argmax, greedy, sampled).long()


@dataclass
class TrialOutcome:
    reward: Tensor  # [R] +1 / -1, the model's dtype
    success: Tensor  # [R] bool: the chosen option was the correct one
    reversed: Tensor  # [R] bool: the contingencies flipped after this trial


class ReversalTask:
    """R independent copies of the two-option reversal environment (behaviour spec §3.2 items 3, 5).

    State per run: the correct option, the run of consecutive successes since the last reversal
    (``streak``; "the last n successes are all 1" is ``streak >= n``), whether a reversal is armed,
    and the number of reversals so far. All per-run parameters are [R] tensors, so runs with
    different settings share one program. ``reference_compat`` [R] bool keeps the success history
    across a reversal (§3.7 item 1).
    """

    def __init__(self, p_win_correct: Tensor, p_win_incorrect: Tensor, p_reverse: Tensor,
                 n_correct_to_arm: Tensor, reference_compat: Tensor):
        device = p_win_correct.device
        R = p_win_correct.shape[0]
        self.p_win_correct = p_win_correct
        self.p_win_incorrect = p_win_incorrect
        self.p_reverse = p_reverse
        self.n_correct_to_arm = n_correct_to_arm.long()
        self.reference_compat = reference_compat.bool()
        self.correct = torch.zeros(R, dtype=torch.long, device=device)
        self.streak = torch.zeros(R, dtype=torch.long, device=device)
        self.armed = torch.zeros(R, dtype=torch.bool, device=device)
        self.n_reversals = torch.zeros(R, dtype=torch.long, device=device)

    def step(self, action: Tensor, u_reward: Tensor, u_reversal: Tensor) -> TrialOutcome:
        """One trial: the outcome of ``action`` [R], then the reversal rule (pre-drawn uniforms [R])."""
        success = action == self.correct
        p_win = torch.where(success, self.p_win_correct, self.p_win_incorrect)
        reward = 2.0 * (u_reward < p_win).to(self.p_win_correct.dtype) - 1.0
        self.streak = torch.where(success, self.streak + 1, torch.zeros_like(self.streak))
        self.armed = self.armed | (self.streak >= self.n_correct_to_arm)
        flip = self.armed & (u_reversal < self.p_reverse)
        self.correct = torch.where(flip, 1 - self.correct, self.correct)
        self.armed = self.armed & ~flip
        reset = flip & ~self.reference_compat
        self.streak = torch.where(reset, torch.zeros_like(self.streak), self.streak)
        self.n_reversals = self.n_reversals + flip.long()
        return TrialOutcome(reward, success, flip)


class PunishmentLog:
    """Per-run sums and counts of the values logged around punishments (§3.2 item 2, analysis).

    ``record`` adds one event per run where ``active``: v_punish and v_next into the (at, choice)
    cell given by ``switch``. ``values()`` are the per-run cell means [R, at, choice] (NaN where a
    run has no event of that choice), ``counts`` [R, choice] the events behind them.
    """

    def __init__(self, n_runs: int, dtype: torch.dtype, device):
        self.sums = torch.zeros(n_runs, len(AT), len(CHOICE), dtype=dtype, device=device)
        self.counts = torch.zeros(n_runs, len(CHOICE), dtype=torch.long, device=device)

    def record(self, active: Tensor, v_punish: Tensor, v_next: Tensor, switch: Tensor) -> None:
        cell = torch.stack([~switch, switch], dim=1) & active.unsqueeze(1)  # [R, choice]
        w = cell.to(self.sums.dtype)
        self.sums = self.sums + torch.stack([v_punish.unsqueeze(1) * w, v_next.unsqueeze(1) * w], dim=1)
        self.counts = self.counts + cell.long()

    def values(self) -> Tensor:
        n = self.counts.to(self.sums.dtype).unsqueeze(1)  # [R, 1, choice]
        return torch.where(n > 0, self.sums / n.clamp(min=1), torch.full_like(self.sums, float("nan")))


def cell_contrasts(value):
    """Per-seed contrasts of a ``value`` DataArray with dims (..., at, choice).

    Returns a dict of DataArrays: ``stay_slope`` and ``switch_slope`` (next − punish within each
    choice) and ``interaction`` (switch slope − stay slope, the time × choice interaction). The
    published crossing is stay_slope < 0 and switch_slope > 0.
    """
    slope = value.sel(at="next") - value.sel(at="punish")
    return {"stay_slope": slope.sel(choice="stay"), "switch_slope": slope.sel(choice="switch"),
            "interaction": slope.sel(choice="switch") - slope.sel(choice="stay")}


# -- robustness analysis (§3.5 "Robustness (binding)", §0.2 statistics) ------------------------------
CELLS = tuple((a, c) for c in CHOICE for a in AT)  # punish/stay, next/stay, punish/switch, next/switch
CONTRASTS = ("stay_slope", "switch_slope", "interaction")
PUBLISHED = {"pc": (0.0789, 0.0284, 0.0437, 0.0600), "bp": (0.0145, 0.0094, 0.0115, 0.0099)}
"""The published raw means (§3.5: pooled over the reference seeds and trials), in :data:`CELLS` order."""
REFERENCE_SEEDS = {"pc": 22, "bp": 40}
"""Seeds per method in the reference (§0.2): the size of the "reference-sized" subsets."""
REFERENCE_INIT_SD = {"pc": 0.05, "bp": 0.1}
"""The reference's by-eye configs (§3.3), marked in :func:`robustness_table`."""


def _cell_name(at: str, choice: str) -> str:
    return f"{at}/{choice}"


def _pooled_cells(value: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Σ value·count / Σ count over the seed axis (the one before the last two): the reference's
    pooling over seeds and trials. ``value`` [..., S, at, choice] (NaN where the count is 0),
    ``count`` [..., S, choice]; NaN where no seed has an event of that choice."""
    w = np.broadcast_to(count[..., None, :], value.shape).astype(float)
    num = (np.where(w > 0, np.nan_to_num(value), 0.0) * w).sum(-3)
    den = w.sum(-3)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _slopes(cells: np.ndarray) -> np.ndarray:
    """stay slope, switch slope and interaction from cells [..., at, choice] → [..., 3]."""
    slope = cells[..., 1, :] - cells[..., 0, :]
    return np.stack([slope[..., 0], slope[..., 1], slope[..., 1] - slope[..., 0]], axis=-1)


def _seed_level(x: np.ndarray, rng: np.random.Generator, n_boot: int, level: float) -> Dict[str, float]:
    """Mean over the seeds with a finite ``x`` and its percentile bootstrap CI (resampling those seeds)."""
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n": 0}
    means = x[rng.integers(0, n, (n_boot, n))].mean(1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return {"mean": float(x.mean()), "lo": float(lo), "hi": float(hi), "n": n}


def _select(ds, rule: str, init_sd):
    """The seed × … slice of ``ds`` for one rule and init_sd, and the init_sd used."""
    rules = [str(r) for r in ds["rule"].values]
    if rule not in rules:
        raise ValueError(f"rule={rule!r} is not in the dataset (choices: {rules})")
    sel = ds.sel(rule=rule)
    if "init_sd" in sel.dims:
        values = [float(v) for v in sel["init_sd"].values]
        if init_sd is None:
            if len(values) != 1:
                raise ValueError(f"init_sd=None is ambiguous: the dataset has init_sd {values}; pass one")
            init_sd = values[0]
        match = [v for v in values if np.isclose(v, float(init_sd), rtol=1e-12, atol=0)]
        if not match:
            raise ValueError(f"init_sd={init_sd!r} is not in the dataset (choices: {values})")
        sel = sel.sel(init_sd=match[0])
        init_sd = match[0]
    elif init_sd is not None:
        raise ValueError(f"init_sd={init_sd!r} given but the dataset has no init_sd axis")
    extra = [d for d in sel["value"].dims if d not in ("seed", "at", "choice")]
    if extra:
        raise ValueError(f"the dataset has other grid axes {extra}; select one value of each first (ds.sel(...))")
    return sel, init_sd


def robustness_summary(ds, rule: str, init_sd: float | None = None, subset_size: int | None = None,
                       n_subsets: int = 5000, n_boot: int = 4000, seed: int = 0,
                       level: float = 0.95) -> Dict[str, Any]:
    """The robustness statistics §3.5 asks for, for one rule and ``init_sd`` of a results Dataset.

    ``ds`` is a reversal-learning Dataset (``value`` [rule, seed, init_sd, at, choice] and ``count``
    [rule, seed, init_sd, choice]; ``w_out``, ``n_reversals``, ``p_correct`` are summarised when
    present). ``init_sd=None`` takes the dataset's only init_sd (else ``ValueError`` naming the
    choices). Returns a dict of plain Python numbers:

    * ``rule``, ``init_sd``, ``n_seeds``, ``level``, ``n_boot``;
    * ``events_per_seed`` {stay, switch}: mean number of logged events per seed;
      ``seeds_without_stay`` / ``seeds_without_switch``: seeds with no event of that choice (their
      cells are NaN and leave the seed-level statistics of those cells);
    * ``pooled`` {"punish/stay", …}: Σ value·count / Σ count over seeds, the reference's pooling
      over seeds and trials (§3.2 analysis);
    * ``seed_mean`` {cell: {mean, lo, hi, n}}: the mean over the n seeds with an event and its
      percentile bootstrap CI at ``level`` (``n_boot`` resamples of those seeds; §0.2);
    * ``contrasts`` {stay_slope, switch_slope, interaction: {mean, lo, hi, n, pooled}}: the per-seed
      contrasts of :func:`cell_contrasts` with bootstrap CIs, and the same contrasts of the pooled
      cells;
    * ``subsets`` {size, n, stay_falls, switch_rises, crossing, crossing_seed_means}: over
      ``n_subsets`` random subsets of ``subset_size`` distinct seeds (default the reference's 22 PC /
      40 BP), the fraction whose pooled cells (as the reference pooled) have the stay line falling
      (next < punish), the switch line rising (next > punish), and both (the published "crossing");
      ``crossing_seed_means`` uses the mean of the subset's seed means instead. A NaN cell compares
      false. With the default size and fewer seeds than that, the fractions are NaN (``size`` is
      still reported); an explicit ``subset_size`` above the number of seeds is a ``ValueError``;
    * ``w_out`` {mean_abs, max_abs, opposite_signs}, ``mean_abs_value`` (over seeds and the four
      cells), ``n_reversals`` and ``p_correct`` (means over seeds), where the dataset has them.

    Deterministic given ``seed`` (one ``numpy.random.default_rng(seed)`` stream: the bootstrap
    resamples, then the subsets, all drawn at once).
    """
    if not 0 < level < 1:
        raise ValueError(f"level={level!r} must be in (0, 1)")
    for name, v in (("n_subsets", n_subsets), ("n_boot", n_boot)):
        if int(v) != v or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    sel, init_sd = _select(ds, rule, init_sd)
    value = np.asarray(sel["value"].transpose("seed", "at", "choice").values, dtype=float)
    count = np.asarray(sel["count"].transpose("seed", "choice").values)
    n_seeds = value.shape[0]
    if subset_size is None:
        size = REFERENCE_SEEDS.get(rule, n_seeds)
        run_subsets = size <= n_seeds
    else:
        size = subset_size
        if int(size) != size or not 1 <= size <= n_seeds:
            raise ValueError(f"subset_size={subset_size!r} must be an integer in [1, {n_seeds}] (the seeds)")
        run_subsets = True
    size = int(size)
    rng = np.random.default_rng(seed)

    pooled = _pooled_cells(value, count)
    seed_mean = {_cell_name(a, c): _seed_level(value[:, AT.index(a), CHOICE.index(c)], rng, n_boot, level)
                 for a, c in CELLS}
    con = cell_contrasts(sel["value"].transpose("seed", "at", "choice"))
    pooled_slopes = _slopes(pooled)
    contrasts = {}
    for k, name in enumerate(CONTRASTS):
        contrasts[name] = {**_seed_level(np.asarray(con[name].values, float), rng, n_boot, level),
                           "pooled": float(pooled_slopes[k])}

    subsets: Dict[str, Any] = {"size": size, "n": int(n_subsets)}
    if run_subsets:
        # all subsets at once: the `size` smallest of n_seeds iid uniforms are a uniform random subset
        idx = np.argpartition(rng.random((n_subsets, n_seeds)), size - 1, axis=1)[:, :size]
        q = _slopes(_pooled_cells(value[idx], count[idx]))  # [n_subsets, 3]
        falls, rises = q[:, 0] < 0, q[:, 1] > 0
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN cell in a subset compares false
            m = _slopes(np.nanmean(value[idx], axis=1))
        subsets.update(stay_falls=float(falls.mean()), switch_rises=float(rises.mean()),
                       crossing=float((falls & rises).mean()),
                       crossing_seed_means=float(((m[:, 0] < 0) & (m[:, 1] > 0)).mean()))
    else:
        subsets.update({k: float("nan") for k in ("stay_falls", "switch_rises", "crossing", "crossing_seed_means")})

    out: Dict[str, Any] = {
        "rule": rule, "init_sd": None if init_sd is None else float(init_sd), "n_seeds": int(n_seeds),
        "level": float(level), "n_boot": int(n_boot),
        "events_per_seed": {c: float(count[:, j].mean()) for j, c in enumerate(CHOICE)},
        "seeds_without_stay": int((count[:, 0] == 0).sum()),
        "seeds_without_switch": int((count[:, 1] == 0).sum()),
        "pooled": {_cell_name(a, c): float(pooled[AT.index(a), CHOICE.index(c)]) for a, c in CELLS},
        "seed_mean": seed_mean, "contrasts": contrasts, "subsets": subsets,
        "mean_abs_value": float(np.nanmean(np.abs(value))) if np.isfinite(value).any() else float("nan"),
    }
    if "w_out" in sel:
        w = np.asarray(sel["w_out"].transpose("seed", "action").values, float)
        out["w_out"] = {"mean_abs": float(np.abs(w).mean()), "max_abs": float(np.abs(w).max()),
                        "opposite_signs": float(np.mean(w[:, 0] * w[:, 1] < 0))}
    for name in ("n_reversals", "p_correct"):
        if name in sel:
            out[name] = float(sel[name].values.mean())
    return out


def robustness_table(ds, published: Mapping[str, Sequence[float]] | None = None, *, n_subsets: int = 5000,
                     n_boot: int = 4000, seed: int = 0, level: float = 0.95) -> str:
    """Every (rule, init_sd) of a reversal-learning Dataset as a text table (§3.5 robustness report).

    For each block: pooled and seed-level cells (mean with bootstrap CI) next to the ``published``
    raw means (default :data:`PUBLISHED`; a mapping rule → four values in :data:`CELLS` order, a rule
    missing from it gets no column), the stay/switch slopes and interaction (seed level with CI,
    pooled, and from the published means), the reference-sized subset fractions, and the weight and
    task summaries. The reference configs (§3.3: PC 0.05, BP 0.1) are marked. Each block is
    :func:`robustness_summary` with the same ``seed``; the other keywords are passed on.
    """
    published = PUBLISHED if published is None else published
    for r, vals in published.items():
        if len(vals) != len(CELLS):
            names = [_cell_name(*c) for c in CELLS]
            raise ValueError(f"published[{r!r}] has {len(vals)} values; need {len(CELLS)} ({names})")
    sds = [float(v) for v in ds["init_sd"].values] if "init_sd" in ds.dims else [None]
    pct = f"{100 * level:g} %"
    lines = ["Reversal learning robustness (behaviour spec §3.5)",
             "  pooled: Σ value·count / Σ count over seeds and trials (as the reference pooled)",
             f"  seed mean: mean over seeds with an event, {pct} percentile bootstrap CI ({n_boot} resamples, "
             f"seed {seed})",
             f"  subsets: {n_subsets} random reference-sized seed lists (PC {REFERENCE_SEEDS['pc']}, BP "
             f"{REFERENCE_SEEDS['bp']}), pooled; fraction with the stay line falling, the switch line rising, both",
             "  published: §3.5 raw means (pooled over the reference seeds); slopes = next − punish, "
             "interaction = switch slope − stay slope"]
    for rule in [str(r) for r in ds["rule"].values]:
        pub = published.get(rule)
        for sd in sds:
            s = robustness_summary(ds, rule, sd, n_subsets=n_subsets, n_boot=n_boot, seed=seed, level=level)
            cells = [v for v in s["pooled"].values() if np.isfinite(v)]
            scale = max([abs(v) for v in cells], default=1.0) or 1.0
            d = int(np.clip(2 - np.floor(np.log10(scale)), 4, 8))  # >= 3 significant digits on the largest cell

            def f(x: float, d: int = d) -> str:
                return "nan" if not np.isfinite(x) else f"{x:+.{d}f}"

            is_ref = sd is not None and bool(np.isclose(sd, REFERENCE_INIT_SD.get(rule, np.nan)))
            ref = " (reference config)" if is_ref else ""
            ev = s["events_per_seed"]
            lines += ["", f"{rule.upper()}  init_sd={sd}{ref}: {s['n_seeds']} seeds; events/seed stay "
                      f"{ev['stay']:.1f}, switch {ev['switch']:.1f}; seeds without a stay event "
                      f"{s['seeds_without_stay']}, without a switch event {s['seeds_without_switch']}"]
            pub_cells = np.full((len(AT), len(CHOICE)), np.nan)
            rows = []  # (label, pooled, seed mean [CI], published)
            for k, (a, c) in enumerate(CELLS):
                if pub is not None:
                    pub_cells[AT.index(a), CHOICE.index(c)] = pub[k]
                rows.append((_cell_name(a, c), s["pooled"][_cell_name(a, c)], s["seed_mean"][_cell_name(a, c)],
                             pub[k] if pub is not None else None))
            pub_slopes = _slopes(pub_cells)
            for k, name in enumerate(CONTRASTS):
                m = s["contrasts"][name]
                rows.append((name.replace("_", " "), m["pooled"], m, pub_slopes[k] if pub is not None else None))
            ci = [f"{f(m['mean'])} [{f(m['lo'])}, {f(m['hi'])}]"
                  + (f" (n={m['n']})" if m["n"] != s["n_seeds"] else "") for _, _, m, _ in rows]
            wv, wc = d + 3, max(len(x) for x in ci + [f"seed mean [{pct} CI]"])
            table = [("", "pooled", f"seed mean [{pct} CI]", "published" if pub is not None else "")]
            table += [(label, f(p), c, "" if q is None else f(q)) for (label, p, _, q), c in zip(rows, ci)]
            for label, p, c, q in table:
                lines.append(f"  {label:14s}{p:>{wv}s}   {c:<{wc}s}   {q:>{max(wv, 9)}s}".rstrip())
            sub = s["subsets"]
            if np.isfinite(sub["crossing"]):
                lines.append(f"  subsets of {sub['size']} seeds: stay falls {sub['stay_falls']:.3f}, switch rises "
                             f"{sub['switch_rises']:.3f}, crossing {sub['crossing']:.3f} (crossing on seed means "
                             f"{sub['crossing_seed_means']:.3f})")
            else:
                lines.append(f"  subsets of {sub['size']} seeds: n/a (only {s['n_seeds']} seeds)")
            extra = []
            if "w_out" in s:
                wo = s["w_out"]
                extra.append(f"|w_out| mean {wo['mean_abs']:.3f}, max {wo['max_abs']:.3f}, "
                             f"opposite signs {wo['opposite_signs']:.2f}")
            extra.append(f"mean |value| {s['mean_abs_value']:.{d}f}")
            if "n_reversals" in s:
                extra.append(f"reversals {s['n_reversals']:.2f}")
            if "p_correct" in s:
                extra.append(f"p_correct {s['p_correct']:.3f}")
            lines.append("  " + "; ".join(extra))
    return "\n".join(lines) + "\n"


# -- the paradigm -----------------------------------------------------------------------------------
@register
class ReversalLearning(Paradigm):
    name = "reversal_learning"
    title = "Probabilistic reversal learning: expected value around punishment"
    tags = ("behaviour", "reinforcement", "human")
    citation = ("Song et al. (2024) Nat Neurosci, Fig. 6c; experiment: Hampton, Bossaerts & O'Doherty (2006) "
                "J Neurosci (inferred)")
    figure = "Song et al. 2024, Fig. 6c"
    version = "1"
    rules = ("pc", "bp")
    hyperparameters = {
        "lr_w": Hyper(0.1, "learning rate of both weight layers (one SGD group)", min=0.0),
        "init_sd": Hyper(0.05, "sd of the N(0, sd^2) draw of both weight layers", min=0.0),
        "T": Hyper(256, "PC inference steps per trial", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.1, "PC starting latent learning rate", min=0.0),
        "latent_lr_discount": Hyper(0.9, "PC latent-lr discount when F does not decrease", min=1e-12, max=1.0),
        "n_trials": Hyper(128, "trials per run", type=int, min=2, structural=True),
        "first_logged_trial": Hyper(65, "first 'next' trial (1-indexed) whose punishment event is logged",
                                    type=int, min=2),
        "p_win_correct": Hyper(0.7, "probability that the correct option wins", min=0.0, max=1.0),
        "p_win_incorrect": Hyper(0.4, "probability that the incorrect option wins", min=0.0, max=1.0),
        "p_reverse": Hyper(0.25, "per-trial reversal probability once armed", min=0.0, max=1.0),
        "n_correct_to_arm": Hyper(4, "consecutive correct choices that arm a reversal", type=int, min=1),
        "choice_rule": Hyper("softmax", "choice rule: softmax sampling or argmax", type=str,
                        choices=("softmax", "argmax")),
        "temperature": Hyper(1.0, "softmax temperature (> 0)", min=0.0),
        "reference_compat": Hyper(False, "keep the success history across reversals, as the reference did "
                                         "(behaviour spec §3.7 item 1)", type=bool),
    }
    grid = {"init_sd": (0.01, 0.05, 0.1)}
    presets = {
        "quick": Preset(seeds=8, settings={"T": 32},
                        doc="8 seeds x 3 init_sd, PC with T = 32 inference steps (not 256): a first look in seconds"),
        "paper": Preset(seeds=400, doc="400 seeds per rule and init_sd, T = 256 (several hundred seeds, §3.5)"),
    }
    default_seeds = 100
    measures = {
        "value": Measure(("at", "choice"), "chosen option's value: at a punished trial and at the next trial, "
                         "by the next choice; the run's mean over events (NaN: no event)",
                         "arbitrary units (raw network output)", nan_is_empty=True),
        "count": Measure(("choice",), "number of punishment events behind each value cell", "events"),
        "w_out": Measure(("action",), "output weights after the last trial", "1"),
        "n_reversals": Measure((), "number of reversals of the correct option", "reversals"),
        "p_correct": Measure((), "fraction of trials on which the correct option was chosen", "1"),
    }
    main_measure = "value"
    figure_point = {"init_sd": 0.05}
    dataset = "reversal_learning"
    fit = FitSpec(measure="value", conditions=("at", "choice"), readout="affine", dataset="reversal_learning",
                  search=("init_sd",), count="count", reference="pooled_grid")

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["choice_rule"] == "softmax" and settings["temperature"] <= 0:
            raise ValueError(f"temperature={settings['temperature']!r} must be > 0 for softmax choice")
        if settings["first_logged_trial"] > settings["n_trials"]:
            raise ValueError(f"first_logged_trial={settings['first_logged_trial']!r} is after the last trial "
                             f"(n_trials={settings['n_trials']})")

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Per run a 1-1-2 network, three streams of uniforms over the trials and the event log:
        64 KiB is generous (the paper preset's 1,200 runs per rule are one program)."""
        return 64 * 1024

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"at": list(AT), "choice": list(CHOICE), "action": list(ACTIONS)}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return settings["n_trials"]

    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def network() -> NetworkSpec:
        return NetworkSpec((Linear(1, 1, bias=False), Linear(1, 2, bias=False)), "pre")

    def draws(self, seeds: Sequence[int], n_trials: int, dtype: torch.dtype) -> Dict[str, Tensor]:
        """The host-side random numbers of each run: ``init`` [R, 3] standard normals (W_lo, then
        W_up) and one uniform per trial for each of ``choice``, ``reward``, ``reversal`` [R, n_trials].
        They depend on the seed only (a paired design across rules and settings)."""
        cache: Dict[int, Dict[str, Tensor]] = {}
        for seed in dict.fromkeys(seeds):
            one = {"init": torch.randn(3, generator=self.generator(seed, "init"), dtype=dtype)}
            for purpose in STREAMS:
                one[purpose] = torch.rand(n_trials, generator=self.generator(seed, purpose), dtype=dtype)
            cache[seed] = one
        return {k: torch.stack([cache[s][k] for s in seeds]) for k in ("init", *STREAMS)}

    def simulate(self, rule, settings, seeds, device, progress):
        s0 = settings[0]
        R, n_trials = len(settings), s0["n_trials"]
        dt = self.torch_dtype()

        def per_run(key, dtype=dt):
            return stack_settings(settings, key, dtype, device)

        rand = {k: v.to(device) for k, v in self.draws(seeds, n_trials, dt).items()}
        init = rand["init"] * per_run("init_sd").unsqueeze(1)
        params = {"0.weight": init[:, :1].reshape(R, 1, 1).clone(), "1.weight": init[:, 1:].reshape(R, 2, 1).clone()}
        host = lambda key: [s[key] for s in settings]  # noqa: E731 (validated on the host, moved by the engine)
        config = TrainConfig(
            T=s0["T"],
            weight_opt=SGD(lr=host("lr_w")),
            latent_opt=LatentSGD(lr=host("latent_lr")),
            lr_decay=host("latent_lr_discount"),
            lr_growth=1.0,
            record="none",
            record_latents="none",
        )
        spec, config = build_rule(rule, self.network(), config)
        engine = Engine(spec, config, params)

        task = ReversalTask(per_run("p_win_correct"), per_run("p_win_incorrect"), per_run("p_reverse"),
                            per_run("n_correct_to_arm", torch.long), per_run("reference_compat", torch.bool))
        log = PunishmentLog(R, dt, device)
        temperature = per_run("temperature")
        use_argmax = torch.tensor([s["choice_rule"] == "argmax" for s in settings], device=device)
        first_logged = per_run("first_logged_trial", torch.long) - 1  # 0-based index of the "next" trial
        x0 = torch.ones(1, 1, dtype=dt, device=device)
        n_correct = torch.zeros(R, dtype=torch.long, device=device)
        punished = v_prev = a_prev = None
        for t in range(n_trials):
            q = engine.forward(x0)[:, 0, :]  # [R, 2], before learning
            action = choose(q, rand["choice"][:, t], temperature, use_argmax)
            v = q.gather(1, action.unsqueeze(1))[:, 0]
            if t > 0:
                log.record(punished & (first_logged <= t), v_prev, v, action != a_prev)
            outcome = task.step(action, rand["reward"][:, t], rand["reversal"][:, t])
            n_correct = n_correct + outcome.success.long()
            chosen = torch.stack([action == k for k in ACTIONS], dim=1).to(dt).unsqueeze(1)  # [R, 1, 2] one-hot
            engine.train_batch(x0, chosen * outcome.reward.reshape(R, 1, 1), output_mask=chosen)
            punished, v_prev, a_prev = outcome.reward < 0, v, action
            progress(1)
        return {
            "value": log.values().cpu().numpy(),
            "count": log.counts.cpu().numpy(),
            "w_out": engine.params["1.weight"][:, :, 0].cpu().numpy(),
            "n_reversals": task.n_reversals.cpu().numpy(),
            "p_correct": (n_correct.to(dt) / n_trials).cpu().numpy(),
        }
