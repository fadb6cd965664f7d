"""The DQN loop: act, step the games, store, learn, sync the target, log, checkpoint.

One iteration is one vector step (``num_envs`` agent steps). While the games step in ale-py's C++
threads, a worker thread samples the batches of the updates that fall due; the transitions are
stored; then one compiled call runs those updates and returns the greedy actions for the new
observations.
"""

from __future__ import annotations

import numpy as np

from breakout_dqn import contract
from breakout_dqn.training.config import TrainConfig
from breakout_dqn.training.replay import ReplayBuffer, check_fits_in_memory, slots_per_env
from breakout_dqn.training.replay_storage import DurableStorage, ReplayStorageError
from breakout_dqn.training.run_directory import RunDirectory
from breakout_dqn.training.sampler import PrefetchSampler
from breakout_dqn.training.session import LoopState, RunSession, crossed, epsilon_at, generator


def preflight(config: TrainConfig) -> None:
    """Refuse, before anything is built, a replay that will not fit in memory."""
    check_fits_in_memory(config.replay_capacity)


def run(session: RunSession) -> None:
    """Train until ``--steps`` (or a stop signal, or "solved"); the final checkpoint included."""
    config, state, learner, games = session.config, session.state, session.learner, session.games
    replay = open_replay(config, session.run, state)
    sample_rng = generator(config.seed + 1, state.sample_rng_state)  # replay sampling, on the sampler thread
    sampler = PrefetchSampler(replay, config.batch_size, sample_rng)

    def checkpoint() -> None:
        sampler.settle()
        state.sample_rng_state = sample_rng.bit_generator.state
        replay.storage.flush()  # the ring on disk, then the checkpoint that names its cursor, then its journal
        state.replay_cursor = replay.cursor if replay.storage.durable else None
        session.save_checkpoint()
        replay.storage.start_journal(replay.cursor)

    try:
        observations = games.reset(seed=config.seed + state.step)
        greedy: np.ndarray | None = None  # greedy actions for `observations`, when already computed
        while session.running:
            step, epsilon = state.step, epsilon_at(config, state.step)
            if step < config.random_steps:
                actions = session.rng.integers(0, contract.NUM_ACTIONS, size=config.num_envs)
            else:
                greedy = learner.act(contract.channels_last(observations)) if greedy is None else greedy
                actions = session.epsilon_greedy(greedy, epsilon)
            due = updates_due(config, step, replay, state.learning_starts_at)
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
            if session.periodic(step, epsilon, checkpoint, replay_size=len(replay)):
                break
        session.release_games()
        checkpoint()
    finally:
        sampler.close()
        replay.storage.close()
        session.close()


def open_replay(config: TrainConfig, run: RunDirectory, state: LoopState) -> ReplayBuffer:
    """The replay: restored as the checkpoint left it, or new (then a resumed run refills it first)."""
    slots = slots_per_env(config.replay_capacity, config.num_envs)
    args = (config.replay_capacity, config.num_envs, config.n_step, config.gamma)
    if config.resume and config.durable_replay and state.replay_cursor is not None:
        try:
            storage = DurableStorage.open(run.replay, config.num_envs, slots, state.replay_cursor)
        except ReplayStorageError as error:
            print(f"replay not restored ({error}); starting an empty one", flush=True)
        else:
            replay = ReplayBuffer(*args, storage=storage, cursor=state.replay_cursor)
            replay.cut_episodes()  # the games restart: no n-step window may run across the resume
            print(f"replay restored: {len(replay):,} transitions", flush=True)
            return replay
    if config.resume:  # no replay to continue with: collect --learning-starts steps before learning again
        state.learning_starts_at = state.step + config.learning_starts
    if config.durable_replay:
        return ReplayBuffer(*args, storage=DurableStorage.create(run.replay, config.num_envs, slots))
    return ReplayBuffer(*args)


def updates_due(config: TrainConfig, step: int, replay: ReplayBuffer, learning_starts_at: int) -> int:
    """Gradient updates that fall due in this vector step (one per ``train_frequency`` agent steps)."""
    if step < learning_starts_at or not replay.can_sample():
        return 0
    return (step + config.num_envs) // config.train_frequency - step // config.train_frequency
