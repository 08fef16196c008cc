"""dqn_control (specs/benchmarks.md §3.6, fig 4k): the DQN mechanics and a tiny end-to-end run.

* the TD target comes from the online net, detached, with mask 0 at termination and truncation;
* the loss reaches only the taken action's output (the other outputs' weights do not move);
* Welford normalisation: numpy's mean/population variance of the states seen, updated before the
  state is normalised, all-ones std when any component is 0;
* the ε schedule; updates wait for more than 2,000 stored transitions, then 10 per episode;
* a run's numbers do not depend on its batch-mates; a checkpoint round trip continues bitwise;
* a small ``pcneuro.run`` writes NetCDF and the fig 4k-style figure.
"""
from __future__ import annotations

import gymnasium
import numpy as np
import pytest
import torch

import pcneuro
from pcneuro.checkpoint import _from_host, _to_host
from pcneuro.engine.network import forward
from pcneuro.paradigms import dqn_control
from pcneuro.paradigms.dqn_control import (DQNControl, DQNRuns, RunningNorm, dqn_update, epsilon, q_values,
                                           running_mean, td_target, transition_mask)

#: a few episodes that learn: small buffer thresholds, short inference
TINY = {"episodes": 4, "buffer_size": 400, "learn_after": 30, "updates_per_episode": 2, "batch_size": 8, "T": 4}


def settings(**over):
    s = dict(DQNControl().settings)
    s.update(TINY)
    s.update(over)
    return s


def make_runs(rule="bp", n=2, seeds=None, **over):
    seeds = list(range(n)) if seeds is None else seeds
    return DQNRuns(DQNControl(), rule, [settings(**over)] * len(seeds), seeds, "cpu")


class Recorder(gymnasium.Wrapper):
    """Keeps every raw observation the environment returns."""

    def __init__(self, env):
        super().__init__(env)
        self.seen = []

    def reset(self, **kw):
        obs, info = self.env.reset(**kw)
        self.seen.append(np.array(obs, dtype=np.float64))
        return obs, info

    def step(self, action):
        out = self.env.step(action)
        self.seen.append(np.array(out[0], dtype=np.float64))
        return out


def stored(runs, r):
    """Run r's stored transitions in order: s, s′, a, r, mask."""
    n, D = int(runs.buffers.count[r]), runs.task.obs_dim
    rows = runs.buffers.data[r, :n].astype(np.float64)
    return rows[:, :D], rows[:, D:2 * D], rows[:, 2 * D], rows[:, 2 * D + 1], rows[:, 2 * D + 2]


# -- acting ------------------------------------------------------------------------------------------------
def test_epsilon_schedule():
    assert epsilon(0) == pytest.approx(0.08)
    assert epsilon(200) == pytest.approx(0.07)
    assert epsilon(1000) == pytest.approx(0.03)
    assert epsilon(1399) > 0.01 and epsilon(1400) == pytest.approx(0.01)
    assert epsilon(5000) == 0.01 and epsilon(9999) == 0.01


@pytest.mark.parametrize("env_id", list(dqn_control.ENVIRONMENTS))
def test_the_environments_run_offline_with_the_spec_shapes(env_id):
    task, env = dqn_control.ENVIRONMENTS[env_id], dqn_control.make_env(env_id)
    assert env.observation_space.shape == (task.obs_dim,) and env.action_space.n == task.n_actions
    assert env.spec.max_episode_steps == task.time_limit
    obs, _ = env.reset(seed=0)
    assert obs.shape == (task.obs_dim,) and len(env.step(0)) == 5


def test_acting_forward_is_the_engines_eval_forward():
    runs = make_runs("pc", n=3)
    x = torch.randn(3, 5, 4)
    np.testing.assert_allclose(q_values(runs.engine.spec, runs.engine.params, x), runs.engine.forward(x),
                               rtol=1e-6, atol=1e-6)
    spec = runs.engine.spec
    assert [type(l).__name__ for l in spec.layers] == ["Linear", "Activation", "Linear", "Activation", "Linear"]
    assert spec.param_shapes()["4.weight"] == (2, 128) and "0.bias" in spec.param_shapes()
    assert len(spec.node_positions) == 2  # value nodes on the two hidden pre-activations
    assert float(runs.engine.params["2.weight"].abs().max()) <= 1 / np.sqrt(128)  # torch's default init


