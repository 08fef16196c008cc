"""Every paradigm and the engine on a fake CUDA device (pcneuro.fake_device): CPU/GPU tensor mixing
and host reads inside a simulation are caught on CPU-only machines (DESIGN.md, "Speed").

Fake ops cost tens of microseconds each whatever their size, so the built-in paradigms run their
``quick`` runs (rules x grid x seeds) with a shortened protocol (SHORT: few trials, T = 3); the code
each trial runs is the same. A paradigm not listed in SHORT runs its ``quick`` preset unchanged.
"""
import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorDeviceMismatchError

import pcneuro
from pcneuro import Hyper, Measure, Paradigm, Preset
from pcneuro.engine import (Activation, Adam, Conv2d, Engine, Flatten, LatentAdam, LatentSGD, Linear, NetworkSpec,
                            SGD, TrainConfig, build_rule, init_params)
from pcneuro.fake_device import FakeCuda, HostReadError, simulate
from pcneuro.runner import chunk_plan, make_plan

CUDA = torch.device("cuda")
DT = torch.float64

#: shortened protocols of the built-in paradigms (structural settings; the quick grid and seeds stay)
SHORT = {
    "fear_conditioning": {"T": 3, "n_conditioning": 3, "n_extinction": 2},
    "sensorimotor_adaptation": {"T": 3, "n_pre_blocks": 4, "n_training_blocks": 1, "n_post_rounds": 1},
    "reversal_learning": {"T": 3, "n_trials": 12, "first_logged_trial": 4},
    "cifar10_cnn": {"T": 4, "epochs": 2, "train_per_class": 1, "test_per_class": 1, "batch_size": 5},
    "concept_drift": {"T": 3, "iterations": 4, "drift_period": 2, "train_per_class": 2, "test_per_class": 1,
                      "batch_size": 8, "pretrain_epochs": 1, "pretrain_per_class": 2},
    "dqn_control": {"episodes": 2, "T": 3},
    "deep_fashion_mnist": {"T": 4, "epochs": 2, "train_per_class": 1, "test_per_class": 1, "batch_size": 10},
    "example_122": {"T": 3, "iterations": 3},
    "interference_112": {"T": 3, "iterations": 3},
    "prospective_index": {"inference_steps": 6, "weight_steps": 2},
    "target_alignment": {"T": 8},
    "less_erratic": {"T": 3, "n_updates": 2, "gr_steps": 2, "ap_steps": 2},
    "teacher_student": {"T": 3, "epochs": 1, "n_samples": 8},
    "online_learning": {"T": 3, "iterations": 2, "batches_per_iteration": 2, "train_per_class": 2,
                        "test_per_class": 1},
    "small_data": {"T": 3, "epochs": 2, "n_per_class": 1, "batch_size": 10},
    "continual_learning": {"T": 4, "iterations": 3, "block": 1, "scored_iterations": 2, "train_per_class": 1,
                           "test_per_class": 1, "batch_size": 5},
}
#: paradigms whose engine needs autograd (torch.func: conv nets), checked on meta (see pcneuro.fake_device)
AUTOGRAD = {"cifar10_cnn"}


def test_the_builtin_paradigms_are_all_shortened():
    assert set(SHORT) <= set(pcneuro.list_paradigms())


@pytest.mark.parametrize("name", pcneuro.list_paradigms())
def test_paradigm_runs_on_a_fake_cuda_device(name):
    """The quick runs of every rule: no CPU/GPU mixing, no host read before the last progress tick,
    and measures of the declared shapes (placeholder values)."""
    cls = pcneuro.paradigm_class(name)
    plan = make_plan(name, preset="quick", settings=SHORT.get(name))
    paradigm = cls()
    programs = chunk_plan(cls, plan.runs)
    assert {p[0].rule for p in programs} == set(cls.rules)
    for runs in programs:
        settings = [r.settings for r in runs]
        device = torch.device("meta") if name in AUTOGRAD else CUDA
        fake = simulate(paradigm, runs[0].rule, settings, [r.seed for r in runs], device=device)
        if fake.stopped_at is not None:  # a host environment: checked up to its first host read
            assert getattr(cls, "host_environment", False)
            continue
        assert fake.ticks == fake.expected_ticks
        coords = paradigm.coords(settings[0])
        assert set(fake.measures) == set(cls.measures)
        for measure, spec in cls.measures.items():
            shape = (len(runs), *[len(coords[d]) for d in spec.dims])
            assert fake.measures[measure].shape == shape, measure


