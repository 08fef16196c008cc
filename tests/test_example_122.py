"""The 1-2-2 example (theory spec §3): hand-worked BP steps, PC's inferred-then-consolidated steps,
the small-lr and trainable-gain variants, end to end, bad input.

The protocol is deterministic (fixed initial weights, one sample, no draws): one seed is the whole
story, which a two-seed run checks.
"""
import math

import numpy as np
import pytest
import torch
import xarray as xr

import pcneuro
from pcneuro.engine import Engine, LatentSGD, SGD, TrainConfig
from pcneuro.paradigms.example_122 import PC_LR, PUBLISHED, Example122
from conftest import run_cli


@pytest.fixture(scope="module")
def main():
    return pcneuro.run("example_122", preset="paper", seeds=2, device="cpu", write=False)


@pytest.fixture(scope="module")
def small_lr():
    """The small-lr variant at the output panel's 150 logged points."""
    return pcneuro.run("example_122", preset="small_lr", settings={"iterations": 150}, device="cpu", write=False)


def weights(ds, rule):
    return ds["weight"].sel(rule=rule).isel(seed=0).values


def test_seeds_change_nothing(main):
    for name in ("weight", "output", "gain", "loss"):
        np.testing.assert_array_equal(main[name].isel(seed=0).values, main[name].isel(seed=1).values)


def test_bp_first_step_is_one_sgd_step_on_the_loss(main):
    """ℒ = ½(1 − w₁)² + ½(1 − 2w₂)²; at w = 0 the gradient is (−1, −2), so one step at η = 0.4 gives
    w = 0.4·(1, 2) = (0.4, 0.8) and o = (0.4, 1.6)."""
    w, o = weights(main, "bp"), main["output"].sel(rule="bp").isel(seed=0).values
    np.testing.assert_allclose(w[1], [0.4, 0.8], rtol=0, atol=1e-15)
    np.testing.assert_allclose(o[1], [0.4, 1.6], rtol=0, atol=1e-15)
    # every step: w₁ += η(1 − w₁), w₂ += 2η(1 − 2w₂); w₂'s error flips by −0.6
    np.testing.assert_allclose(w[1:, 0], w[:-1, 0] + 0.4 * (1 - w[:-1, 0]), rtol=0, atol=1e-14)
    np.testing.assert_allclose(w[1:, 1], w[:-1, 1] + 0.8 * (1 - 2 * w[:-1, 1]), rtol=0, atol=1e-14)
    np.testing.assert_allclose((w[1:, 1] - 0.5) / (w[:-1, 1] - 0.5), -0.6, rtol=1e-6)


def test_bp_path_matches_the_published_one(main):
    np.testing.assert_allclose(weights(main, "bp")[:6], PUBLISHED["bp_weights"], atol=1e-4)
    np.testing.assert_allclose(main["output"].sel(rule="bp").isel(seed=0).values[:3], PUBLISHED["bp_outputs"],
                               atol=1e-12)


def test_pc_infers_the_hidden_activity_first_then_consolidates_it():
    """At w = 0 the inferred latents are the equilibria x₁ = (w₁+1)/2 = 0.5, x₂ = (w₂+2)/5 = 0.4
    (between the feed-forward 0 and the activity that gives the target, (1, 0.5)), and the weight
    step moves w towards them: Δw = η(x* − w)."""
    lr = 0.3
    config = TrainConfig(T=128, weight_opt=SGD(lr=lr), latent_opt=LatentSGD(lr=0.1), lr_decay=0.8,
                         record_latents="last")
    engine = Engine(Example122.network(), config, Example122.initial_params(1))
    x, y = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 2, dtype=torch.float64)
    record = engine.train_batch(x, y)
    inferred = record.latents[0][0, 0].numpy()
    np.testing.assert_allclose(inferred, [0.5, 0.4], atol=1e-9)
    np.testing.assert_allclose(engine.params["0.weight"][0, :, 0].numpy(), lr * inferred, atol=1e-9)
    np.testing.assert_array_equal(engine.params["1.weight"][0].numpy(), [[1.0, 0.0], [0.0, 2.0]])  # frozen


def test_pc_matches_converged_inference_and_the_published_path(main):
    w = weights(main, "pc")
    expected = [np.zeros(2)]
    for _ in range(len(w) - 1):
        a, b = expected[-1]
        expected.append([a + PC_LR * (1 - a) / 2, b + PC_LR * (2 - 4 * b) / 5])
    np.testing.assert_allclose(w, expected, rtol=0, atol=1e-7)  # inference stops at F's precision
    np.testing.assert_allclose(w[:5, 1], PUBLISHED["pc_w2"], atol=1e-4)
    # the published lr equalises the first step's length with BP's 0.4·√5 (to the constant's precision)
    assert np.linalg.norm(w[1]) == pytest.approx(0.4 * math.sqrt(5), abs=1e-4)
    assert np.linalg.norm(weights(main, "bp")[1]) == pytest.approx(0.4 * math.sqrt(5), abs=1e-12)


