"""Raw screens -> stacks (serving/screens.py, serving/game.py) against ale-py's vector env, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from lockstep import LockstepGame, bare_breakout

from breakout.v1 import agent_pb2
from breakout_dqn import contract
from breakout_dqn.serving import screens
from breakout_dqn.serving.game import GameNotStarted, GameSession, build_stacks


def frame(pixels: np.ndarray, rgb: bool = True, lives: int | None = None,
          new_game: bool = False) -> agent_pb2.GameFrame:
    message = agent_pb2.GameFrame(screens=np.ascontiguousarray(pixels).tobytes(), new_game=new_game,
                                  format=agent_pb2.SCREEN_FORMAT_RGB if rgb else agent_pb2.SCREEN_FORMAT_GRAYSCALE)
    if lives is not None:
        message.lives = lives
    return message


def next_stack(session: GameSession, message: agent_pb2.GameFrame) -> tuple[np.ndarray, bool]:
    job, fire = session.accept(message)
    return build_stacks([job])[0], fire


def test_the_luminance_formula_is_ales_grayscale_on_breakout_screens() -> None:
    ale, rng = bare_breakout(), np.random.default_rng(0)
    actions = ale.getMinimalActionSet()
    colours = set()
    for step in range(3000):
        ale.act(actions[rng.integers(len(actions))])
        if ale.game_over():
            ale.reset_game()
        if step % 10 == 0:
            rgb = ale.getScreenRGB()
            np.testing.assert_array_equal(screens.grayscale(rgb), ale.getScreenGrayscale())
            packed = (rgb[..., 0].astype(np.uint32) << 16) | (rgb[..., 1].astype(np.uint32) << 8) | rgb[..., 2]
            colours |= set(np.unique(packed).tolist())
    assert len(colours) >= 8  # background, walls, the six brick rows' colours, the paddle


@pytest.mark.parametrize(("seed", "rgb", "screens_sent"), [(0, True, 4), (1, False, 2), (2, True, 2)])
def test_every_stack_equals_the_vector_envs_observation(seed: int, rgb: bool, screens_sent: int) -> None:
    """A whole game with random actions (FIRE after each lost life): every stack, bit for bit."""
    game, session, rng = LockstepGame(seed), GameSession(), np.random.default_rng(seed)
    try:
        pixels = game.first.rgb if rgb else game.first.gray
        stack, fire = next_stack(session, frame(pixels, rgb, game.first.lives, new_game=True))
        np.testing.assert_array_equal(stack, game.first.observation)
        assert fire
        compared, lives, step = 1, game.first.lives, None
        while step is None or not step.game_over:
            action = contract.FIRE_ACTION if fire else int(rng.integers(contract.NUM_ACTIONS))
            step = game.step(action)
            pixels = (step.rgb if rgb else step.gray)[-screens_sent:]
            stack, fire = next_stack(session, frame(pixels, rgb, step.lives))
            assert fire == (step.lives < lives and step.lives > 0)
            lives = step.lives
            if step.game_over:
                # The vector env stops capturing screens at the frame that ends the game, so its last
                # observation can hold a stale frame; no action is ever taken from it.
                break
            np.testing.assert_array_equal(stack, step.observation, err_msg=f"step {compared}")
            compared += 1
        assert compared > 100 and lives == 0
    finally:
        game.close()


def test_the_area_weights_cover_each_output_pixel_once() -> None:
    for source, target in ((210, 84), (160, 84)):
        indices, weights = screens.area_weights(source, target)
        np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-6)
        assert indices.min() == 0 and indices.max() == source - 1
    flat = np.full((3, 210, 160), 87, dtype=np.uint8)
    flat[1] = 0
    flat[2] = 255
    resized = screens.resize(flat)
    assert resized.shape == (3, 84, 84) and set(np.unique(resized[0])) == {87}
    assert resized[1].max() == 0 and resized[2].min() == 255


def test_only_the_last_two_screens_count_and_one_screen_pairs_with_the_previous() -> None:
    rng = np.random.default_rng(1)
    shots = rng.integers(0, 256, size=(9, 210, 160), dtype=np.uint8)
    full, last_two, single = GameSession(), GameSession(), GameSession()
    for session in (full, last_two, single):
        next_stack(session, frame(shots[0], rgb=False, new_game=True))
    for start in (1, 5):
        a = next_stack(full, frame(shots[start:start + 4], rgb=False))[0]
        b = next_stack(last_two, frame(shots[start + 2:start + 4], rgb=False))[0]
        np.testing.assert_array_equal(a, b)
    next_stack(single, frame(shots[3], rgb=False))
    c = next_stack(single, frame(shots[4], rgb=False))[0]  # max(shots[3], shots[4])
    expected = screens.resize(np.maximum(shots[3], shots[4])[None])[0]
    np.testing.assert_array_equal(c[..., -1], expected)
    assert c[..., 0].max() == 0 and c[..., 1].any()  # zeros before the game's first frame


def test_the_serve_policy_presses_fire_at_a_new_game_and_after_a_lost_life() -> None:
    screen = np.zeros((210, 160), np.uint8)
    session = GameSession()
    fires = [session.accept(frame(screen, rgb=False, lives=lives, new_game=new))[1]
             for lives, new in ((5, True), (5, False), (4, False), (4, False), (1, False), (0, False), (5, True))]
    assert fires == [True, False, True, False, True, False, True]
    no_lives = GameSession()
    assert [no_lives.accept(frame(screen, rgb=False, new_game=new))[1] for new in (True, False, False)] == [
        True, False, False]


@pytest.mark.parametrize(("message", "error", "text"), [
    (agent_pb2.GameFrame(screens=b"\0" * 33_600, new_game=True), contract.ContractError, "unknown screen format 0"),
    (agent_pb2.GameFrame(screens=b"\0" * 33_600, format=7, new_game=True), contract.ContractError, "format 7"),
    (frame(np.zeros((5, 210, 160), np.uint8), rgb=False, new_game=True), contract.ContractError,
     "1 to 4 whole GRAYSCALE screens of 33600 bytes each (uint8 [210,160], C order); got 168000 bytes"),
    (agent_pb2.GameFrame(screens=b"\0" * 100, format=agent_pb2.SCREEN_FORMAT_RGB, new_game=True),
     contract.ContractError, "of 100800 bytes each (uint8 [210,160,3] (R, G, B per pixel), C order); got 100 bytes"),
    (agent_pb2.GameFrame(format=agent_pb2.SCREEN_FORMAT_RGB, new_game=True), contract.ContractError, "got 0 bytes"),
    (frame(np.zeros((210, 160), np.uint8), rgb=False, lives=-1, new_game=True), contract.ContractError, "lives"),
    (frame(np.zeros((210, 160), np.uint8), rgb=False), GameNotStarted, "must set new_game"),
])
def test_bad_frames_are_refused_before_any_work(message: agent_pb2.GameFrame, error: type, text: str) -> None:
    session = GameSession()
    with pytest.raises(error, match=None) as caught:
        session.accept(message)
    assert text in str(caught.value)
    assert not session.started and session.frames == 0


def test_a_batch_is_resized_as_each_frame_alone() -> None:
    shots = np.random.default_rng(2).integers(0, 256, size=(19, 210, 160), dtype=np.uint8)  # 2 chunks and a part
    alone = np.stack([screens.resize(shot[None])[0] for shot in shots])
    np.testing.assert_array_equal(screens.resize(shots), alone)
