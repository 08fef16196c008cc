"""Mid-run checkpoints (pcneuro.checkpoint, Paradigm.save_state / saved_state, Engine.state_dict).

A small paradigm trains a Linear net for several epochs and checkpoints after every epoch (engine
parameters, Adam moments, generator states, the epoch reached and the losses so far), as the long
benchmark paradigms do. The tests interrupt a checkpointed job part-way through a chunk, resume it,
and check that the resumed chunk started from its saved epoch (not from zero) and that the data
equal an uninterrupted run bitwise; and that the engine's state round-trips through the host.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Sequence

import numpy as np
import pytest
import torch
import xarray as xr

import pcneuro
from pcneuro.checkpoint import CheckpointStore, _from_host, _to_host, checkpoint_dir
from pcneuro.engine import Activation, Adam, Engine, LatentSGD, Linear, NetworkSpec, TrainConfig, build_rule, init_params
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.runner import Interrupted

SPEC = NetworkSpec((Linear(3, 6), Activation("tanh"), Linear(6, 2)))
EPOCHS, BATCHES, BATCH = 5, 3, 4


class EpochTrainer(Paradigm):
    """A toy regression task trained for ``epochs`` epochs, checkpointing after each."""

    name = "test_epoch_trainer"
    title = "epoch trainer (test)"
    rules = ("pc", "bp")
    hyperparameters = {"lr": Hyper(0.01, "Adam learning rate", min=0.0),
                       "epochs": Hyper(EPOCHS, "epochs", type=int, min=1, structural=True)}
    grid = {"lr": (0.01, 0.03)}
    presets = {"quick": Preset(seeds=2), "paper": Preset(seeds=2)}
    default_seeds = 2
    measures = {"loss": Measure(("epoch",), "training loss after each epoch")}
    main_measure = "loss"
    started_at: list = []  # the epoch each simulate call starts from (class-level: the runner makes instances)
    interrupt_after = None  # raise KeyboardInterrupt after this many checkpoints of the process

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"epoch": list(range(1, int(settings["epochs"]) + 1))}

    def n_progress_steps(self, settings):
        return int(settings["epochs"])

    def simulate(self, rule, settings, seeds, device, progress):
        R, epochs = len(settings), int(settings[0]["epochs"])
        config = TrainConfig(T=6, weight_opt=Adam(lr=stack_settings(settings, "lr")), latent_opt=LatentSGD(0.1),
                             record="last")
        spec, config = build_rule(rule, SPEC, config)
        engine = Engine(spec, config, init_params(SPEC, list(seeds), dtype=torch.float64, device=device))
        gens = [self.generator(s, "batches") for s in seeds]
        losses, start = [], 0
        state = self.saved_state()
        if state is not None:
            engine.load_state_dict(state["engine"])
            for g, st in zip(gens, state["generators"]):
                g.set_state(st)
            losses, start = list(state["losses"]), int(state["epoch"])
            progress(start)
        type(self).started_at.append(start)
        for epoch in range(start, epochs):
            total = torch.zeros(R, dtype=torch.float64)
            for _ in range(BATCHES):
                x = torch.stack([torch.randn(BATCH, 3, generator=g, dtype=torch.float64) for g in gens])
                y = torch.tanh(x[..., :2] * 2.0)
                total += engine.train_batch(x.to(device), y.to(device)).loss0.cpu()
            losses.append(total.numpy())
            progress(1)
            self.save_state({"engine": engine.state_dict(), "generators": [g.get_state() for g in gens],
                             "epoch": epoch + 1, "losses": losses})
            cls = type(self)
            if cls.interrupt_after is not None:
                cls.interrupt_after -= 1
                if cls.interrupt_after == 0:
                    raise KeyboardInterrupt
        return {"loss": np.stack(losses, axis=1)}


@pytest.fixture
def trainer():
    from pcneuro import registry

    EpochTrainer.started_at, EpochTrainer.interrupt_after = [], None
    pcneuro.register(EpochTrainer)
    yield EpochTrainer
    registry._registry.pop(EpochTrainer.name, None)
    EpochTrainer.started_at, EpochTrainer.interrupt_after = [], None


def _run(tmp_path, name, **kw):
    return pcneuro.run(EpochTrainer, out=tmp_path / name, figure=False, quiet=True, **kw)


def test_interrupted_mid_chunk_resumes_from_its_saved_epoch(tmp_path, trainer):
    reference = _run(tmp_path, "whole.nc")
    assert trainer.started_at == [0, 0]  # one chunk per rule, each from epoch 0
    trainer.started_at = []
    # chunk 0 runs to the end; chunk 1 is interrupted after its 3rd epoch's checkpoint
    trainer.interrupt_after = EPOCHS + 3
    out = tmp_path / "part.nc"
    with pytest.raises(Interrupted) as info:
        _run(tmp_path, "part.nc")
    assert "1 of 2 chunks done, 1 part-way" in info.value.message()
    folder = checkpoint_dir(out)
    assert (folder / "chunk-000000.npz").is_file() and not (folder / "chunk-000000.state.pt").exists()
    assert (folder / "chunk-000001.state.pt").is_file()
    trainer.started_at, trainer.interrupt_after = [], None
    resumed = _run(tmp_path, "part.nc", resume=True)
    assert trainer.started_at == [3]  # only chunk 1 simulated, from its saved epoch
    assert not folder.exists()
    xr.testing.assert_identical(reference["loss"], resumed["loss"])
    assert np.array_equal(reference["loss"].values, xr.open_dataset(out)["loss"].values)


def test_state_of_other_runs_is_ignored(tmp_path):
    store = CheckpointStore(tmp_path / "x.nc.chunks")
    store.folder.mkdir()
    store.save_state(4, [1, 2], {"epoch": 3, "a": np.arange(3.0), "t": torch.ones(2), "n": [np.float64(2.5)]})
    got = store.load_state(4, [1, 2])
    assert got["epoch"] == 3 and isinstance(got["a"], np.ndarray) and np.array_equal(got["a"], np.arange(3.0))
    assert torch.equal(got["t"], torch.ones(2)) and got["n"] == [2.5]
    assert store.load_state(4, [1, 3]) is None and store.load_state(5, [1, 2]) is None
    store.state_path(6).write_bytes(b"torn")
    assert store.load_state(6, [1, 2]) is None
    assert store.count_partial(8) == 2


@pytest.mark.parametrize("capture", ["off", "inplace"])
@pytest.mark.parametrize("layout", ["run_first", "run_last"])
def test_engine_state_round_trip_continues_with_the_same_bits(capture, layout):
    spec, config = build_rule("pc", SPEC, TrainConfig(T=5, weight_opt=Adam(lr=0.02), latent_opt=LatentSGD(0.1)))
    params = init_params(SPEC, [0, 1, 2], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64))
            for _ in range(4)]
    a = Engine(spec, config, dict(params), capture=capture, layout=layout)
    for x, y in data[:2]:
        a.train_batch(x, y)
    state = _from_host(_to_host(a.state_dict()))  # the host round trip of save_state
    b = Engine(spec, config, dict(params), capture=capture, layout=layout)
    b.load_state_dict(state)
    for x, y in data[2:]:
        a.train_batch(x, y)
        b.train_batch(x, y)
    for n in a.params:
        assert torch.equal(a.params[n], b.params[n]), n
    for n in a.opt_state:
        for k in a.opt_state[n]:
            assert torch.equal(a.opt_state[n][k], b.opt_state[n][k]), (n, k)
    with pytest.raises(ValueError, match="does not fit"):
        b.load_state_dict({**state, "params": {"x": torch.ones(1)}})
