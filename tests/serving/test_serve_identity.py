"""Who a client is and what the server tells about it (issue 43): failing closed on weak settings, tokens
and certificate subjects as identities, the access log and metrics naming them, reloads on SIGHUP."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_helpers import ISOLATED, REPO, ServerProcess, ServerThread, config_for, random_stacks, subprocess_env

from breakout.v1 import agent_pb2
from breakout_dqn import contract
from breakout_dqn.serving.client import AgentClient
from breakout_dqn.serving.config import AUTH_TOKEN_ENV, WATCHES_PER_CONNECTION
from breakout_dqn.serving.security import ClientSecurity

SERVE = [sys.executable, "-m", "breakout_dqn.cli", "serve", "--port", "0"]
ALICE, BOB, CAROL = "alice-token-0123456789", "bob-token-0123456789ab", "carol-token-0123456789"
ONE_STACK = agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES))


def tokens_file(path: Path, **tokens: str) -> Path:
    path.write_text("# name token\n" + "".join(f"{name} {token}\n" for name, token in tokens.items()))
    path.chmod(0o600)
    return path


def serve_once(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`serve` that must stop at start: it would serve until the timeout otherwise."""
    return subprocess.run([*SERVE, *flags], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env={**subprocess_env(), **(env or {})})


@pytest.mark.parametrize(("value", "expected"), [
    ("   ", "$BREAKOUT_DQN_AUTH_TOKEN is set but blank"),
    ("", "$BREAKOUT_DQN_AUTH_TOKEN is set but blank"),
    ("x", "the token in $BREAKOUT_DQN_AUTH_TOKEN has 1 characters; a server takes at least 16"),
])
def test_a_blank_or_short_token_stops_the_server(onnx_model_path: Path, value: str, expected: str) -> None:
    """Finding 5: a blank token started the server with authentication off; a one-character one was taken."""
    result = serve_once("--model", str(onnx_model_path), env={AUTH_TOKEN_ENV: value})
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith(f"breakout-dqn serve: error: {expected}")
    assert result.stderr.count("\n") == 1


def test_an_open_network_without_tls_or_a_token_is_warned_about_loudly(onnx_model_path: Path) -> None:
    """Finding 5: binding 0.0.0.0 without TLS or a token logged one INFO line."""
    server = ServerProcess([*SERVE, "--model", str(onnx_model_path), "--host", "0.0.0.0"])
    try:
        deadline = time.monotonic() + 30
        while "WITHOUT AUTHENTICATION" not in server.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "WARNING OPEN NETWORK WITHOUT TLS: 0.0.0.0 is reachable from other machines" in server.stderr
        assert "WARNING OPEN NETWORK WITHOUT AUTHENTICATION: anyone who reaches 0.0.0.0:" in server.stderr
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.wait(30)
        server.kill()


def test_reflection_can_be_turned_off(onnx_model_path: Path) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    running = ServerThread(config_for(onnx_model_path, reflection=False))
    try:
        with grpc.insecure_channel(running.target) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            with pytest.raises(grpc.RpcError) as caught:
                list(stub.ServerReflectionInfo(iter([request]), timeout=10))
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        running.stop()


def access_entries(records: list[logging.LogRecord]) -> list[dict]:
    return [json.loads(record.getMessage().split(" ", 1)[1]) for record in records
            if record.name == "breakout_dqn.serve.access"]


