"""deep_fashion_mnist (theory spec §7, fig 3f–h) on the generated Fashion-MNIST (tests/conftest.py).

* the network per depth: N weight layers 784 → 64 … → 10 without biases, N − 1 value nodes on the
  hidden pre-activations, LeakyReLU after each, xavier_normal × 0.9999000099990001, paired across rules;
* the metrics: a non-finite output row is an error (§2), AUC = mean over the epochs, the best lr per
  (rule, depth) by the seed mean (NaN never wins, ties to the first lr);
* a small run end to end: NetCDF + figure + summary, PC = BP at depth 1 (§1.3);
* an interrupted grid resumes from its per-epoch checkpoints with the same bits;
* bad input (depth 0, negative width, unknown activation or init, T < depth): one line, exit status 2.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr

import pcneuro
from conftest import run_cli
from pcneuro.cli import summary_text
from pcneuro.engine import Activation, Linear
from pcneuro.paradigms import deep_fashion_mnist as dfm
from pcneuro.runner import Interrupted, make_plan

SMALL = {"T": 6, "epochs": 2, "batch_size": 20, "train_per_class": 4, "test_per_class": 10}
SMALL_GRID = {"depth": (1, 2, 4), "lr": (0.05, 0.005)}


@pytest.mark.parametrize("depth", [1, 2, 4, 15])
def test_network_per_depth_is_the_spec(depth):
    spec = dfm.network(depth, 64, "leaky_relu")
    shapes = spec.param_shapes()
    widths = [784] + [64] * (depth - 1) + [10]
    expected = [(b, a) for a, b in zip(widths[:-1], widths[1:])]
    assert [shapes[n] for n in sorted(shapes, key=lambda n: int(n.split(".")[0]))] == expected
    assert all(n.endswith(".weight") for n in shapes)  # no biases
    assert spec.n_weight_layers == depth
    assert len(spec.node_positions) == depth - 1  # one value node per hidden layer, none at the output
    assert [i for i, l in enumerate(spec.layers) if isinstance(l, Activation)] == \
        [i + 1 for i in spec.node_positions]  # Linear -> value node -> phi: nodes on the pre-activations
    assert all(l.name == "leaky_relu" for l in spec.layers if isinstance(l, Activation))
    assert isinstance(spec.layers[0], Linear)  # the input is not passed through phi
    assert isinstance(spec.layers[-1], Linear)  # linear output


def test_width_and_activation_are_settings():
    spec = dfm.network(3, 5, "tanh")
    assert sorted(spec.param_shapes().values()) == sorted([(5, 784), (5, 5), (10, 5)])
    assert {l.name for l in spec.layers if isinstance(l, Activation)} == {"tanh"}


def test_engines_are_paired_and_depth_one_pc_is_bp():
    base = {k: h.default for k, h in dfm.DeepFashionMNIST.hyperparameters.items()}
    seeds = [3, 4]
    settings = [dict(base, depth=4, lr=lr) for lr in (0.1, 0.01)]
    pc = dfm.make_engine(dfm.DeepFashionMNIST, "pc", settings, seeds, "cpu", torch.float64)
    bp = dfm.make_engine(dfm.DeepFashionMNIST, "bp", settings, seeds, "cpu", torch.float64)
    assert pc.config.T == 128 and pc.spec.has_value_nodes and bp.config.T == 1 and not bp.spec.has_value_nodes
    for name in pc.params:
        torch.testing.assert_close(pc.params[name], bp.params[name], rtol=0, atol=0)  # same weights per seed
    gen = torch.Generator().manual_seed(dfm.DeepFashionMNIST.stream_seed(3, "init"))
    w0 = torch.randn(64, 784, generator=gen, dtype=torch.float64) * (2 / (784 + 64)) ** 0.5 * 0.9999000099990001
    torch.testing.assert_close(pc.params["0.weight"][0], w0, rtol=0, atol=0)  # xavier_normal x the §1.4 gain
    one = dfm.make_engine(dfm.DeepFashionMNIST, "pc", [dict(base, depth=1)], [0], "cpu", torch.float64)
    assert one.config.T == 1 and not one.spec.has_value_nodes  # PC with N = 1 is BP's step


def test_non_finite_rows_are_errors():
    inf, nan = float("inf"), float("nan")
    y_hat = torch.tensor([[[0.1, 0.9, 0.0], [0.0, inf, 1.0], [nan, 1.0, 0.0], [0.5, 0.5, 0.0], [-inf, 2.0, 1.0]]])
    labels = torch.tensor([1, 1, 1, 0, 1])
    from pcneuro.paradigms._supervised import count_errors  # the benchmarks' metric, which this paradigm uses

    assert count_errors(y_hat, labels).tolist() == [4]  # only the first row is right


def test_auc_of_a_hand_made_curve():
    curves = torch.tensor([[0.9, 0.5, 0.3, 0.3], [1.0, 1.0, 1.0, 1.0], [0.8, 0.2, 0.2, 0.4]])
    torch.testing.assert_close(dfm.area_under_curve(curves), torch.tensor([0.5, 1.0, 0.4]))


def _hand_made(auc: np.ndarray, lrs=(0.1, 0.01, 0.001), depths=(2, 15)) -> xr.Dataset:
    """A results-like Dataset of ``auc`` [rule, seed, depth, lr] (rules pc, bp; 3 seeds)."""
    coords = {"rule": ["pc", "bp"], "seed": [0, 1, 2], "depth": list(depths), "lr": list(lrs)}
    ds = xr.Dataset({"auc": (("rule", "seed", "depth", "lr"), auc)}, coords=coords)
    ds.attrs["config"] = json.dumps({"settings": {}, "grid": {"depth": list(depths), "lr": list(lrs)}})
    return ds


def test_best_lr_is_the_lowest_seed_mean_per_rule_and_depth():
    auc = np.full((2, 3, 2, 3), 0.9)
    auc[0, :, 0] = [[0.50, 0.30, 0.40], [0.52, 0.36, 0.38], [0.48, 0.33, 0.42]]  # pc, depth 2: lr 0.01 (mean .33)
    auc[0, :, 1] = [[0.45, np.nan, 0.70], [0.44, 0.20, 0.71], [0.46, 0.21, 0.69]]  # pc, 15: NaN never wins
    auc[1, :, 0] = [[0.40, 0.40, 0.60], [0.42, 0.42, 0.61], [0.38, 0.38, 0.59]]  # bp, 2: a tie -> the first lr
    auc[1, :, 1] = [[1.0, 0.90, 0.53], [1.0, 0.91, 0.55], [1.0, 0.89, 0.57]]  # bp, 15: lr 0.001
    best = dfm.best_by_depth(_hand_made(auc))
    assert best["lr"].sel(rule="pc").values.tolist() == [0.01, 0.1]
    assert best["lr"].sel(rule="bp").values.tolist() == [0.1, 0.001]
    np.testing.assert_allclose(best["mean"].sel(rule="pc", depth=2), 0.33)
    np.testing.assert_allclose(best["mean"].sel(rule="bp", depth=15), 0.55)
    np.testing.assert_allclose(best["sem"].sel(rule="bp", depth=15), 0.02 / np.sqrt(3))  # std 0.02, 3 seeds


def test_small_run_writes_netcdf_figure_and_summary(tmp_path):
    ds = pcneuro.run("deep_fashion_mnist", preset="quick", settings=SMALL, grid=SMALL_GRID, out=tmp_path / "s.nc",
                     quiet=True)
    assert (tmp_path / "s.nc").is_file() and (tmp_path / "s.png").is_file()
    assert ds.test_error.dims == ("rule", "seed", "depth", "lr", "epoch") and ds.sizes["epoch"] == 2
    assert ds.auc.dims == ("rule", "seed", "depth", "lr")
    np.testing.assert_allclose(ds.auc.values, ds.test_error.mean("epoch").values, rtol=1e-6)
    np.testing.assert_array_equal(ds.min_test_error.values, ds.test_error.min("epoch").values)
    err = ds.test_error.values
    assert np.allclose(err * 100, np.round(err * 100))  # fractions of the 100 test images
    assert np.isfinite(ds.train_loss.sel(lr=0.005).values).all() and not ds.diverged.sel(lr=0.005).values.any()
    for name in ("test_error", "train_loss", "auc"):  # PC with one layer equals BP (spec §1.3)
        np.testing.assert_array_equal(ds[name].sel(rule="pc", depth=1).values, ds[name].sel(rule="bp", depth=1).values)
    pc4, bp4 = (ds.train_loss.sel(rule=r, depth=4).values for r in ("pc", "bp"))
    assert not np.array_equal(pc4, bp4)  # deeper, the rules differ
    text = summary_text(ds)
    assert "best lr" in text and "published" in text and "0.297" in text  # fig 3h beside ours


def test_interrupted_grid_resumes_from_its_epoch_checkpoints(tmp_path, monkeypatch):
    quick = dict(rule="pc,bp", preset="quick", settings=SMALL, grid={"depth": (2,), "lr": (0.05, 0.005)}, quiet=True,
                 figure=False)
    whole = pcneuro.run("deep_fashion_mnist", out=tmp_path / "whole.nc", **quick)
    saves, original = [], dfm.DeepFashionMNIST.save_state

    def interrupt_after_three(self, state):  # chunk 0 (pc) saves epochs 1-2; chunk 1 (bp) stops after epoch 1
        original(self, state)
        saves.append(state["epoch"])
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(dfm.DeepFashionMNIST, "save_state", interrupt_after_three)
    out = tmp_path / "part.nc"
    with pytest.raises(Interrupted):
        pcneuro.run("deep_fashion_mnist", out=out, **quick)
    started = []
    original_simulate = dfm.DeepFashionMNIST.simulate

    def watch(self, rule, settings, seeds, device, progress):
        state = self.saved_state()
        started.append((rule, None if state is None else state["epoch"]))
        return original_simulate(self, rule, settings, seeds, device, progress)

    monkeypatch.setattr(dfm.DeepFashionMNIST, "save_state", original)
    monkeypatch.setattr(dfm.DeepFashionMNIST, "simulate", watch)
    resumed = pcneuro.run("deep_fashion_mnist", out=out, resume=True, **quick)
    assert started == [("bp", 1)]  # only the unfinished chunk, from its saved epoch
    for name in whole.data_vars:
        np.testing.assert_array_equal(whole[name].values, resumed[name].values, err_msg=name)


@pytest.mark.parametrize("args, named", [
    (("--set", "depth=0"), "depth='0'"),
    (("--set", "width=-3"), "width='-3'"),
    (("--set", "activation=swish"), "activation='swish'"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, named):
    res = run_cli("deep_fashion_mnist", "--preset", "quick", *args, "--out", tmp_path / "x.nc")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0], res.stderr
    assert not (tmp_path / "x.nc").exists()


@pytest.mark.parametrize("settings, grid, named", [
    ({"init": "bogus"}, None, "init='bogus'"),
    ({"T": 3}, {"depth": (2, 4)}, "T=3 is below depth=4"),
    (None, {"depth": (2, 0)}, "depth=0 is below the minimum 1"),
])
def test_bad_settings_are_refused_before_anything_runs(settings, grid, named):
    with pytest.raises(ValueError, match=named):
        make_plan("deep_fashion_mnist", preset="quick", settings=settings, grid=grid)