def test_pc_goes_almost_directly_to_the_solution_and_bp_zigzags(main):
    pc, bp = weights(main, "pc"), weights(main, "bp")
    # PC's w₂ overshoots once, by at most ≈0.06, and then stays within a hundredth; BP swings by 0.3
    assert np.abs(pc[1:, 1] - 0.5).max() < 0.065
    assert np.abs(pc[2:, 1] - 0.5).max() < 0.01
    assert np.abs(bp[1:4, 1] - 0.5).min() > 0.1
    # both flip w₂'s error at every step, PC by the factor 1 − 4η/5 ≈ −0.12, BP by −0.6
    pc_ratio = (pc[2:6, 1] - 0.5) / (pc[1:5, 1] - 0.5)
    np.testing.assert_allclose(pc_ratio, 1 - 4 * PC_LR / 5, atol=1e-3)
    np.testing.assert_allclose((bp[2:6, 1] - 0.5) / (bp[1:5, 1] - 0.5), -0.6, atol=1e-9)
    # PC is much closer to the solution after every update
    distance = lambda w: np.linalg.norm(w - [1.0, 0.5], axis=1)  # noqa: E731
    assert (distance(pc)[1:6] < distance(bp)[1:6]).all()


def test_small_lr_both_converge_bp_bends_and_pc_is_nearly_straight(small_lr):
    for rule in ("pc", "bp"):
        loss = small_lr["loss"].sel(rule=rule).isel(seed=0).values
        assert (np.diff(loss) < 0).all()
        assert np.linalg.norm(weights(small_lr, rule)[-1] - [1.0, 0.5]) < 0.03

    def deviation(path, end):  # largest distance from the straight line from the origin to the end
        u = np.asarray(end) / np.linalg.norm(end)
        return np.abs(path[:, 0] * u[1] - path[:, 1] * u[0]).max()

    for measure, end in (("weight", (1.0, 0.5)), ("output", (1.0, 1.0))):
        pc = small_lr[measure].sel(rule="pc").isel(seed=0).values
        bp = small_lr[measure].sel(rule="bp").isel(seed=0).values
        assert deviation(pc, end) < 0.5 * deviation(bp, end), measure
    # BP's w₂ is nearly done while w₁ is under half way; PC's w₁ is well past it by then
    for rule, check in (("bp", lambda w1: w1 < 0.5), ("pc", lambda w1: w1 > 0.7)):
        w = weights(small_lr, rule)
        k = int(np.argmax(w[:, 1] >= 0.45))
        assert check(w[k, 0]), (rule, k, w[k])


def test_trainable_gains_variant():
    """Spec §3: BP's o₂ zig-zags up to 1.6 and down to ≈0.58; PC rises smoothly to ≈(0.959, 0.975)
    at its 10th logged point."""
    ds = pcneuro.run("example_122", preset="trainable_gains", device="cpu", write=False)
    pc = ds["output"].sel(rule="pc").isel(seed=0).values
    bp = ds["output"].sel(rule="bp").isel(seed=0).values
    assert ds.sizes["step"] == 10
    np.testing.assert_allclose(pc[9], PUBLISHED["gains_pc_point10"], atol=0.002)
    assert (np.diff(pc, axis=0) > 0).all()
    assert bp[1:, 1].max() == pytest.approx(1.6, abs=1e-12)
    assert bp[1:, 1].min() == pytest.approx(0.58, abs=0.01)
    gains = ds["gain"].sel(rule="pc").isel(seed=0).values
    assert (gains[1:] != gains[0]).all()


def test_quick_preset_writes_results_and_figure(tmp_path):
    ds = pcneuro.run("example_122", preset="quick", out=tmp_path / "quick.nc", device="cpu")
    saved = xr.open_dataset(ds.encoding["source"])
    assert set(saved.data_vars) == set(Example122.measures)
    assert saved["weight"].dims == ("rule", "seed", "step", "unit")
    assert saved.sizes["step"] == 6
    png = tmp_path / "quick.png"
    assert png.exists() and png.stat().st_size > 10_000
    assert "published" in Example122.summary_table(saved)
    saved.close()


def test_pc_needs_two_inference_steps():
    with pytest.raises(ValueError, match="T=1"):
        pcneuro.run("example_122", settings={"T": 1}, write=False)


@pytest.mark.parametrize("setting, named", [("lr_bp=-0.4", "lr_bp='-0.4'"), ("iterations=0", "iterations='0'")])
def test_bad_input_is_one_line_and_exit_2(tmp_path, setting, named):
    """A negative learning rate or zero iterations: one line naming the value, exit status 2."""
    res = run_cli("example_122", "--set", setting, "--out", tmp_path / "bad.nc")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "minimum" in lines[0], res.stderr
    assert not (tmp_path / "bad.nc").exists()
