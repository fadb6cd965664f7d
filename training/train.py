"""The DQN training loop: act, step the games, store, learn, sync, log, checkpoint.

One iteration is one vector step (``num_envs`` agent steps). While the games step in ale-py's C++
threads, a worker thread samples the batches of the updates that fall due; the transitions are
stored; then one compiled call runs those updates and returns the greedy actions for the new
observations. Everything a user sees lands in ``--out`` (``training.run_directory``).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from breakout_dqn import atari, contract
from training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from training.config import TrainConfig, save_config
from training.episodes import EpisodeStats
from training.io import atomic_path, atomic_write_text
from training.replay import ReplayBuffer, check_fits_in_memory, slots_per_env
from training.replay_storage import DurableStorage, ReplayStorageError
from training.run_directory import RunDirectory
from training.sampler import PrefetchSampler

if TYPE_CHECKING:  # the learners import Keras, which the CLI loads only once the flags are checked
    from training.learners import Learner


@dataclass
class LoopState:
    """Everything besides the learner's arrays and the replay that ``--resume`` restores."""

    step: int = 0
    updates: int = 0
    games: int = 0
    lives: int = 0
    recent_scores: list[float] = field(default_factory=list)
    recent_life_rewards: list[float] = field(default_factory=list)
    rng_state: Mapping[str, Any] = field(default_factory=dict)
    sample_rng_state: Mapping[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    solved_at_step: int | None = None
    replay_cursor: int | None = None  # slots per env in the replay at the checkpoint (None: not durable)
    learning_starts_at: int = 0  # the agent step of the first update (later after a replay refill)


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def epsilon_at(config: TrainConfig, step: int) -> float:
    """Linear decay from ``epsilon_start`` at step 0 to ``epsilon_end`` at ``epsilon_decay_steps``."""
    fraction = min(1.0, step / config.epsilon_decay_steps)
    return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)


