"""Real Breakout twice in lockstep: ale-py's vector env (the training env) and a bare ALEInterface.

The vector env gives the observations training saw; the bare emulator, stepped frame by frame with
the same actions from the same start, gives the raw screens a game client renders. ale-py 0.12.1's
reset is: ``reset_game``, FIRE for one frame, then ``episode_frame_number - 1`` NOOP frames (found by
replaying candidates until the screens matched; NOOPs first and FIRE last never match); the
emulator's seed changes nothing in Breakout without sticky actions.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from breakout_dqn import atari, contract
from breakout_dqn.serving.play_raw import bare_breakout


@dataclasses.dataclass
class Step:
    observation: np.ndarray  # the vector env's stack, uint8 [84,84,4] (channels last)
    rgb: np.ndarray  # the screens the emulator rendered, uint8 [n,210,160,3] (n = 4, or fewer at game over)
    gray: np.ndarray  # the same screens as ALE's grayscale [n,210,160] (getScreenGrayscale)
    lives: int
    game_over: bool


class LockstepGame:
    """One game in the vector env and in a bare emulator; ``step`` presses an action for 4 frames in both."""

    def __init__(self, seed: int):
        self.env = atari.make_vector_env(1, life_loss_info=True)
        self.ale = bare_breakout()
        self.actions = self.ale.getMinimalActionSet()
        observations, info = self.env.reset(seed=seed)
        self.ale.reset_game()
        self.ale.act(self.actions[contract.FIRE_ACTION])
        for _ in range(int(info["episode_frame_number"][0]) - 1):
            self.ale.act(self.actions[0])
        self.first = Step(contract.channels_last(observations)[0], self.ale.getScreenRGB()[None],
                          self.ale.getScreenGrayscale()[None], int(self.ale.lives()), False)
        assert int(info["lives"][0]) == self.first.lives

    def step(self, action: int) -> Step:
        observations, _, _, _, info = self.env.step(np.array([action]))
        rgb, gray = [], []
        for _ in range(contract.FRAME_SKIP):
            self.ale.act(self.actions[action])
            rgb.append(self.ale.getScreenRGB())
            gray.append(self.ale.getScreenGrayscale())
            if self.ale.game_over():
                break
        step = Step(contract.channels_last(observations)[0], np.stack(rgb), np.stack(gray), int(self.ale.lives()),
                    bool(self.ale.game_over()))
        assert int(info["lives"][0]) == step.lives, "the two emulators diverged"
        return step

    def close(self) -> None:
        self.env.close()