# -- normalisation -------------------------------------------------------------------------------------------
def test_welford_matches_numpy_per_run():
    rng = np.random.default_rng(0)
    norm = RunningNorm(3, 4)
    seen = [[], [], []]
    for step in range(40):
        runs = np.array([r for r in range(3) if rng.random() < 0.7 or step == 0], dtype=np.int64)  # not all at once
        obs = rng.normal(size=(len(runs), 4)) * [1, 10, 0.1, 3] + 5
        norm.update(obs, runs)
        for j, r in enumerate(runs):
            seen[r].append(obs[j])
    for r in range(3):
        data = np.array(seen[r])
        np.testing.assert_allclose(norm.mean[r], data.mean(0), rtol=1e-12)
        np.testing.assert_allclose(norm.std(np.array([r]))[0], data.std(0), rtol=1e-10)  # population std


def test_zero_std_anywhere_gives_all_ones():
    norm = RunningNorm(2, 3)
    norm.update(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]), np.array([0, 1]))
    np.testing.assert_array_equal(norm.std(np.array([0, 1])), np.ones((2, 3)))  # one state: std 0
    norm.update(np.array([[3.0, 2.0, 7.0], [5.0, 4.0, 9.0]]), np.array([0, 1]))  # run 0: dim 1 stays constant
    np.testing.assert_array_equal(norm.std(np.array([0])), [[1.0, 1.0, 1.0]])
    np.testing.assert_allclose(norm.std(np.array([1])), [[2.0, 1.0, 3.0]])
    np.testing.assert_allclose(norm.normalize(np.array([[5.0, 4.0, 9.0]]), np.array([1])), [[1.0, 1.0, 1.0]])


def test_states_are_normalised_after_adding_them_and_stored_so():
    """Every stored s′ is (s′ − mean)/std over all raw states seen up to and including s′; s is the
    previous s′ (the first of an episode normalised after adding it)."""
    runs = make_runs("bp", n=2)
    runs.envs = [Recorder(e) for e in runs.envs]
    for episode in range(2):
        runs.play_episode(episode)
    for r in range(2):
        raw = np.array(runs.envs[r].seen)
        s, s_next, _, _, mask = stored(runs, r)
        starts = np.r_[0, np.flatnonzero(mask == 0)[:-1] + 1]  # first transition of each episode
        position = 0  # index into raw of the state stored as s
        for t in range(len(s)):
            if t in starts and t > 0:
                position += 1  # the final state of the last episode, then this episode's first
            for x, at in ((s[t], position), (s_next[t], position + 1)):
                past = raw[:at + 1]
                std = past.std(0)
                std = np.ones_like(std) if (std == 0).any() else std
                np.testing.assert_allclose(x, (raw[at] - past.mean(0)) / std, rtol=1e-5, atol=1e-5)
            position += 1
        np.testing.assert_array_equal(s[0], 0.0)  # one state seen: its mean, std all ones
        assert position + 1 == len(raw)


# -- transitions and masks -----------------------------------------------------------------------------------
def test_mask_is_zero_at_termination_and_truncation():
    np.testing.assert_array_equal(transition_mask([1, 0, 0, 1], [0, 1, 0, 1], False), [0, 0, 1, 0])
    np.testing.assert_array_equal(transition_mask([1, 0, 0, 1], [0, 1, 0, 1], True), [0, 1, 1, 0])
    cart = make_runs("bp", n=1)  # CartPole: terminations
    returns = [cart.play_episode(e)[0] for e in range(3)]
    _, _, _, reward, mask = stored(cart, 0)
    assert mask.sum() == len(mask) - 3 and (mask[np.cumsum(returns).astype(int) - 1] == 0).all()
    np.testing.assert_array_equal(reward, 1.0)
    for bootstrap in (False, True):  # MountainCar: a random policy is truncated at 200 steps
        car = make_runs("bp", n=1, env="MountainCar-v0", bootstrap_truncation=bootstrap)
        assert car.play_episode(0)[0] == -200
        mask = stored(car, 0)[4]
        assert len(mask) == 200 and mask[:-1].all() and mask[-1] == (1.0 if bootstrap else 0.0)


