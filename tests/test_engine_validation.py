"""Engine inputs and caches: what a careless caller can do must not silently give wrong numbers."""
import pytest
import torch

from pcneuro.engine import (Activation, Conv2d, Engine, Flatten, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig,
                            build_rule, init_params)
from pcneuro.engine.reference import ReferenceRun

DT = torch.float64
SPEC = NetworkSpec((Linear(3, 4, bias=False), Activation("tanh"), Linear(4, 2)))


def _config(**kw):
    base = dict(T=6, weight_opt=SGD(lr=0.05), latent_opt=LatentSGD(0.2), lr_decay=0.5, record="last")
    base.update(kw)
    return TrainConfig(**base)


def test_input_buffer_refilled_in_place_is_not_served_from_the_cache():
    """μ₁ is cached within a batch; a batch written into the same tensor must not reuse it."""
    config = _config(weight_steps={2: "last"})  # layer 1 never steps, so its weights stay put
    params = init_params(SPEC, [0], dtype=DT)
    engine = Engine(SPEC, config, params)
    reference = ReferenceRun(SPEC, config, {k: v[0] for k, v in params.items()})
    g = torch.Generator().manual_seed(1)
    buffer = torch.empty(5, 3, dtype=DT)
    for _ in range(3):
        buffer.copy_(torch.randn(5, 3, generator=g, dtype=DT))
        y = torch.randn(5, 2, generator=g, dtype=DT)
        rec = engine.train_batch(buffer, y)
        ref = reference.train_batch(buffer.clone(), y)
        assert float(rec.loss0[0]) == pytest.approx(ref["loss0"], rel=1e-12)


@pytest.mark.parametrize("y_shape", [(5, 1), (1, 2), (3, 5, 2), (5, 2, 1)])
def test_targets_of_the_wrong_shape_are_rejected(y_shape):
    engine = Engine(SPEC, _config(), init_params(SPEC, [0, 1], dtype=DT))
    with pytest.raises(ValueError, match="target of shape"):
        engine.train_batch(torch.zeros(5, 3, dtype=DT), torch.zeros(*y_shape, dtype=DT))


def test_per_run_input_with_the_wrong_number_of_runs_is_rejected():
    engine = Engine(SPEC, _config(), init_params(SPEC, [0, 1], dtype=DT))
    with pytest.raises(ValueError, match="3 runs"):
        engine.train_batch(torch.zeros(3, 5, 3, dtype=DT), torch.zeros(5, 2, dtype=DT))


def test_structural_zeros_hold_from_construction_in_a_fixed_layer():
    spec = NetworkSpec((Linear(2, 2, bias=False, mask=((1, 0), (0, 1)), trainable=False), Linear(2, 1, bias=False)))
    params = {"0.weight": torch.ones(1, 2, 2, dtype=DT), "1.weight": torch.ones(1, 1, 2, dtype=DT)}
    engine = Engine(spec, _config(), params)
    assert torch.equal(engine.params["0.weight"][0], torch.eye(2, dtype=DT))
    assert float(engine.forward(torch.tensor([[0.0, 1.0]], dtype=DT))) == 1.0


def test_bp_and_rbp_ignore_the_pc_stop_rule():
    config = _config(T=8, stop_lr=1.0, record="last")  # η0 = 0.2 <= stop_lr: PC would stop at once
    for rule, steps in (("bp", 1), ("rbp", 8)):
        spec, cfg = build_rule(rule, SPEC, config)
        rec = Engine(spec, cfg, init_params(SPEC, [0], dtype=DT)).train_batch(
            torch.ones(4, 3, dtype=DT), torch.zeros(4, 2, dtype=DT))
        assert int(rec.steps[0]) == steps


@pytest.mark.parametrize("nodes", [(2,), (0, 1)])
def test_value_nodes_on_the_output_or_without_a_weight_layer_are_rejected(nodes):
    layers = (Linear(3, 4), Activation("tanh"), Linear(4, 2), Activation("tanh"))
    with pytest.raises(ValueError, match="value node"):
        NetworkSpec(layers, value_nodes=nodes)


# --------------------------------------------------------------------------------------------------
# latent penalty and connectivity masks S

EYE4 = tuple(tuple(float(i == j) for j in range(4)) for i in range(4))


def test_negative_latent_l1_is_rejected():
    with pytest.raises(ValueError, match="latent_l1"):
        _config(latent_l1=[0.1, -0.2])


def test_zero_latent_l1_costs_nothing():
    """λ = 0 for every run: the backends skip the penalty ops; λ ≠ 0 in any run switches them on."""
    for backend in ("closed_form", "functional"):
        assert Engine(SPEC, _config(), init_params(SPEC, [0, 1], dtype=DT), backend).backend.l1 is None
        engine = Engine(SPEC, _config(latent_l1=[0.0, 0.1]), init_params(SPEC, [0, 1], dtype=DT), backend)
        assert engine.backend.l1 is not None


def test_connectivity_takes_the_functional_backend():
    spec = NetworkSpec(SPEC.layers, node_connectivity=(EYE4,))
    assert not spec.is_mlp() and spec.has_connectivity
    assert NetworkSpec(SPEC.layers, node_connectivity=(None,)).is_mlp()
    assert spec.without_value_nodes().node_connectivity is None
    params = init_params(spec, [0], dtype=DT)
    assert Engine(spec, _config(), params).backend_name == "functional"
    with pytest.raises(ValueError, match="functional backend"):
        Engine(spec, _config(), params, backend="closed_form")


def test_connectivity_with_node_masks_is_rejected():
    with pytest.raises(ValueError, match="mutually exclusive"):
        NetworkSpec(SPEC.layers, node_masks=((1.0, 0.0, 1.0, 1.0),), node_connectivity=(EYE4,))


@pytest.mark.parametrize("conn, match", [
    ((EYE4, EYE4), "one entry per value node"),
    ((EYE4[:3],), "square"),
    ((tuple(row[:3] for row in EYE4[:3]),), "the node has 4 units"),
])
def test_connectivity_of_the_wrong_shape_is_rejected(conn, match):
    with pytest.raises(ValueError, match=match):
        NetworkSpec(SPEC.layers, node_connectivity=conn)


def test_connectivity_of_the_wrong_size_on_a_conv_node_is_rejected_when_evaluated():
    """A conv node's size is known only from the data: the functional backend checks it."""
    spec = NetworkSpec((Conv2d(1, 2, 3, padding=1), Activation("tanh"), Flatten(), Linear(8, 2)),
                       node_connectivity=(EYE4,), input_shape=(1, 2, 2))
    engine = Engine(spec, _config(), init_params(spec, [0], dtype=DT))
    with pytest.raises(ValueError, match="the node has 8 units"):
        engine.train_batch(torch.zeros(3, 1, 2, 2, dtype=DT), torch.zeros(3, 2, dtype=DT))
