"""Typed configuration of the training step (engine spec §2.1) and timing sets (§2.2).

Every hyperparameter that may differ between stacked runs accepts a scalar (shared) or a
sequence/tensor of length R (one value per run). Give them as host values (numbers, sequences,
CPU tensors): checks that read values run on the host before any device work, and the engine moves
the values to the runs' device (see :func:`host_values`). Weight learning rates may also be given per
parameter, as a mapping from parameter name (``"<layer index>.weight"``/``".bias"``) to a scalar,
an [R] vector or an [R, *parameter shape] tensor (elementwise groups, e.g. the fear paradigm's
separate rates for the two halves of one weight matrix).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

Tensor = torch.Tensor
PerRun = Union[float, Sequence[float], Tensor]
LearningRate = Union[PerRun, Mapping[str, PerRun]]
Timing = Union[str, Sequence[int]]

TIMING_NAMES = ("all", "last", "last_half", "never")
LOSSES = ("sse", "ce")
RECORD_MODES = ("none", "last", "every")


@dataclass(frozen=True)
class SGD:
    """Weight SGD as torch.optim.SGD: coupled L2 decay, then momentum (buffer starts at the first gradient)."""

    lr: LearningRate
    momentum: PerRun = 0.0
    dampening: float = 0.0
    weight_decay: PerRun = 0.0


@dataclass(frozen=True)
class Adam:
    """Weight Adam as torch.optim.Adam (coupled L2 decay); ``decoupled=True`` gives AdamW."""

    lr: LearningRate
    betas: Tuple[PerRun, PerRun] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: PerRun = 0.0
    decoupled: bool = False


@dataclass(frozen=True)
class LatentSGD:
    """Latent optimiser, recreated every batch. ``lr`` is η_x0, the starting latent rate."""

    lr: PerRun = 0.1
    momentum: float = 0.0


@dataclass(frozen=True)
class LatentAdam:
    lr: PerRun = 0.1
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


WeightOptimizer = Union[SGD, Adam]
LatentOptimizer = Union[LatentSGD, LatentAdam]


@dataclass(frozen=True)
class TrainConfig:
    """How one batch is trained (engine spec §2.1; the network spec carries the placement).

    ``T`` steps per batch; ``latent_steps``/``weight_steps`` are timing sets (``"all"``, ``"last"``,
    ``"last_half"``, ``"never"``, an explicit list of steps, or for weights ``"zil"`` or a map
    {weight layer number 1..L: timing}). ``lr_decay`` d and ``lr_growth`` a drive the latent-rate
    rule: after a latent step at t ≥ 1, η ← η·a if F_t < F_{t−1} else η·d. ``stop_lr`` ends a batch
    early once η ≤ stop_lr. ``energy_coef`` c scales the hidden energies, never the loss.
    ``latent_l1`` λ ≥ 0 adds the latent penalty R(x) = λ Σ_l Σ |x_l| (summed over batch and units)
    to F = ℓ + c·Σ E_l + R(x); its gradient λ·sign(x_l) acts on the latents only. F (the recorded
    ``objective`` and the latent-rate rule) includes R; the recorded ``energy`` does not. λ = 0 for
    every run (the default) costs nothing.
    ``record``: ``"none"``, ``"last"`` (loss₀ and the pre-step loss/E/F of the last step taken) or
    ``"every"`` (pre-step loss/E/F at every step, [T, R]).
    ``record_latents``: ``"none"``, ``"last"`` (the latents after the batch's last inference step,
    one [R, B, *node shape] tensor per value node) or ``"every"`` (also the pre-step latents x⁽ᵗ⁾ at
    every step, [T, R, B, *node shape] per node). When latents are recorded, the latent step at
    t = T−1 is taken; with ``"none"`` it is skipped (unobservable, engine spec §2.3).
    """

    T: int
    weight_opt: WeightOptimizer
    latent_steps: Timing = "all"
    weight_steps: Union[Timing, Mapping[int, Timing]] = "last"
    latent_opt: LatentOptimizer = field(default_factory=LatentSGD)
    lr_decay: PerRun = 0.5
    lr_growth: PerRun = 1.0
    stop_lr: Optional[PerRun] = None
    weight_step_on_stop: bool = True
    reset_weight_opt_each_batch: bool = False
    energy_coef: PerRun = 1.0
    latent_l1: PerRun = 0.0
    loss: str = "sse"
    record: str = "last"
    record_latents: str = "none"

    def __post_init__(self):
        if not isinstance(self.T, int) or isinstance(self.T, bool) or self.T < 1:
            raise ValueError(f"T must be an int > 0, got {self.T!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.record not in RECORD_MODES:
            raise ValueError(f"record must be one of {RECORD_MODES}, got {self.record!r}")
        if self.record_latents not in RECORD_MODES:
            raise ValueError(f"record_latents must be one of {RECORD_MODES}, got {self.record_latents!r}")
        if not isinstance(self.weight_opt, (SGD, Adam)):
            raise TypeError(f"weight_opt must be SGD or Adam, got {self.weight_opt!r}")
        if not isinstance(self.latent_opt, (LatentSGD, LatentAdam)):
            raise TypeError(f"latent_opt must be LatentSGD or LatentAdam, got {self.latent_opt!r}")
        d, a = torch.broadcast_tensors(host_values(self.lr_decay), host_values(self.lr_growth))
        bad = (d >= 1) & (a <= 1) & ~((d == 1) & (a == 1))
        if bool(bad.any()):
            raise ValueError(
                "lr_decay >= 1 with lr_growth <= 1 would silently switch the latent-rate rule off; "
                "set both to 1.0 to disable it"
            )
        if bool((d <= 0).any()):
            raise ValueError(f"lr_decay must be > 0, got {self.lr_decay!r}")
        if not bool((host_values(self.latent_l1) >= 0).all()):
            raise ValueError(f"latent_l1 must be >= 0, got {self.latent_l1!r}")
        compile_timing(self.latent_steps, self.T)  # validate early

    def adaptation_possible(self) -> bool:
        """Whether some run can change its latent rate (d < 1 or a > 1), read from host values."""
        d, a = torch.broadcast_tensors(host_values(self.lr_decay), host_values(self.lr_growth))
        return bool(((d < 1) | (a > 1)).any())


def compile_timing(timing: Timing, T: int) -> List[bool]:
    """A timing set as a list of T booleans (static schedule, known before the loop)."""
    if isinstance(timing, str):
        if timing == "all":
            steps = range(T)
        elif timing == "last":
            steps = [T - 1]
        elif timing == "last_half":
            steps = range(T // 2, T)
        elif timing == "never":
            steps = []
        else:
            raise ValueError(f"unknown timing {timing!r}; use one of {TIMING_NAMES} or a list of steps")
    else:
        steps = [int(t) for t in timing]
        bad = [t for t in steps if not 0 <= t < T]
        if bad:
            raise ValueError(f"timing steps {bad} outside 0..{T - 1}")
    mask = [False] * T
    for t in steps:
        mask[t] = True
    return mask


def compile_weight_timing(timing, T: int, n_weight_layers: int) -> List[List[bool]]:
    """Per weight layer l = 1..L a list of T booleans ([L][T]); a single set gives identical rows."""
    L = n_weight_layers
    if isinstance(timing, str) and timing == "zil":
        if T < L:
            raise ValueError(f"'zil' timing needs T >= L = {L}, got T = {T}")
        return [compile_timing([L - l], T) for l in range(1, L + 1)]
    if isinstance(timing, Mapping):
        bad = [k for k in timing if not (isinstance(k, int) and 1 <= k <= L)]
        if bad:
            raise ValueError(f"per-layer weight timing keys must be layer numbers 1..{L}, got {bad}")
        return [compile_timing(timing.get(l, "never"), T) for l in range(1, L + 1)]
    row = compile_timing(timing, T)
    return [list(row) for _ in range(L)]


def host_values(value: PerRun) -> Tensor:
    """A per-run hyperparameter as a float64 tensor on the host, for checks that read its values.

    Validation and the engine's static choices (is c = 1 everywhere, is λ ≠ 0 anywhere, is any
    momentum set) read values; they read them here, before any device work, so the host never waits
    for the device (DESIGN.md, "Speed"). Python numbers, sequences and CPU tensors cost
    nothing; a tensor on an accelerator is copied to the host once (one synchronisation at set-up):
    pass host values to :class:`TrainConfig` and let the :class:`~pcneuro.engine.Engine` move them.
    """
    if isinstance(value, Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64)
    return torch.as_tensor(value, dtype=torch.float64)


def per_run(value: PerRun, n_runs: int, dtype, device) -> Tensor:
    """A hyperparameter as an [R] tensor."""
    t = torch.as_tensor(value, dtype=dtype, device=device)
    if t.ndim == 0:
        return t.expand(n_runs).clone()
    if t.shape != (n_runs,):
        raise ValueError(f"per-run value must be a scalar or have {n_runs} entries, got shape {tuple(t.shape)}")
    return t.clone()


def per_param_lr(lr: LearningRate, names: Sequence[str], shapes: Dict[str, Tuple[int, ...]], n_runs: int,
                 dtype, device) -> Dict[str, Tensor]:
    """Learning rates broadcastable to each [R, *shape] parameter."""
    out = {}
    for name in names:
        if isinstance(lr, Mapping):
            if name not in lr:
                raise ValueError(f"no learning rate for parameter {name!r} (have {sorted(lr)})")
            value = lr[name]
        else:
            value = lr
        t = torch.as_tensor(value, dtype=dtype, device=device)
        full = (n_runs, *shapes[name])
        if t.ndim <= 1:
            t = per_run(t, n_runs, dtype, device).reshape(n_runs, *([1] * len(shapes[name])))
        elif tuple(t.shape) != full:
            raise ValueError(f"learning rate for {name!r} has shape {tuple(t.shape)}, expected {full}")
        out[name] = t
    if isinstance(lr, Mapping):
        extra = set(lr) - set(names)
        if extra:
            raise ValueError(f"learning rates given for unknown or fixed parameters {sorted(extra)}")
    return out
