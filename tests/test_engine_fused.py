"""The fused sweep (pcneuro/engine/closed_form.FusedSweep; Engine(fuse=True), the default) equals the
general loop (fuse=False) up to rounding (1e-10 relative, float64) wherever it applies: PC with the weights
frozen before T−1, plain latent SGD, no early stop, output mask or latent trace, "pre" chains with squared
error. Checked over activations, biases, R = 1–3, shared and per-run inputs, record modes, the latent-rate
rule, capture modes, structural masks, frozen layers, weight maps, late latent steps, stacking (R = 3 equals
three R = 1 engines) and the sweep's batch-shape cache."""
from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from pcneuro.engine import (Activation, Adam, Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule,
                            init_params)

DT = torch.float64
TOL = dict(rtol=1e-10, atol=1e-12)


def mlp(sizes, act, bias):
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, bias=bias))
        if k < len(sizes) - 2 and act:
            layers.append(Activation(act))
    return NetworkSpec(tuple(layers), value_nodes="pre")


def _engines(spec, cfg, params, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused, general = Engine(spec, cfg, dict(params), fuse=True, **kw), Engine(spec, cfg, dict(params), fuse=False)
    assert fused._fusable and not general._fusable
    return fused, general


def _compare_records(r1, r0):
    for k, v in vars(r0).items():
        w = getattr(r1, k)
        if v is None:
            assert w is None, k
            continue
        for a, c in zip(*((v, w) if isinstance(v, list) else ([v], [w]))):
            assert a.shape == c.shape and a.dtype == c.dtype, k
            if a.is_floating_point():
                torch.testing.assert_close(c, a, msg=k, **TOL)
            else:
                assert torch.equal(a, c), k


def _compare_state(e1, e0):
    for n in e0.params:
        torch.testing.assert_close(e1.params[n], e0.params[n], **TOL)
        for k, v in e0.opt_state.get(n, {}).items():
            torch.testing.assert_close(e1.opt_state[n][k], v, **TOL)


NETS = [((4, 5, 4, 3), "tanh", True), ((6, 3, 3, 2), "sigmoid", False), ((3, 4, 2), "relu", True),
        ((3, 4, 4, 4, 2), "softplus", False), ((5, 3, 6, 2), None, True), ((4, 5, 4, 3), "leaky_relu", False)]
VARIANTS = list(itertools.product((1, 3), ("none", "last", "every"), ("none", "last"), ((1.0, 1.0), (0.5, 1.2)),
                                  (False, True)))


@pytest.mark.parametrize("sizes, act, bias", NETS)
def test_fused_equals_general_loop(sizes, act, bias):
    for R, record, rec_lat, (decay, growth), per_run in VARIANTS:
        cfg = TrainConfig(T=7, weight_opt=SGD(lr=0.05), latent_opt=LatentSGD(lr=[0.1 + 0.05 * r for r in range(R)]),
                          lr_decay=decay, lr_growth=growth, record=record, record_latents=rec_lat)
        spec, cfg = build_rule("pc", mlp(sizes, act, bias), cfg)
        e1, e0 = _engines(spec, cfg, init_params(spec, list(range(R)), dtype=DT))
        g = torch.Generator().manual_seed(1)
        for b in range(2):
            lead = (R, 5 + b) if per_run else (5 + b,)
            x = torch.randn(*lead, sizes[0], generator=g, dtype=DT)
            y = torch.randn(*lead, sizes[-1], generator=g, dtype=DT)
            _compare_records(e1.train_batch(x, y), e0.train_batch(x, y))
        _compare_state(e1, e0)


@pytest.mark.parametrize("capture", ["inplace", "emulate"])
def test_fused_under_capture_modes(capture):
    cfg = TrainConfig(T=7, weight_opt=Adam(lr=0.01), latent_opt=LatentSGD(lr=[0.1, 0.15]), lr_decay=0.5,
                      record="every", record_latents="last")
    spec, cfg = build_rule("pc", mlp((4, 5, 4, 3), "tanh", True), cfg)
    e1, e0 = _engines(spec, cfg, init_params(spec, [0, 1], dtype=DT), capture=capture)
    g = torch.Generator().manual_seed(2)
    for B in (4, 6, 4):
        x, y = torch.randn(B, 4, generator=g, dtype=DT), torch.randn(B, 3, generator=g, dtype=DT)
        _compare_records(e1.train_batch(x, y), e0.train_batch(x, y))
    _compare_state(e1, e0)


MASK0 = tuple(tuple(float((i + j) % 3 != 0) for j in range(4)) for i in range(5))
MASKED = NetworkSpec((Linear(4, 5, mask=MASK0), Activation("tanh"), Linear(5, 4, trainable=False), Activation("tanh"),
                      Linear(4, 3)))


@pytest.mark.parametrize("spec, kw", [
    (MASKED, dict(weight_opt=Adam(lr=[0.01, 0.02], weight_decay=0.01))),
    (MASKED, dict(weight_steps={1: "last", 2: "never", 3: "last"}, reset_weight_opt_each_batch=True,
                  weight_opt=SGD(lr=0.1, momentum=0.9))),
    (mlp((4, 5, 4, 3), "sigmoid", True), dict(weight_steps={1: "never", 2: "last", 3: "last"},
                                              latent_steps="last_half")),
    (mlp((4, 5, 4, 3), "sigmoid", True), dict(weight_steps="never")),
    (mlp((4, 5, 4, 3), "sigmoid", True), dict(T=2, lr_growth=1.5)),
    (mlp((4, 5, 4, 3), "sigmoid", True), dict(latent_steps=[2, 3, 5], weight_steps="last")),
])
def test_fused_structures_and_schedules(spec, kw):
    base = dict(T=6, weight_opt=SGD(lr=0.05), latent_opt=LatentSGD(lr=[0.1, 0.2]), record="every", lr_decay=0.6)
    e1, e0 = _engines(spec, TrainConfig(**{**base, **kw}), init_params(spec, [7, 8], dtype=DT))
    g = torch.Generator().manual_seed(5)
    for B in (3, 5, 3):
        x, y = torch.randn(B, 4, generator=g, dtype=DT), torch.randn(B, 3, generator=g, dtype=DT)
        _compare_records(e1.train_batch(x, y), e0.train_batch(x, y))
    _compare_state(e1, e0)


@pytest.mark.parametrize("per_run", [False, True])
def test_fused_stacked_runs_equal_single_runs(per_run):
    sizes, R = (4, 5, 4, 3), 3
    lr, mom, lat, decay, growth = [0.05, 0.02, 0.04], [0.0, 0.9, 0.5], [0.1, 0.3, 0.2], [0.5, 0.7, 0.9], [1.0, 1.1, 1.3]
    spec, cfg = build_rule("pc", mlp(sizes, "tanh", True), TrainConfig(
        T=9, weight_opt=SGD(lr=lr, momentum=mom), latent_opt=LatentSGD(lr=lat), lr_decay=decay, lr_growth=growth,
        record="every"))
    params = init_params(spec, [4, 5, 6], dtype=DT)
    big = Engine(spec, cfg, dict(params))
    assert big._fusable
    singles = [Engine(spec, build_rule("pc", mlp(sizes, "tanh", True), TrainConfig(
        T=9, weight_opt=SGD(lr=lr[r], momentum=mom[r]), latent_opt=LatentSGD(lr=lat[r]), lr_decay=decay[r],
        lr_growth=growth[r], record="every"))[1], {n: p[r:r + 1] for n, p in params.items()}) for r in range(R)]
    g = torch.Generator().manual_seed(3)
    for B in (4, 7, 4):
        lead = (R, B) if per_run else (B,)
        x, y = torch.randn(*lead, 4, generator=g, dtype=DT), torch.randn(*lead, 3, generator=g, dtype=DT)
        rb = big.train_batch(x, y)
        for r, e in enumerate(singles):
            rs = e.train_batch(x[r:r + 1] if per_run else x, y[r:r + 1] if per_run else y)
            for k in ("loss", "energy", "objective", "latent_lr"):
                torch.testing.assert_close(getattr(rb, k)[:, r], getattr(rs, k)[:, 0], **TOL)
    for r, e in enumerate(singles):
        for n in params:
            torch.testing.assert_close(big.params[n][r], e.params[n][0], **TOL)


def test_frozen_latents_give_exact_zero_gradients_below_the_top():
    spec = mlp((6, 5, 5, 3), "sigmoid", False)
    cfg = TrainConfig(T=4, weight_opt=SGD(lr=0.5), latent_opt=LatentSGD(lr=0.3), latent_steps="never",
                      weight_steps="last", record="last")
    params = init_params(spec, [1, 2, 3], dtype=torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        e = Engine(spec, cfg, dict(params))
    assert e._fusable
    e.train_batch(torch.randn(60, 6), torch.randn(60, 3))
    names = [f"{i}.weight" for i in spec.weight_layer_indices]
    assert torch.equal(e.params[names[0]], params[names[0]]) and torch.equal(e.params[names[1]], params[names[1]])
    assert not torch.equal(e.params[names[2]], params[names[2]])


def test_sweep_cache_keeps_the_latest_batch_shapes():
    spec = mlp((4, 5, 4, 3), "tanh", True)
    cfg = TrainConfig(T=5, weight_opt=SGD(lr=0.05), latent_opt=LatentSGD(lr=[0.1, 0.2]), record="every", lr_decay=0.6)
    e1, e0 = _engines(spec, cfg, init_params(spec, [1, 2], dtype=DT))
    g = torch.Generator().manual_seed(9)
    for B in [1, 2, 3, 4, 5, 6, 7] * 2:
        x, y = torch.randn(B, 4, generator=g, dtype=DT), torch.randn(B, 3, generator=g, dtype=DT)
        torch.testing.assert_close(e1.train_batch(x, y).objective, e0.train_batch(x, y).objective, **TOL)
    assert len(e1.backend._sweeps) == e1.backend.max_sweeps == 4
    _compare_state(e1, e0)
