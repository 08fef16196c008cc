"""A minimal third-party paradigm registered through the ``pcneuro.paradigms`` entry-point group.

It trains a 1-1-1 linear net towards a target of 1 and records the output after each trial. The
``fail_on_rank`` option raises on one MPI rank, so tests can check that a failing rank ends the
whole job instead of hanging it.
"""
import torch

from pcneuro import Hyper, Measure, Paradigm, Preset
from pcneuro.engine import Engine, LatentSGD, Linear, NetworkSpec, SGD, TrainConfig, build_rule


class TinyPlugin(Paradigm):
    name = "tiny_plugin"
    title = "Tiny third-party paradigm (test plugin)"
    tags = ("demo", "plugin")
    hyperparameters = {
        "lr": Hyper(0.1, "weight learning rate", min=0.0),
        "n_trials": Hyper(5, "trials", type=int, min=1, structural=True),
        "fail_on_rank": Hyper(-1, "raise on this MPI rank (testing only)", type=int),
    }
    grid = {"lr": (0.1, 0.05)}
    presets = {"quick": Preset(seeds=2), "paper": Preset(seeds=4)}
    default_seeds = 2
    measures = {"output": Measure(("trial",), "output after each trial")}
    main_measure = "output"
    summary_isel = {"trial": -1}

    def coords(self, settings):
        return {"trial": list(range(settings["n_trials"]))}

    def n_progress_steps(self, settings):
        return settings["n_trials"]

    def simulate(self, rule, settings, seeds, device, progress):
        if settings[0]["fail_on_rank"] >= 0:
            from mpi4py import MPI

            if MPI.COMM_WORLD.Get_rank() == settings[0]["fail_on_rank"]:
                raise RuntimeError(f"tiny_plugin: deliberate failure on rank {settings[0]['fail_on_rank']}")
        n = len(settings)
        spec = NetworkSpec((Linear(1, 1, bias=False), Linear(1, 1, bias=False)))
        w = torch.stack([0.5 + 0.1 * torch.randn(2, generator=self.generator(s, "init"), dtype=torch.float64)
                         for s in seeds])
        params = {"0.weight": w[:, 0].reshape(n, 1, 1).clone(), "1.weight": w[:, 1].reshape(n, 1, 1).clone()}
        lr = torch.tensor([s["lr"] for s in settings], dtype=torch.float64)
        config = TrainConfig(T=4, weight_opt=SGD(lr=lr), latent_opt=LatentSGD(0.1), record="none")
        engine = Engine(*build_rule(rule, spec, config), params)
        x = torch.ones(1, 1, dtype=torch.float64)
        out = torch.empty(n, settings[0]["n_trials"], dtype=torch.float64)
        for trial in range(settings[0]["n_trials"]):
            engine.train_batch(x, x)
            out[:, trial] = engine.forward(x)[:, 0, 0]
            progress(1)
        return {"output": out.numpy()}
