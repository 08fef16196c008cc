"""Run stacking (engine spec §4.2 item 6, §5.7).

R stacked runs with mixed seeds and hyperparameters (latent rates, decays, growths, stop rates so
that stops fire at different t, weight rates and decays, energy coefficients) equal the same runs
trained one at a time, and reordering the runs changes nothing: 1e-10 in float64, 1e-5 in float32.
"""
from __future__ import annotations

import warnings
from dataclasses import replace
from typing import Mapping

import pytest
import torch

from pcneuro.engine import (SGD, Activation, Adam, Conv2d, Engine, Flatten, LatentAdam, LatentSGD, Linear,
                            NetworkSpec, TrainConfig, init_params)

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)


def mlp(value_nodes="pre"):
    return NetworkSpec((Linear(4, 6), Activation("tanh"), Linear(6, 5), Activation("tanh"), Linear(5, 3)),
                       value_nodes=value_nodes)


def conv():
    return NetworkSpec((Conv2d(1, 2, 3), Activation("tanh"), Flatten(), Linear(2 * 9, 3)),
                       value_nodes="pre", input_shape=(1, 5, 5))


def _map(v, fn):
    """Apply fn to a per-run hyperparameter (scalars pass through; mappings are mapped)."""
    if v is None:
        return None
    if isinstance(v, Mapping):
        return {k: _map(x, fn) for k, x in v.items()}
    t = torch.as_tensor(v, dtype=DT)
    return v if t.ndim == 0 else fn(t)


def map_config(cfg: TrainConfig, fn) -> TrainConfig:
    """The same config with fn applied to every per-run value ([R] or [R, *shape] tensors)."""
    wo = cfg.weight_opt
    changes = dict(lr=_map(wo.lr, fn), weight_decay=_map(wo.weight_decay, fn))
    if isinstance(wo, SGD):
        changes["momentum"] = _map(wo.momentum, fn)
    else:
        changes["betas"] = (_map(wo.betas[0], fn), _map(wo.betas[1], fn))
    return replace(cfg, weight_opt=replace(wo, **changes),
                   latent_opt=replace(cfg.latent_opt, lr=_map(cfg.latent_opt.lr, fn)),
                   lr_decay=_map(cfg.lr_decay, fn), lr_growth=_map(cfg.lr_growth, fn),
                   stop_lr=_map(cfg.stop_lr, fn), energy_coef=_map(cfg.energy_coef, fn))


def one_run(cfg, r):
    return map_config(cfg, lambda t: t[r:r + 1])


def permuted(cfg, perm):
    return map_config(cfg, lambda t: t[perm])


def make_engine(spec, cfg, params, backend):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Engine(spec, cfg, {n: p.clone() for n, p in params.items()}, backend=backend)


