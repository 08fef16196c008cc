"""Functional run-stacked optimisers equal torch.optim step by step (engine spec §4.2 item 7, §5.8).

Each run of the stacked optimiser is compared with its own torch.optim instance; a random run mask
freezes some runs at some steps (their parameters and their state, incl. Adam's step count), which
for torch means simply not stepping that run.
"""
from __future__ import annotations

import pytest
import torch

from pcneuro.engine import SGD, Adam, LatentAdam, LatentSGD
from pcneuro.engine.optim import LatentOptimizer, WeightOptimizer

DT = torch.float64
R = 3
SHAPES = {"0.weight": (4, 3), "0.bias": (4,)}
N_STEPS = 12


def pick(v, r):
    t = torch.as_tensor(v, dtype=DT)
    return float(t) if t.ndim == 0 else float(t[r])


def torch_opt(config, params, r):
    groups = [{"params": [params[n]], "lr": pick(config.lr[n] if isinstance(config.lr, dict) else config.lr, r)}
              for n in SHAPES]
    wd = pick(config.weight_decay, r)
    if isinstance(config, SGD):
        return torch.optim.SGD(groups, lr=0.1, momentum=pick(config.momentum, r), dampening=config.dampening,
                               weight_decay=wd)
    cls = torch.optim.AdamW if config.decoupled else torch.optim.Adam
    return cls(groups, lr=0.1, betas=(pick(config.betas[0], r), pick(config.betas[1], r)), eps=config.eps,
               weight_decay=wd)


CONFIGS = {
    "sgd": SGD(lr=[0.1, 0.05, 0.2]),
    "sgd-momentum-dampening-wd": SGD(lr=0.1, momentum=[0.9, 0.0, 0.5], dampening=0.3, weight_decay=[0.0, 0.01, 0.1]),
    "sgd-per-param-lr": SGD(lr={"0.weight": [0.1, 0.05, 0.2], "0.bias": 0.3}, momentum=0.9),
    "adam-wd": Adam(lr=[0.01, 0.03, 0.001], betas=([0.9, 0.8, 0.95], [0.999, 0.99, 0.9]), weight_decay=[0.0, 0.1, 0.01]),
    "adamw": Adam(lr=[0.01, 0.03, 0.001], weight_decay=[0.05, 0.1, 0.0], decoupled=True, eps=1e-6),
}


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_weight_optimizer_equals_torch(name, masked):
    config = CONFIGS[name]
    g = torch.Generator().manual_seed(1)
    stacked = {n: torch.randn(R, *s, generator=g, dtype=DT) for n, s in SHAPES.items()}
    opt = WeightOptimizer(config, list(SHAPES), SHAPES, R, DT, "cpu")
    state = opt.init_state(stacked)
    plain = [{n: torch.nn.Parameter(stacked[n][r].clone()) for n in SHAPES} for r in range(R)]
    torch_opts = [torch_opt(config, plain[r], r) for r in range(R)]
    for step in range(N_STEPS):
        grads = {n: torch.randn(R, *s, generator=g, dtype=DT) for n, s in SHAPES.items()}
        mask = (torch.rand(R, generator=g) < 0.6) if masked else None
        if mask is not None and step == 0:
            mask[0] = False  # run 0 starts late: its first step is not the stack's first
        for n in SHAPES:
            stacked[n], state[n] = opt.step(n, stacked[n], grads[n], state[n], mask)
        for r in range(R):
            if mask is not None and not mask[r]:
                continue
            for n in SHAPES:
                plain[r][n].grad = grads[n][r].clone()
            torch_opts[r].step()
        for r in range(R):
            for n in SHAPES:
                torch.testing.assert_close(stacked[n][r], plain[r][n].detach(), rtol=1e-12, atol=1e-13,
                                           msg=lambda m: f"step {step} run {r} {n}: {m}")
                st = torch_opts[r].state.get(plain[r][n], {})
                for key in ("exp_avg", "exp_avg_sq", "step"):
                    if key in st:
                        torch.testing.assert_close(state[n][key][r], torch.as_tensor(st[key], dtype=DT),
                                                   rtol=1e-12, atol=1e-13)
                if st.get("momentum_buffer") is not None:
                    torch.testing.assert_close(state[n]["momentum_buffer"][r], st["momentum_buffer"],
                                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("config", [LatentSGD(lr=[0.1, 0.3, 0.05]), LatentSGD(lr=0.2, momentum=0.7),
                                    LatentAdam(lr=[0.1, 0.3, 0.05], betas=(0.8, 0.99))], ids=["sgd", "momentum", "adam"])
def test_latent_optimizer_equals_torch(config):
    """Latent SGD/momentum/Adam with a rate η that changes between steps (the latent-rate rule)."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(R, 5, 4, generator=g, dtype=DT)
    opt = LatentOptimizer(config, R, DT, "cpu")
    state = opt.init_state([x])[0]
    eta = opt.lr0.clone()
    plain = [torch.nn.Parameter(x[r].clone()) for r in range(R)]
    if isinstance(config, LatentSGD):
        torch_opts = [torch.optim.SGD([plain[r]], lr=float(eta[r]), momentum=config.momentum) for r in range(R)]
    else:
        torch_opts = [torch.optim.Adam([plain[r]], lr=float(eta[r]), betas=config.betas, eps=config.eps)
                      for r in range(R)]
    for step in range(8):
        grad = torch.randn(R, 5, 4, generator=g, dtype=DT)
        x = opt.step(x, grad, eta, state, None)
        for r in range(R):
            torch_opts[r].param_groups[0]["lr"] = float(eta[r])
            plain[r].grad = grad[r].clone()
            torch_opts[r].step()
            torch.testing.assert_close(x[r], plain[r].detach(), rtol=1e-12, atol=1e-13)
        eta = eta * torch.where(torch.rand(R, generator=g) < 0.5, 0.5, 1.2).to(DT)
