"""Output masks, latent records and the run-last layout of the engine (engine spec §1.2, §2.3, §4.2, §5).

* ``Engine.train_batch(x0, y, output_mask)`` equals the plain autograd reference
  (:class:`pcneuro.engine.reference.ReferenceRun`) for shared and per-run masks, per-sample row
  masks, elementwise masks, an all-zero mask for one run (its weights stay exactly put), NaN/inf in
  masked-out targets and cross-entropy with a row mask, for pc, ppc, bp and rbp, on both backends
  and both closed-form layouts. Records (loss0, loss, F) are the masked loss, and the latent-rate
  rule runs on the masked F.
* ``record_latents="last"/"every"`` returns the final latents and the pre-step latent trace, equal
  to the reference, with and without early stop, for both placements; it leaves training unchanged.
* Stacked runs with different masks equal the runs one at a time (1e-10).
* The run-last layout of the closed form (tiny nets, many runs) equals the reference on every
  closed-form case of tests/test_engine_parity.py and on nets that take each of its contraction
  paths.

Float64 on CPU, R = 2 stacked runs (4 for stacking), several batches, ``record="every"``.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import replace

import pytest
import torch

from pcneuro.engine import (SGD, Activation, Adam, Engine, LatentSGD, Linear, NetworkSpec, TrainConfig, build_rule,
                            init_params)
from pcneuro.engine.reference import ReferenceRun
from test_engine_parity import ADAM_WD, CASES as PARITY_CASES, assert_final_state, close, mlp

DT = torch.float64
ENGINES = (("closed_form", "run_first"), ("closed_form", "run_last"), ("functional", "auto"))


def out_features(spec):
    return [l for l in spec.layers if isinstance(l, Linear)][-1].out_features


def make_data(spec, n_batches, R, B, *, per_run_input=False, mask=None, loss="sse", nan_targets=False, seed=0):
    """Batches (x, y, output_mask). ``mask``: None, "shared", "per_run", "shared_row", "per_run_row" or
    "zero_run" (per run, run 0 all zero). ``nan_targets``: NaN/inf in every masked-out target entry."""
    g = torch.Generator().manual_seed(seed)
    out = out_features(spec)
    lead = (R, B) if per_run_input else (B,)
    per_run_mask = mask is not None and (mask.startswith("per_run") or mask == "zero_run")
    data = []
    for _ in range(n_batches):
        x = torch.randn(*lead, *spec.input_shape, generator=g, dtype=DT)
        y_lead = (R, B) if per_run_input or (nan_targets and per_run_mask) else lead
        if loss == "ce":
            y = torch.nn.functional.one_hot(torch.randint(out, y_lead, generator=g), out).to(DT)
        else:
            y = torch.randn(*y_lead, out, generator=g, dtype=DT)
        m = None
        if mask is not None:
            m_lead = (R, B) if per_run_mask else (B,)
            width = 1 if mask.endswith("row") or loss == "ce" else out
            m = (torch.rand(*m_lead, width, generator=g, dtype=DT) < 0.6).to(DT)
            m.reshape(-1, width)[0] = 1.0  # never vacuous
            if mask == "zero_run":
                m[0] = 0.0
            if nan_targets:
                bad = torch.full_like(y, math.nan)
                bad[..., ::2] = math.inf
                y = torch.where(m.expand(y.shape) != 0, y, bad)
        data.append((x, y, m))
    return data


def run_parity(spec, cfg, data, seeds=(1, 2), engines=ENGINES, per_run_input=False, scale=1.0):
    """Train engines and references side by side on ``data``; compare records, latents, weights,
    optimiser state and predictions. Returns (engines, references, initial params, step counts)."""
    R = len(seeds)
    params = init_params(spec, seeds, dtype=DT, scale=scale)
    if not spec.is_mlp():
        engines = [e for e in engines if e[0] == "functional"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eng = {f"{b}/{lay}": Engine(spec, cfg, dict(params), backend=b, layout=lay) for b, lay in engines}
    refs = [ReferenceRun(spec, cfg, {n: p[r] for n, p in params.items()}, run=r) for r in range(R)]
    steps = []
    for x, y, m in data:
        recs = {k: e.train_batch(x, y, m) for k, e in eng.items()}
        for r, ref in enumerate(refs):
            pick = lambda t: t if t is None or t.ndim == 2 else t[r]  # noqa: E731
            rr = ref.train_batch(x[r] if per_run_input else x, pick(y), pick(m))
            n = rr["steps"]
            steps.append(n)
            for k, rec in recs.items():
                if rec.steps is not None:
                    assert int(rec.steps[r]) == n, (k, r, rec.steps, n)
                if rec.loss0 is not None:
                    close(rec.loss0[r], rr["loss0"], f"{k} run {r} loss0")
                if cfg.record == "every":
                    for key in ("loss", "energy", "objective", "latent_lr"):
                        expect = torch.zeros(cfg.T, dtype=DT)
                        expect[:n] = torch.tensor(rr[key], dtype=DT)
                        close(getattr(rec, key)[:, r], expect, f"{k} run {r} {key}")
                if cfg.record_latents == "none":
                    assert rec.latents is None and rec.latent_trace is None
                    continue
                assert len(rec.latents) == len(rr["latents"])
                for node, (got, want) in enumerate(zip(rec.latents, rr["latents"])):
                    close(got[r], want, f"{k} run {r} final latents of node {node}")
                if cfg.record_latents == "last":
                    assert rec.latent_trace is None
                    continue
                for node, (got, want) in enumerate(zip(rec.latent_trace, rr["latent_trace"])):
                    assert got.shape[0] == cfg.T
                    expect = torch.cat([want, rr["latents"][node].expand(cfg.T - n, *want.shape[1:])])
                    close(got[:, r], expect, f"{k} run {r} latent trace of node {node}")
    assert_final_state(eng, refs, make_data(spec, 1, R, 3, seed=99)[0][0])
    for e in eng.values():
        assert all(torch.isfinite(p).all() for p in e.params.values()), "diverged"
    return eng, refs, params, steps


def rule_config(rule, spec=None, **kw):
    base = dict(T=6, weight_opt=SGD(lr=[0.05, 0.02]), latent_opt=LatentSGD(lr=[0.1, 0.3]), record="every",
                record_latents="every", lr_decay=[0.5, 0.8], lr_growth=[1.0, 1.2])
    base.update(kw)
    return build_rule(rule, spec if spec is not None else mlp(), TrainConfig(**base))


RULES = ("pc", "ppc", "bp", "rbp")
MASKS = ("shared", "per_run", "shared_row", "per_run_row")


# -- output masks ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("rule", RULES)
def test_masked_loss_equals_reference(rule, mask):
    spec, config = rule_config(rule, mlp(value_nodes="post" if rule == "ppc" else "pre"))
    run_parity(spec, config, make_data(spec, 3, 2, 4, mask=mask))


@pytest.mark.parametrize("rule", RULES)
def test_nan_in_masked_out_targets_is_ignored(rule):
    """NaN/inf in every masked-out target entry (elementwise and row masks, per-run targets)."""
    spec, config = rule_config(rule)
    for mask in ("per_run", "shared_row"):
        eng, _, _, _ = run_parity(spec, config, make_data(spec, 2, 2, 4, mask=mask, nan_targets=True))
        for e in eng.values():
            rec = e.train_batch(*make_data(spec, 1, 2, 4, mask=mask, nan_targets=True, seed=5)[0])
            assert torch.isfinite(rec.loss).all() and torch.isfinite(rec.objective).all()


@pytest.mark.parametrize("rule", RULES)
def test_all_zero_mask_is_an_exact_no_op(rule):
    """Run 0's mask is all zero on every batch: with plain SGD its weights never change, bit for bit,
    its loss records are 0 and its latents stay at the feed-forward values; run 1 matches the reference."""
    spec, config = rule_config(rule, mlp(value_nodes="post"), weight_opt=SGD(lr=[0.5, 0.05]))
    eng, _, params, _ = run_parity(spec, config, make_data(spec, 3, 2, 4, mask="zero_run", nan_targets=True))
    for k, e in eng.items():
        for name, p in params.items():
            assert torch.equal(e.params[name][0], p[0]), f"{k}: run 0 {name} changed"
            assert not torch.equal(e.params[name][1], p[1]) or not e.spec.layers[int(name[0])].trainable, (
                f"{k}: run 1 {name} did not learn")
    x, y, m = make_data(spec, 1, 2, 4, mask="zero_run", nan_targets=True, seed=7)[0]
    for k, e in eng.items():
        rec = e.train_batch(x, y, m)
        assert float(rec.loss[:, 0].abs().max()) == 0.0 and float(rec.loss0[0]) == 0.0, k
        before = e.backend.feedforward_latents(e.params, x)
        for got, ff in zip(rec.latents, before):
            assert torch.equal(got[0], ff[0]), k


@pytest.mark.parametrize("rule", ["pc", "ppc", "bp"])
@pytest.mark.parametrize("mask", ["shared_row", "per_run_row"])
def test_cross_entropy_row_mask_equals_reference(rule, mask):
    spec, config = rule_config(rule, mlp(act="relu"), loss="ce", energy_coef=[1.0, 0.5],
                               weight_opt=ADAM_WD if rule == "ppc" else SGD(lr=[0.05, 0.02]))
    run_parity(spec, config, make_data(spec, 3, 2, 4, mask=mask, loss="ce", nan_targets=rule == "pc"))


def test_mask_with_per_run_input_early_stop_and_l1():
    spec, config = rule_config("pc", mlp(value_nodes="post"), T=8, latent_opt=LatentSGD(lr=[0.05, 3.0]),
                               lr_decay=0.5, lr_growth=1.0, stop_lr=[0.05, 0.8], latent_l1=[0.0, 0.1],
                               weight_opt=SGD(lr=[0.02, 0.002]))
    config = replace(config, weight_steps=[0, 2, 5, 7])
    _, _, _, steps = run_parity(spec, config, make_data(spec, 3, 2, 4, per_run_input=True, mask="per_run"),
                                per_run_input=True)
    assert min(steps) == 1 and any(1 < s < 8 for s in steps), steps


def test_bad_masks_are_rejected():
    spec = mlp()
    params = init_params(spec, [1, 2], dtype=DT)
    x, y, _ = make_data(spec, 1, 2, 4)[0]
    sse = Engine(spec, TrainConfig(T=3, weight_opt=SGD(lr=0.1)), dict(params))
    for bad in (torch.ones(4), torch.ones(4, 2), torch.ones(5, 3), torch.ones(3, 4, 3), torch.ones(2, 4, 2),
                torch.ones(1, 2, 4, 3), torch.ones(4, 3, dtype=torch.long), [[1.0] * 3] * 4):
        with pytest.raises(ValueError, match="output_mask"):
            sse.train_batch(x, y, bad)
    ce = Engine(spec, TrainConfig(T=3, weight_opt=SGD(lr=0.1), loss="ce"), dict(params))
    y_ce = torch.nn.functional.one_hot(torch.arange(4) % 3, 3).to(DT)
    with pytest.raises(ValueError, match="row mask"):
        ce.train_batch(x, y_ce, torch.ones(4, 3, dtype=DT))
    with pytest.raises(ValueError, match="row mask"):
        ce.train_batch(x, y_ce, torch.ones(2, 4, 3, dtype=DT))
    ce.train_batch(x, y_ce, torch.ones(2, 4, 1, dtype=DT))  # a row mask is fine
    sse.train_batch(x, y, torch.ones(4, 3, dtype=torch.bool))  # so is a bool mask
    with pytest.raises(ValueError, match="record_latents"):
        TrainConfig(T=3, weight_opt=SGD(lr=0.1), record_latents="all")


# -- latent records ----------------------------------------------------------------------------------
@pytest.mark.parametrize("record_latents", ["last", "every"])
@pytest.mark.parametrize("stop", [False, True])
@pytest.mark.parametrize("placement", ["pre", "post"])
def test_latent_records_equal_reference(placement, stop, record_latents):
    kw = dict(T=8, latent_opt=LatentSGD(lr=[0.05, 3.0]), lr_decay=0.5, lr_growth=1.0, stop_lr=[0.05, 0.8],
              weight_opt=SGD(lr=[0.02, 0.002])) if stop else {}
    spec, config = rule_config("pc", mlp(sizes=(4, 5, 4, 4, 3), value_nodes=placement), record_latents=record_latents,
                               **kw)
    if stop:
        config = replace(config, weight_steps=[0, 2, 5, 7])
    _, _, _, steps = run_parity(spec, config, make_data(spec, 3, 2, 4))
    if stop:
        assert min(steps) == 1 and any(1 < s < 8 for s in steps), steps


def test_latent_records_shapes_and_no_value_nodes():
    spec, config = rule_config("pc", mlp(), T=5)
    engine = Engine(spec, config, init_params(spec, [1, 2], dtype=DT))
    x, y, _ = make_data(spec, 1, 2, 4)[0]
    rec = engine.train_batch(x, y)
    assert [tuple(t.shape) for t in rec.latents] == [(2, 4, 5), (2, 4, 4)]
    assert [tuple(t.shape) for t in rec.latent_trace] == [(5, 2, 4, 5), (5, 2, 4, 4)]
    for node in range(2):  # the trace starts at the feed-forward latents and ends one step before the final ones
        assert not torch.equal(rec.latent_trace[node][-1], rec.latents[node])
    for rule in ("bp", "rbp"):
        spec, config = rule_config(rule, mlp(), T=3)
        rec = Engine(spec, config, init_params(spec, [1, 2], dtype=DT)).train_batch(x, y)
        assert rec.latents == [] and rec.latent_trace == []
    spec, config = rule_config("bp", mlp(), T=3, record_latents="last")
    rec = Engine(spec, config, init_params(spec, [1, 2], dtype=DT)).train_batch(x, y)
    assert rec.latents == [] and rec.latent_trace is None


@pytest.mark.parametrize("layout", ["run_first", "run_last"])
def test_recording_latents_leaves_training_unchanged(layout):
    """The extra latent step at T−1 (taken only when latents are recorded) never reaches weights or records."""
    spec, base = rule_config("pc", mlp(), T=6, stop_lr=[1e-3, 0.05])
    params = init_params(spec, [1, 2], dtype=DT)
    engines = {mode: Engine(spec, replace(base, record_latents=mode), dict(params), backend="closed_form",
                            layout=layout) for mode in ("none", "last", "every")}
    for x, y, m in make_data(spec, 3, 2, 4, mask="per_run"):
        recs = {mode: e.train_batch(x, y, m) for mode, e in engines.items()}
        for mode in ("last", "every"):
            for key in ("loss0", "loss", "energy", "objective", "latent_lr", "steps"):
                assert torch.equal(getattr(recs[mode], key), getattr(recs["none"], key)), (mode, key)
    for name in params:
        assert torch.equal(engines["none"].params[name], engines["every"].params[name])
        assert torch.equal(engines["none"].params[name], engines["last"].params[name])


# -- stacking ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["run_first", "run_last"])
@pytest.mark.parametrize("rule", ["pc", "ppc"])
def test_stacked_masked_runs_equal_single_runs(rule, layout):
    R = 4
    base = dict(T=8, record="every", record_latents="every", latent_opt=LatentSGD(lr=[0.1, 3.0, 1.0, 2.0]),
                lr_decay=[0.5, 0.5, 0.7, 0.3], lr_growth=[1.0, 1.1, 1.0, 1.2], stop_lr=[0.1, 0.8, 0.7, 1e-3],
                weight_opt=Adam(lr=[0.01, 0.002, 0.005, 0.001], weight_decay=[0.0, 0.01, 0.02, 0.0]))
    spec, config = build_rule(rule, mlp(value_nodes="post"), TrainConfig(**base))
    params = init_params(spec, [5, 6, 5, 7], dtype=DT)

    def single(r):
        one = {k: (v[r:r + 1] if isinstance(v, list) else v) for k, v in base.items()}
        one["latent_opt"] = LatentSGD(lr=base["latent_opt"].lr[r:r + 1])
        one["weight_opt"] = Adam(lr=base["weight_opt"].lr[r:r + 1], weight_decay=base["weight_opt"].weight_decay[r:r + 1])
        return build_rule(rule, mlp(value_nodes="post"), TrainConfig(**one))[1]

    stacked = Engine(spec, config, {n: p.clone() for n, p in params.items()}, layout=layout)
    singles = [Engine(spec, single(r), {n: p[r:r + 1].clone() for n, p in params.items()}, layout=layout)
               for r in range(R)]
    steps = set()
    for x, y, m in make_data(spec, 3, R, 4, mask="zero_run", nan_targets=True):
        rec = stacked.train_batch(x, y, m)
        steps.update(rec.steps.tolist())
        for r, eng in enumerate(singles):
            one = eng.train_batch(x, y[r:r + 1], m[r:r + 1])
            for key in ("loss0", "loss", "energy", "objective", "latent_lr", "steps"):
                a, b = getattr(rec, key), getattr(one, key)
                a, b = (a[r], b[0]) if a.ndim == 1 else (a[:, r], b[:, 0])
                torch.testing.assert_close(a.to(DT), b.to(DT), rtol=1e-10, atol=1e-10)
            for a, b in zip(rec.latents + rec.latent_trace, one.latents + one.latent_trace):
                torch.testing.assert_close(a[r] if a.ndim == 3 else a[:, r], b[0] if b.ndim == 3 else b[:, 0],
                                           rtol=1e-10, atol=1e-10)
            for name in params:
                torch.testing.assert_close(stacked.params[name][r], eng.params[name][0], rtol=1e-10, atol=1e-10)
    for name, p in params.items():
        assert torch.equal(stacked.params[name][0], p[0])  # run 0 learns nothing (all-zero mask)...
        assert not torch.equal(stacked.params[name][1], p[1])  # ... the others do
    assert len(steps) >= 2, steps


# -- run-last layout ---------------------------------------------------------------------------------
CLOSED_FORM_CASES = [n for n, (spec, _) in PARITY_CASES.items() if spec.is_mlp()]


@pytest.mark.parametrize("name", CLOSED_FORM_CASES)
def test_run_last_layout_on_parity_cases(name):
    spec, config = PARITY_CASES[name]
    per_run = name == "per-run-input"
    data = [(x, y, None) for x, y, _ in make_data(spec, 3, 2, 5, per_run_input=per_run, loss=config.loss)]
    run_parity(spec, config, data, engines=(("closed_form", "run_last"),), per_run_input=per_run)


TINY_NETS = {
    # every contraction path of the run-last layout: unrolled (K <= 8), one sum per output (K > 8,
    # N <= 8) and a plain matmul (both > 8); weight gradients for B = 1, B <= 8 and B > 8
    "2-2-2-diag": NetworkSpec((Linear(2, 2, bias=False, mask=((1.0, 0.0), (0.0, 1.0))), Linear(2, 2, bias=False))),
    "12-3-tanh-2": NetworkSpec((Linear(12, 3), Activation("tanh"), Linear(3, 2))),
    "3-12-sigmoid-10-2": NetworkSpec((Linear(3, 12), Activation("sigmoid"), Linear(12, 10), Activation("sigmoid"),
                                      Linear(10, 2)), value_nodes="post"),
}


@pytest.mark.parametrize("B", [1, 3, 10])
@pytest.mark.parametrize("net", list(TINY_NETS))
def test_run_last_contraction_paths(net, B):
    spec = TINY_NETS[net]
    for rule in ("pc", "ppc"):
        _, config = rule_config(rule, spec, T=5)
        run_parity(spec, config, make_data(spec, 2, 2, B, per_run_input=B == 3, mask="per_run"),
                   engines=(("closed_form", "run_last"), ("closed_form", "run_first")), per_run_input=B == 3)


def test_auto_layout_choice():
    """"auto" picks run-last at the first batch for many runs of small nets at small B, on the CPU."""
    tiny = TINY_NETS["2-2-2-diag"]
    config = TrainConfig(T=2, weight_opt=SGD(lr=0.1))

    def layout_after_one_batch(spec, n_runs, B):
        engine = Engine(spec, config, init_params(spec, range(n_runs), dtype=DT))
        assert not engine.run_last  # undecided until the batch size is known
        engine.train_batch(torch.zeros(B, spec.input_shape[0], dtype=DT), torch.zeros(B, out_features(spec), dtype=DT))
        return engine.run_last

    assert layout_after_one_batch(tiny, 2048, 1)
    assert layout_after_one_batch(tiny, 2048, 60)
    assert not layout_after_one_batch(tiny, 16, 1)
    assert not layout_after_one_batch(mlp(sizes=(2, 32, 2)), 2048, 8)
    assert not layout_after_one_batch(mlp(sizes=(40, 32, 10)), 2048, 1)
    with pytest.raises(ValueError, match="layout"):
        Engine(tiny, config, init_params(tiny, range(2), dtype=DT), layout="columns")
