"""Errors travel one layer per step (engine spec §1.4, §5.5), and the engine warns when a layer can
never learn.

Along the latent trajectory of a depth-4 net (weights stepping every step, as under 'all'), at t = 0
only x_{L−1} and the top weight layer have nonzero gradients, x_l first has one at t = L − 1 − l and
W_l at t = L − l. The same timing is seen through the engine: with a single weight step at t, W_l
changes iff t ≥ L − l.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from pcneuro.engine import (SGD, Activation, Engine, LatentSGD, Linear, NetworkSpec, TrainConfig, build_rule,
                            init_params)
from pcneuro.engine.closed_form import ClosedFormBackend
from pcneuro.engine.functional import FunctionalBackend

DT = torch.float64
L = 4


def net(value_nodes="pre", depth=L):
    layers = []
    for k in range(depth):
        layers.append(Linear(3 if k == 0 else 5, 2 if k == depth - 1 else 5))
        if k < depth - 1:
            layers.append(Activation("tanh"))
    return NetworkSpec(tuple(layers), value_nodes=value_nodes)


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, generator=g, dtype=DT), torch.randn(4, 2, generator=g, dtype=DT)


def is_zero(t):
    return float(t.abs().max()) < 1e-13


def is_nonzero(t):
    return float(t.abs().max()) > 1e-6


@pytest.mark.parametrize("backend_cls", [ClosedFormBackend, FunctionalBackend])
@pytest.mark.parametrize("placement", ["pre", "post"])
def test_errors_travel_one_layer_per_step(placement, backend_cls):
    spec = net(placement)
    params = init_params(spec, [0, 1], dtype=DT)
    x0, y = batch()
    backend = backend_cls(spec, "sse", torch.ones(2, dtype=DT), DT, "cpu")
    latents = backend.feedforward_latents(params, x0)
    weight_names = [f"{i}.weight" for i in spec.weight_layer_indices]
    eta, lr = 0.2, 0.05
    for t in range(L + 1):
        ev = backend.evaluate(params, latents, x0, y, [True] * L)
        for l in range(1, L + 1):
            g = ev.weight_grads[weight_names[l - 1]]
            assert (is_nonzero(g) if t >= L - l else is_zero(g)), (t, l, float(g.abs().max()))
        for l in range(1, L):  # latent x_l
            g = ev.latent_grads[l - 1]
            assert (is_nonzero(g) if t >= L - 1 - l else is_zero(g)), (t, "x", l, float(g.abs().max()))
        # Jacobi step of latents and (as under weight timing 'all') of every weight layer
        latents = [x - eta * g for x, g in zip(latents, ev.latent_grads)]
        params = {n: p - lr * ev.weight_grads[n] for n, p in params.items()}


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_weight_layer_first_learns_at_L_minus_l(placement):
    spec = net(placement)
    params = init_params(spec, [0, 1], dtype=DT)
    x0, y = batch(1)
    for t in range(L):
        config = TrainConfig(T=t + 1, weight_opt=SGD(lr=0.1), weight_steps=[t], latent_opt=LatentSGD(lr=0.2),
                             lr_decay=1.0, lr_growth=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = Engine(spec, config, dict(params))
        engine.train_batch(x0, y)
        for l, i in enumerate(spec.weight_layer_indices, start=1):
            delta = engine.params[f"{i}.weight"] - params[f"{i}.weight"]
            assert (is_nonzero(delta) if t >= L - l else is_zero(delta)), (t, l)


def _warnings_of(spec, config):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Engine(spec, config, init_params(spec, [0], dtype=DT))
    return [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


def test_warns_pc_with_T_below_L():
    spec, config = build_rule("pc", net(), TrainConfig(T=L - 1, weight_opt=SGD(lr=0.1)))
    messages = _warnings_of(spec, config)
    assert len(messages) == 1 and "weight layer 1" in messages[0]
    with pytest.warns(UserWarning, match="never learns"):
        Engine(spec, config, init_params(spec, [0], dtype=DT))


@pytest.mark.parametrize("T, weight_steps, latent_steps, n_warn", [
    (L, "last", "all", 0),  # PC with T = L: every layer learns
    (2, "last", "all", 2),  # W_1 and W_2 need 3 and 2 latent steps first
    (6, "all", "never", 3),  # latents never move: only W_L learns
    (L, "zil", "all", 0),
    (6, [0, 1], "all", 2),  # weight steps too early for W_1, W_2
    (6, {1: [4], 2: [0, 1], 3: "all", 4: [0]}, "all", 1),  # per-layer map: only W_2 steps too early
])
def test_warning_cases(T, weight_steps, latent_steps, n_warn):
    config = TrainConfig(T=T, weight_opt=SGD(lr=0.1), weight_steps=weight_steps, latent_steps=latent_steps)
    assert len(_warnings_of(net(), config)) == n_warn


def test_no_warning_for_fixed_layers():
    layers = list(net().layers)
    layers[0] = Linear(3, 5, trainable=False)  # W_1 is fixed: it needs no weight step
    spec = NetworkSpec(tuple(layers))
    messages = _warnings_of(spec, TrainConfig(T=3, weight_opt=SGD(lr=0.1)))
    assert messages == []
    messages = _warnings_of(spec, TrainConfig(T=2, weight_opt=SGD(lr=0.1)))
    assert len(messages) == 1 and "weight layer 2" in messages[0]


def test_no_warning_for_nets_without_value_nodes():
    spec, config = build_rule("bp", net(), TrainConfig(T=1, weight_opt=SGD(lr=0.1)))
    assert _warnings_of(spec, config) == []
