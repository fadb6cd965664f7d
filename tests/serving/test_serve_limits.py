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
from serving_helpers import ISOLATED, ServerThread, SlowPolicy, config_for, metric, random_stacks

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
    """The issue's client: ``count`` streams on one connection of its own, one request each, then silence.

    Returns the streams that were answered (still open) and the refusals' messages, as far as the
    client received them.
    """
    channel = grpc.aio.insecure_channel(target, options=ISOLATED)
    stub = agent_pb2_grpc.AgentServiceStub(channel)
    calls = [stub.StreamActions() for _ in range(count)]
    answered, refused = [], []
    for call in calls:
        # A refused stream may have its status before this write (the write or read then fails on the
        # client's side): the server's answer is the call's status.
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


def refusals(running: ServerThread, reason: str, expected: float | None = None) -> float:
    return metric(running, "breakout_dqn_refusals_total", {"reason": reason}, expected)


def test_silent_streams_past_a_clients_stream_share_are_refused_and_idle_out(onnx_model_path: Path,
                                                                            policy: OnnxPolicy) -> None:
    """One client (here, by address) holds at most its share of --max-streams; the others are still served."""
    running = ServerThread(config_for(onnx_model_path, stream_idle_timeout_s=1.0, max_streams=64,
                                      client_stream_share=0.25, client_key="address"))
    admission = running.server.admission
    try:
        answered, refused = running.call(silent_streams(running.target, 24))
        assert len(answered) == 16 == admission.client_stream_limit  # 0.25 of 64
        assert refusals(running, "client_share", 8) == 8 and len(refused) <= 8
        assert refused and refused[0] == ("per-client limit: this client already holds its 16 open streams "
                                          "(--client-stream-share 0.25 of --max-streams 64); close some first")
        with AgentClient(running.target, timeout=10) as other:  # GetAction is work, not a stream: served
            for seed in range(5):
                frames = random_stacks(1, seed=seed)
                np.testing.assert_array_equal(other.get_action(frames), policy.act(frames))
        # The silent streams end once idle past --stream-idle-timeout, with a status that says why.
        freed_after = wait_until(lambda: admission.sessions == 0, timeout=10)
        print(f"\n{len(answered)} silent streams open, {len(refused)} refused; freed {freed_after:.2f} s later")
        ends = running.call(statuses(answered))
        assert {code for code, _ in ends} == {grpc.StatusCode.DEADLINE_EXCEEDED}
        assert "no request on this stream for 1 s (the server's --stream-idle-timeout)" in ends[0][1]
        assert admission.open_calls == 0 and admission.in_flight == 0
    finally:
        running.stop()


def test_one_connection_opens_at_most_its_http2_streams_and_the_rest_wait_in_the_client(
        onnx_model_path: Path) -> None:
    running = ServerThread(config_for(onnx_model_path, max_streams_per_connection=4))
    admission = running.server.admission

    async def until(condition, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.01)

    async def six_streams() -> list[int]:
        async with grpc.aio.insecure_channel(running.target, options=ISOLATED) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            calls = [stub.StreamActions() for _ in range(6)]
            writes = [asyncio.ensure_future(call.write(ONE_STACK)) for call in calls]
            await until(lambda: sum(write.done() for write in writes) == 4)  # 4 streams started
            await asyncio.sleep(0.5)  # the other two stay in the client: the server never sees them
            seen = [admission.sessions, sum(write.done() for write in writes)]
            started = next(index for index, write in enumerate(writes) if write.done())
            calls[started].cancel()  # a stream ends: one of the waiting two takes its place
            await until(lambda: sum(write.done() for write in writes) == 5)
            await until(lambda: admission.sessions == 4)
            seen.append(admission.sessions)
            for call, write in zip(calls, writes, strict=True):
                call.cancel()
                write.cancel()  # a write to a stream that never started would wait for it
            await asyncio.gather(*writes, return_exceptions=True)
            return seen

    try:
        assert asyncio.run(six_streams()) == [4, 4, 4]
        assert refusals(running, "capacity") == refusals(running, "client_share") == 0
    finally:
        running.stop()


