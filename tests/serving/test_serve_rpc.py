"""A real in-process server on a loopback port: answers, status codes, health, reflection, limits."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from serving_helpers import ServerThread, SlowPolicy, config_for, metric, random_stacks

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving import healthcheck
from breakout_dqn.serving.client import AgentClient
from breakout_dqn.serving.server import load_policy
from breakout_dqn.serving.service import CLIENT_METADATA


def stub_for(target: str, max_bytes: int = 64 << 20) -> agent_pb2_grpc.AgentServiceStub:
    options = [("grpc.max_send_message_length", max_bytes), ("grpc.max_receive_message_length", max_bytes)]
    return agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(target, options=options))


def assert_still_serving(client: AgentClient, policy: OnnxPolicy) -> None:
    frames = random_stacks(2, seed=99)
    np.testing.assert_array_equal(client.get_action(frames), policy.act(frames))


def test_action_is_onnxruntime_argmax(client: AgentClient, policy: OnnxPolicy) -> None:
    for seed in range(5):
        frames = random_stacks(1, seed)
        actions = client.get_action(frames[0])  # one [84,84,4] stack
        np.testing.assert_array_equal(actions, np.argmax(policy.q_values(frames), axis=1))
    assert client.model_version == policy.version
    assert client.model_version.startswith(f"{policy.metadata[contract.META_VERSION]}+{policy.sha256[:12]}")


def test_batch_request_answers_each_stack_in_order(client: AgentClient, policy: OnnxPolicy) -> None:
    frames = random_stacks(7, seed=3)
    # Stacks that the untrained net ranks differently, so a reordering would show.
    expected = policy.q_values(frames)
    actions, q_values = client.get_q_values(frames)
    assert actions.shape == (7,) and q_values.shape == (7, contract.NUM_ACTIONS)
    np.testing.assert_array_equal(actions, np.argmax(expected, axis=1))
    np.testing.assert_allclose(q_values, expected, rtol=1e-5, atol=1e-6)
    single = np.concatenate([client.get_q_values(frames[i])[1] for i in range(7)])
    np.testing.assert_allclose(q_values, single, rtol=1e-5, atol=1e-6)


def test_q_values_only_when_asked(server: ServerThread) -> None:
    stub = stub_for(server.target)
    frames = contract.frames_to_bytes(random_stacks(2))
    plain = stub.GetAction(agent_pb2.GetActionRequest(frames=frames), timeout=30)
    assert len(plain.actions) == 2 and len(plain.q_values) == 0 and plain.model_version
    asked = stub.GetAction(agent_pb2.GetActionRequest(frames=frames, return_q_values=True), timeout=30)
    assert len(asked.q_values) == 2 * contract.NUM_ACTIONS


def test_model_info_reports_the_contract(client: AgentClient, policy: OnnxPolicy) -> None:
    info = client.model_info()
    assert tuple(info.action_meanings) == contract.ACTION_MEANINGS
    assert info.serve_policy == contract.SERVE_POLICY == "fire-after-life-loss"
    assert info.preprocessing == contract.PREPROCESSING
    assert info.contract_version == contract.CONTRACT_VERSION
    assert info.model_version == policy.version
    assert (info.input.name, info.input.dtype, list(info.input.shape)) == ("frames", "uint8", [-1, 84, 84, 4])
    assert (info.output.name, info.output.dtype, list(info.output.shape)) == ("q_values", "float32", [-1, 4])
    assert info.stack_bytes == contract.STACK_BYTES
    assert info.max_stacks_per_request == 64
    # What a client needs of the metadata, not all of it: no parity fingerprint (~11 KB in a real model).
    assert dict(info.metadata) == {key: value for key, value in policy.metadata.items() if key in CLIENT_METADATA}
    assert contract.META_FINGERPRINT not in info.metadata and info.metadata[contract.META_CONTRACT]
    assert info.ByteSize() < 2048


@pytest.mark.parametrize(
    "size", [0, 1, contract.STACK_BYTES - 1, contract.STACK_BYTES + 1, 3 * contract.STACK_BYTES - 84]
)
def test_malformed_frames_are_invalid_argument(server: ServerThread, client: AgentClient, policy: OnnxPolicy,
                                               size: int) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub_for(server.target).GetAction(agent_pb2.GetActionRequest(frames=bytes(size)), timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "positive multiple of 28224 bytes" in caught.value.details()
    assert f"got {size} bytes" in caught.value.details()
    assert_still_serving(client, policy)


def test_oversized_message_is_resource_exhausted(server: ServerThread, client: AgentClient,
                                                 policy: OnnxPolicy) -> None:
    too_many = bytes(65 * contract.STACK_BYTES)  # the server takes at most 64 stacks per request
    with pytest.raises(grpc.RpcError) as caught:
        stub_for(server.target).GetAction(agent_pb2.GetActionRequest(frames=too_many), timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    largest = client.get_action(np.zeros((64, 84, 84, 4), np.uint8))  # the limit itself is fine
    assert largest.shape == (64,)
    assert_still_serving(client, policy)


def test_expired_deadline_is_deadline_exceeded(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    # A forward pass of 0.5 s: a fast server can otherwise answer before a busy client's deadline timer fires.
    slow = SlowPolicy(policy, delay_s=0.5)
    running = ServerThread(config_for(onnx_model_path, inline_gap_ms=-1), lambda config: slow)
    try:
        frames = contract.frames_to_bytes(random_stacks(1))
        with pytest.raises(grpc.RpcError) as caught:
            stub_for(running.target).GetAction(agent_pb2.GetActionRequest(frames=frames), timeout=0.05)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        with AgentClient(running.target, timeout=30) as agent:
            assert_still_serving(agent, policy)
    finally:
        running.stop()


def test_health_and_reflection(server: ServerThread, capsys: pytest.CaptureFixture[str]) -> None:
    assert healthcheck.main(["--server", server.target]) == 0  # the container's probe
    assert capsys.readouterr().out.strip() == f"{server.target}: SERVING"
    assert healthcheck.main(["--target", "127.0.0.1:1", "--timeout", "0.5"]) == 1  # the old spelling too
    channel = grpc.insecure_channel(server.target)
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "breakout.v1.AgentService"):
        status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
        assert status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as caught:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND

    database = ProtoReflectionDescriptorDatabase(channel)
    services = set(database.get_services())
    assert {"breakout.v1.AgentService", "grpc.health.v1.Health"} <= services
    from google.protobuf.descriptor_pool import DescriptorPool

    service = DescriptorPool(database).FindServiceByName("breakout.v1.AgentService")
    assert {m.name for m in service.methods} == {"GetAction", "StreamActions", "PlayGame", "GetModelInfo"}
    assert service.methods_by_name["StreamActions"].input_type.name == "GetActionRequest"
    assert service.methods_by_name["PlayGame"].input_type.name == "GameFrame"  # grpcurl can describe it
    assert service.methods_by_name["GetAction"].input_type.fields_by_name["frames"].type == 12  # TYPE_BYTES


def test_deadline_expiring_in_the_queue(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    """A call whose deadline passes while it waits is DEADLINE_EXCEEDED and never reaches the model."""
    slow = SlowPolicy(policy, delay_s=0.4)
    running = ServerThread(config_for(onnx_model_path, max_batch=1, inline_gap_ms=-1), lambda config: slow)
    try:
        stub = stub_for(running.target)
        busy = stub.GetAction.future(agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES)), timeout=30)
        time.sleep(0.1)  # the first call now holds the model for 0.4 s
        calls_before = len(slow.batch_sizes)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetAction(agent_pb2.GetActionRequest(frames=bytes(2 * contract.STACK_BYTES)), timeout=0.1)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert len(busy.result().actions) == 1
        time.sleep(0.5)
        assert 2 not in slow.batch_sizes[calls_before:]  # the expired call was dropped, not computed
        assert running.stats.dropped == 1
        with AgentClient(running.target, timeout=30) as agent:
            assert_still_serving(agent, policy)
    finally:
        running.stop()


def test_concurrency_limit_is_resource_exhausted(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    slow = SlowPolicy(policy, delay_s=0.3)
    # The global limit: client_share=1.0 lets this one client take all of it.
    running = ServerThread(config_for(onnx_model_path, max_batch=1, max_in_flight=2, inline_gap_ms=-1,
                                      client_share=1.0, max_queue_wait_ms=60_000), lambda config: slow)
    try:
        stub = stub_for(running.target)
        request = agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES))
        calls = [stub.GetAction.future(request, timeout=30) for _ in range(6)]
        codes = []
        for call in calls:
            try:
                call.result()
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                codes.append(error.code())
                assert error.details() == ("server busy: --max-in-flight 2 requests are being answered; retry "
                                           "with backoff")
        assert codes.count(grpc.StatusCode.OK) == 2
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 4
        assert metric(running, "breakout_dqn_refusals_total", {"reason": "capacity"}, 4) == 4
        with AgentClient(running.target, timeout=30) as agent:
            assert_still_serving(agent, policy)
    finally:
        running.stop()


def test_not_serving_until_the_model_is_loaded(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    release = threading.Event()

    def slow_load(config):
        assert release.wait(30)
        return load_policy(config)

    running = ServerThread(config_for(onnx_model_path), slow_load, wait_load=False)
    try:
        with AgentClient(running.target, timeout=10) as agent:
            assert agent.health() == "NOT_SERVING"
            assert agent.health("") == "NOT_SERVING"
            assert healthcheck.main(["--server", running.target]) == 1
            for call in (lambda: agent.get_action(random_stacks(1)), agent.model_info):
                with pytest.raises(grpc.RpcError) as caught:
                    call()
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
                assert "loading" in caught.value.details()
            release.set()
            agent.wait_until_serving(30)
            assert_still_serving(agent, policy)
    finally:
        release.set()
        running.stop()
