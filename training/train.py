"""The DQN training loop: collect with the vector env, learn from replay, checkpoint, evaluate.

One iteration = one vector step = ``num_envs`` agent steps: the games step in ale-py's C++
threads while a worker thread samples the batches of the updates that fall due; the transitions
are stored; then one compiled call runs those updates and returns the greedy actions for the new
observations. Everything a user sees lands in ``--out`` (see ``run_layout``).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.files import atomic_path, atomic_write_text
from training.checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from training.config import TrainConfig, save_config
from training.replay import ReplayBuffer, check_fits_in_memory
from training.sampler import PrefetchSampler

WINDOW = 100  # games / lives in the running means (the Keras example's 100 episodes)


class RunDirectoryError(ValueError):
    """``--out`` cannot be used; the message says why."""


@dataclass
class LoopState:
    """Everything besides the learner's arrays that ``--resume`` restores."""

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


def run_layout(out: Path) -> dict[str, Path]:
    return {
        "model": out / "model.keras",
        "config": out / "config.json",
        "metrics": out / "metrics.jsonl",
        "checkpoints": out / "checkpoints",
        "eval": out / "eval.json",
        "tensorboard": out / "tb",
    }


def prepare_run_directory(out: Path, resume: bool) -> None:
    """Create ``out`` and prove it is writable; refuse to clobber an earlier run."""
    layout = run_layout(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-probe-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise RunDirectoryError(f"--out {out} is not writable: {error.strerror or error}") from None
    has_run = layout["model"].exists() or bool(list_checkpoints(layout["checkpoints"]))
    if resume and not list_checkpoints(layout["checkpoints"]):
        raise RunDirectoryError(f"--resume: no checkpoint in {layout['checkpoints']}")
    if not resume and has_run:
        raise RunDirectoryError(f"--out {out} already holds a run; use --resume to continue it or pick another --out")
    if not resume and layout["metrics"].exists():  # a run stopped before its first checkpoint: start afresh
        kept = out / f"metrics.abandoned-{time.strftime('%Y%m%dT%H%M%S')}.jsonl"
        layout["metrics"].rename(kept)
        print(f"{out} held the metrics of a run stopped before its first checkpoint: moved to {kept.name}",
              flush=True)


def epsilon_at(config: TrainConfig, step: int) -> float:
    """Linear decay from ``epsilon_start`` at step 0 to ``epsilon_end`` at ``epsilon_decay_steps``."""
    fraction = min(1.0, step / config.epsilon_decay_steps)
    return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)


def save_model(model, path: Path) -> None:
    """Save a ``.keras`` file atomically (Keras needs the suffix on the temp name too)."""
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)


