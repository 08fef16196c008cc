"""DQN on classic control: prospective configuration learns from reward (Song et al. 2024, fig 4k).

Claim (specs/benchmarks.md §3.6): prospective configuration also helps when the error signal comes
from reward, through TD Q-learning: PC earns higher episode rewards than BP. Published (fig 4k, mean
running reward at each rule's best lr, 3 seeds): CartPole-v1 PC ≈315 (lr 5e-3) vs BP ≈263 (5e-4);
Acrobot-v1 PC ≈−150 vs BP ≈−225 (both 1e-3); MountainCar-v0 PC ≈−189 (5e-3) vs BP ≈−198 (5e-4).
PC's best lr is ~10× BP's on CartPole and MountainCar. Reproduced here (docs/reproduction_benchmarks.md):
Acrobot and MountainCar at 3,000 episodes; CartPole at the paper's scale is not (PC 197 ± 60 at 5e-3
below BP 306 ± 15 at 5e-4; BP matches at every lr, PC at four of its six).

Protocol (one run = one (environment, rule, lr, seed)):
  * gymnasium CartPole-v1, Acrobot-v1 or MountainCar-v0 (``env``, a structural grid axis), each run's
    environment seeded once, at its first reset, from (seed, "env"); 10,000 episodes per run;
  * acting: the Q-net in evaluation mode (value nodes transparent), ε-greedy with
    ε = max(0.01, 0.08 − 0.01·e/200) at the 0-based episode e, exploratory actions uniform, greedy
    ties to the first index; exploration draws from (seed, "explore");
  * observations normalised per run and dimension by Welford running mean and population variance,
    updated with every observed state (the first and the final one included) *before* that state
    is normalised; input = (s − mean)/std, the whole std vector replaced by ones when any of its
    components is 0; transitions stored normalised, rewards raw;
  * replay: a FIFO buffer of 50,000 transitions (s, a, r, s′, mask) per run; once it holds > 2,000,
    10 updates after each episode, each on 60 transitions drawn uniformly without replacement from
    (seed, "replay");
  * TD target y = r + 0.98·max_a′ Q(s′, a′)·mask from the online net itself (no target network),
    detached; mask = 0 at termination and at time-limit truncation; loss ½Σ_batch (Q(s, a) − y)² on
    the taken action only (the engine's output mask: the other outputs get no error);
  * logged per episode: its return and the running reward (mean return of the last ≤ 200 episodes);
    per-run scalar = the running reward's mean over all episodes; best lr per (environment, rule) =
    the highest across-seed mean.

Network: obs → Linear(128) → value node → Sigmoid → Linear(128→128) → VN → Sigmoid →
Linear(128→n_actions), with biases, PyTorch's default initialisation (uniform ±1/√fan_in) from
(seed, "init"). PC: T = 32 inference steps, η_x = 0.05, no discount (d = 1), weights at the last step;
BP: the same net without value nodes, T = 1. Plain SGD, lr grid {1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2};
3 seeds.

Batching: the runs of one environment and rule (all lrs and seeds) share one engine and act by one
batched forward over the run axis. Each run has its own gymnasium environment, normaliser, replay
buffer and random streams (numpy PCG64 generators seeded by ``stream_seed(seed, purpose)``: drawing
60 of 50,000 without replacement costs ~15 µs there, against ~300 µs for a torch ``randperm``). The
runs play their episodes in rounds: every run plays episode e to its
end (a run whose episode has ended stops stepping and waits), then the runs whose buffers are ready
take their 10 updates together (the others get an all-zero output mask, hence exactly zero change),
then all start episode e + 1. Nothing is shared between runs, so a run's numbers are those of its
own sequential protocol, whichever runs share its call; the rounds only cap the number of batched
update calls at 10 per episode (not 10 per episode per run). Long runs checkpoint at round
boundaries (engine, buffers, normalisers, generator and environment random states, curves so far)
every :data:`CHECKPOINT_EVERY` episodes, so ``--resume`` continues mid-run with the same bits.

Reference quirks (specs/benchmarks.md §5) that apply, as pcneuro implements them:
  * Q11 (kept): no target network, the published choice; ``target_sync`` = K > 0 adds one, copied
    from the online net after every K updates of the run;
  * Q12 (kept): time-limit truncation is terminal (mask 0), and stored states keep the normalisation
    statistics of their storage time; ``bootstrap_truncation=True`` bootstraps on truncation (mask 1
    unless terminated). Departure inside Q12: the reference normalised and stored s′ before adding it
    to the statistics (adding it at the next step); pcneuro adds s′ first, then normalises and stores it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import torch

from pcneuro.engine import Activation, Linear
from pcneuro.engine.activations import apply as apply_activation
from pcneuro.paradigm import Hyper, Measure, Paradigm, Preset, stack_settings
from pcneuro.paradigms._supervised import mlp, seed_sem, sgd_engine
from pcneuro.plotting import line_style
from pcneuro.registry import register

Tensor = torch.Tensor


@dataclass(frozen=True)
class Environment:
    """A classic-control task (specs/benchmarks.md §2): observation size, actions, time limit."""

    obs_dim: int
    n_actions: int
    time_limit: int


ENVIRONMENTS = {
    "CartPole-v1": Environment(4, 2, 500),
    "Acrobot-v1": Environment(6, 3, 500),
    "MountainCar-v0": Environment(2, 3, 200),
}
LEARNING_RATES = (1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2)
HIDDEN = 128
#: ε = max(EPSILON_END, EPSILON_START − EPSILON_STEP·e/EPSILON_EVERY) at the 0-based episode e (§3.6)
EPSILON_START, EPSILON_END, EPSILON_STEP, EPSILON_EVERY = 0.08, 0.01, 0.01, 200
RUNNING_WINDOW = 200
#: episodes between mid-run checkpoints (each holds every run's replay buffer)
CHECKPOINT_EVERY = 250
LABELS = {"pc": "PC", "bp": "BP"}
#: fig 4k, mean running reward per lr (specs/benchmarks.md §3.6)
PUBLISHED = {
    "CartPole-v1": {"pc": dict(zip(LEARNING_RATES, (21, 73, 137, 315, 22, 9))),
                    "bp": dict(zip(LEARNING_RATES, (175, 263, 10, 13, 15, 10)))},
    "Acrobot-v1": {"pc": dict(zip(LEARNING_RATES, (-240, -212, -150, -325, -500, -500))),
                   "bp": dict(zip(LEARNING_RATES, (-255, -355, -225, -490, -500, -500)))},
    "MountainCar-v0": {"pc": dict(zip(LEARNING_RATES, (-200, -198, -195, -189, -200, -200))),
                       "bp": dict(zip(LEARNING_RATES, (-200, -198, -198, -199, -200, -200)))},
}


# -- the protocol's pieces (each testable on its own) ----------------------------------------------------
def epsilon(episode: int) -> float:
    """Exploration rate at the 0-based ``episode``: 0.08 falling by 0.01 per 200 episodes to 0.01."""
    return max(EPSILON_END, EPSILON_START - EPSILON_STEP * episode / EPSILON_EVERY)


def q_network(obs_dim: int, n_actions: int):
    """obs → 128 → 128 → n_actions, biased Linear → value node → Sigmoid blocks, linear output."""
    return mlp((obs_dim, HIDDEN, HIDDEN, n_actions), activation="sigmoid", bias=True)


def running_mean(returns: np.ndarray, window: int = RUNNING_WINDOW) -> np.ndarray:
    """Mean of the last ≤ ``window`` values along the last axis, at every position."""
    c = np.cumsum(np.asarray(returns, dtype=np.float64), axis=-1)
    n = returns.shape[-1]
    k = np.arange(n)
    lo = k - window  # the sum up to k minus the sum up to k − window
    before = np.where(lo >= 0, np.take(c, np.clip(lo, 0, None), axis=-1), 0.0)
    return (c - before) / np.minimum(k + 1, window)


def transition_mask(terminated: np.ndarray, truncated: np.ndarray, bootstrap_truncation: bool) -> np.ndarray:
    """0 where the episode ended (terminated, or truncated unless bootstrapping on truncation), else 1."""
    ended = np.asarray(terminated, bool) | (np.asarray(truncated, bool) & (not bootstrap_truncation))
    return np.where(ended, 0.0, 1.0)


def td_target(q_next: Tensor, reward: Tensor, mask: Tensor, gamma: Tensor) -> Tensor:
    """y = r + γ·max_a′ Q(s′, a′)·mask, detached: ``q_next`` [R, B, A], ``reward``/``mask`` [R, B],
    ``gamma`` [R] → [R, B]."""
    return (reward + gamma.unsqueeze(1) * q_next.detach().amax(dim=-1) * mask).detach()


def q_values(spec, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
    """Evaluation-mode Q values [R, B, A] of the stacked MLP ``spec`` (value nodes transparent) for
    per-run inputs ``x`` [R, B, dim]: ``engine.forward`` with fused bias products (fewer ops per
    environment step). The parameters are in the engine's run-first layout (its 128×128 layer never
    suits the run-last one)."""
    h = x
    for i, layer in enumerate(spec.layers):
        if isinstance(layer, Linear):
            w = params[f"{i}.weight"].transpose(1, 2)
            h = torch.baddbmm(params[f"{i}.bias"].unsqueeze(1), h, w) if layer.bias else torch.bmm(h, w)
        elif isinstance(layer, Activation):
            h = apply_activation(layer.name, h)
        else:
            raise ValueError(f"q_values takes Linear and Activation layers, got {type(layer).__name__}")
    return h


def dqn_update(engine, batch: Tensor, ready: Tensor, gamma: Tensor, obs_dim: int, n_actions: int,
               q_next_of=None) -> Tensor:
    """One TD update of every ready run on ``batch`` [R, B, 2·obs_dim + 3] (rows s, s′, a, r, mask);
    ``ready`` [R] bool: the other runs get an all-zero output mask (no change). The target comes from
    ``q_next_of(s′)`` (default the online net as it is now, ``engine.forward``); the loss is
    ½Σ(Q(s, a) − y)² on the taken action only. Returns the pre-update loss per run [R] (0 for runs not ready)."""
    D = obs_dim
    s, s_next = batch[..., :D], batch[..., D:2 * D]
    action = batch[..., 2 * D].long()
    reward, mask = batch[..., 2 * D + 1], batch[..., 2 * D + 2]
    with torch.no_grad():
        q_next = (q_next_of or engine.forward)(s_next)
        y_taken = td_target(q_next, reward, mask, gamma)
    taken = torch.nn.functional.one_hot(action, n_actions).to(batch.dtype)  # [R, B, A]
    y = taken * y_taken.unsqueeze(-1)  # the other outputs' targets are masked out
    output_mask = taken * ready.to(batch.dtype).reshape(-1, 1, 1)
    return engine.train_batch(s, y, output_mask=output_mask).loss0


class RunningNorm:
    """Per-run, per-dimension Welford mean and population variance (host, float64)."""

    def __init__(self, n_runs: int, dim: int):
        self.count = np.zeros(n_runs, dtype=np.int64)
        self.mean = np.zeros((n_runs, dim))
        self.m2 = np.zeros((n_runs, dim))

    def update(self, obs: np.ndarray, runs: np.ndarray) -> None:
        """Add ``obs[j]`` [len(runs), dim] to run ``runs[j]``'s statistics."""
        x = np.asarray(obs, dtype=np.float64)
        n = self.count[runs] + 1
        old = self.mean[runs]
        delta = x - old
        new = old + delta / n[:, None]
        self.m2[runs] += delta * (x - new)
        self.mean[runs] = new
        self.count[runs] = n

    def std(self, runs: np.ndarray) -> np.ndarray:
        """Population std per run; a run whose std has a 0 component gets all ones."""
        std = np.sqrt(self.m2[runs] / np.maximum(self.count[runs], 1)[:, None])
        return np.where((std == 0).any(axis=1, keepdims=True), 1.0, std)

    def normalize(self, obs: np.ndarray, runs: np.ndarray) -> np.ndarray:
        return (np.asarray(obs, dtype=np.float64) - self.mean[runs]) / self.std(runs)

    def state(self) -> Dict[str, np.ndarray]:
        return {"count": self.count.copy(), "mean": self.mean.copy(), "m2": self.m2.copy()}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        self.count, self.mean, self.m2 = (np.array(state[k]) for k in ("count", "mean", "m2"))


