"""The CIFAR-10 CNN shape (benchmarks spec §3.5, Fig 4i) on the functional backend, in miniature.

Strided, padded, bias-free convolutions with value nodes on their pre-activations, ReLU, a flatten
into a Linear layer with a value node, a linear output, Adam with coupled weight decay, per-run
inputs [R, B, C, H, W]:
  * PPC and RBP with R = 2 stacked runs equal each run trained alone (engine spec §5.7);
  * PPC equals the plain autograd reference of engine spec §2.3 (spec §5.2);
  * RBP with T steps equals T sequential ``loss.backward()`` + ``torch.optim.Adam`` steps of the
    plain torch net on the same batch (spec §5.3, benchmarks spec §1.1).
"""
from __future__ import annotations

import pytest
import torch

from pcneuro.engine import (Activation, Adam, Conv2d, Engine, Flatten, LatentSGD, Linear, NetworkSpec, TrainConfig,
                            build_rule, init_params)
from pcneuro.engine.reference import ReferenceRun

DT = torch.float64
SIDE, C0, C1, C2, HIDDEN, OUT = 8, 3, 4, 5, 6, 3
R, B, T = 2, 4, 5
LR, LATENT_LR, WD = [0.01, 0.004], [0.5, 0.3], 0.01  # per run


def cnn() -> NetworkSpec:
    flat = C2 * (SIDE // 4) ** 2
    return NetworkSpec((Conv2d(C0, C1, 3, stride=2, padding=1, bias=False), Activation("relu"),
                        Conv2d(C1, C2, 3, stride=2, padding=1, bias=False), Activation("relu"),
                        Flatten(), Linear(flat, HIDDEN), Activation("relu"), Linear(HIDDEN, OUT)),
                       value_nodes="pre", input_shape=(C0, SIDE, SIDE))


def config(lr=LR, latent_lr=LATENT_LR) -> TrainConfig:
    return TrainConfig(T=T, weight_opt=Adam(lr=lr, weight_decay=WD), latent_opt=LatentSGD(lr=latent_lr),
                       lr_decay=0.5, record="every")


def batches(n=3, seed=0, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(R, B, C0, SIDE, SIDE, generator=g, dtype=dtype),
             torch.nn.functional.one_hot(torch.randint(OUT, (R, B), generator=g), OUT).to(dtype)) for _ in range(n)]


def engine(rule: str, params, lr=LR, latent_lr=LATENT_LR) -> Engine:
    spec, cfg = build_rule(rule, cnn(), config(lr, latent_lr))
    return Engine(spec, cfg, {n: p.clone() for n, p in params.items()}, backend="functional")


@pytest.mark.parametrize("dtype, tol", [(torch.float64, dict(rtol=1e-10, atol=1e-10)),
                                        (torch.float32, dict(rtol=1e-5, atol=1e-5))], ids=["float64", "float32"])
@pytest.mark.parametrize("rule", ["ppc", "rbp"])
def test_stacked_runs_equal_single_runs(rule, dtype, tol):
    params = init_params(cnn(), [3, 4], dtype=dtype)
    stacked = engine(rule, params)
    singles = [engine(rule, {n: p[r:r + 1] for n, p in params.items()}, LR[r], LATENT_LR[r]) for r in range(R)]
    for x, y in batches(dtype=dtype):
        rec = stacked.train_batch(x, y)
        for r, single in enumerate(singles):
            rec_1 = single.train_batch(x[r:r + 1], y[r:r + 1])
            for key in ("loss0", "loss", "energy", "objective", "latent_lr"):
                a, b = getattr(rec, key), getattr(rec_1, key)
                torch.testing.assert_close(a[..., r], b[..., 0], **tol, msg=lambda m: f"run {r} {key}: {m}")
            for name, p in stacked.params.items():
                torch.testing.assert_close(p[r], single.params[name][0], **tol, msg=lambda m: f"run {r} {name}: {m}")
                for key, v in stacked.opt_state[name].items():
                    torch.testing.assert_close(v[r], single.opt_state[name][key][0], **tol)
    assert any(not torch.equal(stacked.params[n], params[n]) for n in params), "nothing learned"
    if rule == "ppc":  # the value nodes took part: energy appears after the first latent step
        assert bool((rec.energy[1:] > 0).all())