def train(config: TrainConfig) -> dict[str, Any]:
    """Run (or resume) training as configured; return the final evaluation summary."""
    out = Path(config.out)
    layout = run_layout(out)
    prepare_run_directory(out, config.resume)
    check_fits_in_memory(config.replay_capacity)

    import keras  # deferred: bad flags and pre-flight errors are reported without loading a backend

    from training.learners import make_learner
    from training.metrics import MetricsLogger
    from training.model import build_q_network, float32_copy

    keras.utils.set_random_seed(config.seed)
    online = build_q_network(dueling=config.dueling, name="online", precision=config.precision)
    target = build_q_network(dueling=config.dueling, name="target", precision=config.precision)
    learner = make_learner(config, online, target)
    learner.sync_target()
    rng = np.random.default_rng(config.seed)  # exploration
    sample_rng = np.random.default_rng(config.seed + 1)  # replay sampling (on the sampler thread)
    state = LoopState()
    if config.resume:
        latest = list_checkpoints(layout["checkpoints"])[-1]
        arrays, saved = load_checkpoint(latest)
        try:
            learner.load_state(arrays)
            state = LoopState(**saved)
        except (ValueError, TypeError, KeyError) as error:  # another architecture, or an older format
            raise CheckpointError(
                f"--resume: {latest} does not fit this run's model ({error}); resume with the run's own "
                f"architecture flags (see {layout['config']})"
            ) from None
        rng.bit_generator.state = state.rng_state
        if state.sample_rng_state:
            sample_rng.bit_generator.state = state.sample_rng_state
        print(f"resumed from {latest.name} at step {state.step:,} ({state.updates:,} updates)", flush=True)
    save_config(config, layout["config"])

    def checkpoint() -> None:
        sampler.settle()
        state.rng_state = rng.bit_generator.state
        state.sample_rng_state = sample_rng.bit_generator.state
        save_checkpoint(layout["checkpoints"], state.step, learner.state(), state.__dict__, config.keep_checkpoints)
        learner.sync_to_model()
        save_model(float32_copy(online, config.dueling), layout["model"])

    stop_signal: list[int] = []
    previous_handlers = {
        signum: signal.signal(signum, lambda signum, _frame: stop_signal.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    logger = MetricsLogger(out, config.to_json())
    env = atari.make_vector_env(
        config.num_envs,
        life_loss_info=True,
        noop_max=config.noop_max,
        repeat_action_probability=config.sticky_actions,
        max_frames_per_episode=config.max_frames_per_episode,
    )
    replay = ReplayBuffer(config.replay_capacity, config.num_envs, config.n_step, config.gamma)
    sampler = PrefetchSampler(replay, config.batch_size, sample_rng)
    num_envs = config.num_envs
    learning_start_step = state.step + config.learning_starts if config.resume else config.learning_starts
    recent_scores = collections.deque(state.recent_scores, maxlen=WINDOW)
    recent_life_rewards = collections.deque(state.recent_life_rewards, maxlen=WINDOW)
    progress = _progress_bar(config, state.step)
    last_log = (state.step, time.perf_counter())
    losses: list[float] = []
    mean_qs: list[float] = []
    started = time.perf_counter() - state.wall_seconds
    next_checkpoint = (state.step // config.checkpoint_every + 1) * config.checkpoint_every
    next_eval = (state.step // config.eval_every + 1) * config.eval_every if config.eval_every else None
    try:
        observations, info = env.reset(seed=config.seed + state.step)
        lives = info["lives"].copy()
        previous_lives = lives.copy()
        starting = np.ones(num_envs, dtype=bool)  # the current state opens a game
        pending_reset = np.zeros(num_envs, dtype=bool)  # the next step is ALE's autoreset step
        game_scores = np.zeros(num_envs)
        life_rewards = np.zeros(num_envs)
        greedy: np.ndarray | None = None  # greedy actions for `observations`, when already computed
        while state.step < config.steps and not stop_signal:
            step = state.step
            epsilon = epsilon_at(config, step)
            if step < config.random_steps:
                actions = rng.integers(0, contract.NUM_ACTIONS, size=num_envs)
            else:
                if greedy is None:
                    greedy = learner.act(contract.channels_last(observations))
                explore = rng.random(num_envs) < epsilon
                actions = np.where(explore, rng.integers(0, contract.NUM_ACTIONS, size=num_envs), greedy)
            actions = atari.fire_after_life_loss(actions, lives, previous_lives).astype(np.int32)
            due = 0
            if step >= learning_start_step and replay.can_sample():
                due = (step + num_envs) // config.train_frequency - step // config.train_frequency
                if due:
                    sampler.prefetch(due)  # sampled on a worker thread while the games step

            next_observations, rewards, terminated, truncated, info = env.step(actions)
            valid = ~pending_reset
            ended = terminated | truncated
            sampler.settle()
            replay.add(observations[:, -1], actions, rewards, ended & valid, starting, valid)
            game_scores += np.where(valid, rewards, 0.0)
            life_rewards += np.where(valid, np.sign(rewards), 0.0)
            previous_lives, lives = lives, info["lives"].copy()
            for index in np.flatnonzero(ended & valid):
                recent_life_rewards.append(float(life_rewards[index]))
                life_rewards[index] = 0.0
                state.lives += 1
            game_over = valid & (truncated | (terminated & (lives == 0)))
            for index in np.flatnonzero(game_over):
                recent_scores.append(float(game_scores[index]))
                logger.log("game", step + num_envs, score=float(game_scores[index]),
                           frames_in_game=int(info["episode_frame_number"][index]))
                game_scores[index] = 0.0
                state.games += 1
            starting = pending_reset
            pending_reset = game_over
            previous_lives[starting] = lives[starting]
            observations = next_observations
            state.step += num_envs

            # One compiled call runs the updates that fell due, then picks the greedy actions for
            # the new observations with the updated network (measured in the loop: 75.7 vs 82.1 ms
            # per vector step against separate act/update calls overlapped with the env threads;
            # the end-to-end benchmark moved less, 103 vs 101 steps/s).
            greedy = None
            if due:
                step_losses, step_mean_qs, greedy = learner.update_and_act(
                    sampler.take(due), contract.channels_last(observations))
                losses.extend(step_losses)
                mean_qs.extend(step_mean_qs)
                state.updates += due
            if state.step // config.target_update > step // config.target_update:
                learner.sync_target()
            progress.update(num_envs)

            running_reward = float(np.mean(recent_life_rewards)) if recent_life_rewards else 0.0
            if state.step // config.log_every > step // config.log_every:
                now = time.perf_counter()
                record = logger.log(
                    "train", state.step,
                    updates=state.updates,
                    epsilon=round(epsilon, 5),
                    steps_per_second=round((state.step - last_log[0]) / (now - last_log[1]), 2),
                    loss=float(np.mean(losses)) if losses else None,
                    mean_q=float(np.mean(mean_qs)) if mean_qs else None,
                    recent_score=float(np.mean(recent_scores)) if recent_scores else None,
                    running_reward=running_reward,
                    games=state.games,
                    replay_size=len(replay),
                )
                progress.set_postfix(eps=f"{epsilon:.3f}", score=record["recent_score"],
                                     sps=record["steps_per_second"], refresh=False)
                losses.clear()
                mean_qs.clear()
                last_log = (state.step, now)
            if config.solved_reward and len(recent_life_rewards) == WINDOW and running_reward > config.solved_reward:
                state.solved_at_step = state.step
                print(f"solved at step {state.step:,}: running reward {running_reward:.2f} > {config.solved_reward}")
                break
            if next_eval is not None and state.step >= next_eval and state.step < config.steps:
                _evaluate(learner, config, logger, state.step, config.eval_episodes)
                next_eval += config.eval_every
                last_log = (state.step, time.perf_counter())
            if state.step >= next_checkpoint:
                state.recent_scores, state.recent_life_rewards = list(recent_scores), list(recent_life_rewards)
                state.wall_seconds = time.perf_counter() - started
                checkpoint()
                next_checkpoint += config.checkpoint_every
    finally:
        progress.close()
        sampler.close()
        env.close()
        for signum, handler in previous_handlers.items():
            signal.signal(signum, handler)
    state.recent_scores, state.recent_life_rewards = list(recent_scores), list(recent_life_rewards)
    state.wall_seconds = time.perf_counter() - started
    checkpoint()
    if stop_signal:
        logger.close()
        name = signal.Signals(stop_signal[0]).name
        raise Interrupted(stop_signal[0], f"{name}: checkpoint saved at step {state.step:,}; "
                                          f"continue with: breakout-dqn train --out {out} --resume")
    summary = _evaluate(learner, config, logger, state.step, config.final_eval_episodes)
    summary.update(train_agent_steps=state.step, train_frames=state.step * contract.FRAME_SKIP,
                   wall_seconds=round(state.wall_seconds, 1), solved_at_step=state.solved_at_step)
    atomic_write_text(layout["eval"], json.dumps(summary, indent=2) + "\n")
    logger.log_hparams({"eval_mean": summary["mean"]})
    logger.close()
    return summary


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


def _evaluate(learner, config: TrainConfig, logger, step: int, episodes: int) -> dict[str, Any]:
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


def _progress_bar(config: TrainConfig, initial: int):
    import sys

    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=config.steps, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                disable=not config.progress, mininterval=0.5 if interactive else 30.0, desc="train")
