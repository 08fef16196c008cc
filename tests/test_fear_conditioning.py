"""Fear conditioning (specs/behaviour.md §1): the structural claims of the paradigm."""
import numpy as np
import pytest
import torch

import pcneuro
from pcneuro.paradigms.fear_conditioning import GROUPS, FearConditioning


@pytest.fixture(scope="module")
def default_grid():
    """The whole default grid: 2 rules x 64 lr points x 8 seeds x 3 groups = 3072 simulated networks."""
    return pcneuro.run("fear_conditioning", device="cpu", write=False)


def test_default_grid_shape(default_grid):
    f = default_grid["fear_to_N"]
    assert f.dims == ("rule", "seed", "lr_perception", "lr_mix_L", "lr_mix_N", "group", "trial")
    assert f.shape == (2, 8, 4, 4, 4, 3, 64)
    assert list(default_grid["group"].values) == ["N+", "LN+", "LN+,L-"]
    assert list(default_grid["trial"].values) == list(range(64))
    assert np.isfinite(f.values).all()


def test_bp_cannot_recover_from_overshadowing(default_grid):
    """Under BP, L-alone trials give N's pathway exactly zero gradient: LN+ == LN+,L- everywhere."""
    last = default_grid["fear_to_N"].sel(rule="bp").isel(trial=-1)
    diff = np.abs(last.sel(group="LN+") - last.sel(group="LN+,L-"))
    assert float(diff.max()) == 0.0  # exactly: the gradients on N's pathway are exactly zero
    # ...and the trajectories are identical through conditioning, where both groups get LN+
    cond = default_grid["fear_to_N"].sel(rule="bp").isel(trial=slice(0, 32))
    assert float(np.abs(cond.sel(group="LN+") - cond.sel(group="LN+,L-")).max()) == 0.0


def test_pc_recovers_from_overshadowing_for_every_seed(default_grid):
    point = dict(lr_perception=0.001, lr_mix_L=0.001, lr_mix_N=1.0)
    last = default_grid["fear_to_N"].sel(rule="pc", **point).isel(trial=-1)
    assert bool((last.sel(group="LN+,L-") > last.sel(group="LN+")).all())


def test_pc_pattern_is_stable_over_many_seeds():
    """At the spec's PC config, 100 seeds: N+ high, LN+ low (overshadowing), LN+,L- recovered."""
    ds = pcneuro.run("fear_conditioning", rule="pc", seeds=100, device="cpu", write=False,
                     settings=dict(lr_perception=0.001, lr_mix_L=0.001, lr_mix_N=1.0))
    last = ds["fear_to_N"].isel(trial=-1).squeeze()
    n_plus, ln, ln_l = (last.sel(group=g).values for g in GROUPS)
    assert (ln_l > ln).all()
    assert (n_plus > ln).all()
    assert ln_l.mean() - ln.mean() > 10 * ln.std(ddof=1) / np.sqrt(len(ln))


def test_mechanism_pc_pushes_the_n_latent_below_zero():
    """On an L-alone extinction trial the PC latent of the N unit goes negative, so m_N grows."""
    from pcneuro.engine import Engine, LatentSGD, SGD, TrainConfig

    spec = FearConditioning.network(2, False)
    params = {"0.weight": torch.tensor([[[1.0, 0.0], [0.0, 1.0]]], dtype=torch.float64),
              "1.weight": torch.tensor([[[0.4, 0.6]]], dtype=torch.float64)}
    config = TrainConfig(T=200, weight_opt=SGD(lr={"0.weight": 0.0, "1.weight": 1.0}),
                         latent_opt=LatentSGD(0.5), lr_decay=0.5)
    engine = Engine(spec, config, params)
    engine.train_batch(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64))
    assert float(engine.params["1.weight"][0, 0, 1]) > 0.6  # m_N increased
    assert float(engine.params["1.weight"][0, 0, 0]) < 0.4  # m_L decreased


