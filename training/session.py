"""What every training algorithm's run shares: the run directory, the learner and its restore, the
exploration RNG, the games, their statistics, metrics, progress, stop signals, checkpoints and
evaluations. ``training.dqn`` and ``training.pqn`` hold only their own loops.
"""

from __future__ import annotations

import json
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.files import atomic_path, atomic_write_text
from breakout_dqn.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from breakout_dqn.training.config import TrainConfig, save_config
from breakout_dqn.training.episodes import EpisodeStats
from breakout_dqn.training.run_directory import RunDirectory


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
    replay_cursor: int | None = None  # DQN: slots per env in the durable replay at the checkpoint
    learning_starts_at: int = 0  # DQN: the agent step of the first update (later after a replay refill)


class Interrupted(Exception):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


# A piece's games all start together, from at most noop_max + 1 distinct no-op starts, and Breakout
# without sticky actions is deterministic: at a low epsilon, games that draw the same start play the
# same game (the 128 first games after a PQN resume at 3.0M agent steps: 38 distinct). So each game
# slot's first game after a (re)start opens with 0 to RESTART_OPENING_STEPS - 1 uniformly random
# actions, drawn per slot: a few dozen agent steps per piece, before the ball has fallen once.
RESTART_OPENING_STEPS = 30


class OpeningMoves:
    """Which game slots still take a random opening action at this vector step (counts the step)."""

    def __init__(self, num_envs: int, rng: np.random.Generator, steps: int = RESTART_OPENING_STEPS):
        self.left = rng.integers(0, steps, size=num_envs)

    def take(self) -> np.ndarray:
        opening = self.left > 0
        self.left = np.maximum(self.left - 1, 0)
        return opening


def epsilon_at(config: TrainConfig, step: int) -> float:
    """Linear decay from ``epsilon_start`` at step 0 to ``epsilon_end`` at ``epsilon_decay_steps``."""
    fraction = min(1.0, step / config.epsilon_decay_steps)
    return config.epsilon_start + fraction * (config.epsilon_end - config.epsilon_start)


def crossed(before: int, after: int, period: int) -> bool:
    """A multiple of ``period`` lies in ``(before, after]`` (0 never fires)."""
    return bool(period) and after // period > before // period


