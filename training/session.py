"""What every algorithm's run shares: the run directory, random state, the games and their statistics,
metrics and progress, stop signals, and the periodic work (``training.callbacks``). ``training.dqn``
and ``training.pqn`` hold each algorithm: its learner, its own state and its loop.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.errors import BreakoutDQNError, OperationFailed
from breakout_dqn.files import atomic_path, atomic_write_text
from breakout_dqn.training.callbacks import Callback, default_callbacks
from breakout_dqn.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from breakout_dqn.training.config import TrainConfig, save_config
from breakout_dqn.training.episodes import EpisodeStats
from breakout_dqn.training.exploration import Exploration, OpeningMoves, epsilon_at
from breakout_dqn.training.metrics import MetricsLogger
from breakout_dqn.training.run_directory import RunDirectory

if TYPE_CHECKING:  # not at import: --backend must set KERAS_BACKEND before Keras loads (training.device)
    from breakout_dqn.training.learners import Learner

# Evaluation games and their exploration draw streams apart from the training games' (any fixed offsets
# would do; these are the ones every recorded run used, so its evaluations replay exactly).
EVAL_EXPLORATION_SEED_OFFSET = 1_000_003
EVAL_GAMES_SEED_OFFSET = 7919


@dataclass
class RunState:
    """What a resume restores besides the learner's arrays and the algorithm's own state."""

    step: int = 0
    updates: int = 0
    games: int = 0
    lives: int = 0
    recent_scores: list[float] = field(default_factory=list)
    recent_life_rewards: list[float] = field(default_factory=list)
    rng_state: Mapping[str, Any] = field(default_factory=dict)
    wall_seconds: float = 0.0
    solved_at_step: int | None = None

    @classmethod
    def from_checkpoint(cls, saved: Mapping[str, Any]) -> RunState:
        names = {state_field.name for state_field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in saved.items() if key in names})


class Algorithm(Protocol):
    """What the session needs of an algorithm (``training.dqn.DQN``, ``training.pqn.PQN``)."""

    @property
    def learner(self) -> Learner:
        ...

    def checkpoint(self, write: Callable[[dict[str, Any]], None]) -> None:
        """Call ``write(own_state)`` once, when the algorithm's state is consistent (a replay keeps its order)."""
        ...

    def restore(self, saved: Mapping[str, Any]) -> None:
        """Take the algorithm's own state from a checkpoint's saved state (other keys are the session's)."""
        ...


class Interrupted(BreakoutDQNError):
    """Training stopped on SIGINT/SIGTERM after a checkpoint that succeeded; exits 128 + the signal."""

    def __init__(self, signum: int, message: str):
        super().__init__(message, exit_code=128 + signum)
        self.signum = signum


def seed_frameworks(seed: int) -> None:
    """Seed Python, numpy and the Keras backend (the networks' initial weights)."""
    import keras  # deferred: bad flags and pre-flight errors are reported without loading a backend

    keras.utils.set_random_seed(seed)


def generator(seed: int, saved_state: Mapping[str, Any]) -> np.random.Generator:
    """A numpy Generator seeded with ``seed``, or continuing a checkpoint's saved stream."""
    rng = np.random.default_rng(seed)
    if saved_state:
        rng.bit_generator.state = saved_state
    return rng


