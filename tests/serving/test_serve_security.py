"""TLS, mutual TLS and token authentication: who gets in, who does not, and bad settings refused at start."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from serving_helpers import REPO, ServerProcess, ServerThread, config_for, random_stacks

from breakout.v1 import agent_pb2, agent_pb2_grpc
from breakout_dqn import contract
from breakout_dqn.onnx_model import OnnxPolicy
from breakout_dqn.serving import healthcheck, play, server
from breakout_dqn.serving.client import AgentClient
from breakout_dqn.serving.config import AUTH_TOKEN_ENV
from breakout_dqn.serving.security import ClientSecurity

TOKEN = "s3cret-t0ken-for-tests"


def tls_client(certificates: dict[str, Path], **overrides: object) -> ClientSecurity:
    settings: dict[str, object] = {"tls": True, "ca": certificates["ca"].read_bytes()}
    settings.update(overrides)
    return ClientSecurity(**settings)  # type: ignore[arg-type]


def refused(target: str, security: ClientSecurity) -> grpc.StatusCode:
    """The status of one GetAction call that the server (or the handshake) turns down."""
    with AgentClient(target, timeout=3, security=security) as agent, pytest.raises(grpc.RpcError) as caught:
        # wait_for_ready=False: fail at the first refused handshake instead of waiting out the deadline
        agent._stub.GetAction(agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES)), timeout=3,
                              metadata=security.metadata, wait_for_ready=False)
    return caught.value.code()


def test_tls_serves_its_clients_and_refuses_failed_handshakes(onnx_model_path: Path, policy: OnnxPolicy,
                                                             certificates: dict[str, Path],
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    running = ServerThread(config_for(onnx_model_path, tls_cert=certificates["server.crt"],
                                      tls_key=certificates["server.key"]))
    try:
        frames = random_stacks(3, seed=4)
        with AgentClient(running.target, timeout=30, security=tls_client(certificates)) as agent:
            np.testing.assert_array_equal(agent.get_action(frames), policy.act(frames))
            with agent.stream() as session:
                np.testing.assert_array_equal(session.get_action(frames), policy.act(frames))
        # The certificate names localhost, breakout-dqn-serve and 127.0.0.1: another name is checked too.
        named = tls_client(certificates, server_name="breakout-dqn-serve")
        with AgentClient(f"localhost:{running.target.rsplit(':', 1)[1]}", timeout=30, security=named) as agent:
            np.testing.assert_array_equal(agent.get_action(frames), policy.act(frames))

        # Failed handshakes: plaintext, a CA that did not sign the certificate, a name it does not hold.
        assert refused(running.target, ClientSecurity()) == grpc.StatusCode.UNAVAILABLE
        other_ca = tls_client(certificates, ca=certificates["other-ca"].read_bytes())
        assert refused(running.target, other_ca) == grpc.StatusCode.UNAVAILABLE
        assert refused(running.target, tls_client(certificates, server_name="elsewhere")) == grpc.StatusCode.UNAVAILABLE

        assert healthcheck.main(["--server", running.target, "--tls-ca", str(certificates["ca"])]) == 0
        assert healthcheck.main(["--server", running.target, "--timeout", "2"]) == 1  # plaintext probe
        assert "UNAVAILABLE" in capsys.readouterr().out
        with AgentClient(running.target, timeout=30, security=tls_client(certificates)) as agent:
            np.testing.assert_array_equal(agent.get_action(frames), policy.act(frames))  # still serving
    finally:
        running.stop()


def test_mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca(
        onnx_model_path: Path, policy: OnnxPolicy, certificates: dict[str, Path]) -> None:
    running = ServerThread(config_for(onnx_model_path, tls_cert=certificates["server.crt"],
                                      tls_key=certificates["server.key"], tls_client_ca=certificates["ca"]))
    try:
        assert refused(running.target, tls_client(certificates)) == grpc.StatusCode.UNAVAILABLE  # no certificate
        stranger = tls_client(certificates, cert=certificates["other-client.crt"].read_bytes(),
                              key=certificates["other-client.key"].read_bytes())
        assert refused(running.target, stranger) == grpc.StatusCode.UNAVAILABLE  # signed by another CA
        member = tls_client(certificates, cert=certificates["client.crt"].read_bytes(),
                            key=certificates["client.key"].read_bytes())
        frames = random_stacks(2, seed=6)
        with AgentClient(running.target, timeout=30, security=member) as agent:
            np.testing.assert_array_equal(agent.get_action(frames), policy.act(frames))
        probe = ["--server", running.target, "--tls-ca", str(certificates["ca"])]
        assert healthcheck.main(probe) == 1
        assert healthcheck.main([*probe, "--tls-cert", str(certificates["client.crt"]),
                                 "--tls-key", str(certificates["client.key"])]) == 0
    finally:
        running.stop()


def test_a_token_is_required_on_every_call_but_health_checks(onnx_model_path: Path, policy: OnnxPolicy) -> None:
    running = ServerThread(config_for(onnx_model_path, auth_token=TOKEN))
    try:
        for token in (None, "wrong", TOKEN + "x", TOKEN.upper()):
            assert refused(running.target, ClientSecurity(token=token)) == grpc.StatusCode.UNAUTHENTICATED
        channel = grpc.insecure_channel(running.target)
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:  # streams and model info too
            next(stub.StreamActions(iter([agent_pb2.GetActionRequest(frames=bytes(contract.STACK_BYTES))])))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "missing or wrong token" in caught.value.details() and TOKEN not in caught.value.details()
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetModelInfo(agent_pb2.GetModelInfoRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert health.status == health_pb2.HealthCheckResponse.SERVING  # probes carry no token
        assert healthcheck.main(["--server", running.target]) == 0

        frames = random_stacks(2, seed=8)
        with AgentClient(running.target, timeout=30, security=ClientSecurity(token=TOKEN)) as agent:
            np.testing.assert_array_equal(agent.get_action(frames), policy.act(frames))
            with agent.stream() as session:
                np.testing.assert_array_equal(session.get_action(frames), policy.act(frames))
            assert agent.model_info().model_version == policy.version
        assert running.server.admission.open_calls == 0
    finally:
        running.stop()


def test_the_token_never_reaches_the_log(onnx_model_path: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    process = ServerProcess([sys.executable, "-m", "breakout_dqn.cli", "serve", "--model", str(onnx_model_path),
                             "--port", "0", "--log-level", "DEBUG", "--auth-token-file", str(token_file)])
    try:
        with AgentClient(process.target, timeout=30, security=ClientSecurity(token=TOKEN)) as agent:
            agent.wait_until_serving(60)
            agent.get_action(random_stacks(1))
        assert refused(process.target, ClientSecurity(token="wrong")) == grpc.StatusCode.UNAUTHENTICATED
        process.process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
        assert "token required" in process.stderr
        assert TOKEN not in process.stderr
    finally:
        process.kill()


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", ["key without cert", "cert without key", "client CA without TLS", "missing file",
                                  "key of another certificate", "not PEM", "empty token file", "token with a space",
                                  "bad client CA", "short token", "tokens file line", "subjects without mutual TLS"])
def test_bad_tls_and_token_settings_stop_serve_at_start_with_one_line(
        case: str, onnx_model_path: Path, certificates: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv(AUTH_TOKEN_ENV, raising=False)
    cert, key, ca = (str(certificates[name]) for name in ("server.crt", "server.key", "ca"))
    flags, expected = {
        "key without cert": (["--tls-key", key], "--tls-key needs --tls-cert"),
        "cert without key": (["--tls-cert", cert], "--tls-cert needs --tls-key"),
        "client CA without TLS": (["--tls-client-ca", ca], "--tls-client-ca needs --tls-cert and --tls-key"),
        "missing file": (["--tls-cert", str(tmp_path / "nope.crt"), "--tls-key", key],
                         f"--tls-cert: cannot read {tmp_path / 'nope.crt'}: No such file or directory"),
        "key of another certificate": (["--tls-cert", cert, "--tls-key", str(certificates["client.key"])],
                                       "--tls-cert/--tls-key: the private key is not the certificate's"),
        "not PEM": (["--tls-cert", str(write(tmp_path / "x.crt", "hello\n")), "--tls-key", key],
                    f"--tls-cert: {tmp_path / 'x.crt'} holds no PEM certificate"),
        "empty token file": (["--auth-token-file", str(write(tmp_path / "empty-token", "\n"))],
                             f"--auth-token-file: {tmp_path / 'empty-token'} is empty"),
        "token with a space": (["--auth-token-file", str(write(tmp_path / "spaced-token", "two words"))],
                               "must be printable ASCII without spaces"),
        "bad client CA": (["--tls-cert", cert, "--tls-key", key, "--tls-client-ca",
                           str(write(tmp_path / "ca.pem", "junk\n"))],
                          f"--tls-client-ca: {tmp_path / 'ca.pem'} holds no PEM certificate"),
        "short token": (["--auth-token-file", str(write(tmp_path / "short-token", "x"))],
                        "has 1 characters; a server takes at least 16"),
        "tokens file line": (["--tokens-file", str(write(tmp_path / "tokens", "# names\nalice\n"))],
                             f"--tokens-file {tmp_path / 'tokens'}:2: expected 'NAME TOKEN', got 1 fields"),
        "subjects without mutual TLS": (["--tls-client-subjects", str(write(tmp_path / "subjects", "CN=a\n"))],
                                        "--tls-client-subjects needs --tls-client-ca"),
    }[case]
    assert server.main(["--model", str(onnx_model_path), "--port", "0", *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("breakout-dqn serve: error: ") and expected in err, err
    assert err.count("\n") == 1, err  # one line
    if "token" in case:
        assert "two words" not in err


def test_clients_refuse_bad_tls_settings_too(certificates: dict[str, Path], tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert play.main(["--tls-key", str(certificates["client.key"])]) == 2
    assert capsys.readouterr().err.strip() == ("breakout-dqn play: error: --tls-key needs --tls-cert: a client "
                                               "certificate comes with its private key")
    assert healthcheck.main(["--tls-ca", str(tmp_path / "none.pem")]) == 2
    assert f"--tls-ca: cannot read {tmp_path / 'none.pem'}" in capsys.readouterr().err


def test_the_token_may_come_from_the_environment(onnx_model_path: Path, policy: OnnxPolicy,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """`serve` and the clients read $BREAKOUT_DQN_AUTH_TOKEN when no token file is given."""
    from breakout_dqn.serving.security import read_token

    monkeypatch.setenv(AUTH_TOKEN_ENV, TOKEN)
    assert read_token(None) == TOKEN
    assert server.build_parser().parse_args([]) == argparse.Namespace()  # nothing set: the variable is read
    args = play.build_parser().parse_args([])
    from breakout_dqn.serving.security import client_security_from_args

    assert client_security_from_args(args).token == TOKEN
    assert TOKEN not in repr(client_security_from_args(args)) and TOKEN not in repr(config_for(REPO, auth_token=TOKEN))
