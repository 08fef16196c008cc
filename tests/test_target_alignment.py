"""target_alignment (theory spec §5, fig 3e), the orthogonal init scheme and exact-inverse target propagation.

Claims (issue 9): on the linear nets the mean alignment is 1 at depth 1, PC's exceeds BP's at every
depth >= 4 and BP's falls with depth; with orthogonal init both are 1 (within 1e-3). Bad input
gives one line and exit status 2. TP's values are fragile (spec §10 #6) and never asserted; its
module is checked against hand-worked steps and exact properties instead.
"""
from __future__ import annotations


import numpy as np
import pytest
import torch
import xarray as xr

import pcneuro
from conftest import run_cli
from pcneuro import cli
from pcneuro.cli import summary_text
from pcneuro.engine import Conv2d, Linear, NetworkSpec, init_params
from pcneuro.engine.target_prop import ExactInverseTP, exact_inverse_errors, exact_inverse_tp_step
from pcneuro.paradigms import target_alignment as ta

DT = torch.float64


# -- init_params(scheme="orthogonal") ------------------------------------------------------------------
def test_orthogonal_init_is_orthonormal_scaled_and_per_seed():
    spec = NetworkSpec((Linear(3, 5, bias=False), Linear(5, 5), Linear(5, 2, bias=False)), "pre")
    params = init_params(spec, [4, 9], "orthogonal", scale=[1.0, 2.5], dtype=DT)
    eye = lambda n: torch.eye(n, dtype=DT)  # noqa: E731
    for r, g in enumerate((1.0, 2.5)):
        tall, square, wide = (params[f"{i}.weight"][r] / g for i in range(3))
        torch.testing.assert_close(tall.T @ tall, eye(3))  # 5x3: orthonormal columns
        torch.testing.assert_close(square.T @ square, eye(5))
        torch.testing.assert_close(wide @ wide.T, eye(2))  # 2x5: orthonormal rows
    assert torch.equal(params["1.bias"], torch.zeros(2, 5, dtype=DT))
    assert not torch.allclose(params["1.weight"][0], params["1.weight"][1] / 2.5)  # seeds differ
    alone = init_params(spec, [9], "orthogonal", scale=2.5, dtype=DT)  # a run's draw: its seed only
    for name in params:
        assert torch.equal(alone[name][0], params[name][1])
    conv = init_params(NetworkSpec((Conv2d(2, 3, 2), Linear(3, 1)), value_nodes="none", input_shape=(2, 2, 2)),
                       [1], "orthogonal", dtype=DT)["0.weight"][0].reshape(3, 8)
    torch.testing.assert_close(conv @ conv.T, eye(3))  # [out, in*k*k] rows orthonormal


def test_orthogonal_init_is_haar_random():
    """Q's signs are fixed by R's diagonal, so the distribution has no preferred orientation: the
    diagonal entries of many draws average to 0 (QR alone would make them mostly positive)."""
    spec = NetworkSpec((Linear(4, 4, bias=False),), "none")
    w = init_params(spec, range(400), "orthogonal", dtype=DT)["0.weight"]
    diag = torch.diagonal(w, dim1=1, dim2=2)
    assert abs(float(diag.mean())) < 0.05 and float(diag.std()) > 0.4
    with pytest.raises(ValueError, match="unknown init scheme 'orthogonl'.*orthogonal"):
        init_params(spec, [0], "orthogonl")


# -- exact-inverse target propagation -------------------------------------------------------------------
def test_tp_step_matches_a_hand_worked_step():
    """Two layers: W0 = [[2, 0], [0, 4]] (a0 = s), W1 = [[1, 1]]; s = [1, 1], y = [0]."""
    spec = NetworkSpec((Linear(2, 2, bias=False), Linear(2, 1, bias=False)), "pre")
    w0, w1 = torch.tensor([[2.0, 0.0], [0.0, 4.0]], dtype=DT), torch.tensor([[1.0, 1.0]], dtype=DT)
    params = {"0.weight": w0[None], "1.weight": w1[None]}
    s, y = torch.tensor([[1.0, 1.0]], dtype=DT), torch.tensor([[0.0]], dtype=DT)
    # a1 = (2, 4), y_hat = 6, e2 = 6; e1 = pinv(W1) e2 = (0.5, 0.5)·6 = (3, 3)
    e1, e2 = exact_inverse_errors(spec, params, s, y)
    torch.testing.assert_close(e2[0], torch.tensor([[6.0]], dtype=DT))
    torch.testing.assert_close(e1[0], torch.tensor([[3.0, 3.0]], dtype=DT))
    new = exact_inverse_tp_step(spec, params, s, y, 0.1)
    torch.testing.assert_close(new["1.weight"][0], w1 - 0.1 * 6.0 * torch.tensor([[2.0, 4.0]], dtype=DT))
    torch.testing.assert_close(new["0.weight"][0], w0 - 0.1 * 3.0 * torch.ones(2, 2, dtype=DT))
    assert torch.equal(params["0.weight"][0], w0)  # inputs untouched


