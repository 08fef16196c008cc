"""continual_learning (specs/benchmarks.md §3.3, fig 4d/4e) on the generated Fashion-MNIST (tests/conftest.py).

* the schedule: blocks A×4 / B×4, and which task each iteration trains;
* the tasks: a per-seed split of the 10 classes into two disjoint tasks of 5 covering all classes;
  the shared head maps each task's classes bijectively onto the 5 units; targets are one-hot there;
* both tasks are tested after every iteration, each on its own classes, ties and NaN rows wrong;
* the paired design: PC and BP runs of a seed see the same π, subsets, orders (the same batches);
* an interrupted run resumes from its mid-run checkpoint with the same bits;
* a tiny end-to-end run writes a NetCDF and the figure.

The generated images brighten rows 2c+4 … 2c+6 for class c (all 255, everything else < 120), so a
batch's classes can be read back from its pixels.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import pcneuro
from pcneuro.cli import summary_text
from pcneuro.datasets.images import load_fashion_mnist
from pcneuro.engine import Engine
from pcneuro.paradigms import continual_learning as cl

SMALL = {"T": 4, "iterations": 6, "block": 2, "scored_iterations": 4, "train_per_class": 4, "test_per_class": 3,
         "batch_size": 8}  # 20 images per task: batches of 8, 8, 4


def decode_classes(x: torch.Tensor) -> torch.Tensor:
    """Classes of generated images ``x`` [..., 784] in [0, 1]: the first all-bright row is 2c + 4."""
    bright = (x.reshape(*x.shape[:-1], 28, 28) == 1.0).all(-1)  # [..., 28]
    return (bright.float().argmax(-1) - 4) // 2


def test_schedule_is_blocks_of_four_a_first():
    assert cl.task_schedule(16, 4) == [0] * 4 + [1] * 4 + [0] * 4 + [1] * 4
    full = cl.task_schedule(160, 4)
    assert sum(full) == 80 and all(full[i] == (i // 4) % 2 for i in range(160))
    assert cl.task_schedule(5, 2) == [0, 0, 1, 1, 0]


def test_tasks_are_a_random_disjoint_split_with_a_bijective_head():
    p = cl.ContinualLearning()
    perms = p.permutations(range(21))
    assert torch.equal(perms, p.permutations(range(21)))  # from the seed only
    assert torch.equal(p.permutations([5])[0], perms[5])  # whatever the other runs
    assert len({tuple(r.tolist()) for r in perms}) > 15  # a fresh split per seed
    task_of, unit_of = cl.task_maps(perms)
    for perm, task, unit in zip(perms, task_of, unit_of):
        a, b = set(perm[:5].tolist()), set(perm[5:].tolist())
        assert a | b == set(range(10)) and not a & b
        assert {c for c in range(10) if task[c] == 0} == a
        for k, classes in enumerate((perm[:5], perm[5:])):
            assert [int(unit[c]) for c in classes] == [0, 1, 2, 3, 4]  # π(5k+j) → unit j: a bijection
            assert all(int(task[c]) == k for c in classes)
    task_of, unit_of = cl.task_maps(torch.tensor([[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]))
    assert task_of[0].tolist() == [1] * 5 + [0] * 5 and unit_of[0].tolist() == [4, 3, 2, 1, 0, 4, 3, 2, 1, 0]


def test_targets_are_one_hot_at_the_mapped_unit():
    perms = cl.ContinualLearning().permutations([0, 1, 2])
    _, unit_of = cl.task_maps(perms)
    labels = torch.randint(0, 10, (3, 7), generator=torch.Generator().manual_seed(0))
    y = cl.unit_targets(unit_of, labels, torch.float32)
    assert y.shape == (3, 7, 5) and y.dtype == torch.float32
    assert ((y == 0) | (y == 1)).all() and (y.sum(-1) == 1).all()
    for r in range(3):
        assert y[r].argmax(-1).tolist() == [int(unit_of[r, c]) for c in labels[r]]


def test_train_subsets_are_balanced_per_task_and_drawn_from_the_seed():
    p = cl.ContinualLearning()
    labels = load_fashion_mnist("train").labels
    perms = p.permutations([0, 1])
    a, b = p.train_subsets([0, 1], labels, perms, 4)
    again = p.train_subsets([1], labels, perms[1:], 4)
    assert torch.equal(a[1], again[0][0]) and torch.equal(b[1], again[1][0])
    for r in range(2):
        for subset, classes in ((a[r], perms[r, :5]), (b[r], perms[r, 5:])):
            counts = np.bincount(labels[subset].numpy(), minlength=10)
            assert sorted(np.flatnonzero(counts).tolist()) == sorted(classes.tolist())
            assert (counts[classes.numpy()] == 4).all() and len(set(subset.tolist())) == 20
    whole = p.train_subsets([0], labels, perms[:1], 6000)[0][0]  # at least the class size: all of them
    assert len(whole) == 5 * 30


class StubEngine:
    """Feed-forward outputs fixed per run: what task_test_error sees of an engine."""

    def __init__(self, out):
        self.out, self.n_runs, self.dtype = out, out.shape[0], out.dtype

    def forward(self, x):
        return self.out[:, :x.shape[0]]


def test_both_tasks_are_scored_on_their_own_images_ties_and_nan_wrong():
    # 4 test images: classes 0, 1 (task A of run 0) and 2, 3 (task B of run 0); run 1 swaps the tasks
    units = torch.tensor([[0, 1, 0, 1], [0, 1, 0, 1]])
    in_b = torch.tensor([[0, 0, 1, 1], [1, 1, 0, 0]])
    nan = float("nan")
    out = torch.tensor([
        [[1., 0], [0, 1], [1, 0], [0, 0]],  # A right, right; B right, tie → errors A 0/2, B 1/2
        [[1., 0], [nan, 1], [0, 1], [0, 1]],  # on B (images 0, 1): right, NaN; on A: wrong, right
    ])
    counts = torch.full((2, 2), 2.0)
    err = cl.task_test_error(StubEngine(out), torch.zeros(4, 784), units, in_b, counts, lambda im: im)
    assert err.tolist() == [[0.0, 0.5], [0.5, 0.5]]


def _simulate(rule, seeds, lrs, settings=SMALL, paradigm=None):
    p = paradigm or cl.ContinualLearning()
    runs = [dict(p.settings, **settings, lr=lr) for lr in lrs]
    return p.simulate(rule, runs, seeds, torch.device("cpu"), lambda n: None)


def test_batches_follow_the_schedule_are_paired_and_both_tasks_are_tested(monkeypatch):
    events = []
    train_batch, forward = Engine.train_batch, Engine.forward

    def record_train(self, x0, y, output_mask=None):
        events.append(("train", x0.clone(), y.clone()))
        return train_batch(self, x0, y, output_mask)

    def record_forward(self, x0):
        events.append(("test", x0.clone()))
        return forward(self, x0)

    monkeypatch.setattr(Engine, "train_batch", record_train)
    monkeypatch.setattr(Engine, "forward", record_forward)
    seeds = [3, 8]
    out = {}
    for rule in ("pc", "bp"):
        events.clear()
        out[rule] = (_simulate(rule, seeds, [0.01, 0.01]), list(events))
    pc_events, bp_events = out["pc"][1], out["bp"][1]
    assert [e[0] for e in pc_events] == (["train"] * 3 + ["test"]) * 6  # every iteration: its epoch, then a test
    assert len(pc_events) == len(bp_events)
    for e_pc, e_bp in zip(pc_events, bp_events):  # the paired design: the same images, targets, order
        assert all(torch.equal(a, b) for a, b in zip(e_pc[1:], e_bp[1:]))

    perms = cl.ContinualLearning().permutations(seeds)
    _, unit_of = cl.task_maps(perms)
    schedule = cl.task_schedule(6, 2)
    for it in range(6):
        batches = pc_events[4 * it:4 * it + 3]
        x = torch.cat([b[1] for b in batches], dim=1)  # [R, 20, 784]: one epoch of the active task
        y = torch.cat([b[2] for b in batches], dim=1)
        classes = decode_classes(x)
        for r in range(2):
            active = perms[r, 5 * schedule[it]:5 * schedule[it] + 5]
            assert sorted(np.bincount(classes[r].numpy(), minlength=10)[active.numpy()].tolist()) == [4] * 5
            assert torch.equal(y[r], cl.unit_targets(unit_of[r:r + 1], classes[r:r + 1], y.dtype)[0])
        tested = decode_classes(pc_events[4 * it + 3][1])
        assert np.bincount(tested.numpy(), minlength=10).tolist() == [3] * 10  # both tasks' classes
    assert not torch.equal(pc_events[0][1], pc_events[8][1])  # reshuffled: iterations 0 and 4 both train A

    measures = out["pc"][0]
    err = measures["test_error"]
    assert err.shape == (2, 6, 2) and np.isfinite(err).all()
    assert np.allclose(err * 15, np.round(err * 15))  # fractions of each task's 15 test images
    np.testing.assert_allclose(measures["mean_test_error"], err[:, :4].mean(axis=(1, 2)), rtol=1e-6)

    alone = _simulate("pc", [8], [0.01])  # a seed's run does not depend on the runs batched with it
    np.testing.assert_array_equal(alone["test_error"][0], err[1])


class MemoryCheckpoint:
    """Stands in for the runner's mid-run store: keeps one serialised state; can interrupt a save."""

    def __init__(self, stop_after=None):
        self.blob, self.saves, self.stop_after = None, 0, stop_after

    def load(self):
        return None if self.blob is None else torch.load(io.BytesIO(self.blob), weights_only=False)

    def save(self, state):
        buffer = io.BytesIO()
        torch.save(state, buffer)
        self.blob = buffer.getvalue()
        self.saves += 1
        if self.saves == self.stop_after:
            raise KeyboardInterrupt


