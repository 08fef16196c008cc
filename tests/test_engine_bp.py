"""BP, RBP and Z-IL against plain torch (engine spec §3, §5.3, §5.4).

BP is one torch.optim step per batch on the ``loss.backward()`` gradients of the plain torch net
(the architecture without value nodes, same output layer); RBP is T such steps on the same batch;
Z-IL (value nodes, η_x0 = 1, c = 1, no adaptation, weight timing P_l = {L − l}) equals BP.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from pcneuro.engine import (SGD, Activation, Adam, Conv2d, Engine, Flatten, LatentSGD, Linear, NetworkSpec,
                            TrainConfig, build_rule, init_params)

DT = torch.float64
SEEDS = (11, 12)


def mlp(depth, act="tanh", value_nodes="pre", width=5, n_in=4, n_out=3):
    sizes = [n_in] + [width] * (depth - 1) + [n_out]
    layers = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b))
        if k < depth - 1:
            layers.append(Activation(act))
    return NetworkSpec(tuple(layers), value_nodes=value_nodes)


TORCH_ACT = {"tanh": torch.nn.Tanh, "sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}


def torch_net(spec, params, r):
    """The plain torch model of run r, built independently of the engine."""
    modules = []
    for layer in spec.layers:
        if isinstance(layer, Linear):
            modules.append(torch.nn.Linear(layer.in_features, layer.out_features, bias=layer.bias, dtype=DT))
        elif isinstance(layer, Conv2d):
            modules.append(torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                           padding=layer.padding, dtype=DT))
        elif isinstance(layer, Flatten):
            modules.append(torch.nn.Flatten())
        else:
            modules.append(TORCH_ACT[layer.name]())
    net = torch.nn.Sequential(*modules)
    with torch.no_grad():
        for name, p in net.named_parameters():
            p.copy_(params[name][r])
    return net


def torch_optimizer(opt, net, r):
    pick = lambda v: v[r] if isinstance(v, (list, tuple)) else v  # noqa: E731
    if isinstance(opt, SGD):
        return torch.optim.SGD(net.parameters(), lr=pick(opt.lr), momentum=pick(opt.momentum),
                               weight_decay=pick(opt.weight_decay))
    return torch.optim.Adam(net.parameters(), lr=pick(opt.lr), betas=opt.betas, weight_decay=pick(opt.weight_decay))


def batches(n, n_in, n_out, loss, input_shape=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(6, *(input_shape or (n_in,)), generator=g, dtype=DT)
        if loss == "ce":
            y = F.one_hot(torch.randint(n_out, (6,), generator=g), n_out).to(DT)
        else:
            y = torch.randn(6, n_out, generator=g, dtype=DT)
        out.append((x, y))
    return out


def plain_loss(y_hat, y, loss):
    if loss == "sse":
        return 0.5 * ((y_hat - y) ** 2).sum()
    return -(y * torch.log_softmax(y_hat, dim=-1)).sum()


def compare_with_torch(spec, config, steps_per_batch, loss, n_batches=3, input_shape=None, n_in=4):
    params = init_params(spec, SEEDS, dtype=DT)
    engine = Engine(spec, config, dict(params))
    nets = [torch_net(spec, params, r) for r in range(len(SEEDS))]
    opts = [torch_optimizer(config.weight_opt, net, r) for r, net in enumerate(nets)]
    for x, y in batches(n_batches, n_in, 3, loss, input_shape):
        rec = engine.train_batch(x, y)
        for r, (net, opt) in enumerate(zip(nets, opts)):
            for s in range(steps_per_batch):
                opt.zero_grad()
                ell = plain_loss(net(x), y, loss)
                if s == 0 and rec is not None and rec.loss0 is not None:
                    torch.testing.assert_close(rec.loss0[r], ell.detach(), rtol=1e-10, atol=1e-12)
                ell.backward()
                opt.step()
    for r, net in enumerate(nets):
        for name, p in net.named_parameters():
            torch.testing.assert_close(engine.params[name][r], p.detach(), rtol=1e-9, atol=1e-11,
                                       msg=lambda m: f"run {r} {name}: {m}")
    return engine


OPTS = {
    "sgd": SGD(lr=[0.05, 0.02]),
    "momentum-wd": SGD(lr=[0.05, 0.02], momentum=[0.9, 0.0], weight_decay=0.01),
    "adam-wd": Adam(lr=[0.01, 0.003], weight_decay=[0.0, 0.02]),
}


@pytest.mark.parametrize("loss", ["sse", "ce"])
@pytest.mark.parametrize("opt", list(OPTS))
def test_bp_is_one_torch_step(opt, loss):
    pc_config = TrainConfig(T=20, weight_opt=OPTS[opt], loss=loss, latent_opt=LatentSGD(lr=0.1))
    spec, config = build_rule("bp", mlp(3), pc_config)
    assert not spec.has_value_nodes and config.T == 1
    assert spec.layers == mlp(3).layers  # same architecture, same output layer
    compare_with_torch(spec, config, 1, loss)


def test_bp_conv_is_one_torch_step():
    spec = NetworkSpec((Conv2d(1, 2, 3, padding=1), Activation("tanh"), Flatten(), Linear(2 * 25, 3)),
                       value_nodes="pre", input_shape=(1, 5, 5))
    spec, config = build_rule("bp", spec, TrainConfig(T=5, weight_opt=OPTS["adam-wd"]))
    compare_with_torch(spec, config, 1, "sse", input_shape=(1, 5, 5))


@pytest.mark.parametrize("opt", ["momentum-wd", "adam-wd"])
def test_rbp_is_T_torch_steps(opt):
    T = 4
    spec, config = build_rule("rbp", mlp(3), TrainConfig(T=T, weight_opt=OPTS[opt], record="every"))
    engine = compare_with_torch(spec, config, T, "sse")
    assert engine.X == [False] * T  # no value nodes: no latents anywhere


@pytest.mark.parametrize("opt", ["sgd", "adam-wd"])
@pytest.mark.parametrize("placement", ["pre", "post"])
@pytest.mark.parametrize("depth", [2, 3, 4, 5])
def test_zil_equals_bp(depth, placement, opt):
    zil = TrainConfig(T=depth, weight_opt=OPTS[opt], weight_steps="zil", latent_opt=LatentSGD(lr=1.0),
                      lr_decay=1.0, lr_growth=1.0, energy_coef=1.0)
    compare_with_torch(mlp(depth, value_nodes=placement), zil, 1, "sse")


def test_zil_breaks_with_latent_rate_not_one():
    """c·η_x ≠ 1 scales the errors: Z-IL no longer equals BP (the check above is not vacuous)."""
    zil = TrainConfig(T=3, weight_opt=OPTS["sgd"], weight_steps="zil", latent_opt=LatentSGD(lr=0.5),
                      lr_decay=1.0, lr_growth=1.0)
    with pytest.raises(AssertionError):
        compare_with_torch(mlp(3), zil, 1, "sse")
