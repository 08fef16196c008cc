"""Central finite differences of F versus the engine's gradients (engine spec §1.3, §5.1).

The closed-form backend is checked element by element against central differences of its own
objective; that objective is checked against the independent reference; the functional backend
(torch.func) is checked against the closed form on MLPs and against finite differences on a
conv net. Perturbing one element index in all R runs at once gives R differences per pair of
evaluations, since run r's objective depends on run r's tensors only.
"""
from __future__ import annotations

import pytest
import torch

from pcneuro.engine import Activation, Conv2d, Flatten, Linear, MaxPool2d, NetworkSpec, TrainConfig, SGD, init_params
from pcneuro.engine.closed_form import ClosedFormBackend
from pcneuro.engine.functional import FunctionalBackend
from pcneuro.engine.reference import ReferenceRun

DT = torch.float64
R, B = 2, 3
H = 1e-6


def mlp(sizes=(3, 4, 4, 2), act="tanh", value_nodes="pre", **kw):
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b))
        if k < len(sizes) - 2:
            layers.append(Activation(act))
    return NetworkSpec(tuple(layers), value_nodes=value_nodes, **kw)


def setup_point(spec, loss, seed=0, noise=0.5):
    """Parameters, off-equilibrium latents (feed-forward values plus noise), a batch and targets."""
    g = torch.Generator().manual_seed(seed)
    params = init_params(spec, [seed + 1, seed + 2], dtype=DT, scheme="normal", scale=0.7)
    x0 = torch.randn(B, *spec.input_shape, generator=g, dtype=DT)
    out = [l for l in spec.layers if isinstance(l, (Linear, Conv2d))][-1].out_features
    if loss == "ce":
        y = torch.nn.functional.one_hot(torch.randint(out, (R, B), generator=g), out).to(DT)
    else:
        y = torch.randn(R, B, out, generator=g, dtype=DT)
    backend = FunctionalBackend(spec, loss, torch.ones(R, dtype=DT), DT, "cpu")
    latents = [x + noise * torch.randn(x.shape, generator=g, dtype=DT)
               for x in backend.feedforward_latents(params, x0)]
    return params, latents, x0, y


def finite_difference_check(backend, params, latents, x0, y, n_layers, sample=None, seed=0):
    """Compare backend gradients with central differences of backend.evaluate(...).objective."""
    ev = backend.evaluate(params, latents, x0, y, [True] * n_layers)
    none = [False] * n_layers
    gen = torch.Generator().manual_seed(seed)

    def objective(p, lat):
        return backend.evaluate(p, lat, x0, y, none).objective

    def check(tensor, analytic, replace, label):
        n = tensor[0].numel()
        idx = range(n) if sample is None or n <= sample else torch.randperm(n, generator=gen)[:sample].tolist()
        fd = torch.zeros(R, n, dtype=DT)
        for i in idx:
            delta = torch.zeros(R, n, dtype=DT)
            delta[:, i] = H
            delta = delta.reshape(tensor.shape)
            fd[:, i] = (objective(*replace(tensor + delta)) - objective(*replace(tensor - delta))) / (2 * H)
        got = analytic.reshape(R, n)[:, list(idx)]
        torch.testing.assert_close(got, fd[:, list(idx)], rtol=1e-6, atol=1e-7, msg=lambda m: f"{label}: {m}")

    for k, x in enumerate(latents):
        def replace_latent(v, k=k):
            return params, [v if j == k else latents[j] for j in range(len(latents))]
        check(x, ev.latent_grads[k], replace_latent, f"dF/dx_{k + 1}")
    for name, p in params.items():
        def replace_param(v, name=name):
            return {**params, name: v}, latents
        check(p, ev.weight_grads[name], replace_param, f"dF/d{name}")
    return ev


