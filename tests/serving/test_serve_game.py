"""PlayGame on a real in-process server: real Breakout screens in, the training env's stacks and the
serve policy's actions out; bad frames end their stream only; sessions obey the limits and are freed."""

from __future__ import annotations

import gc
import time
import weakref
from pathlib import Path

import grpc
import numpy as np
import pytest
from lockstep import LockstepGame
from serving_helpers import ServerThread, config_for

from breakout.v1 import agent_pb2
from breakout_dqn import contract
from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving import service
from breakout_dqn.serving.client import AgentClient, GameStream
from breakout_dqn.serving.game import GameSession, build_stacks

GRAY = np.zeros((210, 160), np.uint8)
FREED_WITHIN_S = 5.0  # a freed session's handler frames, gone well within this on a loaded machine


def wait_until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


class TrackedSessions:
    """Weak references to every GameSession the servicer creates (patched in): which are still alive."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.created: list[weakref.ref[GameSession]] = []

        def tracked() -> GameSession:
            session = GameSession()
            self.created.append(weakref.ref(session))
            return session

        monkeypatch.setattr(service, "GameSession", tracked)

    def alive(self) -> int:
        gc.collect()
        return sum(ref() is not None for ref in self.created)


def test_a_game_through_play_game_gets_the_training_envs_stacks_and_the_serve_policy(
        client: AgentClient, policy: OnnxPolicy) -> None:
    """Real Breakout: the client sends only the RGB screens the emulator rendered and its lives."""
    game, rng = LockstepGame(seed=5), np.random.default_rng(5)
    try:
        with client.game() as session:
            answer = session.step(game.first.rgb, lives=game.first.lives, new_game=True,
                                  return_q_values=True, return_stack=True)
            step, observation, fired, steps = game.first, game.first.observation, 0, 0
            while True:
                stack = np.frombuffer(answer.stack, np.uint8).reshape(contract.STACK_SHAPE)
                np.testing.assert_array_equal(stack, observation, err_msg=f"step {steps}")
                expected_q = policy.q_values(observation[None])[0]
                np.testing.assert_allclose(answer.q_values, expected_q, rtol=1e-5, atol=1e-5)
                assert answer.action == (contract.FIRE_ACTION if answer.serve_policy else int(np.argmax(expected_q)))
                fired += answer.serve_policy
                # Press what the server says, now and then something else: more states than one greedy game.
                action = answer.action if rng.random() > 0.3 else int(rng.integers(contract.NUM_ACTIONS))
                step = game.step(action)
                steps += 1
                if step.game_over or steps == 400:
                    break
                answer = session.step(step.rgb, lives=step.lives, return_q_values=True, return_stack=True)
                observation = step.observation
            assert session.model_version == policy.version
        assert steps > 50 and fired >= 2  # the new game's FIRE, and at least one after a lost life
    finally:
        game.close()


def raw(stub_call: GameStream, message: agent_pb2.GameFrame) -> agent_pb2.GameAction:
    """Send a message as it is (what a buggy client could send) on a session's stream."""
    stub_call._requests.put(message)
    return next(stub_call._responses)


@pytest.mark.parametrize(("message", "code", "text"), [
    (agent_pb2.GameFrame(screens=b"\0" * 1000, format=agent_pb2.SCREEN_FORMAT_GRAYSCALE), "INVALID_ARGUMENT",
     "frame 1 of the game: screens must be 1 to 4 whole GRAYSCALE screens of 33600 bytes each"),
    (agent_pb2.GameFrame(screens=GRAY.tobytes(), format=9), "INVALID_ARGUMENT",
     "frame 1 of the game: unknown screen format 9"),
    (agent_pb2.GameFrame(screens=GRAY.tobytes(), format=agent_pb2.SCREEN_FORMAT_GRAYSCALE, lives=-2),
     "INVALID_ARGUMENT", "lives must be >= 0"),
])
def test_a_bad_frame_ends_its_stream_only(server: ServerThread, client: AgentClient, message: agent_pb2.GameFrame,
                                          code: str, text: str) -> None:
    admission = server.server.admission
    other = client.game()
    other.act(GRAY, lives=5, new_game=True)
    session = client.game()
    assert session.act(GRAY, lives=5, new_game=True) == contract.FIRE_ACTION
    with pytest.raises(grpc.RpcError) as caught:
        raw(session, message)
    assert caught.value.code().name == code and text in caught.value.details(), caught.value.details()
    assert other.act(GRAY, lives=5) in range(contract.NUM_ACTIONS)  # the other session goes on
    other.close()
    wait_until(lambda: admission.sessions == 0)
    with client.game() as fresh:  # and new ones open
        assert fresh.act(GRAY[None].repeat(2, 0), new_game=True) == contract.FIRE_ACTION


def test_a_frame_before_the_game_starts_is_a_failed_precondition(server: ServerThread, client: AgentClient) -> None:
    session = client.game()
    with pytest.raises(grpc.RpcError) as caught:
        session.act(GRAY, lives=5)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert caught.value.details().startswith("frame 0 of the game: no game started on this stream")
    wait_until(lambda: server.server.admission.sessions == 0)


