"""`serve`'s flags are ``ServerConfig``'s fields; bad values are refused where they enter, named by flag or variable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from serving_helpers import REPO, subprocess_env

from breakout.v1 import agent_pb2
from breakout_dqn import contract
from breakout_dqn.errors import UsageError
from breakout_dqn.serving import config, healthcheck, options, play, server
from breakout_dqn.serving.client import AgentClient, channel_options
from breakout_dqn.serving.config import ServerConfig
from breakout_dqn.serving.server import grpc_options

VARIABLES = (config.HOST_ENV, config.PORT_ENV, config.MODEL_ENV, config.METRICS_PORT_ENV, config.AUTH_TOKEN_ENV)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in VARIABLES:
        monkeypatch.delenv(variable, raising=False)


def parsed(*argv: str, environ: dict[str, str] | None = None) -> ServerConfig:
    return options.config_from_args(server.build_parser().parse_args(list(argv)), environ or {})


def test_every_config_field_but_the_token_is_a_flag_and_each_flag_sets_its_field() -> None:
    flags = {action.dest for action in server.build_parser()._actions if action.dest != "help"}
    assert flags == {field.name for field in dataclasses.fields(ServerConfig)} - {"auth_token"}
    changed = parsed("--max-batch", "7", "--max-in-flight", "9", "--client-share", "0.5", "--grace", "3",
                     "--stream-idle-timeout", "4", "--no-reflection", "--tokens-file", "t.txt", "--client-key",
                     "address", "--inline-gap-ms", "-1")
    assert (changed.max_batch, changed.max_in_flight, changed.client_share, changed.grace_s) == (7, 9, 0.5, 3.0)
    assert (changed.stream_idle_timeout_s, changed.reflection, changed.client_key) == (4.0, False, "address")
    assert changed.tokens_file == Path("t.txt") and changed.inline_gap_s is None
    assert parsed() == ServerConfig()  # no flag: the dataclass's defaults, untouched
    assert parsed("--max-concurrent", "12").max_in_flight == 12  # the old spelling still works


def test_help_shows_each_default_once() -> None:
    text = " ".join(server.build_parser().format_help().split())
    assert "--max-in-flight N" in text and "(default: 256)" in text
    assert "(default: $BREAKOUT_DQN_PORT if set, else 50051)" in text
    assert "--max-concurrent" not in text  # hidden alias


@pytest.mark.parametrize(("argv", "expected"), [
    (["--port", "99999"], "port 99999 is out of range: 1-65535 (0: any free port)"),
    (["--port", "-1"], "port -1 is out of range"),
    (["--port", "abc"], "invalid port 'abc'"),
    (["--metrics-port", "70000"], "port 70000 is out of range"),
])
def test_a_port_outside_the_range_is_refused_by_its_flag(argv: list[str], expected: str,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        server.build_parser().parse_args(argv)
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"breakout-dqn serve: error: argument {argv[0]}") and expected in error


@pytest.mark.parametrize(("variable", "value", "expected"), [
    (config.PORT_ENV, "abc", "$BREAKOUT_DQN_PORT: invalid port 'abc'"),
    (config.PORT_ENV, "99999", "$BREAKOUT_DQN_PORT: port 99999 is out of range"),
    (config.METRICS_PORT_ENV, "x", "$BREAKOUT_DQN_METRICS_PORT: invalid port 'x'"),
])
def test_a_bad_variable_is_named_not_the_flag_it_stands_for(variable: str, value: str, expected: str) -> None:
    with pytest.raises(UsageError) as caught:
        parsed(environ={variable: value})
    assert str(caught.value).startswith(expected)
    flag = "--port" if variable == config.PORT_ENV else "--metrics-port"
    given = parsed(flag, "5", environ={variable: value})  # a flag wins: the variable is not read
    assert (given.port if variable == config.PORT_ENV else given.metrics_port) == 5


def test_the_variables_move_the_defaults_and_flags_win() -> None:
    environ = {config.PORT_ENV: "50123", config.HOST_ENV: "0.0.0.0", config.METRICS_PORT_ENV: "9090"}
    chosen = parsed(environ=environ)
    assert (chosen.port, chosen.host, chosen.metrics_port) == (50123, "0.0.0.0", 9090)
    assert parsed("--port", "7", environ=environ).port == 7
    assert parsed(environ={config.PORT_ENV: ""}).port == config.DEFAULT_PORT  # empty: the default


@pytest.mark.parametrize(("argv", "expected"), [
    (["--max-in-flight", "0"], "--max-in-flight must be >= 1, got 0"),
    (["--client-share", "1.5"], "--client-share must be in (0, 1], got 1.5"),
    (["--keepalive-time", "0"], "--keepalive-time must be > 0"),
    (["--grace", "-1"], "--grace must be >= 0"),
    (["--max-queue-wait-ms", "0"], "--max-queue-wait-ms must be > 0"),
    (["--access-log-sample", "2"], "--access-log-sample must be in [0, 1]"),
    (["--port", "9090", "--metrics-port", "9090"], "--metrics-port 9090 is the gRPC port too"),
])
def test_values_that_cannot_work_are_refused_with_their_flag(argv: list[str], expected: str) -> None:
    with pytest.raises(UsageError) as caught:
        parsed(*argv)
    assert str(caught.value) == expected or str(caught.value).startswith(expected)


def test_serve_prints_one_line_and_exits_2_for_a_bad_variable(onnx_model_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "breakout_dqn.cli", "serve", "--model", str(onnx_model_path)],
                            capture_output=True, text=True, timeout=120, cwd=REPO,
                            env={**subprocess_env(), config.PORT_ENV: "abc"})
    assert result.returncode == 2
    assert result.stderr.strip() == ("breakout-dqn serve: error: $BREAKOUT_DQN_PORT: invalid port 'abc': a number "
                                     "in 1-65535 (0: any free port)")


def test_a_server_started_without_flags_bounds_what_a_connection_may_hold() -> None:
    """HTTP/2 windows stay small (BDP probing off), 100 streams a connection, vanished peers go, connections age."""
    server_options = dict(grpc_options(ServerConfig()))
    assert server_options["grpc.http2.bdp_probe"] == 0
    assert server_options["grpc.http2.lookahead_bytes"] == 256 * 1024
    assert server_options["grpc.max_concurrent_streams"] == 100
    assert server_options["grpc.max_receive_message_length"] == 64 * contract.STACK_BYTES + 1024
    assert server_options["grpc.keepalive_time_ms"] == 30_000
    assert server_options["grpc.keepalive_timeout_ms"] == server_options["grpc.http2.ping_timeout_ms"] == 10_000
    assert server_options["grpc.max_connection_age_ms"] == 300_000
    # Our own clients ping no more often than the server allows (else: GOAWAY too_many_pings).
    client_options = dict(channel_options(1024))
    assert client_options["grpc.keepalive_time_ms"] >= server_options["grpc.http2.min_ping_interval_without_data_ms"]
    assert "grpc.max_connection_age_ms" not in dict(grpc_options(ServerConfig(max_connection_age_s=0)))


def test_the_message_limit_fits_what_each_rpc_needs() -> None:
    """GetAction: --max-stacks-per-request stacks; never below one PlayGame frame of 4 RGB screens."""
    assert ServerConfig().max_message_bytes == AgentClient("127.0.0.1:1").max_message_bytes
    assert ServerConfig(max_stacks_per_request=1).max_message_bytes == 4 * 210 * 160 * 3 + config.MESSAGE_OVERHEAD_BYTES
    assert ServerConfig(max_stacks_per_request=20).max_message_bytes == \
        20 * contract.STACK_BYTES + config.MESSAGE_OVERHEAD_BYTES


def test_play_and_the_health_probe_name_the_server_with_server() -> None:
    args = play.build_parser().parse_args([])
    assert args.server == "127.0.0.1:50051"
    assert play.build_parser().parse_args(["--lb", "round_robin"]).lb == "round_robin"
    probe = healthcheck.build_parser()
    assert probe.parse_args(["--server", "h:1"]).server == probe.parse_args(["--target", "h:1"]).server == "h:1"
    assert "--target" not in probe.format_help()  # the old spelling: accepted, not shown


def test_the_service_name_is_the_generated_descriptors() -> None:
    assert healthcheck.SERVICE_NAME == f"{agent_pb2.DESCRIPTOR.package}.AgentService" == "breakout.v1.AgentService"


def test_the_config_and_the_health_probe_stay_cheap_to_import() -> None:
    """The image's HEALTHCHECK runs the probe every 10 s: no numpy, onnxruntime or model code."""
    code = (
        "import sys\n"
        "import breakout_dqn.serving.config\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('numpy', 'grpc', 'google')], 'config'\n"
        "import breakout_dqn.serving.healthcheck, breakout_dqn.serving.security\n"
        "probe = {'breakout_dqn', 'breakout_dqn.errors', 'breakout_dqn.serving', 'breakout_dqn.serving.config',\n"
        "         'breakout_dqn.serving.healthcheck', 'breakout_dqn.serving.security'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('numpy', 'onnxruntime', 'breakout_dqn')\n"
        "               and m not in probe)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=subprocess_env(), cwd=REPO)
    assert result.returncode == 0, result.stderr