def test_an_interrupted_run_resumes_from_its_checkpoint_with_the_same_bits(monkeypatch):
    whole = _simulate("pc", [0, 1], [0.01, 0.005])
    store = MemoryCheckpoint(stop_after=1)  # the first checkpoint: after iteration 4 (CHECKPOINT_EVERY)
    p = cl.ContinualLearning()
    p._midrun = store
    with pytest.raises(KeyboardInterrupt):
        _simulate("pc", [0, 1], [0.01, 0.005], paradigm=p)
    assert store.load()["position"] == cl.CHECKPOINT_EVERY
    batches = []
    train_batch = Engine.train_batch
    monkeypatch.setattr(Engine, "train_batch", lambda self, *a, **k: batches.append(1) or train_batch(self, *a, **k))
    resumed_p = cl.ContinualLearning()
    resumed_p._midrun = MemoryCheckpoint()
    resumed_p._midrun.blob = store.blob
    resumed = _simulate("pc", [0, 1], [0.01, 0.005], paradigm=resumed_p)
    assert len(batches) == 3 * (6 - cl.CHECKPOINT_EVERY)  # only the iterations after the checkpoint
    for name in whole:
        np.testing.assert_array_equal(whole[name], resumed[name], err_msg=name)


def test_tiny_run_writes_netcdf_and_figure_and_flags_divergence(tmp_path):
    ds = pcneuro.run("continual_learning", rule="pc,bp", preset="quick", settings=SMALL, grid={"lr": (0.01, 1e4)},
                     out=tmp_path / "cl.nc", quiet=True)
    assert (tmp_path / "cl.nc").is_file() and (tmp_path / "cl.png").is_file()
    assert ds.test_error.dims == ("rule", "seed", "lr", "iteration", "task")
    assert list(ds.task.values) == ["A", "B"] and ds.sizes["iteration"] == 6
    np.testing.assert_allclose(ds.mean_test_error.values, ds.test_error.isel(iteration=slice(0, 4)).mean(
        ["iteration", "task"]).values, rtol=1e-6)
    ok = ds.sel(lr=0.01)
    assert not ok.diverged.values.any() and np.isfinite(ok.train_loss.values).all()
    assert (ok.train_loss.isel(iteration=-1) < ok.train_loss.isel(iteration=0)).all()  # every run learns
    blown = ds.sel(lr=1e4)
    assert blown.diverged.values.all()  # diverged runs are data: flagged, scored as all wrong
    assert (blown.test_error.isel(iteration=-1) == 1.0).all()
    text = summary_text(ds)
    assert "PC" in text and "BP" in text and "published" in text and "best lr" in text