def test_each_token_names_its_client_in_the_shares_the_access_log_and_the_metrics(
        onnx_model_path: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Finding 6: no access log, no identity; the share is kept per token, across connections."""
    caplog.set_level(logging.INFO, logger="breakout_dqn.serve.access")
    running = ServerThread(config_for(onnx_model_path, tokens_file=tokens_file(tmp_path / "tokens", alice=ALICE,
                                                                               bob=BOB),
                                      access_log_sample=1.0, max_streams=8, client_stream_share=0.25))
    try:
        alice = [AgentClient(running.target, timeout=10, security=ClientSecurity(token=ALICE),
                             max_message_bytes=(8 << 20) + number) for number in range(3)]  # 3 connections
        held = [alice[0].stream(), alice[1].stream()]
        for session in held:
            session.get_action(random_stacks(1))
        with pytest.raises(grpc.RpcError) as caught:  # alice's share of streams is 2, whatever the connection
            alice[2].stream().get_action(random_stacks(1))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        with AgentClient(running.target, timeout=10, security=ClientSecurity(token=BOB)) as bob, bob.stream() as own:
            assert own.get_action(random_stacks(1)).shape == (1,)  # bob has a share of his own
            assert bob.get_action(random_stacks(1)).shape == (1,)
        with pytest.raises(grpc.RpcError) as caught:
            AgentClient(running.target, timeout=10).get_action(random_stacks(1))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        for session in held:
            session.close()
        for client in alice:
            client.close()
    finally:
        running.stop()
    entries = access_entries(caplog.records)
    assert {entry["client"] for entry in entries} >= {"alice", "bob", "anonymous"}
    refusal = next(entry for entry in entries if entry.get("reason") == "unauthenticated")
    assert refusal["peer"].startswith("ipv4:127.0.0.1:") and refusal["code"] == "UNAUTHENTICATED"
    assert any(entry.get("reason") == "client_share" and entry["client"] == "alice" for entry in entries)
    registry = running.server.metrics.registry
    assert registry.get_sample_value("breakout_dqn_client_requests_total", {"client": "bob"}) == 2
    assert ALICE not in caplog.text and BOB not in caplog.text


def test_tokens_are_reloaded_on_sighup(onnx_model_path: Path, tmp_path: Path) -> None:
    path = tokens_file(tmp_path / "tokens", alice=ALICE)
    server = ServerProcess([*SERVE, "--model", str(onnx_model_path), "--tokens-file", str(path)])
    try:
        with AgentClient(server.target, timeout=10, security=ClientSecurity(token=ALICE)) as alice:
            alice.wait_until_serving(60)
            assert alice.get_action(random_stacks(1)).shape == (1,)
            tokens_file(path, carol=CAROL)
            server.process.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 10
            while "reloaded the tokens" not in server.stderr and time.monotonic() < deadline:
                time.sleep(0.05)
            with pytest.raises(grpc.RpcError) as caught:
                alice.get_action(random_stacks(1))
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with AgentClient(server.target, timeout=10, security=ClientSecurity(token=CAROL)) as carol:
            assert carol.get_action(random_stacks(1)).shape == (1,)
        path.write_text("carol\n")  # a broken file: the server keeps the tokens it has
        server.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "kept the old tokens" not in server.stderr and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "kept the old tokens: --tokens-file" in server.stderr
        with AgentClient(server.target, timeout=10, security=ClientSecurity(token=CAROL)) as carol:
            assert carol.get_action(random_stacks(1)).shape == (1,)
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.wait(30)
        server.kill()


def mutual(certificates: dict[str, Path], who: str = "client") -> ClientSecurity:
    return ClientSecurity(tls=True, ca=certificates["ca"].read_bytes(), cert=certificates[f"{who}.crt"].read_bytes(),
                          key=certificates[f"{who}.key"].read_bytes())


def test_a_certificate_subject_is_the_clients_name_and_an_allow_list_keeps_others_out(
        onnx_model_path: Path, certificates: dict[str, Path], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Finding 6: any certificate the CA signed was accepted, and its name was neither logged nor counted."""
    caplog.set_level(logging.INFO, logger="breakout_dqn.serve.access")
    subjects = tmp_path / "subjects"
    subjects.write_text("# allowed clients\nCN=client\n")
    settings = {"tls_cert": certificates["server.crt"], "tls_key": certificates["server.key"],
                "tls_client_ca": certificates["ca"], "access_log_sample": 1.0}
    running = ServerThread(config_for(onnx_model_path, tls_client_subjects=subjects, **settings))
    try:
        with AgentClient(running.target, timeout=10, security=mutual(certificates)) as client:
            assert client.get_action(random_stacks(1)).shape == (1,)
        subjects.write_text("CN=someone-else\n")
        running.server.reload()
        with AgentClient(running.target, timeout=10, security=mutual(certificates)) as client:
            with pytest.raises(grpc.RpcError) as caught:
                client.get_action(random_stacks(1))
            assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert client.health() == "SERVING"  # probes are not subject to the list
    finally:
        running.stop()
    entries = access_entries(caplog.records)
    assert any(entry["client"] == "CN=client" and entry["code"] == "OK" for entry in entries)
    assert any(entry["client"] == "anonymous" and entry.get("reason") == "permission_denied" for entry in entries)
    registry = running.server.metrics.registry
    assert registry.get_sample_value("breakout_dqn_client_requests_total", {"client": "CN=client"}) >= 1


def test_certificates_are_reloaded_on_sighup_for_new_connections(onnx_model_path: Path,
                                                                 certificates: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    """Finding 7: rotating a certificate needed a restart."""
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(certificates["server.crt"], cert)
    shutil.copy(certificates["server.key"], key)
    key.chmod(0o600)
    running = ServerThread(config_for(onnx_model_path, tls_cert=cert, tls_key=key))
    old_ca = ClientSecurity(tls=True, ca=certificates["ca"].read_bytes())
    new_ca = ClientSecurity(tls=True, ca=certificates["other-ca"].read_bytes())
    try:
        with AgentClient(running.target, timeout=10, security=old_ca) as client:
            assert client.get_action(random_stacks(1)).shape == (1,)
        shutil.copy(certificates["other-server.crt"], cert)  # rotated: signed by another CA
        shutil.copy(certificates["other-server.key"], key)
        running.server.reload()
        with AgentClient(running.target, timeout=10, security=new_ca) as client:
            assert client.get_action(random_stacks(1)).shape == (1,)
        with AgentClient(running.target, timeout=3, security=old_ca) as client, \
                pytest.raises(grpc.RpcError) as caught:
            client._stub.GetAction(ONE_STACK, timeout=3, wait_for_ready=False)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE  # the old certificate is gone
    finally:
        running.stop()


def test_a_private_file_readable_by_others_is_warned_about(onnx_model_path: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    """Finding 7: a key file with mode 0644 was accepted silently."""
    path = tokens_file(tmp_path / "tokens", alice=ALICE)
    os.chmod(path, 0o644)
    running = ServerThread(config_for(onnx_model_path, tokens_file=path))
    running.stop()
    assert f"--tokens-file {path} is readable by other users (mode 644): chmod 600 it" in caplog.text


def test_health_watch_streams_are_capped_per_connection(onnx_model_path: Path) -> None:
    """Finding 6: 1,400 health Watch streams on a connection were held until its maximum age."""
    running = ServerThread(config_for(onnx_model_path))

    async def watch(count: int) -> list[str]:
        async with grpc.aio.insecure_channel(running.target, options=ISOLATED) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            calls = [stub.Watch(health_pb2.HealthCheckRequest(service="")) for _ in range(count)]

            async def first(call) -> str:
                try:
                    await call.read()
                    return "OK"
                except grpc.aio.AioRpcError as error:
                    return error.code().name

            outcomes = await asyncio.gather(*(first(call) for call in calls))
            for call in calls:
                call.cancel()
            return outcomes

    try:
        outcomes = asyncio.run(watch(20))
        assert outcomes.count("OK") == WATCHES_PER_CONNECTION
        assert outcomes.count("RESOURCE_EXHAUSTED") == 20 - WATCHES_PER_CONNECTION
    finally:
        running.stop()
