"""concept_drift (specs/benchmarks.md §3.4, fig 4f/4g) on the generated Fashion-MNIST (tests/conftest.py).

* drifts at 0, 64, …, 2944; each drift's map fixes labels 0-4 and permutes 5-9 among themselves;
* in a run, the training targets and the test labels follow the current map, which changes (with fresh
  train and test subsets) at every drift and nowhere else, and PC and BP runs of a seed see the same
  maps, subsets and orders; targets are ±1, in the drift runs and in the pre-training;
* the pre-training is computed once, cached, reused (a second job does not retrain), keyed by its
  settings; every drift run starts from the cached weights;
* a diverging lr is data (error 1.0, diverged) and the grid completes;
* a small end-to-end run writes NetCDF + figure; an interrupted run resumes from its drift-period
  checkpoint with the same data.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import pcneuro
from pcneuro.cli import summary_text
from pcneuro.datasets.images import load_fashion_mnist
from pcneuro.engine import Engine
from pcneuro.paradigms import concept_drift
from pcneuro.paradigms.concept_drift import ConceptDrift, draw_label_map, drift_iterations, pm1_targets
from pcneuro.runner import Interrupted

TINY = {"T": 3, "iterations": 6, "drift_period": 2, "train_per_class": 4, "test_per_class": 3, "batch_size": 16,
        "pretrain_epochs": 1, "pretrain_per_class": 10}
BATCHES = 3  # ceil(40 / 16) per iteration


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """A fresh pre-training cache per test (the default is results/cache under the current directory)."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("PCNEURO_CACHE", str(folder))
    return folder


def run(**kw):
    args = dict(rule="pc,bp", seeds=2, grid={"lr": (0.01,)}, settings=TINY, quiet=True, write=False)
    args.update(kw)
    return pcneuro.run("concept_drift", **args)


def _label_of_image(split: str):
    """Original label of each generated image, looked up by its pixels (the images are distinct)."""
    data = load_fashion_mnist(split)
    table = {bytes(img.reshape(-1).numpy()): int(lab) for img, lab in zip(data.images, data.labels)}
    assert len(table) == len(data)

    def lookup(x):  # x [b, 784]: uint8, or float in [0, 1]
        pixels = (x * 255).round().to(torch.uint8) if x.is_floating_point() else x
        return [table[bytes(row.numpy())] for row in pixels]
    return lookup


def test_drift_schedule_and_label_maps():
    drifts = list(drift_iterations(3000, 64))
    assert drifts[:2] == [0, 64] and drifts[-1] == 2944 and len(drifts) == 47 and 3000 - drifts[-1] == 56
    g = ConceptDrift.generator(0, "relabel")
    maps = [draw_label_map(g) for _ in range(40)]
    for m in maps:
        assert m[:5].tolist() == [0, 1, 2, 3, 4] and sorted(m[5:].tolist()) == [5, 6, 7, 8, 9]
    assert len({tuple(m.tolist()) for m in maps}) > 10  # a fresh permutation at every draw
    again = ConceptDrift.generator(0, "relabel")
    assert all(torch.equal(m, draw_label_map(again)) for m in maps)  # from (seed, purpose) only
    assert pm1_targets(torch.tensor([0, 3]), torch.float32).tolist() == [
        [1.0, -1, -1, -1, -1, -1, -1, -1, -1, -1], [-1.0, -1, -1, 1, -1, -1, -1, -1, -1, -1]]


def test_targets_and_test_labels_follow_the_drift_paired_across_rules(monkeypatch):
    calls, tests = [], []
    train_batch, test_error = Engine.train_batch, concept_drift.subset_test_error

    def record_batch(self, x0, y, output_mask=None):
        calls.append((x0.clone(), y.clone()))
        return train_batch(self, x0, y, output_mask)

    def record_test(engine, images, labels, as_input):
        tests.append((images.clone(), labels.clone()))
        return test_error(engine, images, labels, as_input)

    monkeypatch.setattr(Engine, "train_batch", record_batch)
    monkeypatch.setattr(concept_drift, "subset_test_error", record_test)
    ds = run()
    calls = [c for c in calls if c[0].shape[0] == 2]  # the drift runs (R = 2 seeds), not the pre-training
    tests = [c for c in tests if c[0].shape[0] == 2]
    n_it = TINY["iterations"]
    assert len(calls) == 2 * n_it * BATCHES and len(tests) == 2 * n_it
    pc, bp = calls[:n_it * BATCHES], calls[n_it * BATCHES:]
    for (xa, ya), (xb, yb) in zip(pc, bp):  # the same images, order and targets for both rules
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    for (xa, la), (xb, lb) in zip(tests[:n_it], tests[n_it:]):
        assert torch.equal(xa, xb) and torch.equal(la, lb)
    train_label, test_label = _label_of_image("train"), _label_of_image("test")
    for r in range(2):
        maps, train_sets, test_sets = [], [], []
        for it in range(n_it):
            mapping, images = {}, set()
            for x, y in pc[it * BATCHES:(it + 1) * BATCHES]:
                assert set(y[r].unique().tolist()) == {-1.0, 1.0} and (y[r] == 1).sum(1).eq(1).all()  # ±1 targets
                for orig, unit in zip(train_label(x[r]), y[r].argmax(1).tolist()):
                    assert mapping.setdefault(orig, unit) == unit  # one map per iteration
                images |= {bytes(row.numpy()) for row in (x[r] * 255).round().to(torch.uint8)}
            assert [mapping[c] for c in range(5)] == [0, 1, 2, 3, 4]  # 0-4 fixed
            assert sorted(mapping[c] for c in range(5, 10)) == [5, 6, 7, 8, 9]  # 5-9 permuted among themselves
            x_test, y_test = tests[it]
            assert [mapping[c] for c in test_label(x_test[r])] == y_test[r].tolist()  # the test uses the same map
            maps.append(tuple(mapping[c] for c in range(10)))
            train_sets.append(images)
            test_sets.append(bytes(x_test[r].numpy()))
        for it in range(1, n_it):
            if it % TINY["drift_period"]:  # no drift: same map and subsets
                assert maps[it] == maps[it - 1] and train_sets[it] == train_sets[it - 1]
                assert test_sets[it] == test_sets[it - 1]
            else:  # a drift: fresh subsets (and a fresh map, drawn; identity allowed)
                assert train_sets[it] != train_sets[it - 1] and test_sets[it] != test_sets[it - 1]
        period_maps = maps[::TINY["drift_period"]]
        assert len(set(period_maps)) > 1, f"run {r}: no map changed over the drifts {period_maps}"
    assert not (ds.diverged.values.any())


