"""Misbehaving clients on a real in-process server: silent streams, one client taking every slot,
abrupt cancels, oversized metadata, a drain with idle streams open."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from serving_helpers import ServerThread, SlowPolicy, config_for, random_stacks

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving.client import AgentClient

ONE_STACK = agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES))


def wait_until(condition, timeout: float = 10.0) -> float:
    """Seconds until ``condition()`` held; fails after ``timeout``."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.01)
    return time.monotonic() - start


async def silent_streams(target: str, count: int) -> tuple[list[grpc.aio.StreamStreamCall], list[str]]:
    """The issue's client: ``count`` streams on one connection, one request each, then silence.

    Returns the streams that were answered (still open) and the refusals' messages, as far as the
    client received them (``servicer.rejected`` counts every refusal).
    """
    channel = grpc.aio.insecure_channel(target)
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    calls = [stub.StreamActions() for _ in range(count)]
    answered, refused = [], []
    for call in calls:
        # Past its HTTP/2 stream limit the connection opens the rest as earlier ones end, and a refused
        # stream may have its status before this write (the write or read then fails on the client's
        # side): the server's answer is the call's status.
        with contextlib.suppress(asyncio.InvalidStateError, grpc.aio.AioRpcError):
            await call.write(ONE_STACK)
            await call.read()
            answered.append(call)
            continue
        code = await call.code()
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            refused.append(await call.details())
        else:  # the client's own write failed first; the server counted its refusal all the same
            assert code == grpc.StatusCode.INTERNAL, (code, await call.details())
    return answered, refused


async def statuses(calls: list[grpc.aio.StreamStreamCall]) -> list[tuple[grpc.StatusCode, str]]:
    return [(await call.code(), await call.details()) for call in calls]


def test_one_client_with_silent_streams_cannot_lock_out_the_others(onnx_model_path: Path,
                                                                   policy: OnnxPolicy) -> None:
    """The issue's report: 256 silent streams on one connection used to refuse everyone else."""
    running = ServerThread(config_for(onnx_model_path, stream_idle_timeout_s=1.0))
    servicer = running.server.servicer
    try:
        answered, refused = running.call(silent_streams(running.target, 256))
        limit = servicer.shares.limit
        assert limit == 64  # the default share: 0.25 of 256
        assert len(answered) == limit and servicer.rejected == 256 - limit
        assert refused and refused[0].startswith("per-client limit: this connection (ipv4:127.0.0.1:")
        assert "already holds 64 calls and streams (--client-share 0.25 of --max-concurrent 256)" in refused[0]
        with AgentClient(running.target, timeout=10) as other:  # another client is served meanwhile
            for seed in range(5):
                frames = random_stacks(1, seed=seed)
                np.testing.assert_array_equal(other.get_action(frames), policy.act(frames))
        # The silent streams end once idle past --stream-idle-timeout, with a status that says why.
        freed_after = wait_until(lambda: servicer.streams == 0, timeout=10)
        print(f"\n{len(answered)} silent streams open, {servicer.rejected} refused; freed {freed_after:.2f} s later")
        assert freed_after < 3.0
        ends = running.call(statuses(answered))
        assert {code for code, _ in ends} == {grpc.StatusCode.DEADLINE_EXCEEDED}
        details = ends[0][1]
        assert "no request on this stream for 1 s (the server's --stream-idle-timeout)" in details
        assert servicer.shares.held == {} and servicer.in_flight == 0
    finally:
        running.stop()


def test_an_active_or_busy_stream_is_not_idle(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.8)  # one answer takes longer than the idle timeout
    running = ServerThread(config_for(onnx_model_path, stream_idle_timeout_s=0.5, inline_gap_ms=None),
                           lambda config: slow)
    try:
        with AgentClient(running.target, timeout=30) as agent:
            session = agent.stream()
            frames = random_stacks(1)
            session.get_action(frames)  # 0.8 s answering: busy, not idle
            slow.delay_s = 0.0
            for _ in range(8):  # a request every 0.2 s for 1.6 s
                time.sleep(0.2)
                session.get_action(frames)
            assert session.reopened == 0
            time.sleep(1.0)
            with pytest.raises(grpc.RpcError) as caught:  # silent for 1 s: closed
                session.get_action(frames)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert running.server.servicer.streams == 0
    finally:
        running.stop()


def test_the_share_can_count_an_address_instead_of_a_connection(onnx_model_path: Path) -> None:
    running = ServerThread(config_for(onnx_model_path, max_concurrent=8, client_share=0.25, client_key="address"))
    try:
        first, second = AgentClient(running.target), AgentClient(running.target)  # two connections, one address
        one, two = first.stream(), second.stream()
        one.get_action(random_stacks(1))
        two.get_action(random_stacks(1))
        with pytest.raises(grpc.RpcError) as caught:
            AgentClient(running.target).get_action(random_stacks(1))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "per-client limit: this address (ipv4:127.0.0.1) already holds 2" in caught.value.details()
        one.close()
        two.close()
        wait_until(lambda: running.server.servicer.shares.held == {})
    finally:
        running.stop()


def test_abrupt_cancels_free_every_slot(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.3)
    running = ServerThread(config_for(onnx_model_path, inline_gap_ms=None, max_batch=1), lambda config: slow)
    servicer = running.server.servicer
    try:
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(running.target))
        with AgentClient(running.target, timeout=30) as agent:
            busy_stream = agent.stream()
            idle_stream = agent.stream()
            idle_stream.get_action(random_stacks(1))
            unary = [stub.GetAction.future(ONE_STACK, timeout=30) for _ in range(12)]  # 0.3 s each, one by one
            wait_until(lambda: servicer.unary >= 6)
            for call in unary:
                call.cancel()
            busy_stream._requests.put(ONE_STACK)  # mid-request when cancelled
            time.sleep(0.05)
            busy_stream.cancel()
            idle_stream.cancel()
            wait_until(lambda: servicer.unary == 0 and servicer.streams == 0 and servicer.in_flight == 0)
            assert servicer.shares.held == {}
            frames = random_stacks(2, seed=3)
            np.testing.assert_array_equal(agent.get_action(frames), policy.act(frames))
        assert running.stats.dropped >= 1  # cancelled before their forward pass: never computed
    finally:
        running.stop()


def test_oversized_metadata_is_refused_and_the_server_keeps_serving(server: ServerThread, client: AgentClient,
                                                                    policy: OnnxPolicy) -> None:
    stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(server.target))
    for size in (20_000, 1_000_000):  # gRPC's hard limit on received metadata is 16 KiB
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetAction(ONE_STACK, metadata=[("x-padding", "a" * size)], timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    frames = random_stacks(2, seed=5)
    np.testing.assert_array_equal(client.get_action(frames), policy.act(frames))
    assert server.server.servicer.shares.held == {}


def test_a_drain_ends_idle_streams_at_once_with_unavailable(onnx_model_path: Path) -> None:
    running = ServerThread(config_for(onnx_model_path))
    try:
        channel = grpc.insecure_channel(running.target)
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        import queue

        requests: queue.SimpleQueue[object] = queue.SimpleQueue()
        responses = stub.StreamActions(iter(requests.get, None))
        requests.put(ONE_STACK)
        next(responses)
        running.call(running.server.health.enter_graceful_shutdown())
        running.loop.call_soon_threadsafe(running.server.servicer.drain)
        with pytest.raises(grpc.RpcError) as caught:
            next(responses)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "the server is draining; reopen the stream on another replica" in caught.value.details()
        requests.put(None)
    finally:
        running.stop()