class ReplayBuffers:
    """One FIFO buffer per run (host): rows (s, s′, a, r, mask) packed in one float array
    [R, capacity, 2·dim + 3], so a sampled batch of all runs is one device transfer."""

    def __init__(self, n_runs: int, capacity: int, dim: int, dtype=np.float32):
        self.dim, self.capacity = dim, capacity
        self.data = np.zeros((n_runs, capacity, 2 * dim + 3), dtype=dtype)
        self.pos = np.zeros(n_runs, dtype=np.int64)
        self.count = np.zeros(n_runs, dtype=np.int64)

    def add(self, runs: np.ndarray, s: np.ndarray, a: np.ndarray, r: np.ndarray, s_next: np.ndarray,
            mask: np.ndarray) -> None:
        """Store one transition for each of ``runs`` (the oldest is overwritten once full)."""
        rows = np.concatenate([s, s_next, a[:, None], r[:, None], mask[:, None]], axis=1)
        self.data[runs, self.pos[runs]] = rows
        self.pos[runs] = (self.pos[runs] + 1) % self.capacity
        self.count[runs] = np.minimum(self.count[runs] + 1, self.capacity)

    def sample(self, run: int, rng: np.random.Generator, size: int) -> np.ndarray:
        """``size`` of run ``run``'s stored transitions, uniformly without replacement."""
        return self.data[run, rng.choice(int(self.count[run]), size, replace=False)]

    def state(self) -> Dict[str, np.ndarray]:
        n = int(self.count.max(initial=0))  # slots beyond every run's count are still zero
        return {"data": self.data[:, :n].copy(), "pos": self.pos.copy(), "count": self.count.copy()}

    def load(self, state: Mapping[str, np.ndarray]) -> None:
        n = state["data"].shape[1]
        self.data[:] = 0
        self.data[:, :n] = state["data"]
        self.pos, self.count = np.array(state["pos"]), np.array(state["count"])


