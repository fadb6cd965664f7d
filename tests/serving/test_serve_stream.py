"""StreamActions on a real in-process server: answers in order, errors end the stream only, limits."""

from __future__ import annotations

import concurrent.futures
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_helpers import ServerThread, SlowPolicy, config_for, metric, random_stacks

from breakout.v1 import agent_pb2
from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving.client import AgentClient


def test_each_request_is_answered_in_order_with_onnxruntime_argmax(client: AgentClient, policy: OnnxPolicy) -> None:
    with client.stream() as session:
        for step, count in enumerate([1, 3, 1, 2, 64]):
            frames = random_stacks(count, seed=step)
            np.testing.assert_array_equal(session.get_action(frames), policy.act(frames))
        frames = random_stacks(2, seed=7)
        actions, q_values = session.get_q_values(frames)
        np.testing.assert_allclose(q_values, policy.q_values(frames), rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(actions, policy.act(frames))
        one = random_stacks(1, seed=8)[0]  # a single [84,84,4] stack
        assert session.get_action(one).tolist() == policy.act(one[None]).tolist()
        assert session.model_version == policy.version


def test_a_malformed_request_ends_its_stream_only(server: ServerThread, client: AgentClient,
                                                  policy: OnnxPolicy) -> None:
    session = client.stream()
    assert session.get_action(random_stacks(1)).shape == (1,)
    session._requests.put(agent_pb2.GetActionRequest(frames=b"\x00" * 100))  # what a buggy client could send
    with pytest.raises(grpc.RpcError) as caught:
        next(session._responses)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert "request 1 of the stream" in details and "28224" in details and "got 100 bytes" in details
    with client.stream() as fresh:  # the server keeps serving streams and calls
        frames = random_stacks(3, seed=5)
        np.testing.assert_array_equal(fresh.get_action(frames), policy.act(frames))
    np.testing.assert_array_equal(client.get_action(frames), policy.act(frames))
    assert server.server.admission.sessions == 0  # the failed stream was released


def test_concurrent_streams_each_get_their_own_answers(server: ServerThread, policy: OnnxPolicy) -> None:
    games, steps = 16, 40
    stacks = {game: random_stacks(steps, seed=100 + game) for game in range(games)}
    expected = {game: policy.act(stacks[game]) for game in range(games)}
    before = server.stats.requests

    def play(game: int) -> list[int]:
        with AgentClient(server.target, timeout=30) as agent, agent.stream() as session:
            return [int(session.get_action(stacks[game][step])[0]) for step in range(steps)]

    with concurrent.futures.ThreadPoolExecutor(games) as pool:
        answers = dict(zip(range(games), pool.map(play, range(games)), strict=True))
    for game in range(games):
        assert answers[game] == expected[game].tolist()
    assert server.stats.requests - before == games * steps


def test_streams_count_against_max_streams_and_unary_calls_do_not(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    running = ServerThread(config_for(onnx_model_path, max_streams=2, client_stream_share=1.0))
    try:
        with AgentClient(running.target, timeout=30) as agent:
            first, second = agent.stream(), agent.stream()
            frames = random_stacks(1)
            first.get_action(frames)
            second.get_action(frames)
            with pytest.raises(grpc.RpcError) as caught:
                agent.stream().get_action(frames)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details().startswith("server busy: --max-streams 2 streams are open")
            # GetAction is work, not a stream: admitted while every stream is taken
            np.testing.assert_array_equal(agent.get_action(frames), policy.act(frames))
            first.close()
            deadline = time.monotonic() + 10
            while running.server.admission.sessions > 1 and time.monotonic() < deadline:
                time.sleep(0.01)
            with agent.stream() as third:
                np.testing.assert_array_equal(third.get_action(frames), policy.act(frames))
            second.close()
    finally:
        running.stop()


def test_a_stream_holds_a_work_slot_only_while_answering(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.5)
    running = ServerThread(config_for(onnx_model_path, max_in_flight=2, inline_gap_ms=-1, client_share=1.0,
                                      max_queue_wait_ms=60_000), lambda config: slow)
    admission = running.server.admission
    try:
        with AgentClient(running.target, timeout=30) as agent, agent.stream() as session, \
                agent.stream() as idle, concurrent.futures.ThreadPoolExecutor(2) as pool:
            frames = random_stacks(1)
            idle.get_action(frames)  # answered, now idle: holds a stream, no work
            busy = pool.submit(session.get_action, frames)  # the stream is mid-request for 0.5 s
            deadline = time.monotonic() + 10
            while admission.in_flight < 1 and time.monotonic() < deadline:
                time.sleep(0.005)
            assert admission.in_flight == 1 and admission.sessions == 2
            unary = pool.submit(agent.get_action, frames)  # 1 stream request + 1 call = the limit: admitted
            while admission.in_flight < 2 and not unary.done() and time.monotonic() < deadline:
                time.sleep(0.005)
            with pytest.raises(grpc.RpcError) as caught:  # a third one is past the limit
                agent.get_action(frames)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "--max-in-flight 2 requests are being answered" in caught.value.details()
            np.testing.assert_array_equal(unary.result(), policy.act(frames))
            np.testing.assert_array_equal(busy.result(), policy.act(frames))
        assert metric(running, "breakout_dqn_refusals_total", {"reason": "capacity"}, 1) == 1
    finally:
        running.stop()


def test_the_stream_deadline_covers_the_whole_stream(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.2)
    running = ServerThread(config_for(onnx_model_path, inline_gap_ms=-1), lambda config: slow)
    try:
        with AgentClient(running.target, timeout=30) as agent:
            session = agent.stream(timeout=0.5)
            with pytest.raises(grpc.RpcError) as caught:
                for _ in range(10):  # 10 x 0.2 s cannot fit in 0.5 s
                    session.get_action(random_stacks(1))
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            np.testing.assert_array_equal(agent.get_action(random_stacks(1)), policy.act(random_stacks(1)))
    finally:
        running.stop()