# -- the TrainConfig regression (lr_decay/lr_growth check on per-run device tensors) ------------------
def test_config_with_per_run_rates_on_the_device_does_not_mix_devices():
    """The check once broadcast a CPU scalar against an [R] tensor on the runs' device (a device
    mismatch on CUDA); it now reads host copies, made once at set-up."""
    with FakeCuda() as mode:
        decay = torch.full((4,), 0.5, dtype=DT, device=CUDA)
        config = TrainConfig(T=3, weight_opt=SGD(lr=0.1), lr_decay=decay, lr_growth=1.0)
    assert config.lr_decay is decay
    assert mode.transfers == 1  # lr_decay, copied to the host once (the fake copy holds NaN placeholders)


def test_config_from_host_values_touches_no_device():
    with FakeCuda(transfers_allowed=False):
        config = TrainConfig(T=3, weight_opt=SGD(lr=[0.1, 0.2]), lr_decay=[0.5, 0.9], lr_growth=1.0)
        assert config.adaptation_possible()


@pytest.mark.parametrize("decay, growth, match", [
    ([0.5, 1.5], 1.0, "switch the latent-rate rule off"),
    (torch.tensor([0.5, 1.0]), [1.0, 0.9], "switch the latent-rate rule off"),
    (torch.tensor([0.5, 0.0]), 1.0, "lr_decay must be > 0"),
])
def test_config_still_rejects_bad_per_run_rates(decay, growth, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(T=3, weight_opt=SGD(lr=0.1), lr_decay=decay, lr_growth=growth)


def test_config_accepts_rules_switched_off_per_run():
    config = TrainConfig(T=3, weight_opt=SGD(lr=0.1), lr_decay=torch.tensor([1.0, 0.5]), lr_growth=1.0)
    assert config.adaptation_possible()
    assert not TrainConfig(T=3, weight_opt=SGD(lr=0.1), lr_decay=[1.0, 1.0], lr_growth=1.0).adaptation_possible()


# -- the engine's options beyond what the paradigms use ------------------------------------------------
# The torch.func backend needs autograd, which on a CPU-only torch build cannot run on fake CUDA
# tensors (it asks for a CUDA context): those cases run on the meta device, checked the same way.
S = ((1.0, 0.2, 0.0, 0.0), (0.0, 1.0, 0.0, 0.1), (0.0, 0.0, 1.0, 0.0), (0.3, 0.0, 0.0, 1.0))
MLP = NetworkSpec((Linear(3, 4, bias=False), Activation("tanh"), Linear(4, 2)))
ENGINES = {
    "closed_form, every option": (MLP, dict(
        weight_opt=SGD(lr=[0.05, 0.02, 0.01], momentum=[0.0, 0.9, 0.5], weight_decay=[0.0, 1e-3, 0.0]),
        latent_opt=LatentSGD([0.2, 0.1, 0.1], momentum=0.5), energy_coef=[1.0, 0.5, 2.0],
        latent_l1=[0.0, 0.01, 0.0], stop_lr=1e-3, lr_growth=1.1, record="every", record_latents="every"),
        dict(backend="closed_form", layout="run_first"), "cuda"),
    "closed_form, run-last layout": (MLP, dict(weight_opt=SGD(lr=0.05), record="last"),
                                     dict(backend="closed_form", layout="run_last"), "cuda"),
    "functional, connectivity S, Adam": (
        NetworkSpec((Linear(3, 4, bias=False), Activation("tanh"), Linear(4, 2)), node_connectivity=(S,)),
        dict(weight_opt=Adam(lr=[0.01, 0.02, 0.03], weight_decay=[0.0, 0.01, 0.0]), latent_opt=LatentAdam(0.1),
             energy_coef=[1.0, 0.5, 1.0], latent_l1=[0.0, 0.0, 0.01], record="every"), dict(), "meta"),
    "functional, conv": (
        NetworkSpec((Conv2d(1, 2, 3, padding=1), Activation("tanh"), Flatten(), Linear(2 * 16, 2)),
                    input_shape=(1, 4, 4)),
        dict(weight_opt=SGD(lr=0.05, momentum=0.9), record="last", record_latents="last"), dict(), "meta"),
}


@pytest.mark.parametrize("rule", ["pc", "bp"])
@pytest.mark.parametrize("case", list(ENGINES))
def test_engine_batches_make_no_host_read(case, rule):
    """Set-up reads host values only; a batch (masked loss, per-run targets) never reads the device."""
    spec, config_kw, engine_kw, device = ENGINES[case]
    R, B = 3, 2
    with FakeCuda(transfers_allowed=False):
        config = TrainConfig(T=3, lr_decay=0.5, **config_kw)
        spec, config = build_rule(rule, spec, config)
        engine = Engine(spec, config, init_params(spec, range(R), dtype=DT, device=device), **engine_kw)
        x0 = torch.randn(B, *spec.input_shape, dtype=DT).to(device)
        y = torch.randn(R, B, 2, dtype=DT).to(device)
        mask = torch.ones(B, 2, dtype=DT, device=device)
        for _ in range(2):
            record = engine.train_batch(x0, y, output_mask=mask)
        out = engine.forward(x0)
    assert out.device.type == device and out.shape == (R, B, 2)
    assert all(p.device.type == device for p in engine.params.values())
    if device == "cuda":
        assert isinstance(out, FakeTensor)
    if record.loss is not None:
        assert record.loss.device.type == device


# -- the fake device catches what it is there to catch --------------------------------------------------
class _Probe(Paradigm):
    """A one-layer net trained for 3 trials; ``fault`` plants one device mistake (not registered)."""

    name = "fake_device_probe"
    hyperparameters = {"fault": Hyper("none", "the planted mistake", type=str)}
    presets = {"quick": Preset(seeds=1)}
    measures = {"out": Measure(("trial",), "output after each trial")}

    def n_progress_steps(self, settings):
        return 3

    def simulate(self, rule, settings, seeds, device, progress):
        fault = settings[0]["fault"]
        R = len(settings)
        spec = NetworkSpec((Linear(1, 1, bias=False), Linear(1, 1, bias=False)))
        lr = torch.full((R,), 0.1, dtype=DT)
        engine = Engine(*build_rule(rule, spec, TrainConfig(T=3, weight_opt=SGD(lr=lr))),
                        init_params(spec, seeds, dtype=DT, device=device))
        x = torch.ones(1, 1, dtype=DT, device=device)
        out = torch.empty(R, 3, dtype=DT, device=device)
        for trial in range(3):
            engine.train_batch(x, x)
            y = engine.forward(x)[:, 0, 0]
            if fault == "item" and float(y.mean()) > 100:  # a host read inside the loop
                break
            if fault == "host_tensor":
                y = y + lr  # an [R] CPU tensor meets the device
            if fault == "copy":
                y = torch.as_tensor(y.cpu().numpy(), device=device)  # a round trip through the host
            out[:, trial] = y
            progress(1)
        return {"out": out.cpu().numpy()}


class _HostEnvProbe(_Probe):
    name = "fake_device_host_env_probe"
    host_environment = True


@pytest.mark.parametrize("fault, error", [("item", HostReadError), ("copy", HostReadError),
                                          ("host_tensor", FakeTensorDeviceMismatchError)])
def test_planted_device_mistakes_are_caught(fault, error):
    with pytest.raises(error) as info:
        simulate(_Probe(), "pc", [{"fault": fault}] * 2, [0, 1])
    if error is HostReadError:
        assert "test_fake_cuda.py" in str(info.value)  # names the offending line


def test_a_clean_probe_passes_and_returns_placeholders():
    fake = simulate(_Probe(), "pc", [{"fault": "none"}] * 2, [0, 1])
    assert fake.ticks == 3 and fake.measures["out"].shape == (2, 3)
    assert np.isnan(fake.measures["out"]).all()


def test_a_host_environment_is_checked_up_to_its_first_host_read():
    fake = simulate(_HostEnvProbe(), "pc", [{"fault": "copy"}] * 2, [0, 1])
    assert fake.stopped_at is not None and "device->host copy" in fake.stopped_at and fake.ticks == 0
