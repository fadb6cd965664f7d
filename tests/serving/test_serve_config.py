"""Each serving default is defined once (serving/config.py) and every reader agrees with it."""

from __future__ import annotations

import dataclasses
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
from serving_helpers import REPO, subprocess_env

from breakout.v1 import agent_pb2
from breakout_dqn import contract
from breakout_dqn.serving import config, healthcheck, play
from breakout_dqn.serving.batcher import Batcher
from breakout_dqn.serving.client import AgentClient, channel_options
from breakout_dqn.serving.config import ServerConfig
from breakout_dqn.serving.limits import ClientShares, per_client_limit
from breakout_dqn.serving.server import grpc_options, parse_args
from breakout_dqn.serving.service import AgentServicer, ServiceLimits


def defaults_of(function) -> dict[str, object]:
    return {name: p.default for name, p in inspect.signature(function).parameters.items()
            if p.default is not inspect.Parameter.empty}


def test_serve_flags_default_to_the_server_config(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in (config.HOST_ENV, config.PORT_ENV, config.MODEL_ENV):
        monkeypatch.delenv(variable, raising=False)
    args = parse_args([])
    expected = ServerConfig(model=Path("m.onnx"))
    flags = {"host": args.host, "port": args.port, "max_batch": args.max_batch, "max_delay_ms": args.max_delay_ms,
             "inline_gap_ms": args.inline_gap_ms, "max_concurrent": args.max_concurrent,
             "max_stacks_per_request": args.max_stacks_per_request, "grace_s": args.grace,
             "intra_op_threads": args.threads, "stream_idle_timeout_s": args.stream_idle_timeout,
             "keepalive_time_s": args.keepalive_time, "keepalive_timeout_s": args.keepalive_timeout,
             "client_share": args.client_share, "client_key": args.client_key,
             "max_connection_age_s": args.max_connection_age,
             "max_connection_age_grace_s": args.max_connection_age_grace, "tls_cert": args.tls_cert,
             "tls_key": args.tls_key, "tls_client_ca": args.tls_client_ca}
    assert flags == {name: getattr(expected, name) for name in flags}
    assert {field.name for field in dataclasses.fields(ServerConfig)} == {*flags, "model", "auth_token"}
    assert (expected.host, expected.port, expected.max_batch, expected.max_delay_ms, expected.inline_gap_ms,
            expected.max_stacks_per_request) == ("127.0.0.1", 50051, 64, 2.0, 0.2, 256)


def test_the_servicer_and_the_batcher_default_to_the_server_config() -> None:
    expected = ServerConfig(model=Path("m.onnx"))
    for function in (Batcher.__init__, AgentServicer.__init__):
        defaults = defaults_of(function)
        assert defaults["max_batch"] == expected.max_batch
        assert defaults["max_delay_s"] == expected.max_delay_ms / 1000
        assert defaults["inline_gap_s"] == expected.inline_gap_ms / 1000  # type: ignore[operator]
    limits = ServiceLimits()
    assert (limits.max_concurrent, limits.max_stacks_per_request) == (expected.max_concurrent,
                                                                       expected.max_stacks_per_request)
    assert (limits.client_share, limits.client_key, limits.stream_idle_timeout_s) == (
        expected.client_share, expected.client_key, expected.stream_idle_timeout_s)
    shares = defaults_of(ClientShares.__init__)
    assert (shares["max_concurrent"], shares["client_share"], shares["client_key"]) == (
        expected.max_concurrent, expected.client_share, expected.client_key)


def test_a_server_started_without_flags_is_protected() -> None:
    """Idle streams end, a client holds a quarter of the slots, vanished peers go, connections age."""
    options = dict(grpc_options(ServerConfig(model=Path("m.onnx"))))
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == options["grpc.http2.ping_timeout_ms"] == 10_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 10_000
    assert options["grpc.max_connection_age_ms"] == 300_000 and options["grpc.max_connection_age_grace_ms"] == 60_000
    assert config.STREAM_IDLE_TIMEOUT_S == 60 and per_client_limit(config.MAX_CONCURRENT, config.CLIENT_SHARE) == 64
    assert options["grpc.max_concurrent_streams"] == 64 + config.STREAM_HEADROOM  # a flood waits in its client
    assert options["grpc.http.overload_protection"] == 0
    # Our own clients ping no more often than the server allows (else: GOAWAY too_many_pings).
    client_options = dict(channel_options(1024))
    assert client_options["grpc.keepalive_time_ms"] >= options["grpc.http2.min_ping_interval_without_data_ms"]
    assert "grpc.max_connection_age_ms" not in dict(grpc_options(ServerConfig(model=Path("m"), max_connection_age_s=0)))


def test_the_client_can_send_the_largest_request_a_default_server_takes() -> None:
    server_limit = ServerConfig(model=Path("m.onnx")).max_message_bytes
    assert defaults_of(AgentClient.__init__)["max_message_bytes"] == server_limit
    assert server_limit == config.MAX_STACKS_PER_REQUEST * contract.STACK_BYTES + config.MESSAGE_OVERHEAD_BYTES
    # Fewer stacks per request shrink the limit, but never below one PlayGame frame of 4 RGB screens.
    assert ServerConfig(model=Path("m.onnx"), max_stacks_per_request=1).max_message_bytes == \
        4 * 210 * 160 * 3 + config.MESSAGE_OVERHEAD_BYTES
    assert ServerConfig(model=Path("m.onnx"), max_stacks_per_request=20).max_message_bytes == \
        20 * contract.STACK_BYTES + config.MESSAGE_OVERHEAD_BYTES


def test_play_and_the_client_use_the_same_server_and_deadlines() -> None:
    args = play.build_parser().parse_args([])
    assert args.server == f"{config.DEFAULT_HOST}:{config.DEFAULT_PORT}" == "127.0.0.1:50051"
    assert args.timeout == defaults_of(AgentClient.__init__)["timeout"] == config.CALL_TIMEOUT_S
    assert args.wait == defaults_of(AgentClient.wait_until_serving)["timeout"] == config.SERVING_WAIT_S
    assert args.lb == defaults_of(AgentClient.__init__)["lb_policy"] == config.LB_POLICY == "pick_first"
    assert play.build_parser().parse_args(["--lb", "round_robin"]).lb == "round_robin"


def test_the_service_name_is_the_generated_descriptors() -> None:
    assert healthcheck.SERVICE_NAME == f"{agent_pb2.DESCRIPTOR.package}.AgentService" == "breakout.v1.AgentService"
    assert defaults_of(AgentClient.health)["service"] == healthcheck.SERVICE_NAME
    assert defaults_of(healthcheck.check)["service"] == healthcheck.SERVICE_NAME


def test_the_config_and_the_health_probe_stay_cheap_to_import() -> None:
    """The image's HEALTHCHECK runs the probe every 10 s: no numpy, onnxruntime or model code."""
    code = (
        "import sys\n"
        "import breakout_dqn.serving.config\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('numpy', 'grpc', 'google')], 'config'\n"
        "import breakout_dqn.serving.healthcheck, breakout_dqn.serving.security\n"
        "probe = {'breakout_dqn', 'breakout_dqn.serving', 'breakout_dqn.serving.config',\n"
        "         'breakout_dqn.serving.healthcheck', 'breakout_dqn.serving.security'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnxruntime', 'breakout_dqn')\n"
        "               and m not in probe)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=subprocess_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
