"""The in-place update path and the captured-batch logic of the engine (pcneuro/engine/capture.py).

On CUDA the engine replays each batch's T loop as a CUDA graph, which needs the parameters and the
weight optimiser's state updated in place. On CPU these tests show:

* ``capture="inplace"`` (eager, in-place updates: the path a graph records) gives bitwise the same
  records, latents, weights and optimiser state as the functional path, on every parity case of
  tests/test_engine_parity.py (both backends, both closed-form layouts), with early stop (plain and
  deferred), output masks and per-run inputs, over several batches;
* ``capture="emulate"`` (a CPU stand-in with a graph's contract: static inputs read at replay, static
  outputs overwritten at replay, warm-up undone) gives the same: so the capture wrapper's buffers,
  state restore, per-signature graphs and copying out are right;
* state replaced by the caller between batches is adopted; the caller's tensors are never written.

Equality of a real CUDA graph with the eager run is checked by benchmarks/device_check.py on a GPU.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from pcneuro.engine import Engine, LatentSGD, init_params
from pcneuro.engine.capture import ENV_SWITCH, resolve_mode
from test_engine_mask_latents import make_data
from test_engine_parity import ADAM_WD, CASES, cfg, mlp

DT = torch.float64
ENGINES = (("closed_form", "run_first"), ("closed_form", "run_last"), ("functional", "auto"))

EXTRA = {
    "stop-lr-sgd": (mlp(), cfg(T=8, latent_opt=LatentSGD(lr=[0.05, 3.0]), lr_decay=0.5, stop_lr=[0.05, 0.8],
                               weight_steps="all")),
    "stop-lr-deferred-adam": (mlp(value_nodes="post"), cfg(T=8, latent_opt=LatentSGD(lr=[0.05, 3.0]), lr_decay=0.5,
                                                           stop_lr=[0.05, 0.8], weight_opt=ADAM_WD,
                                                           record="last", record_latents="every")),
    "latents-every": (mlp(), cfg(weight_steps="all", record_latents="every", weight_opt=ADAM_WD)),
}
ALL = {**CASES, **EXTRA}


def _state(engine):
    out = {f"param {n}": p for n, p in engine.params.items()}
    for n, st in engine.opt_state.items():
        out.update({f"opt {n} {k}": v for k, v in st.items()})
    return out


def _record(rec):
    out = {}
    for key, value in vars(rec).items():
        if isinstance(value, torch.Tensor):
            out[key] = value
        elif isinstance(value, list):
            out.update({f"{key}[{i}]": v for i, v in enumerate(value)})
    return out


def assert_same(a, b, where):
    assert a.keys() == b.keys(), where
    for k in a:
        assert torch.equal(a[k], b[k]), f"{where}: {k} differs (max {float((a[k] - b[k]).abs().max()):.3g})"


def _train(spec, config, params, data, mode, backend, layout):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        engine = Engine(spec, config, dict(params), backend=backend, layout=layout, capture=mode)
    records = [_record(engine.train_batch(x, y, m)) for x, y, m in data]
    return engine, records


@pytest.mark.parametrize("name", list(ALL))
def test_inplace_and_emulated_graph_equal_the_functional_path(name):
    spec, config = ALL[name]
    per_run = name == "per-run-input"
    mask = "per_run_row" if name.startswith("stop-lr") else None
    data = make_data(spec, 3, 2, 5, per_run_input=per_run, mask=mask, loss=config.loss)
    params = init_params(spec, (1, 2), dtype=DT)
    engines = ENGINES if spec.is_mlp() else (("functional", "auto"),)
    for backend, layout in engines:
        ref, ref_records = _train(spec, config, params, data, "off", backend, layout)
        for mode in ("inplace", "emulate"):
            eng, records = _train(spec, config, params, data, mode, backend, layout)
            where = f"{name} {backend}/{layout} {mode}"
            for i, (a, b) in enumerate(zip(ref_records, records)):
                assert_same(a, b, f"{where} batch {i}")
            assert_same(_state(ref), _state(eng), where)


def test_emulated_graph_per_signature_adoption_and_copies():
    """Two input signatures get two graphs; records are copies, not the graph's buffers; parameters
    and optimiser state replaced between batches are adopted; the caller's tensors stay unwritten."""
    spec, config = mlp(), cfg(weight_steps="all", weight_opt=ADAM_WD)
    params = init_params(spec, (1, 2), dtype=DT)
    kept = {n: p.clone() for n, p in params.items()}
    small = make_data(spec, 2, 2, 3, seed=1)
    big = make_data(spec, 2, 2, 6, seed=2)
    order = [small[0], big[0], small[1], big[1]]
    engines = {m: Engine(spec, config, dict(params), capture=m) for m in ("off", "emulate")}
    records = {m: [] for m in engines}
    for i, (x, y, _) in enumerate(order):
        for m, e in engines.items():
            if i == 2:  # the caller replaces a weight and resets the optimiser between batches
                e.params["0.weight"] = e.params["0.weight"] * 0.5
                e.reset_weight_optimizer()
            records[m].append(_record(e.train_batch(x, y)))
    assert len(engines["emulate"]._graphed._graphs) == 2
    for i, (a, b) in enumerate(zip(records["off"], records["emulate"])):
        assert_same(a, b, f"batch {i}")
    assert records["emulate"][0]["loss"].data_ptr() != records["emulate"][2]["loss"].data_ptr()
    assert_same(_state(engines["off"]), _state(engines["emulate"]), "final state")
    for n, p in params.items():
        assert torch.equal(p, kept[n]), f"the caller's {n} was written"


def test_capture_modes(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.delenv(ENV_SWITCH, raising=False)
    assert resolve_mode("auto", cpu) == "off"
    expected = "graph" if torch.cuda.is_available() else "inplace"  # the fake CUDA device of the CPU tests
    assert resolve_mode("auto", cuda) == expected
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert resolve_mode("auto", cuda) == "off"
    with pytest.raises(ValueError, match="needs a CUDA device"):
        resolve_mode("graph", cpu)
    with pytest.raises(ValueError, match="'sometimes'"):
        resolve_mode("sometimes", cpu)