def test_td_target_is_detached_and_masked():
    q_next = torch.tensor([[[1.0, 3.0], [-2.0, -1.0]]], requires_grad=True)
    y = td_target(q_next, torch.tensor([[1.0, 0.5]]), torch.tensor([[1.0, 0.0]]), torch.tensor([0.98]))
    assert not y.requires_grad
    np.testing.assert_allclose(y.numpy(), [[1.0 + 0.98 * 3.0, 0.5]])


def _batch(R, B, D, A, seed=0, action=None):
    g = torch.Generator().manual_seed(seed)
    s, s_next = torch.randn(R, B, D, generator=g), torch.randn(R, B, D, generator=g)
    a = torch.randint(A, (R, B), generator=g).float() if action is None else torch.full((R, B), float(action))
    r = torch.randn(R, B, generator=g)
    mask = (torch.rand(R, B, generator=g) > 0.3).float()
    return torch.cat([s, s_next, a[..., None], r[..., None], mask[..., None]], dim=-1)


def test_bp_update_is_sgd_on_the_taken_action_with_a_detached_online_target():
    """The weights after one BP update equal W − lr·∇½Σ(Q(s,a) − y)² with y from the online net
    before the update, held constant; letting the gradient through y gives other weights."""
    runs = make_runs("bp", n=2, lr=0.05)
    engine, D, A = runs.engine, 4, 2
    ready = torch.tensor([True, True])
    dqn_update(engine, _batch(2, 7, D, A, seed=1), ready, runs.gamma, D, A, runs._q_next_of())  # the net moves
    batch = _batch(2, 7, D, A)
    before = {n: p.clone().requires_grad_(True) for n, p in engine.params.items()}
    s, s_next, a = batch[..., :D], batch[..., D:2 * D], batch[..., 2 * D].long()
    r, mask = batch[..., 2 * D + 1], batch[..., 2 * D + 2]

    def reference_grads(detach):
        q_next = forward(engine.spec, before, s_next).amax(-1)
        y = r + 0.98 * (q_next.detach() if detach else q_next) * mask
        q = forward(engine.spec, before, s).gather(-1, a[..., None])[..., 0]
        return torch.autograd.grad(0.5 * ((q - y) ** 2).sum(), list(before.values()))

    dqn_update(engine, batch, ready, runs.gamma, D, A, runs._q_next_of())
    right, wrong = reference_grads(True), reference_grads(False)
    for (name, p), g, g_wrong in zip(before.items(), right, wrong):
        np.testing.assert_allclose(engine.params[name], (p - 0.05 * g).detach(), rtol=1e-5, atol=1e-6)
        if name.startswith("4."):
            assert not torch.allclose(engine.params[name], p.detach() - 0.05 * g_wrong, atol=1e-6)


def test_the_target_network_option_syncs_every_k_updates():
    runs = make_runs("bp", n=2, learn_after=20, target_sync=2)
    initial = {n: p.clone() for n, p in runs.engine.params.items()}
    runs.buffers.data[:, :21] = _batch(2, 21, 4, 2).numpy()
    runs.buffers.count[:] = [21, 20]  # run 1 is not ready
    for update, expected in ((1, "initial"), (2, "online"), (3, "previous")):
        runs.updates_per_episode = 1
        previous = {n: p.clone() for n, p in runs.engine.params.items()}
        runs.learn()
        want = {"initial": initial, "online": runs.engine.params, "previous": previous}[expected]
        np.testing.assert_array_equal(runs.target["4.weight"][0], want["4.weight"][0])
        np.testing.assert_array_equal(runs.target["4.weight"][1], initial["4.weight"][1])
    assert runs.updates.tolist() == [3, 0]
    assert not torch.equal(runs.engine.params["4.weight"][0], runs.target["4.weight"][0])


@pytest.mark.parametrize("rule", ["pc", "bp"])
def test_loss_reaches_only_the_taken_action(rule):
    """Every sample took action 1: output row 0 (weights and bias) never moves, row 1 and the hidden
    layers do; a run that is not ready does not move at all."""
    runs = make_runs(rule, n=2, env="Acrobot-v1", lr=0.05)
    engine = runs.engine
    before = {n: p.clone() for n, p in engine.params.items()}
    loss = dqn_update(engine, _batch(2, 9, 6, 3, action=1), torch.tensor([True, False]), runs.gamma, 6, 3)
    after = engine.params
    for name in ("4.weight", "4.bias"):
        np.testing.assert_array_equal(after[name][0, [0, 2]], before[name][0, [0, 2]])
        assert not torch.equal(after[name][0, 1], before[name][0, 1])
    assert not torch.equal(after["0.weight"][0], before["0.weight"][0])
    for name in after:  # run 1 (not ready): exactly unchanged, zero loss
        np.testing.assert_array_equal(after[name][1], before[name][1])
    assert float(loss[1]) == 0.0 and float(loss[0]) > 0


