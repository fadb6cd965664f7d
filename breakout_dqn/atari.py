"""Real Breakout with the contract's preprocessing, shared by training, evaluation and play.

Everything here uses ale-py's native vector environment (C++ threads), which implements the
DeepMind preprocessing itself: no-op starts, action repeat 4 with a max over the last two
frames, 84x84 grayscale, a stack of 4 (zeros before the first frame), FIRE at reset. Training,
evaluation, ``verify`` and the gRPC ``play`` client all build their games here, so the frames
a served model sees are the frames it was trained on (``play --raw`` plays a bare emulator instead
and leaves the frames to the server's PlayGame, tested bit for bit against this env). No
TensorFlow is imported.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn import contract

ActFn = Callable[[np.ndarray], np.ndarray]
"""Maps uint8 frame stacks ``[N,84,84,4]`` to int actions ``[N]``."""

NATURE_EPSILON = 0.05
NATURE_MAX_FRAMES = 18_000  # 5 minutes at 60 frames/s
NATURE_NOOP_MAX = 30
HUMAN_SCORE = 31.8  # the professional human tester's Breakout score (Mnih et al. 2015)


def make_vector_env(
    num_envs: int,
    *,
    life_loss_info: bool,
    noop_max: int = NATURE_NOOP_MAX,
    repeat_action_probability: float = 0.0,
    max_frames_per_episode: int = 108_000,
    rgb_frames: bool = False,
    num_threads: int = 0,
):  # -> ale_py.vector_env.AtariVectorEnv
    """Build ``num_envs`` Breakout games stepping in C++ threads.

    Observations are channels-first ``[N,4,84,84]`` uint8 (use ``contract.channels_last``).
    Rewards are the raw game score (clipping happens in the learner). With
    ``life_loss_info`` a lost life sets ``terminated`` while the game goes on; the step after
    a game ends returns the reset observation and ignores its action (NEXT_STEP autoreset).
    ``rgb_frames`` builds a lockstep twin that renders full 210x160 RGB screens for video.
    """
    import ale_py  # noqa: F401  (registers the ROMs shipped in the wheel)
    from ale_py.vector_env import AtariVectorEnv

    kwargs: dict = {}
    if rgb_frames:
        kwargs = dict(img_height=contract.SCREEN_HEIGHT, img_width=contract.SCREEN_WIDTH, grayscale=False, stack_num=1)
    return AtariVectorEnv(
        contract.GAME,
        num_envs,
        num_threads=num_threads,
        noop_max=noop_max,
        repeat_action_probability=repeat_action_probability,
        max_num_frames_per_episode=max_frames_per_episode,
        life_loss_info=life_loss_info,
        reward_clipping=False,
        episodic_life=False,
        use_fire_reset=True,
        frameskip=contract.FRAME_SKIP,
        **kwargs,
    )


def fire_after_life_loss(actions: np.ndarray, lives: np.ndarray, previous_lives: np.ndarray) -> np.ndarray:
    """Replace the action with FIRE where a life was just lost (and the game goes on).

    ALE's FIRE-on-reset only serves the first ball of a game; without this a greedy agent that
    never learned to press FIRE would wait forever after its first lost life.
    """
    lost = (lives < previous_lives) & (lives > 0)
    return np.where(lost, contract.FIRE_ACTION, actions)


@dataclasses.dataclass
class StepResult:
    """What one vector step did, per env (all ``[N]`` unless stated).

    ``real`` is False for ALE's autoreset step (the step after a game ended: its action is ignored
    and it returns a new game's first observation), which is not a transition of any game.
    """

    observations: np.ndarray  # uint8 [N,4,84,84] after the step (channels first, as ale-py gives)
    actions: np.ndarray  # int32, the actions sent (FIRE where a life was just lost)
    rewards: np.ndarray  # float, the raw score change (0 on autoreset steps)
    real: np.ndarray  # bool: a real transition of a game
    state_opens_game: np.ndarray  # bool: the state acted on was a game's first observation
    terminal: np.ndarray  # bool: real, and ends the bootstrapped return (a lost life with life_loss_info,
    #                       the game's end, or truncation)
    game_over: np.ndarray  # bool: real, and the game ended (last life lost, or truncated at the frame cap)
    truncated: np.ndarray  # bool: real, and cut at the frame cap
    lives: np.ndarray  # int, lives after the step
    frames_in_game: np.ndarray  # int, emulator frames of the current game (of the ended one on game_over)


class GameStepper:
    """Steps ale-py's vector env with the serve policy, and says what each step was.

    The one place that owns FIRE after a lost life (a greedy agent that never learned to press FIRE
    would otherwise wait forever after its first lost life) and the bookkeeping of ALE's NEXT_STEP
    autoreset. Training, evaluation, ``play_games`` and the parity collector all step through it.
    """

    def __init__(self, env: Any):
        self.env = env
        self.num_envs = int(env.num_envs)
        self._lives = np.zeros(self.num_envs, dtype=np.int64)
        self._previous_lives = self._lives.copy()
        self._pending_reset = np.zeros(self.num_envs, dtype=bool)  # the next step is the autoreset step
        self._opens_game = np.ones(self.num_envs, dtype=bool)  # the current observations open a game

    def reset(self, seed: int | None = None) -> np.ndarray:
        """Reset every game; return the first observations uint8 ``[N,4,84,84]``."""
        observations, info = self.env.reset(seed=seed)
        self._lives = info["lives"].copy()
        self._previous_lives = self._lives.copy()
        self._pending_reset[:] = False
        self._opens_game[:] = True
        return observations

    def step(self, actions: np.ndarray) -> StepResult:
        """Send ``actions`` (FIRE replaces them where a life was just lost) and step every game."""
        actions = fire_after_life_loss(np.asarray(actions), self._lives, self._previous_lives).astype(np.int32)
        observations, rewards, terminated, truncated, info = self.env.step(actions)
        real = ~self._pending_reset
        lives = info["lives"].copy()
        game_over = real & (truncated | (terminated & (lives == 0)))
        result = StepResult(
            observations=observations, actions=actions, rewards=np.where(real, rewards, 0.0), real=real,
            state_opens_game=self._opens_game.copy(), terminal=real & (terminated | truncated),
            game_over=game_over, truncated=real & truncated, lives=lives,
            frames_in_game=np.asarray(info["episode_frame_number"]).copy())
        self._previous_lives, self._lives = self._lives, lives
        self._opens_game = ~real  # the autoreset step returned a new game's first observation
        self._previous_lives[~real] = lives[~real]
        self._pending_reset = game_over
        return result

    def close(self) -> None:
        self.env.close()


@dataclasses.dataclass
class GameResult:
    """One full game: raw score (unclipped), agent steps and emulator frames."""

    score: float
    steps: int
    frames: int
    truncated: bool


def explore(greedy: np.ndarray, epsilon: float | np.ndarray, rng: np.random.Generator,
            forced: np.ndarray | None = None) -> np.ndarray:
    """Epsilon-greedy, the one rule every stage uses: each game's ``greedy`` action ``[N]`` is replaced by a
    uniformly random one with probability ``epsilon`` (a float, or ``[N]`` per game), and always where
    ``forced`` is True."""
    explored = rng.random(len(greedy)) < epsilon
    if forced is not None:
        explored |= forced
    return np.where(explored, rng.integers(0, contract.NUM_ACTIONS, size=len(greedy)), greedy)


def epsilon_greedy(act: ActFn, epsilon: float, rng: np.random.Generator) -> ActFn:
    """Wrap a greedy ``act`` with ``explore``."""
    return lambda frames: explore(np.asarray(act(frames), dtype=np.int64), epsilon, rng)


class Stopped(Exception):
    """``play_games`` gave up because its ``should_stop`` said so (a stop signal during an evaluation)."""


@dataclasses.dataclass
class _Scoreboard:
    """Per-game score and step counters of the games ``play_games`` runs, with their quotas."""

    quota: np.ndarray
    finished: np.ndarray
    scores: np.ndarray
    steps: np.ndarray

    @classmethod
    def fair(cls, episodes: int, num_envs: int) -> _Scoreboard:
        """Each env plays a fixed quota, so short games are not over-represented."""
        quota = np.array([episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)])
        zeros = np.zeros(num_envs, dtype=np.int64)
        return cls(quota, zeros.copy(), np.zeros(num_envs), zeros.copy())

    @property
    def done(self) -> bool:
        return bool((self.finished >= self.quota).all())

    def count(self, step: StepResult) -> list[GameResult]:
        """Account for one vector step; return the games it ended within their env's quota."""
        self.scores[step.state_opens_game] = 0.0
        self.steps[step.state_opens_game] = 0
        self.scores += step.rewards
        self.steps += step.real
        ended = []
        for i in np.flatnonzero(step.game_over):
            if self.finished[i] < self.quota[i]:
                ended.append(GameResult(float(self.scores[i]), int(self.steps[i]), int(step.frames_in_game[i]),
                                        bool(step.truncated[i])))
            self.finished[i] += 1
        return ended