def another_client(target: str, number: int) -> AgentClient:
    """A client on its own connection (gRPC shares one between channels with the same arguments)."""
    return AgentClient(target, timeout=10, max_message_bytes=(8 << 20) + number)


def test_sessions_count_against_max_streams_and_the_clients_share(onnx_model_path: Path) -> None:
    running = ServerThread(config_for(onnx_model_path, max_streams=4, client_stream_share=0.5))  # 2 per client
    admission = running.server.admission
    try:
        with another_client(running.target, 1) as first, another_client(running.target, 2) as second:
            held = [first.game(), first.game()]
            for session in held:
                session.act(GRAY, new_game=True)
            with pytest.raises(grpc.RpcError) as caught:  # past this client's share
                first.game().act(GRAY, new_game=True)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details().startswith("per-client limit: this client already holds its 2 open streams")
            held += [second.game(), second.game()]  # another client still gets its share
            for session in held[2:]:
                session.act(GRAY, new_game=True)
            assert admission.sessions == 4
            # past --max-streams: a third client's session is refused, its GetAction answered
            with another_client(running.target, 3) as third:
                with pytest.raises(grpc.RpcError) as caught:
                    third.game().act(GRAY, new_game=True)
                assert third.get_action(np.zeros((1, 84, 84, 4), np.uint8)).shape == (1,)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details().startswith("server busy: --max-streams 4 streams are open")
            held.pop().close()
            wait_until(lambda: admission.sessions == 3)
            with second.game() as again:
                assert again.act(GRAY, new_game=True) == contract.FIRE_ACTION
            for session in held:
                session.close()
            wait_until(lambda: admission.sessions == 0)
    finally:
        running.stop()


def test_sessions_are_freed_when_they_end_idle_out_or_are_cancelled(onnx_model_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = TrackedSessions(monkeypatch)
    # 1.5 s: long enough that no session idles out while the others open (a loaded 2-core machine
    # takes a few hundred ms for the first answers), short enough to wait for.
    running = ServerThread(config_for(onnx_model_path, stream_idle_timeout_s=1.5))
    admission = running.server.admission
    try:
        with AgentClient(running.target, timeout=10) as client:
            idle, cancelled, ended, refused = client.game(), client.game(), client.game(), client.game()
            for session in (idle, cancelled, ended, refused):
                session.act(GRAY, new_game=True)
            assert admission.sessions == 4 and sessions.alive() == 4
            ended.close()
            cancelled.cancel()
            with pytest.raises(grpc.RpcError) as caught:  # too many screens: ends that stream only
                refused.act(np.zeros((contract.MAX_SCREENS_PER_FRAME + 1, 210, 160), np.uint8))
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            wait_until(lambda: admission.sessions <= 1)
            # Freed as soon as the handlers return, not whenever grpc lets go of a call's state
            # (an error raised with context.abort would keep the handler's frames that long, past the
            # 5 s here while the client's connection stays open). Every session alive is an open game:
            # the idle one, or none if it has already idled out (a loaded machine can take that long).
            wait_until(lambda: sessions.alive() == admission.sessions, timeout=FREED_WITHIN_S)
            time.sleep(2.0)
            with pytest.raises(grpc.RpcError) as caught:
                idle.act(GRAY)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "no request on this stream for 1.5 s" in caught.value.details()
            wait_until(lambda: admission.sessions == 0)
            wait_until(lambda: sessions.alive() == 0, timeout=FREED_WITHIN_S)
    finally:
        running.stop()


def test_a_session_cut_by_the_connection_age_goes_on_with_the_same_stacks(onnx_model_path: Path) -> None:
    """The stream is reopened and the last 4 frames sent again: every stack is the one it would have been."""
    running = ServerThread(config_for(onnx_model_path, max_connection_age_s=1.0, max_connection_age_grace_s=0.3))
    rng = np.random.default_rng(0)
    expected_session = GameSession()
    try:
        with AgentClient(running.target, timeout=10) as client, client.game() as session:
            end, steps = time.monotonic() + 3.5, 0
            while time.monotonic() < end:
                screens = rng.integers(0, 256, size=(int(rng.integers(1, 3)), 210, 160), dtype=np.uint8)
                new_game, lives = steps % 100 == 0, 5 - (steps % 100) // 30
                answer = session.step(screens, lives=lives, new_game=new_game, return_stack=True)
                message = agent_pb2.GameFrame(screens=screens.tobytes(), format=agent_pb2.SCREEN_FORMAT_GRAYSCALE,
                                              lives=lives, new_game=new_game)
                job, fire = expected_session.accept(message)
                assert answer.stack == build_stacks([job])[0].tobytes(), f"step {steps}"
                assert answer.serve_policy == fire
                steps += 1
            assert session.reopened >= 2 and steps > 100
    finally:
        running.stop()
