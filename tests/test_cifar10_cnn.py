"""cifar10_cnn (specs/benchmarks.md §3.5, fig 4i) on generated CIFAR-format data (tests/conftest.py).

* the error metric: ties and NaN rows are errors (§1.2);
* per-run subsets are class-balanced and paired across rules; each run reshuffles every epoch;
* the network is the spec's (shapes, linear output, no conv biases) under ppc/rbp/pc/bp;
* ``mpiexec -n 2 ... --preset quick`` writes the same data as one process;
* a grid interrupted part-way through a chunk resumes from its per-epoch checkpoint and gives the
  uninterrupted data;
* missing CIFAR-10 with downloads off: one line naming the folder, exit status 2, nothing written.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr

import pcneuro
from conftest import find_mpiexec, run_cli
from pcneuro.cli import summary_text
from pcneuro.datasets.images import load_cifar10
from pcneuro.paradigms import cifar10_cnn
from pcneuro.paradigms._supervised import batch_slices, count_errors, epoch_order
from pcneuro.runner import Interrupted

SMALL = {"T": 4, "epochs": 2, "batch_size": 20, "train_per_class": 2, "test_per_class": 3}


def test_errors_count_ties_and_nan_rows():
    y_hat = torch.tensor([[[0.1, 0.9, 0.0], [0.5, 0.5, 0.0], [float("nan"), 1.0, 0.0], [0.0, 0.2, 0.1]]])
    labels = torch.tensor([1, 0, 1, 2])
    assert count_errors(y_hat, labels).tolist() == [3]  # only the first row is right
    per_run = torch.stack([y_hat[0], y_hat[0]])
    assert count_errors(per_run, torch.stack([labels, torch.tensor([1, 1, 1, 1])])).tolist() == [3, 2]
    inf = float("inf")  # a diverged net's unique +inf (or a -inf elsewhere) at the label is no right answer
    assert count_errors(torch.tensor([[[0.0, inf, 1.0], [-inf, 2.0, 1.0], [0.0, 2.0, 1.0]]]),
                        torch.tensor([1, 1, 1])).tolist() == [2]


def test_subsets_are_balanced_paired_and_reshuffled():
    p = cifar10_cnn.Cifar10CNN()
    labels = load_cifar10("train").labels
    a = p._subsets([0, 1], labels, "train", 3)
    again = p._subsets([0, 1], labels, "train", 3)
    assert torch.equal(a, again)  # from the seed only: every rule and lr of a seed sees this subset
    assert not torch.equal(a[0], a[1])
    for row in a:
        assert np.bincount(labels[row].numpy(), minlength=10).tolist() == [3] * 10
        assert len(set(row.tolist())) == 30
    full = p._subsets([0], labels, "train", 5000)[0]
    assert sorted(full.tolist()) == list(range(len(labels)))
    g1, g2 = [p.generator(0, "shuffle")], [p.generator(0, "shuffle")]
    first, second = epoch_order(g1, a[:1]), epoch_order(g1, a[:1])
    assert torch.equal(first, epoch_order(g2, a[:1]))  # reproducible
    assert not torch.equal(first, second) and sorted(first[0].tolist()) == sorted(a[0].tolist())
    assert [s.stop - s.start for s in batch_slices(25, 10)] == [10, 10, 5]  # the partial batch is kept


def test_network_is_the_spec_and_rules_map():
    from pcneuro.engine import build_rule

    spec = cifar10_cnn.NETWORK
    shapes = spec.param_shapes()
    assert shapes["0.weight"] == (64, 3, 3, 3) and "0.bias" not in shapes
    assert shapes["2.weight"] == (128, 64, 3, 3) and shapes["5.weight"] == (512, 8192)
    assert shapes["7.weight"] == (10, 512) and len(spec.node_positions) == 3  # VNs after each hidden layer
    cfg = pcneuro.engine.TrainConfig(T=16, weight_opt=pcneuro.engine.Adam(lr=1e-4))
    assert build_rule("rbp", spec, cfg)[1].T == 16 and not build_rule("rbp", spec, cfg)[0].has_value_nodes
    assert build_rule("ppc", spec, cfg)[1].weight_steps == "all"
    assert cifar10_cnn.Cifar10CNN.rules == ("ppc", "rbp")


def test_small_run_learns_and_records_every_epoch(tmp_path):
    ds = pcneuro.run("cifar10_cnn", rule="ppc,rbp,pc,bp", preset="quick", settings=SMALL, out=tmp_path / "s.nc",
                     quiet=True)
    assert list(ds.rule.values) == ["ppc", "rbp", "pc", "bp"]
    assert ds.test_error.dims == ("rule", "seed", "lr", "epoch") and ds.sizes["epoch"] == 2
    np.testing.assert_array_equal(ds.min_test_error.values, ds.test_error.min("epoch").values)
    assert not ds.diverged.values.any() and np.isfinite(ds.train_loss.values).all()
    err = ds.test_error.values
    assert ((err * 30) % 1 == 0).all()  # a fraction of the 30 test images
    assert (ds.train_loss.isel(epoch=-1) < ds.train_loss.isel(epoch=0)).all()  # every run learns
    assert (tmp_path / "s.png").is_file()
    text = summary_text(ds)
    assert "PC (PPC)" in text and "BP (RBP)" in text and "best lr" in text


@pytest.mark.skipif(find_mpiexec() is None, reason="mpiexec not installed")
def test_two_ranks_write_the_one_process_data(tmp_path):
    one = run_cli("cifar10_cnn", "--preset", "quick", "--quiet", "--no-figure", "--out", tmp_path / "one.nc")
    assert one.returncode == 0, one.stderr
    two = run_cli("cifar10_cnn", "--preset", "quick", "--quiet", "--no-figure", "--out", tmp_path / "two.nc",
                  mpi_ranks=2)
    assert two.returncode == 0, two.stderr
    with xr.open_dataset(tmp_path / "one.nc") as a, xr.open_dataset(tmp_path / "two.nc") as b:
        for name in a.data_vars:
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
        assert b.attrs["mpi_size"] == 2 and a.attrs["config"] == b.attrs["config"]


def test_interrupted_grid_resumes_from_its_epoch_checkpoints(tmp_path, monkeypatch):
    quick = dict(rule="ppc,rbp", preset="quick", settings=SMALL, quiet=True, figure=False)
    whole = pcneuro.run("cifar10_cnn", out=tmp_path / "whole.nc", **quick)
    saves, original = [], cifar10_cnn.Cifar10CNN.save_state

    def interrupt_after_three(self, state):  # chunk 0 (ppc) saves epochs 1-2; chunk 1 stops after epoch 1
        original(self, state)
        saves.append(state["position"])
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(cifar10_cnn.Cifar10CNN, "save_state", interrupt_after_three)
    out = tmp_path / "part.nc"
    with pytest.raises(Interrupted) as info:
        pcneuro.run("cifar10_cnn", out=out, **quick)
    assert "1 of 2 chunks done, 1 part-way" in info.value.message()
    started = []
    original_simulate = cifar10_cnn.Cifar10CNN.simulate

    def watch(self, rule, settings, seeds, device, progress):
        state = self.saved_state()
        started.append((rule, None if state is None else state["position"]))
        return original_simulate(self, rule, settings, seeds, device, progress)

    monkeypatch.setattr(cifar10_cnn.Cifar10CNN, "save_state", original)
    monkeypatch.setattr(cifar10_cnn.Cifar10CNN, "simulate", watch)
    resumed = pcneuro.run("cifar10_cnn", out=out, resume=True, **quick)
    assert started == [("rbp", 1)]  # only the unfinished chunk, from its saved epoch
    for name in whole.data_vars:
        np.testing.assert_array_equal(whole[name].values, resumed[name].values, err_msg=name)


def test_missing_data_is_one_line_and_writes_nothing(tmp_path):
    empty = tmp_path / "nowhere"
    empty.mkdir()
    out = tmp_path / "results"
    res = run_cli("cifar10_cnn", "--preset", "quick", "--data-dir", empty, "--no-download", "--out", out)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and str(empty) in lines[0] and "cifar-10-batches-py" in lines[0], res.stderr
    assert not out.exists() and list(empty.iterdir()) == []