def play_games(
    act: ActFn,
    episodes: int,
    *,
    seed: int = 0,
    num_envs: int = 8,
    noop_max: int = NATURE_NOOP_MAX,
    max_frames_per_episode: int = NATURE_MAX_FRAMES,
    repeat_action_probability: float = 0.0,
    video_path: str | Path | None = None,
    on_game: Callable[[GameResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> list[GameResult]:
    """Play ``episodes`` full 5-life games with ``act`` and return them in finishing order.

    Games run ``num_envs`` at a time, each env a fixed quota. FIRE is pressed after every lost
    life. ``video_path`` (.mp4 or .gif) records env 0's first game from a lockstep RGB twin of the
    same seed. ``should_stop`` is asked before every vector step; True raises ``Stopped``.
    """
    if episodes < 1:
        raise ValueError("episodes must be >= 1")
    num_envs = max(1, min(num_envs, episodes))
    env_kwargs: dict[str, Any] = dict(life_loss_info=False, noop_max=noop_max,
                                      repeat_action_probability=repeat_action_probability,
                                      max_frames_per_episode=max_frames_per_episode)
    games = GameStepper(make_vector_env(num_envs, **env_kwargs))
    video_env = make_vector_env(num_envs, rgb_frames=True, **env_kwargs) if video_path else None
    video_frames: list[Any] = []
    board = _Scoreboard.fair(episodes, num_envs)
    results: list[GameResult] = []
    try:
        observations = games.reset(seed=seed)
        if video_env is not None:
            video_frames.append(video_env.reset(seed=seed)[0][0, 0])
        while not board.done:
            if should_stop is not None and should_stop():
                raise Stopped(f"stopped after {len(results)} of {episodes} games")
            step = games.step(np.asarray(act(contract.channels_last(observations)), dtype=np.int64))
            observations = step.observations
            if video_env is not None and board.finished[0] == 0:
                video_frames.append(video_env.step(step.actions)[0][0, 0])
            for result in board.count(step):
                results.append(result)
                if on_game is not None:
                    on_game(result)
    finally:
        games.close()
        if video_env is not None:
            video_env.close()
    if video_path is not None:
        write_video(video_frames, video_path)
    return results


VIDEO_SUFFIXES = (".mp4", ".gif")


def write_video(frames: list[Any], path: str | Path, fps: int = 15) -> None:
    """Write RGB frames ``[H,W,3]`` uint8 as an MP4 (imageio-ffmpeg) or GIF, by suffix."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".gif":
        imageio.mimsave(path, frames, duration=1000 / fps, loop=0)
    elif path.suffix.lower() == ".mp4":
        imageio.mimsave(path, frames, fps=fps, macro_block_size=1)
    else:
        raise ValueError(f"video path must end in .mp4 or .gif, got {path.name}")


def summarize(results: list[GameResult]) -> dict:
    """Mean, std, min and max raw score of a list of games, JSON-ready."""
    scores = np.array([r.score for r in results], dtype=np.float64)
    return {
        "episodes": len(results),
        "mean": float(scores.mean()),
        "std": float(scores.std()),
        "min": float(scores.min()),
        "max": float(scores.max()),
        "scores": scores.tolist(),
        "mean_steps": float(np.mean([r.steps for r in results])),
        "truncated": int(sum(r.truncated for r in results)),
    }
