"""``breakout-dqn play --raw``: real Breakout through PlayGame, the client sending only what the emulator renders.

Each game runs in a bare ``ale_py.ALEInterface`` (one frame per ``act``, no preprocessing, no
FIRE logic): the client sends the game's first screen with ``new_game``, then, after each answer,
presses the action for 4 frames and sends the last two RGB screens they rendered (all the server
needs; see agent.proto) with the lives the game shows. The server builds the stacks and presses
FIRE at the start and after each lost life. The Nature protocol's random start (0 to 29 no-op
frames) follows the game's first action, the server's FIRE, as in ale-py's reset (FIRE, then the
no-ops): with the no-ops before the first screen instead, 12 games of the reference agent scored
39.8 (min 25) against 47.9 (min 36) this way, the same 12 scores as a start that copies ale-py's
reset frame by frame. Games end at game over or at the frame cap, like ``play``'s.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.serving.client import AgentClient, GameStream

SCREENS_SENT = 2  # the last two screens of each action repeat: the ones the server max-pools


def bare_breakout() -> Any:  # -> ale_py.ALEInterface
    """Breakout in ALE's own emulator: one frame per ``act``, no sticky actions."""
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setFloat("repeat_action_probability", 0.0)
    rom = roms.get_rom_path(contract.GAME)
    if rom is None:
        raise RuntimeError(f"ale-py ships no {contract.GAME} ROM")
    ale.loadROM(rom)
    return ale


@dataclasses.dataclass
class RawPlayer:
    """Plays games on one PlayGame stream; ``latencies`` holds every frame's round trip in seconds."""

    session: GameStream
    max_frames: int = atari.NATURE_MAX_FRAMES
    noop_max: int = atari.NATURE_NOOP_MAX
    latencies: list[float] = dataclasses.field(default_factory=list)

    def play(self, ale: Any, rng: np.random.Generator, video: list[np.ndarray] | None = None) -> atari.GameResult:
        """One full game from a reset; ``video`` (if given) gets one RGB screen per agent step."""
        actions = ale.getMinimalActionSet()
        ale.reset_game()
        noops = int(rng.integers(self.noop_max))
        screens = [ale.getScreenRGB()]
        score, steps, new_game = 0.0, 0, True
        while True:
            if video is not None:
                video.append(screens[-1])
            start = time.perf_counter()
            action = self.session.act(np.stack(screens[-SCREENS_SENT:]), lives=int(ale.lives()), new_game=new_game)
            self.latencies.append(time.perf_counter() - start)
            screens = []
            for _ in range(contract.FRAME_SKIP):
                score += ale.act(actions[action])
                screens.append(ale.getScreenRGB())
                if ale.game_over():
                    break
            for _ in range(noops if new_game else 0):  # the random start, after the game's first action
                ale.act(actions[0])
                screens.append(ale.getScreenRGB())
            new_game = False
            steps += 1
            frames = int(ale.getEpisodeFrameNumber())
            if ale.game_over() or frames >= self.max_frames:
                return atari.GameResult(score, steps, frames, truncated=not ale.game_over())


def play_raw_games(
    client: AgentClient,
    episodes: int,
    *,
    seed: int = 0,
    num_envs: int = 1,
    max_frames_per_episode: int = atari.NATURE_MAX_FRAMES,
    video_path: str | Path | None = None,
    on_game: Callable[[atari.GameResult], None] | None = None,
) -> tuple[list[atari.GameResult], list[float]]:
    """Play ``episodes`` games, ``num_envs`` at a time (a thread, an emulator and a stream each).

    Returns the games in finishing order and every frame's round trip (s). ``video_path`` records
    the first game of the first thread.
    """
    num_envs = max(1, min(num_envs, episodes))
    quota = [episodes // num_envs + (i < episodes % num_envs) for i in range(num_envs)]
    results: list[atari.GameResult] = []
    latencies: list[float] = []
    video: list[np.ndarray] = []
    lock = threading.Lock()

    def run(index: int) -> None:
        ale, rng = bare_breakout(), np.random.default_rng([seed, index])
        with client.game() as session:
            player = RawPlayer(session, max_frames=max_frames_per_episode)
            for game in range(quota[index]):
                result = player.play(ale, rng, video if video_path and index == 0 and game == 0 else None)
                with lock:
                    results.append(result)
                    if on_game is not None:
                        on_game(result)
        with lock:
            latencies.extend(player.latencies)

    with concurrent.futures.ThreadPoolExecutor(num_envs) as pool:
        for done in [pool.submit(run, index) for index in range(num_envs)]:
            done.result()
    if video_path is not None:
        atari.write_video(video, video_path)
    return results, latencies
