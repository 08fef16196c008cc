"""The fast engine equals the plain autograd reference of engine spec §2.3 (spec §5.2).

Each case trains R = 2 stacked runs (different seeds and hyperparameters) for a few batches with the
engine (both backends where they apply) and one :class:`ReferenceRun` per run, and compares the
per-step records (record="every"), the weights, the forward predictions and the weight-optimiser
state. Float64 on CPU.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from pcneuro.engine import (SGD, Activation, Adam, AvgPool2d, Conv2d, Engine, Flatten, LatentAdam, LatentSGD,
                            Linear, MaxPool2d, NetworkSpec, TrainConfig, init_params)
from pcneuro.engine.reference import ReferenceRun, node_positions

DT = torch.float64
TOL = dict(rtol=1e-9, atol=1e-11)


def close(a, b, what=""):
    torch.testing.assert_close(torch.as_tensor(a, dtype=DT), torch.as_tensor(b, dtype=DT), **TOL, msg=lambda m: f"{what}: {m}")


def mlp(sizes=(4, 5, 4, 3), act="tanh", value_nodes="pre", layer_kw=None, **kw):
    layer_kw = layer_kw or {}
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, **layer_kw.get(k, {})))
        if k < len(sizes) - 2:
            layers.append(Activation(act))
    return NetworkSpec(tuple(layers), value_nodes=value_nodes, **kw)


def conv_net(value_nodes="pre", pool=None, **kw):
    layers = [Conv2d(1, 2, 3, padding=1), Activation("tanh")]
    if pool == "max":
        layers.append(MaxPool2d(2))
    elif pool == "avg":
        layers.append(AvgPool2d(2))
    side = 3 if pool else 6
    layers += [Flatten(), Linear(2 * side * side, 3)]
    return NetworkSpec(tuple(layers), value_nodes=value_nodes, input_shape=(1, 6, 6), **kw)


def make_batches(spec, n_batches, R, B, per_run_input, loss, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = [l for l in spec.layers if isinstance(l, (Linear, Conv2d))][-1].out_features
    lead = (R, B) if per_run_input else (B,)
    data = []
    for _ in range(n_batches):
        x = torch.randn(*lead, *spec.input_shape, generator=g, dtype=DT)
        if loss == "ce":
            y = torch.nn.functional.one_hot(torch.randint(out, lead, generator=g), out).to(DT)
        else:
            y = torch.randn(*lead, out, generator=g, dtype=DT)
        data.append((x, y))
    return data


def assert_final_state(engines, refs, x_test):
    """Every engine's weights, forward prediction and weight-optimiser state equal each reference run's."""
    for r, ref in enumerate(refs):
        ref_state = ref.optimizer_state()
        for b, e in engines.items():
            for name, value in ref.params.items():
                close(e.params[name][r], value, f"{b} run {r} {name}")
            close(e.forward(x_test)[r], ref.forward(x_test), f"{b} run {r} forward")
            for name, st in ref_state.items():
                for key in ("exp_avg", "exp_avg_sq", "momentum_buffer", "step"):
                    if st.get(key) is not None:
                        close(e.opt_state[name][key][r], st[key], f"{b} run {r} {name} {key}")


def check_parity(spec, cfg, seeds=(1, 2), n_batches=3, B=5, per_run_input=False, backends=None, scale=1.0):
    """Train engines and references side by side; return the step counts of the references."""
    R = len(seeds)
    params = init_params(spec, seeds, dtype=DT, scale=scale)
    if backends is None:
        backends = ("closed_form", "functional") if spec.is_mlp() else ("functional",)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engines = {b: Engine(spec, cfg, dict(params), backend=b) for b in backends}
    refs = [ReferenceRun(spec, cfg, {n: p[r] for n, p in params.items()}, run=r) for r in range(R)]
    steps = []
    for x, y in make_batches(spec, n_batches, R, B, per_run_input, cfg.loss):
        recs = {b: e.train_batch(x, y) for b, e in engines.items()}
        for r, ref in enumerate(refs):
            rr = ref.train_batch(x[r] if per_run_input else x, y[r] if per_run_input else y)
            n = rr["steps"]
            steps.append(n)
            for b, rec in recs.items():
                assert int(rec.steps[r]) == n, (b, r, rec.steps, n)
                close(rec.loss0[r], rr["loss0"], f"{b} run {r} loss0")
                for key in ("loss", "energy", "objective", "latent_lr"):
                    expect = torch.zeros(cfg.T, dtype=DT)
                    expect[:n] = torch.tensor(rr[key], dtype=DT)
                    close(getattr(rec, key)[:, r], expect, f"{b} run {r} {key}")
    assert_final_state(engines, refs, make_batches(spec, 1, R, B, False, cfg.loss, seed=99)[0][0])
    assert all(torch.isfinite(p).all() for e in engines.values() for p in e.params.values()), "diverged"
    changed = any(not torch.equal(e.params[n], params[n]) for e in engines.values() for n in params)
    assert changed, "nothing learned: the case is vacuous"
    return steps


def cfg(**kw):
    base = dict(T=6, weight_opt=SGD(lr=[0.05, 0.02]), latent_opt=LatentSGD(lr=[0.1, 0.2]), record="every")
    base.update(kw)
    return TrainConfig(**base)


ADAM_WD = Adam(lr=[0.01, 0.005], betas=([0.9, 0.8], 0.999), weight_decay=[0.01, 0.0])
MASK0 = tuple(tuple(float((i + j) % 3 != 0) for j in range(4)) for i in range(5))


def connectivity(n, seed=0):
    """A non-symmetric connectivity mask S: the identity plus sparse positive lateral weights."""
    g = torch.Generator().manual_seed(seed)
    lateral = torch.rand(n, n, generator=g, dtype=DT) * (torch.rand(n, n, generator=g, dtype=DT) < 0.3)
    return tuple(map(tuple, (torch.eye(n, dtype=DT) + 0.3 * lateral).tolist()))


CASES = {
    # placements x timings
    "pc-pre": (mlp(), cfg()),
    "pc-post": (mlp(value_nodes="post"), cfg()),
    "ppc-pre-adam-wd": (mlp(), cfg(weight_steps="all", weight_opt=ADAM_WD, latent_opt=LatentSGD(lr=0.5))),
    "ppc-post-adamw": (mlp(value_nodes="post"),
                       cfg(weight_steps="all", weight_opt=Adam(lr=0.01, weight_decay=0.05, decoupled=True))),
    "last-half-sgd-momentum": (mlp(), cfg(weight_steps="last_half",
                                          weight_opt=SGD(lr=0.03, momentum=[0.9, 0.5], dampening=0.1,
                                                         weight_decay=0.01))),
    "latents-never": (mlp(), cfg(latent_steps="never", weight_steps="all")),
    "latents-last": (mlp(act="sigmoid"), cfg(latent_steps="last", weight_steps="last")),
    "latents-last-half": (mlp(value_nodes="post"), cfg(latent_steps="last_half", weight_steps="all")),
    "explicit-lists": (mlp(act="sigmoid"), cfg(latent_steps=[0, 1, 3], weight_steps=[2, 4, 5])),
    "per-layer-map": (mlp(value_nodes="post"), cfg(weight_steps={1: "last", 2: [1, 3], 3: "all"})),
    "zil": (mlp(), cfg(T=3, weight_steps="zil", latent_opt=LatentSGD(lr=1.0), lr_decay=1.0, lr_growth=1.0)),
    # latent-rate adaptation
    "adapt-off": (mlp(), cfg(latent_opt=LatentSGD(lr=[0.3, 1.5]), lr_decay=1.0, lr_growth=1.0)),
    "adapt-decay": (mlp(), cfg(latent_opt=LatentSGD(lr=[0.3, 1.5]), lr_decay=[0.5, 0.7])),
    "adapt-growth": (mlp(value_nodes="post"),
                     cfg(T=8, latent_opt=LatentSGD(lr=[0.3, 1.2]), lr_decay=0.5, lr_growth=[1.3, 1.1])),
    # latent optimisers
    "latent-momentum": (mlp(), cfg(latent_opt=LatentSGD(lr=[0.1, 0.3], momentum=0.7), weight_steps="all")),
    "latent-adam": (mlp(value_nodes="post"),
                    cfg(latent_opt=LatentAdam(lr=[0.05, 0.2], betas=(0.8, 0.99)), weight_steps="last_half",
                        weight_opt=ADAM_WD)),
    # objective variants
    "ce-coef-mask": (mlp(node_masks=((1.0, 0.0, 1.0, 1.0, 0.0), None)),
                     cfg(loss="ce", energy_coef=[0.5, 2.0], weight_steps="all", weight_opt=ADAM_WD)),
    "relu-post-ce": (mlp(act="relu", value_nodes="post"), cfg(loss="ce", energy_coef=0.3)),
    "softplus-no-bias": (mlp(act="softplus", layer_kw={1: {"bias": False}}), cfg(weight_steps="all")),
    # latent penalty λΣ|x| (per run, one run without it) and connectivity masks S (functional backend only)
    "latent-l1-pre": (mlp(), cfg(latent_l1=[0.05, 0.2], weight_steps="all")),
    "latent-l1-post-ce-adapt": (mlp(value_nodes="post"), cfg(loss="ce", latent_l1=[0.0, 0.1], energy_coef=[0.5, 2.0],
                                                             latent_opt=LatentSGD(lr=[0.3, 1.2]), lr_growth=1.2)),
    "connectivity-pre": (mlp(node_connectivity=(connectivity(5, 1), connectivity(4, 2))),
                         cfg(weight_steps="all", energy_coef=[1.0, 0.5])),
    "connectivity-post-l1": (mlp(value_nodes="post", node_connectivity=(None, connectivity(4, 3))),
                             cfg(latent_l1=[0.1, 0.02], weight_opt=ADAM_WD, lr_growth=1.1)),
    "connectivity-conv": (conv_net("pre", node_connectivity=(connectivity(72, 4),)), cfg(T=4, weight_steps="all")),
    # structure: frozen layer, weight mask, per-parameter and elementwise learning rates
    "frozen-mask-param-lr": (
        mlp(layer_kw={0: {"mask": MASK0}, 1: {"trainable": False}}),
        cfg(weight_steps="all", weight_opt=SGD(
            lr={"0.weight": torch.linspace(0.01, 0.1, 40, dtype=DT).reshape(2, 5, 4), "0.bias": [0.1, 0.05],
                "4.weight": 0.02, "4.bias": 0.03},
            momentum=0.8, weight_decay=0.01))),
    "elementwise-lr-adamw": (
        mlp(value_nodes="post", layer_kw={0: {"mask": MASK0}}),
        cfg(weight_steps="all", weight_opt=Adam(
            lr={"0.weight": torch.linspace(0.001, 0.02, 40, dtype=DT).reshape(2, 5, 4), "0.bias": 0.01,
                "2.weight": [0.01, 0.02], "2.bias": 0.01, "4.weight": 0.005, "4.bias": 0.01},
            weight_decay=0.1, decoupled=True))),
    "reset-weight-opt": (mlp(), cfg(weight_steps="all", weight_opt=ADAM_WD, reset_weight_opt_each_batch=True)),
    "custom-node-positions": (mlp(sizes=(4, 5, 4, 4, 3), value_nodes=(1, 4)), cfg(T=5, weight_steps="all")),
    "no-value-nodes-rbp": (mlp(value_nodes="none"), cfg(T=3, weight_steps="all", weight_opt=ADAM_WD)),
    # per-run input [R, B, in]
    "per-run-input": (mlp(), cfg(weight_steps="all")),
    # general layers through the functional backend
    "conv-pre": (conv_net("pre"), cfg(T=4, weight_steps="all")),
    "conv-post-maxpool": (conv_net("post", pool="max"), cfg(T=4, weight_opt=ADAM_WD, weight_steps="last_half")),
    "conv-pre-avgpool": (conv_net("pre", pool="avg"), cfg(T=4)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_engine_equals_reference(name):
    spec, config = CASES[name]
    check_parity(spec, config, per_run_input=name == "per-run-input")


@pytest.mark.parametrize("on_stop", [True, False])
@pytest.mark.parametrize("placement", ["pre", "post"])
def test_early_stop_parity(on_stop, placement):
    """Stops fire at different t per run: at t = 0 (η0 ≤ stop_lr) and after a few decays."""
    config = cfg(T=8, latent_opt=LatentSGD(lr=[0.05, 3.0]), lr_decay=0.5, stop_lr=[0.05, 0.8],
                 weight_step_on_stop=on_stop, weight_steps=[0, 2, 5, 7], weight_opt=SGD(lr=[0.02, 0.002]))
    steps = check_parity(mlp(value_nodes=placement), config, n_batches=3)
    assert min(steps) == 1  # run 0 stops at t = 0
    assert any(1 < s < 8 for s in steps), steps  # run 1 stops later, inside the batch


def test_record_last_matches_reference():
    spec = mlp()
    config = cfg(T=8, record="last", latent_opt=LatentSGD(lr=[0.05, 3.0]), stop_lr=[0.05, 0.8],
                 weight_opt=SGD(lr=[0.02, 0.002]))
    params = init_params(spec, [3, 4], dtype=DT)
    engine = Engine(spec, config, dict(params))
    refs = [ReferenceRun(spec, config, {n: p[r] for n, p in params.items()}, run=r) for r in range(2)]
    for x, y in make_batches(spec, 2, 2, 5, False, "sse"):
        rec = engine.train_batch(x, y)
        for r, ref in enumerate(refs):
            rr = ref.train_batch(x, y)
            assert int(rec.steps[r]) == rr["steps"]
            close(rec.loss0[r], rr["loss0"])
            for key in ("loss", "energy", "objective", "latent_lr"):
                close(getattr(rec, key)[r], rr[key][-1], key)


def test_reference_node_positions_match_spec():
    for spec in (mlp(), mlp(value_nodes="post"), mlp(value_nodes="none"), mlp(sizes=(4, 5, 4, 4, 3), value_nodes=(1, 4)),
                 conv_net("pre"), conv_net("post", pool="max")):
        assert node_positions(spec) == spec.node_positions


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_ties_trigger_the_decay(placement):
    """At equilibrium (y = feed-forward output, latents at μ) F stays 0: every comparison is a tie,
    which counts as "not decreasing", so η decays after every latent step from t = 1 on."""
    spec = mlp(value_nodes=placement)
    config = cfg(T=5, lr_decay=[0.5, 0.25], lr_growth=2.0, weight_opt=SGD(lr=0.1))
    params = init_params(spec, [1, 2], dtype=DT)
    engine = Engine(spec, config, dict(params))
    x = make_batches(spec, 1, 2, 5, False, "sse")[0][0]
    y = engine.forward(x)
    rec = engine.train_batch(x, y)
    for r, (eta0, d) in enumerate(((0.1, 0.5), (0.2, 0.25))):
        expect = torch.tensor([eta0, eta0, eta0 * d, eta0 * d * d, eta0 * d ** 3], dtype=DT)
        close(rec.latent_lr[:, r], expect, "eta")
        assert float(rec.objective[:, r].abs().max()) == 0.0
        rr = ReferenceRun(spec, config, {n: p[r] for n, p in params.items()}, run=r).train_batch(x, y[r])
        close(rec.latent_lr[:, r], rr["latent_lr"], "reference eta")


@pytest.mark.parametrize("adapt", [False, True])
def test_record_none_trains_the_same(adapt):
    """Without records (and, when adaptation is off, without any need for F) the weights still match."""
    spec = mlp()
    config = cfg(record="none", weight_steps="last_half", lr_decay=0.5 if adapt else 1.0,
                 latent_opt=LatentSGD(lr=[0.3, 1.5]))
    params = init_params(spec, [1, 2], dtype=DT)
    engines = [Engine(spec, config, dict(params), backend=b) for b in ("closed_form", "functional")]
    refs = [ReferenceRun(spec, config, {n: p[r] for n, p in params.items()}, run=r) for r in range(2)]
    for x, y in make_batches(spec, 3, 2, 5, False, "sse"):
        for e in engines:
            assert e.train_batch(x, y).loss is None
        for ref in refs:
            ref.train_batch(x, y)
    for r, ref in enumerate(refs):
        for name, value in ref.params.items():
            for e in engines:
                close(e.params[name][r], value, f"{e.backend_name} run {r} {name}")


@pytest.mark.parametrize("placement", ["pre", "post"])
@pytest.mark.parametrize("weight_opt", [SGD(lr=[0.02, 0.002], momentum=[0.9, 0.5]), ADAM_WD],
                         ids=["sgd-momentum", "adam-wd"])
@pytest.mark.parametrize("weight_steps", ["last", {1: "last", 2: "never", 3: "last"}], ids=["last", "map-never"])
def test_deferred_weight_step_parity(placement, weight_opt, weight_steps):
    """Early stop with the stop-time weight step and weights stepping only at T-1: the engine keeps each
    run's latents at its due step and steps the weights once after the loop (engine spec §4.2 item 5).
    Weights, optimiser state and records equal the reference, which steps inside the loop."""
    config = cfg(T=8, latent_opt=LatentSGD(lr=[0.05, 3.0]), lr_decay=0.5, stop_lr=[0.05, 0.8],
                 weight_step_on_stop=True, weight_steps=weight_steps, weight_opt=weight_opt)
    spec = mlp(value_nodes=placement)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert Engine(spec, config, init_params(spec, [1, 2], dtype=DT)).deferred
    steps = check_parity(spec, config, n_batches=3)
    assert min(steps) == 1 and any(1 < s < 8 for s in steps), steps  # stops at t = 0 and inside the batch
