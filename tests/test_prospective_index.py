"""prospective_index (theory spec §6): per-layer prospective index, one weight step vs converged weights.

Claim (issue 9): converged weights give a prospective index >= 0.99 in every layer. Also checked:
x* is the engine's record of the latents (BatchRecord.latents) after the inference steps; the first
hidden layer's one-step index is exactly 1 (ΔW_0 ∝ ε_1 sᵀ moves x̄_1 along x*_1 − x̄_1); protocol B
runs the default PC step; bad input gives one line and exit status 2.
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
from pcneuro.engine import Engine, forward
from pcneuro.paradigms import prospective_index as pi
from pcneuro.paradigms import target_alignment as ta

DT = torch.float64


@pytest.fixture(scope="module")
def protocol_a():
    """The spec's protocol A (depth 6, width 64, identity, xavier_normal, lr 0.01, 100 inference
    steps) with 1 and 100 weight steps, 5 seeds."""
    return pcneuro.run("prospective_index", preset="paper", write=False, figure=False)


def test_converged_weights_give_an_index_of_at_least_0_99_in_every_layer(protocol_a):
    converged = protocol_a.prospective_index.sel(rule="pc", weight_steps=100)
    assert converged.sizes["layer"] == 6 and converged.sizes["seed"] == 5
    assert float(converged.min()) >= 0.99, converged.values
    np.testing.assert_allclose(protocol_a.relative_change.sel(rule="pc", weight_steps=100).values, 1.0, atol=0.02)


def test_one_weight_step_is_prospective_and_less_so_in_deeper_layers(protocol_a):
    one = protocol_a.prospective_index.sel(rule="pc", weight_steps=1)
    np.testing.assert_allclose(one.sel(layer=1).values, 1.0, atol=1e-9)  # exact: ΔW_0 s ∝ ε_1
    assert float(one.sel(layer=[1, 2, 3, 4, 5]).min()) > 0.95  # spec: l4 (our layer 5) 0.969-0.990
    mean = one.mean("seed")
    assert float(mean.sel(layer=5)) < float(mean.sel(layer=2))
    assert (mean < protocol_a.prospective_index.sel(rule="pc", weight_steps=100).mean("seed") + 1e-9).all()


def test_x_star_is_the_engines_record_of_the_latents_after_the_inference_steps():
    """The latents recorded with weight steps after the inference equal those of a run without any
    weight step (they stay frozen), and the output activity helper agrees with the engine's forward."""
    p = pi.ProspectiveIndex()
    s = dict(p.settings, depth=4, width=8, inference_steps=20)
    spec = ta.stack_network(4, 8, "identity")
    params = ta.initial_weights(pi.ProspectiveIndex, spec, [0, 1], "xavier_normal", "identity", DT, "cpu")
    x, y = ta.sample_batch(pi.ProspectiveIndex, [0, 1], 1, 8, DT, "cpu")
    latents = []
    for weights in ([20, 21, 22], []):
        config = ta.pc_config(23, [s, s], DT, latent_steps=list(range(20)), weight_steps=weights or "never",
                              record="none", record_latents="last")
        latents.append(Engine(spec, config, params).train_batch(x, y).latents)
    for a, b in zip(*latents):
        torch.testing.assert_close(a, b)
    nodes = pi.node_activity(spec, params, x)
    assert len(nodes) == 4
    torch.testing.assert_close(nodes[-1], forward(spec, params, x))


def test_protocol_b_runs_the_default_pc_step_with_the_output():
    ds = pcneuro.run("prospective_index", preset="protocol_b", seeds=2, write=False, figure=False)
    assert ds.prospective_index.dims == ("rule", "seed", "activation", "lr", "layer")
    values = ds.prospective_index.values
    assert np.isfinite(values).all() and (values > 0.8).all()
    # the weights step on the latents after T-1 updates, x* is read after T (spec §10 #9): nearly, not exactly, 1
    first = ds.prospective_index.sel(layer=1).values
    assert (first > 0.9999).all() and (first < 1 - 1e-9).any()


def test_quick_preset_writes_netcdf_figure_and_summary(tmp_path):
    ds = pcneuro.run("prospective_index", preset="quick", out=tmp_path / "p.nc", quiet=True)
    assert (tmp_path / "p.nc").is_file() and (tmp_path / "p.png").is_file()
    with xr.open_dataset(tmp_path / "p.nc") as saved:
        np.testing.assert_array_equal(saved.prospective_index.values, ds.prospective_index.values)
    assert list(ds.layer.values) == [1, 2, 3, 4, 5, 6]
    text = summary_text(ds)
    assert "0.988-0.997" in text and "6 (out)" in text  # published beside ours


@pytest.mark.parametrize("args, bad", [
    (["--set", "depth=0"], "depth='0' is below the minimum 2"),
    (["--set", "width=-1"], "width='-1' is below the minimum 1"),
    (["--set", "activation=gelu"], "activation='gelu' is not one of"),
    (["--set", "init=lecun"], "init='lecun' is not one of"),
    (["--set", "inference_steps=3"], "inference_steps=3 is below depth=6"),
    (["--set", "protocol=B"], "protocol B takes one weight step"),
])
def test_bad_input_gives_one_line_and_status_2(tmp_path, capsys, args, bad):
    """The command line's entry, in process (run_paradigm.py calls it): status 2, one line, no file."""
    status = cli.main(["prospective_index", "--preset", "quick", "--seeds", "1", "--out", str(tmp_path), *args])
    lines = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(lines) == 1 and bad in lines[0], lines
    assert not list(tmp_path.glob("*.nc"))


def test_bad_input_from_the_shell(tmp_path):
    """As a user types it: python run_paradigm.py ... (one process start; the other cases run in process)."""
    res = run_cli("prospective_index", "--preset", "quick", "--set", "depth=0", "--out", tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [
        "run_paradigm.py: error: depth='0' is below the minimum 2"]