def test_tp_step_equals_a_per_run_numpy_reference_with_biases_masks_and_fixed_layers():
    gen = torch.Generator().manual_seed(0)
    mask = ((1.0, 0.0, 1.0), (1.0, 1.0, 0.0), (0.0, 1.0, 1.0), (1.0, 1.0, 1.0))
    spec = NetworkSpec((Linear(3, 4, mask=mask), Linear(4, 5, bias=False, trainable=False), Linear(5, 2)), "pre")
    params = init_params(spec, [1, 2, 3], "xavier_normal", dtype=DT)
    params["0.bias"] = torch.randn(3, 4, generator=gen, dtype=DT)
    x, y = torch.randn(3, 6, 3, generator=gen, dtype=DT), torch.randn(3, 6, 2, generator=gen, dtype=DT)
    lr = torch.tensor([0.01, 0.02, 0.0], dtype=DT)
    new = exact_inverse_tp_step(spec, params, x, y, lr)
    m = np.array(mask)
    for r in range(3):
        W = [params[f"{i}.weight"][r].numpy() for i in range(3)]
        b0, b2 = params["0.bias"][r].numpy(), params["2.bias"][r].numpy()
        a0 = x[r].numpy()
        a1 = a0 @ W[0].T + b0
        a2 = a1 @ W[1].T
        e3 = a2 @ W[2].T + b2 - y[r].numpy()
        e2 = e3 @ np.linalg.pinv(W[2]).T
        e1 = e2 @ np.linalg.pinv(W[1]).T
        np.testing.assert_allclose(new["2.weight"][r], W[2] - lr[r].item() * e3.T @ a2, atol=1e-12)
        np.testing.assert_allclose(new["2.bias"][r], b2 - lr[r].item() * e3.sum(0), atol=1e-12)
        np.testing.assert_array_equal(new["1.weight"][r], W[1])  # fixed: passes errors, does not learn
        np.testing.assert_allclose(new["0.weight"][r], (W[0] - lr[r].item() * e1.T @ a0) * m, atol=1e-12)
        np.testing.assert_allclose(new["0.bias"][r], b0 - lr[r].item() * e1.sum(0), atol=1e-12)


def test_tp_output_change_is_parallel_to_the_error_through_invertible_layers():
    """With square invertible layers every layer's change maps to ŷ along e_N (the products above
    layer i times pinv(W_i)… give the identity), at every order: |TA| = 1, whatever the sign."""
    spec = ta.stack_network(5, 8, "identity")
    params = init_params(spec, range(6), "xavier_uniform", dtype=DT)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 1, 8, generator=gen, dtype=DT), torch.randn(6, 1, 8, generator=gen, dtype=DT)
    tp = ExactInverseTP(spec, params, 0.003)
    before = tp.forward(x)
    loss0 = tp.train_batch(x, y)
    torch.testing.assert_close(loss0, 0.5 * ((before - y) ** 2).sum(dim=(1, 2)))
    cos = ta.cosine(tp.forward(x) - before, y - before)
    torch.testing.assert_close(cos.abs(), torch.ones_like(cos))


def test_tp_refuses_a_nonlinear_net():
    with pytest.raises(ValueError, match="linear network.*activation 'tanh'"):
        exact_inverse_tp_step(ta.stack_network(2, 3, "tanh"), init_params(ta.stack_network(2, 3, "tanh"), [0]),
                              torch.zeros(1, 3), torch.zeros(1, 3), 0.1)


# -- the claims -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def linear_depths():
    """Linear 64-wide nets, one sample, T = 128 (the variant rows' setting), 8 seeds."""
    return pcneuro.run("target_alignment", seeds=8, settings={"T": 128}, grid={"depth": [1, 2, 4, 6, 8, 12, 16]},
                       write=False, figure=False)


def test_depth_one_is_exactly_aligned_under_both_rules(linear_depths):
    a = linear_depths.alignment.sel(depth=1)
    np.testing.assert_allclose(a.values, 1.0, atol=1e-12)


def test_pc_beats_bp_at_every_depth_from_four(linear_depths):
    mean = linear_depths.alignment.mean("seed")
    for depth in (4, 6, 8, 12, 16):
        pc, bp = float(mean.sel(rule="pc", depth=depth)), float(mean.sel(rule="bp", depth=depth))
        assert pc > bp + 0.1, (depth, pc, bp)
    assert (mean.sel(rule="pc") > 0.85).all()  # PC stays aligned (fig 3e: mostly 0.75-1.0)