class RunSession:
    """One piece of a run, from ``--out`` checks to the final evaluation; the loops drive it."""

    def __init__(self, config: TrainConfig):
        self.config, self.run = config, RunDirectory(Path(config.out))
        self.run.prepare(config.resume)
        from breakout_dqn.training.device import for_device, select_device

        self.device = select_device(config)  # sets KERAS_BACKEND: before Keras' import; exit 2 if no GPU asked for
        print(f"device: {self.device.describe()} (--backend {config.backend}, --device {config.device})", flush=True)
        import keras  # deferred: bad flags and pre-flight errors are reported without loading a backend

        from breakout_dqn.training.compute_path import describe, resolved, slower_path_note
        from breakout_dqn.training.learners import build_learner

        keras.utils.set_random_seed(config.seed)
        piece = resolved(for_device(config, self.device))  # --precision auto: this CPU's fastest, or a GPU's
        self.compute = describe(piece)
        note = slower_path_note(config) if self.device.platform == "cpu" else ""
        print(f"compute path: {self.compute} (--precision {config.precision}){note}", flush=True)
        self.learner: Any = build_learner(piece)  # the loop's own Learner protocol (DQN or PQN)
        self.state = self._restore() if config.resume else LoopState(learning_starts_at=config.learning_starts)
        save_config(config, self.run.config)
        self.rng = generator(config.seed, self.state.rng_state)  # exploration
        # Their own stream: the exploration stream, and so a fresh run (epsilon ~1 anyway), is unchanged.
        self.openings = OpeningMoves(config.num_envs, np.random.default_rng([config.seed, self.state.step]))
        self.stats = EpisodeStats(config.num_envs, self.state.__dict__)
        from breakout_dqn.training.metrics import MetricsLogger

        self.logger = MetricsLogger(self.run.root, config.to_json())
        self.meter = Meter(self.state.step)
        self.progress = _progress_bar(config, self.state.step)
        self.stop = StopSignals()
        self.games = atari.GameStepper(atari.make_vector_env(
            config.num_envs, life_loss_info=True, noop_max=config.noop_max,
            repeat_action_probability=config.sticky_actions, max_frames_per_episode=config.max_frames_per_episode))
        self._started = time.perf_counter() - self.state.wall_seconds

    def _restore(self) -> LoopState:
        latest = self.run.newest_checkpoint()
        assert latest is not None  # RunDirectory.prepare refused a --resume without one
        arrays, saved = load_checkpoint(latest)
        try:
            self.learner.load_state(arrays)
            state = LoopState(**saved)
        except (ValueError, TypeError, KeyError) as error:  # another architecture, or an older format
            raise CheckpointError(
                f"--resume: {latest} does not fit this run's model ({error}); resume with the run's own "
                f"architecture flags (see {self.run.config})") from None
        print(f"resumed from {latest.name} at step {state.step:,} ({state.updates:,} updates)", flush=True)
        return state

    @property
    def running(self) -> bool:
        return self.state.step < self.config.steps and not self.stop.requested

    def epsilon_greedy(self, greedy: np.ndarray, epsilon: float) -> np.ndarray:
        """``greedy`` with probability 1 - epsilon per game, else a random action; random while a
        slot's restart opening lasts (``OpeningMoves``)."""
        explore = (self.rng.random(len(greedy)) < epsilon) | self.openings.take()
        return np.where(explore, self.rng.integers(0, contract.NUM_ACTIONS, size=len(greedy)), greedy)

    def record(self, result: atari.StepResult, step: int) -> None:
        """Account for one vector step taken at agent step ``step``."""
        self._log_games(self.stats.record(result), step + self.config.num_envs)
        self.progress.update(self.config.num_envs)

    def release_games(self) -> None:
        """Record the games ``EpisodeStats`` still holds; the loops call it before their last checkpoint."""
        self._log_games(self.stats.release(), self.state.step)

    def _log_games(self, games: list[tuple[float, int]], step: int) -> None:
        for score, frames in games:
            self.logger.log("game", step, score=score, frames_in_game=frames)

    def periodic(self, before: int, epsilon: float, checkpoint: Callable[[], None], **extra: Any) -> bool:
        """Log, evaluate and checkpoint when their periods fall in ``(before, step]``; True = stop (solved)."""
        config, step = self.config, self.state.step
        if crossed(before, step, config.log_every):
            record = self.logger.log("train", step, updates=self.state.updates, epsilon=round(epsilon, 5),
                                     **self.meter.take(step), recent_score=self.stats.recent_score,
                                     running_reward=self.stats.running_reward, games=self.stats.games,
                                     compute=self.compute, device=self.device.describe(), **extra)
            self.progress.set_postfix(eps=f"{epsilon:.3f}", score=record["recent_score"],
                                      sps=record["steps_per_second"], refresh=False)
        if self.stats.solved(config.solved_reward):
            self.state.solved_at_step = step
            print(f"solved at step {step:,}: running reward {self.stats.running_reward:.2f} > {config.solved_reward}")
            return True
        if crossed(before, step, config.eval_every) and step < config.steps:
            self.evaluate(config.eval_episodes)
            self.meter.restart(step)
        if crossed(before, step, config.checkpoint_every):
            checkpoint()
        return False

    def save_checkpoint(self) -> None:
        """Write ``checkpoint-<step>.npz`` (learner arrays + loop state), then the float32 model."""
        state = self.state
        state.rng_state = self.rng.bit_generator.state
        state.__dict__.update(self.stats.to_json(), wall_seconds=time.perf_counter() - self._started)
        save_checkpoint(self.run.checkpoints, state.step, self.learner.state(), state.__dict__,
                        self.config.keep_checkpoints)
        save_model(self.learner.export_model(), self.run.model)

    def close(self) -> None:
        """Release the games and the signal handlers; raise Interrupted if a signal stopped the run."""
        self.progress.close()
        self.games.close()
        self.stop.restore()
        if self.stop.requested:
            self.logger.close()
            signum = self.stop.requested[0]
            raise Interrupted(signum, f"{signal.Signals(signum).name}: checkpoint saved at step "
                                      f"{self.state.step:,}; continue with: breakout-dqn train --out "
                                      f"{self.run.root} --resume")

    def finish(self) -> dict[str, Any]:
        """The final evaluation, written to ``eval.json``."""
        summary = self.evaluate(self.config.final_eval_episodes)
        summary.update(train_agent_steps=self.state.step, train_frames=self.state.step * contract.FRAME_SKIP,
                       wall_seconds=round(self.state.wall_seconds, 1), solved_at_step=self.state.solved_at_step)
        atomic_write_text(self.run.eval, json.dumps(summary, indent=2) + "\n")
        self.logger.log_hparams({"eval_mean": summary["mean"]})
        self.logger.close()
        return summary

    def evaluate(self, episodes: int) -> dict[str, Any]:
        """Nature-protocol evaluation of the current online network (epsilon 0.05, 5-minute games)."""
        config, step = self.config, self.state.step
        rng = np.random.default_rng(config.seed + 1_000_003 + step)
        act = atari.epsilon_greedy(self.learner.act, atari.NATURE_EPSILON, rng)
        started = time.perf_counter()
        results = atari.play_games(act, episodes, seed=config.seed + 7919 + step, num_envs=min(8, episodes),
                                   repeat_action_probability=config.sticky_actions)
        summary = atari.summarize(results)
        summary.update(protocol=protocol(config), eval_seconds=round(time.perf_counter() - started, 1))
        self.logger.log("eval", step, mean=summary["mean"], std=summary["std"], max=summary["max"],
                        episodes=summary["episodes"], scores=summary["scores"])
        print(f"eval at step {step:,}: {summary['mean']:.1f} +- {summary['std']:.1f} over {episodes} games",
              flush=True)
        return summary