def test_seeds_pair_rules_and_do_not_depend_on_batching():
    a = pcneuro.run("fear_conditioning", preset="quick", device="cpu", write=False)
    b = pcneuro.run("fear_conditioning", preset="quick", seeds=[1], device="cpu", write=False)
    np.testing.assert_array_equal(a["fear_to_N"].sel(seed=[1]).values, b["fear_to_N"].values)
    # with every learning rate 0 nothing learns: the read-out is the seed's initial draw, the same
    # under PC and BP (a paired design) and different between seeds
    frozen = pcneuro.run("fear_conditioning", seeds=3, device="cpu", write=False,
                         settings=dict(lr_perception=0.0, lr_mix_L=0.0, lr_mix_N=0.0))["fear_to_N"]
    np.testing.assert_array_equal(frozen.sel(rule="pc").values, frozen.sel(rule="bp").values)
    per_seed = frozen.sel(rule="pc").isel(trial=0, group=0).values.ravel()
    assert len(set(per_seed)) == 3


def test_bad_structural_values_fail_with_the_value():
    with pytest.raises(ValueError, match="n_hidden=3"):
        pcneuro.run("fear_conditioning", preset="quick", settings={"n_hidden": 3}, write=False)


def _best_affine_fit(last_trial, rule):
    """§0.4 reference fit: the grid point whose seed means map best (affine) onto the rat data."""
    from pcneuro import datasets
    from pcneuro.fits import closed_form_fit

    data = datasets.load("fear_conditioning")["fear_to_N"].mean("subject")
    data_means = {g: float(data.sel(group=g)) for g in GROUPS}
    means = last_trial.sel(rule=rule).mean("seed").stack(point=["lr_perception", "lr_mix_L", "lr_mix_N"])
    fits = []
    for i in range(means.sizes["point"]):
        sim = {g: float(means.isel(point=i).sel(group=g)) for g in GROUPS}
        fit = closed_form_fit(sim, data_means, kind="affine")
        if not fit.degenerate:
            fits.append((fit.error, means["point"].values[i], fit))
    return min(fits, key=lambda f: f[0])


def test_fitted_pattern_reproduces_the_published_values(default_grid):
    """Behaviour spec §1.6: PC ≈ N+ 45.3, LN+ 23-28, LN+,L- 41-44; BP LN+ = LN+,L- ≈ 34.5, N+ ≈ 44.4,
    with BP's error structurally ½(d̄_{LN+,L-} − d̄_{LN+})² = 149.614."""
    last = default_grid["fear_to_N"].isel(trial=-1)
    error, point, pc = _best_affine_fit(last, "pc")
    assert point == (0.001, 0.001, 1.0)
    assert abs(pc.fitted["N+"] - 45.3) < 1.5
    assert 23 <= pc.fitted["LN+"] <= 28 and 41 <= pc.fitted["LN+,L-"] <= 44
    assert pc.k > 1 and pc.b < 0  # raw outputs near 1: k >> 1, b << 0
    error_bp, _, bp = _best_affine_fit(last, "bp")
    assert error_bp == pytest.approx(149.614, abs=1e-3) and error_bp > 50 * error
    assert bp.fitted["LN+"] == pytest.approx(bp.fitted["LN+,L-"], abs=1e-9)
    assert bp.fitted["LN+"] == pytest.approx(34.5, abs=0.5) and bp.fitted["N+"] == pytest.approx(44.4, abs=0.5)


def test_spec_sweeps_are_grid_options():
    """The spec's init_sd, n_hidden and fully connected variants (§1.3) run as grid axes of one file."""
    ds = pcneuro.run("fear_conditioning", preset="quick", seeds=1, device="cpu", write=False,
                     grid={"n_hidden": (2, 4), "fully_connected": (False, True), "init_sd": (0.5, 0.01)})
    f = ds["fear_to_N"]
    assert f.sizes["n_hidden"] == 2 and f.sizes["fully_connected"] == 2 and f.sizes["init_sd"] == 2
    assert bool(np.isfinite(f.sel(rule="bp", lr_perception=0.001, lr_mix_L=0.001, lr_mix_N=0.01)).all())
    # the cue-specific nets keep BP's structural tie; the fully connected ones need not
    last = f.sel(rule="bp", fully_connected=False).isel(trial=-1)
    assert float(np.abs(last.sel(group="LN+") - last.sel(group="LN+,L-")).max()) == 0.0
    for preset in ("init_sd_sweep", "hidden_sweep", "fully_connected"):
        assert preset in FearConditioning.presets