def test_an_active_or_busy_stream_is_not_idle(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.8)  # one answer takes longer than the idle timeout
    running = ServerThread(config_for(onnx_model_path, stream_idle_timeout_s=0.5, inline_gap_ms=-1),
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
        assert running.server.admission.sessions == 0
    finally:
        running.stop()


def test_the_work_share_and_the_connections_per_client_count_an_address(onnx_model_path: Path,
                                                                         policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.3)
    running = ServerThread(config_for(onnx_model_path, max_in_flight=8, client_share=0.25, client_key="address",
                                      max_connections_per_client=2, inline_gap_ms=-1, max_batch=1),
                           lambda config: slow)
    try:
        stubs = [agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(running.target, options=ISOLATED))
                 for _ in range(3)]  # three connections from one address
        calls = [stubs[index % 2].GetAction.future(ONE_STACK, timeout=30) for index in range(3)]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
                assert error.details().startswith("per-client limit: this client already has its 2 requests")
                assert "127.0.0.1" not in error.details()
        assert sorted(codes) == ["OK", "OK", "RESOURCE_EXHAUSTED"]  # 0.25 of 8: two at a time for the address
        holding = [stubs[index].GetAction.future(ONE_STACK, timeout=30) for index in range(2)]
        wait_until(lambda: len(running.server.admission.connections.get("ipv4:127.0.0.1", ())) == 2)
        with pytest.raises(grpc.RpcError) as caught:  # a third connection while two hold calls
            stubs[2].GetModelInfo(agent_pb2.GetModelInfoRequest(), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "--max-connections-per-client 2 connections" in caught.value.details()
        assert [call.result().actions[0] >= 0 for call in holding] == [True, True]
        wait_until(lambda: running.server.admission.open_calls == 0)
        assert running.server.admission.connections == {}
    finally:
        running.stop()


def test_a_request_that_would_wait_too_long_is_shed_at_once(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.2)
    running = ServerThread(config_for(onnx_model_path, max_batch=1, inline_gap_ms=-1, max_queue_wait_ms=300,
                                      client_share=1.0), lambda config: slow)
    try:
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(running.target))
        stub.GetAction(ONE_STACK, timeout=30)  # the batcher learns ~0.2 s a stack
        calls = [stub.GetAction.future(ONE_STACK, timeout=30) for _ in range(8)]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append("OK")
            except grpc.RpcError as error:
                codes.append(error.code().name)
                assert error.details().startswith("server overloaded: this request would wait more than "
                                                  "--max-queue-wait-ms 300")
        assert codes.count("OK") >= 2 and "RESOURCE_EXHAUSTED" in codes, codes
        shed = codes.count("RESOURCE_EXHAUSTED")
        assert refusals(running, "overloaded", shed) == shed
    finally:
        running.stop()


def test_past_the_memory_ceiling_new_calls_are_refused_but_health_answers(onnx_model_path: Path) -> None:
    running = ServerThread(config_for(onnx_model_path, memory_limit_mib=1))  # below any process's memory
    try:
        with AgentClient(running.target, timeout=10) as client:
            assert client.health() == "SERVING"
            with pytest.raises(grpc.RpcError) as caught:
                client.get_action(random_stacks(1))
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert caught.value.details().startswith("server low on memory (--memory-limit-mib)")
        assert refusals(running, "memory", 1) == 1
    finally:
        running.stop()


def test_abrupt_cancels_free_every_slot(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.3)
    running = ServerThread(config_for(onnx_model_path, inline_gap_ms=-1, max_batch=1, max_queue_wait_ms=60_000),
                           lambda config: slow)  # no shedding: the calls must queue
    admission = running.server.admission
    try:
        stub = agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(running.target))
        with AgentClient(running.target, timeout=30) as agent:
            busy_stream = agent.stream()
            idle_stream = agent.stream()
            idle_stream.get_action(random_stacks(1))
            unary = [stub.GetAction.future(ONE_STACK, timeout=30) for _ in range(12)]  # 0.3 s each, one by one
            wait_until(lambda: admission.in_flight >= 6)
            for call in unary:
                call.cancel()
            busy_stream._requests.put(ONE_STACK)  # mid-request when cancelled
            time.sleep(0.05)
            busy_stream.cancel()
            idle_stream.cancel()
            wait_until(lambda: admission.open_calls == 0 and admission.in_flight == 0)
            assert not admission.work_by_client and not admission.streams_by_client
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
    wait_until(lambda: server.server.admission.open_calls == 0)


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
