"""small_data (specs/benchmarks.md §3.2, fig 4h) on the generated Fashion-MNIST (tests/conftest.py:
30 training and 10 test images per class).

* training subsets hold exactly n per class (Q1), come from the seed only (paired across rules and
  lrs) and each run reshuffles its subset every epoch;
* BP takes one SGD step per batch (T = 1) whatever T says (Q9); PC takes T inference steps;
* the quick preset end to end: NetCDF, figure and summary, every epoch recorded on the full test set;
* a grid interrupted part-way through a chunk resumes from its per-epoch checkpoint and gives the
  uninterrupted data.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import pcneuro
from pcneuro.cli import summary_text
from pcneuro.datasets.images import load_fashion_mnist
from pcneuro.paradigms import small_data
from pcneuro.paradigms._supervised import MLP32, epoch_order, mlp, sgd_engine
from pcneuro.runner import Interrupted, chunk_plan, make_plan

SMALL = {"T": 4, "epochs": 2, "batch_size": 20}


def test_subsets_hold_exactly_n_per_class_and_are_paired_by_seed():
    p = small_data.SmallData()
    labels = load_fashion_mnist("train").labels
    seeds = [0, 0, 1, 1, 0]  # e.g. two lrs of seed 0, two of seed 1, a third lr of seed 0
    sub = p._subsets(seeds, labels, 7)
    assert sub.shape == (5, 70)
    for row in sub:
        assert np.bincount(labels[row].numpy(), minlength=10).tolist() == [7] * 10  # exact n (Q1)
        assert len(set(row.tolist())) == 70
    assert torch.equal(sub[0], sub[1]) and torch.equal(sub[0], sub[4]) and torch.equal(sub[2], sub[3])
    assert not torch.equal(sub[0], sub[2])
    assert torch.equal(small_data.SmallData()._subsets([1], labels, 7)[0], sub[2])  # from the seed alone
    smaller = p._subsets([0], labels, 3)[0]
    assert set(smaller.tolist()) < set(sub[0].tolist())  # one permutation per class: nested subsets
    whole = p._subsets([0], labels, 6000)[0]  # n ≥ the class size: every example, none dropped (Q1)
    assert sorted(whole.tolist()) == list(range(len(labels)))


def test_runs_of_a_seed_share_their_subset_across_rules_and_lrs(monkeypatch):
    """Each simulate call (one rule, all lrs × seeds) draws the same subsets for the same seeds."""
    seen = []
    original = small_data.SmallData._subsets

    def record(self, seeds, labels, n_per_class):
        sub = original(self, seeds, labels, n_per_class)
        seen.append(dict(zip(seeds, sub)))
        return sub

    monkeypatch.setattr(small_data.SmallData, "_subsets", record)
    settings = {"T": 3, "epochs": 1, "batch_size": 50}
    pcneuro.run("small_data", preset="quick", settings=settings, grid={"n_per_class": [5], "lr": [0.01, 0.02]},
                quiet=True, figure=False)
    assert len(seen) == 2  # pc, then bp
    for seed in (0, 1):
        assert torch.equal(seen[0][seed], seen[1][seed])
    assert not torch.equal(seen[0][0], seen[0][1])


def test_every_epoch_reshuffles_each_runs_subset():
    p = small_data.SmallData()
    sub = p._subsets([0, 1], load_fashion_mnist("train").labels, 5)
    gens = [p.generator(s, "shuffle") for s in (0, 1)]
    first, second = epoch_order(gens, sub), epoch_order(gens, sub)
    for a, b, s in zip(first, second, sub):
        assert sorted(a.tolist()) == sorted(b.tolist()) == s.tolist()  # a permutation of the subset
        assert not torch.equal(a, b)  # a new order each epoch
    again = epoch_order([p.generator(s, "shuffle") for s in (0, 1)], sub)
    assert torch.equal(first, again)  # reproducible from the seed


def test_bp_takes_one_step_per_batch_and_pc_takes_T():
    p = small_data.SmallData()
    settings = [dict(p.settings, lr=0.01)] * 2
    bp = sgd_engine(p, "bp", mlp(MLP32), settings, [0, 1], "cpu")
    pc = sgd_engine(p, "pc", mlp(MLP32), settings, [0, 1], "cpu")
    assert bp.config.T == 1 and not bp.spec.has_value_nodes  # Q9: T = 1, whatever T = 64 says
    assert pc.config.T == 64 and pc.spec.has_value_nodes
    for name in bp.params:  # the same initial weights for both rules
        assert torch.equal(bp.params[name], pc.params[name])
    torch.manual_seed(0)
    x, y = torch.rand(5, 784), torch.nn.functional.one_hot(torch.arange(5), 10).float()
    w = {n: t[0].clone().requires_grad_() for n, t in bp.params.items()}
    h = torch.sigmoid(torch.sigmoid(x @ w["0.weight"].T) @ w["2.weight"].T)
    loss = 0.5 * ((h @ w["4.weight"].T - y) ** 2).sum()  # summed, not averaged (§1.2)
    loss.backward()
    bp.train_batch(x, y)
    for name, v in w.items():  # exactly one SGD step on the summed loss
        torch.testing.assert_close(bp.params[name][0], v.detach() - 0.01 * v.grad)


def test_quick_preset_writes_netcdf_and_figure(tmp_path):
    ds = pcneuro.run("small_data", preset="quick", out=tmp_path / "q.nc", quiet=True)
    assert ds.test_error.dims == ("rule", "seed", "n_per_class", "lr", "epoch")
    assert ds.sizes["epoch"] == 3 and list(ds.n_per_class.values) == [6, 24]
    np.testing.assert_array_equal(ds.min_test_error.values, ds.test_error.min("epoch").values)
    assert ((ds.test_error.values * 100) % 1 == 0).all()  # fractions of the full (100-image) test set
    assert not ds.diverged.values.any() and np.isfinite(ds.train_loss.values).all()
    assert (ds.train_loss.isel(epoch=-1) < ds.train_loss.isel(epoch=0)).all()  # every run learns
    assert (tmp_path / "q.nc").is_file() and (tmp_path / "q.png").is_file()
    with xr.open_dataset(tmp_path / "q.nc") as saved:
        np.testing.assert_array_equal(saved.test_error.values, ds.test_error.values)
    text = summary_text(ds)
    assert "best lr" in text and "PC" in text and "BP" in text
    best = small_data.best_by_n(ds)
    mean = ds.min_test_error.mean("seed")
    assert (best["mean"].sel(n_per_class=24) < 0.85).all()  # well below chance (0.9) after 3 epochs
    for rule in ("pc", "bp"):
        for n in (6, 24):
            m = mean.sel(rule=rule, n_per_class=n)
            assert float(best["mean"].sel(rule=rule, n_per_class=n)) == pytest.approx(float(m.min()))
            assert float(best["lr"].sel(rule=rule, n_per_class=n)) == float(m.idxmin("lr"))


def test_a_diverging_run_is_data_not_a_crash():
    ds = pcneuro.run("small_data", rule="bp", seeds=1, settings={"epochs": 2, "n_per_class": 10},
                     grid={"lr": [0.01, 1e4]}, quiet=True, figure=False)
    assert ds.diverged.sel(lr=1e4).values.all() and not ds.diverged.sel(lr=0.01).values.any()
    assert (ds.test_error.sel(lr=1e4).isel(epoch=-1).values == 1.0).all()  # NaN outputs count as errors


def test_one_program_per_rule_and_n():
    plan = make_plan("small_data", preset="paper")
    chunks = chunk_plan(small_data.SmallData, plan.runs)
    assert len(chunks) == 10 and all(len(c) == 17 * 3 for c in chunks)
    for c in chunks:
        assert len({(r.rule, r.settings["n_per_class"]) for r in c}) == 1


def test_interrupted_grid_resumes_from_its_epoch_checkpoints(tmp_path, monkeypatch):
    quick = dict(preset="quick", settings=SMALL, grid={"n_per_class": [4], "lr": [0.01, 0.05]}, quiet=True,
                 figure=False)
    whole = pcneuro.run("small_data", out=tmp_path / "whole.nc", **quick)
    saves, original = [], small_data.SmallData.save_state

    def interrupt_after_three(self, state):  # chunk 0 (pc) saves epochs 1-2; chunk 1 stops after epoch 1
        original(self, state)
        saves.append(state["position"])
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(small_data.SmallData, "save_state", interrupt_after_three)
    out = tmp_path / "part.nc"
    with pytest.raises(Interrupted) as info:
        pcneuro.run("small_data", out=out, **quick)
    assert "1 of 2 chunks done, 1 part-way" in info.value.message()
    started = []
    original_simulate = small_data.SmallData.simulate

    def watch(self, rule, settings, seeds, device, progress):
        state = self.saved_state()
        started.append((rule, None if state is None else state["position"]))
        return original_simulate(self, rule, settings, seeds, device, progress)

    monkeypatch.setattr(small_data.SmallData, "save_state", original)
    monkeypatch.setattr(small_data.SmallData, "simulate", watch)
    resumed = pcneuro.run("small_data", out=out, resume=True, **quick)
    assert started == [("bp", 1)]  # only the unfinished chunk, from its saved epoch
    for name in whole.data_vars:
        np.testing.assert_array_equal(whole[name].values, resumed[name].values, err_msg=name)
