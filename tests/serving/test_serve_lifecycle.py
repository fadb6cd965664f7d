"""``breakout-dqn serve`` as a process: start, refuse bad models, drain on SIGTERM."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_helpers import REPO, ServerProcess, random_stacks, subprocess_env

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving.client import AgentClient

SERVE = [sys.executable, "-m", "breakout_dqn.cli", "serve"]

# The real serve() with a model whose forward pass takes 0.3 s, so calls are in flight at SIGTERM.
SLOW_SERVER = """
import asyncio, logging, sys, time
from breakout_dqn.serving.config import ServerConfig
from breakout_dqn.serving.server import load_policy, serve

logging.basicConfig(level=logging.INFO)

class Slow:
    def __init__(self, policy):
        self.policy, self.metadata, self.version = policy, policy.metadata, policy.version
    def q_values(self, frames):
        time.sleep(0.3)
        return self.policy.q_values(frames)

# inline_gap_ms=-1: a 0.3 s pass run on the event loop would block the server, not hold calls in flight
config = ServerConfig(model=sys.argv[1], port=0, max_batch=1, grace_s=10, inline_gap_ms=-1,
                      max_queue_wait_ms=60000)
sys.exit(asyncio.run(serve(config, load=lambda c: Slow(load_policy(c)))))
"""


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*SERVE, *args], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env=env or subprocess_env())


def test_cli_serves_then_exits_cleanly_on_sigterm(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    server = ServerProcess([*SERVE, "--model", str(onnx_model_path), "--port", "0"])
    try:
        assert server.target.startswith("127.0.0.1:")  # loopback by default
        with AgentClient(server.target, timeout=30) as client:
            client.wait_until_serving(60)
            frames = random_stacks(3, seed=5)
            np.testing.assert_array_equal(client.get_action(frames), policy.act(frames))
        server.process.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0, server.stderr
        assert "stopped after" in server.stderr
    finally:
        server.kill()


def test_sigterm_drains_in_flight_calls(onnx_model_path: Path) -> None:
    server = ServerProcess([sys.executable, "-c", SLOW_SERVER, str(onnx_model_path)])
    try:
        channel = grpc.insecure_channel(server.target)
        AgentClient(server.target).wait_until_serving(60)
        health = health_pb2_grpc.HealthStub(channel)
        watch = health.Watch(health_pb2.HealthCheckRequest(service="breakout.v1.AgentService"), timeout=60)
        statuses: list[int] = []

        def follow() -> None:
            with contextlib.suppress(grpc.RpcError):  # the server cuts the stream when it stops
                statuses.extend(response.status for response in watch)

        watcher = threading.Thread(target=follow, daemon=True)
        watcher.start()

        session = AgentClient(server.target, timeout=30).stream()  # a game's stream, idle at SIGTERM
        assert session.get_action(np.zeros((1, 84, 84, 4), np.uint8)).shape == (1,)

        stub = agent_pb2_grpc.AgentServiceStub(channel)
        request = agent_pb2.GetActionRequest(frames=bytes(2 * contract.STACK_BYTES))
        in_flight = [stub.GetAction.future(request, timeout=30) for _ in range(4)]  # 4 x 0.3 s, one at a time
        time.sleep(0.4)
        assert sum(call.done() for call in in_flight) <= 1
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.2)

        with pytest.raises(grpc.RpcError) as caught:  # a new call is refused while draining
            agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(server.target)).GetAction(request, timeout=10)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        for call in in_flight:  # every call in flight at SIGTERM is answered
            assert len(call.result().actions) == 2
        stopping = time.monotonic()
        assert server.wait(30) == 0, server.stderr
        assert time.monotonic() - stopping < 5  # the open Watch and StreamActions streams do not hold the 10 s grace
        with pytest.raises(grpc.RpcError) as caught:  # the stream ended with the server: the client can tell
            session.get_action(np.zeros((1, 84, 84, 4), np.uint8))
        assert caught.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        watcher.join(timeout=10)
        assert statuses[:1] == [health_pb2.HealthCheckResponse.SERVING]
        assert health_pb2.HealthCheckResponse.NOT_SERVING in statuses  # announced before draining
        assert "stopped after BatchStats(requests=5" in server.stderr  # 4 calls + 1 stream request
    finally:
        server.kill()


def stripped_model(onnx_model_path: Path, tmp_path: Path, **metadata: str) -> Path:
    import onnx

    model = onnx.load(onnx_model_path)
    props = {p.key: p.value for p in model.metadata_props}
    props.update(metadata)
    props = {k: v for k, v in props.items() if v}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    path = tmp_path / "other.onnx"
    onnx.save(model, path)
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({contract.META_CONTRACT: ""}, "missing breakout_dqn.contract (export it with `breakout-dqn export`"),
        ({contract.META_SERVE_POLICY: "agent-presses-fire"}, "breakout_dqn.serve_policy='agent-presses-fire'"),
        ({contract.META_ACTIONS: "NOOP,FIRE,LEFT,RIGHT"}, "breakout_dqn.action_meanings"),
    ],
)
def test_a_model_whose_contract_does_not_match_is_refused(onnx_model_path: Path, tmp_path: Path,
                                                          change: dict[str, str], expected: str) -> None:
    path = stripped_model(onnx_model_path, tmp_path, **change)
    result = run_serve("--model", str(path), "--port", "0")
    assert result.returncode == 2
    assert f"breakout-dqn serve: error: refusing to serve {path}" in result.stderr
    assert expected in result.stderr


def test_a_graph_that_does_not_match_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["q_values"])], "wrong",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("q_values", TensorProto.FLOAT, ["N", 4])],
    )
    path = tmp_path / "wrong.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    result = run_serve("--model", str(path), "--port", "0")
    assert result.returncode == 2
    assert "model must have one input named 'frames'" in result.stderr

    path.write_bytes(b"not an onnx file")
    result = run_serve("--model", str(path), "--port", "0")
    assert result.returncode == 2 and "cannot load ONNX model" in result.stderr


def test_missing_model_is_a_clear_error(tmp_path: Path) -> None:
    result = run_serve("--model", str(tmp_path / "nope.onnx"))
    assert result.returncode == 2
    assert f"breakout-dqn serve: error: model file not found: {tmp_path / 'nope.onnx'}" in result.stderr

    env = {**subprocess_env(), "BREAKOUT_DQN_MODEL": str(tmp_path / "env.onnx")}
    result = run_serve(env=env)  # no --model: $BREAKOUT_DQN_MODEL, else models/breakout-dqn.onnx
    assert result.returncode == 2
    assert f"model file not found: {tmp_path / 'env.onnx'}" in result.stderr and "BREAKOUT_DQN_MODEL" in result.stderr


def test_default_model_is_the_shipped_file(monkeypatch: pytest.MonkeyPatch) -> None:
    from breakout_dqn.serving.config import default_model_path

    monkeypatch.delenv("BREAKOUT_DQN_MODEL", raising=False)
    assert default_model_path() == REPO / "models" / "breakout-dqn.onnx"
    monkeypatch.setenv("BREAKOUT_DQN_MODEL", "/somewhere/model.onnx")
    assert default_model_path() == Path("/somewhere/model.onnx")


def test_host_and_port_defaults_come_from_the_environment(onnx_model_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """What the images rely on: BREAKOUT_DQN_HOST/PORT move `serve`, and the HEALTHCHECK follows the port."""
    from breakout_dqn.serving import healthcheck

    with socket.socket() as probe:  # a free port other than the 50051 default
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ServerProcess([*SERVE, "--model", str(onnx_model_path)],
                           env={"BREAKOUT_DQN_HOST": "127.0.0.1", "BREAKOUT_DQN_PORT": str(port)})
    try:
        assert server.target == f"127.0.0.1:{port}"
        monkeypatch.delenv("BREAKOUT_DQN_HEALTH_TARGET", raising=False)
        monkeypatch.setenv("BREAKOUT_DQN_PORT", str(port))
        assert healthcheck.default_target() == f"127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while healthcheck.main([]) != 0:  # NOT_SERVING until the model has loaded
            assert time.monotonic() < deadline, server.stderr
            time.sleep(0.1)
        monkeypatch.setenv("BREAKOUT_DQN_HEALTH_TARGET", "127.0.0.1:1")  # an explicit target wins
        assert healthcheck.main(["--timeout", "0.5"]) == 1
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.wait(30)
        server.kill()
    result = run_serve("--model", str(onnx_model_path), env={**subprocess_env(), "BREAKOUT_DQN_PORT": "http"})
    assert result.returncode == 2  # the variable is named, not the flag it stands for
    assert result.stderr.strip().endswith("error: $BREAKOUT_DQN_PORT: invalid port 'http': a number in 1-65535 "
                                          "(0: any free port)")


def test_an_empty_port_variable_means_the_default_for_serve_and_the_healthcheck(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`-e BREAKOUT_DQN_PORT=` must not make `serve` bind one port while the HEALTHCHECK probes another."""
    from breakout_dqn.serving import healthcheck
    from breakout_dqn.serving.config import DEFAULT_PORT
    from breakout_dqn.serving.options import config_from_args
    from breakout_dqn.serving.server import build_parser

    def port() -> int:
        return config_from_args(build_parser().parse_args([])).port

    monkeypatch.delenv("BREAKOUT_DQN_HEALTH_TARGET", raising=False)
    monkeypatch.setenv("BREAKOUT_DQN_PORT", "")
    assert port() == DEFAULT_PORT == 50051
    assert healthcheck.default_target() == f"127.0.0.1:{DEFAULT_PORT}"
    monkeypatch.setenv("BREAKOUT_DQN_PORT", "50123")
    assert port() == 50123
    assert healthcheck.default_target() == "127.0.0.1:50123"


def test_port_in_use_is_a_clear_error(onnx_model_path: Path) -> None:
    server = ServerProcess([*SERVE, "--model", str(onnx_model_path), "--port", "0"])
    try:
        port = server.target.rsplit(":", 1)[1]
        result = run_serve("--model", str(onnx_model_path), "--port", port)
        assert result.returncode == 1
        assert f"breakout-dqn serve: error: cannot bind 127.0.0.1:{port}" in result.stderr
    finally:
        server.process.send_signal(signal.SIGTERM)
        server.wait(30)
        server.kill()
