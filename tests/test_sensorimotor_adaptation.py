"""Sensorimotor adaptation with contextual cues (specs/behaviour.md §2): protocol, mechanism, claims."""
import numpy as np
import pytest
import torch

import pcneuro
from pcneuro.engine import Engine, LatentSGD, SGD, TrainConfig, build_rule
from pcneuro.paradigms.sensorimotor_adaptation import (EXPOSURES, KINDS, POOLS, SensorimotorAdaptation,
                                                       build_protocol, max_trials)

NAME = "sensorimotor_adaptation"
PC_CONFIG = dict(init_sd=0.1, lr_in=5e-5, lr_out=0.01)  # spec §2.6, PC's published best config
BP_CONFIG = dict(init_sd=1e-5, lr_in=0.1, lr_out=0.001)  # spec §2.6, BP's published best config
SHORT = dict(n_pre_blocks=4, n_training_blocks=3, n_post_rounds=2)


def _protocol(seed, **settings):
    p = SensorimotorAdaptation()
    return p.protocol(seed, {**p.settings, **settings})


def _block(protocol, phase, block):
    idx = [i for i, (ph, b) in enumerate(zip(protocol.phase, protocol.block)) if ph == phase and b == block]
    assert idx == list(range(idx[0], idx[-1] + 1))  # contiguous
    return idx[0], [protocol.trials[i] for i in idx], [protocol.channel[i] for i in idx]