def protocol(config: TrainConfig) -> str:
    return (f"Nature: full 5-life games, up to {atari.NATURE_NOOP_MAX} no-op starts, epsilon "
            f"{atari.NATURE_EPSILON}, capped at {atari.NATURE_MAX_FRAMES} frames, raw score, "
            f"sticky actions {config.sticky_actions}, FIRE after a lost life")


def save_model(model: Any, path: Path) -> None:
    """Save a ``.keras`` file atomically (Keras needs the suffix on the temp name too)."""
    with atomic_path(path, suffix=".keras") as temp:
        model.save(temp)


def generator(seed: int, saved_state: Mapping[str, Any]) -> np.random.Generator:
    """A numpy Generator seeded with ``seed``, or continuing a checkpoint's saved stream."""
    rng = np.random.default_rng(seed)
    if saved_state:
        rng.bit_generator.state = saved_state
    return rng


class Meter:
    """TD losses, mean Q-values, throughput and CPU time since the last ``train`` record.

    CPU seconds make the cost of training comparable between runs that shared the machine with
    other work: a curve against CPU-hours does not move when a run was slowed down.
    """

    def __init__(self, step: int):
        self.losses: list[float] = []
        self.mean_qs: list[float] = []
        self.restart(step)

    def add(self, losses: list[float], mean_qs: list[float]) -> None:
        self.losses.extend(losses)
        self.mean_qs.extend(mean_qs)

    def restart(self, step: int) -> None:
        """Start a new throughput window (after a log record, or after an evaluation paused training)."""
        self.since = (step, time.perf_counter(), time.process_time())

    def take(self, step: int) -> dict[str, float | None]:
        """The window's steps/s (wall clock), CPU seconds (this process, all its threads), mean loss and Q."""
        values = dict(steps_per_second=round((step - self.since[0]) / (time.perf_counter() - self.since[1]), 2),
                      cpu_seconds=round(time.process_time() - self.since[2], 2),
                      loss=float(np.mean(self.losses)) if self.losses else None,
                      mean_q=float(np.mean(self.mean_qs)) if self.mean_qs else None)
        self.losses.clear()
        self.mean_qs.clear()
        self.restart(step)
        return values


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
    from tqdm import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=config.steps, initial=initial, unit="step", unit_scale=True, dynamic_ncols=True,
                disable=not config.progress, mininterval=0.5 if interactive else 30.0, desc="train")
