"""online_learning (specs/benchmarks.md §3.1, fig 4b/4c) on the generated Fashion-MNIST (tests/conftest.py:
300 train, 100 test images).

* the lr grid per batch size: slot -> lr as the spec's table, empty slots, a fixed lr, bad combinations;
* each iteration learns the first ``batches_per_iteration`` mini-batches of a fresh shuffle (200 at the
  paper's scale), or the whole shuffled set when it is smaller; progress ticks stay as declared;
* shuffles are paired: every rule and lr of a seed sees the same batches, seeds differ;
* a diverging run is data (error 1.0, ``diverged``), an iteration checkpoint resumes to the same bits;
* end to end: NetCDF + figure, empty slots NaN, the per-run scalars, the 4b/4c summary.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xarray as xr

import pcneuro
from pcneuro.cli import summary_text
from pcneuro.datasets.images import load_fashion_mnist
from pcneuro.engine import Engine
from pcneuro.paradigms import online_learning as ol
from pcneuro.paradigms._supervised import epoch_order
from pcneuro.runner import Interrupted, make_plan

CPU = torch.device("cpu")
TINY = {"T": 3, "iterations": 2, "batches_per_iteration": 4, "test_per_class": 3}


def _settings(**over):
    base = {k: h.default for k, h in ol.OnlineLearning.hyperparameters.items()}
    base.update(TINY)
    base.update(over)
    return base


@pytest.fixture
def calls(monkeypatch):
    """Every train_batch input [R, B, 784] and every test pass ("test"), in call order."""
    log = []
    original_train, original_test = Engine.train_batch, ol.evaluate_test_error

    def train_batch(self, x0, y, output_mask=None):
        log.append(x0.clone())
        return original_train(self, x0, y, output_mask)

    def test_error(*args):
        log.append("test")
        return original_test(*args)

    monkeypatch.setattr(Engine, "train_batch", train_batch)
    monkeypatch.setattr(ol, "evaluate_test_error", test_error)
    return log


def _per_iteration(log):
    """The train_batch inputs of each iteration (split at the test passes)."""
    out, current = [], []
    for entry in log:
        if isinstance(entry, str):
            out.append(current)
            current = []
        else:
            current.append(entry)
    assert current == []  # every iteration ends with its test pass
    return out


def test_lr_slots_follow_the_spec_table_per_batch_size():
    spec = {1: (.05, .10, .15, .20, .25, .30), 8: (.01, .025, .05, .10), 16: (.0075, .01, .025, .05),
            32: (.005, .0075, .01, .025, .05), 64: (.001, .0025, .005, .0075, .01)}
    for b, lrs in spec.items():
        got = [ol.run_lr(_settings(batch_size=b, lr_index=i)) for i in range(6)]
        assert got == [*lrs, *[None] * (6 - len(lrs))], b  # no lr beyond the table
    assert ol.run_lr(_settings(batch_size=4, lr=0.3)) == 0.3  # a fixed lr replaces the table
    plan = make_plan("online_learning", preset="paper", rule="all")
    assert len(plan.runs) == 2 * 5 * 6 * 3
    assert sum(ol.run_lr(r.settings) is not None for r in plan.runs) == 144  # the spec's 144 runs
    with pytest.raises(ValueError, match="batch_size=4"):
        make_plan("online_learning", settings={"batch_size": 4})
    with pytest.raises(ValueError, match="lr_index=1 with lr=0.1"):  # a fixed lr takes lr_index 0
        make_plan("online_learning", preset="quick", settings={"lr": 0.1})


def test_each_iteration_learns_the_first_batches_of_a_fresh_shuffle(calls):
    p = ol.OnlineLearning()
    train = load_fashion_mnist("train")
    images = train.images.reshape(len(train), -1)
    # b = 8, 7 batches per iteration: the first 56 examples of each iteration's shuffle
    ticks = []
    s = _settings(batch_size=8, batches_per_iteration=7, iterations=3)
    p.simulate("bp", [s], [5], CPU, ticks.append)
    iterations = _per_iteration(calls)
    assert [[tuple(x.shape) for x in it] for it in iterations] == [[(1, 8, 784)] * 7] * 3
    g = p.generator(5, "shuffle")
    for it in iterations:
        order = epoch_order([g], torch.arange(len(train))[None])[0]
        assert torch.equal(torch.cat([x[0] for x in it]), images[order[:56]].float() / 255)
    assert sum(ticks) == p.n_progress_steps(s) == 21
    # 200 batches per iteration at b = 1 (the paper's schedule: 200 updates, whatever the set's size)
    calls.clear()
    s = _settings(batch_size=1, batches_per_iteration=200)
    p.simulate("bp", [s], [0], CPU, lambda n: None)
    assert [len(it) for it in _per_iteration(calls)] == [200, 200]
    # a set smaller than 200 b: the whole shuffle, its last partial batch kept; the ticks as declared
    calls.clear()
    ticks.clear()
    s = _settings(batch_size=64, batches_per_iteration=200)
    p.simulate("bp", [s], [0], CPU, ticks.append)
    assert [[x.shape[1] for x in it] for it in _per_iteration(calls)] == [[64, 64, 64, 64, 44]] * 2
    assert sum(ticks) == p.n_progress_steps(s) == 2 * 200  # nominal: 200 of the 938 batches of 60,000


def test_rules_and_lrs_of_a_seed_see_the_same_batches(calls):
    p = ol.OnlineLearning()
    settings = [_settings(batch_size=8, lr_index=i) for i in (0, 3) for _ in (0, 1)]
    seeds = [0, 1, 0, 1]  # runs: (lr .01, seed 0), (.01, 1), (.10, 0), (.10, 1)
    p.simulate("pc", settings, seeds, CPU, lambda n: None)
    pc = [x for x in calls if not isinstance(x, str)]
    calls.clear()
    p.simulate("bp", settings, seeds, CPU, lambda n: None)
    bp = [x for x in calls if not isinstance(x, str)]
    assert len(pc) == len(bp) == 2 * 4
    for a, b in zip(pc, bp):
        assert torch.equal(a, b)  # PC and BP: the same batches
        assert torch.equal(a[0], a[2]) and torch.equal(a[1], a[3])  # lrs of a seed: the same batches
        assert not torch.equal(a[0], a[1])  # seeds differ
    assert not torch.equal(pc[0], pc[4])  # iteration 2 reshuffles


def test_a_diverging_run_is_data_and_iterations_resume(tmp_path, monkeypatch):
    huge = {**TINY, "batch_size": 8, "lr": 1e4, "lr_index": 0}
    ds = pcneuro.run("online_learning", rule="bp", seeds=1, settings=huge, write=False)
    assert ds.diverged.values.all() and (ds.test_error.isel(iteration=-1).values == 1.0).all()  # NaN nets: 1.0

    quick = dict(rule="pc", seeds=1, settings={**TINY, "batch_size": 8, "iterations": 3}, grid={"lr_index": [0, 4]},
                 quiet=True, figure=False)
    whole = pcneuro.run("online_learning", out=tmp_path / "whole.nc", **quick)
    original = ol.OnlineLearning.save_state

    def interrupt_after_one(self, state):
        original(self, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(ol.OnlineLearning, "save_state", interrupt_after_one)
    out = tmp_path / "part.nc"
    with pytest.raises(Interrupted):
        pcneuro.run("online_learning", out=out, **quick)
    monkeypatch.setattr(ol.OnlineLearning, "save_state", original)
    started = []
    simulate = ol.OnlineLearning.simulate

    def watch(self, *args):
        started.append(self.saved_state()["position"])
        return simulate(self, *args)

    monkeypatch.setattr(ol.OnlineLearning, "simulate", watch)
    resumed = pcneuro.run("online_learning", out=out, resume=True, **quick)
    assert started == [1]
    for name in whole.data_vars:
        np.testing.assert_array_equal(whole[name].values, resumed[name].values, err_msg=name)


def test_small_grid_end_to_end_writes_netcdf_and_figure(tmp_path):
    ds = pcneuro.run("online_learning", preset="quick", settings=TINY, grid={"batch_size": [1, 8], "lr_index": [0, 4]},
                     out=tmp_path / "o.nc", quiet=True)
    assert (tmp_path / "o.png").is_file()
    with xr.open_dataset(tmp_path / "o.nc") as back:
        assert back.test_error.dims == ("rule", "seed", "batch_size", "lr_index", "iteration")
        np.testing.assert_array_equal(back.test_error.values, ds.test_error.values)
    lr = ds.learning_rate.sel(rule="pc", seed=0)
    assert lr.sel(batch_size=1).values.tolist() == pytest.approx([0.05, 0.25])
    assert lr.sel(batch_size=8, lr_index=0) == pytest.approx(0.01) and math.isnan(lr.sel(batch_size=8, lr_index=4))
    empty = ds.sel(batch_size=8, lr_index=4)  # b = 8 has four lrs: slot 4 is planned, never simulated
    for name in ("test_error", "train_loss", "mean_test_error", "min_test_error"):
        assert np.isnan(empty[name].values).all(), name
    assert not empty.diverged.values.any()
    filled = np.isfinite(ds.learning_rate.values)
    assert filled.sum() == 2 * 3  # per rule: b = 1 slots 0 and 4, b = 8 slot 0
    err = ds.test_error.values[filled]
    assert np.isfinite(err).all() and ((err * 30) % 1 < 1e-4).all()  # fractions of the 30 test images
    np.testing.assert_allclose(ds.mean_test_error, ds.test_error.mean("iteration"), rtol=1e-6)
    np.testing.assert_array_equal(ds.min_test_error, ds.test_error.min("iteration"))
    # the recorded lr is the one the engine used: a fixed lr of the same value gives the same run
    fixed = pcneuro.run("online_learning", preset="quick", rule="bp",
                        settings={**TINY, "batch_size": 1, "lr": 0.25, "lr_index": 0}, write=False)
    at_25 = ds.train_loss.sel(rule="bp", batch_size=1, lr_index=4).values
    np.testing.assert_allclose(fixed.train_loss.sel(lr_index=0).values[0, 0], at_25, rtol=1e-5)  # R=1 vs R=4
    assert not np.array_equal(ds.train_loss.sel(rule="bp", batch_size=1, lr_index=0).values, at_25)
    best = ol.best_per_batch(ds)
    for rule in ("pc", "bp"):
        assert best[rule][8]["lr"] == pytest.approx(0.01)  # the only filled slot at b = 8
        m = ds.mean_test_error.sel(rule=rule, batch_size=1).mean("seed").values
        assert best[rule][1]["mean"] == pytest.approx(float(np.min(m)))
    text = summary_text(ds)
    assert "fig 4b" in text and "fig 4c: batch size 1" in text and "(0.272)" in text and "0.199" in text