def test_pretraining_is_cached_once_reused_and_keyed_by_its_settings(monkeypatch, cache):
    trained, targets = [], []
    pretrain = ConceptDrift.pretrain.__func__
    train_batch = Engine.train_batch

    def counting(cls, settings):
        trained.append(dict(settings))
        return pretrain(cls, settings)

    def record(self, x0, y, output_mask=None):
        targets.append(y.clone())
        return train_batch(self, x0, y, output_mask)

    monkeypatch.setattr(ConceptDrift, "pretrain", classmethod(counting))
    monkeypatch.setattr(Engine, "train_batch", record)
    zero_lr = {"lr": (0.0,)}  # the weights never move: the first weight norm is the start's
    first = run(grid=zero_lr)
    files = list(cache.iterdir())
    assert len(trained) == 1 and len(files) == 1  # once for both rules and both seeds
    stamp = files[0].stat().st_mtime_ns
    assert all(set(y.unique().tolist()) == {-1.0, 1.0} for y in targets)  # ±1 in the pre-training as well
    saved = torch.load(files[0], weights_only=True)
    start = sum(float(w.norm()) for w in saved["weights"].values())
    np.testing.assert_allclose(first.weight_norm.values, start, rtol=1e-5)  # every run starts from the cache
    assert (first.pretrained_test_error.values == np.float32(saved["test_error"])).all()

    second = run(grid=zero_lr)
    assert len(trained) == 1 and list(cache.iterdir()) == files and files[0].stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.test_error.values, second.test_error.values)

    other = dict(ConceptDrift().settings, **TINY)
    assert ConceptDrift.pretrain_path(other) == files[0]
    for key, value in {"pretrain_lr": 0.02, "pretrain_epochs": 2, "pretrain_seed": 1,
                       "pretrain_batch_size": 30, "pretrain_per_class": 5}.items():
        assert ConceptDrift.pretrain_path(dict(other, **{key: value})) != files[0], key
    run(grid=zero_lr, settings=dict(TINY, pretrain_lr=0.02))
    assert len(trained) == 2 and len(list(cache.iterdir())) == 2


def test_a_diverging_lr_is_data_and_the_grid_completes():
    ds = run(grid={"lr": (0.01, 1e4)}, settings=dict(TINY, iterations=2))
    assert list(ds.lr.values) == [0.01, 1e4]
    big, fine = ds.sel(lr=1e4), ds.sel(lr=0.01)
    assert big.diverged.values.all() and not fine.diverged.values.any()
    assert (big.test_error.isel(iteration=-1).values == 1.0).all()  # NaN outputs are errors
    assert np.isfinite(fine.test_error.values).all() and np.isfinite(fine.weight_norm.values).all()
    np.testing.assert_allclose(ds.mean_test_error.values, ds.test_error.mean("iteration").values, rtol=1e-6)


def test_small_run_writes_netcdf_and_figure(tmp_path):
    out = tmp_path / "drift.nc"
    ds = pcneuro.run("concept_drift", rule="pc,bp", preset="quick", settings=TINY, out=out, quiet=True)
    assert out.is_file() and out.with_suffix(".png").is_file()
    assert ds.test_error.dims == ("rule", "seed", "lr", "iteration") and list(ds.iteration.values) == list(range(6))
    err = ds.test_error.values
    assert ((err * 30) % 1 < 1e-4).all()  # a fraction of the 30 test images
    assert (ds.weight_norm.values > 0).all()
    text = summary_text(ds)
    assert "PC" in text and "BP" in text and "published" in text and "pre-trained" in text


def test_interrupted_run_resumes_from_its_drift_checkpoints(tmp_path, monkeypatch):
    kw = dict(write=True, figure=False)
    whole = run(out=tmp_path / "whole.nc", **kw)
    saves, original = [], ConceptDrift.save_state

    def interrupt(self, state):  # chunk 0 (pc) saves after iterations 2, 4, 6; chunk 1 stops after 2
        original(self, state)
        saves.append(state["iteration"])
        if len(saves) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(ConceptDrift, "save_state", interrupt)
    out = tmp_path / "part.nc"
    with pytest.raises(Interrupted):
        run(out=out, **kw)
    assert saves == [2, 4, 6, 2]
    started, simulate = [], ConceptDrift.simulate

    def watch(self, rule, settings, seeds, device, progress):
        state = self.saved_state()
        started.append((rule, None if state is None else state["iteration"]))
        return simulate(self, rule, settings, seeds, device, progress)

    monkeypatch.setattr(ConceptDrift, "save_state", original)
    monkeypatch.setattr(ConceptDrift, "simulate", watch)
    resumed = run(out=out, resume=True, **kw)
    assert started == [("bp", 2)]  # only the unfinished chunk, from its last drift period
    for name in whole.data_vars:
        np.testing.assert_array_equal(whole[name].values, resumed[name].values, err_msg=name)