# -- the schedule of updates -----------------------------------------------------------------------------------
def _count_batches(engine):
    calls = []
    train = engine.train_batch

    def counting(x0, y, output_mask=None):
        calls.append(output_mask.amax(dim=(1, 2)).bool())
        return train(x0, y, output_mask=output_mask)

    engine.train_batch = counting
    return calls


def test_updates_wait_for_more_than_2000_transitions_then_ten_per_episode():
    runs = make_runs("bp", n=2, learn_after=2000, buffer_size=50_000, updates_per_episode=10, batch_size=60)
    calls = _count_batches(runs.engine)
    rng = np.random.default_rng(0)
    runs.buffers.data[:, :2001] = rng.normal(size=(2, 2001, runs.buffers.data.shape[2]))
    runs.buffers.data[:, :2001, 8] = rng.integers(0, 2, (2, 2001))  # actions
    runs.buffers.count[:] = 2000
    assert torch.isnan(runs.learn()).all() and calls == []  # 2,000 stored: not yet
    runs.buffers.count[0] = 2001
    loss = runs.learn()
    assert len(calls) == 10 and all(c.tolist() == [True, False] for c in calls)  # run 1 is masked out
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1])


def test_updates_after_each_episode_once_a_run_is_ready():
    runs = make_runs("bp", n=2, learn_after=30, updates_per_episode=3)
    calls = _count_batches(runs.engine)
    for episode in range(6):
        counts_before = len(calls)
        runs.play_episode(episode)
        ready = runs.buffers.count > 30
        runs.learn()
        assert len(calls) - counts_before == (3 if ready.any() else 0)
        assert all(c.tolist() == ready.tolist() for c in calls[counts_before:])
    assert ready.all() and runs.updates.tolist() == [sum(1 for c in calls if c[r]) for r in range(2)]


@pytest.mark.parametrize("target_sync", [0, 1])
def test_updates_make_no_host_read_on_a_fake_cuda_device(target_sync):
    """The fake-CUDA check of the registry stops at acting's host read (the environment lives on the
    host); the updates after an episode are checked here: no device mixing, no device->host copy."""
    from pcneuro.fake_device import FakeCuda

    with FakeCuda(transfers_allowed=False):
        runs = DQNRuns(DQNControl(), "pc", [settings(target_sync=target_sync, T=3)] * 2, [0, 1], torch.device("cuda"))
        runs.buffers.data[:, :31] = np.random.default_rng(0).normal(size=(2, 31, 11))
        runs.buffers.data[:, :31, 8] = 1.0
        runs.buffers.count[:] = [31, 30]
        loss = runs.learn()
    assert loss.device.type == "cuda" and loss.shape == (2,)
    assert runs.updates.tolist() == [2, 0]


def test_running_reward_is_the_mean_of_the_last_200_returns():
    returns = np.random.default_rng(1).normal(size=(2, 450))
    expected = [[returns[r, max(0, e - 199):e + 1].mean() for e in range(450)] for r in range(2)]
    np.testing.assert_allclose(running_mean(returns), expected, rtol=1e-10)


# -- batching and checkpoints ------------------------------------------------------------------------------------
def test_a_run_does_not_depend_on_its_batch_mates():
    p = DQNControl()
    a, b = settings(lr=5e-3, T=3, learn_after=20), settings(lr=1e-3, T=3, learn_after=20)
    both = p.simulate("pc", [a, b], [0, 1], torch.device("cpu"), lambda n: None)
    alone = p.simulate("pc", [b], [1], torch.device("cpu"), lambda n: None)
    assert np.isfinite(both["td_loss"][1, -1])  # it learned
    for key in both:
        np.testing.assert_array_equal(both[key][1], alone[key][0], err_msg=key)