class RunSession:
    """One piece of a run: built after the algorithm (which it restores on ``--resume``), driven by its loop."""

    def __init__(self, config: TrainConfig, algorithm: Algorithm, compute: str, device: str):
        self.config, self.algorithm, self.compute, self.device = config, algorithm, compute, device
        self.run = RunDirectory(Path(config.out))
        self.state = self._restore() if config.resume else RunState()
        save_config(config, self.run.config)
        self.rng = generator(config.seed, self.state.rng_state)  # exploration
        # Their own stream: the exploration stream, and so a fresh run (epsilon ~1 anyway), is unchanged.
        self.explore = Exploration(self.rng, OpeningMoves(config.num_envs,
                                                          np.random.default_rng([config.seed, self.state.step])))
        self.stats = EpisodeStats(config.num_envs, dataclasses.asdict(self.state))
        self.logger = MetricsLogger(self.run.root, config.to_json())
        self.meter = Meter(self.state.step)
        self.progress = _progress_bar(config, self.state.step)
        self.stop = StopSignals()
        self.games = atari.GameStepper(atari.make_vector_env(
            config.num_envs, life_loss_info=True, noop_max=config.noop_max,
            repeat_action_probability=config.sticky_actions, max_frames_per_episode=config.max_frames))
        self.callbacks: list[Callback] = default_callbacks(config)
        self._started = time.perf_counter() - self.state.wall_seconds

    def _restore(self) -> RunState:
        latest = self.run.newest_checkpoint()
        assert latest is not None  # RunDirectory.prepare refused a --resume without one
        arrays, saved = load_checkpoint(latest)
        try:
            self.algorithm.learner.load_state(arrays)
            self.algorithm.restore(saved)
            state = RunState.from_checkpoint(saved)
        except (ValueError, TypeError, KeyError) as error:  # another architecture, or an older format
            raise CheckpointError(
                f"--resume: {latest} does not fit this run's model ({error}); resume with the run's own "
                f"architecture flags (see {self.run.config})") from None
        print(f"resumed from {latest.name} at step {state.step:,} ({state.updates:,} updates)", flush=True)
        return state

    @property
    def running(self) -> bool:
        return self.state.step < self.config.steps and not self.stop.requested

    def epsilon(self) -> float:
        """The exploration rate at the current step."""
        return epsilon_at(self.config, self.state.step)

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

    def periodic(self, before: int, **record: Any) -> bool:
        """The callbacks whose periods fall in ``(before, step]`` (``record`` joins the train record); True = stop."""
        return any(callback(self, before, record) for callback in self.callbacks)

    def save_checkpoint(self) -> None:
        """``checkpoint-<step>.npz`` (learner arrays, this state and the algorithm's), then the float32 model.

        A failure (a full disk) raises OperationFailed with its cause: the run must not report it as saved.
        """
        def write(own_state: dict[str, Any]) -> None:
            state = self.state
            state.rng_state = self.rng.bit_generator.state
            state.__dict__.update(self.stats.to_json(), wall_seconds=time.perf_counter() - self._started)
            save_checkpoint(self.run.checkpoints, state.step, self.algorithm.learner.state(),
                            {**dataclasses.asdict(state), **own_state}, self.config.keep_checkpoints)
            save_model(self.algorithm.learner.export_model(), self.run.model)

        try:
            self.algorithm.checkpoint(write)
        except OSError as error:
            raise OperationFailed(f"the checkpoint at step {self.state.step:,} was not written: "
                                  f"{error.strerror or error}") from error

    def raise_if_stopped(self) -> None:
        """After the final checkpoint: Interrupted if a signal stopped the run."""
        if self.stop.requested:
            signum = self.stop.requested[0]
            raise Interrupted(signum, f"{signal.Signals(signum).name}: checkpoint saved at step "
                                      f"{self.state.step:,}; continue with: breakout-dqn train --out "
                                      f"{self.run.root} --resume")

    def close(self) -> None:
        """Release the games, the signal handlers and the metrics files."""
        self.progress.close()
        self.games.close()
        self.stop.restore()
        self.logger.close()

    def finish(self) -> dict[str, Any]:
        """The final evaluation, written to ``eval.json``."""
        try:
            summary = self.evaluate(self.config.final_eval_episodes)
        except atari.Stopped:
            self.raise_if_stopped()
            raise
        summary.update(train_agent_steps=self.state.step, train_frames=self.state.step * contract.FRAME_SKIP,
                       wall_seconds=round(self.state.wall_seconds, 1), solved_at_step=self.state.solved_at_step)
        atomic_write_text(self.run.eval, json.dumps(summary, indent=2) + "\n")
        self.logger.log_hparams({"eval_mean": summary["mean"]})
        return summary

    def evaluate(self, episodes: int) -> dict[str, Any]:
        """Nature-protocol evaluation of the learner (epsilon 0.05, 5-minute games); a stop signal raises
        ``atari.Stopped`` between two vector steps, so a checkpoint still fits a spot node's notice."""
        config, step = self.config, self.state.step
        rng = np.random.default_rng(config.seed + EVAL_EXPLORATION_SEED_OFFSET + step)
        act = atari.epsilon_greedy(self.algorithm.learner.act, atari.NATURE_EPSILON, rng)
        started = time.perf_counter()
        results = atari.play_games(act, episodes, seed=config.seed + EVAL_GAMES_SEED_OFFSET + step,
                                   num_envs=min(8, episodes), repeat_action_probability=config.sticky_actions,
                                   should_stop=lambda: bool(self.stop.requested))
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