def _rng(seed: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed))


def make_env(env_id: str):
    """A gymnasium classic-control environment with its time limit (the passive checker off)."""
    import gymnasium

    return gymnasium.make(env_id, disable_env_checker=True)


class DQNRuns:
    """The state of one ``simulate`` call: R runs of one environment and rule stepped together
    (one engine, and per run an environment, a normaliser, a replay buffer and random streams)."""

    def __init__(self, paradigm: Paradigm, rule: str, settings: Sequence[Mapping[str, Any]], seeds: Sequence[int],
                 device):
        s0 = settings[0]
        self.env_id = str(s0["env"])
        self.task = ENVIRONMENTS[self.env_id]
        self.n_runs = R = len(seeds)
        self.device = torch.device(device)
        self.dtype = paradigm.torch_dtype()
        self.engine = sgd_engine(paradigm, rule, q_network(self.task.obs_dim, self.task.n_actions), settings, seeds,
                                 device, init="torch")
        self.gamma = stack_settings(settings, "gamma", self.dtype).to(self.device)
        self.batch_size = int(s0["batch_size"])
        self.learn_after = int(s0["learn_after"])
        self.updates_per_episode = int(s0["updates_per_episode"])
        self.bootstrap_truncation = bool(s0["bootstrap_truncation"])
        self.target_sync = int(s0["target_sync"])
        self.target = ({n: p.clone() for n, p in self.engine.params.items()} if self.target_sync > 0 else None)
        self.updates = np.zeros(R, dtype=np.int64)  # per run, TD updates taken (target-network syncs)
        self.envs = [make_env(self.env_id) for _ in range(R)]
        self.env_seeds = [paradigm.stream_seed(s, "env") for s in seeds]
        self.seeded = [False] * R
        self.explore = [_rng(paradigm.stream_seed(s, "explore")) for s in seeds]
        self.replay = [_rng(paradigm.stream_seed(s, "replay")) for s in seeds]
        self.norm = RunningNorm(R, self.task.obs_dim)
        self.buffers = ReplayBuffers(R, int(s0["buffer_size"]), self.task.obs_dim,
                                     dtype=np.float32 if self.dtype == torch.float32 else np.float64)

    # -- acting -----------------------------------------------------------------------------------------
    def greedy(self, x: np.ndarray) -> np.ndarray:
        """Each run's greedy action for its input row ``x`` [R, dim] (one batched eval-mode forward;
        ties go to the first index): the one host read per environment step."""
        inp = torch.from_numpy(x).to(device=self.device, dtype=self.dtype).unsqueeze(1)
        return q_values(self.engine.spec, self.engine.params, inp)[:, 0].argmax(dim=-1).cpu().numpy()

    def _reset(self, r: int) -> np.ndarray:
        if self.seeded[r]:
            return self.envs[r].reset()[0]
        self.seeded[r] = True
        return self.envs[r].reset(seed=self.env_seeds[r])[0]

    def play_episode(self, episode: int) -> np.ndarray:
        """Every run plays one episode (runs whose episode ended wait for the others); returns [R]."""
        R, A = self.n_runs, self.task.n_actions
        eps = epsilon(episode)
        everyone = np.arange(R)
        obs = np.stack([self._reset(r) for r in range(R)])
        self.norm.update(obs, everyone)  # update first, then normalise
        x = self.norm.normalize(obs, everyone)
        returns = np.zeros(R)
        active = everyone
        while active.size:
            greedy = self.greedy(x).tolist()
            actions, steps = [], []
            for r in active.tolist():
                rng = self.explore[r]
                a = int(rng.integers(A)) if rng.random() < eps else greedy[r]
                actions.append(a)
                steps.append(self.envs[r].step(a))
            next_obs = np.array([step[0] for step in steps], dtype=np.float64)
            rewards = np.array([step[1] for step in steps], dtype=np.float64)
            terminated = np.array([step[2] for step in steps], dtype=bool)
            truncated = np.array([step[3] for step in steps], dtype=bool)
            actions = np.array(actions, dtype=np.float64)
            self.norm.update(next_obs, active)
            x_next = self.norm.normalize(next_obs, active)
            mask = transition_mask(terminated, truncated, self.bootstrap_truncation)
            self.buffers.add(active, x[active], actions, rewards, x_next, mask)
            x[active] = x_next
            returns[active] += rewards
            active = active[~(terminated | truncated)]
        return returns

    # -- learning -------------------------------------------------------------------------------------
    def ready(self) -> np.ndarray:
        """[R] bool: the runs whose buffers hold more than ``learn_after`` transitions."""
        return self.buffers.count > self.learn_after

    def _q_next_of(self):
        spec, params = self.engine.spec, self.engine.params if self.target is None else self.target
        return lambda s_next: q_values(spec, params, s_next)

    def learn(self) -> Tensor:
        """The ready runs' updates after an episode; returns each run's mean pre-update TD loss per
        sampled transition [R] (a device tensor; NaN for runs not ready)."""
        ready = self.ready()
        R = self.n_runs
        if not ready.any():
            return torch.full((R,), float("nan"), dtype=self.dtype, device=self.device)
        ready_dev = torch.from_numpy(ready).to(self.device)
        total = torch.zeros(R, dtype=self.dtype, device=self.device)
        width = self.buffers.data.shape[2]
        runs = np.flatnonzero(ready)
        for _ in range(self.updates_per_episode):
            batch = np.zeros((R, self.batch_size, width), dtype=self.buffers.data.dtype)
            for r in runs:
                batch[r] = self.buffers.sample(r, self.replay[r], self.batch_size)
            batch_dev = torch.from_numpy(batch).to(self.device)
            total += dqn_update(self.engine, batch_dev, ready_dev, self.gamma, self.task.obs_dim,
                                self.task.n_actions, self._q_next_of())
            self.updates[runs] += 1
            if self.target is not None:
                self._sync_target(ready & (self.updates % self.target_sync == 0))
        mean = total / (self.updates_per_episode * self.batch_size)
        return torch.where(ready_dev, mean, torch.full_like(mean, float("nan")))

    def _sync_target(self, due: np.ndarray) -> None:
        if not due.any():
            return
        d = torch.from_numpy(due).to(self.device)
        for name, p in self.engine.params.items():
            self.target[name] = torch.where(d.reshape(-1, *([1] * (p.ndim - 1))), p, self.target[name])

    # -- checkpoints (at round boundaries: every environment is between episodes) ------------------------
    def state_dict(self) -> Dict[str, Any]:
        return {
            "engine": self.engine.state_dict(),
            "target": None if self.target is None else {n: p.clone() for n, p in self.target.items()},
            "updates": self.updates.copy(), "norm": self.norm.state(), "buffers": self.buffers.state(),
            "explore": [json.dumps(g.bit_generator.state) for g in self.explore],
            "replay": [json.dumps(g.bit_generator.state) for g in self.replay],
            "env_rng": [json.dumps(e.unwrapped.np_random.bit_generator.state) if done else ""
                        for e, done in zip(self.envs, self.seeded)],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.engine.load_state_dict(state["engine"])
        if self.target is not None:
            self.target = {n: p.to(self.device) for n, p in state["target"].items()}
        self.updates = np.array(state["updates"])
        self.norm.load(state["norm"])
        self.buffers.load(state["buffers"])
        for g, st in zip(self.explore, state["explore"]):
            g.bit_generator.state = json.loads(st)
        for g, st in zip(self.replay, state["replay"]):
            g.bit_generator.state = json.loads(st)
        for r, st in enumerate(state["env_rng"]):
            if st:
                generator = np.random.Generator(np.random.PCG64())
                generator.bit_generator.state = json.loads(st)
                self.envs[r].unwrapped.np_random = generator
                self.seeded[r] = True


def _per_env(ds) -> List[Tuple[str, Any]]:
    """(environment, its dataset with an ``lr`` dim) for each environment in ``ds`` (a fixed
    ``env`` or ``lr`` becomes a length-1 dim)."""
    settings = json.loads(ds.attrs["config"])["settings"] if "config" in ds.attrs else {}
    for axis in ("env", "lr"):
        if axis not in ds.dims:
            ds = ds.expand_dims({axis: [settings.get(axis, DQNControl.hyperparameters[axis].default)]})
    return [(str(e), ds.sel(env=e)) for e in ds["env"].values]


def best_lrs(ds, scalar: str = "mean_running_reward") -> Dict[Tuple[str, str], float]:
    """Per (environment, rule), the lr with the highest across-seed mean of ``scalar``."""
    out = {}
    for env, sub in _per_env(ds):
        mean = sub[scalar].mean("seed")
        for rule in sub["rule"].values:
            m = mean.sel(rule=rule).values
            out[(env, str(rule))] = float(sub["lr"].values[int(np.argmax(np.where(np.isnan(m), -np.inf, m)))])
    return out


@register
class DQNControl(Paradigm):
    name = "dqn_control"
    title = "DQN on classic control: mean running reward vs learning rate"
    tags = ("benchmark", "reinforcement-learning", "gymnasium")
    citation = "Song et al. (2024) Nat Neurosci, fig 4k"
    figure = "Song et al. 2024, fig 4k"
    version = "1"
    rules = ("pc", "bp")
    dtype = "float32"
    host_environment = True
    hyperparameters = {
        "env": Hyper("CartPole-v1", "gymnasium environment", type=str, choices=tuple(ENVIRONMENTS), structural=True),
        "lr": Hyper(5e-3, "SGD learning rate", min=0.0),
        "T": Hyper(32, "inference steps per update (pc; bp takes 1)", type=int, min=1, structural=True),
        "latent_lr": Hyper(0.05, "latent learning rate η_x (pc)", min=0.0),
        "latent_discount": Hyper(1.0, "factor d on η_x when F does not decrease (pc; 1: none)", min=0.0, max=1.0),
        "gamma": Hyper(0.98, "discount factor of the TD target", min=0.0, max=1.0),
        "episodes": Hyper(10_000, "episodes per run", type=int, min=1, structural=True),
        "buffer_size": Hyper(50_000, "replay buffer capacity (FIFO), transitions", type=int, min=1,
                             structural=True),
        "learn_after": Hyper(2_000, "updates start once the buffer holds more than this many transitions",
                             type=int, min=0, structural=True),
        "updates_per_episode": Hyper(10, "TD updates after each episode", type=int, min=1, structural=True),
        "batch_size": Hyper(60, "transitions per update (uniform, without replacement)", type=int, min=1,
                            structural=True),
        "target_sync": Hyper(0, "sync a target network every this many updates (0: none, the TD target "
                                "uses the online net; Q11)", type=int, min=0, structural=True),
        "bootstrap_truncation": Hyper(False, "bootstrap on time-limit truncation (default: terminal; Q12)",
                                      type=bool, structural=True),
    }
    grid = {"env": tuple(ENVIRONMENTS), "lr": LEARNING_RATES}
    default_seeds = 3
    presets = {
        "quick": Preset(seeds=2, settings={"episodes": 12, "buffer_size": 2000, "learn_after": 100,
                                           "updates_per_episode": 4, "batch_size": 32, "T": 8},
                        grid={"env": tuple(ENVIRONMENTS), "lr": (5e-3, 5e-4)},
                        doc="seconds on a CPU: 12 episodes, learning from 100 stored transitions, "
                            "4 updates of 32, T = 8, two lrs, 2 seeds"),
        "paper": Preset(seeds=3, doc="the published scale: 3 environments, six lrs, 3 seeds, 10,000 episodes"),
    }
    measures = {
        "episode_return": Measure(("episode",), "return (undiscounted reward sum) of each episode"),
        "running_reward": Measure(("episode",), "running reward (mean return of the last ≤ 200 episodes)"),
        "td_loss": Measure(("episode",), "mean TD loss ½(Q(s,a)−y)² per sampled transition over the episode's "
                                         "updates, before each update (NaN before learning starts)",
                           nan_is_empty=True),
        "mean_running_reward": Measure((), "mean running reward over all episodes"),
        "diverged": Measure((), "whether the run produced a non-finite TD loss", "1"),
    }
    main_measure = "mean_running_reward"

    @classmethod
    def check_settings(cls, settings: Mapping[str, Any]) -> None:
        if settings["batch_size"] > settings["learn_after"] + 1:
            raise ValueError(f"batch_size={settings['batch_size']} exceeds the transitions stored when learning "
                             f"starts (learn_after + 1 = {settings['learn_after'] + 1})")
        if settings["buffer_size"] <= settings["learn_after"]:
            raise ValueError(f"buffer_size={settings['buffer_size']} must exceed learn_after="
                             f"{settings['learn_after']}, or learning never starts")

    def coords(self, settings: Mapping[str, Any]) -> Dict[str, Sequence[Any]]:
        return {"episode": list(range(int(settings["episodes"])))}

    def n_progress_steps(self, settings: Mapping[str, Any]) -> int:
        return int(settings["episodes"])

    def bytes_per_run(self, settings: Mapping[str, Any]) -> int:
        """Device memory: parameters (~17–18 k floats) about six times over (weights, target copy,
        gradients, new values), one update's activations, latents and gradients about ten times, and
        the [episodes] TD-loss curve. The replay buffers live on the host."""
        task = ENVIRONMENTS[settings["env"]]
        params = (task.obs_dim + 1) * HIDDEN + (HIDDEN + 1) * HIDDEN + (HIDDEN + 1) * task.n_actions
        batch = int(settings["batch_size"]) * (2 * task.obs_dim + 3 + 2 * HIDDEN + task.n_actions)
        return 4 * (6 * params + 10 * batch + int(settings["episodes"]))

    @classmethod
    def prepare(cls, settings: Sequence[Mapping[str, Any]]) -> None:
        """gymnasium must be importable (classic control runs offline); fail before anything is written."""
        try:
            import gymnasium  # noqa: F401
        except ImportError:
            raise ModuleNotFoundError("dqn_control needs gymnasium: pip install gymnasium") from None
        for env_id in sorted({s["env"] for s in settings}):
            make_env(env_id).close()

    # -- the protocol ----------------------------------------------------------------------------------
    def simulate(self, rule, settings, seeds, device, progress):
        runs = DQNRuns(self, rule, settings, seeds, device)
        R, episodes = len(seeds), int(settings[0]["episodes"])
        returns = np.zeros((R, episodes))
        td_loss = torch.full((R, episodes), float("nan"), dtype=runs.dtype, device=runs.device)
        diverged = torch.zeros(R, dtype=torch.bool, device=runs.device)
        start = 0
        state = self.saved_state()
        if state is not None:  # resume at the last checkpointed episode boundary
            runs.load_state_dict(state["runs"])
            start = int(state["episode"])
            returns[:, :start] = state["returns"]
            td_loss[:, :start] = state["td_loss"].to(runs.device)
            diverged = state["diverged"].to(runs.device)
            progress(start)
        for episode in range(start, episodes):
            returns[:, episode] = runs.play_episode(episode)
            loss = runs.learn()
            td_loss[:, episode] = loss
            diverged |= ~torch.isfinite(loss) & torch.from_numpy(runs.ready()).to(runs.device)
            progress(1)
            done = episode + 1
            if done % CHECKPOINT_EVERY == 0 and done < episodes:
                self.save_state({"runs": runs.state_dict(), "episode": done, "returns": returns[:, :done].copy(),
                                 "td_loss": td_loss[:, :done], "diverged": diverged})
        running = running_mean(returns)
        float_type = np.float32 if runs.dtype == torch.float32 else np.float64
        return {"episode_return": returns.astype(float_type), "running_reward": running.astype(float_type),
                "td_loss": td_loss.cpu().numpy(), "mean_running_reward": running.mean(axis=1).astype(float_type),
                "diverged": diverged.cpu().numpy()}

    # -- summary -------------------------------------------------------------------------------------
    @classmethod
    def summary_table(cls, ds) -> str:
        scalar = "mean_running_reward"
        best = best_lrs(ds, scalar)
        lines = [f"{ds[scalar].attrs.get('long_name', scalar)} per environment, rule and lr: mean ± SEM over "
                 f"{ds.sizes['seed']} seed(s); * = best lr (highest seed mean); published (fig 4k) below"]
        for env, sub in _per_env(ds):
            lrs = [float(v) for v in sub["lr"].values]
            mean, sem = sub[scalar].mean("seed"), seed_sem(sub[scalar])
            rows = [[env, *(f"{lr:g}" for lr in lrs), "best lr"]]
            for rule in (str(r) for r in sub["rule"].values):
                cells = [LABELS.get(rule, rule)]
                for lr in lrs:
                    star = "*" if lr == best[(env, rule)] else ""
                    m, e = float(mean.sel(rule=rule, lr=lr)), float(sem.sel(rule=rule, lr=lr))
                    cells.append(f"{m:.1f}±{e:.1f}{star}")
                rows.append([*cells, f"{best[(env, rule)]:g}"])
                pub = PUBLISHED.get(env, {}).get(rule)
                if pub:
                    rows.append(["  published", *(f"{pub[lr]:g}" if lr in pub else "" for lr in lrs), ""])
            widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
            lines.append("")
            lines.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)
        return "\n".join(lines)

    @classmethod
    def summary_plot(cls, ds, path):
        """Fig 4k: per environment, the running reward over episodes at each rule's best lr (top;
        every 100th episode for long runs) and the mean running reward against lr (bottom)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from pcneuro.plotting import save_figure

        envs = _per_env(ds)
        best = best_lrs(ds)
        fig, axes = plt.subplots(2, len(envs), figsize=(max(4.2 * len(envs), 6.0), 6.6), squeeze=False)
        n = ds.sizes["episode"]
        every = max(1, n // 100)
        for col, (env, sub) in enumerate(envs):
            top, bottom = axes[0, col], axes[1, col]
            for k, rule in enumerate(str(r) for r in sub["rule"].values):
                color, name = f"C{k}", LABELS.get(rule, rule)
                lr = best[(env, rule)]
                curve = sub["running_reward"].sel(rule=rule, lr=lr).isel(episode=slice(None, None, every))
                m, s = curve.mean("seed"), seed_sem(curve)
                x = curve["episode"].values
                style, lw = line_style(k)  # coinciding rules (no learning yet) stay visible
                top.plot(x, m.values, color=color, linestyle=style, linewidth=lw, label=f"{name} (lr {lr:g})")
                top.fill_between(x, (m - s).values, (m + s).values, color=color, alpha=0.2, linewidth=0)
                scalar = sub["mean_running_reward"].sel(rule=rule)
                lrs = sub["lr"].values
                bottom.errorbar(lrs, scalar.mean("seed").values, yerr=seed_sem(scalar).values, color=color, marker="o",
                                capsize=3, linestyle=style, linewidth=lw, label=name)
                pub = PUBLISHED.get(env, {}).get(rule)
                if pub:
                    xs = sorted(pub)
                    bottom.plot(xs, [pub[v] for v in xs], color=color, marker="s", markerfacecolor="none",
                                linestyle=":", label=f"{name}, published")
            top.set_title(env)
            top.set_xlabel("episode")
            top.set_ylabel("running reward")
            bottom.set_xscale("log")
            bottom.set_xlabel("learning rate")
            bottom.set_ylabel("mean running reward")
            for ax in (top, bottom):
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
        fig.suptitle(f"{cls.title}\n{cls.figure}: mean ± SEM over {ds.sizes['seed']} seed(s); curves at each "
                     f"rule's best lr", fontsize=9)
        fig.tight_layout()
        return save_figure(fig, path)


__all__ = ["DQNControl", "DQNRuns", "ENVIRONMENTS", "PUBLISHED", "ReplayBuffers", "RunningNorm", "dqn_update",
           "epsilon", "q_network", "q_values", "running_mean", "td_target", "transition_mask"]