@pytest.mark.parametrize("variant", ["plain", "coef-mask"])
@pytest.mark.parametrize("loss", ["sse", "ce"])
@pytest.mark.parametrize("act", ["identity", "tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("placement", ["pre", "post"])
def test_closed_form_gradients(placement, act, loss, variant):
    masks = ((1.0, 0.0, 1.0, 1.0), None) if variant == "coef-mask" else None
    coef = torch.tensor([0.7, 2.5], dtype=DT) if variant == "coef-mask" else torch.ones(R, dtype=DT)
    spec = mlp(act=act, value_nodes=placement, node_masks=masks)
    params, latents, x0, y = setup_point(spec, loss)
    cf = ClosedFormBackend(spec, loss, coef, DT, "cpu")
    ev = finite_difference_check(cf, params, latents, x0, y, spec.n_weight_layers)

    # the objective itself, against the independent reference (F = ℓ + c·E, E unscaled, masks, loss)
    config = TrainConfig(T=1, weight_opt=SGD(lr=0.1), energy_coef=coef.tolist(), loss=loss)
    for r in range(R):
        ref = ReferenceRun(spec, config, {n: p[r] for n, p in params.items()}, run=r)
        F_ref, loss_ref, energy_ref = ref.objective([x[r] for x in latents], x0, y[r])
        torch.testing.assert_close(ev.objective[r], F_ref.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ev.loss[r], loss_ref.detach(), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ev.energy[r], energy_ref.detach(), rtol=1e-12, atol=1e-12)

    # the functional backend gives the same objective and gradients
    fn = FunctionalBackend(spec, loss, coef, DT, "cpu")
    ev_fn = fn.evaluate(params, latents, x0, y, [True] * spec.n_weight_layers)
    torch.testing.assert_close(ev_fn.objective, ev.objective, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev_fn.energy, ev.energy, rtol=1e-12, atol=1e-12)
    for a, b in zip(ev_fn.latent_grads, ev.latent_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    for name in params:
        torch.testing.assert_close(ev_fn.weight_grads[name], ev.weight_grads[name], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend_cls", [ClosedFormBackend, FunctionalBackend])
@pytest.mark.parametrize("spec", [
    mlp(sizes=(3, 4, 5, 4, 2), value_nodes=(1, 4)),  # nodes post after layer 1, pre at layer 3, none between
    mlp(sizes=(3, 4, 4, 2), value_nodes="none"),  # plain BP: F = ℓ
], ids=["custom-nodes", "no-nodes"])
def test_gradients_other_node_layouts(spec, backend_cls):
    params, latents, x0, y = setup_point(spec, "sse", seed=3)
    backend = backend_cls(spec, "sse", torch.tensor([1.0, 0.4], dtype=DT), DT, "cpu")
    finite_difference_check(backend, params, latents, x0, y, spec.n_weight_layers)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_partial_weight_gradients(placement):
    """Weight gradients are formed only where asked; latent gradients do not depend on the request."""
    spec = mlp(sizes=(3, 4, 4, 4, 2), value_nodes=placement)
    params, latents, x0, y = setup_point(spec, "sse", seed=5)
    cf = ClosedFormBackend(spec, "sse", torch.ones(R, dtype=DT), DT, "cpu")
    full = cf.evaluate(params, latents, x0, y, [True] * 4)
    for need in ([False] * 4, [False, True, False, False], [True, False, False, True]):
        ev = cf.evaluate(params, latents, x0, y, need)
        for a, b in zip(ev.latent_grads, full.latent_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        asked = {n for n in params if need[spec.weight_layer_indices.index(int(n.split(".")[0]))]}
        assert set(ev.weight_grads) == asked
        for n in asked:
            torch.testing.assert_close(ev.weight_grads[n], full.weight_grads[n], rtol=0, atol=0)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_functional_conv_gradients(placement):
    spec = NetworkSpec((Conv2d(1, 2, 3, padding=1), Activation("tanh"), MaxPool2d(2), Flatten(), Linear(18, 3)),
                       value_nodes=placement, input_shape=(1, 6, 6))
    params, latents, x0, y = setup_point(spec, "ce", seed=7)
    fn = FunctionalBackend(spec, "ce", torch.tensor([0.5, 1.5], dtype=DT), DT, "cpu")
    finite_difference_check(fn, params, latents, x0, y, spec.n_weight_layers, sample=12)


# --------------------------------------------------------------------------------------------------
# latent penalty R(x) = λ Σ|x| and connectivity masks S (engine spec §1.2, §1.3)

L1 = torch.tensor([0.3, 1.1], dtype=DT)


def connectivity(n, seed):
    """A non-symmetric S: the identity plus sparse positive lateral weights."""
    g = torch.Generator().manual_seed(seed)
    lateral = torch.rand(n, n, generator=g, dtype=DT) * (torch.rand(n, n, generator=g, dtype=DT) < 0.5)
    return tuple(map(tuple, (torch.eye(n, dtype=DT) + 0.4 * lateral).tolist()))


def central_fd(f, t):
    """Central differences of f (a function of t giving [R]) with respect to every element of t."""
    n = t[0].numel()
    out = torch.zeros(R, n, dtype=DT)
    for i in range(n):
        delta = torch.zeros(R, n, dtype=DT)
        delta[:, i] = H
        delta = delta.reshape(t.shape)
        out[:, i] = (f(t + delta) - f(t - delta)) / (2 * H)
    return out.reshape(t.shape)


def reference_objectives(spec, config, params, latents, x0, y):
    out = []
    for r in range(R):
        ref = ReferenceRun(spec, config, {n: p[r] for n, p in params.items()}, run=r)
        out.append([v.detach() for v in ref.objective([x[r] for x in latents], x0, y[r])])
    return [torch.stack(v) for v in zip(*out)]  # F, loss, E as [R]


@pytest.mark.parametrize("backend_cls", [ClosedFormBackend, FunctionalBackend])
@pytest.mark.parametrize("placement", ["pre", "post"])
def test_latent_l1_gradients(placement, backend_cls):
    spec = mlp(value_nodes=placement)
    params, latents, x0, y = setup_point(spec, "sse", seed=11)
    coef = torch.tensor([0.7, 2.5], dtype=DT)
    backend = backend_cls(spec, "sse", coef, DT, "cpu", latent_l1=L1)
    ev = finite_difference_check(backend, params, latents, x0, y, spec.n_weight_layers)
    # against λ = 0: F gains λΣ|x|, E is unchanged, the latent gradients gain λ·sign(x), weights nothing
    plain = backend_cls(spec, "sse", coef, DT, "cpu").evaluate(params, latents, x0, y, [True] * spec.n_weight_layers)
    penalty = L1 * sum(x.abs().sum(dim=(-2, -1)) for x in latents)
    torch.testing.assert_close(ev.objective, plain.objective + penalty, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev.energy, plain.energy, rtol=0, atol=0)
    for g, g0, x in zip(ev.latent_grads, plain.latent_grads, latents):
        torch.testing.assert_close(g, g0 + L1.reshape(-1, 1, 1) * x.sign(), rtol=1e-12, atol=1e-12)
    for name in params:
        torch.testing.assert_close(ev.weight_grads[name], plain.weight_grads[name], rtol=0, atol=0)
    config = TrainConfig(T=1, weight_opt=SGD(lr=0.1), energy_coef=coef.tolist(), latent_l1=L1.tolist())
    F_ref, _, E_ref = reference_objectives(spec, config, params, latents, x0, y)
    torch.testing.assert_close(ev.objective, F_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ev.energy, E_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("placement, loss", [("pre", "sse"), ("post", "ce")])
def test_connectivity_gradients(placement, loss):
    """F with masks S (one node with S, one without under 'post'), and with λ ≠ 0, by finite differences;
    the objective against the reference's direct double sum over (i, j)."""
    conn = (connectivity(4, 1), connectivity(4, 2) if placement == "pre" else None)
    spec = mlp(value_nodes=placement, node_connectivity=conn)
    params, latents, x0, y = setup_point(spec, loss, seed=13)
    coef = torch.tensor([0.7, 2.5], dtype=DT)
    fn = FunctionalBackend(spec, loss, coef, DT, "cpu", latent_l1=L1)
    ev = finite_difference_check(fn, params, latents, x0, y, spec.n_weight_layers)
    config = TrainConfig(T=1, weight_opt=SGD(lr=0.1), energy_coef=coef.tolist(), latent_l1=L1.tolist(), loss=loss)
    F_ref, loss_ref, E_ref = reference_objectives(spec, config, params, latents, x0, y)
    for got, want in ((ev.objective, F_ref), (ev.loss, loss_ref), (ev.energy, E_ref)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_connectivity_node_gradients_match_the_spec_formulas():
    """The spec's ∂E/∂x = x⊙s − μS and ∂E/∂μ = μ⊙r − xSᵀ for the top node, by central differences
    of E = Σ_l E_l: no energy above the top node depends on x_top, and (placement A, μ = W f(x₁) + b)
    ∂E/∂b = Σ_b ∂E/∂μ."""
    S_top = connectivity(4, 3)
    spec = mlp(node_connectivity=(connectivity(4, 4), S_top))
    params, latents, x0, y = setup_point(spec, "sse", seed=17)
    fn = FunctionalBackend(spec, "sse", torch.ones(R, dtype=DT), DT, "cpu")
    none = [False] * spec.n_weight_layers
    S = torch.tensor(S_top, dtype=DT)
    s, r = S.sum(0), S.sum(1)
    x1, x = latents
    mu = torch.tanh(x1) @ params["2.weight"].transpose(1, 2) + params["2.bias"].unsqueeze(1)

    dE_dx = central_fd(lambda v: fn.evaluate(params, [x1, v], x0, y, none).energy, x)
    torch.testing.assert_close(dE_dx, x * s - mu @ S, rtol=1e-6, atol=1e-7)
    dE_db = central_fd(lambda b: fn.evaluate({**params, "2.bias": b}, latents, x0, y, none).energy, params["2.bias"])
    torch.testing.assert_close(dE_db, (mu * r - x @ S.T).sum(dim=1), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("placement", ["pre", "post"])
def test_connectivity_identity_is_the_default_energy(placement):
    """S = I gives exactly the default energy and gradients; a diagonal S = diag(M) gives the mask M."""
    eye = tuple(map(tuple, torch.eye(4, dtype=DT).tolist()))
    mask = (1.0, 0.0, 1.0, 1.0)
    default = mlp(value_nodes=placement, node_masks=(mask, None))
    diag = tuple(map(tuple, torch.diag(torch.tensor(mask)).tolist()))
    with_s = mlp(value_nodes=placement, node_connectivity=(diag, eye))
    params, latents, x0, y = setup_point(default, "sse", seed=19)
    coef = torch.tensor([0.7, 2.5], dtype=DT)
    need = [True] * default.n_weight_layers
    a = FunctionalBackend(default, "sse", coef, DT, "cpu").evaluate(params, latents, x0, y, need)
    b = FunctionalBackend(with_s, "sse", coef, DT, "cpu").evaluate(params, latents, x0, y, need)
    assert torch.equal(a.energy, b.energy) and torch.equal(a.objective, b.objective)
    for ga, gb in zip(a.latent_grads, b.latent_grads):
        assert torch.equal(ga, gb)
    for name in params:
        assert torch.equal(a.weight_grads[name], b.weight_grads[name])