def test_ppc_equals_autograd_reference():
    spec, cfg = build_rule("ppc", cnn(), config())
    params = init_params(spec, [5, 6], dtype=DT)
    eng = engine("ppc", params)
    refs = [ReferenceRun(spec, cfg, {n: p[r] for n, p in params.items()}, run=r) for r in range(R)]
    for x, y in batches(2):
        rec = eng.train_batch(x, y)
        for r, ref in enumerate(refs):
            rr = ref.train_batch(x[r], y[r])
            assert rr["steps"] == T
            torch.testing.assert_close(rec.loss0[r], torch.tensor(rr["loss0"], dtype=DT), rtol=1e-9, atol=1e-11)
            for key in ("loss", "energy", "objective", "latent_lr"):
                torch.testing.assert_close(getattr(rec, key)[:, r], torch.tensor(rr[key], dtype=DT),
                                           rtol=1e-9, atol=1e-11, msg=lambda m: f"run {r} {key}: {m}")
    for r, ref in enumerate(refs):
        for name, value in ref.params.items():
            torch.testing.assert_close(eng.params[name][r], value, rtol=1e-9, atol=1e-11)


def torch_cnn(params, r) -> torch.nn.Sequential:
    """Run r's net as plain torch modules, built independently of the engine."""
    net = torch.nn.Sequential(
        torch.nn.Conv2d(C0, C1, 3, stride=2, padding=1, bias=False), torch.nn.ReLU(),
        torch.nn.Conv2d(C1, C2, 3, stride=2, padding=1, bias=False), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(C2 * (SIDE // 4) ** 2, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, OUT)).to(DT)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name][r])
    return net


def test_rbp_is_T_sequential_torch_adam_steps():
    params = init_params(cnn(), [7, 8], dtype=DT)
    eng = engine("rbp", params)
    assert eng.config.T == T and not eng.spec.has_value_nodes
    nets = [torch_cnn(params, r) for r in range(R)]
    opts = [torch.optim.Adam(net.parameters(), lr=LR[r], weight_decay=WD) for r, net in enumerate(nets)]
    for x, y in batches():
        rec = eng.train_batch(x, y)
        for r, (net, opt) in enumerate(zip(nets, opts)):
            for s in range(T):
                opt.zero_grad()
                loss = 0.5 * ((net(x[r]) - y[r]) ** 2).sum()
                torch.testing.assert_close(rec.loss[s, r], loss.detach(), rtol=1e-10, atol=1e-12)
                loss.backward()
                opt.step()
    for r, net in enumerate(nets):
        for name, p in net.named_parameters():
            torch.testing.assert_close(eng.params[name][r], p.detach(), rtol=1e-9, atol=1e-11,
                                       msg=lambda m: f"run {r} {name}: {m}")


@pytest.mark.parametrize("need_objective", [True, False])
def test_first_step_shortcut_equals_the_full_evaluation(need_objective):
    """At the batch's first step (latents = their feed-forward values, nothing changed since) the
    functional backend evaluates only the top segment; it gives what the full evaluation of the
    same point gives (latents cloned, so not recognised), with c ≠ 1, a latent penalty and a mask."""
    from pcneuro.engine.functional import FunctionalBackend

    spec = cnn()
    params = init_params(spec, [1, 2], dtype=DT)
    backend = FunctionalBackend(spec, "sse", torch.tensor([1.0, 0.5], dtype=DT), DT, "cpu",
                                latent_l1=torch.tensor([0.0, 0.1], dtype=DT))
    (x0, y), = batches(1)
    mask = (torch.rand(R, B, 1, generator=torch.Generator().manual_seed(3), dtype=DT) > 0.3).to(DT)
    latents = backend.feedforward_latents(params, x0)
    copies = [x.clone() for x in latents]
    assert backend._at_feedforward(params, latents, x0) and not backend._at_feedforward(params, copies, x0)
    need = [True, False, True, True]  # one layer's weight gradient not asked for
    fast = backend.evaluate(params, latents, x0, y, need, need_objective, mask)
    full = backend.evaluate(params, copies, x0, y, need, need_objective, mask)
    for key in ("loss", "energy", "objective"):
        a, b = getattr(fast, key), getattr(full, key)
        assert (a is None) == (b is None) == (not need_objective)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert sorted(fast.weight_grads) == sorted(full.weight_grads) == ["0.weight", "5.bias", "5.weight", "7.bias",
                                                                     "7.weight"]
    for name, g in full.weight_grads.items():
        torch.testing.assert_close(fast.weight_grads[name], g, rtol=1e-12, atol=1e-12)
    for a, b in zip(fast.latent_grads, full.latent_grads):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert bool(full.latent_grads[-1].abs().sum(dim=(1, 2)).gt(0).all())  # the top latent does get gradient
    latents[0].add_(0.0)  # an in-place change (even a no-op) is noticed: no shortcut any more
    assert not backend._at_feedforward(params, latents, x0)