def test_checkpoint_round_trip_continues_bitwise(tmp_path):
    over = dict(learn_after=20, target_sync=3)  # the target network option too
    straight = make_runs("pc", n=2, **over)
    for e in range(4):
        straight.play_episode(e)
        straight.learn()
    first = make_runs("pc", n=2, **over)
    for e in range(2):
        first.play_episode(e)
        first.learn()
    torch.save(_to_host(first.state_dict()), tmp_path / "s.pt")
    resumed = make_runs("pc", n=2, **over)
    resumed.load_state_dict(_from_host(torch.load(tmp_path / "s.pt", weights_only=True)))
    for e in range(2, 4):
        resumed.play_episode(e)
        resumed.learn()
    for name, p in straight.engine.params.items():
        np.testing.assert_array_equal(resumed.engine.params[name], p)
    np.testing.assert_array_equal(resumed.buffers.data, straight.buffers.data)
    assert resumed.updates.tolist() == straight.updates.tolist()


def test_interrupted_grid_resumes_from_its_episode_checkpoints(tmp_path, monkeypatch):
    from pcneuro.runner import Interrupted

    monkeypatch.setattr(dqn_control, "CHECKPOINT_EVERY", 2)
    quick = dict(rule="pc,bp", preset="quick", settings={**TINY, "episodes": 5, "env": "CartPole-v1", "lr": 5e-3},
                 seeds=2, quiet=True, figure=False)
    whole = pcneuro.run("dqn_control", out=tmp_path / "whole.nc", **quick)
    saves, original = [], DQNControl.save_state

    def interrupt_after_three(self, state):  # chunk 0 (pc) saves episodes 2 and 4; chunk 1 stops after 2
        original(self, state)
        saves.append(state["episode"])
        if len(saves) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(DQNControl, "save_state", interrupt_after_three)
    out = tmp_path / "part.nc"
    with pytest.raises(Interrupted):
        pcneuro.run("dqn_control", out=out, **quick)
    started, original_simulate = [], DQNControl.simulate

    def watch(self, rule, settings, seeds, device, progress):
        state = self.saved_state()
        started.append((rule, None if state is None else state["episode"]))
        return original_simulate(self, rule, settings, seeds, device, progress)

    monkeypatch.setattr(DQNControl, "save_state", original)
    monkeypatch.setattr(DQNControl, "simulate", watch)
    resumed = pcneuro.run("dqn_control", out=out, resume=True, **quick)
    assert saves == [2, 4, 2] and started == [("bp", 2)]  # only the unfinished chunk, from its episode
    assert np.isfinite(whole.td_loss.isel(episode=-1).values).all()  # learning happened after the checkpoint
    for name in whole.data_vars:
        np.testing.assert_array_equal(whole[name].values, resumed[name].values, err_msg=name)


def test_bad_settings_are_one_line_errors():
    with pytest.raises(ValueError, match="batch_size=61"):
        pcneuro.runner.make_plan("dqn_control", preset="quick", settings={"batch_size": 61, "learn_after": 59})
    with pytest.raises(ValueError, match="buffer_size=100"):
        pcneuro.runner.make_plan("dqn_control", preset="quick", settings={"buffer_size": 100, "learn_after": 100})
    with pytest.raises(ValueError, match="env="):
        pcneuro.runner.make_plan("dqn_control", settings={"env": "Pong-v5"})


# -- end to end ------------------------------------------------------------------------------------------------
def test_small_run_writes_netcdf_and_figure(tmp_path):
    ds = pcneuro.run("dqn_control", preset="quick", settings={k: v for k, v in TINY.items()},
                     grid={"env": ["CartPole-v1", "MountainCar-v0"], "lr": [5e-3, 5e-4]}, seeds=2,
                     out=tmp_path / "d.nc", quiet=True)
    assert (tmp_path / "d.nc").is_file() and (tmp_path / "d.png").is_file()
    assert ds.running_reward.dims == ("rule", "seed", "env", "lr", "episode") and ds.sizes["episode"] == 4
    np.testing.assert_allclose(ds.running_reward.values, running_mean(ds.episode_return.values), rtol=1e-6)
    np.testing.assert_allclose(ds.mean_running_reward.values, ds.running_reward.mean("episode").values, rtol=1e-5)
    car = ds.episode_return.sel(env="MountainCar-v0").values
    assert ((car >= -200) & (car < 0)).all()
    assert not ds.diverged.values.any()
    assert np.isfinite(ds.td_loss.isel(episode=-1).values).all()  # every run learned by its last episode
    text = DQNControl.summary_table(ds)
    assert "MountainCar-v0" in text and "published" in text
