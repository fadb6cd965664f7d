"""The periodic work of a run, as callbacks the session calls after each vector step (SB3's pattern).

Each returns True to stop the run. Order matters and is kept: the train record, the "solved" stop,
an evaluation, a checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from breakout_dqn import atari
from breakout_dqn.training.config import TrainConfig

if TYPE_CHECKING:
    from breakout_dqn.training.session import RunSession


def crossed(before: int, after: int, period: int) -> bool:
    """A multiple of ``period`` lies in ``(before, after]`` (0 never fires)."""
    return bool(period) and after // period > before // period


class Callback(Protocol):
    def __call__(self, session: RunSession, before: int, record: dict[str, Any]) -> bool:
        """Act if this callback's period falls in ``(before, session.state.step]``; True = stop the run."""
        ...


class TrainRecord:
    """Every ``log_every`` agent steps: a ``train`` record (speed, loss, Q, scores; ``record`` from the loop)."""

    def __call__(self, session: RunSession, before: int, record: dict[str, Any]) -> bool:
        step = session.state.step
        if not crossed(before, step, session.config.log_every):
            return False
        epsilon = record.pop("epsilon", None)
        logged = session.logger.log(
            "train", step, updates=session.state.updates,
            epsilon=None if epsilon is None else round(epsilon, 5), **session.meter.take(step),
            recent_score=session.stats.recent_score, running_reward=session.stats.running_reward,
            games=session.stats.games, compute=session.compute, device=session.device, **record)
        session.progress.set_postfix(eps=f"{epsilon or 0:.3f}", score=logged["recent_score"],
                                     sps=logged["steps_per_second"], refresh=False)
        return False


class SolvedStop:
    """The Keras example's stop: the mean of the last 100 per-life clipped rewards passes ``solved_reward``."""

    def __call__(self, session: RunSession, before: int, record: dict[str, Any]) -> bool:
        if not session.stats.solved(session.config.solved_reward):
            return False
        session.state.solved_at_step = session.state.step
        print(f"solved at step {session.state.step:,}: running reward {session.stats.running_reward:.2f} > "
              f"{session.config.solved_reward}", flush=True)
        return True


class PeriodicEvaluation:
    """Every ``eval_every`` agent steps (not at the last: the final evaluation follows), ``eval_episodes`` games."""

    def __call__(self, session: RunSession, before: int, record: dict[str, Any]) -> bool:
        step, config = session.state.step, session.config
        if not crossed(before, step, config.eval_every) or step >= config.steps:
            return False
        try:
            session.evaluate(config.eval_episodes)
        except atari.Stopped:  # a stop signal: the loop ends, checkpoints and exits
            print(f"evaluation at step {step:,} cut short by a stop signal", flush=True)
        session.meter.restart(step)
        return False


class PeriodicCheckpoint:
    """Every ``checkpoint_every`` agent steps, a checkpoint."""

    def __call__(self, session: RunSession, before: int, record: dict[str, Any]) -> bool:
        if crossed(before, session.state.step, session.config.checkpoint_every):
            session.save_checkpoint()
        return False


def default_callbacks(config: TrainConfig) -> list[Callback]:
    return [TrainRecord(), SolvedStop(), PeriodicEvaluation(), PeriodicCheckpoint()]