def crossed(before: int, after: int, period: int) -> bool:
    """A multiple of ``period`` lies in ``(before, after]``."""
    return after // period > before // period


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; return the final evaluation summary."""
    run = RunDirectory(Path(config.out))
    run.prepare(config.resume)
    check_fits_in_memory(config.replay_capacity)
    import keras  # deferred: bad flags and pre-flight errors are reported without loading a backend

    keras.utils.set_random_seed(config.seed)
    learner, state = _restore(config, run)
    replay = _open_replay(config, run, state)
    save_config(config, run.config)
    rng = _generator(config.seed, state.rng_state)  # exploration
    sample_rng = _generator(config.seed + 1, state.sample_rng_state)  # replay sampling (sampler thread)
    stats = EpisodeStats(config.num_envs, state.__dict__)
    from training.metrics import MetricsLogger

    logger = MetricsLogger(run.root, config.to_json())
    meter = Meter(state.step)
    games = atari.GameStepper(_make_env(config))
    sampler = PrefetchSampler(replay, config.batch_size, sample_rng)
    progress = _progress_bar(config, state.step)
    stop = StopSignals()
    started = time.perf_counter() - state.wall_seconds

    def checkpoint() -> None:
        sampler.settle()
        state.rng_state, state.sample_rng_state = rng.bit_generator.state, sample_rng.bit_generator.state
        state.__dict__.update(stats.to_json(), wall_seconds=time.perf_counter() - started)
        _checkpoint(config, run, learner, replay, state)

    try:
        observations = games.reset(seed=config.seed + state.step)
        greedy: np.ndarray | None = None  # greedy actions for `observations`, when already computed
        while state.step < config.steps and not stop.requested:
            step, epsilon = state.step, epsilon_at(config, state.step)
            if step < config.random_steps:
                actions = rng.integers(0, contract.NUM_ACTIONS, size=config.num_envs)
            else:
                greedy = learner.act(contract.channels_last(observations)) if greedy is None else greedy
                explore = rng.random(config.num_envs) < epsilon
                actions = np.where(explore, rng.integers(0, contract.NUM_ACTIONS, size=config.num_envs), greedy)
            due = _updates_due(config, step, replay, state.learning_starts_at)
            if due:
                sampler.prefetch(due)  # sampled on a worker thread while the games step
            result = games.step(actions)
            sampler.settle()
            replay.add(observations[:, -1], result.actions, result.rewards, result.terminal,
                       result.state_opens_game, result.real)
            for score, frames in stats.record(result):
                logger.log("game", step + config.num_envs, score=score, frames_in_game=frames)
            observations, state.step, greedy = result.observations, step + config.num_envs, None
            if due:  # the updates, then the next greedy actions with the updated network: one call
                losses, mean_qs, greedy = learner.update_and_act(sampler.take(due),
                                                                 contract.channels_last(observations))
                meter.add(losses, mean_qs)
                state.updates += due
            if crossed(step, state.step, config.target_update):
                learner.sync_target()
            progress.update(config.num_envs)
            if crossed(step, state.step, config.log_every):
                _log_train(logger, progress, meter, state, stats, epsilon, len(replay))
            if stats.solved(config.solved_reward):
                state.solved_at_step = state.step
                print(f"solved at step {state.step:,}: running reward {stats.running_reward:.2f} "
                      f"> {config.solved_reward}")
                break
            if config.eval_every and crossed(step, state.step, config.eval_every) and state.step < config.steps:
                _evaluate(learner, config, logger, state.step, config.eval_episodes)
                meter.restart(state.step)
            if crossed(step, state.step, config.checkpoint_every):
                checkpoint()
    finally:
        progress.close()
        sampler.close()
        games.close()
        stop.restore()
    checkpoint()
    replay.storage.close()
    if stop.requested:
        logger.close()
        name = signal.Signals(stop.requested[0]).name
        raise Interrupted(stop.requested[0], f"{name}: checkpoint saved at step {state.step:,}; "
                                             f"continue with: breakout-dqn train --out {run.root} --resume")
    return _finish(config, run, learner, logger, state)


def _restore(config: TrainConfig, run: RunDirectory) -> tuple[Learner, LoopState]:
    """A new learner and loop state, or both as the newest checkpoint left them (``--resume``)."""
    from training.learners import build_learner

    learner = build_learner(config)
    state = LoopState(learning_starts_at=config.learning_starts)
    if not config.resume:
        return learner, state
    latest = run.newest_checkpoint()
    assert latest is not None  # RunDirectory.prepare refused a --resume without one
    arrays, saved = load_checkpoint(latest)
    try:
        learner.load_state(arrays)
        state = LoopState(**saved)
    except (ValueError, TypeError, KeyError) as error:  # another architecture, or an older format
        raise CheckpointError(
            f"--resume: {latest} does not fit this run's model ({error}); resume with the run's own "
            f"architecture flags (see {run.config})") from None
    print(f"resumed from {latest.name} at step {state.step:,} ({state.updates:,} updates)", flush=True)
    return learner, state


def _open_replay(config: TrainConfig, run: RunDirectory, state: LoopState) -> ReplayBuffer:
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


def _updates_due(config: TrainConfig, step: int, replay: ReplayBuffer, learning_starts_at: int) -> int:
    """Gradient updates that fall due in this vector step (one per ``train_frequency`` agent steps)."""
    if step < learning_starts_at or not replay.can_sample():
        return 0
    return (step + config.num_envs) // config.train_frequency - step // config.train_frequency


def _checkpoint(config: TrainConfig, run: RunDirectory, learner: Learner, replay: ReplayBuffer,
                state: LoopState) -> None:
    """Flush the replay, write the checkpoint that names its cursor, start its journal, save the model."""
    durable = replay.storage.durable
    replay.storage.flush()
    state.replay_cursor = replay.cursor if durable else None
    save_checkpoint(run.checkpoints, state.step, learner.state(), state.__dict__, config.keep_checkpoints)
    replay.storage.start_journal(replay.cursor)
    save_model(learner.export_model(), run.model)


def save_model(model, path: Path) -> None:
    """Save a ``.keras`` file atomically (Keras needs the suffix on the temp name too)."""
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)


def _finish(config: TrainConfig, run: RunDirectory, learner: Learner, logger, state: LoopState) -> dict[str, Any]:
    summary = _evaluate(learner, config, logger, state.step, config.final_eval_episodes)
    summary.update(train_agent_steps=state.step, train_frames=state.step * contract.FRAME_SKIP,
                   wall_seconds=round(state.wall_seconds, 1), solved_at_step=state.solved_at_step)
    atomic_write_text(run.eval, json.dumps(summary, indent=2) + "\n")
    logger.log_hparams({"eval_mean": summary["mean"]})
    logger.close()
    return summary


class Meter:
    """TD losses, mean Q-values and throughput since the last ``train`` record."""

    def __init__(self, step: int):
        self.losses: list[float] = []
        self.mean_qs: list[float] = []
        self.restart(step)

    def add(self, losses: list[float], mean_qs: list[float]) -> None:
        self.losses.extend(losses)
        self.mean_qs.extend(mean_qs)

    def restart(self, step: int) -> None:
        """Start a new throughput window (after a log record, or after an evaluation paused training)."""
        self.since = (step, time.perf_counter())

    def take(self, step: int) -> dict[str, float | None]:
        values = dict(steps_per_second=round((step - self.since[0]) / (time.perf_counter() - self.since[1]), 2),
                      loss=float(np.mean(self.losses)) if self.losses else None,
                      mean_q=float(np.mean(self.mean_qs)) if self.mean_qs else None)
        self.losses.clear()
        self.mean_qs.clear()
        self.restart(step)
        return values


def _log_train(logger, progress, meter: Meter, state: LoopState, stats: EpisodeStats, epsilon: float,
               replay_size: int) -> None:
    record = logger.log("train", state.step, updates=state.updates, epsilon=round(epsilon, 5),
                        **meter.take(state.step), recent_score=stats.recent_score,
                        running_reward=stats.running_reward, games=stats.games, replay_size=replay_size)
    progress.set_postfix(eps=f"{epsilon:.3f}", score=record["recent_score"], sps=record["steps_per_second"],
                         refresh=False)


def _evaluate(learner: Learner, config: TrainConfig, logger, step: int, episodes: int) -> dict[str, Any]:
    """Nature-protocol evaluation of the current online network (epsilon 0.05, 5-minute games)."""
    rng = np.random.default_rng(config.seed + 1_000_003 + step)
    act = atari.epsilon_greedy(learner.act, atari.NATURE_EPSILON, rng)
    started = time.perf_counter()
    results = atari.play_games(act, episodes, seed=config.seed + 7919 + step, num_envs=min(8, episodes),
                               repeat_action_probability=config.sticky_actions)
    summary = atari.summarize(results)
    summary.update(protocol=_protocol(config), eval_seconds=round(time.perf_counter() - started, 1))
    logger.log("eval", step, mean=summary["mean"], std=summary["std"], max=summary["max"],
               episodes=summary["episodes"], scores=summary["scores"])
    print(f"eval at step {step:,}: {summary['mean']:.1f} +- {summary['std']:.1f} over {episodes} games", flush=True)
    return summary


def _protocol(config: TrainConfig) -> str:
    return (f"Nature: full 5-life games, up to {atari.NATURE_NOOP_MAX} no-op starts, epsilon "
            f"{atari.NATURE_EPSILON}, capped at {atari.NATURE_MAX_FRAMES} frames, raw score, "
            f"sticky actions {config.sticky_actions}, FIRE after a lost life")


def _make_env(config: TrainConfig):
    return atari.make_vector_env(config.num_envs, life_loss_info=True, noop_max=config.noop_max,
                                 repeat_action_probability=config.sticky_actions,
                                 max_frames_per_episode=config.max_frames_per_episode)


def _generator(seed: int, saved_state: Mapping[str, Any]) -> np.random.Generator:
    rng = np.random.default_rng(seed)
    if saved_state:
        rng.bit_generator.state = saved_state
    return rng


class StopSignals:
    """Turns SIGINT/SIGTERM into a request the loop checks (it then checkpoints and stops)."""

    def __init__(self) -> None:
        self.requested: list[int] = []
        self._previous = {signum: signal.signal(signum, lambda signum, _frame: self.requested.append(signum))
                          for signum in (signal.SIGINT, signal.SIGTERM)}

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _progress_bar(config: TrainConfig, initial: int):
    import sys

    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=config.steps, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                disable=not config.progress, mininterval=0.5 if interactive else 30.0, desc="train")
