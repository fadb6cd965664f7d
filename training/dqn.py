"""DQN (Mnih et al. 2015): a replay, a target network, one update per ``train_frequency`` agent steps.

One iteration of ``learn`` is one vector step (``num_envs`` agent steps): act, step the games (a worker
thread samples the due updates' batches meanwhile), store the transitions, then one compiled call runs
those updates and picks the next greedy actions; the target network syncs every ``target_update`` steps.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from breakout_dqn import contract
from breakout_dqn.training.callbacks import crossed
from breakout_dqn.training.config import DQNConfig
from breakout_dqn.training.learners import DQNLearner, build_dqn_learner
from breakout_dqn.training.replay import ReplayBuffer, slots_per_env
from breakout_dqn.training.replay_storage import DurableStorage, ReplayStorageError
from breakout_dqn.training.run_directory import RunDirectory
from breakout_dqn.training.sampler import PrefetchSampler
from breakout_dqn.training.session import RunSession, generator

SAMPLING_SEED_OFFSET = 1  # replay sampling draws its own stream, apart from exploration's (seed + 0)


class DQN:
    """The learner, the replay and its sampler, and the loop; ``checkpoint``/``restore`` keep the replay exact."""

    def __init__(self, config: DQNConfig):
        self.config = config
        self.learner: DQNLearner = build_dqn_learner(config)
        self.sample_rng = generator(config.seed + SAMPLING_SEED_OFFSET, {})
        self.replay_cursor: int | None = None  # at the restored checkpoint, if its replay was durable
        self.learning_starts_at = config.learning_starts  # later after a resume that refills the replay
        self.replay: ReplayBuffer | None = None
        self.sampler: PrefetchSampler | None = None


    def restore(self, saved: Mapping[str, Any]) -> None:
        self.sample_rng = generator(self.config.seed + SAMPLING_SEED_OFFSET, saved.get("sample_rng_state", {}))
        self.replay_cursor = saved.get("replay_cursor")
        self.learning_starts_at = saved.get("learning_starts_at", self.config.learning_starts)

    def checkpoint(self, write: Callable[[dict[str, Any]], None]) -> None:
        """The replay writes in its order (``ReplayBuffer.checkpoint``); no sample is in flight meanwhile."""
        if self.sampler is not None:
            self.sampler.settle()
        own = {"sample_rng_state": self.sample_rng.bit_generator.state, "learning_starts_at": self.learning_starts_at}
        if self.replay is None:
            write({**own, "replay_cursor": None})
        else:
            self.replay.checkpoint(lambda cursor: write({**own, "replay_cursor": cursor}))

    def learn(self, session: RunSession) -> None:
        """Train until ``--steps``, a stop signal or "solved"; the final checkpoint included."""
        config, state, learner, games = self.config, session.state, self.learner, session.games
        self.replay = replay = open_replay(config, session.run, self, session.state.step)
        self.sampler = sampler = PrefetchSampler(replay, config.batch_size, self.sample_rng)
        try:
            observations = games.reset(seed=config.seed + state.step)
            greedy: np.ndarray | None = None  # greedy actions for `observations`, when already computed
            while session.running:
                step, epsilon = state.step, session.epsilon()
                if step < config.random_steps:
                    actions = session.explore.random(config.num_envs)
                else:
                    greedy = learner.act(contract.channels_last(observations)) if greedy is None else greedy
                    actions = session.explore(greedy, epsilon)
                due = self.updates_due(step)
                if due:
                    sampler.prefetch(due)  # sampled on a worker thread while the games step
                result = games.step(actions)
                sampler.settle()
                replay.add(observations[:, -1], result.actions, result.rewards, result.terminal,
                           result.state_opens_game, result.real)
                session.record(result, step)
                observations, state.step, greedy = result.observations, step + config.num_envs, None
                if due:  # the updates, then the next greedy actions with the updated network: one call
                    losses, mean_qs, greedy = learner.update_and_act(sampler.take(due),
                                                                     contract.channels_last(observations))
                    session.meter.add(losses, mean_qs)
                    state.updates += due
                if crossed(step, state.step, config.target_update):
                    learner.sync_target()
                if session.periodic(step, epsilon=epsilon, replay_size=len(replay)):
                    break
            session.release_games()
            session.save_checkpoint()
        finally:
            sampler.close()
            replay.close()

    def updates_due(self, step: int) -> int:
        """Gradient updates that fall due in the vector step from agent step ``step``."""
        assert self.replay is not None
        if step < self.learning_starts_at or not self.replay.can_sample():
            return 0
        frequency = self.config.train_frequency
        return (step + self.config.num_envs) // frequency - step // frequency


def open_replay(config: DQNConfig, run: RunDirectory, dqn: DQN, step: int) -> ReplayBuffer:
    """The replay: restored as the checkpoint left it, or new (then a resumed run refills it first)."""
    slots = slots_per_env(config.replay_capacity, config.num_envs)
    args = (config.replay_capacity, config.num_envs, config.n_step, config.gamma)
    if config.resume and config.durable_replay and dqn.replay_cursor is not None:
        try:
            storage = DurableStorage.open(run.replay, config.num_envs, slots, dqn.replay_cursor)
        except ReplayStorageError as error:
            print(f"replay not restored ({error}); starting an empty one", flush=True)
        else:
            replay = ReplayBuffer(*args, storage=storage, cursor=dqn.replay_cursor)
            replay.cut_episodes()  # the games restart: no n-step window may run across the resume
            print(f"replay restored: {len(replay):,} transitions", flush=True)
            return replay
    if config.resume:  # no replay to continue with: collect --learning-starts steps before learning again
        dqn.learning_starts_at = step + config.learning_starts
    if config.durable_replay:
        return ReplayBuffer(*args, storage=DurableStorage.create(run.replay, config.num_envs, slots))
    return ReplayBuffer(*args)