def test_bp_alignment_falls_with_depth(linear_depths):
    bp = linear_depths.alignment.sel(rule="bp").mean("seed")
    doubling = [float(bp.sel(depth=d)) for d in (1, 2, 4, 8, 16)]
    assert all(a > b for a, b in zip(doubling, doubling[1:])), doubling
    assert doubling[-1] < 0.6


def test_orthogonal_init_aligns_both_rules():
    ds = pcneuro.run("target_alignment", seeds=4, settings={"T": 128, "init": "orthogonal"},
                     grid={"depth": [2, 4, 8, 15], "lr": [0.01, 0.001]}, write=False, figure=False)
    np.testing.assert_allclose(ds.alignment.values, 1.0, atol=1e-3)


def test_a_run_depends_on_its_seed_only_and_rules_are_paired():
    """Seed 2 alone gives the bits it gives among other seeds; PC and BP of a seed start from the same
    weights and sample (depth 1: PC is BP's step, so the runs agree exactly)."""
    many = pcneuro.run("target_alignment", seeds=[0, 1, 2], settings={"T": 16}, grid={"depth": [1, 3]},
                       write=False, figure=False)
    one = pcneuro.run("target_alignment", seeds=[2], settings={"T": 16}, grid={"depth": [1, 3]},
                      write=False, figure=False)
    np.testing.assert_array_equal(many.alignment.sel(seed=2).values, one.alignment.sel(seed=2).values)
    np.testing.assert_array_equal(many.alignment.sel(rule="pc", depth=1).values,
                                  many.alignment.sel(rule="bp", depth=1).values)
    np.testing.assert_allclose(np.cos(np.deg2rad(many.angle.values)), many.alignment.values, atol=1e-9)


# -- end to end -------------------------------------------------------------------------------------------
def test_quick_preset_with_tp_writes_netcdf_figure_and_summary(tmp_path):
    ds = pcneuro.run("target_alignment", preset="quick", rule="pc,bp,tp", out=tmp_path / "q.nc", quiet=True)
    assert ds.alignment.dims == ("rule", "seed", "depth") and list(ds.rule.values) == ["pc", "bp", "tp"]
    assert (tmp_path / "q.nc").is_file() and (tmp_path / "q.png").is_file()
    with xr.open_dataset(tmp_path / "q.nc") as saved:
        np.testing.assert_array_equal(saved.alignment.values, ds.alignment.values)
    assert np.isfinite(ds.alignment.values).all() and np.isfinite(ds.angle.values).all()
    text = summary_text(ds)
    assert "published PC" in text and "TP" in text and "0.985" in text  # the identity row beside ours
    width = pcneuro.run("target_alignment", seeds=2, settings={"T": 8, "depth": 3}, grid={"width": [1, 4]},
                        out=tmp_path / "w.nc", quiet=True)
    assert (tmp_path / "w.png").is_file() and "width" in width.alignment.dims
    np.testing.assert_allclose(np.abs(width.alignment.sel(width=1).values), 1.0)  # a scalar output: TA = ±1
    assert "variant 'width_batch1'" in summary_text(width)


@pytest.mark.parametrize("args, bad", [
    (["--set", "depth=0"], "depth='0' is below the minimum 1"),
    (["--set", "width=-3"], "width='-3' is below the minimum 1"),
    (["--set", "activation=swish"], "activation='swish' is not one of"),
    (["--set", "init=he"], "init='he' is not one of"),
    (["--set", "T=3", "--set", "depth=5"], "T=3 is below depth=5"),
    # a rule-specific check (check_rule_settings) runs while planning, before anything is written
    (["--rule", "tp", "--set", "activation=tanh", "--set", "depth=2"], "linear network"),
])
def test_bad_input_gives_one_line_and_status_2(tmp_path, capsys, args, bad):
    """The command line's entry, in process (run_paradigm.py calls it): status 2, one line, no file."""
    status = cli.main(["target_alignment", "--preset", "quick", "--seeds", "1", "--out", str(tmp_path), *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and bad in lines[0], lines
    assert not list(tmp_path.iterdir())  # nothing written, no checkpoint folder either


def test_bad_input_from_the_shell(tmp_path):
    """As a user types it: python run_paradigm.py ... (one process start; the other cases run in process)."""
    res = run_cli("target_alignment", "--preset", "quick", "--set", "depth=0", "--out", tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "run_paradigm.py: error: depth='0' is below the minimum 1"]