def _is_wash(labels, n):
    return len(labels) == n and sorted(labels) == ["10"] * (n // 2) + ["20"] * (n // 2)


def _check_triplet(protocol, start, labels, channel, exposure):
    assert labels == ["10", exposure, "10"] and channel == [True, False, True]
    assert any(t.start == start and t.exposure == exposure for t in protocol.triplets)


def _check_pools(protocol):
    """Washout lengths: without replacement from a persistent pool per slot, refilled when empty."""
    for slot, values in POOLS.items():
        draws = protocol.wash_draws[slot]
        for g in range(0, len(draws), len(values)):
            group = draws[g : g + len(values)]
            assert len(set(group)) == len(group) and set(group) <= set(values)
            if len(group) == len(values):
                assert sorted(group) == sorted(values)  # every element once per full pool


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_intended_protocol_structure(seed):
    p = _protocol(seed)
    _check_pools(p)
    assert [len(p.wash_draws[s]) for s in POOLS] == [16, 24, 24, 32]
    assert sum(p.channel) == 2 * len(p.triplets) == 2 * (16 + 2 * 24 + 32)
    for t in p.triplets:
        assert p.trials[t.start : t.start + 3] == ("10", t.exposure, "10")
        assert p.channel[t.start : t.start + 3] == (True, False, True)
    # pre-training: wash({8,10,12}) + triplet; each exposure once per 4 blocks
    pre = []
    for b in range(16):
        start, labels, channel = _block(p, "pre", b)
        n = p.wash_draws["pre"][b]
        assert _is_wash(labels[:n], n) and not any(channel[:n])
        _check_triplet(p, start + n, labels[n:], channel[n:], labels[n + 1])
        pre.append(labels[n + 1])
    assert all(sorted(pre[g : g + 4]) == sorted(EXPOSURES) for g in range(0, 16, 4))
    # training: [10,20] + 4 passes of (4x1+, 4x2-) + [10,20] + wash + triplet E1 + wash + triplet E2
    firsts = []
    for b in range(24):
        start, labels, channel = _block(p, "training", b)
        n1, n2 = p.wash_draws["training_1"][b], p.wash_draws["training_2"][b]
        assert len(labels) == 36 + n1 + 3 + n2 + 3
        assert sorted(labels[:2]) == ["10", "20"] and sorted(labels[34:36]) == ["10", "20"]
        for k in range(4):
            assert sorted(labels[2 + 8 * k : 10 + 8 * k]) == ["1+"] * 4 + ["2-"] * 4
        assert _is_wash(labels[36 : 36 + n1], n1)
        i = 36 + n1
        _check_triplet(p, start + i, labels[i : i + 3], channel[i : i + 3], labels[i + 1])
        assert _is_wash(labels[i + 3 : i + 3 + n2], n2)
        j = i + 3 + n2
        _check_triplet(p, start + j, labels[j:], channel[j:], labels[j + 1])
        assert {labels[i + 1], labels[j + 1]} == {"1+", "2-"}
        assert sum(channel) == 4
        firsts.append(labels[i + 1])
    assert set(firsts) == {"1+", "2-"}  # E1 is drawn, not fixed
    # post-training: 8 rounds of the 4 exposures, each wash({2,4,6}) + triplet
    starts = p.post_triplet_starts()
    assert starts.shape == (4, 8)
    for r in range(8):
        start, labels, channel = _block(p, "post", r)
        i, order = 0, []
        for k in range(4):
            n = p.wash_draws["post"][4 * r + k]
            assert _is_wash(labels[i : i + n], n)
            exposure = labels[i + n + 1]
            _check_triplet(p, start + i + n, labels[i + n : i + n + 3], channel[i + n : i + n + 3], exposure)
            assert starts[EXPOSURES.index(exposure), r] == start + i + n
            order.append(exposure)
            i += n + 3
        assert i == len(labels) and sorted(order) == sorted(EXPOSURES)
    assert len(p) == 16 * 3 + sum(p.wash_draws["pre"]) + 24 * 42 + sum(p.wash_draws["training_1"]) \
        + sum(p.wash_draws["training_2"]) + 32 * 3 + sum(p.wash_draws["post"])
    assert len(p) <= max_trials(SensorimotorAdaptation().settings)


def test_pools_persist_and_sequences_differ_between_seeds():
    a, b = _protocol(0), _protocol(1)
    assert a.trials != b.trials
    assert a.trials == _protocol(0).trials  # a pure function of the seed
    # the pool persists across phases' blocks: 24 draws of {14,16,18} are 8 full permutations
    assert all(sorted(a.wash_draws["training_1"][g : g + 3]) == [14, 16, 18] for g in range(0, 24, 3))
    lengths = {len(_protocol(s)) for s in range(8)}
    assert len(lengths) > 1  # the pools make sequence lengths differ between seeds


@pytest.mark.parametrize("seed", [0, 1])
def test_reference_compat_protocol(seed):
    """§2.7 items 1-2: no pre-training; block = [10,20] + 32 field + [10,20] + 2 x wash(n1) + 2 x wash(n2)."""
    p = _protocol(seed, reference_compat=True)
    _check_pools(p)
    assert "pre" not in p.phase and p.wash_draws["pre"] == ()
    assert all(t.phase == "post" for t in p.triplets) and len(p.triplets) == 32
    for b in range(24):
        _, labels, channel = _block(p, "training", b)
        n1, n2 = p.wash_draws["training_1"][b], p.wash_draws["training_2"][b]
        assert len(labels) == 36 + 2 * n1 + 2 * n2 and not any(channel)
        assert sorted(labels[:2]) == ["10", "20"] and sorted(labels[34:36]) == ["10", "20"]
        for k in range(4):
            assert sorted(labels[2 + 8 * k : 10 + 8 * k]) == ["1+"] * 4 + ["2-"] * 4
        washes = labels[36:]
        assert _is_wash(washes[:n1], n1) and _is_wash(washes[n1 : 2 * n1], n1)
        assert _is_wash(washes[2 * n1 : 2 * n1 + n2], n2) and _is_wash(washes[2 * n1 + n2 :], n2)
    post = [i for i, ph in enumerate(p.phase) if ph == "post"]
    assert post == list(range(post[0], len(p))) and len(p.wash_draws["post"]) == 32
    assert len(p) <= max_trials({**SensorimotorAdaptation().settings, "reference_compat": True})


def test_unlearned_channel_trials_are_no_ops():
    p = _protocol(0, **SHORT)
    on, off = p.codes(True), p.codes(False)
    channel = np.array(p.channel)
    assert (np.array(KINDS)[on[channel]] == "channel").all() and (np.array(KINDS)[off[channel]] == "noop").all()
    assert (on[~channel] == off[~channel]).all() and (np.array(KINDS)[on] != "noop").all()


def test_bad_settings_fail_with_the_value():
    with pytest.raises(ValueError, match="n_hidden=3"):
        pcneuro.run(NAME, preset="quick", settings={"n_hidden": 3}, write=False)
    with pytest.raises(ValueError, match="n_pre_blocks=6"):
        pcneuro.run(NAME, preset="quick", settings={"n_pre_blocks": 6}, write=False)
    with pytest.raises(ValueError, match="n_pre_blocks=6"):
        build_protocol(torch.Generator(), n_pre_blocks=6)


# --------------------------------------------------------------------------------------------------
# mechanism (spec §2.6)


def _engine(rule, params, lr_in, lr_out):
    spec = SensorimotorAdaptation.network(2, False)
    config = TrainConfig(T=64, weight_opt=SGD(lr={"0.weight": lr_in, "1.weight": lr_out}),
                         latent_opt=LatentSGD(0.1), lr_decay=0.9)
    spec, config = build_rule(rule, spec, config)
    return Engine(spec, config, {k: v.clone() for k, v in params.items()})


def _random_params(R=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"0.weight": torch.randn(R, 2, 2, generator=g, dtype=torch.float64) * 0.5,
            "1.weight": torch.randn(R, 2, 2, generator=g, dtype=torch.float64) * 0.5}


@pytest.mark.parametrize("target", [(1.0, 0.0), (0.0, 1.0)])
def test_cue2_trial_leaves_the_cue1_pathway_unchanged_under_bp_only(target):
    """BP: hidden unit 0 is exactly 0 on a cue-2 trial, so W_lo[0,0] and W_up[:,0] get zero gradient.
    PC: inference moves the cue-1 latent off 0, so W_up[:,0] learns (W_lo[:,0] still cannot: u_1 = 0)."""
    params = _random_params()
    x = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([target], dtype=torch.float64)
    bp = _engine("bp", params, 0.1, 0.1)
    bp.train_batch(x, y)
    lo, up = bp.params["0.weight"], bp.params["1.weight"]
    assert torch.equal(lo[:, :, 0], params["0.weight"][:, :, 0] * torch.tensor([1.0, 0.0], dtype=torch.float64))
    assert torch.equal(up[:, :, 0], params["1.weight"][:, :, 0])
    assert (up[:, :, 1] != params["1.weight"][:, :, 1]).all()
    pc = _engine("pc", params, 0.1, 0.1)
    pc.train_batch(x, y)
    assert torch.equal(pc.params["0.weight"][:, :, 0], lo[:, :, 0])
    assert (pc.params["1.weight"][:, :, 0] != params["1.weight"][:, :, 0]).all()


def test_bp_channel_step_scales_the_cue1_output():
    """A BP channel trial (cue 1, target 0) multiplies the cue-1 output y = a·b by
    c = (1 − lr_in·|b|²)(1 − lr_out·a²): the residual Δ = (c − 1)·y₁ of a 2± triplet is parallel to
    y₁, so its sign for 2+ and 2- is opposite exactly when y₁'s field direction is the same at both."""
    params = _random_params(seed=1)
    lr_in, lr_out = 0.05, 0.02
    engine = _engine("bp", params, lr_in, lr_out)
    probe = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    y1 = engine.forward(probe)[:, 0]
    engine.train_batch(probe, torch.zeros(1, 2, dtype=torch.float64))
    a, b = params["0.weight"][:, 0, 0], params["1.weight"][:, :, 0]
    c = (1 - lr_in * (b * b).sum(1)) * (1 - lr_out * a * a)
    torch.testing.assert_close(engine.forward(probe)[:, 0], c[:, None] * y1, rtol=1e-12, atol=0)


def test_bp_cue2_exposures_give_exactly_zero_adaptation_without_channel_learning():
    """Every seed and every setting of the default grid (a shortened protocol): 2+ and 2- are exactly 0.0.
    The fully connected net (no clamp) transfers under BP, so the zero comes from the diagonal W_lo."""
    ds = pcneuro.run(NAME, rule="bp", seeds=3, settings=dict(learn_channel_trials=False, **SHORT),
                     write=False, device="cpu")
    per_round = ds["adaptation_per_round"]
    assert per_round.shape == (1, 3, 6, 12, 6, 4, 2) and np.isfinite(per_round.values).all()
    assert (per_round.sel(exposure=["2+", "2-"]).values == 0.0).all()
    assert (per_round.sel(exposure=["1+", "1-"]).values != 0.0).mean() > 0.99
    full = pcneuro.run(NAME, rule="bp", seeds=3, write=False, device="cpu",
                       settings=dict(learn_channel_trials=False, fully_connected=True, **SHORT, **BP_CONFIG))
    assert (full["adaptation_per_round"].sel(exposure=["2+", "2-"]).values != 0.0).all()


def test_bp_residual_with_channel_learning_is_tiny_and_of_opposite_sign():
    """With learned channel trials, BP's 2± adaptation is only the channel step's residual (c − 1)·y₁.

    At BP's published config, 200 seeds, full protocol: per seed and round it is < 1e-4 of the 1±
    adaptation (measured ≤ 1.3e-5), the seed means are 2+ < 0 < 2- (z ≈ 5.5: training turns the
    cue-1 output to field +, so (c − 1)·y₁ opposes + and follows −). Per seed and round the signs of
    2+ and 2- are opposite in 1599 of 1600 cases (over the default grid, 24 seeds: 99 %); they differ
    where the cue-1 output's field direction flips between the 2+ and 2- triplets of a round, so
    that is not asserted per round."""
    ds = pcneuro.run(NAME, rule="bp", seeds=200, settings=BP_CONFIG, write=False, device="cpu")
    pr = ds["adaptation_per_round"].squeeze().transpose("seed", "exposure", "round").values
    one_p, two_p, one_m, two_m = (pr[:, i] for i in range(4))
    assert (np.abs(two_p) < 1e-4 * np.abs(one_p)).all() and (np.abs(two_m) < 1e-4 * np.abs(one_m)).all()
    assert (two_p * two_m < 0).mean() > 0.99
    means = pr.mean(2)
    sem = means.std(0, ddof=1) / np.sqrt(len(means))
    assert means[:, 1].mean() < -3 * sem[1] and means[:, 3].mean() > 3 * sem[3]
    assert means[:, 0].mean() > 3 * sem[0] and means[:, 2].mean() > 3 * sem[2]  # 1+ and 1- adapt


def test_pc_transfers_cue2_plus_to_cue1_in_the_published_order():
    """At PC's published config, 200 seeds, full protocol: 1+ > 2+ > 1- > 2- in the seed means, each
    paired difference > 2 SEM, and 2+ clearly nonzero (> 5 SEM; BP's is ~1e-6 of 1+).

    T = 32 instead of 256 keeps the test fast; measured: T = 64 gives the T = 256 seed means to 3
    digits, T = 32 within ~5 %. With T = 256 and seeds 0-199 the scale fit gives 0.217, 0.196, 0.098,
    0.038 (published ≈ 0.22, 0.19, 0.10, 0.04); each paired difference is 3.8-13 SEM on four disjoint
    200-seed sets, while 24-seed sets scatter widely (per-seed values share a large seed effect)."""
    ds = pcneuro.run(NAME, rule="pc", seeds=200, settings=dict(T=32, **PC_CONFIG), write=False, device="cpu")
    a = ds["adaptation"].squeeze().transpose("seed", "exposure").values
    assert np.isfinite(a).all()

    def z(v):
        return v.mean() / (v.std(ddof=1) / np.sqrt(len(v)))

    for i in range(3):
        assert z(a[:, i] - a[:, i + 1]) > 2, EXPOSURES[i]
    assert z(a[:, 1]) > 5
    assert a[:, 1].mean() > 0.5 * a[:, 0].mean()  # strong transfer from cue 2's P+ to cue 1


# --------------------------------------------------------------------------------------------------
# simulation machinery


@pytest.mark.parametrize("rule", ["pc", "bp"])
def test_a_stacked_run_equals_the_same_run_alone(rule):
    """Runs of different seeds (different sequence lengths: padded with no-ops) and settings, stacked
    on the run axis, equal each run simulated alone."""
    p = SensorimotorAdaptation()
    base = {**p.settings, **SHORT, "T": 8}
    seeds = [0, 1, 2, 3, 1]
    assert len({len(p.protocol(s, base)) for s in seeds}) > 1
    variants = [dict(init_sd=0.5, lr_in=0.1, lr_out=0.05), dict(init_sd=0.1, lr_in=0.01, lr_out=0.1),
                dict(init_sd=0.3, lr_in=0.05, lr_out=0.05, learn_channel_trials=False),
                dict(init_sd=1.0, lr_in=0.001, lr_out=0.01, latent_lr=0.2),
                dict(init_sd=0.5, lr_in=0.1, lr_out=0.05, latent_lr_discount=0.5)]
    settings = [{**base, **v} for v in variants]
    cpu = torch.device("cpu")
    stacked = p.simulate(rule, settings, seeds, cpu, lambda n: None)
    for r, (s, seed) in enumerate(zip(settings, seeds)):
        alone = p.simulate(rule, [s], [seed], cpu, lambda n: None)
        for name in p.measures:
            np.testing.assert_allclose(stacked[name][r], alone[name][0], rtol=1e-10, atol=0)
    assert (np.abs(stacked["adaptation"]).max(axis=1) > 0).all()  # every run learned something


def test_quick_preset_end_to_end():
    ds = pcneuro.run(NAME, preset="quick", write=False, device="cpu")
    a, pr = ds["adaptation"], ds["adaptation_per_round"]
    assert a.dims == ("rule", "seed", "init_sd", "lr_in", "lr_out", "exposure")
    assert a.shape == (2, 2, 2, 2, 2, 4) and pr.shape == (2, 2, 2, 2, 2, 4, 2)
    assert list(ds["exposure"].values) == list(EXPOSURES) and list(ds["round"].values) == [0, 1]
    assert np.isfinite(pr.values).all()
    np.testing.assert_allclose(a.values, pr.mean("round").values, rtol=1e-12)
    assert SensorimotorAdaptation.fit.measure == "adaptation" and SensorimotorAdaptation.fit.readout == "scale"