def data(spec, R, per_run, n=3, B=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    lead = (R, B) if per_run else (B,)
    return [(torch.randn(*lead, *spec.input_shape, generator=g, dtype=DT), torch.randn(*lead, 3, generator=g, dtype=DT))
            for _ in range(n)]


def assert_runs_equal(stacked, rec_stacked, single, rec_single, r, r_single=0, tol=TOL):
    for key in ("loss0", "loss", "energy", "objective", "latent_lr", "steps"):
        a, b = getattr(rec_stacked, key), getattr(rec_single, key)
        a, b = (a[r], b[r_single]) if a.ndim == 1 else (a[:, r], b[:, r_single])
        torch.testing.assert_close(a.to(DT), b.to(DT), **tol, msg=lambda m: f"run {r} {key}: {m}")
    for name in stacked.params:
        torch.testing.assert_close(stacked.params[name][r], single.params[name][r_single], **tol)
    for name, st in stacked.opt_state.items():
        for key, v in st.items():
            if key not in single.opt_state[name]:  # e.g. no momentum buffer for a run without momentum
                continue
            torch.testing.assert_close(v[r], single.opt_state[name][key][r_single], **tol)


R = 4
SEEDS = [5, 6, 5, 7]  # run 2 repeats run 0's seed with other hyperparameters
COMMON = dict(T=10, record="every", latent_opt=LatentSGD(lr=[0.1, 3.0, 1.0, 2.0]), lr_decay=[0.5, 0.5, 0.7, 0.3],
              lr_growth=[1.0, 1.1, 1.0, 1.2], stop_lr=[0.1, 0.8, 0.7, 1e-3], energy_coef=[1.0, 0.5, 2.0, 1.0])
CASES = {
    "adam-last-half": (mlp(), TrainConfig(
        weight_opt=Adam(lr=[0.01, 0.002, 0.005, 0.001], betas=([0.9, 0.8, 0.9, 0.85], 0.999),
                        weight_decay=[0.0, 0.01, 0.02, 0.0]),
        weight_steps="last_half", **COMMON), False, "closed_form"),
    "sgd-param-lr-no-stop-step": (mlp("post"), TrainConfig(
        weight_opt=SGD(lr={"0.weight": torch.linspace(1e-3, 1e-2, R * 24, dtype=DT).reshape(R, 6, 4),
                           "0.bias": [0.01, 0.002, 0.005, 0.001], "2.weight": 0.003, "2.bias": 0.003,
                           "4.weight": [0.01, 0.002, 0.005, 0.001], "4.bias": 0.01},
                       momentum=[0.9, 0.0, 0.5, 0.9], weight_decay=[0.0, 0.01, 0.0, 0.001]),
        weight_steps="all", weight_step_on_stop=False, **COMMON), True, "closed_form"),
    "latent-adam-functional": (mlp(), TrainConfig(
        weight_opt=Adam(lr=[0.01, 0.002, 0.005, 0.001], weight_decay=0.01, decoupled=True),
        weight_steps=[3, 5, 9], **{**COMMON, "latent_opt": LatentAdam(lr=[0.1, 3.0, 1.0, 2.0])}),
        False, "functional"),
    "conv-functional": (conv(), TrainConfig(
        weight_opt=SGD(lr=[0.01, 0.002, 0.005, 0.001], momentum=0.9), weight_steps="all", **COMMON),
        True, "functional"),
}


@pytest.mark.parametrize("dtype, tol", [(torch.float64, TOL), (torch.float32, dict(rtol=1e-5, atol=1e-5))],
                         ids=["float64", "float32"])
@pytest.mark.parametrize("name", list(CASES))
def test_stacked_equals_single_and_order_free(name, dtype, tol):
    spec, cfg, per_run, backend = CASES[name]
    params = init_params(spec, SEEDS, dtype=dtype)
    perm = torch.tensor([2, 0, 3, 1])
    stacked = make_engine(spec, cfg, params, backend)
    reordered = make_engine(spec, permuted(cfg, perm), {n: p[perm] for n, p in params.items()}, backend)
    singles = [make_engine(spec, one_run(cfg, r), {n: p[r:r + 1] for n, p in params.items()}, backend)
               for r in range(R)]
    steps = set()
    for x, y in data(spec, R, per_run):
        x, y = x.to(dtype), y.to(dtype)
        rec = stacked.train_batch(x, y)
        rec_p = reordered.train_batch(x[perm] if per_run else x, y[perm] if per_run else y)
        steps.update(rec.steps.tolist())
        for r, single in enumerate(singles):
            rec_1 = single.train_batch(x[r:r + 1] if per_run else x, y[r:r + 1] if per_run else y)
            assert_runs_equal(stacked, rec, single, rec_1, r, tol=tol)
        for i, r in enumerate(perm.tolist()):
            assert_runs_equal(stacked, rec, reordered, rec_p, r, i, tol=tol)
    assert len(steps) >= 3 and 1 in steps, f"stops should fire at different t, got step counts {steps}"
    assert all(torch.isfinite(p).all() for p in stacked.params.values())


@pytest.mark.parametrize("scheme", ["torch", "xavier_normal", "xavier_uniform"])
def test_init_schemes_have_their_bounds_and_spread(scheme):
    """torch: U(±1/√fan_in); Xavier (gain 1): normal with var 2/(in+out), uniform on ±√(6/(in+out)).
    Each run's draw depends only on its seed."""
    import math

    from pcneuro.engine import Linear, NetworkSpec, init_params

    spec = NetworkSpec((Linear(784, 32, bias=False), Linear(32, 10, bias=False)))
    p = init_params(spec, [3, 4], scheme=scheme, dtype=torch.float64)
    w = p["0.weight"]
    assert torch.equal(init_params(spec, [4], scheme=scheme, dtype=torch.float64)["0.weight"][0], w[1])
    if scheme == "torch":
        bound, var = 1 / math.sqrt(784), 1 / (3 * 784)
    elif scheme == "xavier_uniform":
        bound, var = math.sqrt(6 / (784 + 32)), 2 / (784 + 32)
    else:
        bound, var = math.inf, 2 / (784 + 32)
    assert float(w.abs().max()) <= bound
    assert abs(float(w.var()) / var - 1) < 0.05
